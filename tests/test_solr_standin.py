"""The Solr stand-in (tests/solr-standin/): its reproducible archive, `bin/solr start -f`, the HTTP API the solr role
and haystack use, and django-haystack driving it through pysolr with the Solr 9 templates (haystack-templates/).

The stand-in is not Apache Solr: these tests prove the harness and the templates, and that the stand-in fails where
Solr 9 fails (haystack's upstream templates, unknown fields, ...). The server runs under Debian's /usr/bin/python3,
as on a fresh server; Java is a fake `java` that only answers `-version`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests

from conftest import free_port

STANDIN = Path(__file__).resolve().parent / "solr-standin"
VERSION = "9.7.0"
SERVER_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the tests read listening sockets from /proc/net")


def build(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SERVER_PYTHON, str(STANDIN / "build-archive.py"), *args, "--output-dir", str(out)],
                          capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("archive")
    build(out)
    with tarfile.open(out / f"solr-{VERSION}-standin.tgz") as tar:
        tar.extractall(out, filter="tar")
    return out / f"solr-{VERSION}-standin.tgz"


@pytest.fixture(scope="module")
def tip(archive) -> Path:
    return archive.parent / f"solr-{VERSION}"


def test_archive_is_reproducible_with_an_apache_style_checksum(archive, tmp_path):
    again = build(tmp_path)
    rebuilt = tmp_path / archive.name
    digest = hashlib.sha512(archive.read_bytes()).hexdigest()
    assert rebuilt.read_bytes() == archive.read_bytes()
    assert again.stdout.splitlines() == [str(rebuilt), f"sha512: {digest}"]
    assert (tmp_path / f"{archive.name}.sha512").read_text() == f"{digest}  {archive.name}\n"
    subprocess.run(["sha512sum", "--check", "--status", f"{archive.name}.sha512"], cwd=tmp_path, check=True)
    build(tmp_path / "other", "--version", "9.6.1")
    with tarfile.open(tmp_path / "other" / "solr-9.6.1-standin.tgz") as tar:
        assert tar.extractfile("solr-9.6.1/server/standin/VERSION").read() == b"9.6.1\n"


def test_archive_has_the_release_layout_and_says_it_is_a_standin(archive, tip):
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert all(name.split("/")[0] == f"solr-{VERSION}" for name in members)
    assert {m.mtime for m in members.values()} == {1704067200} and {m.uid for m in members.values()} == {0}
    for path in ("bin/solr", "bin/solr.in.sh", "server/solr/solr.xml", "server/start.jar", "LICENSE.txt",
                 "NOTICE.txt", "STANDIN.md", "licenses/README.txt", "server/standin/solr_standin.py",
                 "server/standin/standin_index.py", *(f"server/solr/configsets/_default/conf/{f}" for f in (
                     "stopwords.txt", "synonyms.txt", "protwords.txt", "lang/stopwords_en.txt"))):  # the role copies
        assert (tip / path).is_file(), path
    assert members[f"solr-{VERSION}/bin/solr"].mode == 0o755 and os.access(tip / "bin/solr", os.X_OK)
    assert (tip / "STANDIN.md").read_text().startswith("# THIS IS NOT APACHE SOLR")
    assert "production installs the real apache solr release" in (tip / "STANDIN.md").read_text().lower()
    for path in ("NOTICE.txt", "LICENSE.txt", "README.txt", "server/start.jar", "bin/solr", "bin/solr.in.sh"):
        assert "STAND-IN" in (tip / path).read_text(), path
    for path in ("server/standin/solr_standin.py", "server/standin/standin_index.py", "server/solr/solr.xml"):
        assert "NOT Apache Solr" in (tip / path).read_text(), path
    include = (tip / "bin/solr.in.sh").read_text()
    assert all(line.startswith("#") or not line.strip() for line in include.splitlines()), "all commented"


# --- a node ---------------------------------------------------------------------------------------------------

def fake_java(home: Path, version: str) -> Path:
    (home / "bin").mkdir(parents=True, exist_ok=True)
    (home / "bin" / "java").write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2024-07-16\' >&2\n')
    (home / "bin" / "java").chmod(0o755)
    return home


class Node:
    """A node run as the role's unit runs it: `bin/solr start -f`, SOLR_INCLUDE naming an include file with what
    roles/solr/templates/etc/default/solr.in.sh.j2 writes, and SIGTERM to stop, as systemd does."""

    def __init__(self, tip: Path, base: Path):
        self.tip, self.base, self.port, self.proc = tip, base, free_port(), None
        self.home, self.logs, self.url = base / "home", base / "logs", f"http://127.0.0.1:{self.port}/solr"
        self.home.mkdir(parents=True)
        shutil.copy(tip / "server/solr/solr.xml", self.home)  # as the role does
        self.settings = dict(SOLR_PID_DIR=base, SOLR_HOME=self.home, SOLR_LOGS_DIR=self.logs, SOLR_PORT=self.port,
                             SOLR_JETTY_HOST="127.0.0.1", SOLR_HEAP="256m", SOLR_OPTS="$SOLR_OPTS -Dstandin.test=1",
                             SOLR_JAVA_HOME=fake_java(base / "jdk", "17.0.12"), SOLR_STANDIN_PYTHON=SERVER_PYTHON)

    def solr(self, *args: str, run=subprocess.run, **kwargs):
        (self.base / "solr.in.sh").write_text("".join(f'{k}="{v}"\n' for k, v in self.settings.items()))
        env = dict(os.environ, SOLR_INCLUDE=str(self.base / "solr.in.sh"))
        return run([str(self.tip / "bin/solr"), *args], env=env, **(kwargs or dict(capture_output=True, text=True)))

    def start(self):
        self.stdout = self.base / f"stdout-{time.monotonic_ns()}.log"
        with self.stdout.open("w") as out:
            self.proc = self.solr("start", "-f", run=subprocess.Popen, stdout=out, stderr=subprocess.STDOUT)
        for _ in range(400):
            assert self.proc.poll() is None, self.stdout.read_text()
            try:
                if requests.get(f"{self.url}/admin/info/system", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the stand-in did not answer")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def call(self, path, data=None, ctype="text/xml; charset=utf-8", **params):
        resp = requests.request("POST" if data else "GET", f"{self.url}/{path}", params=params, data=data, timeout=10,
                                headers={"Content-Type": ctype} if data else {})
        return resp.status_code, resp.json()

    def ids(self, core, q, **params):
        status, body = self.call(f"{core}/select", q=q, fl="id", rows=100, **params)
        assert status == 200, body
        return sorted(d["id"] for d in body["response"]["docs"])


@pytest.fixture(scope="module")
def node(tip, tmp_path_factory):
    node = Node(tip, tmp_path_factory.mktemp("node"))
    node.start()
    yield node
    if node.proc.poll() is None:
        node.stop()


def listeners(port: int) -> list[str]:
    """Local addresses listening on `port` (TCP and TCP6), read from /proc/net."""
    found = []
    for table in (t for t in ("/proc/net/tcp", "/proc/net/tcp6") if Path(t).exists()):
        for line in Path(table).read_text().splitlines()[1:]:
            (address, hexport), state = line.split()[1].split(":"), line.split()[3]
            if state == "0A" and int(hexport, 16) == port:
                raw = bytes.fromhex(address)
                found.append(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6,
                                              b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))))
    return found


@pytest.mark.parametrize("case, args, expected", [
    ("missing-home", ["start", "-f"], "Solr home directory {base}/nowhere not found!"),
    ("bad-heap", ["start", "-f"], "Invalid initial heap size: -Xms512x"),
    ("no-java", ["start", "-f"], "Java not found"),
    ("old-java", ["start", "-f"], "too old to run this version of Solr"),
    ("background", ["start"], "implements only 'bin/solr start -f', not 'bin/solr start'"),
    ("stop", ["stop", "-p", "8983"], "implements only 'bin/solr start -f', not 'bin/solr stop -p 8983'"),
])
def test_bin_solr_refuses_like_solr_or_says_what_it_lacks(case, args, expected, tip, tmp_path):
    node = Node(tip, tmp_path)
    node.settings.update({"missing-home": {"SOLR_HOME": tmp_path / "nowhere"}, "bad-heap": {"SOLR_HEAP": "512x"},
                          "no-java": {"SOLR_JAVA_HOME": tmp_path / "nojava"},
                          "old-java": {"SOLR_JAVA_HOME": fake_java(tmp_path / "jdk8", "1.8.0_382")}}.get(case, {}))
    result = node.solr(*args)
    assert result.returncode != 0
    assert expected.format(base=tmp_path) in result.stdout + result.stderr
    assert not listeners(node.port)


def test_foreground_node_binds_only_the_configured_address_and_says_it_is_a_standin(node):
    assert listeners(node.port) == ["127.0.0.1"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", node.port), timeout=1).close()
    resp = requests.get(f"{node.url}/admin/info/system", params={"wt": "json"}, timeout=10)
    info = resp.json()
    assert resp.status_code == 200 and info["responseHeader"]["status"] == 0
    assert "NOT Apache Solr" in resp.headers["Server"] and "NOT Apache Solr" in info["lucene"]["solr-impl-version"]
    assert info["lucene"]["solr-spec-version"] == VERSION and info["standin"]["isStandin"] is True
    assert info["jvm"]["memory"]["raw"]["max"] == 256 * 1024 ** 2  # SOLR_HEAP, reported, not used
    assert "-Dstandin.test=1" in info["jvm"]["jmx"]["commandLineArgs"]  # SOLR_OPTS, as the role writes it
    assert "Solr stand-in 9.7.0 starting (NOT Apache Solr" in node.stdout.read_text()  # journald's view
    assert "NOT Apache Solr" in (node.logs / "solr.log").read_text()
    assert not list(node.base.glob("*.pid")), "a foreground start writes no pid file (as bin/solr)"


# --- haystack: configsets from build_solr_schema --------------------------------------------------------------

class Django:
    """manage.py of tests/solr-standin/haystack-project, in subprocesses (.venv's Python, SQLite)."""

    def __init__(self, node: Node, db: Path):
        self.node, self.db = node, db

    def manage(self, *args, check=True, **extra) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", STANDIN_DB=str(self.db), SOLR_BASE_URL=self.node.url,
                   SOLR_CORE="haystack", **extra)
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=STANDIN / "haystack-project", env=env,
                                capture_output=True, text=True, timeout=120)
        assert not (check and result.returncode), f"manage.py {' '.join(args)}: {result.stdout}{result.stderr}"
        return result

    def run(self, code: str, **extra):
        """Python in `manage.py shell -c` with SQS, Note, timezone, timedelta; returns its last line, as JSON."""
        prelude = ("import json\nfrom datetime import timedelta\nfrom django.utils import timezone\n"
                   "from haystack.query import SearchQuerySet as SQS\nfrom notes.models import Note\n")
        return json.loads(self.manage("shell", "-c", prelude + code, **extra).stdout.strip().splitlines()[-1])


