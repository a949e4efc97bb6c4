"""Helpers shared by the Molecule scenarios' testinfra suites.

Tests talk to the containers through testinfra's native podman backend
(``podman://<container>``): the Ansible backend costs seconds per command.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from testinfra.utils.ansible_runner import AnsibleRunner

INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
PROJECT_DIR = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
APP_NAME = os.environ.get("STACK_APP_NAME", "demoapp")
APP_ROOT = f"/srv/{APP_NAME}"
APP_USER = "django"


def group_hosts(group: str) -> list[str]:
    """Inventory host names (= podman container names) of a group."""
    return AnsibleRunner.get_runner(INVENTORY).get_hosts(group)


def web_variable(name: str, default):
    """A variable the inventory sets for the scenario's (first) web server, else the role's default."""
    web = group_hosts("webservers")[0]
    return AnsibleRunner.get_runner(INVENTORY).get_variables(web).get(name, default)


def app_server() -> str:
    """The app server of the scenario's web server (django_app_server: gunicorn or apache_wsgi)."""
    return web_variable("django_app_server", "gunicorn")


def nginx_tls_mode() -> str:
    """Where the web server's certificate comes from (nginx_tls_mode: selfsigned, provided or acme)."""
    web = group_hosts("webservers")[0]
    return AnsibleRunner.get_runner(INVENTORY).get_variables(web).get("nginx_tls_mode", "selfsigned")


def app_server_units() -> list[str]:
    if app_server() == "apache_wsgi":
        return ["apache2.service"]
    return [f"gunicorn@{APP_NAME}.socket", f"gunicorn@{APP_NAME}.service"]


def app_server_log(host, since: str) -> str:
    """What the app server logged (requests included) since a Unix time."""
    if app_server() == "apache_wsgi":
        return host.check_output(f"cat /var/log/apache2/{APP_NAME}-access.log")
    return host.check_output(f"journalctl -u gunicorn@{APP_NAME}.service --since @{since} --no-pager -o cat")


def podman_hosts(group: str) -> list[str]:
    return [f"podman://{name}" for name in group_hosts(group)]


@lru_cache(maxsize=None)
def basic_auth() -> tuple[str, ...]:
    """curl's credentials for a site behind basic auth (the first of stack_basic_auth_users, which
    playbooks/app.yml hands to nginx), or none."""
    users = web_variable("stack_basic_auth_users", [])
    return ("-u", f"{users[0]['name']}:{users[0]['password']}") if users else ()


def curl(host, url: str, *args: str, check: bool = True, auth: bool = True):
    """Run curl inside the server, signed in when the site asks for basic auth (auth=False: never);
    returns the testinfra CommandResult."""
    args = (*basic_auth(), *args) if auth else args
    cmd = "curl -sS --max-time 20 " + " ".join(shlex.quote(a) for a in args) + " " + shlex.quote(url)
    result = host.run(cmd)
    if check:
        assert result.rc == 0, f"{cmd}: rc={result.rc} {result.stderr}"
    return result


def http_status(host, url: str, *args: str, auth: bool = True) -> int:
    out = curl(host, url, "-k", "-o", "/dev/null", "-w", "%{http_code}", *args, auth=auth).stdout
    return int(out.strip())


