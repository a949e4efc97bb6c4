# Solr STAND-IN include file (the stand-in is NOT Apache Solr; see ../STANDIN.md).
#
# Settings for bin/solr, in the shape of Apache Solr 9's default bin/solr.in.sh: every line is
# commented out, so the built-in defaults apply. An installation copies this file (commonly to
# /etc/default/solr.in.sh) and points bin/solr at it with the SOLR_INCLUDE environment variable.
# The stand-in reads the settings marked [used]; the others are accepted and have no effect.

# [used] Java: bin/solr checks that a Java 11+ runtime runs (Solr needs one), then finds it here or on PATH.
#SOLR_JAVA_HOME=""

# [used, checked] Heap size: -Xms and -Xmx of the JVM. Default 512m. The stand-in validates the value
# as the JVM would, reports it in /solr/admin/info/system, and does not otherwise use it.
#SOLR_HEAP="512m"

# [used, checked] The same as SOLR_HEAP, given as JVM options (SOLR_HEAP wins when both are set).
#SOLR_JAVA_MEM="-Xms512m -Xmx512m"

# Garbage collection settings and logging (accepted, no effect).
#GC_LOG_OPTS="-Xlog:gc*"
#GC_TUNE=" -XX:+ExplicitGCInvokesConcurrent"

# [used] The address Solr's HTTP listener binds to. Solr 9 binds to 127.0.0.1 unless told otherwise;
# use 0.0.0.0 (or a private address) to be reachable from other hosts.
#SOLR_JETTY_HOST="127.0.0.1"

# [used] The HTTP port. Default 8983.
#SOLR_PORT="8983"

# The host name this Solr node advertises (accepted, no effect in standalone mode).
#SOLR_HOST="192.168.1.1"

# [used] Solr home: where solr.xml and the cores live. Default server/solr.
#SOLR_HOME=

# [used] If set, the cores' data directories live under this directory.
#SOLR_DATA_HOME=

# [used] Fail at start when SOLR_HOME has no solr.xml (Solr 9 otherwise uses server/solr/solr.xml).
#SOLR_SOLRXML_REQUIRED=false

# [used] Where solr.log (and solr-PORT-console.log when started in the background) are written.
# Default server/logs.
#SOLR_LOGS_DIR=logs

# [used] Where bin/solr writes solr-PORT.pid when it starts Solr in the background. Default bin/.
#SOLR_PID_DIR=

# [used] How long bin/solr waits for Solr to start, and to stop before it is killed. Default 180 seconds.
#SOLR_START_WAIT=180
#SOLR_STOP_WAIT=180

# [used] Extra JVM system properties, e.g. -Dsolr.allowPaths=/srv/solr (the stand-in reads -D options).
#SOLR_OPTS="$SOLR_OPTS -Dsolr.allowPaths=/srv/solr"

# [used] Solr modules to enable, comma separated (e.g. analysis-extras, scripting).
#SOLR_MODULES=

# [stand-in only] The Python 3 interpreter that runs the stand-in. Default: python3 on PATH.
#SOLR_STANDIN_PYTHON=/usr/bin/python3
