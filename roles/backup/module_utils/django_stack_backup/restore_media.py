# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The media part of a restore: tar -x into a temporary sibling of media_root (swap) or into
media_scratch_dir (scratch), the file count and bytes checked against the manifest, the owner set,
then (swap) the live directory renamed out of the way and the new one renamed in."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import tempfile
import time

from . import media_s3
from .config import Config
from .errors import BackupError
from .pipeline import feed_from_file
from .util import Timer, media_estimate


class MediaRestore:
    def __init__(self, cfg: Config, timer: Timer, stamp: str, check_mode: bool):
        self.cfg, self.timer = cfg, timer
        self.stamp = stamp
        self.check_mode = check_mode
        self.extracted = None  # the temporary sibling of media_root, removed on failure

    def restore(self, manifest: dict, path: str | None, identity: str | None) -> dict:
        """The report of what was (in check mode: would be) restored where."""
        cfg = self.cfg
        mode = cfg.media_restore_mode
        bucket = mode == "swap" and bool(cfg.media_s3_bucket)
        if bucket:
            # Extracted and checked here, then put into the bucket by swap().
            root, parent = "s3://%s" % cfg.media_s3_bucket, cfg.download_dir
            report = dict(mode=mode, path=root, previous=None)
        elif mode == "swap":
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
        if bucket:
            target = tempfile.mkdtemp(prefix="media-s3-restore-", dir=parent)
        elif mode == "swap":
            target = tempfile.mkdtemp(prefix=".%s.restore-" % os.path.basename(root), dir=parent)
        else:
            os.makedirs(root, exist_ok=True)
            target = root
        self.extracted = target if mode == "swap" else None
        problems = feed_from_file(path, identity, "tar -x", ["tar", "-x", "--no-same-owner", "-f", "-", "-C", target],
                                  cwd="/")
        if problems:
            raise BackupError("extracting media of set %s into %s failed%s: %s"
                              % (manifest["set_id"], target, ", the live media were not touched"
                                 if mode == "swap" else "", "; ".join(problems)))
        files, size = self.verify(manifest, target)
        if (manifest.get("media") or {}).get("objects") is not None:
            media_s3.verify_objects(manifest, target)
        elif bucket:
            raise BackupError("set %s holds the media of a directory (no object list): it cannot be restored into "
                              "media_s3_bucket; restore it into a directory (media_root)" % manifest["set_id"])
        if not bucket:
            self.set_owner(root, target)
        report.update(files=files, bytes=size, extracted_into=target)
        self.timer.mark("media_restore", started)
        return report

    @staticmethod
    def verify(manifest: dict, target: str) -> tuple[int, int]:
        expected = manifest.get("media") or {}
        files, size = media_estimate(target)
        if expected and (files, size) != (expected.get("files"), expected.get("bytes")):
            raise BackupError("media of set %s extracted into %s hold %d files / %d bytes, the manifest says %s / %s"
                              % (manifest["set_id"], target, files, size, expected.get("files"), expected.get("bytes")))
        return files, size

    def set_owner(self, root: str, target: str) -> None:
        """media_owner/media_group, else (swap) the owner, group and mode of the live directory."""
        cfg = self.cfg
        uid = gid = None
        if cfg.media_restore_mode == "swap" and os.path.isdir(root):
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

    def upload(self, report: dict, manifest: dict) -> None:
        """media_s3_bucket: the set's objects that differ uploaded; no key deleted yet."""
        report.update(media_s3.upload_set(self.cfg, manifest, report["extracted_into"]))

    def delete_extra(self, report: dict, manifest: dict) -> None:
        """media_s3_bucket: the keys the set does not hold deleted (the bucket's versioning keeps them)."""
        report["deleted"] = media_s3.delete_extra(self.cfg, manifest)
        report["previous"] = "noncurrent versions in s3://%s (versioning)" % self.cfg.media_s3_bucket
        self.discard()
        report.pop("extracted_into", None)

    def swap(self, report: dict) -> None:
        """The live directory renamed to <media_root>.before-<time> (kept), the restored one to media_root."""
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

    def discard(self) -> None:
        """Remove the extraction that was not swapped in."""
        if self.extracted and os.path.isdir(self.extracted):
            shutil.rmtree(self.extracted, ignore_errors=True)
        self.extracted = None
