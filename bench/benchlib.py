"""What the bench scripts share: fresh "servers" (systemd containers from the local image,
reached over SSH with pipelining as users reach real servers), their inventory, and timed
ansible-playbook runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The fresh servers' Debian release: DEBIAN_RELEASE=trixie (Debian 13, the default) or bookworm.
IMAGE = f"localhost/djstack-debian:{os.environ.get('DEBIAN_RELEASE', 'trixie')}"
KEY = ROOT / ".cache" / "ssh" / "id_ed25519"
VAULT_ID = f"demo@{ROOT / 'inventories' / 'demo' / 'vault-password.txt'}"
# runc, not crun, and explicit limits: see scripts/build-image.sh. SYS_ADMIN: what systemd needs to
# apply the units' sandboxing; NET_ADMIN: what the firewall role needs to load its nftables table;
# both as on a real server.
BASE_ARGS = ["--runtime=runc", "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure stop the bench with the command's own output (not a bare exit code)."""
    proc = subprocess.run(cmd, text=True, capture_output=True, check=False, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:4])}... failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def podman_rm(name: str) -> None:
    subprocess.run(["podman", "rm", "-f", "-t", "5", name], capture_output=True, check=False)


def ensure_key() -> None:
    KEY.parent.mkdir(parents=True, exist_ok=True)
    if not KEY.exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "django-stack bench", "-f", str(KEY)])


def start_server(name: str, ssh_port: int | None, ports: dict[int, int] | None = None, image: str = IMAGE,
                 network: str | None = None) -> None:
    """A fresh server from `image`; `ports` publishes container ports on the host's loopback (host: container)."""
    podman_rm(name)
    args = ["podman", "run", "-d", "--name", name, "--hostname", name, "--systemd=always", *BASE_ARGS]
    if network:
        args += ["--network", network]
    if ssh_port:
        args += ["-p", f"127.0.0.1:{ssh_port}:22", "-v", f"{KEY}.pub:/root/.ssh/authorized_keys:ro"]
    for host_port, container_port in (ports or {}).items():
        args += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
    sh([*args, image])
    # Wait for systemd to finish booting, as a real server would have before you log in.
    # (`--wait` returns when booting is over, "running" or "degraded" alike.)
    subprocess.run(["podman", "exec", name, "systemctl", "is-system-running", "--wait"],
                   capture_output=True, timeout=120, check=False)


def wait_for_ssh(ssh_port: int, known_hosts: Path) -> None:
    for _ in range(60):
        r = subprocess.run(
            ["ssh", "-q", "-i", str(KEY), "-p", str(ssh_port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=2",
             "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=accept-new", "root@127.0.0.1",
             "true"],
            capture_output=True, check=False,
        )
        if r.returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("bench: the server did not answer SSH")


def write_inventory(directory: Path, ssh_port: int, known_hosts: Path, host_vars: dict[str, object],
                    root: Path = ROOT, groups: tuple[str, ...] = ()) -> Path:
    """An all-in-one inventory for host `bench` with the demo's group_vars (and vault) of the checkout `root`."""
    inv = directory / "inventory"
    inv.mkdir()
    (inv / "group_vars").symlink_to(root / "inventories" / "demo" / "group_vars")
    settings = {
        "celery_beat_enabled": True,  # the one host of the inventory
        "ansible_host": "127.0.0.1", "ansible_port": ssh_port, "ansible_user": "root",
        "ansible_ssh_private_key_file": str(KEY),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=accept-new",
        "django_app_source_path": str(root / "examples" / "demoapp"),
        "nginx_https_public_port": 443,
        **host_vars,
    }
    lines = ["all:", "  hosts:", "    bench:"] + [f"      {k}: {v!r}" if isinstance(v, str) else f"      {k}: {v}"
                                                 for k, v in settings.items()]
    lines += ["  children:"] + [f"    {group}: {{hosts: {{bench: }}}}" for group in
                                ("dbservers", "cacheservers", "brokers", "webservers", "workers", *groups)]
    (inv / "hosts.yml").write_text("\n".join(lines) + "\n")
    return inv


def playbook(inv: Path, log: Path, playbook_path: str = "site.yml", *extra: str,
             check: bool = True, root: Path = ROOT) -> tuple[float, int, int, int]:
    """Run a playbook of the checkout `root`; return (wall seconds, tasks run, tasks changed, return code)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook"),
           playbook_path, "-i", str(inv), "--vault-id", VAULT_ID, *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    log.write_text(proc.stdout + proc.stderr)
    if check and proc.returncode != 0:
        raise SystemExit(f"bench: {playbook_path} failed (log: {log}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    m = re.search(r"^bench\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)\s+skipped=(\d+)",
                  proc.stdout, re.M)
    ok, changed, failed, skipped = (int(x) for x in m.groups()) if m else (0, 0, 0, 0)
    return wall, ok + failed + skipped, changed, proc.returncode


# Sentry for a bench server: a receiver on the server's loopback that takes envelopes and answers
# 200, as Sentry does, and the DSN that points the app at it.
SENTRY_RECEIVER_PORT = 45094
SENTRY_DSN = f"http://benchkey@127.0.0.1:{SENTRY_RECEIVER_PORT}/1"
_SENTRY_RECEIVER = r"""
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', %d), H).serve_forever()
""" % SENTRY_RECEIVER_PORT


def on_server(name: str, script: str) -> str:
    """Run a shell script on a bench server (podman exec); its stdout."""
    return subprocess.run(["podman", "exec", name, "bash", "-c", script], capture_output=True, text=True,
                          check=True).stdout


def start_sentry_receiver(name: str) -> None:
    subprocess.run(["podman", "exec", name, "systemd-run", "--unit=bench-sentry-receiver", "python3", "-c",
                    _SENTRY_RECEIVER], capture_output=True, check=True)
