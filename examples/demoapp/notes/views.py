import logging
from uuid import uuid4

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.db import connection, connections, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_safe

from demoapp.routers import replica_reads
from demoapp.version import VERSION
from notes.forms import NoteForm, UploadForm
from notes.models import NOTE_LIST_CACHE_KEY, Counter, Note, Upload

logger = logging.getLogger(__name__)

NOTE_LIST_CACHE_SECONDS = 60
NOTE_LIST_LENGTH = 100
COUNTER_NAME = "hits"


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    notes = cache.get(NOTE_LIST_CACHE_KEY)
    if notes is None:
        notes = list(Note.objects.all()[:NOTE_LIST_LENGTH])
        cache.set(NOTE_LIST_CACHE_KEY, notes, NOTE_LIST_CACHE_SECONDS)
    return render(request, "notes/note_list.html", {"notes": notes})


@require_http_methods(["GET", "POST"])
def note_create(request: HttpRequest) -> HttpResponse:
    form = NoteForm(request.POST) if request.method == "POST" else NoteForm()
    if form.is_valid():
        note = form.save()
        messages.success(request, f'Saved the note "{note.title}".')
        return redirect("notes:home")
    return render(request, "notes/note_form.html", {"form": form})


@never_cache
@require_GET
def counter(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        row, _ = Counter.objects.get_or_create(name=COUNTER_NAME)
        Counter.objects.filter(pk=row.pk).update(value=F("value") + 1)
        row.refresh_from_db(fields=["value"])
    if request.GET.get("format") == "json":
        return JsonResponse({"count": row.value})
    return render(request, "notes/counter.html", {"count": row.value})


@never_cache
@require_safe
@replica_reads()
def stats(request: HttpRequest) -> JsonResponse:
    """Counts of the site's rows: read-only work that may lag a little, so it reads the replica
    when there is one ("database" names the alias that answered)."""
    counter = Counter.objects.filter(name=COUNTER_NAME).values_list("value", flat=True).first()
    return JsonResponse({
        "notes": Note.objects.count(),
        "uploads": Upload.objects.count(),
        "counter": counter or 0,
        "database": Note.objects.all().db,
    })


@require_http_methods(["GET", "POST"])
def uploads(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST, request.FILES) if request.method == "POST" else UploadForm()
    if form.is_valid():
        upload = form.save()
        messages.success(request, f"Uploaded {upload.filename}.")
        return redirect("notes:uploads")
    return render(
        request, "notes/upload_list.html", {"form": form, "uploads": Upload.objects.all()}
    )


SEARCH_RESULTS = 20


@require_safe
def search(request: HttpRequest) -> HttpResponse:
    """Full-text search of the notes through the search engine (Solr on a server)."""
    from haystack.query import SearchQuerySet

    query = request.GET.get("q", "").strip()[:200]
    results = list(SearchQuerySet().models(Note).auto_query(query)[:SEARCH_RESULTS]) if query else []
    return render(request, "notes/search.html", {"query": query, "results": results})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:  # any failure makes the check fail; the log says which
        logger.exception("Health check: the database query failed")
        return False


def _cache_ok() -> bool:
    key, value = f"healthz:{uuid4().hex}", uuid4().hex
    try:
        cache.set(key, value, timeout=10)
        ok = cache.get(key) == value
        cache.delete(key)
    except Exception:  # any failure makes the check fail; the log says which
        logger.exception("Health check: the cache round trip failed")
        return False
    if not ok:
        logger.error(
            "Health check: the cache did not return the value just stored (is memcached reachable?)"
        )
    return ok


# Seconds the replica's data is behind the primary's: 0 when it has replayed all it received,
# else the age of the last transaction it replayed.
REPLICA_LAG_SQL = (
    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
)


def _replica_lag() -> float | None:
    try:
        with connections["replica"].cursor() as cursor:
            cursor.execute(REPLICA_LAG_SQL)
            return round(float(cursor.fetchone()[0] or 0), 3)
    except Exception:  # any failure is reported as "error"; the log says which
        logger.exception("Health check: the replica's lag could not be read")
        return None


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {
        "database": "ok" if _database_ok() else "error",
        "cache": "ok" if _cache_ok() else "error",
    }
    healthy = all(state == "ok" for state in checks.values())
    # "release" names the directory the code runs from (releases/<id> on a server), so a
    # deploy can tell which release a worker serves.
    body = {**checks, "version": VERSION, "release": settings.BASE_DIR.name}
    # The replica is reported, not required: the site works without it (its read-only work
    # would fail), and a load balancer must not take every web server out for it.
    if "replica" in settings.DATABASES:
        lag = _replica_lag()
        body.update({"replica": "error" if lag is None else "ok", "replica_lag_seconds": lag})
    return JsonResponse(body, status=200 if healthy else 503)