def configure_core(django: Django, conf: Path, templates="fixed") -> Path:
    """What the role does: the _default configset's files it copies, then build_solr_schema's two files."""
    shutil.copytree(django.node.tip / "server/solr/configsets/_default/conf", conf, dirs_exist_ok=True)
    django.manage("build_solr_schema", "--configure-directory", str(conf), STANDIN_HAYSTACK_TEMPLATES=templates)
    return conf


@pytest.fixture(scope="module")
def django(node, tmp_path_factory):
    django = Django(node, tmp_path_factory.mktemp("django") / "db.sqlite3")
    django.manage("migrate", "--run-syncdb", "-v", "0")
    return django


@pytest.fixture(scope="module")
def haystack_core(node, django):
    assert node.call("admin/cores", action="STATUS", core="haystack")[1]["status"] == {"haystack": {}}  # role: CREATE
    conf = configure_core(django, node.home / "haystack" / "conf")
    status, body = node.call("admin/cores", action="CREATE", name="haystack", instanceDir="haystack", wt="json")
    assert status == 200, body
    return conf


def test_upstream_haystack_templates_fail_on_solr_9(node, django):
    conf = configure_core(django, node.home / "upstream" / "conf", templates="upstream")
    status, body = node.call("admin/cores", action="CREATE", name="upstream", instanceDir="upstream")
    assert (status, body["error"]["code"]) == (400, 400)
    assert "Error CREATEing SolrCore 'upstream': Unable to create core [upstream]" in body["error"]["msg"]
    assert "Error loading class 'solr.FastLRUCache'" in body["error"]["msg"]  # solrconfig.xml is read first
    shutil.copy(configure_core(django, node.base / "fixed-conf") / "solrconfig.xml", conf)  # fixed config, old schema
    status, body = node.call("admin/cores", action="CREATE", name="upstream", instanceDir="upstream")
    assert status == 400
    assert ('Plugin init failure for [schema.xml] fieldType "location": Error loading class \'solr.LatLonType\''
            in body["error"]["msg"])
    assert not (node.home / "upstream" / "core.properties").exists()
    assert "upstream" not in node.call("admin/cores", action="STATUS")[1]["status"]


