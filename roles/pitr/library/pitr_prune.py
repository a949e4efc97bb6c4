#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see the project's LICENSE)
"""The retention of a site's point-in-time-recovery archive, tied to the backup sets' grandfather-father-son policy."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pitr_prune
short_description: Apply a grandfather-father-son retention to a barman-cloud archive, never pruning what a kept point needs
description:
  - Keeps the base backups of the archive (every lineage under O(s3_prefix), as M(pitr_base_backups) reads it) that the
    backup sets' retention would keep - the newest complete one of each of the last O(keep_daily) days,
    O(keep_weekly) ISO weeks and O(keep_monthly) months, and always the newest - and deletes the others.
  - "Keeps the WAL a kept point needs: from each kept base backup's first segment to its last (so that it can be
    restored to its end), and every segment from the oldest base backup kept for one of the last O(keep_daily) days on
    (so that any moment since that base backup can be). History files are always kept; a lineage with no complete base backup
    is left alone (its first base backup may be on its way)."
  - "Why a module (a domain gap): C(barman-cloud-backup-delete) knows a recovery window or a number of backups, not
    this retention, and it cannot keep the WAL of an older kept backup without every segment after it. It runs on the
    control node, with a key that may delete (policies/controller.json), so that the servers' keys never need to."
version_added: "1.0.0"
author: django-stack maintainers
attributes:
  check_mode:
    support: full
    details: Reports what would be deleted, and deletes nothing.
  diff_mode:
    support: none
requirements:
  - Python 3.9 or later with boto3.
options:
  s3_bucket: {description: Bucket of the archive., type: str, required: true}
  s3_prefix: {description: Key prefix of the site's archive., type: str, required: true}
  s3_endpoint_url: {description: Endpoint URL of an S3-compatible store; empty means AWS S3., type: str, default: ""}
  s3_region: {description: Region of the bucket; empty lets boto3 decide., type: str, default: ""}
  s3_addressing_style: {description: URL style of the requests., type: str, default: auto, choices: [auto, path, virtual]}
  s3_access_key: {description: Access key id (one that may delete); empty uses boto3's default chain., type: str, default: ""}
  s3_secret_key: {description: Its secret key., type: str, default: ""}
  keep_daily: {description: Newest complete base backup of each of the last N days kept (at least 1)., type: int, default: 7}
  keep_weekly: {description: Newest complete base backup of each of the last N ISO weeks kept., type: int, default: 4}
  keep_monthly: {description: Newest complete base backup of each of the last N months kept., type: int, default: 6}
"""

EXAMPLES = r"""
- name: Apply the retention from the control node
  pitr_prune:
    s3_bucket: acme-backups
    s3_prefix: django-stack-pitr/demoapp
    s3_access_key: "{{ vault_backup_prune_s3_access_key }}"
    s3_secret_key: "{{ vault_backup_prune_s3_secret_key }}"
    keep_daily: 7
  delegate_to: localhost
"""

RETURN = r"""
kept:
  description: The base backups kept (lineage/backup id), oldest first.
  type: list
  elements: str
  returned: always
pruned_backups:
  description: The base backups deleted (or that would be, in check mode).
  type: list
  elements: str
  returned: always
pruned_segments:
  description: How many WAL objects were deleted (or would be).
  type: int
  returned: always
kept_segments:
  description: How many WAL objects are kept.
  type: int
  returned: always
"""

import datetime as dt

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pitr_archive import SEGMENT, S3_ERRORS, client, prefix_of, s3_argument_spec, walk


def position(wal_name: str) -> int:
    """The segment's place in the WAL stream, whatever its timeline."""
    return int(wal_name[8:24], 16)


