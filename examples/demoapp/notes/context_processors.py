from django.conf import settings
from django.http import HttpRequest

from demoapp.version import VERSION


def version(request: HttpRequest) -> dict[str, str]:
    """Make the release available to every template (shown in the footer)."""
    return {"version": VERSION}


def environment(request: HttpRequest) -> dict[str, str]:
    """The non-production environment's name (empty in production), for the banner of every page."""
    return {"environment_name": settings.ENVIRONMENT_NAME}
