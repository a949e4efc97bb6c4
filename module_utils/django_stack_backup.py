# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Backup sets of a Django stack on S3: create, list, prune, restore.

The whole core of the django_backup, django_backup_info and django_restore modules, and
a command line for the systemd timer on the server (``cli_main``), so both run the same
code. Pure Python 3.11: stdlib, boto3/botocore (Debian 12's 1.26) and psycopg2; no Ansible.

A backup *set* is a directory of objects in a bucket::

    <prefix>/<set_id>/db.dump[.age]      pg_dump -Fc, streamed (optionally encrypted with age)
    <prefix>/<set_id>/media.tar[.age]    tar of media_root, streamed (when media_root is given)
    <prefix>/<set_id>/manifest.json      what the set holds: versions, migrations, row counts, SHA-256
    <prefix>/<set_id>/COMPLETE           the manifest's SHA-256, written last, after every object
                                         above was uploaded and verified

A set without a COMPLETE marker that matches its manifest (and objects of the sizes the
manifest gives) is incomplete: it is listed as such, never restored, never counted by
retention. Every failure raises BackupError with a message naming what to check.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import datetime as dt
import errno
import fcntl
import grp
import hashlib
import json
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

FORMAT = "django-stack-backup"
FORMAT_VERSION = 1
MIB = 1024 * 1024
MARKER = "COMPLETE"
MANIFEST = "manifest.json"
SET_ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{6})$")
AGE_RECIPIENT_RE = re.compile(r"^(age1[02-9ac-hj-np-z]{58}|ssh-(ed25519|rsa) [A-Za-z0-9+/=]+( .*)?)$")
STDERR_TAIL = 25
READ_CHUNK = 1 * MIB
F_SETPIPE_SZ = 1031

# Every option of the modules and of the CLI's JSON config, in Ansible's argument_spec
# syntax (the modules take their argument_spec from here, so both accept the same keys).
SPEC = dict(
    # where the sets live
    s3_bucket=dict(type="str", required=True),
    s3_prefix=dict(type="str", default="backups"),
    s3_endpoint_url=dict(type="str"),
    s3_region=dict(type="str"),
    s3_access_key=dict(type="str", no_log=False),
    s3_secret_key=dict(type="str", no_log=True),
    s3_session_token=dict(type="str", no_log=True),
    s3_addressing_style=dict(type="str", default="auto", choices=["auto", "path", "virtual"]),
    s3_ca_bundle=dict(type="path"),
    s3_sse=dict(type="str", default="none", choices=["none", "AES256", "aws:kms"]),
    s3_sse_kms_key_id=dict(type="str", no_log=False),
    s3_part_size_mb=dict(type="int", default=16),
    s3_max_concurrency=dict(type="int", default=2),
    s3_connect_timeout=dict(type="int", default=10),
    s3_read_timeout=dict(type="int", default=120),
    s3_max_attempts=dict(type="int", default=5),
    # the database
    db_name=dict(type="str"),
    db_host=dict(type="str", default="/var/run/postgresql"),
    db_port=dict(type="int", default=5432),
    db_user=dict(type="str", default="postgres"),
    db_password=dict(type="str", no_log=True),
    db_os_user=dict(type="str"),
    db_maintenance_name=dict(type="str", default="postgres"),
    pg_bin_dir=dict(type="path"),
    # media
    media_root=dict(type="path"),
    # backup
    release_id=dict(type="str"),
    release_path=dict(type="path"),
    encrypt_recipients=dict(type="list", elements="str", default=[]),
    # retention
    keep_daily=dict(type="int"),
    keep_weekly=dict(type="int"),
    keep_monthly=dict(type="int"),
    incomplete_grace_hours=dict(type="int", default=24),
    # restore
    backup_set=dict(type="str", default="latest"),
    download_dir=dict(type="path", default="/var/tmp"),
    keep_download=dict(type="bool", default=False),
    age_identity=dict(type="str", no_log=True),
    db_restore_mode=dict(type="str", default="swap", choices=["swap", "in_place", "scratch", "skip"]),
    db_scratch_name=dict(type="str"),
    db_owner=dict(type="str"),
    db_analyze=dict(type="bool", default=True),
    media_restore_mode=dict(type="str", choices=["swap", "scratch", "skip"]),
    media_scratch_dir=dict(type="path"),
    media_owner=dict(type="str"),
    media_group=dict(type="str"),
)

GROUPS = dict(
    s3=["s3_bucket", "s3_prefix", "s3_endpoint_url", "s3_region", "s3_access_key", "s3_secret_key",
        "s3_session_token", "s3_addressing_style", "s3_ca_bundle", "s3_connect_timeout", "s3_read_timeout",
        "s3_max_attempts"],
    upload=["s3_sse", "s3_sse_kms_key_id", "s3_part_size_mb", "s3_max_concurrency"],
    db=["db_name", "db_host", "db_port", "db_user", "db_password", "db_os_user", "pg_bin_dir"],
    backup=["media_root", "release_id", "release_path", "encrypt_recipients"],
    retention=["keep_daily", "keep_weekly", "keep_monthly", "incomplete_grace_hours"],
    restore=["db_maintenance_name", "media_root", "backup_set", "download_dir", "keep_download", "age_identity",
             "db_restore_mode", "db_scratch_name", "db_owner", "db_analyze", "media_restore_mode",
             "media_scratch_dir", "media_owner", "media_group"],
)


def argument_spec(*groups: str) -> dict:
    """An Ansible argument_spec with the options of these GROUPS."""
    spec = {}
    for group in groups:
        for name in GROUPS[group]:
            spec[name] = copy.deepcopy(SPEC[name])
    return spec


class BackupError(Exception):
    """The one error of this module: the message says what failed and what to check."""


class Interrupted(BackupError):
    """A signal (SIGTERM, SIGINT, SIGHUP) stopped the run."""


class MissingObject(BackupError):
    """An object the listing named is not (or no longer) in the bucket."""


# --- small helpers ------------------------------------------------------------------------------

def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_set_id(moment: dt.datetime) -> str:
    """UTC time to the second, then 3 hex digits of the fraction of the second (so ids sort by time even
    within one second) and 3 random ones."""
    fraction = moment.microsecond * 4096 // 1000000
    return "%s-%03x%s" % (moment.strftime("%Y%m%dT%H%M%SZ"), fraction, secrets.token_hex(2)[:3])


def set_time(set_id: str) -> dt.datetime:
    match = SET_ID_RE.match(set_id)
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024.0
    return str(size)


def tail(lines, count: int = STDERR_TAIL) -> str:
    return "\n".join(list(lines)[-count:])


def peak_rss_kb() -> int:
    """Peak resident set size of this process, in KiB (children are not included: their figure from
    getrusage would include this process's pages at fork time)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Timer:
    def __init__(self):
        self.start = time.monotonic()
        self.marks = {}

    def mark(self, name: str, since: float) -> None:
        self.marks[name] = round(time.monotonic() - since, 3)

    def total(self) -> dict:
        return dict(self.marks, total=round(time.monotonic() - self.start, 3))


# --- options --------------------------------------------------------------------------------------

class Config(dict):
    """Options with defaults applied; attribute access for brevity."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)


def _check_type(name: str, value, spec: dict):
    kind = spec.get("type", "str")
    if value is None:
        return None
    if kind in ("str", "path"):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise BackupError("option %s must be a string, got %r" % (name, value))
        value = str(value)
        return os.path.expanduser(value) if kind == "path" else value
    if kind == "int":
        if isinstance(value, bool):
            raise BackupError("option %s must be an integer, got %r" % (name, value))
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BackupError("option %s must be an integer, got %r" % (name, value))
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise BackupError("option %s must be a boolean, got %r" % (name, value))
    if kind == "list":
        if isinstance(value, str):
            value = [x.strip() for x in value.split(",") if x.strip()]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise BackupError("option %s must be a list of strings, got %r" % (name, value))
        return value
    raise BackupError("option %s: unknown type %s" % (name, kind))


