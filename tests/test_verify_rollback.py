"""The check through nginx after the switch (entry point `verify`), and its rollback, on localhost.

The role's tasks/verify.yml runs for real (connection local) against an HTTPS server of this test
standing in for nginx and the app: it answers as the release `current` points to under a tmp app
root. The switch back is the real django_release module on that root; a handler of the test play
listening to "reload django app" stands in for the app server's.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
A, B = "20260101T000000Z-aaaaaaaaaaaa", "20260102T000000Z-bbbbbbbbbbbb"

PLAY = """
- name: Verify as after a deploy
  hosts: localhost
  gather_facts: false
  handlers:
    - name: Note the reload
      ansible.builtin.copy:
        content: "reloaded\\n"
        dest: "{root}/reloaded"
        mode: "0644"
      listen: reload django app
    - name: Note the restart
      ansible.builtin.copy:
        content: "restarted\\n"
        dest: "{root}/restarted"
        mode: "0644"
      listen: restart django app
  tasks:
    - name: Set what the deploy would have set
      ansible.builtin.set_fact: {facts}
    - name: Verify
      ansible.builtin.import_role:
        name: django_app
        tasks_from: verify
"""


class Site(BaseHTTPRequestHandler):
    """/healthz and / as the release under `current` answers them; B's home page is broken."""

    root: Path

    def do_GET(self):  # noqa: N802 (http.server's name)
        release = os.path.basename(os.readlink(self.root / "current"))
        if self.headers.get("Host", "").split(":")[0] != "site.test":
            status, body, kind = 400, "wrong host", "text/plain"
        elif self.path == "/healthz" and release == A:
            status, body, kind = 200, "OK", "text/plain"  # plain text names no release
        elif self.path == "/healthz":
            status, body, kind = 200, json.dumps({"database": "ok", "release": release}), "application/json"
        elif self.path == "/" and release == B or (self.root / "all-broken").exists():
            status, body, kind = 500, "<h1>Server Error (500)</h1>\n<p>relation notes_note does not exist</p>", "text/html"
        elif self.path == "/":
            status, body, kind = 200, "<html>home of %s</html>" % release, "text/html"
        else:
            status, body, kind = 404, "not found", "text/plain"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def https_port(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=site.test",
                    "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture()
def app_root(tmp_path, https_port):
    """releases/A and B sharing one virtualenv, current -> B, previous -> A."""
    root = tmp_path / "srv"
    (root / "venvs" / "v1").mkdir(parents=True)
    for release in (A, B):
        (root / "releases" / release).mkdir(parents=True)
        os.symlink("../../venvs/v1", root / "releases" / release / ".venv")
    os.symlink(f"releases/{B}", root / "current")
    os.symlink(f"releases/{A}", root / "previous")
    https_port.RequestHandlerClass.root = root
    return root


def verify(tmp_path: Path, root: Path, port: int, facts: dict, urls=None) -> subprocess.CompletedProcess:
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(root=root, facts=json.dumps(facts)))
    variables = {
        "django_app_secret_key": "s" * 60, "django_app_db_password": "db-password-123",
        "django_app_allowed_hosts": ["site.test"], "django_app_root": str(root),
        "django_app_healthcheck_port": port, "django_app_healthcheck_timeout": 2,
        "django_app_healthcheck_urls": urls or [{"path": "/healthz"}, {"path": "/", "status": 200}],
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_LIBRARY=str(ROOT / "library"),
               ANSIBLE_MODULE_UTILS=str(ROOT / "module_utils"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="false")
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(play), "-e", f"@{tmp_path / 'vars.json'}"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def current(root: Path) -> str:
    return os.path.basename(os.readlink(root / "current"))


def test_a_healthy_site_passes(tmp_path, app_root, https_port):
    os.unlink(app_root / "current")
    os.symlink(f"releases/{A}", app_root / "current")
    result = verify(tmp_path, app_root, https_port.server_port, {"_django_app_release_id": A})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_a_failed_verify_after_this_runs_switch_rolls_the_code_back(tmp_path, app_root, https_port):
    facts = {"_django_app_release_id": B, "_django_app_switched": {"release": B, "replaced": A}}
    result = verify(tmp_path, app_root, https_port.server_port, facts)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert f"Verify through nginx failed for release {B}" in out, out[-3000:]
    assert "GET / answered 500, expected 200: <h1>Server Error (500)</h1> <p>relation notes_note" in out, out[-3000:]
    assert f"Rolled back to release {A}, which now answers as expected" in out, out[-3000:]
    assert "no migration was reverted" in out
    assert current(app_root) == A
    assert os.path.basename(os.readlink(app_root / "previous")) == B
    assert (app_root / "reloaded").exists() and not (app_root / "restarted").exists()


def test_a_rollback_that_fails_too_says_so(tmp_path, app_root, https_port):
    (app_root / "all-broken").touch()
    facts = {"_django_app_release_id": B, "_django_app_switched": {"release": B, "replaced": A}}
    result = verify(tmp_path, app_root, https_port.server_port, facts)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert f"Rollback to release {A} also failed" in out, out[-3000:]
    assert current(app_root) == A


def test_without_a_previous_release_nothing_is_rolled_back(tmp_path, app_root, https_port):
    facts = {"_django_app_release_id": B, "_django_app_switched": {"release": B, "replaced": ""}}
    result = verify(tmp_path, app_root, https_port.server_port, facts)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert f"There was no previous release: NOT rolled back, release {B} is still live" in out, out[-3000:]
    assert current(app_root) == B and not (app_root / "reloaded").exists()


def test_a_verify_that_switched_nothing_rolls_nothing_back(tmp_path, app_root, https_port):
    result = verify(tmp_path, app_root, https_port.server_port, {"_django_app_release_id": B})
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert "GET / answered 500" in out and "NOT rolled back: this run did not switch the release" in out, out[-3000:]
    assert current(app_root) == B and not (app_root / "reloaded").exists()


def test_the_health_page_must_name_the_release_only_when_its_json_names_one(tmp_path, app_root, https_port):
    """B's /healthz is JSON naming B; a verify expecting another release fails on it (no switch: no rollback)."""
    urls = [{"path": "/healthz"}]
    result = verify(tmp_path, app_root, https_port.server_port, {"_django_app_release_id": A}, urls=urls)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and f"GET /healthz did not answer from release {A} (key release)" in out, out[-3000:]
    result = verify(tmp_path, app_root, https_port.server_port, {"_django_app_release_id": B}, urls=urls)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
