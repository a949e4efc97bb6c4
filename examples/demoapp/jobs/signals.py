"""Queue a thumbnail for every new upload, once the upload is committed."""

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from notes.models import Upload


@receiver(post_save, sender=Upload)
def queue_thumbnail(sender: type, instance: Upload, created: bool, **kwargs: object) -> None:
    if created:
        from jobs.tasks import make_thumbnail

        transaction.on_commit(lambda: make_thumbnail.delay(instance.pk))
