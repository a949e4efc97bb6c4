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
extends_documentation_fragment:
  - django_stack_s3
options:
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
    suspect:
      description: >-
        Whether the set is dated more than 10 minutes in the future of this host's clock (a wrong clock, or a
        planted set); such a set is never complete, restored, counted by retention or pruned.
      type: bool
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
suspect:
  description: Ids of the sets dated in the future of this host's clock (each also gives a warning).
  returned: always
  type: list
  elements: str
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
from ansible.module_utils.django_stack_backup.config import SPEC, command_spec, make_config
from ansible.module_utils.django_stack_backup.errors import BackupError
from ansible.module_utils.django_stack_backup.sets import info


def main():
    spec = command_spec("list")
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
    for set_id in result["suspect"]:
        module.warn("backup set %s is dated in the future of this host's clock: never restored, counted or pruned; "
                    "check the clock of the server that wrote it" % set_id)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