def end_time(info: dict) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(info.get("end_time", ""))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def begun(backup_id: str) -> dt.datetime:
    """When a base backup began: barman names it by that moment (20261206T023000, UTC)."""
    try:
        return dt.datetime.strptime(backup_id, "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return dt.datetime.now(dt.timezone.utc)


def gfs_keep(backups: list[dict], daily: int, weekly: int, monthly: int) -> set[str]:
    """The ids kept: the newest of each of the last N days, ISO weeks and months, and the newest. The
    backup role's retention applies the same rule to the backup sets; each role carries its own code,
    so that it runs alone."""
    keep: set[str] = set()
    ordered = sorted(backups, key=lambda b: b["end"], reverse=True)
    if ordered:
        keep.add(ordered[0]["key"])
    for count, bucket in ((daily, lambda d: d.date()),
                          (weekly, lambda d: tuple(d.isocalendar())[:2]),
                          (monthly, lambda d: (d.year, d.month))):
        seen: list = []
        for backup in ordered:
            slot = bucket(backup["end"])
            if slot in seen:
                continue
            seen.append(slot)
            if len(seen) > count:
                break
            keep.add(backup["key"])
    return keep


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            s3_argument_spec(),
            keep_daily=dict(type="int", default=7),
            keep_weekly=dict(type="int", default=4),
            keep_monthly=dict(type="int", default=6),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["keep_daily"] < 1 or p["keep_weekly"] < 0 or p["keep_monthly"] < 0:
        module.fail_json(msg="keep_daily must be at least 1, keep_weekly and keep_monthly at least 0")
    s3, prefix = client(module), prefix_of(module)
    now = dt.datetime.now(dt.timezone.utc)
    backups: list[dict] = []
    objects: dict[str, list[str]] = {}      # lineage -> every key
    try:
        for lineage, parts, obj in walk(s3, p["s3_bucket"], prefix):
            objects.setdefault(lineage, []).append(obj["Key"])
            if "info" in obj:
                info = obj["info"]
                backups.append({"key": f"{lineage}/{parts[1]}", "lineage": lineage, "id": parts[1],
                                "status": info.get("status", ""), "end": end_time(info),
                                "begin_wal": info.get("begin_wal", ""), "end_wal": info.get("end_wal", "")})
    except S3_ERRORS as err:
        module.fail_json(msg=f"reading s3://{p['s3_bucket']}/{prefix}: {err}")

    complete = [b for b in backups if b["status"] == "DONE" and b["end"] and SEGMENT.match(b["begin_wal"])
                and SEGMENT.match(b["end_wal"])]
    keep = gfs_keep(complete, p["keep_daily"], p["keep_weekly"], p["keep_monthly"])
    # An unfinished base backup is pruned once a day old (it never completes after that).
    pruned = {b["key"] for b in complete if b["key"] not in keep}
    pruned |= {b["key"] for b in backups if b not in complete and begun(b["id"]) < now - dt.timedelta(days=1)}
    window_start = now - dt.timedelta(days=p["keep_daily"])

    doomed: list[str] = []
    kept_segments = 0
    for lineage, keys in objects.items():
        kept = [b for b in complete if b["lineage"] == lineage and b["key"] in keep]
        if not kept:
            continue  # no complete base backup yet: nothing of it is ours to judge
        ranges = [(position(b["begin_wal"]), position(b["end_wal"])) for b in kept]
        in_window = [position(b["begin_wal"]) for b in kept if b["end"] >= window_start]
        # The window's replay starts at the oldest base backup of the window, or, when every kept one is
        # older, at the newest kept one: the lineage's newest moments stay recoverable.
        start = min(in_window) if in_window else max(position(b["begin_wal"]) for b in kept)
        for key in keys:
            rest = key[len(prefix) + len(lineage) + 1:].split("/")
            if rest[0] == "base" and len(rest) == 3:
                if f"{lineage}/{rest[1]}" in pruned:
                    doomed.append(key)
                continue
            if rest[0] != "wals" or len(rest) != 3 or not SEGMENT.match(rest[2]):
                continue  # history files, anything else: kept
            spot = position(rest[2])
            if spot >= start or any(low <= spot <= high for low, high in ranges):
                kept_segments += 1
            else:
                doomed.append(key)

    if doomed and not module.check_mode:
        try:
            for i in range(0, len(doomed), 1000):
                answer = s3.delete_objects(Bucket=p["s3_bucket"], Delete={
                    "Objects": [{"Key": k} for k in doomed[i:i + 1000]], "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    module.fail_json(msg=f"deleting {first['Key']}: {first.get('Code')} {first.get('Message')}")
        except S3_ERRORS as err:
            module.fail_json(msg=f"deleting from s3://{p['s3_bucket']}/{prefix}: {err}")
    module.exit_json(
        changed=bool(doomed),
        kept=[b["key"] for b in sorted(complete, key=lambda b: b["end"]) if b["key"] in keep],
        pruned_backups=sorted(pruned),
        pruned_segments=sum(1 for k in doomed if "/wals/" in k),
        kept_segments=kept_segments,
    )


if __name__ == "__main__":
    main()
