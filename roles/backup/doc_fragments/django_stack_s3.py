# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The S3 options that django_backup, django_backup_info and django_restore share: where the sets
live and how to reach them (config.GROUPS["s3"] in the django_stack_backup package)."""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
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
"""
