#!/usr/bin/env python3
"""The streaming replica's figures, in one run (issue #23), on a converged cluster (the `cluster`
Molecule scenario after `molecule converge -s cluster`, which has a replica on its worker):

1. replication under a steady write load: 8 clients on the load balancer writing through it
   (each /counter/ request updates a row) for --seconds; meanwhile, every 0.2 s, the primary's
   replay lag of the replica (pg_stat_replication.replay_lag) and the bytes of WAL it has not
   replayed. Baseline: the same samples with no load, same run. Target: lag <= 1 s.
2. promotion under that load: writes through the load balancer with timestamps while
   playbooks/promote-replica.yml runs (the inventory with dbservers and dbreplicas swapped):
   failed writes, and seconds from the first failed write to the first success after the last.
   Baseline: the playbook's own wall time (the writes resume long before it ends). Target: <= 30 s.
   Then playbooks/rebuild-replica.yml makes the old primary a replica; then the same again the other
   way round, which leaves the cluster as the inventory has it (two promotions measured).

Point-in-time recovery (RPO, PITR restore time) is not measured: it is not built yet.

Usage: .venv/bin/python bench/replica.py [--inventory <molecule's inventory dir>] [--seconds 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cluster import cluster_inventory
from rolling_deploy import ROOT, ansible_env, load_balancer, podman_exec

CLIENTS = 8


def groups(inventory: str) -> dict[str, list[str]]:
    data = yaml.safe_load((Path(inventory) / "ansible_inventory.yml").read_text())
    return {name: sorted((group or {}).get("hosts") or {}) for name, group in data.items()}


def swapped(inventory: str, target: Path) -> str:
    """A copy of the inventory with dbservers and dbreplicas swapped (the operator's edit)."""
    source = Path(inventory)
    data = yaml.safe_load((source / "ansible_inventory.yml").read_text())
    data["dbservers"]["hosts"], data["dbreplicas"]["hosts"] = data["dbreplicas"]["hosts"], data["dbservers"]["hosts"]
    target.mkdir(parents=True, exist_ok=True)
    for name in ("group_vars", "host_vars"):
        if not (target / name).exists():
            (target / name).symlink_to((source / name).resolve())
    (target / "ansible_inventory.yml").write_text(yaml.safe_dump(data))
    return str(target)


def psql(host: str, sql: str) -> str:
    return podman_exec(host, f"runuser -u postgres -- psql -XAt -F ' ' -c \"{sql}\"").strip()


def start_writes(lb: str) -> None:
    podman_exec(lb, "rm -f /tmp/bench-stop /tmp/bench-writes-*")
    for n in range(CLIENTS):
        loop = ("end=$((SECONDS+1800)); while [ ! -e /tmp/bench-stop ] && [ $SECONDS -lt $end ]; do "
                "code=$(curl -sk --max-time 10 -o /dev/null -w '%{http_code}' 'https://localhost/counter/?format=json'); "
                f"echo \"$(date +%s.%N) $code\" >> /tmp/bench-writes-{n}; done")
        subprocess.run(["podman", "exec", "-d", lb, "bash", "-c", loop], check=True, capture_output=True)


def stop_writes(lb: str) -> list[tuple[float, str]]:
    podman_exec(lb, "touch /tmp/bench-stop; sleep 2")
    lines = podman_exec(lb, "cat /tmp/bench-writes-*").split("\n")
    return sorted((float(t), code) for t, code in (line.split() for line in lines if line.strip()))


def lag_samples(primary: str, seconds: float) -> tuple[list[float], list[int]]:
    """(replay lag seconds, bytes not replayed), every 0.2 s."""
    lags, behind = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        row = psql(primary, "SELECT COALESCE(EXTRACT(EPOCH FROM replay_lag), 0), "
                            "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication")
        lag, lsn_diff = row.split()
        lags.append(float(lag))
        behind.append(int(float(lsn_diff)))
        time.sleep(0.2)
    return lags, behind


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def run(inventory: str, playbook: str) -> float:
    started = time.monotonic()
    result = subprocess.run(["ansible-playbook", "-i", inventory, str(ROOT / "playbooks" / playbook)], cwd=ROOT,
                            env=ansible_env(inventory), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"bench: {playbook} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return time.monotonic() - started


def promotion(inventory: str, lb: str) -> tuple[int, int, float, float, float]:
    """(writes, failed, seconds without a successful write, promote-replica.yml s, rebuild-replica.yml s)."""
    start_writes(lb)
    time.sleep(3)
    took = run(inventory, "promote-replica.yml")
    time.sleep(3)
    samples = stop_writes(lb)
    failed = [t for t, code in samples if code != "200"]
    window = 0.0
    if failed:
        after = [t for t, code in samples if code == "200" and t > failed[-1]]
        window = (after[0] if after else samples[-1][0]) - failed[0]
    rebuild = run(inventory, "rebuild-replica.yml")
    return len(samples), len(failed), window, took, rebuild


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", help="the converged cluster's inventory directory (default: Molecule's newest)")
    parser.add_argument("--seconds", type=float, default=30, help="seconds of lag samples, idle and under load")
    args = parser.parse_args()
    inventory = args.inventory or cluster_inventory()
    shape = groups(inventory)
    primary, = shape["dbservers"]
    lb = load_balancer(inventory)

    idle_lag, idle_behind = lag_samples(primary, args.seconds)
    start_writes(lb)
    time.sleep(2)
    load_lag, load_behind = lag_samples(primary, args.seconds)
    writes = stop_writes(lb)
    ok = sum(code == "200" for _, code in writes)

    with tempfile.TemporaryDirectory(prefix="bench-replica-") as tmp:
        promoted = swapped(inventory, Path(tmp) / "promoted")
        first = promotion(promoted, lb)
        back = promotion(inventory, lb)

    print(f"replication, {len(load_lag)} samples over {args.seconds:.0f} s ({primary} -> its replica):")
    print(f"{'':28} {'lag p50 s':>10} {'lag p99 s':>10} {'lag max s':>10} {'behind max B':>13}")
    for label, lags, behind in (("idle (baseline)", idle_lag, idle_behind),
                                (f"{CLIENTS} writers, {ok / args.seconds:.0f} writes/s", load_lag, load_behind)):
        print(f"{label:28} {statistics.median(lags):10.3f} {pct(lags, 0.99):10.3f} {max(lags):10.3f} {max(behind):13d}")
    print(f"lag max under load / target 1 s = {max(load_lag) / 1.0:.2f}")
    print(f"\npromotion under {CLIENTS} writers through {lb}:")
    print(f"{'':18} {'writes':>7} {'failed':>7} {'no write s':>11} {'promote s':>10} {'rebuild s':>10}")
    for label, (sent, failed, window, took, rebuild) in (("replica promoted", first), ("and back", back)):
        print(f"{label:18} {sent:7d} {failed:7d} {window:11.1f} {took:10.0f} {rebuild:10.0f}")
    print(f"worst seconds without a write / target 30 s = {max(first[2], back[2]) / 30:.2f}; "
          f"/ promote-replica.yml's wall time = {max(first[2], back[2]) / min(first[3], back[3]):.2f}")
    return 0 if max(load_lag) <= 1.0 and max(first[2], back[2]) <= 30 else 1


if __name__ == "__main__":
    sys.exit(main())
