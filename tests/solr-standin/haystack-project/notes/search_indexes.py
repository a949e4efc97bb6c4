import os

from haystack import indexes

from notes.models import Note


class NoteIndex(indexes.SearchIndex, indexes.Indexable):
    """The demo app's index (examples/demoapp/notes/search_indexes.py): full text, title and a date."""

    text = indexes.CharField(document=True, use_template=True)  # the document field (df)
    title = indexes.CharField(model_attr="title")
    published = indexes.DateTimeField(model_attr="published")
    if os.environ.get("STANDIN_EXTRA_FIELD"):  # a schema change: one more field in Solr
        summary = indexes.CharField()

        def prepare_summary(self, obj):
            return obj.body[:40]

    def get_model(self):
        return Note
