#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Restore a backup set made by django_backup: verify everything, restore next to the live data, swap in."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: django_restore
short_description: Restore a Django stack's database and media from a verified backup set on S3
description:
  - Picks a set made by M(django_backup) (O(backup_set=latest), the newest complete set, or a set id) and refuses
    an incomplete or unknown set.
  - Checks the free space of O(download_dir) (and of the media's filesystem) against the sizes in the manifest,
    downloads the objects, and verifies the size and SHA-256 of every one of them B(before) restoring anything.
    Encrypted sets are decrypted with O(age_identity) on the way into C(pg_restore) and C(tar).
  - The database is restored with C(pg_restore --exit-on-error --no-owner --role=<owner>); any error fails the task.
    The session that runs the dump's SQL is never a superuser's (C(--role) alone is a C(SET ROLE), which a dump can
    undo). When O(db_user) is a superuser, C(pg_restore) logs in over TCP (C(127.0.0.1) when O(db_host) is a
    socket) as a temporary role made for the run (no attribute, a member of the owner role only, a random password
    the server gets as a SCRAM verifier, valid one day) and dropped afterwards. Otherwise it logs in as O(db_user).
  - The row count of every table and the list of applied Django migrations are then compared with the manifest;
    a difference fails the task before anything is swapped in.
  - O(db_restore_mode=swap) (the default) restores into a new database C(<db_name>_restore_<set>) (owner
    O(db_owner), C(TEMPLATE template0), the live database's encoding, locale, privileges and settings, CONNECT and
    TEMPORARY revoked from PUBLIC), then terminates the live database's connections and renames it to
    C(<db_name>_before_<time>) (kept, drop it yourself once satisfied) and the new one to O(db_name).
    On any failure the new database is dropped and the live one is untouched.
  - O(db_restore_mode=scratch) restores into O(db_scratch_name) (dropped first if a restore made it; any other
    existing database is refused) and leaves it, for restore drills; C(skip) leaves the database alone. No mode
    writes into the live database (the former C(in_place) mode did, and was removed).
  - O(media_restore_mode=swap) extracts into a temporary sibling of O(media_root) (C(tar --no-same-owner)),
    checks the file count and bytes against the manifest, gives the files to O(media_owner)/O(media_group)
    (default, the owner of the current O(media_root)), then renames O(media_root) to C(<media_root>.before-<time>)
    (kept) and the new directory to O(media_root). C(scratch) extracts into O(media_scratch_dir); C(skip) does nothing.
  - With O(media_s3_bucket) instead of O(media_root), C(swap) extracts into O(download_dir), checks every object's
    SHA-256 against the manifest, uploads the objects the bucket does not hold as they are (before the database
    swap), and deletes the keys the set does not hold last; the bucket's versioning, required, keeps the previous ones.
  - Both swaps happen only after both the database and the media were restored and verified.
version_added: "1.0.0"
author:
  - django-stack maintainers
extends_documentation_fragment:
  - django_stack_s3
  - django_stack_postgres
  - django_stack_media_s3
options:
  db_maintenance_name:
    description:
      - Database the module connects to for the work that is not inside one database (the checks of the server and
        of O(db_user)'s rights, C(CREATE DATABASE), renames, drops, the database's comment and privileges).
      - Any database O(db_user) may connect to; pg_hba.conf often refuses C(postgres) to the app's role over TCP,
        where the app's own database does. A swap cannot rename the database it is connected to, so with
        O(db_restore_mode=swap) it must not be O(db_name).
    type: str
    default: postgres
  db_create:
    description:
      - Whether the module creates the database it restores into (and drops it on failure). O(db_user) then needs
        C(CREATEDB) and membership of the owner role, or to be a superuser.
      - V(false) restores into a database the PostgreSQL superuser made beforehand (the backup role does, on the
        database host), so that O(db_user) needs neither C(CREATEDB) nor a superuser; only with
        O(db_restore_mode=scratch), and the caller drops or renames it. It must exist, be empty, belong to the
        owner role, and carry the comment C(django-stack restore) (what marks a database a restore may use);
        O(db_user) must be the owner role or a member of it.
    type: bool
    default: true
  db_owner:
    description:
      - Owner role of the restored database and of every object in it (C(pg_restore --role)).
      - Default, the owner of the live database, else O(db_user). The role must exist.
    type: str
  db_restore_mode:
    description: How the database is restored (see the description).
    type: str
    choices: [swap, scratch, skip]
    default: swap
  db_scratch_name:
    description:
      - Database to restore into with O(db_restore_mode=scratch); dropped and recreated. Must differ from O(db_name).
    type: str
  db_analyze:
    description: Run C(ANALYZE) on the restored database before it is swapped in, so the planner has statistics at once.
    type: bool
    default: true
  media_root:
    description: The live media directory (Django's C(MEDIA_ROOT)), for O(media_restore_mode=swap).
    type: path
  media_restore_mode:
    description:
      - How the media are restored (see the description). Default C(swap) when O(media_root) or O(media_s3_bucket)
        is given, else C(skip).
      - C(swap) or C(scratch) with a set made without media fails.
    type: str
    choices: [swap, scratch, skip]
  media_scratch_dir:
    description: Directory (absent or empty) to extract the media into with O(media_restore_mode=scratch).
    type: path
  media_owner:
    description: Owner of the restored media files. Default, the owner of the current O(media_root).
    type: str
  media_group:
    description: Group of the restored media files. Default, the group of the current O(media_root).
    type: str
  backup_set:
    description: C(latest) (the newest complete set) or the id of a complete set.
    type: str
    default: latest
  download_dir:
    description:
      - Directory the objects are downloaded to (in a private subdirectory, removed afterwards unless O(keep_download)).
        Its free space must hold the objects; the task fails before downloading when it cannot.
    type: path
    default: /var/tmp
  keep_download:
    description: Keep the downloaded objects (reported in RV(download_dir)).
    type: bool
    default: false
  age_identity:
    description:
      - Text of an age identity file (C(AGE-SECRET-KEY-1...)) or of an SSH private key, to decrypt an encrypted set.
        Written to a 0600 file in the private download directory for the time of the run.
    type: str
attributes:
  check_mode:
    support: full
    details:
      - Picks and validates the set, checks free space, the identity and the database connection, and reports what
        would be downloaded and restored where. Nothing is downloaded or changed.
  diff_mode:
    support: none
notes:
  - Run as root on the database host (with C(become)); C(pg_restore) then runs as C(postgres) (see O(db_os_user)).
    Over TCP as a role that is not a superuser, O(db_restore_mode=swap) needs that role to have C(CREATEDB) and to be
    the owner role or a member of it (to create the new database for the owner and rename the live one); with
    O(db_create=false) it needs only to be the owner role or a member of it. The module checks this before it
    downloads anything.
  - Stop the application, or put it in maintenance mode, while restoring. The swap terminates its database
    connections, and writes made during the restore are not in the restored data.
requirements:
  - Python 3.9 or later with boto3 and psycopg2 on the host (Debian 12 C(python3-boto3) and C(python3-psycopg2)).
  - C(pg_restore) (C(postgresql-client-15)), GNU tar, and C(age) for encrypted sets.
seealso:
  - module: django_backup
  - module: django_backup_info
"""

EXAMPLES = r"""
- name: Restore the newest complete set, database and media, swapping them in
  django_restore:
    db_name: demoapp
    media_root: /srv/demoapp/shared/media
    s3_bucket: acme-backups
    s3_prefix: demoapp/prod
  become: true
  register: _restore

- name: Restore drill - one set into a scratch database and directory, the live data untouched
  django_restore:
    backup_set: 20261124T031500Z-3f9a1c
    db_name: demoapp
    db_restore_mode: scratch
    db_scratch_name: demoapp_drill
    media_restore_mode: scratch
    media_scratch_dir: /var/tmp/demoapp-drill-media
    s3_bucket: acme-backups
    s3_prefix: demoapp/prod
    age_identity: "{{ vault_backup_age_identity }}"
  become: true
"""

RETURN = r"""
set_id:
  description: Id of the set restored.
  returned: always
  type: str
  sample: 20261124T031500Z-3f9a1c
created_at:
  description: When the set was made.
  returned: always
  type: str
age_seconds:
  description: Age of the set when the restore started (the recovery point of a restore drill).
  returned: always
  type: int
release_id:
  description: Release recorded in the set's manifest.
  returned: always
  type: str
encrypted:
  description: Whether the set was encrypted with age.
  returned: always
  type: bool
objects:
  description: Objects needed for this restore (key and size).
  returned: always
  type: list
  elements: dict
downloaded:
  description: Objects downloaded and verified, with size, SHA-256 and seconds.
  returned: when not in check mode
  type: list
  elements: dict
would_download:
  description: Keys that would be downloaded.
  returned: in check mode
  type: list
  elements: str
space:
  description: Free space checked per filesystem (path, needed and free bytes).
  returned: always
  type: list
  elements: dict
download_dir:
  description: Where the objects were downloaded (the private subdirectory with O(keep_download)).
  returned: when not in check mode
  type: str
database:
  description:
    - What was restored - RV(database.mode), RV(database.name) (the live name), RV(database.restored_into),
      RV(database.owner), RV(database.previous) (the kept previous database after a swap, or null),
      RV(database.tables), RV(database.rows) and RV(database.table_rows) (rows per table, equal to the manifest's),
      RV(database.applied_migrations) (how many, the same as the manifest's), RV(database.session_user) (the
      non-superuser role C(pg_restore) ran as).
  returned: always
  type: dict
  sample: {"mode": "swap", "name": "demoapp", "restored_into": "demoapp_restore_20261124t031500z_3f9a1c",
           "previous": "demoapp_before_20261125101500", "owner": "demoapp", "tables": 12, "rows": 184220}
media:
  description:
    - What was restored - RV(media.mode), RV(media.path), RV(media.files), RV(media.bytes), and RV(media.previous)
      (the kept previous directory after a swap, or null).
  returned: always
  type: dict
  sample: {"mode": "swap", "path": "/srv/demoapp/shared/media", "files": 1532, "bytes": 310378496,
           "previous": "/srv/demoapp/shared/media.before-20261125101500"}
timings:
  description: Seconds spent selecting the set, downloading, restoring and verifying, swapping, and in total.
  returned: always
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.django_stack_backup.config import SPEC, command_spec, make_config
from ansible.module_utils.django_stack_backup.errors import BackupError, handle_signals
from ansible.module_utils.django_stack_backup.restore import restore


def main():
    module = AnsibleModule(
        argument_spec=command_spec("restore"),
        required_if=[
            ("db_restore_mode", "swap", ["db_name"]),
            ("db_restore_mode", "scratch", ["db_scratch_name"]),
            ("media_restore_mode", "swap", ["media_root", "media_s3_bucket"], True),
            ("media_restore_mode", "scratch", ["media_scratch_dir"]),
        ],
        mutually_exclusive=[("media_root", "media_s3_bucket")],
        supports_check_mode=True,
    )
    params = {k: v for k, v in module.params.items() if k in SPEC}
    try:
        with handle_signals():
            result = restore(make_config(params), check_mode=module.check_mode)
    except BackupError as exc:
        module.fail_json(msg="django_restore: %s" % exc)
    except Exception as exc:  # a bug: fail with the traceback rather than a bare MODULE FAILURE
        module.fail_json(msg="django_restore: unexpected error %s: %s" % (type(exc).__name__, exc),
                         exception=traceback.format_exc())
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
