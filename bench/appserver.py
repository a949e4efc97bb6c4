#!/usr/bin/env python3
"""Who should serve what: gunicorn vs Apache/mod_wsgi for a dynamic page, nginx vs Django for a
static file, in one run on one fresh all-in-one server (converged over SSH with site.yml).

With wrk from this machine, through nginx over HTTPS (same TLS, same nginx, only the server
behind it changes), each for a bounded time:
  (a) a dynamic page (/) via gunicorn;
  (b) the same page via Apache + mod_wsgi (the same server switched with django_app_server);
  (c) a hashed static file via nginx (/static/...);
  (d) the same file served by the Django app itself (the demo app's bench-only
      DJANGO_BENCH_SERVE_STATIC_AT prefix, proxied by nginx like any dynamic URL).

Prints requests per second and p99 latency side by side, (b)/(a), and (c)/(d): how much load
nginx takes off the app server. Target (issue #7): (c)/(d) >= 10.

Usage: .venv/bin/python bench/appserver.py [--seconds 10] [--connections 16] [--keep]
       (or `make bench-appserver`; run `make image` first)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import ROOT, ensure_key, playbook, podman_rm, start_server, wait_for_ssh, write_inventory

SERVER = "djstack-bench-appserver"
SSH_PORT = int(os.environ.get("BENCH_APPSERVER_SSH_PORT", "2226"))
HTTPS_PORT = int(os.environ.get("BENCH_APPSERVER_HTTPS_PORT", "8446"))
DJANGO_STATIC = "/django-static/"


def wrk(path: str, seconds: int, connections: int) -> dict:
    """requests/s, p50 and p99 in ms, and errors of a wrk run against the server."""
    wrk_bin = shutil.which("wrk") or sys.exit("bench: wrk is not installed (make deps installs it)")
    out = subprocess.run([wrk_bin, "--latency", "-t", "2", "-c", str(connections), "-d", f"{seconds}s",
                          f"https://127.0.0.1:{HTTPS_PORT}{path}"], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50%"),
            "p99": ms("99%"), "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections of each wrk run")
    parser.add_argument("--keep", action="store_true", help="keep the server for inspection")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench", help="directory for the playbook logs")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    ensure_key()
    extra_env = {"django_app_env": {"DJANGO_BENCH_SERVE_STATIC_AT": DJANGO_STATIC}}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="djstack-bench-appserver-") as tmpdir:
        tmp = Path(tmpdir)
        known_hosts = tmp / "known_hosts"
        try:
            start_server(SERVER, SSH_PORT, {HTTPS_PORT: 443})
            wait_for_ssh(SSH_PORT, known_hosts)
            inv = write_inventory(tmp, SSH_PORT, known_hosts, {})
            print("bench: converging a fresh server (gunicorn)", flush=True)
            playbook(inv, args.logs / "appserver-gunicorn.log", "site.yml", "-e", json.dumps(extra_env))
            manifest = subprocess.run(
                ["podman", "exec", SERVER, "sh", "-c",
                 "cat /srv/demoapp/static/staticfiles-$(basename $(readlink /srv/demoapp/current)).json"],
                capture_output=True, text=True, check=True).stdout
            css = json.loads(manifest)["paths"]["notes/site.css"]
            run = lambda path: wrk(path, args.seconds, args.connections)  # noqa: E731
            rows["a"] = run("/")
            rows["c"] = run(f"/static/{css}")
            rows["d"] = run(f"{DJANGO_STATIC}{css}")
            print("bench: switching the server to Apache + mod_wsgi", flush=True)
            playbook(inv, args.logs / "appserver-apache.log", "site.yml",
                     "-e", json.dumps({**extra_env, "django_app_server": "apache_wsgi"}))
            rows["b"] = run("/")
        finally:
            if not args.keep:
                podman_rm(SERVER)

    labels = {"a": "(a) dynamic page via gunicorn", "b": "(b) dynamic page via Apache/mod_wsgi",
              "c": "(c) static file via nginx", "d": "(d) static file via Django"}
    print(f"\nwrk through nginx over HTTPS, {args.connections} connections, {args.seconds} s each, 2 cores:")
    print(f"  {'':<40}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for key in "abcd":
        row = rows[key]
        print(f"  {labels[key]:<40}{row['rps']:>10.1f}{row['p50']:>9.2f}{row['p99']:>9.2f}{row['errors']:>8}")
    print(f"(b)/(a) Apache vs gunicorn: {rows['b']['rps'] / rows['a']['rps']:.2f} x req/s")
    print(f"(c)/(d) nginx vs Django for a static file: {rows['c']['rps'] / rows['d']['rps']:.1f} x req/s (target >= 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
