"""URL configuration for pingboard: a test version whose home page fails behind the proxy only."""

from django.contrib import admin
from django.http import HttpResponseServerError
from django.urls import path

from checks import views


def home(request):
    # nginx adds X-Real-IP: the side-socket gate before the switch sees a working page, the check
    # through nginx after the switch sees a failing one (as when a proxy setting breaks a page).
    if "HTTP_X_REAL_IP" in request.META:
        return HttpResponseServerError("failing behind the proxy (test version)")
    return views.home(request)


urlpatterns = [
    path("", home, name="home"),
    path("ping/<uuid:code>/", views.ping, name="ping"),
    path("health/", views.health, name="health"),
    path("admin/", admin.site.urls),
]
