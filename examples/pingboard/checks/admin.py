from django.contrib import admin

from checks.models import Check, Ping


@admin.register(Check)
class CheckAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "status", "last_ping", "timeout", "n_pings"]
    readonly_fields = ["code", "last_ping", "n_pings", "created"]


@admin.register(Ping)
class PingAdmin(admin.ModelAdmin):
    list_display = ["owner", "created", "method", "remote_addr"]
    list_filter = ["owner"]
