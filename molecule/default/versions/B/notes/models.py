from pathlib import Path

from django.db import models

# The home page caches its note list under this key; saving or deleting a note clears it.
NOTE_LIST_CACHE_KEY = "notes:list"


class Note(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    # Version B of tests/test_deploy.py. A default in the database too (db_default), so that the
    # previous release, whose INSERTs do not name the column, keeps working during the deploy
    # and after a rollback of the code.
    pinned = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return self.title


class Counter(models.Model):
    """A named counter; the /counter/ page increments a single row."""

    name = models.SlugField(max_length=50, unique=True)
    value = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


class Upload(models.Model):
    file = models.FileField(upload_to="uploads/")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return self.filename

    @property
    def filename(self) -> str:
        return Path(self.file.name).name