def make_config(params: dict) -> Config:
    """Defaults applied and types checked; unknown keys are refused (the CLI's JSON config)."""
    unknown = sorted(set(params) - set(SPEC))
    if unknown:
        raise BackupError("unknown option(s) %s; known options: %s" % (", ".join(unknown), ", ".join(sorted(SPEC))))
    cfg = Config()
    for name, spec in SPEC.items():
        value = params.get(name, spec.get("default"))
        value = _check_type(name, value, spec)
        if value is not None and spec.get("choices") and value not in spec["choices"]:
            raise BackupError("option %s must be one of %s, got %r" % (name, ", ".join(spec["choices"]), value))
        cfg[name] = copy.deepcopy(value)
    return cfg


def validate(cfg: Config, command: str) -> None:
    """Checks the spec cannot express, each naming the option. COMMAND: backup, prune, list, restore."""
    if not cfg.s3_bucket:
        raise BackupError("s3_bucket is required: the bucket that holds the backup sets")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$", cfg.s3_bucket):
        raise BackupError("s3_bucket %r is not a valid bucket name" % cfg.s3_bucket)
    cfg["s3_prefix"] = (cfg.s3_prefix or "").strip("/")
    if cfg.s3_endpoint_url and not re.match(r"^https?://[^/\s]+", cfg.s3_endpoint_url):
        raise BackupError("s3_endpoint_url %r must be an http:// or https:// URL" % cfg.s3_endpoint_url)
    if bool(cfg.s3_access_key) != bool(cfg.s3_secret_key):
        raise BackupError("s3_access_key and s3_secret_key go together: give both, or neither to use boto3's "
                          "default credential chain (environment, ~/.aws, instance role)")
    if cfg.s3_session_token and not cfg.s3_access_key:
        raise BackupError("s3_session_token needs s3_access_key and s3_secret_key")
    if not 5 <= cfg.s3_part_size_mb <= 5120:
        raise BackupError("s3_part_size_mb must be between 5 and 5120 (S3's multipart part size limits), got %d"
                          % cfg.s3_part_size_mb)
    if not 1 <= cfg.s3_max_concurrency <= 16:
        raise BackupError("s3_max_concurrency must be between 1 and 16, got %d" % cfg.s3_max_concurrency)
    for name in ("s3_connect_timeout", "s3_read_timeout", "s3_max_attempts"):
        if cfg[name] < 1:
            raise BackupError("%s must be 1 or more, got %d" % (name, cfg[name]))
    if cfg.s3_sse_kms_key_id and cfg.s3_sse != "aws:kms":
        raise BackupError("s3_sse_kms_key_id needs s3_sse=aws:kms (got s3_sse=%s)" % cfg.s3_sse)
    if cfg.s3_ca_bundle and not os.path.isfile(cfg.s3_ca_bundle):
        raise BackupError("s3_ca_bundle %s is not a file" % cfg.s3_ca_bundle)
    if not 1 <= cfg.db_port <= 65535:
        raise BackupError("db_port must be between 1 and 65535, got %d" % cfg.db_port)
    for name in ("keep_daily", "keep_weekly", "keep_monthly", "incomplete_grace_hours"):
        if cfg[name] is not None and cfg[name] < 0:
            raise BackupError("%s must be 0 or more, got %d" % (name, cfg[name]))
    if cfg.pg_bin_dir and not os.path.isdir(cfg.pg_bin_dir):
        raise BackupError("pg_bin_dir %s is not a directory" % cfg.pg_bin_dir)
    if command == "backup":
        if not cfg.db_name:
            raise BackupError("db_name is required: the database to back up")
        if cfg.media_root and not os.path.isdir(cfg.media_root):
            raise BackupError("media_root %s is not a directory" % cfg.media_root)
        if cfg.release_id and cfg.release_path:
            raise BackupError("release_id and release_path are mutually exclusive")
        if cfg.release_path and not os.path.exists(cfg.release_path):
            raise BackupError("release_path %s does not exist" % cfg.release_path)
        for recipient in cfg.encrypt_recipients:
            if not AGE_RECIPIENT_RE.match(recipient.strip()):
                raise BackupError("encrypt_recipients: %r is not an age recipient (age1...) or an ssh-ed25519/ssh-rsa "
                                  "public key" % recipient)
        if cfg.encrypt_recipients and not shutil.which("age"):
            raise BackupError("encrypt_recipients is set but the age program is not installed (apt-get install age)")
    if command == "prune" and all(cfg[k] is None for k in ("keep_daily", "keep_weekly", "keep_monthly")):
        raise BackupError("pruning needs at least one of keep_daily, keep_weekly, keep_monthly")
    if command == "restore":
        mode = cfg.db_restore_mode
        if mode in ("swap", "in_place") and not cfg.db_name:
            raise BackupError("db_name is required with db_restore_mode=%s: the live database to replace" % mode)
        if mode == "scratch":
            if not cfg.db_scratch_name:
                raise BackupError("db_restore_mode=scratch needs db_scratch_name: the database to restore into")
            if cfg.db_scratch_name == cfg.db_name:
                raise BackupError("db_scratch_name must differ from db_name (%s): scratch never touches the live "
                                  "database; use db_restore_mode=swap or in_place" % cfg.db_name)
        for name in ("db_name", "db_scratch_name", "db_owner"):
            if cfg[name] and len(cfg[name].encode()) > 63:
                raise BackupError("%s %r is longer than PostgreSQL's 63-byte identifier limit" % (name, cfg[name]))
        if cfg.media_restore_mode is None:
            cfg["media_restore_mode"] = "swap" if cfg.media_root else "skip"
        if cfg.media_restore_mode == "swap":
            if not cfg.media_root:
                raise BackupError("media_restore_mode=swap needs media_root: the live media directory to replace")
            parent = os.path.dirname(os.path.abspath(cfg.media_root))
            if not os.path.isdir(parent):
                raise BackupError("media_root %s: its parent directory %s does not exist" % (cfg.media_root, parent))
        if cfg.media_restore_mode == "scratch":
            if not cfg.media_scratch_dir:
                raise BackupError("media_restore_mode=scratch needs media_scratch_dir: the directory to extract into")
            if os.path.isdir(cfg.media_scratch_dir) and os.listdir(cfg.media_scratch_dir):
                raise BackupError("media_scratch_dir %s is not empty" % cfg.media_scratch_dir)
        if not os.path.isdir(cfg.download_dir):
            raise BackupError("download_dir %s is not a directory" % cfg.download_dir)
        for name, lookup in (("media_owner", pwd.getpwnam), ("media_group", grp.getgrnam)):
            if cfg[name]:
                try:
                    lookup(cfg[name])
                except KeyError:
                    raise BackupError("%s %r does not exist on this host" % (name, cfg[name]))
        if cfg.age_identity is not None and "AGE-SECRET-KEY-1" not in cfg.age_identity \
                and "PRIVATE KEY" not in cfg.age_identity:
            raise BackupError("age_identity does not hold an age identity (AGE-SECRET-KEY-1...) or an SSH private key")


# --- signals ----------------------------------------------------------------------------------------