@pytest.mark.parametrize("file, old, new, expected", [  # each Solr 9 fix of the templates, undone one at a time
    ("solrconfig.xml", 'class="solr.CaffeineCache"', 'class="solr.LRUCache"', "Error loading class 'solr.LRUCache'"),
    ("solrconfig.xml", "</config>", '<queryResponseWriter name="xslt" class="solr.XSLTResponseWriter"/></config>',
     "Error loading class 'solr.XSLTResponseWriter' (Solr 9 ships it in the 'scripting' module)"),
    ("solrconfig.xml", "</config>", '<searchComponent name="elevator" class="solr.QueryElevationComponent"><str '
     'name="config-file">elevate.xml</str></searchComponent></config>', "Can't find resource 'elevate.xml'"),
    ("solrconfig.xml", '<schemaFactory class="ClassicIndexSchemaFactory"/>', "", "not implement the managed schema"),
    ("schema.xml", '<fieldType name="binary"', '<fieldType name="currency" class="solr.CurrencyField" '
     'currencyConfig="currency.xml"/><fieldType name="binary"', "Can't find resource 'currency.xml'"),
    ("stopwords.txt", None, None, "Can't find resource 'stopwords.txt'"),  # the role copies the _default files
    ("schema.xml", 'name="int" class="solr.IntPointField"', 'name="int" class="solr.TrieIntField"', None),
], ids=["LRUCache", "xslt", "elevator", "managed-schema", "currency", "stopwords", "trie-loads"])
def test_what_solr_9_refuses_is_refused(node, haystack_core, request, file, old, new, expected):
    name = f"check-{request.node.callspec.id}"
    conf = shutil.copytree(haystack_core, node.home / name / "conf")
    if old is None:
        (conf / file).unlink()
    else:
        assert old in (conf / file).read_text()
        (conf / file).write_text((conf / file).read_text().replace(old, new, 1))
    status, body = node.call("admin/cores", action="CREATE", name=name)
    assert status == (200 if expected is None else 400), body
    assert (expected or "") in body.get("error", {}).get("msg", "")


