"""Throughput of the deployed broker and workers: manage.py bench_ticks --count 2000.

Publishes COUNT trivial tasks (jobs.tasks.tick, which counts itself in the cache), waits until
the workers ran them all, and prints one JSON line: count, publish seconds, total seconds and
tasks per second (from the first publish to the last task done)."""

import json
import time
import uuid

from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandError

from jobs.tasks import tick


class Command(BaseCommand):
    help = "Send COUNT trivial tasks through the broker and time until the workers ran them all."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=2000)
        parser.add_argument("--timeout", type=float, default=300.0)

    def handle(self, *args, count: int, timeout: float, **options):
        counter = f"bench-ticks:{uuid.uuid4().hex}"
        cache.set(counter, 0, timeout=3600)
        started = time.monotonic()
        for _ in range(count):
            tick.delay(counter)
        published = time.monotonic() - started
        while (cache.get(counter) or 0) < count:
            if time.monotonic() - started > timeout:
                raise CommandError(f"only {cache.get(counter)} of {count} tasks ran within {timeout:g} s")
            time.sleep(0.05)
        total = time.monotonic() - started
        cache.delete(counter)
        self.stdout.write(json.dumps({"count": count, "publish_seconds": round(published, 3),
                                      "seconds": round(total, 3), "tasks_per_second": round(count / total, 1)}))
