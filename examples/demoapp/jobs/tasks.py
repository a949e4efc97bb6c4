"""The demo's Celery tasks."""

import io
import logging
import time

from celery import shared_task
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db.models import F
from django.utils import timezone

logger = logging.getLogger(__name__)

THUMBNAIL_SIZE = (128, 128)


@shared_task
def make_thumbnail(upload_id: int) -> str | None:
    """Store a PNG thumbnail of an uploaded image (files that are not images get none).

    Read and written through the file fields' storage (the default storage), never a path: the
    worker may run on another host than the web server that took the upload (a bucket then)."""
    from PIL import Image, UnidentifiedImageError

    from jobs.models import Thumbnail
    from notes.models import Upload

    upload = Upload.objects.filter(pk=upload_id).first()
    if upload is None:
        return None
    try:
        with upload.file.open("rb") as source, Image.open(source) as image:
            image.thumbnail(THUMBNAIL_SIZE)
            out = io.BytesIO()
            image.convert("RGBA").save(out, format="PNG")
    except (UnidentifiedImageError, OSError) as exc:
        logger.info("No thumbnail for upload %s: %s", upload_id, exc)
        return None
    thumbnail, _ = Thumbnail.objects.get_or_create(upload=upload)
    thumbnail.image.save(f"thumb-{upload.pk}.png", ContentFile(out.getvalue()))
    return thumbnail.image.name


@shared_task
def heartbeat(name: str = "beat") -> None:
    """The periodic task celery beat sends (CELERY_BEAT_SCHEDULE): count and time each run."""
    from jobs.models import Heartbeat

    Heartbeat.objects.get_or_create(name=name)
    Heartbeat.objects.filter(name=name).update(count=F("count") + 1, last=timezone.now())


# acks_late: the message is acknowledged when the task ends, not when it starts, so a worker
# that dies mid-task (killed, out of memory, the machine lost) leaves it in the queue and
# another worker runs it again; reject_on_worker_lost applies the same when only the pool
# process dies. The task must therefore be safe to run twice (it is: keyed by token).
@shared_task(acks_late=True, reject_on_worker_lost=True)
def slow_task(token: str, seconds: float) -> str:
    """Sleep, then record that the run finished (tests use it to follow a task across deploys)."""
    from jobs.models import TaskRun

    TaskRun.objects.get_or_create(token=token, defaults={"seconds": seconds})
    TaskRun.objects.filter(token=token).update(attempts=F("attempts") + 1, started=timezone.now())
    time.sleep(seconds)
    TaskRun.objects.filter(token=token).update(finished=timezone.now())
    return token


@shared_task
def tick(counter: str) -> None:
    """A trivial task for bench/celery.py: count itself in the cache."""
    cache.incr(counter)
