"""Root URL configuration."""

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("notes.urls")),
    path("", include("jobs.urls")),
]
# Serves uploads only when DEBUG is on (runserver); in production nginx serves them.
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
if settings.BENCH_SERVE_STATIC_AT:
    urlpatterns += [
        re_path(rf"^{settings.BENCH_SERVE_STATIC_AT.strip('/')}/(?P<path>.*)$", serve,
                {"document_root": settings.STATIC_ROOT}),
    ]
if settings.ERROR_PROBE_PATH:
    from demoapp.observability import error_probe

    urlpatterns += [path(settings.ERROR_PROBE_PATH.strip("/") + "/", error_probe)]
