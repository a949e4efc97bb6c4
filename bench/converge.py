#!/usr/bin/env python3
"""Converge figures for the all-in-one stack, next to the floor they cannot beat.

One run, three fresh servers' worth of work on this machine:

1. first converge of site.yml on a fresh server (over SSH with pipelining, as users run it);
2. second converge of the same server (idempotent: nothing should change);
3. the floor: on another fresh server, a plain `apt-get install` of exactly the packages
   the converge installed, plus `pip install -r` of the app's requirements into a venv.

Prints wall time and task count of each converge, the floor, and first-converge / floor.
Targets: second converge <= 40 s; first / floor <= 1.5 (docs/performance.md).
It also splits both sides into the same parts: package work (apt; the first converge's apt tasks
and virtualenv build, from its per-task timings) and the rest (the converge's configuration).
Package downloads come from the network, so figures move between runs: --runs N repeats the
whole measurement and prints every run and the median.

Usage: .venv/bin/python bench/converge.py [--keep] [--runs N]   (run `make image` first, or `make bench`)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
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


def floor(packages: list[str], requirements: Path, image: str = IMAGE) -> dict[str, float]:
    """Wall seconds of the floor's parts on a fresh server of `image`: apt (update + install) and
    pip (venv + install)."""
    start_server(FLOOR, None, image=image)
    try:
        sh(["podman", "cp", str(requirements), f"{FLOOR}:/tmp/requirements.txt"])
        apt = (
            "set -e; export DEBIAN_FRONTEND=noninteractive; "
            # A fresh server may run its own apt job at boot: wait for dpkg's lock, as Ansible's apt module does.
            "apt-get update -qq; "
            f"apt-get -o DPkg::Lock::Timeout=300 install -y -qq {' '.join(packages)} >/dev/null"
        )
        pip = "set -e; python3 -m venv /tmp/venv; /tmp/venv/bin/pip install -q --no-input -r /tmp/requirements.txt"
        parts = {}
        for name, script in (("apt", apt), ("pip", pip)):
            start = time.monotonic()
            sh(["podman", "exec", FLOOR, "bash", "-c", script], timeout=1800)
            parts[name] = time.monotonic() - start
        return parts
    finally:
        podman_rm(FLOOR)


def task_seconds(log: Path) -> list[tuple[str, float]]:
    """(task name, seconds) for every task of a converge log (profile_tasks' timing lines)."""
    lines = log.read_text().splitlines()
    stamps = []
    for i, line in enumerate(lines):
        m = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\]", line)
        if m and i + 1 < len(lines):
            t = re.search(r"\((\d+):(\d+):([\d.]+)\)", lines[i + 1])
            if t:
                stamps.append((m.group(1), int(t.group(1)) * 3600 + int(t.group(2)) * 60 + float(t.group(3))))
    # Each timing line gives the duration of the task before it.
    return [(stamps[k][0], stamps[k + 1][1]) for k in range(len(stamps) - 1)]


def package_seconds(log: Path) -> float:
    """The first converge's share of the floor's work: its apt installs (common's one transaction of
    every tier's packages, and any role's own install step) and its virtualenv build (the part of
    the build the converge waited for; django_app's prefetch runs pip while other tasks run)."""
    return sum(sec for name, sec in task_seconds(log)
               if re.search(r"(install|prefetch|packages) \| (Install|Ensure) .*(packages|installed|runtime|rabbitmq-server)", name)
               or "Build the virtualenv" in name or "Wait for the virtualenv" in name)


def measure(args, tmp: Path, run: int) -> dict[str, float]:
    known_hosts = tmp / f"known_hosts-{run}"
    first_log, second_log = args.logs / "converge-first.log", args.logs / "converge-second.log"
    try:
        base_manual = set(sh(["podman", "run", "--rm", *BASE_ARGS, IMAGE, "apt-mark", "showmanual"]).stdout.split())
        start_server(STACK, SSH_PORT)
        wait_for_ssh(SSH_PORT, known_hosts)
        inv = write_inventory(tmp / f"run-{run}", SSH_PORT, known_hosts, {})
        first_wall, first_tasks, first_changed, _ = playbook(inv, first_log)
        second_wall, second_tasks, second_changed, _ = playbook(inv, second_log)
        packages = sorted(manual_packages(STACK) - base_manual)
    finally:
        if not args.keep:
            podman_rm(STACK)
    parts = floor(packages, ROOT / "examples" / "demoapp" / "requirements.txt")
    return dict(first=first_wall, first_tasks=first_tasks, first_changed=first_changed,
                first_packages=package_seconds(first_log), second=second_wall, second_tasks=second_tasks,
                second_changed=second_changed, floor_apt=parts["apt"], floor_pip=parts["pip"],
                floor=parts["apt"] + parts["pip"], packages=packages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the converged server for inspection")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole measurement; print each run and the median")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench",
                        help="directory for the converge logs (per-task timings) of the last run; default .cache/bench")
    args = parser.parse_args()

    ensure_key()
    args.logs.mkdir(parents=True, exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="djstack-bench-") as tmpdir:
        for run in range(args.runs):
            (Path(tmpdir) / f"run-{run}").mkdir()
            runs.append(measure(args, Path(tmpdir), run))

    print("Converge of site.yml on one all-in-one server (SSH, pipelining), this machine:")
    print(f"  {'run':<4}{'first s':>9}{'of it apt+venv':>16}{'second s':>10}{'floor s':>9}"
          f"{'apt':>7}{'pip':>7}{'first/floor':>13}{'changed 2nd':>13}")
    for i, r in enumerate(runs, 1):
        print(f"  {i:<4}{r['first']:>9.1f}{r['first_packages']:>16.1f}{r['second']:>10.1f}{r['floor']:>9.1f}"
              f"{r['floor_apt']:>7.1f}{r['floor_pip']:>7.1f}{r['first'] / r['floor']:>13.2f}{r['second_changed']:>13}")
    last = runs[-1]
    print(f"  tasks: first {last['first_tasks']} ({last['first_changed']} changed), second {last['second_tasks']}")
    print(f"  packages in the floor ({len(last['packages'])}): {' '.join(last['packages'])}")
    first = statistics.median(r["first"] for r in runs)
    second = statistics.median(r["second"] for r in runs)
    ratio = statistics.median(r["first"] / r["floor"] for r in runs)
    rest = statistics.median(r["first"] - r["first_packages"] for r in runs)
    label = "median of %d runs" % len(runs) if len(runs) > 1 else "one run"
    print(f"first converge / floor = {ratio:.2f}  (target <= 1.5; {label}; first converge {first:.1f} s,"
          f" of which {rest:.1f} s is not package work)")
    print(f"second converge = {second:.1f} s  (target <= 40 s; {label}), changed = "
          f"{max(r['second_changed'] for r in runs)} (target 0)")
    print(f"converge logs with per-task timings: {args.logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
