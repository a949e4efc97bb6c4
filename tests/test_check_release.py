"""bin/check-release (the gate before a release goes live) against a real Django project.

The role's template is rendered by Ansible on localhost, once per set of variables, and run
against a tiny Django project in tmp_path whose `.venv` is this test's own virtualenv (it has
Django). No container: the script serves the release on its private unix socket as on a server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "roles" / "django_app" / "templates" / "app" / "bin" / "check-release.j2"
RELEASE_ID = "20260101T000000Z-abcdef123456"

SETTINGS = '''
SECRET_KEY = "unit-test-only-" + "k" * 50
DEBUG = False
ALLOWED_HOSTS = ["site.test"]
ROOT_URLCONF = "site_app.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
LOGGING_CONFIG = None
'''

URLS = '''
import os

from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import path

RELEASE = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scheme_checked(view):
    """Answers 400 unless the check says the client came over HTTPS (X-Forwarded-Proto)."""
    def wrapped(request):
        if not request.is_secure():
            return HttpResponse("not https", status=400)
        return view(request)
    return wrapped


urlpatterns = [
    path("healthz", scheme_checked(lambda r: HttpResponse("OK", content_type="text/plain"))),
    path("healthz.json", scheme_checked(lambda r: JsonResponse({"database": "ok", "release": RELEASE}))),
    path("healthz-other", lambda r: JsonResponse({"database": "ok", "release": "20250101T000000Z-000000000000"})),
    path("", scheme_checked(lambda r: HttpResponse("<html>\\n  <body>Welcome home</body>\\n</html>"))),
    path("broken", lambda r: HttpResponse("database is down\\nTraceback follows" + "x" * 1000, status=500)),
    path("moved", lambda r: HttpResponseRedirect("/elsewhere")),
]
'''

WSGI = '''
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_app.settings")
application = get_wsgi_application()
'''

BASE = {
    "django_app_name": "site_app",
    "django_app_user": "django",
    "django_app_root": "/srv/site_app",
    "django_app_wsgi_module": "site_app.wsgi:application",
    "django_app_healthcheck_path": "/healthz",
    "django_app_healthcheck_host": "site.test",
    "django_app_healthcheck_release_key": "release",
    "django_app_healthcheck_timeout": 10,
}

# name -> variables that differ from BASE (the env file is chosen by the fixture)
VARIANTS = {
    "ok": {"django_app_healthcheck_urls": [{"path": "/healthz", "status": 200}, {"path": "/", "status": 200}]},
    "broken-home": {"django_app_healthcheck_urls": [{"path": "/healthz"}, {"path": "/broken"}, {"path": "/moved"}]},
    "json-ok": {"django_app_healthcheck_path": "/healthz.json",
                "django_app_healthcheck_urls": [{"path": "/healthz.json"}, {"path": "/"}]},
    "json-other": {"django_app_healthcheck_path": "/healthz-other",
                   "django_app_healthcheck_urls": [{"path": "/healthz-other"}, {"path": "/"}]},
    "statuses": {"django_app_healthcheck_urls": [
        {"path": "/moved", "status": [301, 302]}, {"path": "/", "status": 200, "contains": "Welcome home"}]},
    "contains-missing": {"django_app_healthcheck_urls": [{"path": "/", "contains": "Goodbye"}]},
    "bad-settings": {"env": "bad", "django_app_healthcheck_urls": [{"path": "/healthz"}]},
    "bad-wsgi": {"django_app_wsgi_module": "site_app.nowsgi:application",
                 "django_app_healthcheck_urls": [{"path": "/healthz"}]},
}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A release of the tiny project, and check-release rendered for each variant."""
    tmp = tmp_path_factory.mktemp("check-release")
    release = tmp / "releases" / RELEASE_ID
    write(release / "manage.py", "#!/usr/bin/env python\n")
    write(release / "site_app" / "__init__.py", "")
    write(release / "site_app" / "settings.py", SETTINGS)
    write(release / "site_app" / "urls.py", URLS)
    write(release / "site_app" / "wsgi.py", WSGI)
    os.symlink(sys.prefix, release / ".venv")  # this virtualenv has Django
    write(tmp / "env-good", "DJANGO_SETTINGS_MODULE='site_app.settings'\nDJANGO_DEBUG='false'\n")
    write(tmp / "env-bad", "DJANGO_SETTINGS_MODULE='site_app.nosettings'\n")

    tasks, paths = [], {}
    for name, variables in VARIANTS.items():
        variables = dict(variables)
        env = variables.pop("env", "good")
        paths[name] = tmp / "bin" / f"check-release-{name}"
        tasks.append({
            "name": f"Render check-release ({name})",
            "ansible.builtin.template": {"src": str(TEMPLATE), "dest": str(paths[name]), "mode": "0755"},
            "vars": {**BASE, "django_app_env_file": str(tmp / f"env-{env}"), **variables},
        })
    (tmp / "bin").mkdir()
    play = tmp / "render.yml"
    play.write_text(json.dumps([{"name": "Render", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             str(play)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return release, paths


def check(scripts, variant: str, *args: str) -> subprocess.CompletedProcess:
    release, paths = scripts
    return subprocess.run([str(paths[variant]), *args, str(release)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_every_url_answering_as_expected_passes(scripts):
    result = check(scripts, "ok")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GET /healthz 200" in result.stdout and "GET / 200" in result.stdout


def test_a_page_answering_500_fails_naming_path_status_and_body(scripts):
    """The user's report: the health page answered 200 and every other page 500; it went live."""
    result = check(scripts, "broken-home")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    line = next(line for line in result.stdout.splitlines() if "GET /broken" in line)
    assert "answered 500, expected 200" in line and "database is down Traceback follows" in line, line
    assert len(line) < 450  # the body's start only, on one line
    # A redirect is not followed: it is a status like any other.
    assert "GET /moved answered 302 (Location: /elsewhere), expected 200" in result.stdout, out
    assert "GET /healthz" not in result.stdout  # it passed


def test_expected_status_lists_and_contained_text(scripts):
    result = check(scripts, "statuses")
    assert result.returncode == 0, result.stdout + result.stderr
    result = check(scripts, "contains-missing")
    assert result.returncode == 1
    assert 'GET / answered 200 without the text "Goodbye"' in result.stdout, result.stdout


def test_a_plain_text_health_answer_passes_with_the_release_key_configured(scripts):
    # "ok" keeps django_app_healthcheck_release_key = release; /healthz answers plain "OK".
    result = check(scripts, "ok")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_json_health_answer_naming_this_release_passes(scripts):
    result = check(scripts, "json-ok")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_json_health_answer_naming_another_release_fails(scripts):
    result = check(scripts, "json-other")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "GET /healthz-other answered from release '20250101T000000Z-000000000000'" in result.stdout, result.stdout
    assert RELEASE_ID in result.stdout


def test_import_only_passes_for_a_sound_release(scripts):
    result = check(scripts, "ok", "--import-only")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "site_app.settings" in result.stdout and "site_app.wsgi:application" in result.stdout


def test_import_only_names_a_wrong_settings_module(scripts):
    result = check(scripts, "bad-settings", "--import-only")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot import the settings module site_app.nosettings (django_app_settings_module)" in result.stdout
    assert "ModuleNotFoundError" in result.stdout


def test_import_only_names_a_wrong_wsgi_module(scripts):
    result = check(scripts, "bad-wsgi", "--import-only")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot load the WSGI application site_app.nowsgi:application (django_app_wsgi_module)" in result.stdout
