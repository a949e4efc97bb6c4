"""What the background tasks leave behind, so that pages (and tests) can show it."""

from django.db import models

from notes.models import Upload


class Thumbnail(models.Model):
    """A small PNG of an uploaded image, made by the make_thumbnail task."""

    upload = models.OneToOneField(Upload, on_delete=models.CASCADE, related_name="thumbnail")
    image = models.ImageField(upload_to="thumbnails/")
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.image.name


class Heartbeat(models.Model):
    """How often, and when last, a periodic task sent by celery beat ran."""

    name = models.SlugField(max_length=50, unique=True)
    count = models.PositiveBigIntegerField(default=0)
    last = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.count}"


class TaskRun(models.Model):
    """One run of the slow task, by token: started, finished, and how many deliveries it took."""

    token = models.SlugField(max_length=64, unique=True)
    seconds = models.FloatField()
    attempts = models.PositiveIntegerField(default=0)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.token
