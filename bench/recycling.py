#!/usr/bin/env python3
"""What gunicorn's worker recycling costs the demo's home page: requests per second and p99 with
workers replaced every gunicorn_max_requests requests (the role's default, and others), in one
run on one fresh all-in-one server with Sentry's SDK on (a DSN to a receiver on the server), as a
production site runs.

A replaced worker imports Django, the app and the SDK again before it serves; under load a pool
of workers recycling every 1,000 requests does that about once a second. The values run
interleaved (1000, 10000, 0, 1000, ...), each after a restart of the app server with the value in
its configuration, so that a drift of this machine's speed falls on all. Prints the median
requests/s and p99 of each, and each over the first.

Usage: .venv/bin/python bench/recycling.py [--values 1000,10000,0] [--rounds 5] [--seconds 15]
       (or `make bench-recycling`; run `make image` first)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import appserver
from appserver import wrk
from benchlib import (ROOT, SENTRY_DSN, ensure_key, log, on_server, playbook, podman_rm, start_sentry_receiver,
                      start_server, wait_for_ssh, write_inventory)

SERVER = "djstack-bench-recycling"
SSH_PORT = int(os.environ.get("BENCH_RECYCLING_SSH_PORT", "2228"))
HTTPS_PORT = int(os.environ.get("BENCH_RECYCLING_HTTPS_PORT", "8448"))
appserver.HTTPS_PORT = HTTPS_PORT  # wrk() (bench/appserver.py) loads this server
CONF = "/etc/gunicorn/demoapp.conf.py"


def run(script: str) -> str:
    return on_server(SERVER, script)


def switch(max_requests: int) -> None:
    """Write the value into gunicorn's configuration and restart it, then wait for the app."""
    run(f"sed -i 's/^max_requests = .*/max_requests = {max_requests}/' {CONF} && grep -q '^max_requests = {max_requests}$' {CONF}"
        f" && sed -i 's/^max_requests_jitter = .*/max_requests_jitter = {max_requests // 10}/' {CONF};"
        " systemctl restart gunicorn@demoapp.service;"
        " for i in $(seq 60); do curl -ksf -o /dev/null https://localhost/healthz && break; sleep 0.5; done")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", default="1000,10000,0", help="gunicorn_max_requests values, the first the baseline")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of each value")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections of each wrk run")
    parser.add_argument("--keep", action="store_true", help="keep the server for inspection")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench", help="directory for the playbook logs")
    args = parser.parse_args()
    values = [int(v) for v in args.values.split(",")]
    args.logs.mkdir(parents=True, exist_ok=True)
    ensure_key()
    extra = {"django_app_sentry_dsn": SENTRY_DSN, "django_app_sentry_allow_http": True}
    results: dict[int, list[dict]] = {value: [] for value in values}
    with tempfile.TemporaryDirectory(prefix="djstack-bench-recycling-") as tmpdir:
        tmp = Path(tmpdir)
        known_hosts = tmp / "known_hosts"
        try:
            start_server(SERVER, SSH_PORT, {HTTPS_PORT: 443})
            wait_for_ssh(SSH_PORT, known_hosts)
            inv = write_inventory(tmp, SSH_PORT, known_hosts, {})
            log("bench: converging a fresh server")
            playbook(inv, args.logs / "recycling.log", "site.yml", "-e", json.dumps(extra))
            start_sentry_receiver(SERVER)
            wrk("/", 5, args.connections)  # warm up: the first requests fill caches either way
            for round_ in range(args.rounds):
                for value in values:
                    switch(value)
                    results[value].append(wrk("/", args.seconds, args.connections))
                    log(f"round {round_ + 1} max_requests {value}: {results[value][-1]}")
        finally:
            if not args.keep:
                podman_rm(SERVER)
    base = values[0]
    print(f"home page, Sentry on, {args.rounds} interleaved rounds of {args.seconds} s, {args.connections} connections (medians):")
    for value in values:
        runs = results[value]
        print(f"  max_requests {value:6}  {statistics.median(r['rps'] for r in runs):8.1f} req/s  "
              f"p99 {statistics.median(r['p99'] for r in runs):7.1f} ms  errors {sum(r['errors'] for r in runs)}")
    for value in values[1:]:
        per_round = [run["rps"] / first["rps"] for run, first in zip(results[value], results[base])]
        p99 = statistics.median(r["p99"] for r in results[value]) / statistics.median(r["p99"] for r in results[base])
        print(f"  {value}/{base}: throughput, median of the rounds' ratios {statistics.median(per_round):.3f} "
              f"({', '.join(f'{r:.3f}' for r in per_round)}), p99 {p99:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
