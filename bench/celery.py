#!/usr/bin/env python3
"""Celery throughput through the deployed broker and workers, for two prefetch settings.

One run on one fresh all-in-one server (converged with site.yml over SSH): for each prefetch
multiplier, the worker is reconfigured through the celery role and restarted, then the demo app's
`manage.py bench_ticks --count 2000` sends 2,000 trivial tasks (jobs.tasks.tick: count yourself
in memcached) through RabbitMQ and waits until the workers ran them all. A sampler inside the
server records the worker's peak RSS (main process plus pool processes) meanwhile.

Prints tasks per second and peak RSS for both settings side by side, and their ratio.

Usage: .venv/bin/python bench/celery.py [--count 2000] [--prefetch 1 4] [--keep]
       (or `make bench-celery`; run `make image` first)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import ROOT, ensure_key, playbook, podman_rm, start_server, wait_for_ssh, write_inventory

SERVER = "djstack-bench-celery"
SSH_PORT = int(os.environ.get("BENCH_CELERY_SSH_PORT", "2225"))
UNIT = "celery-worker@default.service"

# Sum of VmRSS over the worker's main process and its children, sampled every 0.1 s; the maximum
# is written to /run/bench-rss when the flag file /run/bench-stop appears.
SAMPLER = r"""
rm -f /run/bench-stop /run/bench-rss
peak=0
while [ ! -e /run/bench-stop ]; do
  main=$(systemctl show -p MainPID --value celery-worker@default.service)
  total=0
  for pid in $main $(cat /proc/$main/task/*/children 2>/dev/null); do
    kb=$(awk '/^VmRSS:/ {print $2}' /proc/$pid/status 2>/dev/null)
    total=$((total + ${kb:-0}))
  done
  [ "$total" -gt "$peak" ] && peak=$total
  sleep 0.1
done
echo $peak > /run/bench-rss
"""


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", SERVER, *args], capture_output=True, text=True, check=check)


def run_setting(inv: Path, logs: Path, prefetch: int, count: int) -> dict:
    workers = [{"name": "default", "queues": ["celery"], "concurrency": 2, "prefetch_multiplier": prefetch}]
    playbook(inv, logs / f"celery-prefetch-{prefetch}.log", "playbooks/app.yml", "--tags", "celery",
             "-e", json.dumps({"celery_workers": workers}))
    podman("systemctl", "restart", UNIT)  # a fresh worker: peak RSS counts this run only
    subprocess.Popen(["podman", "exec", SERVER, "sh", "-c", SAMPLER], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    result = podman("runuser", "-u", "django", "--", "/srv/demoapp/bin/manage", "bench_ticks", "--count", str(count))
    podman("touch", "/run/bench-stop")
    peak_kb = 0
    for _ in range(50):
        rss = podman("cat", "/run/bench-rss", check=False)
        if rss.returncode == 0 and rss.stdout.strip():
            peak_kb = int(rss.stdout.strip())
            break
        subprocess.run(["sleep", "0.1"], check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures.update(prefetch=prefetch, peak_rss_mib=peak_kb / 1024)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--prefetch", type=int, nargs=2, default=[1, 4], metavar=("A", "B"))
    parser.add_argument("--keep", action="store_true", help="keep the server for inspection")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench", help="directory for the playbook logs")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    ensure_key()
    with tempfile.TemporaryDirectory(prefix="djstack-bench-celery-") as tmpdir:
        tmp = Path(tmpdir)
        known_hosts = tmp / "known_hosts"
        try:
            start_server(SERVER, SSH_PORT)
            wait_for_ssh(SSH_PORT, known_hosts)
            inv = write_inventory(tmp, SSH_PORT, known_hosts, {})
            print("bench: converging a fresh server", flush=True)
            playbook(inv, args.logs / "celery-converge.log")
            rows = [run_setting(inv, args.logs, prefetch, args.count) for prefetch in args.prefetch]
        finally:
            if not args.keep:
                podman_rm(SERVER)

    print(f"\n{args.count} trivial tasks through RabbitMQ, one worker with concurrency 2 (prefork):")
    print(f"  {'prefetch multiplier':<22}{'tasks/s':>9}{'total s':>9}{'publish s':>11}{'worker peak RSS MiB':>21}")
    for row in rows:
        print(f"  {row['prefetch']:<22}{row['tasks_per_second']:>9.1f}{row['seconds']:>9.1f}"
              f"{row['publish_seconds']:>11.1f}{row['peak_rss_mib']:>21.1f}")
    a, b = rows
    print(f"tasks/s prefetch {b['prefetch']} / prefetch {a['prefetch']} = "
          f"{b['tasks_per_second'] / a['tasks_per_second']:.2f}; "
          f"peak RSS {b['peak_rss_mib'] / max(a['peak_rss_mib'], 0.001):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
