# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""One backup set: the database (pg_dump of one exported snapshot, with the row counts and migrations
of that snapshot), the media (tar), each streamed into S3, then the manifest and, last, the marker;
then retention. In check mode, what would be uploaded and pruned, with nothing changed."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import threading
import time

from . import media_s3
from .config import Config, validate
from .errors import BackupError
from .pipeline import stream_upload
from .postgres import Postgres, applied_migrations, count_rows, list_tables
from .retention import prune
from .store import Store
from .util import FORMAT, FORMAT_VERSION, MANIFEST, MARKER, MIB, Timer, human, iso, media_estimate, new_set_id, \
    tail, utcnow


def backup(cfg: Config, check_mode: bool = False) -> dict:
    validate(cfg, "backup")
    run = BackupRun(cfg)
    conn = run.pg.connect(cfg.db_name)
    try:
        if check_mode:
            return plan_backup(run, conn)
        database = dump_database(run, conn)
        media = archive_media(run) if cfg.media_root else archive_bucket(run) if cfg.media_s3_bucket else None
    finally:
        conn.close()
    result = write_manifest(run, database, media)
    if run.retention:
        result["retention"] = apply_retention(run)
        run.warnings.extend(result["retention"].pop("warnings", []))
    timings = run.timer.total()
    seconds = max(timings["total"], 0.001)
    result.update(timings=timings, throughput_mb_s=round(result["size"] / MIB / seconds, 1))
    return result


class BackupRun:
    """What one backup works with: its set id, the bucket (checked), the database server, and the
    objects uploaded so far."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.warnings = []
        self.timer = Timer()
        precise = dt.datetime.now(dt.timezone.utc)
        self.now = precise.replace(microsecond=0)
        self.set_id = new_set_id(precise)
        self.store = Store(cfg)
        self.store.check_bucket()
        self.pg = Postgres(cfg, self.warnings)
        self.encrypted = bool(cfg.encrypt_recipients)
        self.retention = any(cfg[k] is not None for k in ("keep_daily", "keep_weekly", "keep_monthly"))
        self.objects = []

    def name(self, base: str) -> str:
        return base + (".age" if self.encrypted else "")

    def key(self, name: str) -> str:
        return self.store.key(self.set_id, name)

    def uploaded(self, name: str, stored: dict) -> None:
        stored.update(name=name, encryption="age" if self.encrypted else None,
                      sse=None if self.cfg.s3_sse == "none" else self.cfg.s3_sse)
        self.objects.append(stored)

    def result(self, **extra) -> dict:
        cfg = self.cfg
        return dict(changed=True, set_id=self.set_id, bucket=cfg.s3_bucket, prefix=cfg.s3_prefix,
                    endpoint=self.store.endpoint, **extra)


def release_of(cfg: Config) -> str | None:
    if cfg.release_id:
        return cfg.release_id
    if cfg.release_path:
        return os.path.basename(os.path.realpath(cfg.release_path).rstrip("/")) or None
    return None


def effective_part_size(cfg: Config, estimate: int) -> int:
    """The configured part size, raised when the estimate would need more than 9000 parts."""
    part = cfg.s3_part_size_mb * MIB
    if estimate > part * 9000:
        part = -(-estimate // 9000 // MIB) * MIB
    return part


# --- check mode ---------------------------------------------------------------------------------------

def plan_backup(run: BackupRun, conn) -> dict:
    """The objects a real run would upload, with estimated sizes, and what retention would prune."""
    cfg = run.cfg
    cur = conn.cursor()
    cur.execute("SELECT pg_database_size(current_database()), current_setting('server_version')")
    db_size, server_version = cur.fetchone()
    tables = list_tables(cur)
    migrations = applied_migrations(cur)
    conn.rollback()
    pg_dump = run.pg.tool("pg_dump")
    media = media_estimate(cfg.media_root) if cfg.media_root else media_s3.estimate(cfg) if cfg.media_s3_bucket \
        else None
    where = cfg.media_root or "s3://%s" % cfg.media_s3_bucket
    objects = [dict(key=run.key(run.name("db.dump")), estimated_size=db_size,
                    source="pg_dump -Fc of %s (%s on the server)" % (cfg.db_name, human(db_size)))]
    if media:
        objects.append(dict(key=run.key(run.name("media.tar")), estimated_size=media[1],
                            source="tar of %s (%d files, %s)" % (where, media[0], human(media[1]))))
    objects += [dict(key=run.key(MANIFEST), estimated_size=None, source="manifest"),
                dict(key=run.key(MARKER), estimated_size=64, source="completion marker")]
    result = run.result(
        objects=objects, would_upload=[o["key"] for o in objects],
        database=dict(name=cfg.db_name, server_version=server_version, size=db_size, tables=len(tables),
                      applied_migrations=len(migrations or []), pg_dump=pg_dump),
        media=dict(root=cfg.media_root, bucket=cfg.media_s3_bucket, files=media[0], bytes=media[1]) if media else None,
        encryption=dict(type="age", recipients=cfg.encrypt_recipients) if run.encrypted else None,
        release_id=release_of(cfg), warnings=run.warnings)
    if run.retention:
        pending = dict(set_id=run.set_id, complete=True)
        result["retention"] = prune(cfg, check_mode=True, store=run.store, extra_set=pending)
        run.warnings.extend(result["retention"].pop("warnings", []))
    return result


# --- the database -------------------------------------------------------------------------------------

class RowCounter:
    """Counts the rows of every table in the exported snapshot's transaction while pg_dump runs; its
    error is kept for the dump's callback to raise."""

    def __init__(self, conn, tables: list):
        self.conn, self.tables = conn, tables
        self.counts = {}
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="row-counts")

    def _run(self):
        try:
            self.counts.update(count_rows(self.conn.cursor(), self.tables, savepoint=True))
        except BaseException as exc:  # reported by the dump's callback
            self.errors.append(exc)

    def start(self):
        self.thread.start()

    def raise_error(self):
        if self.errors:
            raise self.errors[0]

    def finish(self) -> list[str]:
        """Wait for the counts; the errors, as text."""
        self.thread.join()
        return [str(exc) for exc in self.errors]

    def stop(self):
        if self.thread.is_alive():
            self.conn.cancel()  # a failed dump: stop the row counts before closing their connection
            self.thread.join(10)


