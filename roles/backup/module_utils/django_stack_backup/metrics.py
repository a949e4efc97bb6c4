# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Prometheus metrics of the server's backups, as a file for the node exporter's textfile
collector: the nightly backup writes its size and duration when it succeeds, the freshness check
the date of the newest complete set in the store and whether it passed. Written atomically (a
temporary file, then a rename), readable by the exporter's user."""

from __future__ import annotations

import os
import re
import tempfile

HELP = {
    "django_stack_backup_last_success_timestamp_seconds": "When this host's last backup of the site completed (Unix time).",
    "django_stack_backup_last_size_bytes": "Size of the last complete backup set, as stored.",
    "django_stack_backup_last_duration_seconds": "How long the last complete backup took.",
    "django_stack_backup_newest_complete_set_timestamp_seconds": "Date of the newest complete set in the store (Unix time).",
    "django_stack_backup_freshness_check_success": "1 when the last freshness check passed, else 0.",
    "django_stack_backup_freshness_check_timestamp_seconds": "When the freshness check last ran (Unix time).",
}
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def write_textfile(path: str, site: str, values: dict) -> None:
    """Replace PATH with VALUES ({metric name: number}), each labelled site=SITE."""
    if not _LABEL.match(site):
        raise ValueError("site label %r: letters, digits, _, . and - only" % site)
    lines = []
    for name, value in values.items():
        lines += ["# HELP %s %s" % (name, HELP[name]), "# TYPE %s gauge" % name,
                  '%s{site="%s"} %s' % (name, site, repr(float(value)))]
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
            os.fchmod(handle.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
