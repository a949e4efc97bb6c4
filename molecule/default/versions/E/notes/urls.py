"""Version E of tests/test_deploy.py: the health page answers 200, the home page 500 (the gate
before the switch must refuse it; it asks every URL of django_app_healthcheck_urls)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from notes import views


def broken_home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("version E: the home page is broken on purpose", status=500, content_type="text/plain")


app_name = "notes"
urlpatterns = [
    path("", broken_home, name="home"),
    path("notes/new/", views.note_create, name="note_create"),
    path("counter/", views.counter, name="counter"),
    path("uploads/", views.uploads, name="uploads"),
    path("search/", views.search, name="search"),
    path("healthz", views.healthz, name="healthz"),
]