def dump_database(run: BackupRun, conn) -> dict:
    """pg_dump -Fc [| age] into db.dump[.age]; the manifest's `database` entry."""
    cfg, pg = run.cfg, run.pg
    cur = conn.cursor()
    # One snapshot for the dump, the row counts, the migrations: they agree exactly.
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    cur.execute("SELECT pg_export_snapshot(), current_setting('server_version'), "
                "pg_database_size(current_database())")
    snapshot, server_version, db_size = cur.fetchone()
    migrations = applied_migrations(cur)
    counter = RowCounter(conn, list_tables(cur))
    pg_dump = pg.tool("pg_dump")
    version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=False).stdout.strip()

    def on_part(pipeline, number, size):
        counter.raise_error()  # no need to upload the rest of a dump whose manifest cannot be written
        if number is None:
            problems = pipeline.failures()  # pg_dump (and age) must have succeeded before the upload completes
            problems += counter.finish()
            if problems:
                raise BackupError("dump of database %s failed: %s" % (cfg.db_name, "; ".join(problems)))

    name = run.name("db.dump")
    started = time.monotonic()
    try:
        stored = stream_upload(run.store, run.key(name), effective_part_size(cfg, db_size), "pg_dump",
                               [pg_dump, "-Fc", "--snapshot=" + snapshot] + pg.conn_args(cfg.db_name),
                               cfg.encrypt_recipients, on_part, on_start=counter.start, **pg.popen_kwargs())
    finally:
        counter.stop()
    conn.rollback()
    run.timer.mark("database", started)
    run.uploaded(name, stored)
    return dict(name=cfg.db_name, server_version=server_version, pg_dump_version=version, size_bytes=db_size,
                snapshot=snapshot, applied_migrations=migrations, tables=counter.counts,
                rows_total=sum(counter.counts.values()))


