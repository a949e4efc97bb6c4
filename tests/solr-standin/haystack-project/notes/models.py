from django.db import models


class Note(models.Model):  # the demo app's Note (examples/demoapp/notes), with a date the tests choose
    title = models.CharField(max_length=200)
    body = models.TextField()
    published = models.DateTimeField()

    def __str__(self):
        return self.title
