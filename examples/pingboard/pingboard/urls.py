"""URL configuration for pingboard."""

from django.contrib import admin
from django.urls import path

from checks import views

urlpatterns = [
    path("", views.home, name="home"),
    path("ping/<uuid:code>/", views.ping, name="ping"),
    path("health/", views.health, name="health"),
    path("admin/", admin.site.urls),
]
