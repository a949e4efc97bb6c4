#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see the project's LICENSE)
"""The catalog of a site's point-in-time-recovery archive, and the base backup a restore starts from."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pitr_base_backups
short_description: List the base backups of a barman-cloud archive and choose the one a point-in-time restore starts from
description:
  - "Reads the archive that C(barman-cloud-wal-archive) and C(barman-cloud-backup) write under O(s3_prefix) in
    O(s3_bucket): one lineage (a barman server name) per PostgreSQL cluster, named C(pg-<system identifier>) by the
    pitr role, each with its base backups (C(base/<id>/backup.info)) and its WAL (C(wals/))."
  - Chooses the base backup a restore to O(target_time) starts from, the newest complete one that ended before that
    moment and was taken by the PostgreSQL major version given, and reports the newest archived WAL segment (when it
    was uploaded bounds the newest recoverable moment).
  - "Why a module (a domain gap): C(barman-cloud-backup-list) lists one lineage it must be told the name of, and says
    nothing of the WAL's age; a restore onto a fresh server knows neither. Read-only, so it runs in check mode as it
    does otherwise."
  - Needs C(python3-boto3) on the host (a dependency of C(barman-cli-cloud)) and a key that may list and read the
    prefix, the restore key, not the server's archive key, which may only add objects.
version_added: "1.0.0"
author: django-stack maintainers
attributes:
  check_mode:
    support: full
    details: Nothing is ever changed.
  diff_mode:
    support: none
requirements:
  - Python 3.9 or later with boto3 (Debian C(python3-boto3), a dependency of C(barman-cli-cloud)).
options:
  s3_bucket: {description: Bucket of the archive., type: str, required: true}
  s3_prefix: {description: Key prefix of the site's archive (the lineages are the next level)., type: str, required: true}
  s3_endpoint_url: {description: Endpoint URL of an S3-compatible store; empty means AWS S3., type: str, default: ""}
  s3_region: {description: Region of the bucket; empty lets boto3 decide., type: str, default: ""}
  s3_addressing_style: {description: URL style of the requests., type: str, default: auto, choices: [auto, path, virtual]}
  s3_access_key: {description: Access key id; empty uses boto3's default chain., type: str, default: ""}
  s3_secret_key: {description: Its secret key., type: str, default: ""}
  target_time:
    description:
      - C(latest), or the moment to restore to, ISO 8601 with a time zone (C(2026-12-06T14:03:00Z),
        C(2026-12-06 15:03:00+01:00)).
    type: str
    default: latest
  postgresql_version:
    description: Major version of the PostgreSQL that will replay the backup (0, any); a base backup of another major cannot be.
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Choose the base backup of a restore to 14:03 UTC
  pitr_base_backups:
    s3_bucket: acme-backups
    s3_prefix: django-stack-pitr/demoapp
    s3_endpoint_url: https://minio.internal:9000
    s3_access_key: "{{ vault_pitr_restore_s3_access_key }}"
    s3_secret_key: "{{ vault_pitr_restore_s3_secret_key }}"
    target_time: "2026-12-06T14:03:00Z"
    postgresql_version: 17
  register: catalog
"""

RETURN = r"""
backups:
  description: Every base backup found, oldest first.
  type: list
  elements: dict
  returned: always
  contains:
    lineage: {description: The barman server name (pg-<system identifier>)., type: str}
    backup_id: {description: The backup's id., type: str}
    status: {description: barman's status (DONE when complete)., type: str}
    end_time: {description: When it ended (ISO 8601, UTC)., type: str}
    version: {description: Major version of the PostgreSQL that took it., type: int}
    timeline: {description: Its timeline., type: int}
chosen:
  description: The base backup a restore to target_time starts from (an element of backups), or null.
  type: dict
  returned: always
reason:
  description: Why none was chosen, or empty.
  type: str
  returned: always
target_time:
  description: The moment asked for, ISO 8601 in UTC, or latest.
  type: str
  returned: always
newest_wal:
  description: >-
    The newest archived WAL segment of the chosen backup's lineage (name, uploaded_at, age_seconds), or null: the
    writes after its upload are not in the archive yet.
  type: dict
  returned: always
"""

