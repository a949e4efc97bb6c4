import os

from haystack import indexes

from notes.models import Note


class NoteIndex(indexes.SearchIndex, indexes.Indexable):
    text = indexes.CharField(document=True, use_template=True)  # the document field (df)
    title = indexes.CharField(model_attr="title")
    category = indexes.CharField(model_attr="category", faceted=True)  # also category_exact (string)
    views = indexes.IntegerField(model_attr="views")
    published = indexes.DateTimeField(model_attr="published")
    is_public = indexes.BooleanField(model_attr="is_public")
    if os.environ.get("STANDIN_EXTRA_FIELD"):  # a schema change: one more field in Solr
        summary = indexes.CharField()

        def prepare_summary(self, obj):
            return obj.body[:40]

    def get_model(self):
        return Note
