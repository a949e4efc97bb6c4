from django.urls import path

from notes import views

app_name = "notes"
urlpatterns = [
    path("", views.home, name="home"),
    path("notes/new/", views.note_create, name="note_create"),
    path("counter/", views.counter, name="counter"),
    path("uploads/", views.uploads, name="uploads"),
    path("search/", views.search, name="search"),
    path("stats/", views.stats, name="stats"),
    path("healthz", views.healthz, name="healthz"),
]
