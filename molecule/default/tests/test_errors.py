"""Errors reach Sentry from the deployed app (django_app_sentry_dsn, the demo app's
demoapp/observability.py): the error probe's exception arrives at a receiver on the server,
tagged with the serving release, and with the receiver down a failing request still answers at
once."""

from __future__ import annotations

import json
import shlex
import time

from stackhelpers import APP_ROOT, curl, podman_hosts

testinfra_hosts = podman_hosts("webservers")[:1]

PROBE = "https://localhost/error-probe-7c1e/"
RECEIVED = "/run/test-sentry.jsonl"
# A Sentry receiver (the scenario's DSN: 127.0.0.1:45095): each envelope's event items, one JSON
# line each (the SDK compresses its envelopes).
RECEIVER = r"""
import gzip, http.server, json, zlib
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        encoding = self.headers.get('Content-Encoding', '')
        body = gzip.decompress(body) if encoding == 'gzip' else zlib.decompress(body) if encoding == 'deflate' else body
        lines = body.split(b'\n')
        with open('/run/test-sentry.jsonl', 'a') as f:
            for header, payload in zip(lines[1::2], lines[2::2]):
                if json.loads(header).get('type') == 'event':
                    f.write(payload.decode() + '\n')
        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', 45095), H).serve_forever()
"""


def status_and_time(host, url: str) -> tuple[str, float]:
    out = curl(host, url, "-k", "-o", "/dev/null", "-w", "%{http_code} %{time_total}").stdout.split()
    return out[0], float(out[1])


def test_an_error_reaches_sentry_with_the_release_and_a_receiver_down_slows_nothing(host):
    release = host.check_output(f"basename $(readlink -f {APP_ROOT}/current)")
    host.run(f"systemctl stop test-sentry.service; rm -f {RECEIVED}")
    host.check_output(f"systemd-run --unit=test-sentry --property=Type=simple python3 -c {shlex.quote(RECEIVER)}")
    try:
        time.sleep(1)
        assert status_and_time(host, PROBE)[0] == "500"
        event = None
        for _ in range(40):
            for line in host.run(f"cat {RECEIVED}").stdout.splitlines():
                candidate = json.loads(line)
                if any(v.get("type") == "ErrorProbe" for v in candidate.get("exception", {}).get("values", [])):
                    event = candidate
            if event:
                break
            time.sleep(0.5)
        assert event, host.run(f"cat {RECEIVED}").stdout[-2000:]
        assert event["release"] == release and event["environment"], (event["release"], event["environment"])
        assert event["exception"]["values"][-1]["mechanism"]["type"] == "django"
        assert "cookies" not in event.get("request", {}) and "user" not in event
    finally:
        host.run("systemctl stop test-sentry.service; systemctl reset-failed test-sentry.service")
    # Nothing listens at the DSN now: every failing request still answers at once, and pages serve.
    for _ in range(5):
        status, took = status_and_time(host, PROBE)
        assert status == "500" and took < 1.0, (status, took)
    assert status_and_time(host, "https://localhost/healthz")[0] == "200"
