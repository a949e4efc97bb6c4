"""The background tasks, run eagerly (no broker in unit tests: CELERY_TASK_ALWAYS_EAGER)."""

import io
import json
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import TestCase, override_settings
from PIL import Image

from jobs.models import Heartbeat, TaskRun, Thumbnail
from jobs.tasks import heartbeat, slow_task
from notes.models import Upload
from notes.tests import PLAIN_STATIC


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


@override_settings(STORAGES=PLAIN_STATIC, SECURE_SSL_REDIRECT=False)
class ThumbnailTests(TestCase):
    def setUp(self) -> None:
        self.enterContext(override_settings(MEDIA_ROOT=self.enterContext(tempfile.TemporaryDirectory())))
        self.assertTrue(settings.CELERY_TASK_ALWAYS_EAGER)

    def upload(self, name: str, content: bytes, content_type: str) -> Upload:
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/uploads/", {"file": SimpleUploadedFile(name, content, content_type)})
        self.assertRedirects(response, "/uploads/")
        return Upload.objects.get(file__endswith=name)

    def test_an_uploaded_image_gets_a_thumbnail_shown_on_the_uploads_page(self) -> None:
        upload = self.upload("photo.png", png(640, 320), "image/png")
        thumbnail = Thumbnail.objects.get(upload=upload)
        with Image.open(Path(settings.MEDIA_ROOT) / thumbnail.image.name) as image:
            self.assertEqual(image.size, (128, 64))
        self.assertContains(self.client.get("/uploads/"), f'src="{thumbnail.image.url}"')
        status = self.client.get("/jobs/status").json()
        self.assertEqual(status["thumbnails"], [{"upload": "photo.png", "url": thumbnail.image.url}])

    def test_other_files_get_none(self) -> None:
        self.upload("notes.txt", b"just text", "text/plain")
        self.assertFalse(Thumbnail.objects.exists())


class PeriodicAndSlowTaskTests(TestCase):
    def test_heartbeat_counts_and_times_each_run(self) -> None:
        heartbeat.delay()
        heartbeat.delay()
        beat = Heartbeat.objects.get(name="beat")
        self.assertEqual(beat.count, 2)
        self.assertIsNotNone(beat.last)
        self.assertEqual(self.client.get("/jobs/status").json()["heartbeat"]["count"], 2)

    def test_beat_schedules_the_heartbeat(self) -> None:
        self.assertEqual(settings.CELERY_BEAT_SCHEDULE["heartbeat"]["task"], "jobs.tasks.heartbeat")

    def test_slow_task_records_each_delivery_and_the_end(self) -> None:
        slow_task.delay("run-1", 0)
        slow_task.delay("run-1", 0)  # a redelivery (acks_late) runs it again, safely
        run = TaskRun.objects.get(token="run-1")
        self.assertEqual(run.attempts, 2)
        self.assertIsNotNone(run.finished)
        self.assertTrue(slow_task.acks_late and slow_task.reject_on_worker_lost)

    def test_bench_ticks_counts_every_task(self) -> None:
        out = io.StringIO()
        call_command("bench_ticks", count=25, stdout=out)
        result = json.loads(out.getvalue())
        self.assertEqual(result["count"], 25)
        self.assertGreater(result["tasks_per_second"], 0)

    def test_enqueue_command(self) -> None:
        call_command("enqueue_slow_task", token="cmd-1", seconds=0, stdout=io.StringIO())
        [run] = self.client.get("/jobs/status").json()["runs"]
        self.assertEqual((run["token"], run["attempts"]), ("cmd-1", 1))
        self.assertLessEqual(run["started"], run["finished"])
