"""Error reports to Sentry (or any endpoint that speaks its protocol), when SENTRY_DSN is set."""

from __future__ import annotations


def init_sentry(dsn: str, release: str, environment: str) -> None:
    """Report unhandled exceptions of views and Celery tasks, tagged with the release and the
    environment. Events leave from the SDK's background thread, through a bounded queue: a request
    or a task never waits on the endpoint, and when the endpoint is down or slow the events are
    dropped, not the requests. A stopping process waits at most shutdown_timeout for the queue."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        release=release,
        environment=environment,
        # Tracing off (no traces_sample_rate: 0 still starts a transaction per request) and no spans
        # around middleware, signals or cache calls. What the SDK still costs a request is measured
        # in docs/performance.md, "Observability".
        integrations=[DjangoIntegration(middleware_spans=False, signals_spans=False, cache_spans=False),
                      CeleryIntegration()],
        # No user data (addresses, cookies, bodies) leaves the server, and no performance traces.
        send_default_pii=False,
        shutdown_timeout=2,
    )


class ErrorProbe(Exception):
    """What the error probe raises (DJANGO_ERROR_PROBE_PATH)."""


def error_probe(request):
    """Fail on purpose: the error reporting's check after a deploy (settings.ERROR_PROBE_PATH)."""
    raise ErrorProbe("the error probe failed on purpose")
