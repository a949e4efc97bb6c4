from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from jobs.models import Heartbeat, TaskRun, Thumbnail

RECENT = 20


@never_cache
@require_safe
def status(request: HttpRequest) -> JsonResponse:
    """What the background tasks did: beat's heartbeat, recent thumbnails and slow-task runs."""
    beat = Heartbeat.objects.filter(name="beat").first()
    thumbnails = Thumbnail.objects.select_related("upload").order_by("-pk")[:RECENT]
    runs = TaskRun.objects.order_by("-pk")[:RECENT]
    return JsonResponse({
        "heartbeat": {"count": beat.count if beat else 0, "last": beat.last.isoformat() if beat and beat.last else None},
        "thumbnails": [{"upload": t.upload.filename, "url": t.image.url} for t in thumbnails],
        "runs": [
            {
                "token": r.token,
                "attempts": r.attempts,
                "started": r.started.isoformat() if r.started else None,
                "finished": r.finished.isoformat() if r.finished else None,
            }
            for r in runs
        ],
    })
