from django.contrib import admin

from jobs.models import Heartbeat, TaskRun, Thumbnail


@admin.register(Thumbnail)
class ThumbnailAdmin(admin.ModelAdmin):
    list_display = ["upload", "image", "created"]


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "count", "last"]


@admin.register(TaskRun)
class TaskRunAdmin(admin.ModelAdmin):
    list_display = ["token", "seconds", "attempts", "started", "finished"]