def test_core_from_the_fixed_templates(node, haystack_core):
    core = node.call("admin/cores", action="STATUS", core="haystack", wt="json")[1]["status"]["haystack"]
    assert (core["name"], core["schema"], core["instanceDir"]) == ("haystack", "schema.xml", f"{node.home}/haystack")
    assert core["index"]["numDocs"] == 0 and core["startTime"].endswith("Z")
    assert "name=haystack\n" in (node.home / "haystack" / "core.properties").read_text()
    status, body = node.call("admin/cores", action="CREATE", name="haystack", instanceDir="haystack")
    assert status == 400 and body["error"]["msg"] == "Core with name 'haystack' already exists."
    status, body = node.call("admin/cores", action="CREATE", name="outside", instanceDir="/tmp/outside")
    assert status == 400 and "must be relative to SOLR_HOME" in body["error"]["msg"]


def test_update_index_then_realtime_signal_indexing(node, django, haystack_core):
    assert django.run("""
now = timezone.now()
Note.objects.bulk_create([  # no signals: update_index indexes these
    Note(title="Solr on Debian", body="Installing Apache Solr from the release archive.", published=now - timedelta(1)),
    Note(title="Django search", body="Haystack talks to Solr through pysolr.", published=now - timedelta(days=3)),
    Note(title="Cooking", body="A recipe with an exact phrase inside, and more words.", published=now - timedelta(10)),
])
print(json.dumps(Note.objects.count()))""") == 3
    assert "Indexing 3 notes" in django.manage("update_index").stdout
    assert django.run("print(json.dumps(SQS().count()))") == 3
    assert django.run("""
Note.objects.create(title="Realtime note", body="Saved, so the signal processor indexes it.", published=timezone.now())
print(json.dumps([r.pk for r in SQS().filter(content="signal")]))""") == ["4"]
    log = (node.logs / "solr.log").read_text()
    # what pysolr sends for haystack's update(): XML (haystack passes boost={}), commit=true in the URL
    assert "path=/haystack/update params={commit=true} {add=['notes.note.1', 'notes.note.2', 'notes.note.3']" in log
    assert "[stand-in: body text/xml; charset=utf-8" in log


