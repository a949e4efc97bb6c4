# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The sets under the prefix: listing them, telling complete ones from the rest, picking one to
restore (info is django_backup_info and `list`; check_freshness is `check-freshness`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from .config import Config, validate
from .errors import BackupError, MissingObject
from .store import Store
from .util import FORMAT, FORMAT_VERSION, FUTURE_TOLERANCE, MANIFEST, MARKER, SET_ID_RE, iso, set_time, utcnow


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
                    release_id=None, completed_at=None, encrypted=None, problem=None, manifest=None,
                    suspect=False)
        if created - now > FUTURE_TOLERANCE:
            # Never complete, so never restored, counted by retention or taken as fresh; never
            # pruned either (retention leaves it, and reports it): someone must look.
            info.update(suspect=True, problem="dated %.1f hours in the future of this clock (%s): a wrong clock "
                        "or a planted set; never restored, counted or pruned" % (
                            (created - now).total_seconds() / 3600.0, iso(now)))
        elif MARKER not in objs:
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


def info(cfg: Config, backup_set: str | None = None) -> dict:
    validate(cfg, "list")
    store = Store(cfg)
    store.check_bucket()
    sets = scan_sets(store)
    latest = next((s for s in sets if s["complete"]), None)
    result = dict(changed=False, bucket=cfg.s3_bucket, prefix=cfg.s3_prefix, endpoint=store.endpoint,
                  sets=[public_set(s) for s in sets], count=len(sets),
                  complete_count=sum(1 for s in sets if s["complete"]),
                  suspect=[s["set_id"] for s in sets if s["suspect"]],
                  latest_complete=public_set(latest) if latest else None)
    if backup_set:
        chosen = pick_set(store, sets, backup_set)
        result["manifest"] = chosen["manifest"]
        result["backup_set"] = chosen["set_id"]
    return result


def check_freshness(cfg: Config, max_age_hours: float, report=None) -> dict:
    """REPORT, when given, hears the newest complete set's date (Unix time, or None) and whether
    the check passes, before the check fails or returns."""
    validate(cfg, "check-freshness")
    store = Store(cfg)
    store.check_bucket()
    sets = scan_sets(store)
    latest = next((s for s in sets if s["complete"]), None)
    age_hours = round(latest["age_seconds"] / 3600.0, 2) if latest else None
    if report is not None:
        report(set_time(latest["set_id"]).timestamp() if latest else None,
               latest is not None and latest["age_seconds"] >= 0 and age_hours <= max_age_hours)
    if latest is None:
        raise BackupError("no complete backup set under %s" % store.where())
    if latest["age_seconds"] < 0:
        raise BackupError("the newest complete backup set %s under %s is dated %.2f hours in the future of this "
                          "clock: this server's clock or the set is wrong" % (latest["set_id"], store.where(), -age_hours))
    if age_hours > max_age_hours:
        raise BackupError("the newest complete backup set %s under %s is %.1f hours old (more than %s)"
                          % (latest["set_id"], store.where(), age_hours, max_age_hours))
    return dict(changed=False, latest_complete=latest["set_id"], age_hours=age_hours, max_age_hours=max_age_hours)
