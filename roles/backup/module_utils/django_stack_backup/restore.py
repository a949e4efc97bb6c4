# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""One restore: pick a complete set, check the free space, download every object it needs and check
its SHA-256 before anything is restored, restore the database and the media next to the live ones
(restore_db, restore_media), and only then swap both in. On failure, what was made is removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from . import media_s3
from .config import Config, validate
from .errors import BackupError
from .postgres import Postgres
from .restore_db import DatabaseRestore
from .restore_media import MediaRestore
from .sets import pick_set, scan_sets
from .store import Store
from .util import MIB, Timer, human, utcnow


def restore(cfg: Config, check_mode: bool = False) -> dict:
    return Restorer(cfg, check_mode).run()


class Restorer:
    def __init__(self, cfg: Config, check_mode: bool):
        self.cfg = cfg
        self.check_mode = check_mode
        self.warnings = []
        self.timer = Timer()
        self.stamp = utcnow().strftime("%Y%m%d%H%M%S")
        self.database = None  # DatabaseRestore, unless db_restore_mode=skip
        self.media = None  # MediaRestore, unless media_restore_mode=skip
        self.workdir = None

    def run(self) -> dict:
        cfg = self.cfg
        validate(cfg, "restore")
        store = Store(cfg)
        store.check_bucket()
        chosen, objects = self.select(store)
        manifest = chosen["manifest"]
        result = dict(changed=bool(objects), set_id=chosen["set_id"], created_at=manifest["created_at"],
                      age_seconds=chosen.get("age_seconds"), release_id=manifest.get("release_id"),
                      encrypted=bool(manifest.get("encryption")),
                      objects=[dict(key=o["key"], size=o["size"]) for o in objects.values()], warnings=self.warnings,
                      database=dict(mode="skip"), media=dict(mode="skip"))
        if cfg.db_restore_mode != "skip":
            pg = Postgres(cfg, self.warnings)
            self.database = DatabaseRestore(cfg, pg, self.timer, self.warnings, self.stamp, self.check_mode)
        if cfg.media_restore_mode != "skip":
            self.media = MediaRestore(cfg, self.timer, self.stamp, self.check_mode)
            if cfg.media_restore_mode == "swap" and cfg.media_s3_bucket:
                media_s3.check_versioning(cfg)
        if self.database and "db" in objects:
            self.database.check_server_version(manifest)
        if self.database and cfg.db_restore_mode in ("swap", "scratch"):
            self.database.check_access()
        result["space"] = self.space_check(manifest, objects)
        if self.database and cfg.db_restore_mode in ("swap", "scratch"):
            self.database.check_data_directory(manifest["database"].get("size_bytes") or 0)
        self.workdir = tempfile.mkdtemp(prefix="django-restore-%s-" % chosen["set_id"], dir=cfg.download_dir)
        try:
            identity = self.identity(manifest) if objects else None
            if self.check_mode:
                self.restore_next_to_live(result, manifest, {}, identity)
                result["would_download"] = [o["key"] for o in objects.values()]
                return result
            paths = self.download(store, objects, result)
            self.restore_next_to_live(result, manifest, paths, identity)
            self.swap_in(result, manifest)
            return result
        finally:
            problems = self.cleanup(cfg.keep_download)
            result["timings"] = self.timer.total()
            current = sys.exc_info()[1]
            if problems and current is None:
                self.warnings.extend(problems)
            elif problems and isinstance(current, BackupError):
                raise BackupError("%s; cleaning up failed too: %s" % (current, "; ".join(problems))) from None

    def select(self, store: Store) -> tuple[dict, dict]:
        """The set to restore and the objects of it this restore needs ({"db": ..., "media": ...})."""
        cfg = self.cfg
        started = time.monotonic()
        chosen = pick_set(store, scan_sets(store), cfg.backup_set)
        stored = {o["name"].split(".")[0]: o for o in chosen["manifest"]["objects"]}
        if cfg.media_restore_mode != "skip" and "media" not in stored:
            raise BackupError("backup set %s holds no media (it was made without media_root): use "
                              "media_restore_mode=skip" % chosen["set_id"])
        objects = {}
        if cfg.db_restore_mode != "skip":
            objects["db"] = stored["db"]
        if cfg.media_restore_mode != "skip":
            objects["media"] = stored["media"]
        self.timer.mark("select", started)
        return chosen, objects

    def space_check(self, manifest: dict, objects: dict) -> list[dict]:
        """The downloads and the extracted media, summed per filesystem; a clear error when they cannot fit."""
        cfg = self.cfg
        needs = [(cfg.download_dir, sum(o["size"] for o in objects.values()), "the downloaded objects")]
        if self.media:
            if cfg.media_restore_mode == "swap":
                where = cfg.download_dir if cfg.media_s3_bucket else os.path.dirname(os.path.realpath(cfg.media_root))
            else:
                where = self._existing_parent(cfg.media_scratch_dir)
            needs.append((where, manifest["media"]["bytes"], "the extracted media"))
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

    @staticmethod
    def _existing_parent(path: str) -> str:
        path = os.path.abspath(path)
        while not os.path.isdir(path):
            path = os.path.dirname(path)
        return path

    def identity(self, manifest: dict) -> str | None:
        """age_identity, checked against the set's recipients, when the set is encrypted. It stays in
        this process's memory: age gets it through a pipe (pipeline.decrypted), never from a file."""
        if not manifest.get("encryption"):
            return None
        recipients = manifest["encryption"].get("recipients", [])
        if not self.cfg.age_identity:
            raise BackupError("backup set %s is encrypted with age (recipients %s): give age_identity, the private "
                              "key of one of them" % (manifest["set_id"], ", ".join(recipients)))
        if not shutil.which("age"):
            raise BackupError("backup set %s is encrypted but the age program is not installed (apt-get install age)"
                              % manifest["set_id"])
        if "AGE-SECRET-KEY-1" in self.cfg.age_identity and shutil.which("age-keygen"):
            proc = subprocess.run(["age-keygen", "-y"], input=self.cfg.age_identity.strip() + "\n",
                                  capture_output=True, text=True, check=False)
            mine = set(proc.stdout.split())
            if proc.returncode == 0 and not mine & set(recipients):
                raise BackupError("age_identity (recipient %s) is not one the set %s was encrypted to (%s)"
                                  % (", ".join(sorted(mine)), manifest["set_id"], ", ".join(recipients)))
        return self.cfg.age_identity

    def download(self, store: Store, objects: dict, result: dict) -> dict:
        """Every object downloaded and verified before anything is restored; their paths."""
        started = time.monotonic()
        paths = {}
        downloaded = []
        for kind, obj in objects.items():
            paths[kind] = os.path.join(self.workdir, obj["name"])
            downloaded.append(store.download(obj["key"], paths[kind], obj["size"], obj["sha256"]))
        self.timer.mark("download", started)
        result["downloaded"] = downloaded
        result["download_dir"] = self.workdir if self.cfg.keep_download else self.cfg.download_dir
        return paths

    def restore_next_to_live(self, result: dict, manifest: dict, paths: dict, identity: str | None) -> None:
        if self.database:
            result["database"] = self.database.restore(manifest, paths.get("db"), identity)
        if self.media:
            result["media"] = self.media.restore(manifest, paths.get("media"), identity)

    def swap_in(self, result: dict, manifest: dict) -> None:
        started = time.monotonic()
        bucket = self.media and self.cfg.media_restore_mode == "swap" and self.cfg.media_s3_bucket
        if bucket:
            # Before the database: an upload that fails leaves the live database as it was, and
            # deletes nothing (uploads only add keys, or restore the bytes of those Django never
            # overwrites).
            self.media.upload(result["media"], manifest)
        if self.database and self.cfg.db_restore_mode == "swap":
            self.database.swap(result["database"])
        if bucket:
            self.media.delete_extra(result["media"], manifest)
        elif self.media and self.cfg.media_restore_mode == "swap":
            self.media.swap(result["media"])
        self.timer.mark("swap", started)
        if self.database:
            self.database.keep()

    def cleanup(self, keep_download: bool) -> list[str]:
        """Drop the half-restored database, remove the extraction and the downloads; returns what failed."""
        problems = []
        if self.database:
            problem = self.database.discard()
            if problem:
                problems.append(problem)
        if self.media:
            self.media.discard()
        if self.workdir and not keep_download:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None
        return problems
