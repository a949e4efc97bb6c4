# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Every option of the modules and of the command line's JSON config, and their validation.

The modules take their argument_spec from here (command_spec), so the modules and the command
line accept the same keys with the same types, defaults and choices. validate() then makes the
checks a spec cannot express: those every command shares, and those of the command at hand.
"""

from __future__ import annotations

import copy
import grp
import os
import pwd
import re
import shutil

from .errors import BackupError

AGE_RECIPIENT_RE = re.compile(r"^(age1[02-9ac-hj-np-z]{58}|ssh-(ed25519|rsa) [A-Za-z0-9+/=]+( .*)?)$")

# In Ansible's argument_spec syntax.
SPEC = dict(
    # where the sets live
    s3_bucket=dict(type="str", required=True),
    s3_prefix=dict(type="str", default="backups"),
    s3_endpoint_url=dict(type="str"),
    s3_region=dict(type="str"),
    s3_access_key=dict(type="str", no_log=False),
    s3_secret_key=dict(type="str", no_log=True),
    s3_session_token=dict(type="str", no_log=True),
    s3_addressing_style=dict(type="str", default="auto", choices=["auto", "path", "virtual"]),
    s3_ca_bundle=dict(type="path"),
    s3_sse=dict(type="str", default="none", choices=["none", "AES256", "aws:kms"]),
    s3_sse_kms_key_id=dict(type="str", no_log=False),
    s3_part_size_mb=dict(type="int", default=16),
    s3_max_concurrency=dict(type="int", default=2),
    s3_connect_timeout=dict(type="int", default=10),
    s3_read_timeout=dict(type="int", default=120),
    s3_max_attempts=dict(type="int", default=5),
    # the database
    db_name=dict(type="str"),
    db_host=dict(type="str", default="/var/run/postgresql"),
    db_port=dict(type="int", default=5432),
    db_user=dict(type="str", default="postgres"),
    db_password=dict(type="str", no_log=True),
    db_os_user=dict(type="str"),
    db_sslmode=dict(type="str", choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
    db_sslrootcert=dict(type="path"),
    db_maintenance_name=dict(type="str", default="postgres"),
    pg_bin_dir=dict(type="path"),
    # media
    media_root=dict(type="path"),
    media_s3_bucket=dict(type="str"),
    media_s3_endpoint_url=dict(type="str"),
    media_s3_region=dict(type="str"),
    media_s3_access_key=dict(type="str", no_log=False),
    media_s3_secret_key=dict(type="str", no_log=True),
    media_s3_addressing_style=dict(type="str", default="auto", choices=["auto", "path", "virtual"]),
    # backup
    release_id=dict(type="str"),
    release_path=dict(type="path"),
    encrypt_recipients=dict(type="list", elements="str", default=[]),
    # retention
    keep_daily=dict(type="int"),
    keep_weekly=dict(type="int"),
    keep_monthly=dict(type="int"),
    incomplete_grace_hours=dict(type="int", default=24),
    # restore
    backup_set=dict(type="str", default="latest"),
    download_dir=dict(type="path", default="/var/tmp"),
    keep_download=dict(type="bool", default=False),
    age_identity=dict(type="str", no_log=True),
    db_restore_mode=dict(type="str", default="swap", choices=["swap", "scratch", "skip"]),
    db_scratch_name=dict(type="str"),
    db_owner=dict(type="str"),
    db_create=dict(type="bool", default=True),
    db_analyze=dict(type="bool", default=True),
    media_restore_mode=dict(type="str", choices=["swap", "scratch", "skip"]),
    media_scratch_dir=dict(type="path"),
    media_owner=dict(type="str"),
    media_group=dict(type="str"),
)

# The S3 group is what all three modules share (documented once, in the django_stack_s3 doc fragment).
GROUPS = dict(
    s3=["s3_bucket", "s3_prefix", "s3_endpoint_url", "s3_region", "s3_access_key", "s3_secret_key",
        "s3_session_token", "s3_addressing_style", "s3_ca_bundle", "s3_connect_timeout", "s3_read_timeout",
        "s3_max_attempts"],
    upload=["s3_sse", "s3_sse_kms_key_id", "s3_part_size_mb", "s3_max_concurrency"],
    db=["db_name", "db_host", "db_port", "db_user", "db_password", "db_os_user", "db_sslmode", "db_sslrootcert",
        "pg_bin_dir"],
    media_s3=["media_s3_bucket", "media_s3_endpoint_url", "media_s3_region", "media_s3_access_key",
              "media_s3_secret_key", "media_s3_addressing_style"],
    backup=["media_root", "release_id", "release_path", "encrypt_recipients"],
    retention=["keep_daily", "keep_weekly", "keep_monthly", "incomplete_grace_hours"],
    restore=["db_maintenance_name", "media_root", "backup_set", "download_dir", "keep_download", "age_identity",
             "db_restore_mode", "db_scratch_name", "db_owner", "db_create", "db_analyze", "media_restore_mode",
             "media_scratch_dir", "media_owner", "media_group"],
)

# The option groups of each command. django_backup runs backup and prune (state=pruned) with one spec,
# django_backup_info is list, django_restore is restore; check-freshness exists on the command line only.
COMMAND_GROUPS = {
    "backup": ("s3", "upload", "db", "backup", "media_s3", "retention"),
    "prune": ("s3", "upload", "db", "backup", "media_s3", "retention"),
    "list": ("s3",),
    "check-freshness": ("s3",),
    "restore": ("s3", "db", "restore", "media_s3"),
}


def argument_spec(*groups: str) -> dict:
    """An Ansible argument_spec with the options of these GROUPS."""
    spec = {}
    for group in groups:
        for name in GROUPS[group]:
            spec[name] = copy.deepcopy(SPEC[name])
    return spec


def command_spec(command: str) -> dict:
    """The argument_spec of COMMAND (a key of COMMAND_GROUPS)."""
    return argument_spec(*COMMAND_GROUPS[command])


class Config(dict):
    """Options with defaults applied; attribute access for brevity."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)


