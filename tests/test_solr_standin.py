"""The Solr stand-in (tests/solr-standin/): its reproducible archive, bin/solr, the HTTP API, and django-haystack
driving it through pysolr with the Solr 9 configset templates (tests/solr-standin/haystack-templates/).

The stand-in is not Apache Solr: these tests prove the harness and the templates, and that the stand-in fails
where Solr 9 fails (haystack's upstream templates, unknown fields, ...). The server runs under Debian's
/usr/bin/python3, as on a fresh server; Java is a fake `java` that only answers `-version`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "solr-standin"
BUILD = STANDIN / "build-archive.py"
PROJECT = STANDIN / "haystack-project"
VERSION = "9.7.0"
SERVER_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="bin/solr finds its processes in /proc")


# --- the archive ----------------------------------------------------------------------------------

def build(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SERVER_PYTHON, str(BUILD), "--output-dir", str(out)], capture_output=True, text=True,
                          check=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("archive")
    build(out)
    return out / f"solr-{VERSION}-standin.tgz"


@pytest.fixture(scope="module")
def tip(archive, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("install")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="tar")
    return dest / f"solr-{VERSION}"


def test_archive_is_reproducible_with_an_apache_style_checksum(archive, tmp_path):
    again = build(tmp_path)
    rebuilt = tmp_path / archive.name
    digest = hashlib.sha512(archive.read_bytes()).hexdigest()
    assert rebuilt.read_bytes() == archive.read_bytes()
    assert again.stdout.splitlines() == [str(rebuilt), f"sha512: {digest}"]
    assert (tmp_path / f"{archive.name}.sha512").read_text() == f"{digest}  {archive.name}\n"
    subprocess.run(["sha512sum", "--check", "--status", f"{archive.name}.sha512"], cwd=tmp_path, check=True)
    other = build_version(tmp_path / "other", "9.6.1")
    assert other.name == "solr-9.6.1-standin.tgz"
    with tarfile.open(other) as tar:
        assert tar.extractfile("solr-9.6.1/server/standin/VERSION").read() == b"9.6.1\n"


def build_version(out: Path, version: str) -> Path:
    subprocess.run([SERVER_PYTHON, str(BUILD), "--version", version, "--output-dir", str(out)], check=True,
                   capture_output=True)
    return out / f"solr-{version}-standin.tgz"


def test_archive_has_the_release_layout_and_says_it_is_a_standin(archive, tip):
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert all(name.split("/")[0] == f"solr-{VERSION}" for name in members)
    assert {m.mtime for m in members.values()} == {1704067200} and {m.uid for m in members.values()} == {0}
    for path in ("bin/solr", "bin/solr.in.sh", "server/solr/solr.xml", "server/start.jar", "LICENSE.txt",
                 "NOTICE.txt", "STANDIN.md", "licenses/README.txt", "server/standin/solr_standin.py",
                 *(f"server/solr/configsets/_default/conf/{f}" for f in (
                     "solrconfig.xml", "managed-schema.xml", "stopwords.txt", "synonyms.txt", "protwords.txt",
                     "lang/stopwords_en.txt"))):
        assert (tip / path).is_file(), path
    assert members[f"solr-{VERSION}/bin/solr"].mode == 0o755 and os.access(tip / "bin/solr", os.X_OK)
    assert (tip / "STANDIN.md").read_text().startswith("# THIS IS NOT APACHE SOLR")
    assert "production installs the real apache solr release" in (tip / "STANDIN.md").read_text().lower()
    for path in ("NOTICE.txt", "LICENSE.txt", "README.txt", "server/start.jar", "bin/solr", "bin/solr.in.sh"):
        assert "STAND-IN" in (tip / path).read_text(), path
    include = (tip / "bin/solr.in.sh").read_text()
    assert all(line.startswith("#") or not line.strip() for line in include.splitlines()), "all commented"


# --- a node -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def java_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("jdk")
    fake_java(home, "17.0.12")
    return home


def fake_java(home: Path, version: str) -> None:
    (home / "bin").mkdir(parents=True, exist_ok=True)
    (home / "bin" / "java").write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2024-07-16\' >&2\n')
    (home / "bin" / "java").chmod(0o755)


class Node:
    """A stand-in node: its include file, SOLR_HOME, logs; bin/solr runs with SOLR_INCLUDE pointing at it."""

    def __init__(self, tip: Path, base: Path, java_home: Path, host="127.0.0.1", solr_xml=True, **settings):
        self.tip, self.base, self.host, self.port = tip, base, host, free_port()
        self.home, self.logs = base / "home", base / "logs"
        self.home.mkdir(parents=True)
        if solr_xml:
            shutil.copy(tip / "server/solr/solr.xml", self.home)
        self.include = base / "solr.in.sh"
        self.settings = dict(SOLR_PORT=self.port, SOLR_JETTY_HOST=host, SOLR_HOME=self.home, SOLR_LOGS_DIR=self.logs,
                             SOLR_PID_DIR=base / "run", SOLR_HEAP="256m", SOLR_JAVA_HOME=java_home,
                             SOLR_STANDIN_PYTHON=SERVER_PYTHON, SOLR_STOP_WAIT=20, **settings)
        self.write_include()
        self.proc: subprocess.Popen | None = None
        self.url = f"http://{host}:{self.port}/solr"

    def write_include(self):
        self.include.write_text("".join(f'{k}="{v}"\n' for k, v in self.settings.items()))

    def env(self, **extra):
        return dict(os.environ, SOLR_INCLUDE=str(self.include), **extra)

    def solr(self, *args, check=False, **extra) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.tip / "bin/solr"), *args], env=self.env(**extra), capture_output=True,
                              text=True, timeout=60, check=check)

    def start_foreground(self):
        """`bin/solr start -f`, as the systemd unit runs it (-force: the tests run as root)."""
        self.stdout = self.base / f"stdout-{time.monotonic_ns()}.log"
        with open(self.stdout, "w") as out:
            self.proc = subprocess.Popen([str(self.tip / "bin/solr"), "start", "-f", "-force"], env=self.env(),
                                         stdout=out, stderr=subprocess.STDOUT)
        self.wait_up()

    def wait_up(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the stand-in exited with {self.proc.returncode}: {self.stdout.read_text()}")
            try:
                if requests.get(f"{self.url}/admin/info/system", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the stand-in did not answer")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.solr("stop", "-p", str(self.port))
            self.proc.wait(20)

    def get(self, path, **params):
        resp = requests.get(f"{self.url}/{path}", params=dict(params, wt="json"), timeout=10)
        return resp.status_code, resp.json()

    def post(self, path, data, content_type, **params):
        resp = requests.post(f"{self.url}/{path}", params=params, data=data, timeout=10,
                             headers={"Content-Type": content_type})
        return resp.status_code, resp.json()

    def ids(self, core, q, **params):
        status, body = self.get(f"{core}/select", q=q, fl="id", rows=100, **params)
        assert status == 200, body
        return [d["id"] for d in body["response"]["docs"]]


@pytest.fixture(scope="module")
def node(tip, java_home, tmp_path_factory):
    node = Node(tip, tmp_path_factory.mktemp("node"), java_home)
    node.start_foreground()
    yield node
    node.stop()


def listeners(port: int) -> list[str]:
    """Local addresses listening on `port` (TCP and TCP6), read from /proc/net."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():  # no IPv6
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                raw = bytes.fromhex(address)
                found.append(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6,
                                              b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (re)parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_bin_solr_version(node):
    for arg in ("version", "-version", "--version"):
        result = node.solr(arg)
        assert (result.returncode, result.stdout.strip()) == (0, f"Solr version is: {VERSION}")


@pytest.mark.parametrize("case", ["root-without-force", "missing-home", "solr-xml-required", "bad-heap", "no-java",
                                  "old-java", "cloud-mode"])
def test_bin_solr_refuses_to_start_like_solr(case, tip, java_home, tmp_path):
    node = Node(tip, tmp_path, java_home, solr_xml=case != "solr-xml-required")
    args, expected = ["start", "-f", "-force"], None
    if case == "root-without-force":
        if os.geteuid() != 0:
            pytest.skip("bin/solr refuses root only")
        args, expected = ["start", "-f"], "Starting Solr as the root user is a security risk"
    elif case == "missing-home":
        node.settings["SOLR_HOME"], expected = tmp_path / "nowhere", f"Solr home directory {tmp_path}/nowhere not found!"
    elif case == "solr-xml-required":
        node.settings["SOLR_SOLRXML_REQUIRED"], expected = "true", "must contain solr.xml!"
    elif case == "bad-heap":
        node.settings["SOLR_HEAP"], expected = "512x", "Invalid initial heap size: -Xms512x"
    elif case == "no-java":
        node.settings["SOLR_JAVA_HOME"], expected = tmp_path / "nojava", "Java not found"
    elif case == "old-java":
        fake_java(tmp_path / "jdk8", "1.8.0_382")
        node.settings["SOLR_JAVA_HOME"], expected = tmp_path / "jdk8", "too old to run this version of Solr"
    elif case == "cloud-mode":
        args, expected = ["start", "-f", "-force", "-c"], "does not implement -c"
    node.write_include()
    result = node.solr(*args)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert not listeners(node.port)


def test_foreground_node_binds_only_the_configured_address_and_logs(node):
    assert listeners(node.port) == ["127.0.0.1"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", node.port), timeout=1).close()
    status, info = node.get("admin/info/system")
    assert status == 200 and info["responseHeader"]["status"] == 0
    assert info["lucene"]["solr-spec-version"] == VERSION and info["standin"]["isStandin"] is True
    assert info["jvm"]["memory"]["raw"]["max"] == 256 * 1024 ** 2  # SOLR_HEAP, reported, not used
    assert "Solr stand-in 9.7.0 starting (NOT Apache Solr" in node.stdout.read_text()  # journald's view
    assert "NOT Apache Solr" in (node.logs / "solr.log").read_text()
    assert not (node.base / "run").exists(), "a foreground start writes no pid file (as bin/solr)"


def test_bin_solr_status_lists_the_running_node(node):
    result = node.solr("status")
    assert result.returncode == 0, result.stdout
    assert f"running on port {node.port}" in result.stdout and str(node.home) in result.stdout


def test_background_start_status_and_stop_on_another_address(tip, java_home, tmp_path):
    """`bin/solr start` without -f: pid file, console log, a private-style bind address, no solr.xml in SOLR_HOME
    (Solr 9 then uses server/solr/solr.xml), then `stop -p`."""
    other = Node(tip, tmp_path, java_home, host="127.0.0.3", solr_xml=False)
    started = other.solr("start", "-force")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"Started Solr server on port {other.port}" in started.stdout
        pid = int((tmp_path / "run" / f"solr-{other.port}.pid").read_text())
        assert listeners(other.port) == ["127.0.0.3"]
        assert (other.logs / f"solr-{other.port}-console.log").exists()
        assert "solr.xml not found in SOLR_HOME, using built-in default" in (other.logs / "solr.log").read_text()
        again = other.solr("start", "-force")
        assert again.returncode == 1 and f"Port {other.port} is already being used" in again.stdout
        assert f"Solr process {pid} running on port {other.port}" in other.solr("status").stdout
    finally:
        stopped = other.solr("stop", "-p", str(other.port))
    assert stopped.returncode == 0 and f"Sending stop command to Solr running on port {other.port}" in stopped.stdout
    assert not alive(pid) and not (tmp_path / "run" / f"solr-{other.port}.pid").exists()
    assert other.solr("stop", "-p", str(other.port)).returncode == 1


# --- haystack: configsets from build_solr_schema ------------------------------------------------------

class Django:
    """manage.py of tests/solr-standin/haystack-project, in subprocesses (.venv's Python, SQLite)."""

    def __init__(self, node: Node, db: Path):
        self.node, self.db = node, db

    def env(self, **extra):
        return dict(os.environ, PYTHONDONTWRITEBYTECODE="1", STANDIN_DB=str(self.db), SOLR_BASE_URL=self.node.url,
                    SOLR_CORE="haystack", **extra)

    def manage(self, *args, check=True, **extra) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT, env=self.env(**extra),
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode:
            raise AssertionError(f"manage.py {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def run(self, code: str, **extra):
        """Python in `manage.py shell -c` with SearchQuerySet, Note, timezone, timedelta; returns what it prints
        as JSON on its last line."""
        prelude = ("import json\nfrom datetime import timedelta\nfrom django.utils import timezone\n"
                   "from haystack.query import SearchQuerySet as SQS\nfrom notes.models import Note\n")
        out = self.manage("shell", "-c", prelude + code, **extra).stdout.strip().splitlines()
        return json.loads(out[-1])


def configure_core(django: Django, conf: Path, templates="fixed", **extra) -> None:
    """What the role does: the _default configset's files, then build_solr_schema's schema.xml and solrconfig.xml."""
    shutil.copytree(django.node.tip / "server/solr/configsets/_default/conf", conf, dirs_exist_ok=True)
    django.manage("build_solr_schema", "--configure-directory", str(conf), STANDIN_HAYSTACK_TEMPLATES=templates,
                  **extra)


@pytest.fixture(scope="module")
def django(node, tmp_path_factory):
    django = Django(node, tmp_path_factory.mktemp("django") / "db.sqlite3")
    django.manage("migrate", "--run-syncdb", "-v", "0")
    return django


@pytest.fixture(scope="module")
def haystack_core(node, django):
    conf = node.home / "haystack" / "conf"
    configure_core(django, conf)
    status, body = node.get("admin/cores", action="CREATE", name="haystack", instanceDir="haystack")
    assert status == 200, body
    return conf


def test_upstream_haystack_templates_fail_on_solr_9(node, django):
    conf = node.home / "upstream" / "conf"
    configure_core(django, conf, templates="upstream")
    status, body = node.get("admin/cores", action="CREATE", name="upstream", instanceDir="upstream")
    assert (status, body["error"]["code"]) == (400, 400)
    assert "Error CREATEing SolrCore 'upstream': Unable to create core [upstream]" in body["error"]["msg"]
    assert "Error loading class 'solr.FastLRUCache'" in body["error"]["msg"]  # solrconfig.xml is read first
    fixed = node.base / "fixed-conf"
    configure_core(django, fixed)
    shutil.copy(fixed / "solrconfig.xml", conf)  # the fixed solrconfig.xml, haystack's upstream schema.xml
    status, body = node.get("admin/cores", action="CREATE", name="upstream", instanceDir="upstream")
    assert status == 400
    assert ('Plugin init failure for [schema.xml] fieldType "location": Error loading class \'solr.LatLonType\''
            in body["error"]["msg"])
    assert not (node.home / "upstream" / "core.properties").exists()
    assert "upstream" not in node.get("admin/cores", action="STATUS")[1]["status"]


def test_core_from_the_fixed_templates(node, haystack_core):
    status, body = node.get("admin/cores", action="STATUS", core="haystack")
    core = body["status"]["haystack"]
    assert core["schema"] == "schema.xml" and core["instanceDir"] == str(node.home / "haystack")
    assert core["index"]["numDocs"] == 0
    assert "name=haystack\n" in (node.home / "haystack" / "core.properties").read_text()
    assert node.get("haystack/admin/ping")[1]["status"] == "OK"
    status, body = node.get("admin/cores", action="CREATE", name="haystack", instanceDir="haystack")
    assert status == 400 and body["error"]["msg"] == "Core with name 'haystack' already exists."
    status, body = node.get("admin/cores", action="CREATE", name="outside", instanceDir="/tmp/outside")
    assert status == 400 and "must be relative to SOLR_HOME" in body["error"]["msg"]


NOTES = """
now = timezone.now()
Note.objects.bulk_create([  # no signals: update_index indexes these
    Note(title="Solr on Debian", body="Installing Apache Solr from the release archive.", category="ops",
         views=10, published=now - timedelta(days=1)),
    Note(title="Django search", body="Haystack talks to Solr through pysolr.", category="dev", views=25,
         published=now - timedelta(days=3)),
    Note(title="Cooking", body="A recipe with an exact phrase inside, and more words.", category="life", views=3,
         published=now - timedelta(days=10), is_public=False),
])
print(json.dumps(Note.objects.count()))
"""


def test_update_index_then_realtime_signal_indexing(node, django, haystack_core):
    assert django.run(NOTES) == 3
    assert "Indexing 3 notes" in django.manage("update_index").stdout
    assert django.run("print(json.dumps(SQS().count()))") == 3
    saved = django.run("""
n = Note.objects.create(title="Realtime note", body="Saved, so the signal processor indexes it.",
                        category="dev", views=7, published=timezone.now())
print(json.dumps([r.pk for r in SQS().filter(content="signal")]))""")
    assert saved == ["4"]
    log = (node.logs / "solr.log").read_text()
    # what pysolr sends for haystack's update(): XML (haystack passes boost={}), commit=true in the URL
    assert "path=/haystack/update params={commit=true} {add=['notes.note.1', 'notes.note.2', 'notes.note.3']" in log
    assert "[stand-in: body text/xml; charset=utf-8" in log


def test_searching_through_haystack(django, haystack_core):
    found = django.run("""
s = SQS()
titles = lambda qs: [r.title for r in qs]
print(json.dumps({
    "content": titles(s.filter(content="solr")),
    "two_terms": titles(s.filter(content="solr pysolr")),
    "field": titles(s.filter(category_exact="dev").order_by("-views")),
    "auto_phrase": titles(s.auto_query('"exact phrase" -missing')),
    "auto_exclude": titles(s.auto_query('solr -pysolr')),
    "gte": sorted(titles(s.filter(views__gte=10))),
    "date_lt": sorted(titles(s.filter(published__lt=timezone.now() - timedelta(days=2)))),
    "bool": titles(s.filter(is_public=False)),
    "exclude": sorted(titles(s.exclude(category_exact="dev"))),
    "startswith": titles(s.filter(title__startswith="Sol")),
    "in": sorted(titles(s.filter(category_exact__in=["ops", "life"]))),
    "order": titles(s.order_by("views")),
    "slice": titles(s.order_by("-published")[1:3]),
    "count": s.filter(content="solr").count(),
    "models": s.models(Note).count(),
    "facets": s.facet("category").facet_counts()["fields"]["category"],
    "stored": [(r.views, r.is_public, r.published.year > 2000) for r in s.filter(title="Cooking")],
    "highlight": titles(s.highlight().filter(content="debian")),
    "score": all(r.score > 0 for r in s.filter(content="solr")),
}))""")
    assert found["content"] == ["Solr on Debian", "Django search"]  # "Solr" twice in the first: a higher score
    assert found["two_terms"] == ["Django search"]  # haystack ANDs the words of a content filter
    assert found["field"] == ["Django search", "Realtime note"]
    assert found["auto_phrase"] == ["Cooking"]
    assert found["auto_exclude"] == ["Solr on Debian"]
    assert found["gte"] == ["Django search", "Solr on Debian"]
    assert found["date_lt"] == ["Cooking", "Django search"]
    assert found["bool"] == ["Cooking"]
    assert found["exclude"] == ["Cooking", "Solr on Debian"]
    assert found["startswith"] == ["Solr on Debian"]
    assert found["in"] == ["Cooking", "Solr on Debian"]
    assert found["order"] == ["Cooking", "Realtime note", "Solr on Debian", "Django search"]
    assert found["slice"] == ["Solr on Debian", "Django search"]
    assert (found["count"], found["models"]) == (2, 4)
    assert found["facets"] == [["dev", 2], ["life", 1], ["ops", 1]]
    assert found["stored"] == [[3, False, True]]
    assert found["highlight"] == ["Solr on Debian"] and found["score"] is True


def test_deleting_an_object_removes_it_from_the_index(django, haystack_core):
    left = django.run("""
Note.objects.get(title="Realtime note").delete()
print(json.dumps([r.title for r in SQS().filter(content="signal")] + [SQS().count()]))""")
    assert left == [3]


def test_schema_change_is_applied_by_a_core_reload(node, django, haystack_core):
    extra = {"STANDIN_EXTRA_FIELD": "1"}
    failed = django.manage("update_index", **extra)  # the running core's schema has no "summary" yet
    # haystack logs the error and still exits 0 (HAYSTACK_CONNECTIONS' SILENTLY_FAIL defaults to True)
    assert "(HTTP 400): [Reason: ERROR: [doc=notes.note.1] unknown field 'summary']" in failed.stderr
    django.manage("build_solr_schema", "--configure-directory", str(haystack_core), "--reload-core", "haystack",
                  **extra)
    assert "Trying to reload core named haystack" in django.manage(
        "build_solr_schema", "--reload-core", "haystack", **extra).stdout
    django.manage("update_index", **extra)
    assert django.run("print(json.dumps([r.title for r in SQS().filter(summary='recipe')]))", **extra) == ["Cooking"]
    assert "path=/admin/cores params={action=RELOAD&core=haystack} status=0" in (node.logs / "solr.log").read_text()

    good = (haystack_core / "schema.xml").read_text()
    (haystack_core / "schema.xml").write_text(good.replace('class="solr.LatLonPointSpatialField" docValues="true"',
                                                           'class="solr.LatLonType"'))
    status, body = node.get("admin/cores", action="RELOAD", core="haystack")
    assert status == 500 and "Error loading class 'solr.LatLonType'" in body["error"]["msg"]
    assert django.run("print(json.dumps(SQS().count()))", **extra) == 3  # the running core kept its schema
    (haystack_core / "schema.xml").write_text(good)
    assert node.get("admin/cores", action="RELOAD", core="haystack")[0] == 200


def test_clear_index_then_rebuild(django, haystack_core):
    django.manage("clear_index", "--noinput")
    assert django.run("print(json.dumps(SQS().count()))") == 0
    django.manage("rebuild_index", "--noinput", STANDIN_EXTRA_FIELD="1")
    assert django.run("print(json.dumps(SQS().count()))") == 3


def test_the_index_survives_a_restart(node, django, haystack_core):
    before = django.run("print(json.dumps(sorted(r.title for r in SQS().all())))")
    stopped = node.solr("stop", "-p", str(node.port))  # finds the foreground server in /proc, as bin/solr does
    assert stopped.returncode == 0 and node.proc.wait(20) == 0
    node.start_foreground()
    assert django.run("print(json.dumps(sorted(r.title for r in SQS().all())))") == before
    assert node.get("admin/cores", action="STATUS")[1]["status"]["haystack"]["index"]["numDocs"] == 3


# --- the HTTP API directly -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain(node):
    """A core of the stand-in's _default configset, by configSet (SOLR_HOME/configsets/_default)."""
    shutil.copytree(node.tip / "server/solr/configsets", node.home / "configsets")
    status, body = node.get("admin/cores", action="CREATE", name="plain", configSet="_default")
    assert status == 200, body
    assert "configSet=_default\n" in (node.home / "plain" / "core.properties").read_text()
    docs = [{"id": "a", "title_t": "The quick brown fox", "tag_s": "animal", "n_i": 3, "when_dt": "2024-01-05T00:00:00Z"},
            {"id": "b", "title_t": "Quick thinking wins", "tag_s": "idea", "n_i": 10, "ok_b": True},
            {"id": "c", "title_t": "Brown bread, slowly", "tag_s": "food", "n_i": 7, "when_dt": "2024-03-01T12:00:00Z"},
            {"id": "d", "title_t": "A fox-like thinker", "tag_ss": ["animal", "idea"], "n_i": -2}]
    status, body = node.post("plain/update", json.dumps(docs), "application/json", commit="true")
    assert status == 200, body
    return "plain"


@pytest.mark.parametrize("q, params, expected", [
    ("*:*", {}, ["a", "b", "c", "d"]),
    ("fox", {}, ["a", "d"]),                                   # df=_text_ (initParams), fed by copyField
    ("title_t:quick AND title_t:brown", {}, ["a"]),
    ("title_t:(quick brown)", {"q.op": "AND"}, ["a"]),
    ("title_t:(quick OR bread) -tag_s:idea", {}, ["a", "c"]),
    ("+title_t:brown NOT tag_s:food", {}, ["a"]),
    ("NOT tag_s:animal", {}, ["b", "c", "d"]),                 # purely negative: everything else
    ('title_t:"brown fox"', {}, ["a"]),
    ('title_t:"fox brown"', {}, []),
    ("title_t:think*", {}, ["b", "d"]),
    ("title_t:*ow*", {}, ["a", "c"]),
    ("n_i:[3 TO 7]", {}, ["a", "c"]),
    ("n_i:{3 TO *]", {}, ["b", "c"]),
    ('when_dt:["2024-02-01T00:00:00Z" TO *]', {}, ["c"]),
    ("ok_b:true", {}, ["b"]),
    ("tag_ss:idea", {}, ["d"]),
    ("tag_s:*", {}, ["a", "b", "c"]),
    ("fox-like", {}, ["a", "d"]),                              # one query term, two tokens: q.op (OR) between
    ("(quick OR slowly) AND NOT fox", {"fq": "n_i:[0 TO *]"}, ["b", "c"]),
])
def test_query_syntax(node, plain, q, params, expected):
    assert sorted(node.ids(plain, q, **params)) == expected


def test_select_results_shape_sort_paging_and_facets(node, plain):
    status, body = node.get("plain/select", q="*:*", fl="id,n_i,score", sort="n_i desc", start=1, rows=2,
                            facet="true", **{"facet.field": "tag_s", "facet.query": "n_i:[0 TO 5]"})
    assert body["responseHeader"]["params"]["sort"] == "n_i desc"
    result = body["response"]
    assert (result["numFound"], result["start"], result["maxScore"]) == (4, 1, 1.0)
    assert result["docs"] == [{"id": "c", "n_i": 7, "score": 1.0}, {"id": "a", "n_i": 3, "score": 1.0}]
    assert body["facet_counts"]["facet_fields"]["tag_s"] == ["animal", 1, "food", 1, "idea", 1]
    assert body["facet_counts"]["facet_queries"] == {"n_i:[0 TO 5]": 1}
    ranked = node.get("plain/select", q="title_t:quick OR title_t:brown", fl="id,score")[1]["response"]
    assert ranked["docs"][0]["id"] == "a" and ranked["docs"][0]["score"] == ranked["maxScore"]
    doc = node.get("plain/select", q="id:a")[1]["response"]["docs"][0]
    assert doc["when_dt"] == "2024-01-05T00:00:00Z" and "_text_" not in doc and doc["_version_"] > 0


def test_update_formats(node, plain):
    xml = ('<add><doc><field name="id">x1</field><field name="title_t" boost="2">xml added</field></doc>'
           '<doc boost="3"><field name="id">x2</field><field name="title_t">xml second</field></doc></add>')
    assert node.post("plain/update", xml, "text/xml; charset=utf-8", commit="true")[0] == 200
    assert sorted(node.ids(plain, "xml")) == ["x1", "x2"]
    assert node.post("plain/update", "<delete><id>x1</id></delete>", "text/xml", commit="true")[0] == 200
    assert node.post("plain/update", "<delete><query>title_t:second</query></delete>", "text/xml")[0] == 200
    assert node.ids(plain, "xml") == ["x2"]  # not committed yet: still visible
    assert node.post("plain/update", "<commit/>", "text/xml")[0] == 200
    assert node.ids(plain, "xml") == []
    commands = ('{"add": {"doc": {"id": "j1", "title_t": "json one"}}, "add": {"doc": {"id": "j2", "title_t": '
                '"json two"}}, "delete": {"id": "j1"}, "commit": {}}')
    assert node.post("plain/update", commands, "application/json")[0] == 200
    assert node.ids(plain, "json") == ["j2"]
    assert node.post("plain/update/json/docs", '{"id": "j3", "title_t": "json three"}', "application/json",
                     softCommit="true")[0] == 200
    assert sorted(node.ids(plain, "json")) == ["j2", "j3"]
    assert node.post("plain/update/json", '{"delete": {"query": "title_t:json"}}', "application/json",
                     commitWithin="200")[0] == 200
    assert sorted(node.ids(plain, "json")) == ["j2", "j3"]
    time.sleep(0.4)
    assert node.ids(plain, "json") == []


@pytest.mark.parametrize("path, data, params, code, message", [
    ("plain/update", '[{"id": "e1", "nope": 1}]', {}, 400, "ERROR: [doc=e1] unknown field 'nope'"),
    ("plain/update", '[{"title_t": "no id"}]', {}, 400, "Document is missing mandatory uniqueKey field: id"),
    ("plain/update", '[{"id": "e2", "n_i": "seven"}]', {}, 400, "Error adding field 'n_i'='seven'"),
    ("plain/update", '[{"id": "e3", "tag_s": ["a", "b"]}]', {}, 400,
     "multiple values encountered for non multiValued field tag_s"),
    ("plain/update", '[{"id": "e4", "n_i": {"inc": 1}}]', {}, 400, "does not implement atomic updates"),
    ("plain/update", "id,title_t\ne5,csv", {"ct": "text/csv"}, 400, "does not implement update bodies of type"),
    ("plain/select", None, {"q": "title_t:(", "df": "_text_"}, 400, "org.apache.solr.search.SyntaxError"),
    ("plain/select", None, {"q": "nope_field:x"}, 400, "undefined field nope_field"),
    ("plain/select", None, {"q": "*:*", "sort": "title_t asc"}, 400, "can not sort on a field w/o docValues"),
    ("plain/select", None, {"q": "*:*", "stats": "true"}, 400, "The Solr stand-in does not implement the 'stats'"),
    ("plain/select", None, {"q": "*:*", "facet.range": "n_i"}, 400, "does not implement the 'facet.range'"),
    ("plain/select", None, {"q": "fox~"}, 400, "does not implement fuzzy queries"),
    ("plain/select", None, {"q": "{!geofilt sfield=x_p pt=1,2 d=5}"}, 400, "does not implement local parameters"),
    ("plain/mlt", None, {"q": "id:a"}, 400, "does not implement the request handler /mlt"),
    ("nosuchcore/select", None, {"q": "*:*"}, 404, "no core named 'nosuchcore'"),
    ("admin/collections", None, {"action": "LIST"}, 400, "does not implement the admin handler"),
])
def test_errors_are_answered_like_solr(node, plain, path, data, params, code, message):
    if data is None:
        resp = requests.get(f"{node.url}/{path}", params=params, timeout=10)
    else:
        ctype = params.pop("ct", "application/json")
        resp = requests.post(f"{node.url}/{path}", params=params, data=data, headers={"Content-Type": ctype},
                             timeout=10)
    body = resp.json()
    assert (resp.status_code, body["responseHeader"]["status"], body["error"]["code"]) == (code, code, code)
    assert message in body["error"]["msg"]


def test_unload_keeps_the_files_and_is_not_rediscovered(node, plain):
    status, _ = node.get("admin/cores", action="UNLOAD", core="plain")
    assert status == 200
    assert (node.home / "plain" / "core.properties.unloaded").exists()
    assert "plain" not in node.get("admin/cores")[1]["status"]
    assert node.get("plain/select", q="*:*")[0] == 404