# --- the media ----------------------------------------------------------------------------------------

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


def archive_media(run: BackupRun) -> dict:
    """tar of media_root [| age] into media.tar[.age]; the manifest's `media` entry."""
    cfg = run.cfg
    started = time.monotonic()
    listing = TarListing()
    estimate = media_estimate(cfg.media_root)[1]

    def on_part(pipeline, number, size):
        if number is not None:
            return

        def files_changed(proc, rc) -> bool:
            # GNU tar: 1 = some file changed while it was read (live uploads); the rest is fine
            if proc is not pipeline.producer or rc != 1:
                return False
            run.warnings.append("tar: some media files changed while they were archived: %s" % tail(proc.lines, 5))
            return True

        problems = pipeline.failures(accept=files_changed)
        if problems:
            raise BackupError("archiving media_root %s failed: %s" % (cfg.media_root, "; ".join(problems)))

    name = run.name("media.tar")
    stored = stream_upload(run.store, run.key(name), effective_part_size(cfg, estimate), "tar",
                           ["tar", "-C", cfg.media_root, "-cvvf", "-", "."], cfg.encrypt_recipients, on_part,
                           parser=listing, cwd="/")
    run.timer.mark("media", started)
    run.uploaded(name, stored)
    return dict(root=cfg.media_root, files=listing.files, bytes=listing.bytes)


def archive_bucket(run: BackupRun) -> dict:
    """Every object of media_s3_bucket [| age] into media.tar[.age]; the manifest's `media` entry,
    with each object's key, size and SHA-256."""
    started = time.monotonic()
    files, size = media_s3.estimate(run.cfg)
    name = run.name("media.tar")
    stored, media = media_s3.archive_bucket(run.cfg, run.store, run.key(name),
                                            effective_part_size(run.cfg, size + 1024 * (files + 2)))
    run.timer.mark("media", started)
    run.uploaded(name, stored)
    return media


# --- completion ---------------------------------------------------------------------------------------

def write_manifest(run: BackupRun, database: dict, media: dict | None) -> dict:
    """The manifest, then the marker that holds its SHA-256: from now on the set is complete."""
    cfg = run.cfg
    manifest = dict(
        format=FORMAT, format_version=FORMAT_VERSION, set_id=run.set_id, created_at=iso(run.now),
        completed_at=iso(utcnow()), host=socket.gethostname(), release_id=release_of(cfg), database=database,
        media=media,
        encryption=dict(type="age", recipients=[r.strip() for r in cfg.encrypt_recipients]) if run.encrypted else None,
        objects=[dict(key=o["key"], name=o["name"], size=o["size"], sha256=o["sha256"], encryption=o["encryption"],
                      sse=o["sse"], parts=o["parts"], etag=o["etag"]) for o in run.objects],
    )
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    started = time.monotonic()
    manifest_info = run.store.put_small(run.key(MANIFEST), raw, "application/json")
    run.store.put_small(run.key(MARKER), (manifest_info["sha256"] + "\n").encode(), "text/plain")
    run.timer.mark("manifest", started)
    return run.result(
        objects=[dict(key=o["key"], size=o["size"], sha256=o["sha256"], parts=o["parts"]) for o in run.objects]
        + [manifest_info], size=sum(o["size"] for o in run.objects) + manifest_info["size"],
        manifest=manifest, warnings=run.warnings)


def apply_retention(run: BackupRun) -> dict:
    try:
        return prune(run.cfg, check_mode=False, store=run.store)
    except BackupError as exc:
        raise BackupError("backup set %s is uploaded and complete, but applying retention failed: %s"
                          % (run.set_id, exc)) from None