def headers(host, url: str, *args: str, auth: bool = True) -> dict[str, str]:
    """Response headers (lower-case names) of a GET."""
    out = curl(host, url, "-k", "-o", "/dev/null", "-D", "-", *args, auth=auth).stdout
    result = {}
    for line in out.splitlines()[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            result[name.strip().lower()] = value.strip()
    return result


def post_form(host, path: str, *fields: str) -> str:
    """POST a form to the site as a browser would (CSRF cookie and header, Referer); `fields` are
    curl -F arguments. Returns the status code."""
    jar = f"/tmp/form-{secrets.token_hex(4)}.cookies"
    curl(host, f"https://localhost{path}", "-k", "-c", jar, "-o", "/dev/null")
    token = host.check_output(f"awk '$6 == \"csrftoken\" {{print $7}}' {jar}")
    args = [arg for field in fields for arg in ("-F", field)]
    out = curl(host, f"https://localhost{path}", "-k", "-b", jar, "-H", f"X-CSRFToken: {token}",
               "-H", f"Referer: https://localhost{path}", *args, "-o", "/dev/null", "-w", "%{http_code}").stdout
    host.run(f"rm -f {jar}")
    return out.strip()


def upload(host, name: str, content: str | None = None) -> str:
    """Upload /tmp/<name> through the site (written from `content` first when given); returns
    its URL as the uploads page links it: a /media/ path, or a presigned URL of the media bucket."""
    if content is not None:
        host.run(f"printf %s {shlex.quote(content)} > /tmp/{name}")
    assert post_form(host, "/uploads/", f"file=@/tmp/{name}") == "302"
    listing = curl(host, "https://localhost/uploads/", "-k").stdout
    match = re.search(r'href="((?:/media|https?://[^"/]+/[^"/]+)/uploads/[^"]*' + re.escape(Path(name).stem)
                      + r'[^"]*)"', listing)
    assert match, listing
    return html.unescape(match.group(1))


# Where the playbooks put memcached's socket (playbooks/vars/wiring.yml).
MEMCACHED_SOCKET = "/run/memcached/memcached.sock"


def memcached_socket() -> str:
    """memcached's unix socket as the inventory's shape calls for it, '' for TCP: the playbooks give
    the cache host a socket when every web server and worker is that host (roles/stack)."""
    cache = group_hosts("cacheservers")[0]
    app_hosts = set(group_hosts("webservers")) | set(group_hosts("workers"))
    return MEMCACHED_SOCKET if app_hosts <= {cache} else ""


# A memcached client for the socket, with the server's own python3: connects, sends the commands
# and "quit", prints what memcached answered; on a refused connection prints "ERRNO <errno>" and
# exits 3.
_SOCKET_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("ERRNO", e.errno)
    sys.exit(3)
s.sendall(sys.argv[2].encode() + b"quit\r\n")
out = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
sys.stdout.write(out.decode())
"""


def memcached_socket_command(host, commands: str, user: str = "root"):
    """Run memcached protocol `commands` (each line ending in CR LF) through the socket as `user`."""
    return host.run(f"runuser -u {shlex.quote(user)} -- python3 -c {shlex.quote(_SOCKET_CLIENT)} "
                    f"{shlex.quote(memcached_socket())} {shlex.quote(commands)}")


def memcached_stats(host, address: str = "127.0.0.1", port: int = 11211) -> dict[str, int]:
    """memcached `stats`: through its socket when the inventory gives one, else read with bash's
    /dev/tcp (no client package needed)."""
    if memcached_socket():
        result = memcached_socket_command(host, "stats\r\n")
        assert result.rc == 0, result.stdout + result.stderr
        out = result.stdout
    else:
        script = (
            f"exec 3<>/dev/tcp/{address}/{port}; printf 'stats\\r\\nquit\\r\\n' >&3; "
            "timeout 5 cat <&3"
        )
        out = host.check_output(f"bash -c {shlex.quote(script)}")
    stats = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
            stats[parts[1]] = int(parts[2])
    return stats


def listeners(host, port: int, proto: str = "tcp") -> list[str]:
    """Local addresses listening on a port (e.g. ['127.0.0.1', '[::1]'])."""
    flag = "-ltnH" if proto == "tcp" else "-lunH"
    out = host.check_output(f"ss {flag}")
    found = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        local = cols[3]
        addr, _, lport = local.rpartition(":")
        if lport == str(port):
            found.append(addr)
    return found


def current_release(host) -> str:
    """Id of the release `current` points to."""
    return host.check_output(f"readlink {APP_ROOT}/current").rsplit("/", 1)[-1]


def static_manifest(host) -> dict[str, str]:
    """The current release's map of source name -> hashed name (one manifest per release)."""
    data = host.file(f"{APP_ROOT}/static/staticfiles-{current_release(host)}.json").content_string
    return json.loads(data)["paths"]


def run_playbook(*args: str, timeout: int = 1200, inventory: str = INVENTORY) -> subprocess.CompletedProcess:
    """Run ansible-playbook against the scenario's inventory (or another), as Molecule would (no
    colours: Molecule forces them, and they would get in the way of parsing the recap)."""
    cmd = ["ansible-playbook", "-i", inventory, *args]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", PY_COLORS="0")
    return subprocess.run(cmd, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout, check=False)


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RECAP_LINE = re.compile(r"^(\S+)\s+:\s+(ok=\d+.*)$")


def recap(output: str) -> dict[str, dict[str, int]]:
    """Parse PLAY RECAP lines: host -> {ok, changed, unreachable, failed, skipped, ...}.

    Fails when there is no recap line with the counts, so that a caller can never
    mistake an unparsed recap for "nothing changed".
    """
    result = {}
    in_recap = False
    for line in ANSI.sub("", output).splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if in_recap:
            m = RECAP_LINE.match(line)
            if m:
                result[m.group(1)] = {k: int(v) for k, v in re.findall(r"\b([a-z]+)=(\d+)", m.group(2))}
    assert result and all("changed" in counts for counts in result.values()), (
        "no PLAY RECAP with counts in the output:\n" + output[-2000:]
    )
    # Every entry playbook first checks on the control node that an inventory was given
    # (playbooks/inventory-check.yml): that line is not about the scenario's servers.
    if "localhost" not in group_hosts("all"):
        result.pop("localhost", None)
    return result


def _ignore(directory: str, names: list[str]) -> set[str]:
    """What a checkout would not have: byte code anywhere, local data at the project root only
    (the app's own notes/static/ must stay)."""
    skipped = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
    if Path(directory) == PROJECT_DIR / "examples" / "demoapp":
        skipped |= {n for n in names if n in ("db.sqlite3", "static", "media")}
    return skipped


def app_version(tree: Path, overlays: list[Path] = (), version: str | None = None, project: Path | None = None) -> Path:
    """A version of the demo app (or of `project`) on the controller: its directory, then each
    overlay directory copied over it, then (optionally) another version string (demo app only)."""
    shutil.copytree(project or PROJECT_DIR / "examples" / "demoapp", tree, ignore=_ignore)
    for overlay in overlays:
        shutil.copytree(overlay, tree, dirs_exist_ok=True, ignore=_ignore)
    if version:
        (tree / "demoapp" / "version.py").write_text(f'"""Test version."""\n\nVERSION = "{version}"\n')
    return tree


def deploy(source: Path) -> subprocess.CompletedProcess:
    return run_playbook("playbooks/deploy.yml", "-e", f"django_app_source_path={source}")


def health(host) -> dict:
    return json.loads(curl(host, "https://localhost/healthz", "-k").stdout)


def start_watchers(host) -> None:
    """While a deploy or a switch runs: poll `current` (it must never be missing) and send
    requests through nginx one after another (none may fail)."""
    host.run("rm -f /tmp/current-missing /tmp/codes")
    host.run(f"nohup bash -c 'while [ ! -e /tmp/stop-watch ]; do [ -e {APP_ROOT}/current/manage.py ] "
             "|| echo missing >> /tmp/current-missing; done' >/dev/null 2>&1 &")
    auth = " ".join(shlex.quote(a) for a in basic_auth())
    script = ("while [ ! -e /tmp/stop-watch ]; do curl -sk -o /dev/null --max-time 20 " + auth
              + ' -w "%{http_code}\\n" https://localhost/counter/ >> /tmp/codes; done')
    host.run(f"nohup bash -c {shlex.quote(script)} >/dev/null 2>&1 &")


def stop_watchers(host) -> tuple[int, list[str]]:
    """(times `current` was missing, the status codes of the requests)."""
    host.run("touch /tmp/stop-watch; sleep 1; rm -f /tmp/stop-watch")
    missing = host.run("cat /tmp/current-missing").stdout.split()
    codes = host.run("cat /tmp/codes").stdout.split()
    return len(missing), codes


# An HTTP receiver on a server's loopback, for what the stack posts out (the notifier's and
# Alertmanager's webhooks, Sentry's envelopes): each POST becomes one JSON line per item,
# {"path": ..., "body": ...}, in its record file. It logs nothing (a webhook's URL carries its token).
_RECEIVER = r"""
import gzip, http.server, json, sys, zlib
port, record, envelopes = int(sys.argv[1]), sys.argv[2], sys.argv[3] == 'envelopes'
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        encoding = self.headers.get('Content-Encoding', '')
        body = gzip.decompress(body) if encoding == 'gzip' else zlib.decompress(body) if encoding == 'deflate' else body
        if envelopes:  # a header line, then each item's header and payload: the events are kept
            lines = body.split(b'\n')
            items = [json.loads(p) for h, p in zip(lines[1::2], lines[2::2]) if json.loads(h).get('type') == 'event']
        else:
            items = [json.loads(body)]
        with open(record, 'a') as f:
            for item in items:
                f.write(json.dumps({'path': self.path, 'body': item}) + '\n')
        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', port), H).serve_forever()
"""


@contextlib.contextmanager
def receiver(host, unit: str, port: int, envelopes: bool = False):
    """Run a receiver as the transient unit `unit` on 127.0.0.1:`port` of a server, and yield a
    function that returns what it has received so far. envelopes: the posts are Sentry's
    envelopes (compressed), whose events are kept; else each post is one JSON document."""
    record = f"/run/{unit}.jsonl"
    host.run(f"systemctl stop {unit}.service; rm -f {record}")
    host.check_output(f"systemd-run --unit={unit} --property=Type=simple python3 -c {shlex.quote(_RECEIVER)}"
                      f" {port} {record} {'envelopes' if envelopes else 'json'}")
    host.check_output(f"for i in $(seq 50); do ss -Htln 'sport = :{port}' | grep -q . && exit 0; sleep 0.1; done; exit 1")

    def received() -> list[dict]:
        return [json.loads(line) for line in host.run(f"cat {record}").stdout.splitlines()]

    try:
        yield received
    finally:
        host.run(f"systemctl stop {unit}.service; systemctl reset-failed {unit}.service")
