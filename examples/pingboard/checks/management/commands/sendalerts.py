import logging
import os
import signal
import threading

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.utils import timezone

from checks.models import Check

logger = logging.getLogger("checks.sendalerts")


class Command(BaseCommand):
    help = "Mark checks whose last ping is older than their timeout as down; loop until SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Run a single round and exit.")

    def handle(self, *args, once=False, **options):
        try:
            interval = float(os.environ.get("SENDALERTS_INTERVAL", "").strip() or 10)
        except ValueError:
            raise CommandError("SENDALERTS_INTERVAL must be a number of seconds.") from None
        release = os.environ.get("PINGBOARD_RELEASE", "").strip() or "unknown"
        logger.info("sendalerts: started pid=%d release=%s", os.getpid(), release)
        if once:
            self.run_round()
            return

        stopping = threading.Event()

        def request_stop(signum, frame):
            stopping.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        while not stopping.is_set():
            self.run_round()
            stopping.wait(interval)
        logger.info("sendalerts: stopping")

    def run_round(self):
        close_old_connections()
        now = timezone.now()
        for check in Check.objects.filter(status=Check.Status.UP, last_ping__isnull=False):
            if not check.is_overdue(now):
                continue
            # Only if no ping arrived in the meantime.
            changed = Check.objects.filter(pk=check.pk, status=Check.Status.UP, last_ping=check.last_ping).update(
                status=Check.Status.DOWN
            )
            if changed:
                logger.info(
                    "sendalerts: check %s (%s) is down: last ping %s, timeout %ds",
                    check.name,
                    check.code,
                    check.last_ping.isoformat(),
                    check.timeout,
                )
        close_old_connections()
