#!/usr/bin/env python3
"""What Sentry's SDK costs one request of the demo's home page, counted in CPU instructions
(valgrind), which do not move with this machine's speed as requests per second do.

The demo app runs in this process's Python on SQLite (a temporary directory: migrated, static
files collected, 3 notes), its WSGI handler called directly, each request followed by the access
line gunicorn logs for it. Three variants, each in its own process:

  without:      SENTRY_DSN empty;
  demo:         SENTRY_DSN set: the demo's own reporting (demoapp/observability.py);
  django-integration: the SDK's Django integration as its documentation sets it up, tracing off
                and no spans around middleware, signals or cache (what the demo used before).

Each variant serves 200 requests to warm up, then runs twice, with N and 5N more requests; the
difference of the two counts over 4N is its instructions per request (start-up and warm-up cancel
out). Prints each and its ratio to without. The in-process counts leave out nginx, TLS and
gunicorn's own work: bench/observability.py measures the whole server.

Usage: .venv/bin/python bench/sentry_request_cost.py [--requests 50]
       (or `make bench-sentry`; needs valgrind, which `make deps` installs)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import ROOT, log

DEMO = ROOT / "examples" / "demoapp"
DSN = "http://benchkey@127.0.0.1:9/1"  # nothing listens: a page that answers sends nothing anyway
VARIANTS = ("without", "demo", "django-integration")

# Runs in the measured process: argv = variant, requests.
SERVE = r"""
import io, logging, os, sys
variant, requests = sys.argv[1], int(sys.argv[2])
import django
django.setup()
if variant == "django-integration":
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    sentry_sdk.init(dsn=os.environ["BENCH_DSN"], release="bench", environment="bench", send_default_pii=False,
                    integrations=[DjangoIntegration(middleware_spans=False, signals_spans=False, cache_spans=False),
                                  CeleryIntegration()])
from django.core.wsgi import get_wsgi_application
app = get_wsgi_application()
access = logging.getLogger("gunicorn.access")
access.propagate = False
access.addHandler(logging.StreamHandler(open(os.devnull, "w")))
access.setLevel(logging.INFO)
status = []
def start_response(code, headers, exc_info=None):
    status.append(code)
def request():
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_NAME": "localhost",
               "SERVER_PORT": "443", "HTTP_HOST": "localhost", "HTTP_X_FORWARDED_PROTO": "https",
               "wsgi.url_scheme": "https", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
               "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False}
    b"".join(app(environ, start_response))
    access.info('%s - - [%s] "%s" %s %s', "127.0.0.1", "06/Dec/2026:12:00:00 +0000", "GET / HTTP/1.1", 200, 4321)
for _ in range(200 + requests):
    request()
assert set(status) == {"200 OK"}, set(status)
"""


def env_for(tmp: Path, variant: str) -> dict[str, str]:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="demoapp.settings", DJANGO_DB_ENGINE="sqlite",
               DJANGO_DB_NAME=str(tmp / "db.sqlite3"), DJANGO_STATIC_ROOT=str(tmp / "static"),
               DJANGO_SECRET_KEY="bench-only-" + "k" * 50, DJANGO_ALLOWED_HOSTS="localhost",
               DJANGO_LOG_LEVEL="INFO", PYTHONPATH=str(DEMO), BENCH_DSN=DSN)
    env.pop("SENTRY_DSN", None)
    if variant == "demo":
        env["SENTRY_DSN"] = DSN
    return env


def instructions(tmp: Path, variant: str, requests: int) -> int:
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                          sys.executable, "-c", SERVE, variant, str(requests)],
                         env=env_for(tmp, variant), capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode != 0 or not found:
        raise SystemExit(f"{variant} ({requests} requests) failed:\n{out.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50, help="N: the runs serve N and 5N requests")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not found: run `make deps`")
    with tempfile.TemporaryDirectory(prefix="djstack-bench-sentry-") as tmpdir:
        tmp = Path(tmpdir)
        manage = [sys.executable, str(DEMO / "manage.py")]
        for step in (["migrate", "-v0"], ["collectstatic", "--noinput", "-v0"],
                     ["shell", "-c", "from notes.models import Note\n"
                                     "Note.objects.bulk_create(Note(title=f'Note {i}', body='text') for i in range(3))"]):
            subprocess.run(manage + step, env=env_for(tmp, "without"), check=True, capture_output=True)
        log(f"bench: counting {len(VARIANTS)} variants × 2 runs under valgrind")
        runs = [(v, n) for v in VARIANTS for n in (args.requests, 5 * args.requests)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            counts = dict(zip(runs, pool.map(lambda run: instructions(tmp, *run), runs)))
    per_request = {v: (counts[v, 5 * args.requests] - counts[v, args.requests]) / (4 * args.requests) for v in VARIANTS}
    print(f"home page, in process (WSGI handler + gunicorn's access line), instructions per request over "
          f"{4 * args.requests} requests:")
    for variant in VARIANTS:
        ratio = per_request[variant] / per_request["without"]
        print(f"  {variant:18} {per_request[variant] / 1e6:7.3f} M  {ratio:.3f} of without ({(ratio - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
