"""Helpers shared by the Molecule scenarios' testinfra suites.

Tests talk to the containers through testinfra's native podman backend
(``podman://<container>``): the Ansible backend costs seconds per command.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
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


def podman_hosts(group: str) -> list[str]:
    return [f"podman://{name}" for name in group_hosts(group)]


def curl(host, url: str, *args: str, check: bool = True):
    """Run curl inside the server; returns the testinfra CommandResult."""
    cmd = "curl -sS --max-time 20 " + " ".join(shlex.quote(a) for a in args) + " " + shlex.quote(url)
    result = host.run(cmd)
    if check:
        assert result.rc == 0, f"{cmd}: rc={result.rc} {result.stderr}"
    return result


def http_status(host, url: str, *args: str) -> int:
    out = curl(host, url, "-k", "-o", "/dev/null", "-w", "%{http_code}", *args).stdout
    return int(out.strip())


def headers(host, url: str, *args: str) -> dict[str, str]:
    """Response headers (lower-case names) of a GET."""
    out = curl(host, url, "-k", "-o", "/dev/null", "-D", "-", *args).stdout
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


def upload(host, name: str, content: str) -> str:
    """Upload a file through the site; returns its /media/ URL path."""
    host.run(f"printf %s {shlex.quote(content)} > /tmp/{name}")
    assert post_form(host, "/uploads/", f"file=@/tmp/{name}") == "302"
    listing = curl(host, "https://localhost/uploads/", "-k").stdout
    match = re.search(r'href="(/media/uploads/[^"]*' + re.escape(Path(name).stem) + r'[^"]*)"', listing)
    assert match, listing
    return match.group(1)


def memcached_stats(host, address: str = "127.0.0.1", port: int = 11211) -> dict[str, int]:
    """memcached `stats` read with bash's /dev/tcp (no client package needed)."""
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


def run_playbook(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run ansible-playbook against the scenario's inventory, as Molecule would (no colours:
    Molecule forces them, and they would get in the way of parsing the recap)."""
    cmd = ["ansible-playbook", "-i", INVENTORY, *args]
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
    return result