def test_searching_through_haystack(django, haystack_core):
    found = django.run("""
s = SQS().models(Note)
titles = lambda qs: [r.title for r in qs]
cooking = Note.objects.get(title="Cooking")
print(json.dumps({  # auto_query(...)[:20] with models(): what the demo app's search page runs
    "auto": titles(s.auto_query("solr")[:20]),
    "auto_or": sorted(titles(s.auto_query("pysolr recipe")[:20])),
    "auto_phrase": titles(s.auto_query('"exact phrase" -missing')[:20]),
    "auto_exclude": titles(s.auto_query("solr -pysolr")[:20]),
    "auto_escaped": titles(s.auto_query("recipe: (draft) AND C++ [x]~ *")[:20]),
    "content_and": titles(s.filter(content="solr pysolr")),
    "field": titles(s.filter(title="cooking")),
    "order": titles(s.order_by("published")),
    "slice": titles(s.order_by("-published")[1:3]),
    "count": s.filter(content="solr").count(),
    "models": s.count(),
    "stored": [(r.title, r.published == cooking.published.replace(microsecond=0, tzinfo=None))  # haystack: seconds
               for r in s.filter(title="Cooking")],
    "score": all(r.score > 0 for r in s.filter(content="solr")),
}))""")
    assert found["auto"] == ["Solr on Debian", "Django search"]  # "Solr" twice in the first: a higher score
    assert found["auto_or"] == ["Cooking", "Django search"]  # the default operator of auto_query's words: OR
    assert found["auto_phrase"] == ["Cooking"] and found["auto_exclude"] == ["Solr on Debian"]
    assert found["auto_escaped"] == ["Cooking"]  # haystack escapes the reserved characters of user input
    assert found["content_and"] == ["Django search"]  # haystack ANDs the words of a content filter
    assert found["field"] == ["Cooking"]
    assert found["order"] == ["Cooking", "Django search", "Solr on Debian", "Realtime note"]
    assert found["slice"] == ["Solr on Debian", "Django search"]
    assert (found["count"], found["models"]) == (2, 4)
    assert found["stored"] == [["Cooking", True]] and found["score"] is True


def test_deleting_an_object_removes_it_from_the_index(django, haystack_core):
    assert django.run("""
Note.objects.get(title="Realtime note").delete()
print(json.dumps([r.title for r in SQS().filter(content="signal")] + [SQS().count()]))""") == [3]


def test_schema_change_is_applied_by_a_core_reload(node, django, haystack_core):
    extra = {"STANDIN_EXTRA_FIELD": "1"}
    failed = django.manage("update_index", **extra)  # the running core's schema has no "summary" yet
    # haystack logs the error and still exits 0 (HAYSTACK_CONNECTIONS' SILENTLY_FAIL defaults to True)
    assert "(HTTP 400): [Reason: ERROR: [doc=notes.note.1] unknown field 'summary']" in failed.stderr
    before = node.call("admin/cores", action="STATUS", core="haystack")[1]["status"]["haystack"]["startTime"]
    django.manage("build_solr_schema", "--configure-directory", str(haystack_core), **extra)
    assert "Trying to reload core named haystack" in django.manage(
        "build_solr_schema", "--reload-core", "haystack", **extra).stdout
    django.manage("update_index", **extra)
    assert django.run("print(json.dumps([r.title for r in SQS().filter(summary='recipe')]))", **extra) == ["Cooking"]
    assert "path=/admin/cores params={action=RELOAD&core=haystack} status=0" in (node.logs / "solr.log").read_text()
    assert node.call("admin/cores", action="STATUS", core="haystack")[1]["status"]["haystack"]["startTime"] != before

    good = (haystack_core / "schema.xml").read_text()
    (haystack_core / "schema.xml").write_text(good.replace('class="solr.LatLonPointSpatialField" docValues="true"',
                                                           'class="solr.LatLonType"'))
    status, body = node.call("admin/cores", action="RELOAD", core="haystack")
    assert status == 500 and "Error loading class 'solr.LatLonType'" in body["error"]["msg"]
    assert django.run("print(json.dumps(SQS().count()))", **extra) == 3  # the running core kept its schema
    (haystack_core / "schema.xml").write_text(good)
    assert node.call("admin/cores", action="RELOAD", core="haystack")[0] == 200


