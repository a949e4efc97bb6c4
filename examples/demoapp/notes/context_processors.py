from django.http import HttpRequest

from demoapp.version import VERSION


def version(request: HttpRequest) -> dict[str, str]:
    """Make the release available to every template (shown in the footer)."""
    return {"version": VERSION}
