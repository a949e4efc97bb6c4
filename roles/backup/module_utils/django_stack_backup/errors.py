# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The errors of the backup core, and the signals that become one."""

from __future__ import annotations

import signal
import threading


class BackupError(Exception):
    """The one error of this package: the message says what failed and what to check."""


class Interrupted(BackupError):
    """A signal (SIGTERM, SIGINT, SIGHUP) stopped the run."""


class MissingObject(BackupError):
    """An object the listing named is not (or no longer) in the bucket."""


class handle_signals:
    """Turn SIGTERM/SIGINT/SIGHUP into Interrupted, so uploads are aborted and children killed."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __enter__(self):
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.saved[sig] = signal.signal(sig, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted("interrupted by %s" % signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        return False
