#!/usr/bin/env python3
"""Requests dropped during a deploy: our release deploy next to a naive app-server restart.

One run on one fresh all-in-one server (SSH with pipelining, as users run it), with bounded
HTTPS load through nginx from this machine (half the clients keep their connection alive, half
open a new connection for every request):

1. steady state: load alone, for reference;
2. our deploy: `playbooks/deploy.yml` of a new version (requirements unchanged) under load;
3. naive deploy: `systemctl restart` of the app server under load;
4. the wall time of a code-only deploy with unchanged requirements, without load;
5. with --app-server apache_wsgi: 15 reloads under load, one second apart, of Apache as a whole
   (`systemctl reload apache2`, graceful) next to 15 graceful restarts of the app's mod_wsgi daemon
   processes alone (SIGUSR1, what a deploy does; see roles/apache_wsgi/README.md).

Prints requests sent, failed (non-2xx/3xx answers, resets, timeouts) and p50/p99/max latency of
each phase side by side. Targets (issue #3): 0 failed requests for our deploy; code-only deploy
<= 20 s.

Usage: .venv/bin/python bench/deploy.py [--app-server gunicorn|apache_wsgi] [--keep]
       (or `make bench-deploy`; run `make image` first)
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import ROOT, ensure_key, playbook, podman_rm, start_server, wait_for_ssh, write_inventory

SERVER = "djstack-bench-deploy"
SSH_PORT = int(os.environ.get("BENCH_DEPLOY_SSH_PORT", "2224"))
HTTPS_PORT = int(os.environ.get("BENCH_DEPLOY_HTTPS_PORT", "8444"))
PATH = "/"
NAIVE_UNITS = {"gunicorn": "gunicorn@demoapp.service", "apache_wsgi": "apache2.service"}
RELOADS = 15
APACHE_RELOADS = {
    "Apache graceful reload (systemctl reload apache2)": ["systemctl", "reload", "apache2"],
    "daemon processes' graceful restart (SIGUSR1, ours)":
        ["pkill", "--signal", "USR1", "--uid", "django", "--full", r"^\(wsgi:demoapp\)"],
}


class Load:
    """Bounded HTTPS load: `clients` threads until `stop()`, `max_seconds` or `max_requests`."""

    def __init__(self, clients: int = 8, max_seconds: float = 120, max_requests: int = 50000):
        self.clients, self.max_seconds, self.max_requests = clients, max_seconds, max_requests
        self.results: list[tuple[float, str]] = []  # (latency seconds, outcome)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.threads = [threading.Thread(target=self.client, args=(i % 2 == 0,), daemon=True)
                        for i in range(clients)]

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", HTTPS_PORT, timeout=10, context=self.context)

    def client(self, keepalive: bool) -> None:
        conn = self.connect() if keepalive else None
        deadline = time.monotonic() + self.max_seconds
        while not self.done.is_set() and time.monotonic() < deadline:
            if not keepalive:
                conn = self.connect()
            start = time.monotonic()
            try:
                conn.request("GET", PATH, headers={"Host": f"127.0.0.1:{HTTPS_PORT}",
                                                   "Connection": "keep-alive" if keepalive else "close"})
                response = conn.getresponse()
                response.read()
                outcome = "ok" if response.status < 400 else f"http {response.status}"
            except (socket.timeout, TimeoutError):
                outcome = "timeout"
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                outcome = "reset"
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            latency = time.monotonic() - start
            if outcome != "ok" or not keepalive:
                conn.close()
                conn = self.connect() if keepalive else None
            with self.lock:
                self.results.append((latency, outcome))
                if len(self.results) >= self.max_requests:
                    self.done.set()

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> dict[str, object]:
        self.done.set()
        for thread in self.threads:
            thread.join()
        latencies = sorted(lat for lat, _ in self.results)
        failures: dict[str, int] = {}
        for _, outcome in self.results:
            if outcome != "ok":
                failures[outcome] = failures.get(outcome, 0) + 1
        pct = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
        return {"sent": len(latencies), "failed": sum(failures.values()), "failures": failures,
                "p50": pct[49] * 1000, "p99": pct[98] * 1000, "max": (latencies[-1] if latencies else 0) * 1000}


def under_load(action, settle: float = 1.0) -> tuple[dict[str, object], object]:
    """Run `action()` while the load runs (from `settle` s before to `settle` s after)."""
    load = Load().start()
    time.sleep(settle)
    value = action()
    time.sleep(settle)
    return load.stop(), value


def repeat(command: list[str], times: int, pause: float = 1.0) -> None:
    """Run `command` in the server `times` times, `pause` seconds apart."""
    for _ in range(times):
        subprocess.run(["podman", "exec", SERVER, *command], check=True, capture_output=True)
        time.sleep(pause)


def make_version(base: Path, name: str) -> Path:
    """The demo app with another version string (a visible change, same requirements)."""
    tree = base / name

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
        if Path(directory) == ROOT / "examples" / "demoapp":
            skipped |= {n for n in names if n in ("db.sqlite3", "static", "media")}
        return skipped

    shutil.copytree(ROOT / "examples" / "demoapp", tree, ignore=ignore)
    (tree / "demoapp" / "version.py").write_text(f'"""Bench version."""\n\nVERSION = "bench-{name}"\n')
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app-server", choices=sorted(NAIVE_UNITS), default="gunicorn")
    parser.add_argument("--keep", action="store_true", help="keep the server for inspection")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench", help="directory for the playbook logs")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    ensure_key()
    server_vars = {"django_app_server": args.app_server} if args.app_server != "gunicorn" else {}
    with tempfile.TemporaryDirectory(prefix="djstack-bench-deploy-") as tmpdir:
        tmp = Path(tmpdir)
        known_hosts = tmp / "known_hosts"
        try:
            start_server(SERVER, SSH_PORT, {HTTPS_PORT: 443})
            wait_for_ssh(SSH_PORT, known_hosts)
            inv = write_inventory(tmp, SSH_PORT, known_hosts, server_vars)
            print(f"bench: converging a fresh server ({args.app_server})", flush=True)
            playbook(inv, args.logs / "deploy-converge.log")

            steady, _ = under_load(lambda: time.sleep(5))
            version_b = make_version(tmp, "B")
            ours, (deploy_wall, *_) = under_load(lambda: playbook(
                inv, args.logs / "deploy-ours.log", "playbooks/deploy.yml", "-e", f"django_app_source_path={version_b}"))
            naive, _ = under_load(lambda: subprocess.run(
                ["podman", "exec", SERVER, "systemctl", "restart", NAIVE_UNITS[args.app_server]], check=True))
            version_c = make_version(tmp, "C")
            quiet_wall, tasks, changed, _ = playbook(inv, args.logs / "deploy-quiet.log", "playbooks/deploy.yml",
                                                     "-e", f"django_app_source_path={version_c}")
            reloads = {}
            if args.app_server == "apache_wsgi":
                for label, command in APACHE_RELOADS.items():
                    reloads[label], _ = under_load(lambda command=command: repeat(command, RELOADS))
        finally:
            if not args.keep:
                podman_rm(SERVER)

    print(f"\nHTTPS load through nginx during a deploy ({args.app_server}; 8 clients, half keep-alive, GET {PATH}):")
    print(f"  {'phase':<36}{'sent':>7}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  failures")
    for label, row in (("steady state (no deploy)", steady), ("our deploy (playbooks/deploy.yml)", ours),
                       (f"naive: systemctl restart {NAIVE_UNITS[args.app_server].split('.')[0]}", naive)):
        print(f"  {label:<36}{row['sent']:>7}{row['failed']:>8}{row['p50']:>9.1f}{row['p99']:>9.1f}{row['max']:>9.1f}"
              f"  {row['failures'] or '-'}")
    print(f"failed requests: ours {ours['failed']} (target 0), naive {naive['failed']}; "
          f"p99 ours / naive = {ours['p99'] / max(naive['p99'], 0.001):.2f}")
    print(f"code-only deploy, requirements unchanged: {quiet_wall:.1f} s without load ({tasks} tasks, {changed} changed),"
          f" {deploy_wall:.1f} s under load (target <= 20 s)")
    if reloads:
        print(f"\n{RELOADS} reloads under load, one second apart (8 clients, half keep-alive, GET {PATH}):")
        print(f"  {'reload':<52}{'sent':>7}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  failures")
        for label, row in reloads.items():
            print(f"  {label:<52}{row['sent']:>7}{row['failed']:>8}{row['p50']:>9.1f}{row['p99']:>9.1f}"
                  f"{row['max']:>9.1f}  {row['failures'] or '-'}")
        apache_wide, ours_reload = reloads.values()
        print(f"failed requests per reload: Apache-wide {apache_wide['failed'] / RELOADS:.2f}, "
              f"ours {ours_reload['failed'] / RELOADS:.2f} (target 0)")
    print(f"playbook logs: {args.logs}")
    ours_failed = ours["failed"] + sum(row["failed"] for label, row in reloads.items() if "ours" in label)
    return 0 if ours_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
