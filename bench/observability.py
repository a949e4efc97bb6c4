#!/usr/bin/env python3
"""What the exporters and Sentry cost the app: requests per second and p99 of the demo's home
page, with and without them, in one run on one fresh all-in-one server (converged over SSH with
site.yml, the server also in the monitoring group: Prometheus scrapes its own exporters at the
monitoring role's default interval, 15 s).

  without:   the exporters and Prometheus stopped, SENTRY_DSN empty;
  exporters: the node, PostgreSQL and nginx exporters running and scraped, with the
             blackbox probes of the health path (Prometheus, Alertmanager on the same server);
  sentry:    Sentry's SDK on (DSN to a receiver on the server; a page that answers sends nothing,
             so this is the SDK's cost per request);
  both.

They run interleaved (without, exporters, sentry, both, without, ...) so that a drift of this
machine's speed falls on all. Prints the median requests/s and p99 of each, each over without,
and the median of each round's ratio to that round's without. Target (issue #24): under 3%
throughput loss. bench/sentry_request_cost.py counts the SDK's share in instructions, which
this machine's noise does not move.

Usage: .venv/bin/python bench/observability.py [--rounds 5] [--seconds 15] [--connections 16]
                                                [--max-requests N] [--scrape-interval S] [--keep]
       (or `make bench-observability`; run `make image` first)
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

SERVER = "djstack-bench-observability"
SSH_PORT = int(os.environ.get("BENCH_OBSERVABILITY_SSH_PORT", "2227"))
HTTPS_PORT = int(os.environ.get("BENCH_OBSERVABILITY_HTTPS_PORT", "8447"))
appserver.HTTPS_PORT = HTTPS_PORT  # wrk() (bench/appserver.py) loads this server
ENV_FILE = "/srv/demoapp/shared/env"
MONITORING = "prometheus prometheus-alertmanager prometheus-blackbox-exporter"
EXPORTERS = "prometheus-node-exporter prometheus-postgres-exporter prometheus-nginx-exporter"


def run(script: str) -> str:
    return on_server(SERVER, script)


VARIANTS = {"without": (False, False), "exporters": (True, False), "sentry": (False, True), "both": (True, True)}


def switch(metrics: bool, sentry: bool) -> None:
    """Turn the exporters and the monitoring, and Sentry, on or off, then wait for the app to serve."""
    dsn = SENTRY_DSN if sentry else ""
    state = "start" if metrics else "stop"
    run(f"sed -i 's|^SENTRY_DSN=.*|SENTRY_DSN={dsn}|' {ENV_FILE} && grep -q '^SENTRY_DSN=' {ENV_FILE}"
        f" || echo 'SENTRY_DSN={dsn}' >> {ENV_FILE};"
        f" systemctl {state} {EXPORTERS} {MONITORING}; systemctl restart gunicorn@demoapp.service;"
        " for i in $(seq 60); do curl -ksf -o /dev/null https://localhost/healthz && break; sleep 0.5; done")
    if metrics:  # Prometheus has found its targets up again when the load starts
        run("sleep 6")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of each variant")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections of each wrk run")
    parser.add_argument("--max-requests", type=int, default=None,
                        help="gunicorn_max_requests of the server (the role's default when not given): how often "
                             "a gunicorn worker is replaced, and so imports the app and the SDK again")
    parser.add_argument("--scrape-interval", type=int, default=None,
                        help="monitoring_scrape_interval_seconds (the role's default, 15, when not given)")
    parser.add_argument("--keep", action="store_true", help="keep the server for inspection")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench", help="directory for the playbook logs")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    ensure_key()
    extra = {"django_app_sentry_dsn": SENTRY_DSN, "django_app_sentry_allow_http": True}
    if args.scrape_interval is not None:
        extra["monitoring_scrape_interval_seconds"] = args.scrape_interval
    if args.max_requests is not None:
        extra["gunicorn_max_requests"] = args.max_requests
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="djstack-bench-observability-") as tmpdir:
        tmp = Path(tmpdir)
        known_hosts = tmp / "known_hosts"
        try:
            start_server(SERVER, SSH_PORT, {HTTPS_PORT: 443})
            wait_for_ssh(SSH_PORT, known_hosts)
            inv = write_inventory(tmp, SSH_PORT, known_hosts, {}, groups=("monitoring",))
            log("bench: converging a fresh server with the monitoring tier on it")
            playbook(inv, args.logs / "observability.log", "site.yml", "-e", json.dumps(extra))
            start_sentry_receiver(SERVER)
            wrk("/", 5, args.connections)  # warm up: the first requests fill caches either way
            for round_ in range(args.rounds):
                for variant, (metrics, sentry) in VARIANTS.items():
                    switch(metrics, sentry)
                    results[variant].append(wrk("/", args.seconds, args.connections))
                    log(f"round {round_ + 1} {variant}: {results[variant][-1]}")
        finally:
            if not args.keep:
                podman_rm(SERVER)
    rows = {v: {"rps": statistics.median(r["rps"] for r in runs), "p99": statistics.median(r["p99"] for r in runs),
                "errors": sum(r["errors"] for r in runs)} for v, runs in results.items()}
    recycling = ((f"gunicorn_max_requests {args.max_requests}" if args.max_requests is not None else "gunicorn's defaults")
                 + (f", scrapes every {args.scrape_interval} s" if args.scrape_interval is not None else ""))
    print(f"home page, {args.rounds} interleaved rounds of {args.seconds} s, {args.connections} connections, "
          f"{recycling} (medians):")
    for variant, row in rows.items():
        print(f"  {variant:8} {row['rps']:8.1f} req/s  p99 {row['p99']:7.1f} ms  errors {row['errors']}")
    for variant in ("exporters", "sentry", "both"):
        ratio = rows[variant]["rps"] / rows["without"]["rps"]
        # Each round's ratio to the same round's baseline, which ran a minute before it: this
        # machine's drift between rounds falls out.
        per_round = [run["rps"] / base["rps"] for run, base in zip(results[variant], results["without"])]
        print(f"  {variant}/without: throughput {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; target: no worse than -3%), "
              f"median of the rounds' ratios {statistics.median(per_round):.3f} "
              f"({', '.join(f'{r:.3f}' for r in per_round)}), p99 {rows[variant]['p99'] / rows['without']['p99']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
