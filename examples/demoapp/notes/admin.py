from django.contrib import admin

from notes.models import Note, Upload


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ["title", "created"]
    search_fields = ["title", "body"]
    date_hierarchy = "created"


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["filename", "created"]
    date_hierarchy = "created"
