# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The options of media that live in an S3 bucket, which django_backup and django_restore share
(config.GROUPS["media_s3"] in the django_stack_backup package)."""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  media_s3_bucket:
    description:
      - Bucket the app keeps its uploaded media in (django-storages), instead of a directory; mutually exclusive
        with O(media_root). A backup streams every object of it into the set's C(media.tar), each object's key,
        size and SHA-256 in the manifest.
      - A restore (O(media_restore_mode=swap)) needs the bucket's versioning on, and refuses before any change
        otherwise. It uploads the objects that differ from the set before the database is swapped in, and
        deletes the keys the set does not hold only after that; what it overwrites or deletes stays as
        noncurrent versions.
    type: str
  media_s3_endpoint_url:
    description: Endpoint URL of the media bucket's S3-compatible store; unset means AWS S3.
    type: str
  media_s3_region:
    description: Region of the media bucket.
    type: str
  media_s3_access_key:
    description: Access key id for the media bucket (read for backups; write and delete for restores).
    type: str
  media_s3_secret_key:
    description: Secret key for the media bucket, given with O(media_s3_access_key).
    type: str
  media_s3_addressing_style:
    description: URL style of the media bucket's requests (C(auto) is C(path) with an endpoint URL).
    type: str
    choices: [auto, path, virtual]
    default: auto
"""
