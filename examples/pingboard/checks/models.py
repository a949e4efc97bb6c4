import uuid
from datetime import timedelta

from django.db import models


class Check(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "new"
        UP = "up", "up"
        DOWN = "down", "down"

    name = models.CharField(max_length=100)
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    timeout = models.PositiveIntegerField(default=3600, help_text="Seconds without a ping before the check is down.")
    status = models.CharField(max_length=4, choices=Status.choices, default=Status.NEW)
    last_ping = models.DateTimeField(null=True, blank=True)
    n_pings = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def is_overdue(self, now):
        return self.last_ping is not None and self.last_ping + timedelta(seconds=self.timeout) < now


class Ping(models.Model):
    owner = models.ForeignKey(Check, on_delete=models.CASCADE, related_name="pings")
    created = models.DateTimeField(auto_now_add=True)
    method = models.CharField(max_length=10)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
