#!/usr/bin/env python3
"""Converge figures for the all-in-one stack, next to the floor they cannot beat.

One run, three fresh servers' worth of work on this machine:

1. first converge of site.yml on a fresh server (over SSH with pipelining, as users run it);
2. second converge of the same server (idempotent: nothing should change);
3. the floor: on another fresh server, a plain `apt-get install` of exactly the packages
   the converge installed, plus `pip install -r` of the app's requirements into a venv.

Prints wall time and task count of each converge, the floor, and first-converge / floor.
Targets (issue #2): second converge < 30 s; first / floor <= 1.5.

Usage: .venv/bin/python bench/converge.py [--keep]   (run `make image` first, or `make bench`)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("DJSTACK_IMAGE", "localhost/djstack-debian:bookworm")
STACK = "djstack-bench-stack"
FLOOR = "djstack-bench-floor"
SSH_PORT = int(os.environ.get("BENCH_SSH_PORT", "2223"))
KEY = ROOT / ".cache" / "ssh" / "id_ed25519"
# runc, not crun, and explicit limits: see scripts/build-image.sh and the README.
BASE_ARGS = ["--runtime=runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def podman_rm(name: str) -> None:
    subprocess.run(["podman", "rm", "-f", "-t", "5", name], capture_output=True, check=False)


def start_server(name: str, ssh_port: int | None) -> None:
    podman_rm(name)
    args = ["podman", "run", "-d", "--name", name, "--systemd=always", *BASE_ARGS]
    if ssh_port:
        args += ["-p", f"127.0.0.1:{ssh_port}:22", "-v", f"{KEY}.pub:/root/.ssh/authorized_keys:ro"]
    sh([*args, IMAGE])
    # Wait for systemd to finish booting, as a real server would have before you log in.
    # (`--wait` returns when booting is over, "running" or "degraded" alike.)
    subprocess.run(["podman", "exec", name, "systemctl", "is-system-running", "--wait"],
                   capture_output=True, timeout=120, check=False)


def wait_for_ssh(known_hosts: Path) -> None:
    for _ in range(60):
        r = subprocess.run(
            ["ssh", "-q", "-i", str(KEY), "-p", str(SSH_PORT), "-o", "BatchMode=yes", "-o", "ConnectTimeout=2",
             "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=accept-new", "root@127.0.0.1", "true"],
            capture_output=True, check=False,
        )
        if r.returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("bench: the server did not answer SSH")


def write_inventory(tmp: Path, known_hosts: Path) -> Path:
    inv = tmp / "inventory"
    inv.mkdir()
    (inv / "group_vars").symlink_to(ROOT / "inventories" / "demo" / "group_vars")
    (inv / "hosts.yml").write_text(f"""
all:
  hosts:
    bench:
      ansible_host: 127.0.0.1
      ansible_port: {SSH_PORT}
      ansible_user: root
      ansible_ssh_private_key_file: {KEY}
      ansible_ssh_common_args: -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=accept-new
      django_app_source_path: {ROOT / "examples" / "demoapp"}
      nginx_https_public_port: 443
  children:
    dbservers: {{hosts: {{bench: }}}}
    cacheservers: {{hosts: {{bench: }}}}
    webservers: {{hosts: {{bench: }}}}
""")
    return inv


def converge(inv: Path, log: Path) -> tuple[float, int, int]:
    """Run site.yml; return (wall seconds, tasks run, tasks changed)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook"), "site.yml", "-i", str(inv),
           "--vault-id", f"demo@{ROOT / 'inventories/demo/vault-password.txt'}"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"bench: converge failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    m = re.search(r"^bench\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)\s+skipped=(\d+)", proc.stdout, re.M)
    ok, changed, failed, skipped = (int(x) for x in m.groups())
    return wall, ok + failed + skipped, changed


def manual_packages(name: str) -> set[str]:
    return set(sh(["podman", "exec", name, "apt-mark", "showmanual"]).stdout.split())


def floor(packages: list[str], requirements: Path) -> float:
    start_server(FLOOR, None)
    try:
        sh(["podman", "cp", str(requirements), f"{FLOOR}:/tmp/requirements.txt"])
        script = (
            "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
            f"apt-get install -y -qq {' '.join(packages)} >/dev/null; "
            "python3 -m venv /tmp/venv; /tmp/venv/bin/pip install -q --no-input -r /tmp/requirements.txt"
        )
        start = time.monotonic()
        sh(["podman", "exec", FLOOR, "bash", "-c", script], timeout=1800)
        return time.monotonic() - start
    finally:
        podman_rm(FLOOR)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the converged server for inspection")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench",
                        help="directory for the converge logs (per-task timings); default .cache/bench")
    args = parser.parse_args()

    KEY.parent.mkdir(parents=True, exist_ok=True)
    if not KEY.exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "django-stack bench", "-f", str(KEY)])
    with tempfile.TemporaryDirectory(prefix="djstack-bench-") as tmpdir:
        tmp = Path(tmpdir)
        known_hosts = tmp / "known_hosts"
        try:
            base_manual = set(sh(["podman", "run", "--rm", *BASE_ARGS, IMAGE, "apt-mark", "showmanual"]).stdout.split())
            start_server(STACK, SSH_PORT)
            wait_for_ssh(known_hosts)
            inv = write_inventory(tmp, known_hosts)
            args.logs.mkdir(parents=True, exist_ok=True)
            first_wall, first_tasks, first_changed = converge(inv, args.logs / "converge-first.log")
            second_wall, second_tasks, second_changed = converge(inv, args.logs / "converge-second.log")
            packages = sorted(manual_packages(STACK) - base_manual)
        finally:
            if not args.keep:
                podman_rm(STACK)
        floor_wall = floor(packages, ROOT / "examples" / "demoapp" / "requirements.txt")

    ratio = first_wall / floor_wall
    print("Converge of site.yml on one all-in-one server (SSH, pipelining), this machine:")
    print(f"  {'run':<34}{'wall s':>8}{'tasks':>7}{'changed':>9}")
    print(f"  {'first converge (fresh server)':<34}{first_wall:>8.1f}{first_tasks:>7}{first_changed:>9}")
    print(f"  {'second converge (idempotent)':<34}{second_wall:>8.1f}{second_tasks:>7}{second_changed:>9}")
    print(f"  {'floor: apt-get + pip only':<34}{floor_wall:>8.1f}")
    print(f"  packages in the floor ({len(packages)}): {' '.join(packages)}")
    print(f"first converge / floor = {ratio:.2f}  (target <= 1.5)")
    print(f"second converge = {second_wall:.1f} s  (target < 30 s), changed = {second_changed} (target 0)")
    print(f"converge logs with per-task timings: {args.logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
