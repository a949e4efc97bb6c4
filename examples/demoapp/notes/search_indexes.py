"""The search index of the notes (django-haystack): full text, title and date."""

from haystack import indexes

from notes.models import Note


class NoteIndex(indexes.SearchIndex, indexes.Indexable):
    text = indexes.CharField(document=True, use_template=True)
    title = indexes.CharField(model_attr="title")
    created = indexes.DateTimeField(model_attr="created")

    def get_model(self) -> type[Note]:
        return Note
