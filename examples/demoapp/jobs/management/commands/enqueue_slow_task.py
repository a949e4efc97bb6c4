"""Queue jobs.tasks.slow_task: manage.py enqueue_slow_task --token T --seconds S."""

from django.core.management.base import BaseCommand

from jobs.tasks import slow_task


class Command(BaseCommand):
    help = "Queue the slow demo task (it sleeps, then records that it finished)."

    def add_arguments(self, parser):
        parser.add_argument("--token", required=True, help="name of the run, shown by /jobs/status")
        parser.add_argument("--seconds", type=float, default=20.0, help="how long the task sleeps")

    def handle(self, *args, token: str, seconds: float, **options):
        result = slow_task.delay(token, seconds)
        self.stdout.write(f"queued slow_task {token} ({seconds:g} s) as {result.id}")