def test_clear_index_then_rebuild(django, haystack_core):
    django.manage("clear_index", "--noinput")
    assert django.run("print(json.dumps(SQS().count()))") == 0
    django.manage("rebuild_index", "--noinput", STANDIN_EXTRA_FIELD="1")
    assert django.run("print(json.dumps(SQS().count()))") == 3


def test_sigterm_commits_and_the_cores_and_index_survive_a_restart(node, django, haystack_core):
    before = django.run("print(json.dumps(sorted(r.title for r in SQS().all())))")
    assert node.stop() == 0  # systemd's stop: SIGTERM
    assert "shutting down (committing open cores)" in node.stdout.read_text()
    node.start()
    assert django.run("print(json.dumps(sorted(r.title for r in SQS().all())))") == before
    assert node.call("admin/cores", action="STATUS", core="haystack")[1]["status"]["haystack"]["index"]["numDocs"] == 3


# --- the HTTP API directly: a core of the haystack configset, filled with XML as pysolr sends it ----------------

def xml_docs(*docs: tuple) -> str:
    fields = ("id", "django_ct", "text", "published", "published")
    return "<add>" + "".join("<doc>" + "".join(f'<field name="{k}">{v}</field>' for k, v in zip(fields, doc)) + "</doc>"
                             for doc in docs) + "</add>"


@pytest.fixture(scope="module")
def direct(node, haystack_core):
    shutil.copytree(haystack_core, node.home / "direct" / "conf")
    assert node.call("admin/cores", action="CREATE", name="direct")[0] == 200
    status, body = node.call("direct/update", xml_docs(
        ("a", "notes.note", "The quick brown fox", "2024-01-05T00:00:00Z"),
        ("b", "notes.note", "Quick thinking wins", "2024-03-01T12:00:00.250Z"),
        ("c", "notes.note", "Brown bread, slowly", "2023-12-31T23:59:59Z"),
        ("d", "notes.other", "A fox-like thinker", "2024-02-01T00:00:00Z")), commit="true")
    assert status == 200, body
    return "direct"


@pytest.mark.parametrize("q, params, expected", [
    ("*:*", {}, ["a", "b", "c", "d"]),
    ("QUICK", {"df": "text"}, ["a", "b"]),
    ("text:quick AND text:brown", {}, ["a"]),
    ("text:(quick brown)", {}, ["a", "b", "c"]),                  # the default operator: OR
    ("(text:quick OR text:bread) NOT text:thinking", {}, ["a", "c"]),
    ("text:quick AND NOT text:fox", {}, ["b"]),
    ("NOT text:fox", {}, ["b", "c"]),                              # purely negative: everything else
    ('text:"brown fox"', {}, ["a"]),
    ('text:"fox brown"', {}, []),
    ("(fox\\-like)", {"df": "text"}, ["a", "d"]),                  # one escaped term, two tokens: OR between them
    ("django_ct:(notes.note)", {}, ["a", "b", "c"]),
    ('published:"2024-01-05T00:00:00Z"', {}, ["a"]),
    ("text:quick", {"fq": ["django_ct:(notes.note)", "NOT text:fox"]}, ["b"]),
])
def test_query_syntax(node, direct, q, params, expected):
    assert node.ids(direct, q, **params) == expected


def test_select_results_shape_sort_and_paging(node, direct):
    status, body = node.call("direct/select", q="*:*", fl="id,published,score", sort="published desc", start=1, rows=2)
    assert body["responseHeader"]["params"]["sort"] == "published desc"
    result = body["response"]
    assert (result["numFound"], result["start"], result["maxScore"]) == (4, 1, 1.0)
    assert result["docs"] == [{"id": "d", "published": "2024-02-01T00:00:00Z", "score": 1.0},
                              {"id": "a", "published": "2024-01-05T00:00:00Z", "score": 1.0}]
    docs = node.call("direct/select", q="text:quick OR text:brown", fl="* score")[1]["response"]["docs"]
    assert docs[0]["id"] == "a" and docs[0]["score"] > docs[1]["score"] and docs[0]["django_ct"] == "notes.note"
    assert node.call("direct/select", q="id:b")[1]["response"]["docs"][0]["published"] == "2024-03-01T12:00:00.250Z"
    form = {"q": " OR ".join(["text:quick"] * 200), "fl": "id"}  # pysolr POSTs a long query as a form
    assert node.call("direct/select", form, "application/x-www-form-urlencoded")[1]["response"]["numFound"] == 2


