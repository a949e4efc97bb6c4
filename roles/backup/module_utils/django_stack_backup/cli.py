# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The server's command line (what the systemd timer runs): the modules' code path, with a JSON file
of the same options. Run as `python3 -m django_stack_backup.cli` with the package's parent directory
on sys.path; the backup role installs it as /usr/local/sbin/django-stack-backup."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .backup import backup
from .config import make_config, validate
from .errors import BackupError, handle_signals
from .metrics import write_textfile
from .restore import restore
from .retention import prune
from .sets import check_freshness, info
from .util import peak_rss_kb

CLI_USAGE = """Backup sets of a Django stack on S3 (the code path of the django_backup modules).

  %(prog)s --config FILE backup  [--check]
  %(prog)s --config FILE prune   [--check]
  %(prog)s --config FILE list    [--set ID]
  %(prog)s --config FILE check-freshness --max-age-hours N
  %(prog)s --config FILE restore [--check] [-o backup_set=ID] [-o db_restore_mode=scratch ...]

FILE is a JSON object with the modules' option names (s3_bucket, db_name, media_root, ...).
-o KEY=VALUE overrides one of them (VALUE is read as JSON when it parses, else as a string).
The result is printed as one JSON object on stdout, with the run's peak RSS; on failure the
message goes to stderr and the exit status is 1 (2 for usage errors). --metrics-file F.prom
(before the command) writes the backup's or the check's metrics for the node exporter's textfile collector (metrics.py), labelled
with the file's site (--metrics-site).
"""


def load_config(path: str, overrides: list[str]) -> dict:
    try:
        with open(path) as handle:
            params = json.load(handle)
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise BackupError("cannot read the config file %s: %s" % (path, exc.strerror))
    except ValueError as exc:
        raise BackupError("the config file %s is not valid JSON: %s" % (path, exc))
    if not isinstance(params, dict):
        raise BackupError("the config file %s must hold a JSON object of options" % path)
    secret = [k for k in ("s3_secret_key", "s3_session_token", "db_password", "age_identity") if params.get(k)]
    if secret and mode & 0o077 and mode & 0o004:
        sys.stderr.write("warning: %s holds %s but is readable by every user (chmod 0600 it)\n"
                         % (path, ", ".join(secret)))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise BackupError("-o %r: expected KEY=VALUE" % item)
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="django_stack_backup", description=CLI_USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON file of options (the modules' option names)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="override one option of the config file")
    parser.add_argument("--metrics-file", help="write the metrics of a backup or a freshness check to this .prom file")
    parser.add_argument("--metrics-site", default="", help="the site label of those metrics (default: the database name)")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name in ("backup", "prune", "restore", "list", "check-freshness"):
        commands[name] = sub.add_parser(name)
        commands[name].add_argument("-o", "--option", action="append", default=[], dest="sub_option",
                                    metavar="KEY=VALUE", help="override one option of the config file")
    for name in ("backup", "prune", "restore"):
        commands[name].add_argument("--check", action="store_true", help="report what would be done, change nothing")
    commands["list"].add_argument("--set", dest="backup_set", help="also print the manifest of this set (or 'latest')")
    commands["check-freshness"].add_argument("--max-age-hours", type=float, required=True)
    return parser


def run(args: argparse.Namespace) -> dict:
    cfg = make_config(load_config(args.config, args.option))
    args.site = metrics_site(args, cfg)
    if args.command == "backup":
        return backup(cfg, check_mode=args.check)
    if args.command == "prune":
        validate(cfg, "prune")
        return prune(cfg, check_mode=args.check)
    if args.command == "list":
        return info(cfg, args.backup_set)
    if args.command == "check-freshness":
        return check_freshness(cfg, args.max_age_hours, report=freshness_reporter(args))
    return restore(cfg, check_mode=args.check)


def metrics_site(args: argparse.Namespace, cfg) -> str:
    return args.metrics_site or cfg.db_name or "site"


def freshness_reporter(args: argparse.Namespace):
    """What check_freshness calls with the newest complete set (or None) and whether the check
    passes, before it fails: the metrics say how old the newest set is even when it is too old."""
    if not args.metrics_file:
        return None

    def report(newest_timestamp: float | None, passed: bool) -> None:
        args.freshness_reported = True
        values = {"django_stack_backup_freshness_check_success": 1 if passed else 0,
                  "django_stack_backup_freshness_check_timestamp_seconds": time.time()}
        if newest_timestamp is not None:
            values["django_stack_backup_newest_complete_set_timestamp_seconds"] = newest_timestamp
        write_metrics(args.metrics_file, args.site, values)
    return report


def write_metrics(path: str, site: str, values: dict) -> None:
    # Metrics never fail the backup or the check they describe: the journal says why they are missing.
    try:
        write_textfile(path, site, values)
    except (OSError, ValueError) as exc:
        sys.stderr.write("warning: the metrics were not written to %s: %s\n" % (path, exc))


def report_backup(args: argparse.Namespace, result: dict) -> None:
    if args.metrics_file and args.command == "backup" and not args.check:
        write_metrics(args.metrics_file, args.site, {
            "django_stack_backup_last_success_timestamp_seconds": time.time(),
            "django_stack_backup_last_size_bytes": result.get("size", 0),
            "django_stack_backup_last_duration_seconds": result.get("timings", {}).get("total", 0)})


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.option += args.sub_option
    try:
        with handle_signals():
            result = run(args)
    except BackupError as exc:
        sys.stderr.write("django_stack_backup %s: %s\n" % (args.command, exc))
        sys.stderr.flush()
        if args.command == "check-freshness" and args.metrics_file and not getattr(args, "freshness_reported", False):
            # The store could not be read: the check failed, whatever the newest set's date.
            write_metrics(args.metrics_file, getattr(args, "site", args.metrics_site or "site"), {
                "django_stack_backup_freshness_check_success": 0,
                "django_stack_backup_freshness_check_timestamp_seconds": time.time()})
        return 1
    except Exception as exc:  # a bug: say so, with the traceback, and still exit non-zero
        import traceback
        sys.stderr.write("django_stack_backup %s: unexpected error %s: %s\n%s"
                         % (args.command, type(exc).__name__, exc, traceback.format_exc()))
        sys.stderr.flush()
        return 1
    report_backup(args, result)
    result["peak_rss_kb"] = peak_rss_kb()
    result["command"] = args.command
    sys.stdout.write(json.dumps(result, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = cli_main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # daemon threads stuck on a dead connection must not delay the exit
