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
import sys
import tempfile
import time
from pathlib import Path

from benchlib import BASE_ARGS, IMAGE, ROOT, ensure_key, playbook, podman_rm, sh, start_server, wait_for_ssh, write_inventory

STACK = "djstack-bench-stack"
FLOOR = "djstack-bench-floor"
SSH_PORT = int(os.environ.get("BENCH_SSH_PORT", "2223"))


def manual_packages(name: str) -> set[str]:
    return set(sh(["podman", "exec", name, "apt-mark", "showmanual"]).stdout.split())


def floor(packages: list[str], requirements: Path) -> float:
    start_server(FLOOR, None)
    try:
        sh(["podman", "cp", str(requirements), f"{FLOOR}:/tmp/requirements.txt"])
        script = (
            "set -e; export DEBIAN_FRONTEND=noninteractive; "
            # A fresh server may run its own apt job at boot: wait for dpkg's lock, as Ansible's apt module does.
            "apt-get update -qq; "
            f"apt-get -o DPkg::Lock::Timeout=300 install -y -qq {' '.join(packages)} >/dev/null; "
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

    ensure_key()
    with tempfile.TemporaryDirectory(prefix="djstack-bench-") as tmpdir:
        tmp = Path(tmpdir)
        known_hosts = tmp / "known_hosts"
        try:
            base_manual = set(sh(["podman", "run", "--rm", *BASE_ARGS, IMAGE, "apt-mark", "showmanual"]).stdout.split())
            start_server(STACK, SSH_PORT)
            wait_for_ssh(SSH_PORT, known_hosts)
            inv = write_inventory(tmp, SSH_PORT, known_hosts, {})
            args.logs.mkdir(parents=True, exist_ok=True)
            first_wall, first_tasks, first_changed, _ = playbook(inv, args.logs / "converge-first.log")
            second_wall, second_tasks, second_changed, _ = playbook(inv, args.logs / "converge-second.log")
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
