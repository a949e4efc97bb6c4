# Solr STAND-IN include file (the stand-in is NOT Apache Solr; see ../STANDIN.md).
#
# Settings for bin/solr, in the shape of Apache Solr 9's default bin/solr.in.sh: every line is
# commented out, so the built-in defaults apply. An installation copies this file (commonly to
# /etc/default/solr.in.sh) and points bin/solr at it with the SOLR_INCLUDE environment variable.
# The stand-in reads the settings marked [used]; the others are accepted and have no effect.

# [used] Java: bin/solr checks that a Java 11+ runtime runs (Solr needs one), then finds it here,
# in JAVA_HOME or on PATH. The stand-in does not use it.
#SOLR_JAVA_HOME=""

# [used, checked] Heap size: -Xms and -Xmx of the JVM. Default 512m. The stand-in validates the value
# as the JVM would, reports it in /solr/admin/info/system, and does not otherwise use it.
#SOLR_HEAP="512m"

# [used] The address Solr's HTTP listener binds to. Solr 9 binds to 127.0.0.1 unless told otherwise;
# use a private address to be reachable from other hosts.
#SOLR_JETTY_HOST="127.0.0.1"

# [used] The HTTP port. Default 8983.
#SOLR_PORT="8983"

# [used] Solr home: where solr.xml and the cores live (must exist). Default server/solr.
#SOLR_HOME=

# [used] Where solr.log is written. Default server/logs.
#SOLR_LOGS_DIR=logs

# [accepted] Where bin/solr writes solr-PORT.pid for a background start; `start -f` (the stand-in's
# only command) writes none.
#SOLR_PID_DIR=

# [reported] Extra JVM options, e.g. -Dsolr.allowPaths=/srv/solr: listed in /solr/admin/info/system
# (jvm.jmx.commandLineArgs), without effect in the stand-in.
#SOLR_OPTS="$SOLR_OPTS -Dsolr.allowPaths=/srv/solr"

# [stand-in only] The Python 3 interpreter that runs the stand-in. Default: python3 on PATH.
#SOLR_STANDIN_PYTHON=/usr/bin/python3
