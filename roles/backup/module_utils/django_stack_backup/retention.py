# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Retention: grandfather-father-son over the complete sets; incomplete sets and unfinished multipart
uploads go once they are older than the grace period (younger ones may belong to a running backup)."""

from __future__ import annotations

import datetime as dt

from .config import Config
from .errors import BackupError
from .sets import scan_sets
from .store import Store
from .util import MARKER, SET_ID_RE, iso, set_time, utcnow


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
    unfinished = [s for s in sets if not s["complete"] and not s.get("suspect")]
    stale = [s["set_id"] for s in unfinished if now - set_time(s["set_id"]) > grace]
    young = [s["set_id"] for s in unfinished if now - set_time(s["set_id"]) <= grace]
    suspect = [s["set_id"] for s in sets if s.get("suspect")]
    return dict(kept=kept, prune=prune, incomplete=stale, incomplete_within_grace=young, suspect=suspect)


def stale_uploads(store: Store, cfg: Config, now: dt.datetime) -> list[dict]:
    """Multipart uploads under the prefix older than the grace period."""
    grace = dt.timedelta(hours=cfg.incomplete_grace_hours)
    stale = []
    for upload in store.multipart_uploads():
        # Some stores report a meaningless Initiated time: the set id in the key dates the upload too.
        started = [upload["Initiated"].astimezone(dt.timezone.utc)] if upload.get("Initiated") else []
        set_id = upload["Key"][len(store.base()):].split("/", 1)[0]
        if SET_ID_RE.match(set_id):
            started.append(set_time(set_id))
        if not started or now - max(started) > grace:
            stale.append(dict(key=upload["Key"], upload_id=upload["UploadId"],
                              initiated=iso(max(started)) if started else None))
    return stale


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
    """Apply retention (or, in check mode, say what it would remove). EXTRA_SET: a set to count as if it
    were listed (the one a backup in check mode would make)."""
    now = utcnow()
    store = store or Store(cfg)
    sets = scan_sets(store, now)
    if extra_set:
        sets = [extra_set] + sets
    plan = plan_retention(sets, cfg, now)
    uploads = stale_uploads(store, cfg, now)
    warnings = ["backup set %s is dated in the future of this clock (%s): not counted, restored or pruned; check "
                "the clock of the server that wrote it, and delete it by hand if it was planted" % (set_id, iso(now))
                for set_id in plan["suspect"]]
    result = dict(kept=plan["kept"], incomplete_within_grace=plan["incomplete_within_grace"], suspect=plan["suspect"],
                  retention=dict(keep_daily=cfg.keep_daily, keep_weekly=cfg.keep_weekly,
                                 keep_monthly=cfg.keep_monthly, incomplete_grace_hours=cfg.incomplete_grace_hours))
    if warnings:
        result["warnings"] = warnings
    if check_mode:
        result.update(would_prune=plan["prune"], would_remove_incomplete=plan["incomplete"],
                      would_abort_uploads=uploads, pruned=[], removed_incomplete=[], aborted_uploads=[])
        result["changed"] = bool(plan["prune"] or plan["incomplete"] or uploads)
        return result
    for set_id in plan["prune"] + plan["incomplete"]:
        delete_set(store, set_id)
    aborted = []
    for upload in uploads:
        problem = store.abort(upload["key"], upload["upload_id"])
        if problem:
            raise BackupError(problem)
        aborted.append(upload)
    result.update(pruned=plan["prune"], removed_incomplete=plan["incomplete"], aborted_uploads=aborted,
                  would_prune=[], would_remove_incomplete=[], would_abort_uploads=[])
    result["changed"] = bool(plan["prune"] or plan["incomplete"] or aborted)
    return result
