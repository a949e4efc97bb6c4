# -*- coding: utf-8 -*-
# MIT License (see the project's LICENSE)
"""What the pitr role's modules share: the S3 options, the client, and the reading of a
barman-cloud archive (<prefix>/<lineage>/base/<id>/backup.info, <prefix>/<lineage>/wals/...)."""

from __future__ import annotations

import datetime as dt
import re

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    S3_ERRORS: tuple = (BotoCoreError, ClientError)
except ImportError:  # the modules report it
    boto3 = None
    S3_ERRORS = ()

# A segment (24 hex digits: timeline, log, segment) or its backup label, with a compression suffix.
SEGMENT = re.compile(r"^[0-9A-F]{8}([0-9A-F]{16})(\.[0-9A-F]{8}\.backup)?(\.gz|\.bz2|\.snappy|\.xz|\.lz4|\.zst)?$")


def s3_argument_spec() -> dict:
    return dict(
        s3_bucket=dict(type="str", required=True),
        s3_prefix=dict(type="str", required=True),
        s3_endpoint_url=dict(type="str", default=""),
        s3_region=dict(type="str", default=""),
        s3_addressing_style=dict(type="str", default="auto", choices=["auto", "path", "virtual"]),
        s3_access_key=dict(type="str", default="", no_log=True),
        s3_secret_key=dict(type="str", default="", no_log=True),
    )


def client(module):
    """boto3's S3 client for the module's s3_* options (fails the module without boto3)."""
    if boto3 is None:
        module.fail_json(msg="boto3 is missing where the module runs: install python3-boto3")
    p = module.params
    kwargs = {"config": Config(s3={"addressing_style": p["s3_addressing_style"]}, retries={"max_attempts": 5})}
    if p["s3_endpoint_url"]:
        kwargs["endpoint_url"] = p["s3_endpoint_url"]
    if p["s3_region"]:
        kwargs["region_name"] = p["s3_region"]
    if p["s3_access_key"]:
        kwargs.update(aws_access_key_id=p["s3_access_key"], aws_secret_access_key=p["s3_secret_key"])
    return boto3.client("s3", **kwargs)


def prefix_of(module) -> str:
    return module.params["s3_prefix"].strip("/") + "/"


def parse_info(text: str) -> dict:
    """barman's backup.info: one key=value per line."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 moment with a time zone (Z or an offset), as a UTC datetime; ValueError otherwise."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("no time zone")
    return value.astimezone(dt.timezone.utc)


def walk(s3, bucket: str, prefix: str):
    """Every object of the archive, as (lineage, the path's parts below it, the object), with each
    base backup's backup.info parsed into the object's "info"."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            lineage, _, rest = obj["Key"][len(prefix):].partition("/")
            parts = rest.split("/")
            if parts[0] == "base" and len(parts) == 3 and parts[2] == "backup.info":
                obj = dict(obj, info=parse_info(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()))
            yield lineage, parts, obj
