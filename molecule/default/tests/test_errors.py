"""Errors reach Sentry from the deployed app (django_app_sentry_dsn, the demo app's
demoapp/observability.py): the error probe's exception arrives at a receiver on the server,
tagged with the serving release, and with the receiver down a failing request still answers at
once."""

from __future__ import annotations

import time

from stackhelpers import APP_ROOT, curl, podman_hosts, receiver

testinfra_hosts = podman_hosts("webservers")[:1]

PROBE = "https://localhost/error-probe-7c1e/"
def status_and_time(host, url: str) -> tuple[str, float]:
    out = curl(host, url, "-k", "-o", "/dev/null", "-w", "%{http_code} %{time_total}").stdout.split()
    return out[0], float(out[1])


def test_an_error_reaches_sentry_with_the_release_and_a_receiver_down_slows_nothing(host):
    release = host.check_output(f"basename $(readlink -f {APP_ROOT}/current)")
    # The scenario's DSN points at 127.0.0.1:45095.
    with receiver(host, "test-sentry", 45095, envelopes=True) as received:
        assert status_and_time(host, PROBE)[0] == "500"
        event = None
        for _ in range(40):
            for item in received():
                candidate = item["body"]
                if any(v.get("type") == "ErrorProbe" for v in candidate.get("exception", {}).get("values", [])):
                    event = candidate
            if event:
                break
            time.sleep(0.5)
        assert event, received()[-3:]
        assert event["release"] == release and event["environment"], (event["release"], event["environment"])
        assert event["exception"]["values"][-1]["mechanism"] == {"type": "django", "handled": False}
        # The request as nginx passed it (the scheme from X-Forwarded-Proto), without user data.
        assert event["request"] == {"method": "GET", "url": PROBE}, event["request"]
        assert "user" not in event
    # Nothing listens at the DSN now: every failing request still answers at once, and pages serve.
    for _ in range(5):
        status, took = status_and_time(host, PROBE)
        assert status == "500" and took < 1.0, (status, took)
    assert status_and_time(host, "https://localhost/healthz")[0] == "200"