import datetime as dt

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pitr_archive import SEGMENT, S3_ERRORS, client, parse_time, prefix_of, s3_argument_spec, walk


def backup_entry(lineage: str, backup_id: str, info: dict) -> dict | None:
    try:
        end = parse_time(info["end_time"]) if info.get("end_time", "None") != "None" else None
        return {
            "lineage": lineage,
            "backup_id": backup_id,
            "status": info.get("status", ""),
            "begin_time": info.get("begin_time", ""),
            "end_time": end.isoformat() if end else None,
            "begin_wal": info.get("begin_wal", ""),
            "end_wal": info.get("end_wal", ""),
            "timeline": int(info.get("timeline", "0")),
            "version": int(info.get("version", "0")) // 10000,
            "systemid": info.get("systemid", ""),
        }
    except (KeyError, ValueError):
        return None


def choose(backups: list[dict], target: dt.datetime | None, version: int) -> tuple[dict | None, str]:
    """The newest complete backup of that major version that ended before target (any, for latest)."""
    complete = [b for b in backups if b["status"] == "DONE" and b["end_time"]]
    if not complete:
        return None, "the archive holds no complete base backup"
    usable = [b for b in complete if not version or b["version"] == version]
    if not usable:
        found = sorted({b["version"] for b in complete})
        return None, f"no base backup of PostgreSQL {version} (the archive holds base backups of {found})"
    if target is not None:
        before = [b for b in usable if parse_time(b["end_time"]) < target]
        if not before:
            return None, (f"the oldest base backup of PostgreSQL {version or usable[0]['version']} ended at "
                          f"{usable[0]['end_time']}, after {target.isoformat()}: nothing before it can be recovered")
        usable = before
    return usable[-1], ""


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            s3_argument_spec(),
            target_time=dict(type="str", default="latest"),
            postgresql_version=dict(type="int", default=0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    target = None
    if p["target_time"] != "latest":
        try:
            target = parse_time(p["target_time"])
        except ValueError:
            module.fail_json(msg=f"target_time {p['target_time']!r}: give latest or an ISO 8601 moment with a time zone "
                                 "(2026-12-06T14:03:00Z)")
        now = dt.datetime.now(dt.timezone.utc)
        if target > now:
            module.fail_json(msg=f"target_time {target.isoformat()} is in the future (it is {now.isoformat()} here)")

    s3, prefix = client(module), prefix_of(module)
    backups: list[dict] = []
    newest_wal: dict[str, dict] = {}
    try:
        for lineage, parts, obj in walk(s3, p["s3_bucket"], prefix):
            if "info" in obj:
                entry = backup_entry(lineage, parts[1], obj["info"])
                if entry:
                    backups.append(entry)
            elif parts[0] == "wals" and len(parts) == 3 and SEGMENT.match(parts[2]) and ".backup" not in parts[2]:
                seen = newest_wal.get(lineage)
                if seen is None or obj["LastModified"] > seen["_at"]:
                    newest_wal[lineage] = {"name": parts[2], "_at": obj["LastModified"]}
    except S3_ERRORS as err:
        module.fail_json(msg=f"reading s3://{p['s3_bucket']}/{prefix}: {err}")

    backups.sort(key=lambda b: (b["end_time"] or "", b["backup_id"]))
    chosen, reason = choose(backups, target, p["postgresql_version"])
    wal = newest_wal.get(chosen["lineage"]) if chosen else None
    module.exit_json(
        changed=False,
        backups=backups,
        chosen=chosen,
        reason=reason,
        target_time=target.isoformat() if target else "latest",
        newest_wal={"lineage": chosen["lineage"], "name": wal["name"],
                    "uploaded_at": wal["_at"].astimezone(dt.timezone.utc).isoformat(),
                    "age_seconds": round((dt.datetime.now(dt.timezone.utc) - wal["_at"]).total_seconds())} if wal else None,
    )


if __name__ == "__main__":
    main()