def _check_type(name: str, value, spec: dict):
    kind = spec.get("type", "str")
    if value is None:
        return None
    if kind in ("str", "path"):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise BackupError("option %s must be a string, got %r" % (name, value))
        value = str(value)
        return os.path.expanduser(value) if kind == "path" else value
    if kind == "int":
        if isinstance(value, bool):
            raise BackupError("option %s must be an integer, got %r" % (name, value))
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BackupError("option %s must be an integer, got %r" % (name, value))
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise BackupError("option %s must be a boolean, got %r" % (name, value))
    if kind == "list":
        if isinstance(value, str):
            value = [x.strip() for x in value.split(",") if x.strip()]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise BackupError("option %s must be a list of strings, got %r" % (name, value))
        return value
    raise BackupError("option %s: unknown type %s" % (name, kind))


def make_config(params: dict) -> Config:
    """Defaults applied and types checked; unknown keys are refused (the CLI's JSON config)."""
    unknown = sorted(set(params) - set(SPEC))
    if unknown:
        raise BackupError("unknown option(s) %s; known options: %s" % (", ".join(unknown), ", ".join(sorted(SPEC))))
    cfg = Config()
    for name, spec in SPEC.items():
        value = params.get(name, spec.get("default"))
        value = _check_type(name, value, spec)
        if value is not None and spec.get("choices") and value not in spec["choices"]:
            raise BackupError("option %s must be one of %s, got %r" % (name, ", ".join(spec["choices"]), value))
        cfg[name] = copy.deepcopy(value)
    return cfg


# --- checks every command makes (a JSON config holds every option, whatever the command) -----------