class handle_signals:
    """Turn SIGTERM/SIGINT/SIGHUP into Interrupted, so uploads are aborted and children killed."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __enter__(self):
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.saved[sig] = signal.signal(sig, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted("interrupted by %s" % signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        return False


# --- S3 -----------------------------------------------------------------------------------------------

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
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            resp = self.call("DELETE", batch[0], self.client.delete_objects, Bucket=self.bucket,
                             Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise BackupError("S3 could not delete %d object(s), first %s: %s: %s"
                                  % (len(resp["Errors"]), self.url(first.get("Key", "")), first.get("Code"),
                                     first.get("Message")))

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


# --- subprocesses -----------------------------------------------------------------------------------

class Proc:
    """A child process whose stderr is drained by a thread (last lines kept, or fed to a parser)."""

    def __init__(self, name: str, argv: list[str], stdin=None, stdout=None, parser=None, **kwargs):
        self.name = name
        self.argv = argv
        self.lines = collections.deque(maxlen=200)
        self.parser = parser
        try:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, bufsize=0,
                                         close_fds=True, **kwargs)
        except OSError as exc:
            raise BackupError("cannot run %s (%s): %s" % (name, argv[0], exc))
        self.thread = threading.Thread(target=self._drain, daemon=True, name="stderr-" + name)
        self.thread.start()

    def _drain(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if self.parser is None or not self.parser(line):
                self.lines.append(line)

    def wait(self) -> int:
        rc = self.proc.wait()
        self.thread.join(10)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def failure(self, rc: int) -> str:
        how = ("killed by %s" % signal.Signals(-rc).name) if rc < 0 else ("exit status %d" % rc)
        return "%s failed (%s): %s" % (self.name, how, tail(self.lines) or "(no error output)")


def enlarge_pipe(fileobj) -> None:
    try:
        fcntl.fcntl(fileobj.fileno(), F_SETPIPE_SZ, MIB)
    except OSError:
        pass


class Pipeline:
    """PRODUCER [| age -r ...]: yields the stream to upload; kills everything left on exit."""

    def __init__(self):
        self.procs = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def check(self) -> None:
        problems = []
        for proc in self.procs:
            rc = proc.wait()
            if rc != 0:
                problems.append(proc.failure(rc))
        if problems:
            raise BackupError("; ".join(problems))

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


def age_encrypt_cmd(recipients: list[str]) -> list[str]:
    cmd = [shutil.which("age") or "age"]
    for recipient in recipients:
        cmd += ["-r", recipient.strip()]
    return cmd


# --- PostgreSQL --------------------------------------------------------------------------------------

LIST_SETTINGS = {"search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"}

TABLES_SQL = r"""
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%%' AND n.nspname NOT LIKE 'pg\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 1, 2
"""


class Postgres:
    """How to reach the server: host/port/user/password, as db_os_user when running as root."""

    def __init__(self, cfg: Config, warnings: list):
        self.cfg = cfg
        self.host = cfg.db_host
        self.port = cfg.db_port
        self.user = cfg.db_user
        self.os_user = None
        wanted = cfg.db_os_user
        if os.geteuid() == 0:
            if wanted is None and self.host.startswith("/"):
                try:
                    pwd.getpwnam("postgres")
                    wanted = "postgres"
                except KeyError:
                    wanted = None
            if wanted and wanted != "root":
                try:
                    self.os_user = pwd.getpwnam(wanted)
                except KeyError:
                    raise BackupError("db_os_user %r does not exist on this host" % wanted)
        elif wanted:
            warnings.append("db_os_user=%s is honoured only when running as root; connecting as %s"
                            % (wanted, pwd.getpwuid(os.geteuid()).pw_name))
        self.bindir = None
        self.server_version_num = None

    def who(self) -> str:
        where = ("socket %s" % self.host) if self.host.startswith("/") else ("%s:%s" % (self.host, self.port))
        text = "user %s on %s" % (self.user, where)
        if self.os_user:
            text += " (as OS user %s)" % self.os_user.pw_name
        return text

    def connect(self, dbname: str):
        try:
            import psycopg2
        except ImportError as exc:
            raise BackupError("psycopg2 is not installed for %s (apt-get install python3-psycopg2): %s"
                              % (sys.executable, exc))
        kwargs = dict(dbname=dbname, host=self.host, port=self.port, user=self.user, connect_timeout=15,
                      application_name="django_stack_backup")
        if self.cfg.db_password:
            kwargs["password"] = self.cfg.db_password
        saved = None
        if self.os_user:
            saved = (os.getegid(), os.geteuid())
            os.setegid(self.os_user.pw_gid)
            os.seteuid(self.os_user.pw_uid)
        try:
            conn = psycopg2.connect(**kwargs)
        except psycopg2.Error as exc:
            raise BackupError("cannot connect to PostgreSQL database %s as %s: %s"
                              % (dbname, self.who(), str(exc).strip())) from None
        finally:
            if saved:
                os.seteuid(saved[1])
                os.setegid(saved[0])
        if self.server_version_num is None:
            self.server_version_num = conn.server_version
        return conn

    def env(self) -> dict:
        env = dict(os.environ, PGAPPNAME="django_stack_backup", PGCONNECT_TIMEOUT="15")
        for name in ("PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS"):
            env.pop(name, None)
        if self.cfg.db_password:
            env["PGPASSWORD"] = self.cfg.db_password
        if self.os_user:
            env.update(HOME=self.os_user.pw_dir, USER=self.os_user.pw_name, LOGNAME=self.os_user.pw_name)
        return env

    def popen_kwargs(self) -> dict:
        kwargs = dict(env=self.env(), cwd="/")
        if self.os_user:
            kwargs.update(user=self.os_user.pw_uid, group=self.os_user.pw_gid, extra_groups=[])
        return kwargs

    def conn_args(self, dbname: str) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, "-w", "-d", dbname]

    def tool(self, name: str) -> str:
        """pg_dump/pg_restore: from pg_bin_dir, else the newest Debian bin dir not older than the server."""
        if self.cfg.pg_bin_dir:
            path = os.path.join(self.cfg.pg_bin_dir, name)
            if not os.access(path, os.X_OK):
                raise BackupError("pg_bin_dir %s has no %s" % (self.cfg.pg_bin_dir, name))
            return path
        major = (self.server_version_num or 0) // 10000
        candidates = []
        base = "/usr/lib/postgresql"
        if os.path.isdir(base):
            for entry in os.listdir(base):
                if entry.isdigit() and int(entry) >= major and os.access(os.path.join(base, entry, "bin", name),
                                                                         os.X_OK):
                    candidates.append(int(entry))
        if candidates:
            return os.path.join(base, str(min(candidates)), "bin", name)
        found = shutil.which(name)
        if not found:
            raise BackupError("%s not found (install postgresql-client-%d, or set pg_bin_dir)" % (name, major or 15))
        return found


def list_tables(cur) -> list[tuple[str, str]]:
    cur.execute(TABLES_SQL)
    return [(s, t) for s, t in cur.fetchall()]


def count_rows(cur, tables, savepoint: bool = False) -> dict:
    """Exact row count of each table. With SAVEPOINT, an error does not end the transaction (whose
    exported snapshot pg_dump may not have imported yet)."""
    from psycopg2 import sql
    counts = {}
    for schema, table in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        try:
            if savepoint:
                cur.execute("SAVEPOINT row_count")
            cur.execute(query)
            counts["%s.%s" % (schema, table)] = cur.fetchone()[0]
            if savepoint:
                cur.execute("RELEASE SAVEPOINT row_count")
        except Exception as exc:
            if savepoint:
                try:
                    cur.execute("ROLLBACK TO SAVEPOINT row_count")
                except Exception:
                    pass
            raise BackupError("counting the rows of table %s.%s failed: %s" % (schema, table, str(exc).strip()))
    return counts


def applied_migrations(cur) -> list[str] | None:
    cur.execute("SELECT to_regclass('django_migrations') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT app, name FROM django_migrations ORDER BY id")
    return ["%s.%s" % row for row in cur.fetchall()]


# --- listing and validation of sets -------------------------------------------------------------------

def scan_sets(store: Store, now: dt.datetime | None = None, manifests: bool = True) -> list[dict]:
    """Every set under the prefix, newest first, each with complete true only for a valid marker."""
    now = now or utcnow()
    groups = {}
    ignored = 0
    base = store.base()
    for obj in store.list_keys(base):
        rest = obj["Key"][len(base):]
        set_id, sep, name = rest.partition("/")
        if not sep or not SET_ID_RE.match(set_id):
            ignored += 1
            continue
        groups.setdefault(set_id, {})[name] = obj
    sets = []
    for set_id in sorted(groups, reverse=True):
        objs = groups[set_id]
        created = set_time(set_id)
        info = dict(set_id=set_id, complete=False, created_at=iso(created),
                    age_seconds=int((now - created).total_seconds()),
                    size=sum(o["Size"] for o in objs.values()), objects=sorted(objs),
                    release_id=None, completed_at=None, encrypted=None, problem=None, manifest=None)
        if MARKER not in objs:
            info["problem"] = "no %s marker: the backup did not finish (or is still running)" % MARKER
        elif MANIFEST not in objs:
            info["problem"] = "%s marker without %s" % (MARKER, MANIFEST)
        elif manifests:
            _validate_set(store, info, objs)
        sets.append(info)
    return sets


def _validate_set(store: Store, info: dict, objs: dict) -> None:
    set_id = info["set_id"]
    try:
        marker = store.get_bytes(store.key(set_id, MARKER), 4096).decode("ascii", "replace").strip()
        raw = store.get_bytes(store.key(set_id, MANIFEST))
    except MissingObject as exc:
        # Gone since the listing (a concurrent prune): incomplete. Any other error fails the listing, so that
        # a transient one never makes a good set look incomplete (and prunable).
        info["problem"] = str(exc)
        return
    digest = hashlib.sha256(raw).hexdigest()
    if marker != digest:
        info["problem"] = "the %s marker (%s) does not match the manifest's SHA-256 %s" % (MARKER, marker[:64], digest)
        return
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        info["problem"] = "manifest.json is not JSON: %s" % exc
        return
    if manifest.get("format") != FORMAT or manifest.get("set_id") != set_id:
        info["problem"] = "manifest.json is not a %s manifest of set %s" % (FORMAT, set_id)
        return
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        info["problem"] = "manifest format_version %s is newer than this tool's %d" % (
            manifest.get("format_version"), FORMAT_VERSION)
        return
    for obj in manifest.get("objects", []):
        name = obj["key"].rsplit("/", 1)[-1]
        if name not in objs:
            info["problem"] = "object %s of the manifest is missing" % name
            return
        if objs[name]["Size"] != obj["size"]:
            info["problem"] = "object %s holds %d bytes, the manifest says %d" % (name, objs[name]["Size"], obj["size"])
            return
    info.update(complete=True, problem=None, release_id=manifest.get("release_id"),
                completed_at=manifest.get("completed_at"), encrypted=bool(manifest.get("encryption")),
                manifest=manifest)


def public_set(info: dict, with_manifest: bool = False) -> dict:
    out = {k: v for k, v in info.items() if k != "manifest"}
    if with_manifest:
        out["manifest"] = info.get("manifest")
    return out


# --- retention ---------------------------------------------------------------------------------------

def plan_retention(sets: list[dict], cfg: Config, now: dt.datetime) -> dict:
    """Grandfather-father-son over complete sets; incomplete ones older than the grace period go."""
    complete = [s for s in sets if s["complete"]]
    complete.sort(key=lambda s: s["set_id"], reverse=True)
    reasons = {s["set_id"]: [] for s in complete}
    if complete:
        reasons[complete[0]["set_id"]].append("newest complete set")
    rules = (("daily", cfg.keep_daily, lambda t: t.strftime("%Y-%m-%d")),
             ("weekly", cfg.keep_weekly, lambda t: "%d-W%02d" % t.isocalendar()[:2]),
             ("monthly", cfg.keep_monthly, lambda t: t.strftime("%Y-%m")))
    for label, count, period in rules:
        if not count:
            continue
        seen = []
        for entry in complete:
            key = period(set_time(entry["set_id"]))
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            reasons[entry["set_id"]].append("%s %s" % (label, key))
    kept = [dict(set_id=s["set_id"], reasons=reasons[s["set_id"]]) for s in complete if reasons[s["set_id"]]]
    prune = [s["set_id"] for s in complete if not reasons[s["set_id"]]]
    grace = dt.timedelta(hours=cfg.incomplete_grace_hours)
    stale = [s["set_id"] for s in sets if not s["complete"] and now - set_time(s["set_id"]) > grace]
    young = [s["set_id"] for s in sets if not s["complete"] and now - set_time(s["set_id"]) <= grace]
    return dict(kept=kept, prune=prune, incomplete=stale, incomplete_within_grace=young)


def delete_set(store: Store, set_id: str) -> int:
    """Marker first, so a half-deleted set is never taken for complete."""
    keys = [o["Key"] for o in store.list_keys(store.key(set_id, ""))]
    marker = store.key(set_id, MARKER)
    if marker in keys:
        store.call("DELETE", marker, store.client.delete_object, Bucket=store.bucket, Key=marker)
        keys.remove(marker)
    if keys:
        store.delete_keys(keys)
    return len(keys) + 1


def prune(cfg: Config, check_mode: bool = False, store: Store | None = None, extra_set: dict | None = None) -> dict:
    """Apply retention (or, in check mode, say what it would remove)."""
    now = utcnow()
    store = store or Store(cfg)
    sets = scan_sets(store, now)
    if extra_set:
        sets = [extra_set] + sets
    plan = plan_retention(sets, cfg, now)
    grace = dt.timedelta(hours=cfg.incomplete_grace_hours)
    stale_uploads = []
    for upload in store.multipart_uploads():
        # Some stores report a meaningless Initiated time: the set id in the key dates the upload too.
        started = [upload["Initiated"].astimezone(dt.timezone.utc)] if upload.get("Initiated") else []
        set_id = upload["Key"][len(store.base()):].split("/", 1)[0]
        if SET_ID_RE.match(set_id):
            started.append(set_time(set_id))
        if not started or now - max(started) > grace:
            stale_uploads.append(dict(key=upload["Key"], upload_id=upload["UploadId"],
                                      initiated=iso(max(started)) if started else None))
    result = dict(kept=plan["kept"], incomplete_within_grace=plan["incomplete_within_grace"],
                  retention=dict(keep_daily=cfg.keep_daily, keep_weekly=cfg.keep_weekly,
                                 keep_monthly=cfg.keep_monthly, incomplete_grace_hours=cfg.incomplete_grace_hours))
    if check_mode:
        result.update(would_prune=plan["prune"], would_remove_incomplete=plan["incomplete"],
                      would_abort_uploads=stale_uploads, pruned=[], removed_incomplete=[], aborted_uploads=[])
        result["changed"] = bool(plan["prune"] or plan["incomplete"] or stale_uploads)
        return result
    for set_id in plan["prune"] + plan["incomplete"]:
        delete_set(store, set_id)
    aborted = []
    for upload in stale_uploads:
        problem = store.abort(upload["key"], upload["upload_id"])
        if problem:
            raise BackupError(problem)
        aborted.append(upload)
    result.update(pruned=plan["prune"], removed_incomplete=plan["incomplete"], aborted_uploads=aborted,
                  would_prune=[], would_remove_incomplete=[], would_abort_uploads=[])
    result["changed"] = bool(plan["prune"] or plan["incomplete"] or aborted)
    return result


# --- backup ------------------------------------------------------------------------------------------

def release_of(cfg: Config) -> str | None:
    if cfg.release_id:
        return cfg.release_id
    if cfg.release_path:
        return os.path.basename(os.path.realpath(cfg.release_path).rstrip("/")) or None
    return None


def media_estimate(root: str) -> tuple[int, int]:
    files = size = 0
    seen = set()
    for top, dirs, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files += 1
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    size += st.st_size
    return files, size


class TarListing:
    """Parses `tar -cvv` lines on stderr: counts regular files (and hard links) and their bytes."""

    def __init__(self):
        self.files = 0
        self.bytes = 0

    def __call__(self, line: str) -> bool:
        if not line or line.startswith("tar: "):
            return False
        kind = line[0]
        if kind in "-h" and len(line) > 10 and line[1] in "r-":
            self.files += 1
            if kind == "-":
                fields = line.split(None, 5)
                try:
                    self.bytes += int(fields[2])
                except (IndexError, ValueError):
                    return False
            return True
        return kind in "dlcbps" and len(line) > 10


def effective_part_size(cfg: Config, estimate: int) -> int:
    """The configured part size, raised when the estimate would need more than 9000 parts."""
    part = cfg.s3_part_size_mb * MIB
    if estimate > part * 9000:
        part = -(-estimate // 9000 // MIB) * MIB
    return part


def backup(cfg: Config, check_mode: bool = False) -> dict:
    validate(cfg, "backup")
    warnings = []
    timer = Timer()
    precise = dt.datetime.now(dt.timezone.utc)
    now = precise.replace(microsecond=0)
    set_id = new_set_id(precise)
    store = Store(cfg)
    store.check_bucket()
    pg = Postgres(cfg, warnings)
    encrypted = bool(cfg.encrypt_recipients)
    suffix = ".age" if encrypted else ""
    retention = any(cfg[k] is not None for k in ("keep_daily", "keep_weekly", "keep_monthly"))

    conn = pg.connect(cfg.db_name)
    try:
        cur = conn.cursor()
        if check_mode:
            cur.execute("SELECT pg_database_size(current_database()), current_setting('server_version')")
            db_size, server_version = cur.fetchone()
            tables = list_tables(cur)
            migrations = applied_migrations(cur)
            conn.rollback()
            pg_dump = pg.tool("pg_dump")
            media = media_estimate(cfg.media_root) if cfg.media_root else None
            objects = [dict(key=store.key(set_id, "db.dump" + suffix), estimated_size=db_size,
                            source="pg_dump -Fc of %s (%s on the server)" % (cfg.db_name, human(db_size)))]
            if media:
                objects.append(dict(key=store.key(set_id, "media.tar" + suffix), estimated_size=media[1],
                                    source="tar of %s (%d files, %s)" % (cfg.media_root, media[0], human(media[1]))))
            objects += [dict(key=store.key(set_id, MANIFEST), estimated_size=None, source="manifest"),
                        dict(key=store.key(set_id, MARKER), estimated_size=64, source="completion marker")]
            result = dict(changed=True, set_id=set_id, bucket=cfg.s3_bucket, prefix=cfg.s3_prefix,
                          endpoint=store.endpoint, objects=objects, would_upload=[o["key"] for o in objects],
                          database=dict(name=cfg.db_name, server_version=server_version, size=db_size,
                                        tables=len(tables), applied_migrations=len(migrations or []),
                                        pg_dump=pg_dump),
                          media=dict(root=cfg.media_root, files=media[0], bytes=media[1]) if media else None,
                          encryption=dict(type="age", recipients=cfg.encrypt_recipients) if encrypted else None,
                          release_id=release_of(cfg), warnings=warnings)
            if retention:
                pending = dict(set_id=set_id, complete=True)
                result["retention"] = prune(cfg, check_mode=True, store=store, extra_set=pending)
            return result

        # One snapshot for the dump, the row counts, the migrations: they agree exactly.
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        cur.execute("SELECT pg_export_snapshot(), current_setting('server_version'), "
                    "pg_database_size(current_database())")
        snapshot, server_version, db_size = cur.fetchone()
        migrations = applied_migrations(cur)
        tables = list_tables(cur)
        pg_dump = pg.tool("pg_dump")
        version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        counts = {}
        count_error = []

        def count_all():
            try:
                counts.update(count_rows(conn.cursor(), tables, savepoint=True))
            except BaseException as exc:  # reported by dump_done
                count_error.append(exc)

        objects = []
        started = time.monotonic()
        pipeline = Pipeline()
        counter = threading.Thread(target=count_all, daemon=True, name="row-counts")
        try:
            dump = pipeline.add(Proc("pg_dump", [pg_dump, "-Fc", "--snapshot=" + snapshot] +
                                     pg.conn_args(cfg.db_name), stdout=subprocess.PIPE, **pg.popen_kwargs()))
            enlarge_pipe(dump.proc.stdout)
            source = dump.proc.stdout
            if encrypted:
                age = pipeline.add(Proc("age", age_encrypt_cmd(cfg.encrypt_recipients), stdin=source,
                                        stdout=subprocess.PIPE))
                dump.proc.stdout.close()
                enlarge_pipe(age.proc.stdout)
                source = age.proc.stdout
            counter.start()

            def dump_done(number, size):
                if count_error:  # no need to upload the rest of a dump whose manifest cannot be written
                    raise count_error[0]
                if number is None:
                    problems = []
                    try:
                        pipeline.check()  # pg_dump (and age) must have succeeded before the upload completes
                    except BackupError as exc:
                        problems.append(str(exc))
                    counter.join()
                    problems += [str(exc) for exc in count_error]
                    if problems:
                        raise BackupError("dump of database %s failed: %s" % (cfg.db_name, "; ".join(problems)))

            key = store.key(set_id, "db.dump" + suffix)
            stored = store.upload_stream(key, source, effective_part_size(cfg, db_size), dump_done)
        finally:
            pipeline.close()
            if counter.is_alive():
                conn.cancel()  # a failed dump: stop the row counts before closing their connection
                counter.join(10)
        conn.rollback()
        timer.mark("database", started)
        stored.update(name="db.dump" + suffix, encryption="age" if encrypted else None,
                    sse=None if cfg.s3_sse == "none" else cfg.s3_sse)
        objects.append(stored)

        media = None
        if cfg.media_root:
            started = time.monotonic()
            listing = TarListing()
            estimate = media_estimate(cfg.media_root)[1]
            pipeline = Pipeline()
            try:
                tar = pipeline.add(Proc("tar", ["tar", "-C", cfg.media_root, "-cvvf", "-", "."],
                                        stdout=subprocess.PIPE, parser=listing, cwd="/"))
                enlarge_pipe(tar.proc.stdout)
                source = tar.proc.stdout
                if encrypted:
                    age = pipeline.add(Proc("age", age_encrypt_cmd(cfg.encrypt_recipients), stdin=source,
                                            stdout=subprocess.PIPE))
                    tar.proc.stdout.close()
                    enlarge_pipe(age.proc.stdout)
                    source = age.proc.stdout

                def media_done(number, size):
                    if number is not None:
                        return
                    problems = []
                    for proc in pipeline.procs:
                        rc = proc.wait()
                        if proc is tar and rc == 1:
                            # GNU tar: 1 = some file changed while it was read (live uploads); the rest is fine
                            warnings.append("tar: some media files changed while they were archived: %s"
                                            % tail(proc.lines, 5))
                        elif rc != 0:
                            problems.append(proc.failure(rc))
                    if problems:
                        raise BackupError("archiving media_root %s failed: %s" % (cfg.media_root, "; ".join(problems)))

                key = store.key(set_id, "media.tar" + suffix)
                stored = store.upload_stream(key, source, effective_part_size(cfg, estimate), media_done)
            finally:
                pipeline.close()
            timer.mark("media", started)
            stored.update(name="media.tar" + suffix, encryption="age" if encrypted else None,
                        sse=None if cfg.s3_sse == "none" else cfg.s3_sse)
            objects.append(stored)
            media = dict(root=cfg.media_root, files=listing.files, bytes=listing.bytes)
    finally:
        conn.close()

    completed = utcnow()
    manifest = dict(
        format=FORMAT, format_version=FORMAT_VERSION, set_id=set_id, created_at=iso(now), completed_at=iso(completed),
        host=socket.gethostname(), release_id=release_of(cfg),
        database=dict(name=cfg.db_name, server_version=server_version, pg_dump_version=version,
                      size_bytes=db_size, snapshot=snapshot, applied_migrations=migrations,
                      tables=counts, rows_total=sum(counts.values())),
        media=media,
        encryption=dict(type="age", recipients=[r.strip() for r in cfg.encrypt_recipients]) if encrypted else None,
        objects=[dict(key=o["key"], name=o["name"], size=o["size"], sha256=o["sha256"], encryption=o["encryption"],
                      sse=o["sse"], parts=o["parts"], etag=o["etag"]) for o in objects],
    )
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    started = time.monotonic()
    manifest_info = store.put_small(store.key(set_id, MANIFEST), raw, "application/json")
    store.put_small(store.key(set_id, MARKER), (manifest_info["sha256"] + "\n").encode(), "text/plain")
    timer.mark("manifest", started)
    result = dict(changed=True, set_id=set_id, bucket=cfg.s3_bucket, prefix=cfg.s3_prefix, endpoint=store.endpoint,
                  objects=[dict(key=o["key"], size=o["size"], sha256=o["sha256"], parts=o["parts"]) for o in objects]
                  + [manifest_info], size=sum(o["size"] for o in objects) + manifest_info["size"],
                  manifest=manifest, warnings=warnings)
    if retention:
        try:
            result["retention"] = prune(cfg, check_mode=False, store=store)
        except BackupError as exc:
            raise BackupError("backup set %s is uploaded and complete, but applying retention failed: %s"
                              % (set_id, exc)) from None
    timings = timer.total()
    seconds = max(timings["total"], 0.001)
    result.update(timings=timings, throughput_mb_s=round(result["size"] / MIB / seconds, 1))
    return result


# --- info --------------------------------------------------------------------------------------------

def info(cfg: Config, backup_set: str | None = None) -> dict:
    validate(cfg, "list")
    store = Store(cfg)
    store.check_bucket()
    sets = scan_sets(store)
    latest = next((s for s in sets if s["complete"]), None)
    result = dict(changed=False, bucket=cfg.s3_bucket, prefix=cfg.s3_prefix, endpoint=store.endpoint,
                  sets=[public_set(s) for s in sets], count=len(sets),
                  complete_count=sum(1 for s in sets if s["complete"]),
                  latest_complete=public_set(latest) if latest else None)
    if backup_set:
        chosen = pick_set(store, sets, backup_set)
        result["manifest"] = chosen["manifest"]
        result["backup_set"] = chosen["set_id"]
    return result


def pick_set(store: Store, sets: list[dict], wanted: str) -> dict:
    complete = [s for s in sets if s["complete"]]
    if wanted == "latest":
        if not complete:
            incomplete = len(sets) - len(complete)
            raise BackupError("no complete backup set under %s%s" % (
                store.where(), " (%d incomplete set(s) are never restored)" % incomplete if incomplete else ""))
        return complete[0]
    if not SET_ID_RE.match(wanted):
        raise BackupError("backup_set %r is neither 'latest' nor a set id such as 20261124T031500Z-3f9a1c" % wanted)
    for entry in sets:
        if entry["set_id"] == wanted:
            if not entry["complete"]:
                raise BackupError("backup set %s under %s is incomplete (%s): refusing to restore it; newest complete "
                                  "set: %s" % (wanted, store.where(), entry["problem"],
                                               complete[0]["set_id"] if complete else "none"))
            return entry
    raise BackupError("there is no backup set %s under %s; newest complete set: %s"
                      % (wanted, store.where(), complete[0]["set_id"] if complete else "none"))


def check_freshness(cfg: Config, max_age_hours: float) -> dict:
    validate(cfg, "list")
    store = Store(cfg)
    store.check_bucket()
    sets = scan_sets(store)
    latest = next((s for s in sets if s["complete"]), None)
    if latest is None:
        raise BackupError("no complete backup set under %s" % store.where())
    age_hours = round(latest["age_seconds"] / 3600.0, 2)
    if age_hours > max_age_hours:
        raise BackupError("the newest complete backup set %s under %s is %.1f hours old (more than %s)"
                          % (latest["set_id"], store.where(), age_hours, max_age_hours))
    return dict(changed=False, latest_complete=latest["set_id"], age_hours=age_hours, max_age_hours=max_age_hours)


# --- restore -----------------------------------------------------------------------------------------

def _ident(name: str):
    from psycopg2 import sql
    return sql.Identifier(name)


def _short_name(base: str, suffix: str) -> str:
    room = 63 - len(suffix.encode())
    raw = base.encode()[:room].decode("utf-8", "ignore")
    return raw + suffix


class Restorer:
    def __init__(self, cfg: Config, check_mode: bool):
        self.cfg = cfg
        self.check_mode = check_mode
        self.warnings = []
        self.timer = Timer()
        self.stamp = utcnow().strftime("%Y%m%d%H%M%S")
        self.pg = None
        self.created_db = None
        self.extracted = None
        self.workdir = None

    # -- helpers
    def admin(self):
        conn = self.pg.connect(self.cfg.db_maintenance_name)
        conn.autocommit = True
        return conn

    def db_exists(self, cur, name: str) -> bool:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cur.fetchone() is not None

    def terminate(self, cur, name: str) -> None:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()", [name])

    def drop_db(self, cur, name: str) -> None:
        from psycopg2 import sql
        cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(_ident(name)))
        for attempt in range(10):
            self.terminate(cur, name)
            try:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(_ident(name)))
                return
            except Exception as exc:
                if getattr(exc, "pgcode", None) != "55006" or attempt == 9:  # object_in_use
                    raise
                time.sleep(0.3)

    def space_check(self, needs: list[tuple[str, int, str]]) -> list[dict]:
        """NEEDS: (directory, bytes, what); summed per filesystem; a clear error when they cannot fit."""
        per_fs = {}
        for path, size, what in needs:
            dev = os.stat(path).st_dev
            entry = per_fs.setdefault(dev, dict(path=path, need=0, what=[]))
            entry["need"] += size
            entry["what"].append("%s (%s)" % (what, human(size)))
        report = []
        for entry in per_fs.values():
            free = shutil.disk_usage(entry["path"]).free
            need = entry["need"] + 8 * MIB
            report.append(dict(path=entry["path"], needed=need, free=free))
            if free < need:
                raise BackupError("not enough free space in %s: %s needed for %s, %s free; free some space or point "
                                  "download_dir elsewhere" % (entry["path"], human(need), " + ".join(entry["what"]),
                                                               human(free)))
        return report

    def check_data_directory(self, size: int) -> None:
        """A warning when a local server's data directory has less room than the source database took."""
        if not self.pg.host.startswith("/"):
            return
        try:
            admin = self.admin()
            try:
                cur = admin.cursor()
                cur.execute("SELECT current_setting('data_directory')")
                path = cur.fetchone()[0]
            finally:
                admin.close()
            free = shutil.disk_usage(path).free
        except Exception:  # not a superuser, or not this host's data directory: nothing to say
            return
        if free < size:
            self.warnings.append("the data directory %s has %s free; the source database took %s (a restore is "
                                 "usually smaller, and pg_restore fails cleanly if it runs out)"
                                 % (path, human(free), human(size)))

    def identity_file(self, manifest: dict) -> str | None:
        if not manifest.get("encryption"):
            return None
        recipients = manifest["encryption"].get("recipients", [])
        if not self.cfg.age_identity:
            raise BackupError("backup set %s is encrypted with age (recipients %s): give age_identity, the private "
                              "key of one of them" % (manifest["set_id"], ", ".join(recipients)))
        if not shutil.which("age"):
            raise BackupError("backup set %s is encrypted but the age program is not installed (apt-get install age)"
                              % manifest["set_id"])
        path = os.path.join(self.workdir, "identity")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.cfg.age_identity.strip() + "\n")
        if "AGE-SECRET-KEY-1" in self.cfg.age_identity and shutil.which("age-keygen"):
            proc = subprocess.run(["age-keygen", "-y", path], capture_output=True, text=True, check=False)
            mine = set(proc.stdout.split())
            if proc.returncode == 0 and not mine & set(recipients):
                raise BackupError("age_identity (recipient %s) is not one the set %s was encrypted to (%s)"
                                  % (", ".join(sorted(mine)), manifest["set_id"], ", ".join(recipients)))
        return path

    def source(self, pipeline: Pipeline, path: str, identity: str | None):
        """A readable stream of the object's plain bytes (decrypted through age when needed)."""
        handle = open(path, "rb")
        if not identity:
            return handle
        age = pipeline.add(Proc("age -d", [shutil.which("age"), "-d", "-i", identity], stdin=handle,
                                stdout=subprocess.PIPE))
        handle.close()
        return age.proc.stdout

    # -- database
    def restore_db(self, manifest: dict, path: str, identity: str | None) -> dict:
        from psycopg2 import sql
        cfg = self.cfg
        mode = cfg.db_restore_mode
        live = cfg.db_name
        admin = self.admin()
        try:
            cur = admin.cursor()
            live_exists = bool(live) and self.db_exists(cur, live)
            props = None
            if live_exists:
                cur.execute("SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
                            "FROM pg_database WHERE datname = %s", [live])
                props = cur.fetchone()
            owner = cfg.db_owner or (props[0] if props else cfg.db_user)
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [owner])
            if cur.fetchone() is None:
                raise BackupError("the owner role %r of the restored database does not exist (db_owner); create it "
                                  "first (the postgresql role does)" % owner)
            if mode == "in_place":
                if not live_exists:
                    raise BackupError("db_restore_mode=in_place: database %s does not exist; use swap to create it"
                                      % live)
                target = live
            elif mode == "scratch":
                target = cfg.db_scratch_name
            else:
                target = _short_name(live, "_restore_" + manifest["set_id"].lower().replace("-", "_"))
            report = dict(mode=mode, name=live, restored_into=target, owner=owner, previous=None)
            if self.check_mode:
                report["would_create"] = target if mode != "in_place" else None
                return report
            if mode != "in_place":
                if self.db_exists(cur, target):
                    self.drop_db(cur, target)  # a leftover of an earlier run, or the scratch database
                create = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(_ident(target), _ident(owner))
                if props:
                    create = sql.SQL("{} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                        create, sql.Literal(props[1]), sql.Literal(props[2]), sql.Literal(props[3]))
                cur.execute(create)
                self.created_db = target
                cur.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(_ident(target)))
                if live_exists:
                    self.copy_database_settings(cur, live, target, owner)
        finally:
            admin.close()

        started = time.monotonic()
        cmd = [self.pg.tool("pg_restore"), "--exit-on-error", "--no-owner", "--role=" + owner]
        if mode == "in_place":
            cmd += ["--clean", "--if-exists", "--single-transaction"]
        cmd += self.pg.conn_args(target)
        pipeline = Pipeline()
        try:
            stream = self.source(pipeline, path, identity)
            restore = pipeline.add(Proc("pg_restore", cmd, stdin=stream, **self.pg.popen_kwargs()))
            stream.close()
            rc = restore.wait()
            problems = []
            for proc in pipeline.procs:
                code = proc.wait()
                if code != 0:
                    problems.append(proc.failure(code))
            if rc != 0 or problems:
                raise BackupError("pg_restore of set %s into database %s failed, nothing was swapped in: %s"
                                  % (manifest["set_id"], target, "; ".join(problems)))
        finally:
            pipeline.close()
        self.timer.mark("db_restore", started)

        started = time.monotonic()
        conn = self.pg.connect(target)
        try:
            conn.autocommit = True
            cur = conn.cursor()
            counts = count_rows(cur, list_tables(cur))
            if cfg.db_analyze:
                cur.execute("ANALYZE")
        finally:
            conn.close()
        expected = manifest["database"]["tables"]
        extra = sorted(set(counts) - set(expected))
        if extra and mode == "in_place":
            # pg_restore --clean drops only what the dump holds: later tables stay as they are
            self.warnings.append("database %s keeps table(s) the backup does not hold, left as they were: %s"
                                 % (target, ", ".join(extra)))
            counts = {t: n for t, n in counts.items() if t in expected}
        diff = []
        for table in sorted(set(expected) | set(counts)):
            if expected.get(table) != counts.get(table):
                diff.append("%s: %s rows restored, %s in the backup" % (table, counts.get(table, "no table"),
                                                                         expected.get(table, "no table")))
        if diff:
            raise BackupError("row counts of database %s differ from the manifest of set %s%s: %s"
                              % (target, manifest["set_id"],
                                 " (restored in place: the live database now holds this restore)"
                                 if mode == "in_place" else ", nothing was swapped in", "; ".join(diff[:20])))
        self.timer.mark("db_verify", started)
        report.update(tables=len(counts), rows=sum(counts.values()), table_rows=counts)
        if extra and mode == "in_place":
            report["tables_not_in_backup"] = extra
        return report

    def copy_database_settings(self, cur, live: str, target: str, owner: str) -> None:
        """The live database's privileges granted to other roles and its ALTER DATABASE ... SET settings."""
        from psycopg2 import sql
        cur.execute("SELECT a.privilege_type, r.rolname FROM pg_database d, aclexplode(d.datacl) a "
                    "JOIN pg_roles r ON r.oid = a.grantee WHERE d.datname = %s AND r.rolname <> %s", [live, owner])
        for privilege, role in cur.fetchall():
            cur.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}").format(sql.SQL(privilege), _ident(target),
                                                                         _ident(role)))
        cur.execute("SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                    "WHERE d.datname = %s AND s.setrole = 0", [live])
        for (setting,) in cur.fetchall():
            name, _, value = setting.partition("=")
            values = [v.strip() for v in value.split(",")] if name in LIST_SETTINGS else [value]
            cur.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                _ident(target), sql.Identifier(name), sql.SQL(", ").join(sql.Literal(v) for v in values)))

    def swap_db(self, report: dict) -> None:
        from psycopg2 import sql
        live, new = report["name"], report["restored_into"]
        admin = self.admin()
        try:
            cur = admin.cursor()
            previous = None
            if self.db_exists(cur, live):
                previous = _short_name(live, "_before_" + self.stamp)
                cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(_ident(live)))
                try:
                    for attempt in range(20):
                        self.terminate(cur, live)
                        try:
                            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(live),
                                                                                         _ident(previous)))
                            break
                        except Exception as exc:
                            if getattr(exc, "pgcode", None) != "55006" or attempt == 19:
                                raise
                            time.sleep(0.25)
                except Exception as exc:
                    cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(_ident(live)))
                    raise BackupError("cannot rename the live database %s out of the way (%s): the restored copy "
                                      "stays in %s" % (live, str(exc).strip(), new))
                cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(_ident(previous)))
            try:
                cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(new), _ident(live)))
            except Exception as exc:
                if previous:
                    cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(previous), _ident(live)))
                raise BackupError("cannot rename the restored database %s to %s (%s); the live database was put "
                                  "back" % (new, live, str(exc).strip()))
            self.created_db = None
            report["previous"] = previous
        finally:
            admin.close()

    # -- media
    def restore_media(self, manifest: dict, path: str, identity: str | None) -> dict:
        cfg = self.cfg
        mode = cfg.media_restore_mode
        expected = manifest.get("media") or {}
        if mode == "swap":
            root = os.path.realpath(cfg.media_root)  # a symlinked media dir: replace the real one
            parent = os.path.dirname(root)
            report = dict(mode=mode, path=root, previous=None)
        else:
            root = os.path.abspath(cfg.media_scratch_dir)
            parent = None
            report = dict(mode=mode, path=root)
        if self.check_mode:
            return report
        started = time.monotonic()
        if mode == "swap":
            target = tempfile.mkdtemp(prefix=".%s.restore-" % os.path.basename(root), dir=parent)
        else:
            os.makedirs(root, exist_ok=True)
            target = root
        self.extracted = target if mode == "swap" else None
        pipeline = Pipeline()
        try:
            stream = self.source(pipeline, path, identity)
            pipeline.add(Proc("tar -x", ["tar", "-x", "--no-same-owner", "-f", "-", "-C", target], stdin=stream,
                              cwd="/"))
            stream.close()
            problems = []
            for proc in pipeline.procs:
                code = proc.wait()
                if code != 0:
                    problems.append(proc.failure(code))
            if problems:
                raise BackupError("extracting media of set %s into %s failed%s: %s"
                                  % (manifest["set_id"], target, ", the live media were not touched"
                                     if mode == "swap" else "", "; ".join(problems)))
        finally:
            pipeline.close()
        files, size = media_estimate(target)
        if expected and (files, size) != (expected.get("files"), expected.get("bytes")):
            raise BackupError("media of set %s extracted into %s hold %d files / %d bytes, the manifest says %s / %s"
                              % (manifest["set_id"], target, files, size, expected.get("files"), expected.get("bytes")))
        uid = gid = None
        if mode == "swap" and os.path.isdir(root):
            st = os.stat(root)
            uid, gid = st.st_uid, st.st_gid
            os.chmod(target, stat.S_IMODE(st.st_mode))
        if cfg.media_owner:
            uid = pwd.getpwnam(cfg.media_owner).pw_uid
        if cfg.media_group:
            gid = grp.getgrnam(cfg.media_group).gr_gid
        if (uid is not None or gid is not None) and os.geteuid() == 0:
            uid = -1 if uid is None else uid
            gid = -1 if gid is None else gid
            os.lchown(target, uid, gid)
            for top, dirs, names in os.walk(target):
                for name in dirs + names:
                    os.lchown(os.path.join(top, name), uid, gid)
        report.update(files=files, bytes=size, extracted_into=target)
        self.timer.mark("media_restore", started)
        return report

    def swap_media(self, report: dict) -> None:
        root, new = report["path"], report["extracted_into"]
        previous = None
        if os.path.lexists(root):
            previous = "%s.before-%s" % (root, self.stamp)
            os.rename(root, previous)
        try:
            os.rename(new, root)
        except OSError as exc:
            if previous:
                os.rename(previous, root)
            raise BackupError("cannot move the restored media %s to %s (%s); the live media were put back"
                              % (new, root, exc))
        self.extracted = None
        report["previous"] = previous
        report.pop("extracted_into", None)

    # -- the whole run
    def run(self) -> dict:
        cfg = self.cfg
        validate(cfg, "restore")
        store = Store(cfg)
        store.check_bucket()
        started = time.monotonic()
        sets = scan_sets(store)
        chosen = pick_set(store, sets, cfg.backup_set)
        manifest = chosen["manifest"]
        set_id = chosen["set_id"]
        objects = {o["name"].split(".")[0]: o for o in manifest["objects"]}
        want_db = cfg.db_restore_mode != "skip"
        want_media = cfg.media_restore_mode != "skip"
        if want_media and "media" not in objects:
            raise BackupError("backup set %s holds no media (it was made without media_root): use "
                              "media_restore_mode=skip" % set_id)
        needed = [objects["db"]] if want_db else []
        if want_media:
            needed.append(objects["media"])
        self.timer.mark("select", started)
        result = dict(changed=bool(needed), set_id=set_id, created_at=manifest["created_at"],
                      age_seconds=chosen.get("age_seconds"), release_id=manifest.get("release_id"),
                      encrypted=bool(manifest.get("encryption")),
                      objects=[dict(key=o["key"], size=o["size"]) for o in needed], warnings=self.warnings,
                      database=dict(mode="skip"), media=dict(mode="skip"))
        if want_db:
            self.pg = Postgres(cfg, self.warnings)
        needs = [(cfg.download_dir, sum(o["size"] for o in needed), "the downloaded objects")]
        if want_media:
            where = os.path.dirname(os.path.realpath(cfg.media_root)) if cfg.media_restore_mode == "swap" else \
                self._existing_parent(cfg.media_scratch_dir)
            needs.append((where, manifest["media"]["bytes"], "the extracted media"))
        result["space"] = self.space_check(needs)
        if want_db and cfg.db_restore_mode in ("swap", "scratch"):
            self.check_data_directory(manifest["database"].get("size_bytes") or 0)
        self.workdir = tempfile.mkdtemp(prefix="django-restore-%s-" % set_id, dir=cfg.download_dir)
        try:
            identity = self.identity_file(manifest) if needed else None
            if self.check_mode:
                if want_db:
                    result["database"] = self.restore_db(manifest, None, None)
                if want_media:
                    result["media"] = self.restore_media(manifest, None, None)
                result["would_download"] = [o["key"] for o in needed]
                return result
            # 1. every object downloaded and verified before anything is restored
            started = time.monotonic()
            paths = {}
            downloaded = []
            for kind in ("db", "media"):
                if (kind == "db" and want_db) or (kind == "media" and want_media):
                    obj = objects[kind]
                    paths[kind] = os.path.join(self.workdir, obj["name"])
                    downloaded.append(store.download(obj["key"], paths[kind], obj["size"], obj["sha256"]))
            self.timer.mark("download", started)
            result["downloaded"] = downloaded
            result["download_dir"] = self.workdir if cfg.keep_download else cfg.download_dir
            # 2. restore next to the live data
            if want_db:
                result["database"] = self.restore_db(manifest, paths["db"], identity)
            if want_media:
                result["media"] = self.restore_media(manifest, paths["media"], identity)
            # 3. swap in
            started = time.monotonic()
            if want_db and cfg.db_restore_mode == "swap":
                self.swap_db(result["database"])
            if want_media and cfg.media_restore_mode == "swap":
                self.swap_media(result["media"])
            self.timer.mark("swap", started)
            self.created_db = None
            return result
        finally:
            problems = self.cleanup(cfg.keep_download)
            result["timings"] = self.timer.total()
            current = sys.exc_info()[1]
            if problems and current is None:
                self.warnings.extend(problems)
            elif problems and isinstance(current, BackupError):
                raise BackupError("%s; cleaning up failed too: %s" % (current, "; ".join(problems))) from None

    @staticmethod
    def _existing_parent(path: str) -> str:
        path = os.path.abspath(path)
        while not os.path.isdir(path):
            path = os.path.dirname(path)
        return path

    def cleanup(self, keep_download: bool) -> list[str]:
        """Drop the half-restored database, remove the extraction and the downloads; returns what failed."""
        problems = []
        if self.created_db and self.cfg.db_restore_mode in ("swap", "scratch"):
            try:
                admin = self.admin()
                try:
                    self.drop_db(admin.cursor(), self.created_db)
                finally:
                    admin.close()
            except Exception as exc:
                problems.append("could not drop the partial restore database %s: %s" % (self.created_db, exc))
        if self.extracted and os.path.isdir(self.extracted):
            shutil.rmtree(self.extracted, ignore_errors=True)
        if self.workdir:
            if keep_download:
                identity = os.path.join(self.workdir, "identity")
                if os.path.exists(identity):
                    os.unlink(identity)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        self.created_db = self.extracted = self.workdir = None
        return problems


