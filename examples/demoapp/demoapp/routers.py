"""Read-only work on the streaming replica (the "replica" database alias, when configured).

Reads go to the replica only inside ``replica_reads()`` (a context manager and a decorator):
the replica may lag behind the primary, so a page that shows what its own request, or the one
just before it, wrote must keep reading the primary. Everything else, writes and migrations
included, uses "default".
"""

from contextlib import ContextDecorator
from contextvars import ContextVar

from django.conf import settings

_replica_reads: ContextVar[bool] = ContextVar("replica_reads", default=False)


class replica_reads(ContextDecorator):  # noqa: N801 (used like a function)
    """Send the reads made inside to the replica, if there is one."""

    def __enter__(self):
        self._token = _replica_reads.set(True)
        return self

    def __exit__(self, *exc):
        _replica_reads.reset(self._token)
        return False


class ReplicaRouter:
    def db_for_read(self, model, **hints):
        if _replica_reads.get() and "replica" in settings.DATABASES:
            return "replica"
        return None

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        # Both aliases hold the same database.
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"
