#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Create a backup set of a Django stack (database + media + manifest) on S3, and apply retention."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: django_backup
short_description: Back up a Django stack's PostgreSQL database and media to S3, with retention
description:
  - Creates one backup B(set) under O(s3_prefix) in O(s3_bucket) on AWS S3 or any S3-compatible store, made of
    C(<set_id>/db.dump) (C(pg_dump -Fc)), C(<set_id>/media.tar) (a tar of O(media_root), when given),
    C(<set_id>/manifest.json), and last C(<set_id>/COMPLETE), holding the manifest's SHA-256.
    The set id sorts by time, for example C(20261124T031500Z-3f9a1c).
  - Everything is streamed (C(pg_dump) and C(tar) straight into S3 multipart uploads), so memory stays bounded
    (about O(s3_max_concurrency) + 1 parts) and no local disk is used, whatever the size of the database.
  - The dump, the row count of every table and the applied Django migrations all come from one exported
    snapshot (C(REPEATABLE READ READ ONLY) + C(pg_export_snapshot) + C(pg_dump --snapshot)), so the
    manifest's row counts are exactly what the dump holds.
  - Each object is verified after upload (size, and the multipart ETag computed from the parts' MD5s unless
    SSE-KMS is used). The C(COMPLETE) marker is written only when every object and the manifest are uploaded
    and verified; a set without a valid marker is incomplete, never restored and never counted by retention.
    On any failure the multipart upload is aborted and the task fails.
  - With O(encrypt_recipients), both objects are encrypted on this host with C(age) to public keys, so the server
    (and the store) cannot read older sets; only the holder of a private key can restore them.
  - With O(keep_daily), O(keep_weekly) or O(keep_monthly), retention is applied after a successful backup
    (grandfather-father-son over complete sets; the newest complete set is never deleted).
    O(state=pruned) only applies retention.
  - The same code runs from a systemd timer through the command line of the C(django_stack_backup) module_utils
    package (C(python3 -m django_stack_backup.cli --config FILE backup), installed by the backup role as
    C(django-stack-backup)), with a JSON file of these options.
version_added: "1.0.0"
author:
  - django-stack maintainers
extends_documentation_fragment:
  - django_stack_s3
  - django_stack_postgres
  - django_stack_media_s3