def restore(cfg: Config, check_mode: bool = False) -> dict:
    return Restorer(cfg, check_mode).run()


# --- command line ------------------------------------------------------------------------------------

CLI_USAGE = """Backup sets of a Django stack on S3 (the code path of the django_backup modules).

  %(prog)s --config FILE backup  [--check]
  %(prog)s --config FILE prune   [--check]
  %(prog)s --config FILE list    [--set ID]
  %(prog)s --config FILE check-freshness --max-age-hours N
  %(prog)s --config FILE restore [--check] [-o backup_set=ID] [-o db_restore_mode=scratch ...]

FILE is a JSON object with the modules' option names (s3_bucket, db_name, media_root, ...).
-o KEY=VALUE overrides one of them (VALUE is read as JSON when it parses, else as a string).
The result is printed as one JSON object on stdout, with the run's peak RSS; on failure the
message goes to stderr and the exit status is 1 (2 for usage errors).
"""


def load_config(path: str, overrides: list[str]) -> dict:
    try:
        with open(path) as handle:
            params = json.load(handle)
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise BackupError("cannot read the config file %s: %s" % (path, exc.strerror))
    except ValueError as exc:
        raise BackupError("the config file %s is not valid JSON: %s" % (path, exc))
    if not isinstance(params, dict):
        raise BackupError("the config file %s must hold a JSON object of options" % path)
    secret = [k for k in ("s3_secret_key", "s3_session_token", "db_password", "age_identity") if params.get(k)]
    if secret and mode & 0o077 and mode & 0o004:
        sys.stderr.write("warning: %s holds %s but is readable by every user (chmod 0600 it)\n"
                         % (path, ", ".join(secret)))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise BackupError("-o %r: expected KEY=VALUE" % item)
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def cli_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="django_stack_backup", description=CLI_USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON file of options (the modules' option names)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="override one option of the config file")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name in ("backup", "prune", "restore", "list", "check-freshness"):
        commands[name] = sub.add_parser(name)
        commands[name].add_argument("-o", "--option", action="append", default=[], dest="sub_option",
                                    metavar="KEY=VALUE", help="override one option of the config file")
    for name in ("backup", "prune", "restore"):
        commands[name].add_argument("--check", action="store_true", help="report what would be done, change nothing")
    commands["list"].add_argument("--set", dest="backup_set", help="also print the manifest of this set (or 'latest')")
    commands["check-freshness"].add_argument("--max-age-hours", type=float, required=True)
    args = parser.parse_args(argv)
    args.option += args.sub_option
    try:
        with handle_signals():
            cfg = make_config(load_config(args.config, args.option))
            if args.command == "backup":
                result = backup(cfg, check_mode=args.check)
            elif args.command == "prune":
                validate(cfg, "prune")
                result = prune(cfg, check_mode=args.check)
            elif args.command == "list":
                result = info(cfg, args.backup_set)
            elif args.command == "check-freshness":
                result = check_freshness(cfg, args.max_age_hours)
            else:
                result = restore(cfg, check_mode=args.check)
    except BackupError as exc:
        sys.stderr.write("django_stack_backup %s: %s\n" % (args.command, exc))
        sys.stderr.flush()
        return 1
    except Exception as exc:  # a bug: say so, with the traceback, and still exit non-zero
        import traceback
        sys.stderr.write("django_stack_backup %s: unexpected error %s: %s\n%s"
                         % (args.command, type(exc).__name__, exc, traceback.format_exc()))
        sys.stderr.flush()
        return 1
    result["peak_rss_kb"] = peak_rss_kb()
    result["command"] = args.command
    sys.stdout.write(json.dumps(result, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = cli_main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # daemon threads stuck on a dead connection must not delay the exit
