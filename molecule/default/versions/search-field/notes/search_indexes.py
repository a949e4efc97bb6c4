"""The search index of the notes (django-haystack): full text, title and date."""

from haystack import indexes

from notes.models import Note


class NoteIndex(indexes.SearchIndex, indexes.Indexable):
    text = indexes.CharField(document=True, use_template=True)
    title = indexes.CharField(model_attr="title")
    created = indexes.DateTimeField(model_attr="created")
    # The Solr scenario's schema change: one more field in the index.
    headline = indexes.CharField(model_attr="title", indexed=False)

    def get_model(self) -> type[Note]:
        return Note
