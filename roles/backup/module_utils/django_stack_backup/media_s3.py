# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Media that live in an S3 bucket (media_s3_bucket) instead of a directory.

A backup streams every object of the bucket into the set's media.tar[.age] (a tar written by a
thread into a pipe, each object read once, its SHA-256 taken on the way and kept in the manifest),
so a set is restored and drilled like one of a media directory. A restore into the bucket needs its
versioning on: it uploads the objects that differ from the set, and, only once every upload
succeeded and the database was swapped in, deletes the keys the set does not hold. What it
overwrites or deletes stays in the bucket as noncurrent versions: those are "the previous media"."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import subprocess
import tarfile
import threading

from .config import Config
from .errors import BackupError
from .pipeline import Pipeline, Proc, age_encrypt_cmd, enlarge_pipe
from .store import Store
from .util import READ_CHUNK

# Keys a tar member (and a path on restore) can hold unchanged: relative, no empty, . or .. part.
SAFE_KEY = re.compile(r"^(?!/)(?!.*//)(?!(.*/)?\.\.?(/|$))[^\x00-\x1f\x7f]+$")


def media_store(cfg: Config) -> Store:
    """The media bucket, through the same client code as the backup bucket (without its SSE)."""
    return Store(Config(cfg, s3_bucket=cfg.media_s3_bucket, s3_prefix="", s3_endpoint_url=cfg.media_s3_endpoint_url,
                        s3_region=cfg.media_s3_region, s3_access_key=cfg.media_s3_access_key,
                        s3_secret_key=cfg.media_s3_secret_key, s3_session_token=None,
                        s3_addressing_style=cfg.media_s3_addressing_style, s3_sse="none", s3_sse_kms_key_id=None))


def media_objects(store: Store) -> list[dict]:
    """Every object of the bucket but folder markers (empty keys ending in /), by key."""
    objects = [o for o in store.list_keys("") if not (o["Key"].endswith("/") and o.get("Size", 0) == 0)]
    unsafe = [o["Key"] for o in objects if not SAFE_KEY.match(o["Key"])]
    if unsafe:
        raise BackupError("media bucket %s holds keys that are not relative paths (%s): they cannot be restored "
                          "as they are; rename or remove them" % (store.bucket, ", ".join(repr(k) for k in unsafe[:5])))
    return sorted(objects, key=lambda o: o["Key"])


class _Hashing:
    """A reader of an object's body that hashes and counts what tarfile takes from it."""

    def __init__(self, body):
        self.body, self.sha, self.size = body, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.body.read(size if size and size > 0 else READ_CHUNK)
        self.sha.update(data)
        self.size += len(data)
        return data