def _check_s3(cfg: Config) -> None:
    if not cfg.s3_bucket:
        raise BackupError("s3_bucket is required: the bucket that holds the backup sets")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$", cfg.s3_bucket):
        raise BackupError("s3_bucket %r is not a valid bucket name" % cfg.s3_bucket)
    cfg["s3_prefix"] = (cfg.s3_prefix or "").strip("/")
    if cfg.s3_endpoint_url and not re.match(r"^https?://[^/\s]+", cfg.s3_endpoint_url):
        raise BackupError("s3_endpoint_url %r must be an http:// or https:// URL" % cfg.s3_endpoint_url)
    if bool(cfg.s3_access_key) != bool(cfg.s3_secret_key):
        raise BackupError("s3_access_key and s3_secret_key go together: give both, or neither to use boto3's "
                          "default credential chain (environment, ~/.aws, instance role)")
    if cfg.s3_session_token and not cfg.s3_access_key:
        raise BackupError("s3_session_token needs s3_access_key and s3_secret_key")
    if not 5 <= cfg.s3_part_size_mb <= 5120:
        raise BackupError("s3_part_size_mb must be between 5 and 5120 (S3's multipart part size limits), got %d"
                          % cfg.s3_part_size_mb)
    if not 1 <= cfg.s3_max_concurrency <= 16:
        raise BackupError("s3_max_concurrency must be between 1 and 16, got %d" % cfg.s3_max_concurrency)
    for name in ("s3_connect_timeout", "s3_read_timeout", "s3_max_attempts"):
        if cfg[name] < 1:
            raise BackupError("%s must be 1 or more, got %d" % (name, cfg[name]))
    if cfg.s3_sse_kms_key_id and cfg.s3_sse != "aws:kms":
        raise BackupError("s3_sse_kms_key_id needs s3_sse=aws:kms (got s3_sse=%s)" % cfg.s3_sse)
    if cfg.s3_ca_bundle and not os.path.isfile(cfg.s3_ca_bundle):
        raise BackupError("s3_ca_bundle %s is not a file" % cfg.s3_ca_bundle)


def _check_media_s3(cfg: Config) -> None:
    """The media bucket (media_s3_*), named as such: the same rules as the backup bucket's."""
    if not cfg.media_s3_bucket:
        if cfg.media_s3_endpoint_url or cfg.media_s3_access_key or cfg.media_s3_secret_key:
            raise BackupError("media_s3_endpoint_url and the media_s3 keys need media_s3_bucket")
        return
    if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", cfg.media_s3_bucket):
        raise BackupError("media_s3_bucket %r is not a valid bucket name" % cfg.media_s3_bucket)
    if cfg.media_s3_endpoint_url and not re.match(r"^https?://[^/\s]+/?$", cfg.media_s3_endpoint_url):
        raise BackupError("media_s3_endpoint_url %r must be an http:// or https:// URL without a path"
                          % cfg.media_s3_endpoint_url)
    if bool(cfg.media_s3_access_key) != bool(cfg.media_s3_secret_key):
        raise BackupError("media_s3_access_key and media_s3_secret_key go together: give both, or neither to use "
                          "boto3's default credential chain")


def _check_common(cfg: Config) -> None:
    _check_s3(cfg)
    _check_media_s3(cfg)
    if not 1 <= cfg.db_port <= 65535:
        raise BackupError("db_port must be between 1 and 65535, got %d" % cfg.db_port)
    for name in ("keep_daily", "keep_weekly", "keep_monthly", "incomplete_grace_hours"):
        if cfg[name] is not None and cfg[name] < 0:
            raise BackupError("%s must be 0 or more, got %d" % (name, cfg[name]))
    if cfg.pg_bin_dir and not os.path.isdir(cfg.pg_bin_dir):
        raise BackupError("pg_bin_dir %s is not a directory" % cfg.pg_bin_dir)


# --- checks of one command ---------------------------------------------------------------------------

def _check_backup(cfg: Config) -> None:
    if not cfg.db_name:
        raise BackupError("db_name is required: the database to back up")
    if cfg.media_root and cfg.media_s3_bucket:
        raise BackupError("media_root and media_s3_bucket are mutually exclusive: the media live in one of them")
    if cfg.media_root and not os.path.isdir(cfg.media_root):
        raise BackupError("media_root %s is not a directory" % cfg.media_root)
    if cfg.release_id and cfg.release_path:
        raise BackupError("release_id and release_path are mutually exclusive")
    if cfg.release_path and not os.path.exists(cfg.release_path):
        raise BackupError("release_path %s does not exist" % cfg.release_path)
    for recipient in cfg.encrypt_recipients:
        if not AGE_RECIPIENT_RE.match(recipient.strip()):
            raise BackupError("encrypt_recipients: %r is not an age recipient (age1...) or an ssh-ed25519/ssh-rsa "
                              "public key" % recipient)
    if cfg.encrypt_recipients and not shutil.which("age"):
        raise BackupError("encrypt_recipients is set but the age program is not installed (apt-get install age)")


