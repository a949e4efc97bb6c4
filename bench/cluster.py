#!/usr/bin/env python3
"""The production shape's figures, in one run (issue #22):

1. first converge of site.yml on one fresh all-in-one server (the baseline);
2. first converge of the `cluster` Molecule scenario's five fresh servers (database, two web
   servers, broker/worker, load balancer; SSH as the `deploy` sudo user), then its second,
   idempotent converge (tasks changed: target 0);
3. requests failed during a rolling deploy through the load balancer, with draining next to the
   same deploy without it (bench/rolling_deploy.py, on the cluster just converged).

Prints each converge's wall time, the cluster's first converge / the all-in-one's, and the
rolling deploy's table. The cluster comes and goes through Molecule (create, which prepares, converge,
destroy) under the scenario's own names: do not run it beside `make test`.

Usage: .venv/bin/python bench/cluster.py [--keep]   (or `make bench-cluster`)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, ensure_key, playbook, podman_rm, start_server, wait_for_ssh, write_inventory
from rolling_deploy import print_rows, rolling_rows

STACK = "djstack-bench-stack"
SSH_PORT = int(os.environ.get("BENCH_SSH_PORT", "2223"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def molecule(action: str, log: Path) -> tuple[float, str]:
    """(wall seconds, output) of `molecule <action> -s cluster`; stops the bench when it fails."""
    env = dict(os.environ, DEBIAN_RELEASE=os.environ.get("DEBIAN_RELEASE", "trixie"), NO_COLOR="1")
    start = time.monotonic()
    proc = subprocess.run(["molecule", action, "-s", "cluster"], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    wall = time.monotonic() - start
    out = ANSI.sub("", proc.stdout + proc.stderr)
    log.write_text(out)
    if proc.returncode != 0:
        raise SystemExit(f"bench: molecule {action} -s cluster failed (log: {log}):\n{out[-3000:]}")
    return wall, out


def changed_tasks(output: str) -> int:
    """Tasks changed over every host of the last play recap in `output`."""
    recap = output.rsplit("PLAY RECAP", 1)[-1]
    return sum(int(n) for n in re.findall(r"\s:\s+ok=\d+\s+changed=(\d+)", recap))


def cluster_inventory() -> str:
    """The inventory Molecule wrote for the scenario: its newest ephemeral directory."""
    dirs = sorted(Path.home().glob(".ansible/tmp/molecule.*.cluster/inventory"), key=lambda p: p.stat().st_mtime)
    if not dirs:
        raise SystemExit("bench: no inventory of the cluster scenario under ~/.ansible/tmp")
    return str(dirs[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the converged cluster (molecule destroy -s cluster)")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench" / "cluster",
                        help="directory for the converge logs; default .cache/bench/cluster")
    args = parser.parse_args()
    ensure_key()
    args.logs.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="djstack-bench-") as tmp:
        try:
            start_server(STACK, SSH_PORT)
            wait_for_ssh(SSH_PORT, Path(tmp) / "known_hosts")
            inv = write_inventory(Path(tmp), SSH_PORT, Path(tmp) / "known_hosts", {})
            one, one_tasks, _, _ = playbook(inv, args.logs / "all-in-one-first.log")
        finally:
            podman_rm(STACK)

    molecule("destroy", args.logs / "destroy-before.log")
    try:
        molecule("create", args.logs / "create.log")
        first, _ = molecule("converge", args.logs / "cluster-first.log")
        second, out = molecule("converge", args.logs / "cluster-second.log")
        changed = changed_tasks(out)
        rows = rolling_rows(cluster_inventory())
    finally:
        if not args.keep:
            molecule("destroy", args.logs / "destroy.log")

    print("Converge of site.yml, fresh servers of this machine (SSH, pipelining):")
    print(f"  all-in-one, first converge:           {one:7.1f} s  ({one_tasks} tasks)")
    print(f"  cluster (5 servers), first converge:  {first:7.1f} s  (molecule converge)")
    print(f"  cluster, second converge:             {second:7.1f} s  changed = {changed} (target 0)")
    print(f"cluster first converge / all-in-one first converge = {first / one:.2f}")
    failed = print_rows(rows)
    print(f"logs: {args.logs}")
    return 0 if failed == 0 and changed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