class TarWriter(threading.Thread):
    """Writes the tar of the bucket's objects into the write end of a pipe, then closes it; the
    manifest's list of objects (key, size, sha256, content type) and its error, if any."""

    def __init__(self, store: Store, objects: list[dict], fd: int):
        super().__init__(daemon=True, name="media-s3-tar")
        self.store, self.objects, self.out = store, objects, os.fdopen(fd, "wb")
        self.listed, self.error = [], None

    def run(self):
        try:
            with tarfile.open(fileobj=self.out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for obj in self.objects:
                    self.add(tar, obj)
        except BaseException as exc:  # raised by the upload's callback
            self.error = exc
        finally:
            try:
                self.out.close()
            except OSError:
                pass

    def add(self, tar, obj: dict) -> None:
        key = obj["Key"]
        resp = self.store.call("GET", key, self.store.client.get_object, Bucket=self.store.bucket, Key=key)
        info = tarfile.TarInfo(key)
        info.size, info.mode = resp["ContentLength"], 0o644
        info.mtime = int(resp["LastModified"].timestamp())
        reader = _Hashing(resp["Body"])
        try:
            tar.addfile(info, reader)
        except (OSError, tarfile.TarError) as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise BackupError("reading %s from the media bucket failed: %s" % (self.store.url(key), exc)) from None
        self.listed.append(dict(key=key, size=reader.size, sha256=reader.sha.hexdigest(),
                                content_type=resp.get("ContentType") or None))

    def raise_error(self):
        if self.error is not None and not isinstance(self.error, BrokenPipeError):
            raise self.error if isinstance(self.error, BackupError) else BackupError(
                "archiving the media bucket failed: %s" % self.error)


def archive_bucket(cfg: Config, store: Store, key: str, part_size: int) -> tuple[dict, dict]:
    """tar of the media bucket [| age] uploaded as KEY of STORE; what upload_stream returns, and the
    manifest's `media` entry."""
    bucket = media_store(cfg)
    bucket.check_bucket()
    read_fd, write_fd = os.pipe()
    writer = TarWriter(bucket, media_objects(bucket), write_fd)
    pipeline = Pipeline()
    source = None
    try:
        if cfg.encrypt_recipients:
            age = pipeline.add(Proc("age", age_encrypt_cmd(cfg.encrypt_recipients), stdin=read_fd,
                                    stdout=subprocess.PIPE))
            os.close(read_fd)
            source = age.proc.stdout
            enlarge_pipe(source)
        else:
            source = os.fdopen(read_fd, "rb", buffering=0)
        read_fd = None
        writer.start()

        def on_part(number, size):
            writer.raise_error()
            if number is None:
                writer.join()
                writer.raise_error()
                problems = pipeline.failures()
                if problems:
                    raise BackupError("archiving the media bucket failed: %s" % "; ".join(problems))

        stored = store.upload_stream(key, source, part_size, on_part)
    finally:
        if read_fd is not None:
            os.close(read_fd)
        if source is not None:
            source.close()  # a writer still blocked on the pipe gets EPIPE and ends
        pipeline.close()
        if writer.is_alive():
            writer.join(30)
    listed = writer.listed
    return stored, dict(bucket=bucket.bucket, endpoint=bucket.endpoint, files=len(listed),
                        bytes=sum(o["size"] for o in listed), objects=listed)


def estimate(cfg: Config) -> tuple[int, int]:
    """The objects of the media bucket and their bytes (check mode)."""
    bucket = media_store(cfg)
    bucket.check_bucket()
    objects = media_objects(bucket)
    return len(objects), sum(o.get("Size", 0) for o in objects)


# --- restore ------------------------------------------------------------------------------------------

def check_versioning(cfg: Config) -> None:
    """A restore overwrites and deletes objects: only with versioning on are the previous ones kept."""
    bucket = media_store(cfg)
    bucket.check_bucket()
    status = bucket.call("GET versioning", None, bucket.client.get_bucket_versioning,
                         Bucket=bucket.bucket).get("Status")
    if status != "Enabled":
        raise BackupError("media_s3_bucket %s has no versioning (status: %s): a restore would overwrite and delete "
                          "media with no way back. Turn versioning on (aws s3api put-bucket-versioning --bucket %s "
                          "--versioning-configuration Status=Enabled, or the store's equivalent), then restore; "
                          "nothing was changed" % (bucket.bucket, status or "never enabled", bucket.bucket))


def verify_objects(manifest: dict, target: str) -> None:
    """Every object of the manifest extracted under TARGET with its SHA-256, nothing else."""
    expected = {o["key"]: o for o in (manifest.get("media") or {}).get("objects") or []}
    found = set()
    for top, _dirs, names in os.walk(target):
        for name in names:
            found.add(os.path.relpath(os.path.join(top, name), target))
    if found != set(expected):
        raise BackupError("media of set %s: the extracted files differ from the manifest's objects (missing: %s; "
                          "extra: %s)" % (manifest["set_id"], sorted(set(expected) - found)[:5],
                                          sorted(found - set(expected))[:5]))
    for key, obj in expected.items():
        if file_digest(os.path.join(target, key), "sha256") != obj["sha256"]:
            raise BackupError("media of set %s: %s does not have the SHA-256 the manifest records"
                              % (manifest["set_id"], key))


def file_digest(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload_set(cfg: Config, manifest: dict, target: str) -> dict:
    """Put every object of the set that the bucket does not hold as it is (size and MD5 ETag)."""
    bucket = media_store(cfg)
    live = {o["Key"]: o for o in media_objects(bucket)}
    uploaded = unchanged = 0
    for obj in manifest["media"]["objects"]:
        key, path = obj["key"], os.path.join(target, obj["key"])
        current = live.get(key)
        if current and current.get("Size") == obj["size"] \
                and current.get("ETag", "").strip('"') == file_digest(path, "md5"):
            unchanged += 1
            continue
        content_type = obj.get("content_type") or mimetypes.guess_type(key)[0] or "application/octet-stream"
        bucket.call("PUT", key, bucket.client.upload_file, Filename=path, Bucket=bucket.bucket, Key=key,
                    ExtraArgs={"ContentType": content_type})
        bucket.verify(key, obj["size"], None)
        uploaded += 1
    return dict(uploaded=uploaded, unchanged=unchanged)


def delete_extra(cfg: Config, manifest: dict) -> int:
    """Delete the keys the set does not hold (after every upload succeeded); how many."""
    bucket = media_store(cfg)
    wanted = {o["key"] for o in manifest["media"]["objects"]}
    extra = [o["Key"] for o in media_objects(bucket) if o["Key"] not in wanted]
    bucket.delete_keys(extra)
    return len(extra)
