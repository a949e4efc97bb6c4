"""Uploads and thumbnails on an S3-compatible bucket (django-storages).

Not found by `manage.py test` (no network there): tests/test_demoapp_s3_media.py runs it with
`manage.py test notes.s3checks` against moto's S3 server, DJANGO_MEDIA_S3_* set in the environment.
"""

import io
import os
import tempfile
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase, override_settings
from PIL import Image

from jobs.models import Thumbnail
from notes.models import Upload
from notes.tests import PLAIN_STATIC


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 200)).save(out, format="PNG")
    return out.getvalue()


@override_settings(STORAGES=PLAIN_STATIC, SECURE_SSL_REDIRECT=False)
class S3MediaTests(TestCase):
    def setUp(self) -> None:
        # Whatever lands on the local disk would be lost to the other web servers and workers.
        self.media_root = Path(self.enterContext(tempfile.TemporaryDirectory()))
        self.enterContext(override_settings(MEDIA_ROOT=str(self.media_root)))
        self.bucket = default_storage.bucket
        self.assertEqual(self.bucket.name, os.environ["DJANGO_MEDIA_S3_BUCKET"])

    def stored(self, name: str) -> bytes:
        return self.bucket.Object(name).get()["Body"].read()

    def test_the_default_storage_is_the_bucket(self) -> None:
        self.assertEqual(settings.STORAGES["default"]["BACKEND"], "storages.backends.s3.S3Storage")
        from storages.backends.s3 import S3Storage

        self.assertIsInstance(default_storage, S3Storage)

    def test_an_upload_and_its_thumbnail_go_to_the_bucket(self) -> None:
        content = png(640, 320)
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/uploads/", {"file": SimpleUploadedFile("photo.png", content, "image/png")})
        self.assertRedirects(response, "/uploads/")
        upload = Upload.objects.get()
        self.assertEqual(self.stored(upload.file.name), content)
        thumbnail = Thumbnail.objects.get(upload=upload)
        self.assertTrue(thumbnail.image.name.startswith("thumbnails/"))
        with Image.open(io.BytesIO(self.stored(thumbnail.image.name))) as image:
            self.assertEqual(image.size, (128, 64))
        self.assertEqual(list(self.media_root.rglob("*")), [])

        # The page links a presigned URL of the bucket; the browser fetches the file from there.
        url = upload.file.url
        self.assertTrue(url.startswith(os.environ["DJANGO_MEDIA_S3_ENDPOINT_URL"]), url)
        self.assertIn("X-Amz-Signature=", url)
        self.assertContains(self.client.get("/uploads/"), f'href="{url.split("?")[0]}')
        with urllib.request.urlopen(url, timeout=10) as fetched:
            self.assertEqual(fetched.read(), content)

    def test_two_uploads_of_one_name_keep_both(self) -> None:
        for content in (b"first", b"second"):
            with self.captureOnCommitCallbacks(execute=True):
                self.client.post("/uploads/", {"file": SimpleUploadedFile("same.txt", content, "text/plain")})
        first, second = Upload.objects.order_by("pk")
        self.assertNotEqual(first.file.name, second.file.name)
        self.assertEqual((self.stored(first.file.name), self.stored(second.file.name)), (b"first", b"second"))