def _check_prune(cfg: Config) -> None:
    if all(cfg[k] is None for k in ("keep_daily", "keep_weekly", "keep_monthly")):
        raise BackupError("pruning needs at least one of keep_daily, keep_weekly, keep_monthly")


def _check_restore_db(cfg: Config) -> None:
    mode = cfg.db_restore_mode
    if mode == "swap" and not cfg.db_name:
        raise BackupError("db_name is required with db_restore_mode=%s: the live database to replace" % mode)
    if mode == "scratch":
        if not cfg.db_scratch_name:
            raise BackupError("db_restore_mode=scratch needs db_scratch_name: the database to restore into")
        if cfg.db_scratch_name == cfg.db_name:
            raise BackupError("db_scratch_name must differ from db_name (%s): scratch never touches the live "
                              "database; use db_restore_mode=swap" % cfg.db_name)
    if not cfg.db_create and mode == "swap":
        raise BackupError("db_create=false needs db_restore_mode=scratch (got %s): a swap renames the live database, "
                          "which only a role with CREATEDB may do; whoever made the database swaps it in" % mode)
    for name in ("db_name", "db_scratch_name", "db_owner"):
        if cfg[name] and len(cfg[name].encode()) > 63:
            raise BackupError("%s %r is longer than PostgreSQL's 63-byte identifier limit" % (name, cfg[name]))


def _check_restore_media(cfg: Config) -> None:
    if cfg.media_restore_mode is None:
        cfg["media_restore_mode"] = "swap" if cfg.media_root or cfg.media_s3_bucket else "skip"
    if cfg.media_restore_mode == "swap" and cfg.media_s3_bucket:
        if cfg.media_root:
            raise BackupError("media_root and media_s3_bucket are mutually exclusive: the media live in one of them")
    elif cfg.media_restore_mode == "swap":
        if not cfg.media_root:
            raise BackupError("media_restore_mode=swap needs media_root: the live media directory to replace")
        parent = os.path.dirname(os.path.abspath(cfg.media_root))
        if not os.path.isdir(parent):
            raise BackupError("media_root %s: its parent directory %s does not exist" % (cfg.media_root, parent))
    if cfg.media_restore_mode == "scratch":
        if not cfg.media_scratch_dir:
            raise BackupError("media_restore_mode=scratch needs media_scratch_dir: the directory to extract into")
        if os.path.isdir(cfg.media_scratch_dir) and os.listdir(cfg.media_scratch_dir):
            raise BackupError("media_scratch_dir %s is not empty" % cfg.media_scratch_dir)


def _check_restore_host(cfg: Config) -> None:
    if not os.path.isdir(cfg.download_dir):
        raise BackupError("download_dir %s is not a directory" % cfg.download_dir)
    for name, lookup in (("media_owner", pwd.getpwnam), ("media_group", grp.getgrnam)):
        if cfg[name]:
            try:
                lookup(cfg[name])
            except KeyError:
                raise BackupError("%s %r does not exist on this host" % (name, cfg[name]))
    if cfg.age_identity is not None and "AGE-SECRET-KEY-1" not in cfg.age_identity \
            and "PRIVATE KEY" not in cfg.age_identity:
        raise BackupError("age_identity does not hold an age identity (AGE-SECRET-KEY-1...) or an SSH private key")


CHECKS = {
    "backup": (_check_backup,),
    "prune": (_check_prune,),
    "list": (),
    "check-freshness": (),
    "restore": (_check_restore_db, _check_restore_media, _check_restore_host),
}


def validate(cfg: Config, command: str) -> None:
    """Checks the spec cannot express, each naming the option. COMMAND: a key of CHECKS."""
    _check_common(cfg)
    for check in CHECKS[command]:
        check(cfg)
