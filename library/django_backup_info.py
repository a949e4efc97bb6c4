#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""List the backup sets made by django_backup; never changes anything."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: django_backup_info
short_description: List the backup sets of a Django stack on S3
description:
  - Lists the sets that M(django_backup) made under O(s3_prefix) in O(s3_bucket), newest first, with whether each
    is complete, its creation time and age, its size and the release it was taken from.
  - A set is complete only when its C(COMPLETE) marker holds the SHA-256 of its C(manifest.json) and every object
    the manifest names is there with the size the manifest gives. Anything else (a backup that was interrupted
    or is still running, a tampered object) is listed with RV(sets[].complete=false) and the RV(sets[].problem).
  - Never modifies anything; check mode makes no difference.
version_added: "1.0.0"
author:
  - django-stack maintainers
options:
  s3_bucket:
    description: Bucket that holds the backup sets (on AWS S3 or any S3-compatible store).
    type: str
    required: true
  s3_prefix:
    description:
      - Key prefix under which the sets live, one "directory" per set (C(<prefix>/<set_id>/...)).
        Leading and trailing slashes are ignored; empty puts the sets at the top of the bucket.
      - Give every site (or database) its own prefix; retention applies to everything under it.
    type: str
    default: backups
  s3_endpoint_url:
    description:
      - URL of an S3-compatible endpoint (MinIO, Ceph RGW, Garage, ...), such as C(https://minio.example.net:9000).
        Unset for AWS S3 itself.
    type: str
  s3_region:
    description: Region of the bucket (AWS), or the region the S3-compatible store expects in signatures.
    type: str
  s3_access_key:
    description:
      - Access key id. With O(s3_secret_key); when both are unset, boto3's default chain is used
        (environment, C(~/.aws/credentials), an EC2 instance role...).
    type: str
  s3_secret_key:
    description: Secret access key that goes with O(s3_access_key).
    type: str
  s3_session_token:
    description: Session token of temporary credentials (STS), with O(s3_access_key) and O(s3_secret_key).
    type: str
  s3_addressing_style:
    description:
      - C(path) (C(https://host/bucket/key)) or C(virtual) (C(https://bucket.host/key)) requests.
        C(auto) uses C(path) with O(s3_endpoint_url) and lets botocore choose for AWS.
    type: str
    choices: [auto, path, virtual]
    default: auto
  s3_ca_bundle:
    description: CA bundle (PEM) to verify the endpoint's TLS certificate with, for a store with a private CA.
    type: path
  s3_connect_timeout:
    description: Seconds to wait for a connection to the endpoint.
    type: int
    default: 10
  s3_read_timeout:
    description: Seconds to wait for an answer from the endpoint.
    type: int
    default: 120
  s3_max_attempts:
    description: Attempts per S3 request (botocore's C(standard) retry mode, with backoff) before failing.
    type: int
    default: 5
  backup_set:
    description:
      - Also return the manifest of this set, C(latest) (the newest complete set) or a set id.
        An incomplete or unknown set fails the task.
    type: str
attributes:
  check_mode:
    support: full
    details: Nothing is ever changed.
  diff_mode:
    support: none
requirements:
  - Python 3.9 or later with boto3 (Debian 12 C(python3-boto3)).
seealso:
  - module: django_backup
  - module: django_restore
"""

EXAMPLES = r"""
- name: List the backup sets
  django_backup_info:
    s3_bucket: acme-backups
    s3_prefix: demoapp/prod
  register: _backups

- name: Fail when the newest complete set is older than 26 hours
  ansible.builtin.assert:
    that:
      - _backups.latest_complete is not none
      - _backups.latest_complete.age_seconds < 26 * 3600
    fail_msg: "no recent complete backup under s3://acme-backups/demoapp/prod/"

- name: The manifest of one set
  django_backup_info:
    s3_bucket: acme-backups
    s3_prefix: demoapp/prod
    backup_set: 20261124T031500Z-3f9a1c
  register: _set
"""

RETURN = r"""
sets:
  description: Every set under the prefix, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    set_id:
      description: The set's id (its creation time in UTC and a random suffix).
      type: str
      sample: 20261124T031500Z-3f9a1c
    complete:
      description: True only for a set with a valid completion marker; only those are restored or counted by retention.
      type: bool
    created_at:
      description: When the backup started (UTC, ISO 8601).
      type: str
      sample: "2026-11-24T03:15:00Z"
    completed_at:
      description: When its objects were all uploaded (complete sets), else null.
      type: str
    age_seconds:
      description: Seconds since RV(sets[].created_at).
      type: int
    size:
      description: Bytes stored under the set's prefix.
      type: int
    release_id:
      description: Release recorded in the manifest (complete sets), else null.
      type: str
    encrypted:
      description: Whether the objects are encrypted with age (complete sets), else null.
      type: bool
    objects:
      description: Names of the objects stored under the set's prefix.
      type: list
      elements: str
    problem:
      description: Why the set is not complete, or null.
      type: str
  sample: [{"set_id": "20261124T031500Z-3f9a1c", "complete": true, "created_at": "2026-11-24T03:15:00Z",
            "age_seconds": 3600, "size": 734003200, "release_id": "20261120-1a2b3c4", "problem": null}]
latest_complete:
  description: The newest complete set (same keys as an element of RV(sets)), or null when there is none.
  returned: always
  type: dict
count:
  description: Number of sets (complete or not).
  returned: always
  type: int
complete_count:
  description: Number of complete sets.
  returned: always
  type: int
backup_set:
  description: Id of the set whose manifest is returned.
  returned: when O(backup_set) is given
  type: str
manifest:
  description: The manifest of O(backup_set) (see M(django_backup)).
  returned: when O(backup_set) is given
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.django_stack_backup import SPEC, BackupError, argument_spec, info, make_config


def main():
    spec = argument_spec("s3")
    spec["backup_set"] = dict(type="str")
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = {k: v for k, v in module.params.items() if k in SPEC and k != "backup_set"}
    try:
        result = info(make_config(params), module.params["backup_set"])
    except BackupError as exc:
        module.fail_json(msg="django_backup_info: %s" % exc)
    except Exception as exc:  # a bug: fail with the traceback rather than a bare MODULE FAILURE
        module.fail_json(msg="django_backup_info: unexpected error %s: %s" % (type(exc).__name__, exc),
                         exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