def test_updates_are_visible_at_commit_and_replace_by_unique_key(node, direct):
    assert node.call("direct/update", xml_docs(("x1", "notes.note", "xml added"), ("a", "notes.note", "new")))[0] == 200
    assert node.ids(direct, "text:xml") == [] and node.ids(direct, "text:new") == []  # not committed yet
    assert node.call("direct/update", "<commit />")[0] == 200
    assert node.ids(direct, "text:xml") == ["x1"] and node.ids(direct, "text:new") == ["a"]
    assert node.ids(direct, "text:fox") == ["d"]
    assert node.call("direct/update", "<delete><id>x1</id></delete>", commit="true")[0] == 200
    assert node.call("direct/update", "<delete><query>django_ct:notes.other</query></delete>")[0] == 200
    assert node.ids(direct, "*:*") == ["a", "b", "c", "d"]  # the delete by query is not committed yet
    assert node.call("direct/update", "<optimize />", commit="true")[0] == 200  # as haystack's clear() ends
    assert node.ids(direct, "*:*") == ["a", "b", "c"]
    assert node.call("admin/cores", action="STATUS", core="direct")[1]["status"]["direct"]["index"]["numDocs"] == 3


@pytest.mark.parametrize("path, data, params, code, message", [
    ("direct/update", xml_docs(("e1",)).replace("</doc>", '<field name="nope">1</field></doc>'), {}, 400,
     "ERROR: [doc=e1] unknown field 'nope'"),
    ("direct/update", '<add><doc><field name="text">no id</field></doc></add>', {}, 400,
     "Document is missing mandatory uniqueKey field: id"),
    ("direct/update", xml_docs(("e2", "notes.note", "x", "yesterday")), {}, 400,
     "Error adding field 'published'='yesterday' msg=Invalid Date String"),
    ("direct/update", xml_docs(("e3",)).replace("</doc>", '<field name="x_s">1</field></doc>'), {}, 400,
     "does not implement dynamic fields"),
    ("direct/update", xml_docs(("e4", "notes.note", "x", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z")), {}, 400,
     "multiple values encountered for non multiValued field published"),
    ("direct/update", '[{"id": "e5"}]', {"ctype": "application/json"}, 400, "does not implement update bodies of type"),
    ("direct/update", "<commit/>", {"softCommit": "true"}, 400, "does not implement the update parameter 'softCommit'"),
    ("direct/select", None, {"q": "text:("}, 400, "org.apache.solr.search.SyntaxError"),
    ("direct/select", None, {"q": "nope:x"}, 400, "undefined field nope"),
    ("direct/select", None, {"q": "*:*", "sort": "text asc"}, 400, "can not sort on a field w/o docValues"),
    ("direct/select", None, {"q": "*:*", "hl": "true"}, 400, "The Solr stand-in does not implement the 'hl'"),
    ("direct/select", None, {"q": "*:*", "facet": "on"}, 400, "does not implement the 'facet' parameter"),
    ("direct/select", None, {"q": "*:*", "wt": "xml"}, 400, "does not implement wt=xml"),
    ("direct/select", None, {"q": "text:fox*"}, 400, "does not implement wildcard queries"),
    ("direct/select", None, {"q": "published:[* TO NOW]"}, 400, "does not implement range queries"),
    ("direct/select", None, {"q": "+text:fox"}, 400, "does not implement the + - ! && || operators"),
    ("direct/mlt", None, {"q": "id:a"}, 400, "does not implement the request handler /mlt"),
    ("nosuchcore/select", None, {"q": "*:*"}, 404, "no core named 'nosuchcore'"),
    ("admin/cores", None, {"action": "UNLOAD", "core": "direct"}, 400, "does not implement the core admin action"),
    ("admin/collections", None, {"action": "LIST"}, 400, "does not implement the admin handler"),
])
def test_errors_are_answered_like_solr(node, direct, path, data, params, code, message):
    status, body = node.call(path, data, **params)
    assert (status, body["responseHeader"]["status"], body["error"]["code"]) == (code, code, code)
    assert message in body["error"]["msg"]
