# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Constants of the set format and small helpers: times, set ids, sizes, timers."""

from __future__ import annotations

import datetime as dt
import os
import re
import resource
import secrets
import stat
import time

FORMAT = "django-stack-backup"
FORMAT_VERSION = 1
MIB = 1024 * 1024
MARKER = "COMPLETE"
MANIFEST = "manifest.json"
SET_ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{6})$")
STDERR_TAIL = 25
READ_CHUNK = 1 * MIB


# A set id dated further ahead than this of the reading clock is suspect (a server with a wrong
# clock, or a planted set): a future date would hold every retention slot and pass freshness.
FUTURE_TOLERANCE = dt.timedelta(minutes=10)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_set_id(moment: dt.datetime) -> str:
    """UTC time to the second, then 3 hex digits of the fraction of the second (so ids sort by time even
    within one second) and 3 random ones."""
    fraction = moment.microsecond * 4096 // 1000000
    return "%s-%03x%s" % (moment.strftime("%Y%m%dT%H%M%SZ"), fraction, secrets.token_hex(2)[:3])


def set_time(set_id: str) -> dt.datetime:
    match = SET_ID_RE.match(set_id)
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024.0
    return str(size)


def tail(lines, count: int = STDERR_TAIL) -> str:
    return "\n".join(list(lines)[-count:])


def peak_rss_kb() -> int:
    """Peak resident set size of this process, in KiB (children are not included: their figure from
    getrusage would include this process's pages at fork time)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def media_estimate(root: str) -> tuple[int, int]:
    """Regular files under ROOT and their bytes (a hard-linked file counted once)."""
    files = size = 0
    seen = set()
    for top, dirs, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files += 1
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    size += st.st_size
    return files, size


class Timer:
    def __init__(self):
        self.start = time.monotonic()
        self.marks = {}

    def mark(self, name: str, since: float) -> None:
        self.marks[name] = round(time.monotonic() - since, 3)

    def total(self) -> dict:
        return dict(self.marks, total=round(time.monotonic() - self.start, 3))
