import logging
import time

from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.db.models import F
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from checks.models import Check, Ping
from pingboard.version import VERSION

logger = logging.getLogger(__name__)


def home(request):
    checks = Check.objects.all()
    return render(
        request,
        "checks/home.html",
        {"checks": checks, "site_root": settings.SITE_ROOT, "version": VERSION},
    )


def _over_rate_limit(check):
    """Count this ping in the check's current one-minute window (in the "db" cache)."""
    cache = caches["db"]
    key = f"ping-rate:{check.code}:{int(time.time() // 60)}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, timeout=120)
        count = 1
    return count > settings.PING_RATE_LIMIT


@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def ping(request, code):
    check = get_object_or_404(Check, code=code)
    if _over_rate_limit(check):
        return HttpResponse("Too many pings\n", status=429, content_type="text/plain")
    now = timezone.now()
    Ping.objects.create(owner=check, method=request.method, remote_addr=request.META.get("REMOTE_ADDR") or None)
    Check.objects.filter(pk=check.pk).update(last_ping=now, status=Check.Status.UP, n_pings=F("n_pings") + 1)
    if check.status == Check.Status.DOWN:
        logger.info("check %s (%s) is up again", check.name, check.code)
    return HttpResponse("OK", content_type="text/plain")


def health(request):
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        logger.warning("health: database: %s", exc)
        return HttpResponse(f"database unavailable: {type(exc).__name__}\n", status=503, content_type="text/plain")
    try:
        cache = caches["default"]
        token = str(time.time())
        cache.set("health-probe", token, timeout=30)
        if cache.get("health-probe") != token:
            raise RuntimeError("value not read back")
    except Exception as exc:
        logger.warning("health: cache: %s", exc)
        return HttpResponse(f"cache unavailable: {type(exc).__name__}\n", status=503, content_type="text/plain")
    return HttpResponse("OK", content_type="text/plain")
