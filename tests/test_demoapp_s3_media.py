"""The demo app with its uploads on an S3-compatible bucket: moto's S3 server stands in for the
bucket, the app runs its S3 checks (examples/demoapp/notes/s3checks.py) with the DJANGO_MEDIA_S3_*
variables the django_app role's stack preset writes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from conftest import missing_prerequisite

DEMOAPP = Path(__file__).resolve().parents[1] / "examples" / "demoapp"


@pytest.fixture
def media_bucket(moto_s3):
    try:
        import storages  # noqa: F401  (in the demo app's requirements, which requirements-test.txt includes)
    except ImportError:
        missing_prerequisite("django-storages is absent: pip install -r requirements-test.txt (make deps does)")
    name = f"media-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_s3.endpoint, region_name="us-east-1",
                          aws_access_key_id="AKIDMEDIA", aws_secret_access_key="media-secret")
    client.create_bucket(Bucket=name)
    return name, client


def test_uploads_and_thumbnails_live_in_the_bucket(moto_s3, media_bucket, tmp_path):
    bucket, client = media_bucket
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AWS_"))}
    env.update(
        DJANGO_DB_ENGINE="sqlite", DJANGO_SECRET_KEY="s3-tests-only-" + "x" * 50, DJANGO_ALLOWED_HOSTS="testserver",
        DJANGO_SECURE_SSL_REDIRECT="false", DJANGO_MEDIA_ROOT=str(tmp_path / "media"),
        DJANGO_MEDIA_S3_BUCKET=bucket, DJANGO_MEDIA_S3_ENDPOINT_URL=moto_s3.endpoint,
        DJANGO_MEDIA_S3_REGION="us-east-1", DJANGO_MEDIA_S3_ADDRESSING_STYLE="path",
        DJANGO_MEDIA_S3_ACCESS_KEY="AKIDMEDIA", DJANGO_MEDIA_S3_SECRET_KEY="media-secret",
    )
    result = subprocess.run([sys.executable, "manage.py", "test", "--noinput", "-v", "2", "notes.s3checks"],
                            cwd=DEMOAPP, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Ran 3 tests" in result.stderr
    # What the checks left in the bucket: uploads and thumbnails, nothing on the local disk.
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.startswith("uploads/photo") for k in keys), keys
    assert any(k.startswith("thumbnails/thumb-") for k in keys), keys
    assert not (tmp_path / "media").exists() or not any((tmp_path / "media").rglob("*"))
