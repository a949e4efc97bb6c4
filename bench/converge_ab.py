#!/usr/bin/env python3
"""Interleaved A/B of two revisions of this repository on fresh all-in-one servers.

A is a baseline revision (a git ref, checked out in a throwaway worktree), B the working tree.
Each pair runs A then B (B then A in every other pair, so that neither side always gets the
machine's first minute), each on its own fresh server, over SSH with pipelining as users run it:

1. first converge of site.yml, next to the floor: on another fresh server, a plain `apt-get install`
   of exactly the packages the converge installed plus `pip install -r` of the app's requirements
   (one floor per pair, shared by both sides);
2. second converge (idempotent: must change nothing);
3. a code-only deploy (playbooks/deploy.yml of the demo app with another version string, same
   requirements).

Prints every run and, per side, the medians: first converge / floor, second converge, deploy, tasks
changed by the second converge; then B / A for each. This machine's speed varies between minutes:
read the ratios of the same pair, not one side's seconds against another day's.

Usage: .venv/bin/python bench/converge_ab.py --baseline <git ref> [--pairs N]   (`make bench-ab`)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import BASE_ARGS, IMAGE, ROOT, ensure_key, playbook, podman_rm, sh, start_server, wait_for_ssh, write_inventory
from converge import floor, manual_packages

STACK = "djstack-bench-ab"
SSH_PORT = int(os.environ.get("BENCH_AB_SSH_PORT", "2225"))


def worktree(ref: str, where: Path) -> Path:
    """The revision `ref` checked out (detached) in `where`."""
    sh(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(where), ref])
    return where


def new_version(root: Path, tmp: Path, name: str) -> Path:
    """The demo app of checkout `root` with another version string: a code change, same requirements."""
    tree = tmp / f"demoapp-{name}"
    shutil.copytree(root / "examples" / "demoapp", tree,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", "db.sqlite3", "media", "static"))
    (tree / "demoapp" / "version.py").write_text(f'"""Bench version."""\n\nVERSION = "ab-{name}"\n')
    return tree


def side(label: str, root: Path, tmp: Path, logs: Path, base_manual: set[str]) -> dict:
    """First converge, second converge and a code-only deploy of checkout `root` on a fresh server."""
    known_hosts = tmp / f"known_hosts-{label}"
    try:
        start_server(STACK, SSH_PORT)
        wait_for_ssh(SSH_PORT, known_hosts)
        (tmp / label).mkdir()
        inv = write_inventory(tmp / label, SSH_PORT, known_hosts, {}, root=root)
        first, first_tasks, _, _ = playbook(inv, logs / f"{label}-first.log", root=root)
        second, second_tasks, second_changed, _ = playbook(inv, logs / f"{label}-second.log", root=root)
        version = new_version(root, tmp, label)
        deploy, deploy_tasks, _, _ = playbook(inv, logs / f"{label}-deploy.log", "playbooks/deploy.yml",
                                              "-e", f"django_app_source_path={version}", root=root)
        packages = manual_packages(STACK) - base_manual
    finally:
        podman_rm(STACK)
    return dict(first=first, first_tasks=first_tasks, second=second, second_tasks=second_tasks,
                second_changed=second_changed, deploy=deploy, deploy_tasks=deploy_tasks, packages=packages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git ref of side A (B is the working tree)")
    parser.add_argument("--pairs", type=int, default=2, help="A/B pairs to run (default 2)")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench" / "ab",
                        help="directory for the playbook logs (per-task timings); default .cache/bench/ab")
    args = parser.parse_args()

    ensure_key()
    args.logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    floors: list[float] = []
    with tempfile.TemporaryDirectory(prefix="djstack-bench-ab-") as tmpdir:
        tmp = Path(tmpdir)
        roots = {"A": worktree(args.baseline, tmp / "baseline"), "B": ROOT}
        try:
            base_manual = set(sh(["podman", "run", "--rm", *BASE_ARGS, IMAGE, "apt-mark", "showmanual"]).stdout.split())
            for pair in range(args.pairs):
                order = ("A", "B") if pair % 2 == 0 else ("B", "A")
                results = {}
                for label in order:
                    work = tmp / f"pair{pair}"
                    work.mkdir(exist_ok=True)
                    results[label] = side(label, roots[label], work, args.logs, base_manual)
                    runs[label].append(results[label])
                packages = sorted(results["A"]["packages"] | results["B"]["packages"])
                parts = floor(packages, ROOT / "examples" / "demoapp" / "requirements.txt")
                floors.append(parts["apt"] + parts["pip"])
                for label in order:
                    results[label]["floor"] = floors[-1]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(roots["A"])],
                           capture_output=True, check=False)

    baseline_rev = sh(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline]).stdout.strip()
    print(f"A = {args.baseline} ({baseline_rev}), B = the working tree; {args.pairs} pair(s), interleaved,"
          " fresh all-in-one servers, SSH with pipelining")
    print(f"  {'run':<6}{'first s':>9}{'floor s':>9}{'first/floor':>13}{'second s':>10}{'changed':>9}"
          f"{'deploy s':>10}{'tasks 1st/2nd/deploy':>23}")
    for pair in range(args.pairs):
        for label in ("A", "B"):
            r = runs[label][pair]
            print(f"  {label}{pair + 1:<5}{r['first']:>9.1f}{r['floor']:>9.1f}{r['first'] / r['floor']:>13.2f}"
                  f"{r['second']:>10.1f}{r['second_changed']:>9}{r['deploy']:>10.1f}"
                  f"{r['first_tasks']:>11}/{r['second_tasks']}/{r['deploy_tasks']}")
    medians = {}
    for label in ("A", "B"):
        rs = runs[label]
        medians[label] = dict(ratio=statistics.median(r["first"] / r["floor"] for r in rs),
                              second=statistics.median(r["second"] for r in rs),
                              deploy=statistics.median(r["deploy"] for r in rs),
                              changed=max(r["second_changed"] for r in rs))
    a, b = medians["A"], medians["B"]
    print("medians:      first/floor  second converge  code-only deploy  changed by the 2nd")
    for label, m in (("A", a), ("B", b)):
        print(f"  {label}           {m['ratio']:>10.2f}  {m['second']:>13.1f} s  {m['deploy']:>14.1f} s  {m['changed']:>18}")
    print(f"  B / A       {b['ratio'] / a['ratio']:>10.2f}  {b['second'] / a['second']:>15.2f}  "
          f"{b['deploy'] / a['deploy']:>16.2f}")
    print("targets (B): first/floor <= 1.5, second converge <= 40 s, code-only deploy <= 20 s, 0 changed")
    print(f"logs with per-task timings: {args.logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
