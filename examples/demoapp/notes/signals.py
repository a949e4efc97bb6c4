"""Keep the cached note list of the home page in step with the database."""

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from notes.models import NOTE_LIST_CACHE_KEY, Note


@receiver([post_save, post_delete], sender=Note)
def invalidate_note_list(**kwargs: object) -> None:
    # After the commit, so that a concurrent request cannot cache the old list again.
    transaction.on_commit(lambda: cache.delete(NOTE_LIST_CACHE_KEY))
