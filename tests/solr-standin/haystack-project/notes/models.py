from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()
    category = models.CharField(max_length=50)
    views = models.IntegerField(default=0)
    published = models.DateTimeField()
    is_public = models.BooleanField(default=True)

    def __str__(self):
        return self.title