options:
  state:
    description:
      - C(present) creates a new set (and then applies retention when asked).
      - C(pruned) only applies retention (at least one of O(keep_daily), O(keep_weekly), O(keep_monthly) is required).
    type: str
    choices: [present, pruned]
    default: present
  s3_sse:
    description:
      - Server-side encryption of the uploaded objects. C(AES256) is SSE-S3, C(aws:kms) SSE-KMS
        (with O(s3_sse_kms_key_id), else the account's default key).
      - With C(aws:kms) ETags are not MD5s, so objects are verified by size only after upload
        (their SHA-256 is still checked at restore).
    type: str
    choices: [none, AES256, aws:kms]
    default: none
  s3_sse_kms_key_id:
    description: KMS key id or ARN for O(s3_sse=aws:kms).
    type: str
  s3_part_size_mb:
    description:
      - Size of one multipart upload part in MiB, between 5 and 5120. Memory used is about
        (O(s3_max_concurrency) + 1) parts, whatever the size of the database.
      - Raised automatically when the database (or media) is so large that more than 9000 parts would be needed.
    type: int
    default: 16
  s3_max_concurrency:
    description: Parts uploaded at the same time (1 to 16).
    type: int
    default: 2
  media_root:
    description:
      - Directory of the uploaded media (Django's C(MEDIA_ROOT)); archived with C(tar -C media_root -cf - .)
        after the database (so every file the dump refers to is in it). Unset backs up the database only.
      - Files that change while they are read give a warning, not a failure (GNU tar's exit status 1).
    type: path
  release_id:
    description: Identifier of the deployed release, recorded in the manifest.
    type: str
  release_path:
    description:
      - Symlink to the deployed release (such as C(/srv/demoapp/current)); the basename of its target is
        recorded as the release id. Mutually exclusive with O(release_id).
    type: path
  encrypt_recipients:
    description:
      - age recipients (C(age1...) public keys, or C(ssh-ed25519)/C(ssh-rsa) public keys) to encrypt the
        dump and the media to, with the C(age) program (Debian package C(age)). Empty means no client-side encryption.
      - The private keys stay off the server; give one to M(django_restore) as its C(age_identity).
    type: list
    elements: str
    default: []
  keep_daily:
    description:
      - Keep the newest complete set of each of the last N days that have sets (UTC days).
      - Retention runs only when at least one of O(keep_daily), O(keep_weekly), O(keep_monthly) is set.
    type: int
  keep_weekly:
    description: Keep the newest complete set of each of the last N ISO weeks that have sets.
    type: int
  keep_monthly:
    description: Keep the newest complete set of each of the last N months that have sets.
    type: int
  incomplete_grace_hours:
    description:
      - Incomplete sets (no valid C(COMPLETE) marker) and unfinished multipart uploads under the prefix older
        than this are removed by retention. Younger ones may belong to a backup that is still running.
    type: int
    default: 24
attributes:
  check_mode:
    support: full
    details:
      - Connects to the bucket and the database and reports the objects that would be uploaded with their
        estimated sizes (database size on the server, media bytes), and what retention would prune
        (counting the new set as the newest complete one). Nothing is uploaded or deleted.
  diff_mode:
    support: none
notes:
  - Runs as root on the database host (with C(become)) so that C(pg_dump) runs as C(postgres) with peer
    authentication, or anywhere with O(db_host), O(db_port), O(db_user) and O(db_password) over TCP.
  - The C(pg_dump) used must not be older than the server; see O(pg_bin_dir).
  - Restore with M(django_restore); list sets with M(django_backup_info).
requirements:
  - Python 3.9 or later with boto3 and psycopg2 on the host (Debian 12 C(python3-boto3) and C(python3-psycopg2)).
  - C(pg_dump) (C(postgresql-client-15)), GNU tar, and C(age) when encrypting.
seealso:
  - module: django_backup_info
  - module: django_restore
"""

EXAMPLES = r"""
- name: Back up the database and media to S3, keep 7 daily, 4 weekly and 6 monthly sets
  django_backup:
    db_name: demoapp
    media_root: /srv/demoapp/shared/media
    release_path: /srv/demoapp/current
    s3_bucket: acme-backups
    s3_prefix: demoapp/prod
    s3_region: eu-west-3
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 6
  become: true

- name: Back up to MinIO over TCP as the owner role, encrypted to two age keys
  django_backup:
    db_name: demoapp
    db_host: 10.0.0.5
    db_user: demoapp
    db_password: "{{ vault_demoapp_db_password }}"
    s3_endpoint_url: https://minio.example.net:9000
    s3_bucket: backups
    s3_access_key: "{{ vault_minio_access_key }}"
    s3_secret_key: "{{ vault_minio_secret_key }}"
    encrypt_recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    s3_sse: AES256

- name: What would retention delete?
  django_backup:
    state: pruned
    s3_bucket: acme-backups
    s3_prefix: demoapp/prod
    keep_daily: 7
    keep_weekly: 4
  check_mode: true
  register: _retention
"""

RETURN = r"""
set_id:
  description: Id of the set created (in check mode, the id a real run would have used).
  returned: when state=present
  type: str
  sample: 20261124T031500Z-3f9a1c
objects:
  description:
    - Objects uploaded, with their size and SHA-256 (of the stored bytes, after encryption).
    - In check mode, those that would be uploaded, with RV(objects[].estimated_size).
  returned: when state=present
  type: list
  elements: dict
  sample: [{"key": "backups/20261124T031500Z-3f9a1c/db.dump", "size": 1048576, "sha256": "9f86d0...", "parts": 1}]
would_upload:
  description: Keys that would be uploaded.
  returned: in check mode with state=present
  type: list
  elements: str
size:
  description: Bytes uploaded (the objects and the manifest).
  returned: when state=present and not in check mode
  type: int
manifest:
  description:
    - The set's manifest (also stored as C(manifest.json)) -- format version, set id, created and completed times,
      release id, database name, server and pg_dump versions, applied migrations, row count per table,
      media file count and bytes, encryption, and every object with key, size, SHA-256 and multipart ETag.
  returned: when state=present and not in check mode
  type: dict
database:
  description: In check mode, what would be dumped (name, server version, size, table count, pg_dump used).
  returned: in check mode with state=present
  type: dict
media:
  description: In check mode, the media that would be archived (root, files, bytes), or null.
  returned: in check mode with state=present
  type: dict
timings:
  description: Seconds spent on the database, the media, the manifest, and in total.
  returned: when state=present and not in check mode
  type: dict
  sample: {"database": 41.2, "media": 6.3, "manifest": 0.1, "total": 48.0}
throughput_mb_s:
  description: MiB uploaded per second of the whole run.
  returned: when state=present and not in check mode
  type: float
retention:
  description:
    - What retention did (or would do, in check mode). RV(retention.kept) lists the sets kept with the reasons
      (C(newest complete set), C(daily 2026-11-24), C(weekly 2026-W48), C(monthly 2026-11)).
      RV(retention.pruned) (RV(retention.would_prune)), RV(retention.removed_incomplete)
      (RV(retention.would_remove_incomplete)) and RV(retention.aborted_uploads) (RV(retention.would_abort_uploads))
      list what was removed. RV(retention.suspect) lists the sets dated in the future of this host's clock
      (a wrong clock, or a planted set), never counted or pruned, each reported in a warning.
    - With O(state=pruned), these keys are at the top level of the result instead.
  returned: when retention ran
  type: dict
  sample: {"kept": [{"set_id": "20261124T031500Z-3f9a1c", "reasons": ["newest complete set", "daily 2026-11-24"]}],
           "pruned": ["20261001T031500Z-aa01bc"], "removed_incomplete": [], "aborted_uploads": []}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.django_stack_backup.backup import backup
from ansible.module_utils.django_stack_backup.config import SPEC, command_spec, make_config, validate
from ansible.module_utils.django_stack_backup.errors import BackupError, handle_signals
from ansible.module_utils.django_stack_backup.retention import prune


def main():
    spec = command_spec("backup")  # state=pruned runs the prune command with the same options
    spec["state"] = dict(type="str", default="present", choices=["present", "pruned"])
    module = AnsibleModule(
        argument_spec=spec,
        required_if=[("state", "present", ["db_name"])],
        mutually_exclusive=[("release_id", "release_path"), ("media_root", "media_s3_bucket")],
        supports_check_mode=True,
    )
    params = {k: v for k, v in module.params.items() if k in SPEC}
    try:
        with handle_signals():
            cfg = make_config(params)
            if module.params["state"] == "pruned":
                validate(cfg, "prune")
                result = prune(cfg, check_mode=module.check_mode)
            else:
                result = backup(cfg, check_mode=module.check_mode)
    except BackupError as exc:
        module.fail_json(msg="django_backup: %s" % exc)
    except Exception as exc:  # a bug: fail with the traceback rather than a bare MODULE FAILURE
        module.fail_json(msg="django_backup: unexpected error %s: %s" % (type(exc).__name__, exc),
                         exception=traceback.format_exc())
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
