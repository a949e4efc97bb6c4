# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The bucket and prefix that hold the sets (boto3): listing, small objects, streaming multipart
uploads with bounded memory, verified downloads; every S3 error becomes a BackupError that says
what to check."""

from __future__ import annotations

import base64
import collections
import errno
import hashlib
import os
import re
import sys
import threading
import time

from .config import Config
from .errors import BackupError, Interrupted, MissingObject
from .util import MIB, READ_CHUNK, human


class Store:
    """The bucket and prefix that hold the sets, with errors translated into BackupError."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.bucket = cfg.s3_bucket
        self.prefix = cfg.s3_prefix
        self.endpoint = cfg.s3_endpoint_url or ("AWS S3 (%s)" % (cfg.s3_region or "default region"))
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError as exc:
            raise BackupError("boto3 is not installed for %s (apt-get install python3-boto3): %s"
                              % (sys.executable, exc))
        self.exceptions = botocore.exceptions
        style = cfg.s3_addressing_style
        if style == "auto" and cfg.s3_endpoint_url:
            style = "path"  # MinIO, Ceph, moto...: path style works everywhere
        config = botocore.config.Config(
            connect_timeout=cfg.s3_connect_timeout, read_timeout=cfg.s3_read_timeout,
            retries={"max_attempts": cfg.s3_max_attempts, "mode": "standard"},
            s3={"addressing_style": style}, signature_version="s3v4",
            max_pool_connections=max(10, cfg.s3_max_concurrency + 4),
        )
        session = boto3.session.Session(
            aws_access_key_id=cfg.s3_access_key or None, aws_secret_access_key=cfg.s3_secret_key or None,
            aws_session_token=cfg.s3_session_token or None, region_name=cfg.s3_region or None)
        try:
            self.client = session.client("s3", endpoint_url=cfg.s3_endpoint_url or None, config=config,
                                         verify=cfg.s3_ca_bundle or None)
        except Exception as exc:
            raise BackupError("cannot set up the S3 client for %s: %s" % (self.endpoint, exc))
        self.sse = {}
        if cfg.s3_sse != "none":
            self.sse["ServerSideEncryption"] = cfg.s3_sse
            if cfg.s3_sse_kms_key_id:
                self.sse["SSEKMSKeyId"] = cfg.s3_sse_kms_key_id

    # names
    def base(self) -> str:
        return (self.prefix + "/") if self.prefix else ""

    def key(self, set_id: str, name: str) -> str:
        return "%s%s/%s" % (self.base(), set_id, name)

    def url(self, key: str = "") -> str:
        return "s3://%s/%s" % (self.bucket, key)

    def where(self) -> str:
        return "%s at %s" % (self.url(self.base()), self.endpoint)

    # errors
    def error(self, exc: Exception, action: str, key: str | None = None) -> BackupError:
        ex = self.exceptions
        what = self.url(key) if key is not None else "bucket %s" % self.bucket
        if isinstance(exc, BackupError):
            return exc
        if isinstance(exc, (ex.EndpointConnectionError, ex.ConnectTimeoutError)):
            return BackupError("cannot reach the S3 endpoint %s (%s of %s): %s; check s3_endpoint_url, DNS and the "
                               "firewall" % (self.endpoint, action, what, exc))
        if isinstance(exc, ex.ReadTimeoutError):
            return BackupError("the S3 endpoint %s did not answer within s3_read_timeout=%ss (%s of %s)"
                               % (self.endpoint, self.cfg.s3_read_timeout, action, what))
        if isinstance(exc, ex.NoCredentialsError):
            return BackupError("no S3 credentials for bucket %s at %s: give s3_access_key and s3_secret_key, or set "
                               "up boto3's default chain (environment, ~/.aws/credentials, an instance role)"
                               % (self.bucket, self.endpoint))
        if isinstance(exc, ex.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = err.get("Message") or code
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                        "InvalidClientTokenId", "AuthorizationHeaderMalformed"):
                return BackupError("S3 rejected the credentials for bucket %s at %s (%s: %s during %s of %s); check "
                                   "s3_access_key and s3_secret_key" % (self.bucket, self.endpoint, code, message,
                                                                         action, what))
            if code in ("AccessDenied", "403", "Forbidden"):
                return BackupError("S3 denied %s of %s at %s (%s: %s); the credentials lack a permission on bucket %s"
                                   % (action, what, self.endpoint, code, message, self.bucket))
            if code == "NoSuchBucket" or (code in ("404", "NotFound") and key is None):
                return BackupError("bucket %s does not exist at %s; create it or fix s3_bucket/s3_endpoint_url"
                                   % (self.bucket, self.endpoint))
            if code in ("NoSuchKey", "404", "NotFound"):
                return MissingObject("object %s does not exist at %s" % (what, self.endpoint))
            return BackupError("S3 %s of %s at %s failed: %s (HTTP %s): %s"
                               % (action, what, self.endpoint, code, status, message))
        if isinstance(exc, ex.BotoCoreError):
            return BackupError("S3 %s of %s at %s failed: %s" % (action, what, self.endpoint, exc))
        return BackupError("S3 %s of %s at %s failed: %s: %s" % (action, what, self.endpoint,
                                                                type(exc).__name__, exc))

    def call(self, action: str, key: str | None, fn, **kwargs):
        try:
            return fn(**kwargs)
        except Interrupted:
            raise
        except Exception as exc:
            raise self.error(exc, action, key) from None

    # bucket
    def check_bucket(self) -> None:
        """The bucket exists and the credentials work (a HEAD error has no body: LIST says why)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except Interrupted:
            raise
        except self.exceptions.ClientError:
            pass
        except Exception as exc:
            raise self.error(exc, "HEAD bucket") from None
        self.call("LIST", self.base(), self.client.list_objects_v2, Bucket=self.bucket, Prefix=self.base(), MaxKeys=1)

    def list_keys(self, prefix: str) -> list[dict]:
        out = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                out.extend(page.get("Contents", []))
        except Interrupted:
            raise
        except Exception as exc:
            raise self.error(exc, "LIST", prefix) from None
        return out

    def get_bytes(self, key: str, limit: int = 64 * MIB) -> bytes:
        resp = self.call("GET", key, self.client.get_object, Bucket=self.bucket, Key=key)
        try:
            data = resp["Body"].read(limit + 1)
        except Exception as exc:
            raise self.error(exc, "GET", key) from None
        if len(data) > limit:
            raise BackupError("object %s is larger than %s: not a manifest or marker of this tool"
                              % (self.url(key), human(limit)))
        return data

    def put_small(self, key: str, data: bytes, content_type: str) -> dict:
        md5 = hashlib.md5(data).digest()
        self.call("PUT", key, self.client.put_object, Bucket=self.bucket, Key=key, Body=data,
                  ContentMD5=base64.b64encode(md5).decode(), ContentType=content_type, **self.sse)
        self.verify(key, len(data), '"%s"' % md5.hex())
        return dict(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def verify(self, key: str, size: int, etag: str | None) -> None:
        """HEAD the object: its size, and its ETag where the ETag is an MD5 (not with SSE-KMS)."""
        head = self.call("HEAD", key, self.client.head_object, Bucket=self.bucket, Key=key)
        if head.get("ContentLength") != size:
            raise BackupError("verification of %s failed: the store holds %s bytes, %d were uploaded"
                              % (self.url(key), head.get("ContentLength"), size))
        got = head.get("ETag", "")
        if etag and self.cfg.s3_sse != "aws:kms" and re.match(r'^"[0-9a-f]{32}(-\d+)?"$', got) and got != etag:
            raise BackupError("verification of %s failed: the store's ETag %s differs from the %s computed while "
                              "uploading" % (self.url(key), got, etag))

    def delete_keys(self, keys: list[str]) -> None:
        """One DELETE per object: every store authorizes it per key the same way (a multi-object delete
        is missing from some S3-compatible stores and checked against the bucket by others), and a
        night's retention removes a handful of sets."""
        for key in keys:
            self.call("DELETE", key, self.client.delete_object, Bucket=self.bucket, Key=key)

    def multipart_uploads(self) -> list[dict]:
        out = []
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                     Prefix=self.base()):
                out.extend(page.get("Uploads", []))
        except Interrupted:
            raise
        except Exception as exc:
            raise self.error(exc, "LIST multipart uploads", self.base()) from None
        return out

    def abort(self, key: str, upload_id: str) -> str | None:
        """Abort a multipart upload; returns an error text instead of raising (it runs during failures)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            return None
        except Exception as exc:
            return str(self.error(exc, "ABORT multipart upload", key))

    # streaming upload
    def upload_stream(self, key: str, reader, part_size: int, on_part=None) -> dict:
        """Upload what READER (a raw file object) yields as one multipart object; abort it on any failure.

        Memory stays bounded: one read buffer plus at most s3_max_concurrency parts in flight.
        Returns size, sha256, parts and the multipart ETag (MD5 of the parts' MD5s)."""
        resp = self.call("CREATE multipart upload", key, self.client.create_multipart_upload, Bucket=self.bucket,
                         Key=key, ContentType="application/octet-stream", **self.sse)
        upload_id = resp["UploadId"]
        pool = _PartUploader(self, key, upload_id, self.cfg.s3_max_concurrency)
        sha = hashlib.sha256()
        size = 0
        number = 0
        buf = bytearray(part_size)
        view = memoryview(buf)
        try:
            while True:
                filled = 0
                while filled < part_size:
                    count = reader.readinto(view[filled:])
                    if not count:
                        break
                    filled += count
                if filled == 0 and number > 0:
                    break
                pool.reserve()
                data = bytes(view[:filled])
                sha.update(data)
                size += filled
                number += 1
                if number > 10000:
                    raise BackupError("%s needs more than 10000 parts of %d MiB (S3's limit): raise s3_part_size_mb"
                                      % (self.url(key), part_size // MIB))
                pool.submit(number, data)
                del data
                if on_part:
                    on_part(number, size)
                if filled < part_size:
                    break
            if on_part:
                on_part(None, size)  # the caller checks its producers' exit status before we complete
            parts = pool.finish()
            md5s = b"".join(bytes.fromhex(p["md5"]) for p in parts)
            etag = '"%s-%d"' % (hashlib.md5(md5s).hexdigest(), len(parts))
            self.call("COMPLETE multipart upload", key, self.client.complete_multipart_upload, Bucket=self.bucket,
                      Key=key, UploadId=upload_id,
                      MultipartUpload={"Parts": [{"ETag": p["etag"], "PartNumber": p["number"]} for p in parts]})
        except BaseException as exc:
            pool.stop()
            problem = self.abort(key, upload_id)
            if problem and isinstance(exc, BackupError):
                raise BackupError("%s; aborting the multipart upload failed too (prune removes it later): %s"
                                  % (exc, problem)) from None
            raise
        finally:
            del view
        self.verify(key, size, etag)
        return dict(key=key, size=size, sha256=sha.hexdigest(), parts=len(parts), etag=etag.strip('"'))

    # download
    def download(self, key: str, path: str, size: int, sha256: str) -> dict:
        """GET KEY into PATH, checking size and SHA-256 on the way; a full disk gives a clear error."""
        started = time.monotonic()
        resp = self.call("GET", key, self.client.get_object, Bucket=self.bucket, Key=key)
        digest = hashlib.sha256()
        got = 0
        body = resp["Body"]
        try:
            with open(path, "wb") as out:
                while True:
                    try:
                        chunk = body.read(READ_CHUNK)
                    except Interrupted:
                        raise
                    except Exception as exc:
                        raise self.error(exc, "GET", key) from None
                    if not chunk:
                        break
                    digest.update(chunk)
                    got += len(chunk)
                    out.write(chunk)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BackupError("the download directory %s is full: writing %s failed after %s (%s)"
                                  % (os.path.dirname(path), self.url(key), human(got), exc.strerror)) from None
            raise BackupError("cannot write %s (download of %s): %s" % (path, self.url(key), exc)) from None
        if got != size:
            raise BackupError("size mismatch for %s: downloaded %d bytes, the manifest says %d"
                              % (self.url(key), got, size))
        if digest.hexdigest() != sha256:
            raise BackupError("checksum mismatch for %s: SHA-256 %s, the manifest says %s (the object was modified "
                              "or corrupted after the backup)" % (self.url(key), digest.hexdigest(), sha256))
        return dict(key=key, size=got, sha256=sha256, seconds=round(time.monotonic() - started, 3))


class _PartUploader:
    """At most N parts in flight, uploaded by daemon threads (a stuck one never blocks the exit)."""

    def __init__(self, store: Store, key: str, upload_id: str, concurrency: int):
        self.store, self.key, self.upload_id = store, key, upload_id
        self.slots = threading.Semaphore(concurrency)
        self.concurrency = concurrency
        self.work = collections.deque()
        self.ready = threading.Condition()
        self.results = {}
        self.error = None
        self.stopped = False
        self.threads = [threading.Thread(target=self._run, daemon=True, name="s3-part-%d" % i)
                        for i in range(concurrency)]
        for thread in self.threads:
            thread.start()

    def _check(self):
        if self.error is not None:
            raise self.error

    def reserve(self):
        while not self.slots.acquire(timeout=0.5):
            self._check()
        self._check()

    def submit(self, number: int, data: bytes):
        with self.ready:
            self.work.append((number, data))
            self.ready.notify()

    def _run(self):
        client = self.store.client
        while True:
            with self.ready:
                while not self.work and not self.stopped:
                    self.ready.wait()
                if self.stopped:
                    return
                number, data = self.work.popleft()
            try:
                md5 = hashlib.md5(data)
                resp = client.upload_part(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                                          PartNumber=number, Body=data,
                                          ContentMD5=base64.b64encode(md5.digest()).decode())
                etag = resp.get("ETag", "")
                if self.store.cfg.s3_sse != "aws:kms" and re.match(r'^"?[0-9a-f]{32}"?$', etag) \
                        and etag.strip('"') != md5.hexdigest():
                    raise BackupError("part %d of %s: the store's ETag %s differs from its MD5 %s"
                                      % (number, self.store.url(self.key), etag, md5.hexdigest()))
                self.results[number] = dict(number=number, etag=etag, md5=md5.hexdigest())
            except BaseException as exc:
                if self.error is None:
                    self.error = self.store.error(exc, "UPLOAD part %d" % number, self.key)
            finally:
                del data
                self.slots.release()

    def finish(self) -> list[dict]:
        for _ in range(self.concurrency):
            self.reserve()
        self.stop()
        self._check()
        return [self.results[n] for n in sorted(self.results)]

    def stop(self):
        with self.ready:
            self.stopped = True
            self.ready.notify_all()
