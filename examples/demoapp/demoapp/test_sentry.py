"""Errors reach Sentry: a small local receiver records what the SDK sends (the envelopes a Sentry
server would get); a view that raises and a task that raises each arrive tagged with the release
and the environment. With the endpoint down, or accepting connections and never answering, a
request that raises still answers 500 in its normal time."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sentry_sdk
from celery import shared_task
from django.http import HttpResponse
from django.test import TestCase, override_settings
from django.urls import path

from demoapp.observability import MIDDLEWARE, init_sentry


class Boom(RuntimeError):
    pass


def failing_view(request, kind="view"):
    raise Boom("a view failed")


def fine_view(request):
    return HttpResponse("fine")


def logging_view(request):
    logging.getLogger("demoapp.test").warning("breadcrumb of another request")
    return HttpResponse("logged")


def warning_then_failing_view(request):
    logger = logging.getLogger("demoapp.test")
    logger.info("an info line")
    logger.warning("a warning before the failure")
    raise Boom("a view failed after a warning")


urlpatterns = [path("fails/<slug:kind>/", failing_view), path("fine/", fine_view), path("logs/", logging_view),
               path("warns-then-fails/", warning_then_failing_view)]


@shared_task
def failing_task() -> None:
    raise Boom("a task failed")


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every event the SDK posts to it."""

    def __init__(self) -> None:
        events = self.events = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                lines = body.split(b"\n")
                # An envelope: a header line, then an item header and its payload per item.
                for header, payload in zip(lines[1::2], lines[2::2]):
                    if json.loads(header).get("type") == "event":
                        events.append(json.loads(payload))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, kind: type, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                values = event.get("exception", {}).get("values", [])
                if any(v.get("type") == kind.__name__ for v in values):
                    return event
            sentry_sdk.flush(timeout=1)
            time.sleep(0.05)
        raise AssertionError(f"no {kind.__name__} event within {timeout} s: {self.events}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def dsn(port: int) -> str:
    return f"http://publickey@127.0.0.1:{port}/1"


@override_settings(ROOT_URLCONF=__name__, SECURE_SSL_REDIRECT=False, ALLOWED_HOSTS=["testserver"])
class SentryTests(TestCase):
    def setUp(self) -> None:
        self.client.raise_request_exception = False
        # The failing requests' tracebacks (django.request) and the transport's retries against the
        # endpoints that are down (urllib3) are expected here: kept out of the test output.
        for name in ("django.request", "urllib3"):
            logger = logging.getLogger(name)
            self.addCleanup(logger.setLevel, logger.level)
            logger.setLevel(logging.CRITICAL)

    def tearDown(self) -> None:
        sentry_sdk.get_client().close(timeout=0)
        # No client (the other tests send nothing), and none of the SDK's patches installed.
        sentry_sdk.init(dsn=None, default_integrations=False, auto_enabling_integrations=False)

    def test_a_view_and_a_task_that_raise_reach_the_endpoint_with_release_and_environment(self) -> None:
        receiver = Receiver()
        self.addCleanup(receiver.close)
        init_sentry(dsn(receiver.port), release="20261206T150000Z-abc123", environment="staging")
        self.assertEqual(self.client.get("/fails/view/?token=s3cr3t").status_code, 500)
        event = receiver.wait_for(Boom)
        self.assertEqual(event["release"], "20261206T150000Z-abc123")
        self.assertEqual(event["environment"], "staging")
        self.assertEqual(event["exception"]["values"][-1]["value"], "a view failed")
        self.assertEqual(event["exception"]["values"][-1]["mechanism"]["type"], "django")
        # What the report says of the request: its method, URL and route, without the query
        # string (it may hold tokens); no user data (cookies, address) leaves the server.
        self.assertEqual(event["request"], {"method": "GET", "url": "http://testserver/fails/view/"})
        self.assertEqual(event["transaction"], "/fails/<slug:kind>/")
        self.assertNotIn("s3cr3t", json.dumps([event["request"], event["transaction"], event.get("tags")]))
        self.assertNotIn("user", event)
        # Django's own log of the 500 is not a second event.
        sentry_sdk.flush(timeout=2)
        self.assertEqual(sum(1 for e in receiver.events if e.get("exception")), 1, receiver.events)

        receiver.events.clear()
        with self.assertRaises(Boom):
            failing_task.apply(throw=True)
        event = receiver.wait_for(Boom)
        self.assertEqual(event["exception"]["values"][-1]["mechanism"]["type"], "celery")
        self.assertEqual(event["release"], "20261206T150000Z-abc123")

    @override_settings(MIDDLEWARE=[MIDDLEWARE])
    def test_a_report_carries_its_own_requests_breadcrumbs_only(self) -> None:
        receiver = Receiver()
        self.addCleanup(receiver.close)
        init_sentry(dsn(receiver.port), release="r", environment="production")
        logger = logging.getLogger("demoapp.test")
        self.addCleanup(setattr, logger, "propagate", logger.propagate)
        logger.propagate = False  # the record is made (a breadcrumb) and not printed
        self.assertEqual(self.client.get("/logs/").status_code, 200)
        self.assertEqual(self.client.get("/warns-then-fails/").status_code, 500)
        event = receiver.wait_for(Boom)
        crumbs = [c.get("message") for c in event.get("breadcrumbs", {}).get("values", [])]
        self.assertNotIn("breadcrumb of another request", crumbs)
        # Its own warning is there; INFO lines (gunicorn's access line of every request) are not.
        self.assertIn("a warning before the failure", crumbs)
        self.assertNotIn("an info line", crumbs)

    def test_no_request_pays_for_the_sdks_django_instrumentation(self) -> None:
        """The Django integration (a transaction, a session and template hooks around every
        request) is what made the SDK cost a quarter of the home page's throughput."""
        from sentry_sdk.integrations.django import DjangoIntegration

        init_sentry(dsn(9), release="r", environment="production")
        self.assertIsNone(sentry_sdk.get_client().get_integration(DjangoIntegration))
        self.assertIsNotNone(sentry_sdk.get_client().get_integration("celery"))

    def test_an_endpoint_that_is_down_or_hangs_never_slows_a_request(self) -> None:
        self.assertLess(self.timed("/fine/", None), 1.0)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port_closed = closed.getsockname()[1]
        closed.close()  # nothing listens there: connections are refused
        hanging = socket.socket()
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(64)  # accepts connections (the kernel does), never answers
        self.addCleanup(hanging.close)
        for port in (port_closed, hanging.getsockname()[1]):
            init_sentry(dsn(port), release="r", environment="production")
            for _ in range(5):
                self.assertLess(self.timed("/fails/view/", 500), 1.0, f"a request waited on the endpoint at port {port}")

    def timed(self, url: str, status: int | None) -> float:
        started = time.monotonic()
        response = self.client.get(url)
        took = time.monotonic() - started
        self.assertEqual(response.status_code, status or 200)
        return took


class ErrorProbeTests(TestCase):
    """DJANGO_ERROR_PROBE_PATH: the deployed app's URL that fails on purpose (the scenarios check
    that its error reaches a Sentry receiver); without it, no such URL."""

    def test_the_probe_path_fails_only_when_set(self) -> None:
        import importlib

        from django.urls import clear_url_caches

        import demoapp.urls

        self.client.raise_request_exception = False
        logger = logging.getLogger("django.request")
        self.addCleanup(logger.setLevel, logger.level)
        logger.setLevel(logging.CRITICAL)
        for probe, status in (("", 404), ("/probe-f00d/", 500)):
            with self.settings(ERROR_PROBE_PATH=probe, SECURE_SSL_REDIRECT=False, ALLOWED_HOSTS=["testserver"]):
                importlib.reload(demoapp.urls)
                clear_url_caches()
                self.assertEqual(self.client.get("/probe-f00d/").status_code, status, probe)
        importlib.reload(demoapp.urls)
        clear_url_caches()
