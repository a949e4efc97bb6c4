"""Error reports to Sentry (or any endpoint that speaks its protocol), when SENTRY_DSN is set.

The SDK's Django integration wraps every request in a transaction, a session and template hooks,
even with tracing off; on the demo's home page that was a quarter of its throughput
(docs/performance.md, "Observability"). This module reports what the integration's error path
reports, without the per-request instrumentation: Django's got_request_exception signal captures
an unhandled exception as the integration would (mechanism "django", unhandled), tagged with the
request's method, URL (no query string) and route, and each request gets its own scope so that one
request's log breadcrumbs never reach another's report. Celery tasks keep the SDK's own
integration, which costs a task, not a request. A project that wants Sentry's performance traces
initialises the SDK with DjangoIntegration and a traces_sample_rate instead.
"""

from __future__ import annotations

import logging
import sys

# The middleware below sits in settings.MIDDLEWARE only when SENTRY_DSN is set; without a DSN the
# SDK is never imported.
MIDDLEWARE = "demoapp.observability.sentry_scope_middleware"


def init_sentry(dsn: str, release: str, environment: str) -> None:
    """Report unhandled exceptions of views and Celery tasks, tagged with the release and the
    environment. Events leave from the SDK's background thread, through a bounded queue: a request
    or a task never waits on the endpoint, and when the endpoint is down or slow the events are
    dropped, not the requests. A stopping process waits at most shutdown_timeout for the queue."""
    import sentry_sdk
    from django.core.signals import got_request_exception
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration, ignore_logger

    sentry_sdk.init(
        dsn=dsn,
        release=release,
        environment=environment,
        # Log records from WARNING up become breadcrumbs of the report (ERROR ones events of their
        # own); INFO lines, gunicorn's access line of every request among them, do not: each
        # would cost a request about as much as the rest of the SDK (docs/performance.md).
        integrations=[CeleryIntegration(), LoggingIntegration(level=logging.WARNING, event_level=logging.ERROR)],
        # Only the integrations named here and the SDK's defaults (the process's uncaught
        # exceptions, deduplication): the auto-enabled ones would bring the Django integration's
        # per-request instrumentation back, and spans around every cache, database and HTTP call.
        auto_enabling_integrations=False,
        # No user data (addresses, cookies, bodies) leaves the server, and no performance traces.
        send_default_pii=False,
        shutdown_timeout=2,
    )
    got_request_exception.connect(report_request_exception, dispatch_uid="demoapp.observability")
    # Django also logs each 500 at ERROR with the exception; the signal has reported it already,
    # with the request (as the Django integration does, this logger is not made an event).
    ignore_logger("django.request")


def report_request_exception(sender, request=None, **kwargs) -> None:
    """Django gave up on a request (it answers 500): send the exception being handled."""
    import sentry_sdk
    from sentry_sdk.utils import event_from_exception

    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    event, hint = event_from_exception(
        sys.exc_info(), client_options=client.options, mechanism={"type": "django", "handled": False}
    )
    if request is not None:
        event.update(_request_details(request))
    sentry_sdk.capture_event(event, hint=hint)


def _request_details(request) -> dict:
    """What the report says of the request: the method, the URL without its query string (which
    may carry tokens) and, when the URL resolved, its route as the transaction's name."""
    details: dict = {"request": {"method": request.method}}
    try:
        details["request"]["url"] = request.build_absolute_uri(request.path)
    except Exception:  # noqa: BLE001 - a bad Host header must not stop the report
        details["request"]["url"] = request.path
    match = getattr(request, "resolver_match", None)
    if match is not None:
        details["transaction"] = "/" + (match.route or match.view_name or "")
    return details


def sentry_scope_middleware(get_response):
    """Each request on a scope of its own (forked from the process's), dropped when it ends."""
    import sentry_sdk

    def middleware(request):
        with sentry_sdk.isolation_scope():
            return get_response(request)

    return middleware


class ErrorProbe(Exception):
    """What the error probe raises (DJANGO_ERROR_PROBE_PATH)."""


def error_probe(request):
    """Fail on purpose: the error reporting's check after a deploy (settings.ERROR_PROBE_PATH)."""
    raise ErrorProbe("the error probe failed on purpose")
