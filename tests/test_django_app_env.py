"""The app's environment: the preset, django_app_env on top, and the composite URLs.

The role's own template and variables are rendered by Ansible on this machine (no server): the
file must give a shell exactly the values the inventory declared, however hostile they look, and
the composite URLs must parse back into the stack's settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s" * 20 + "-unit-test-only-" + "k" * 20

PLAY = """
- name: Render the app's environment file
  hosts: localhost
  gather_facts: false
  vars_files:
    - {root}/roles/django_app/defaults/main.yml
    - {root}/roles/django_app/vars/main.yml
  tasks:
    - name: Render
      ansible.builtin.template:
        src: {root}/roles/django_app/templates/app/shared/env.j2
        dest: {out}/env
        mode: "0600"
    - name: Write the composites
      ansible.builtin.copy:
        content: "{{{{ {{'database_url': django_app_database_url, 'cache_url': django_app_cache_url,
                      'media_on_s3': django_app_export.media_on_s3,
                      'media_s3_bucket': django_app_export.media_s3_bucket}} | to_json }}}}"
        dest: {out}/composites.json
        mode: "0600"
"""


def render(tmp_path: Path, variables: dict) -> tuple[Path, dict]:
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(root=ROOT, out=tmp_path))
    varfile = tmp_path / "vars.json"
    varfile.write_text(json.dumps({"django_app_secret_key": SECRET, "django_app_db_password": "p" * 12,
                                   "django_app_allowed_hosts": ["example.com"], **variables}))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    bindir = Path(sys.executable).parent
    result = subprocess.run([str(bindir / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play),
                             "-e", f"@{varfile}"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path / "env", json.loads((tmp_path / "composites.json").read_text())


def sourced(path: Path) -> dict:
    """What a shell (bin/manage: set -a; . env) makes of the file."""
    out = subprocess.run(["sh", "-c", 'set -a; . "$1"; set +a; env -0', "sh", str(path)], capture_output=True,
                         check=True, env={"PATH": "/usr/bin:/bin"}).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if item)


HOSTILE = {
    "SUBST": "$(touch /tmp/pwned) `id` ${HOME}",
    "QUOTES": 'say "hi"; exit 1',
    "HASH": "# not a comment",
    "SPACES": "  two  spaces  ",
    "EMPTY": "",
    "URL": "postgres://u:p%40ss@db.example.com:5432/x?sslmode=require&x=1",
}


def test_a_project_reads_its_own_names_and_every_value_arrives_literally(tmp_path):
    path, _ = render(tmp_path, {"django_app_env_preset": "none", "django_app_env": {
        **HOSTILE, "SECRET_KEY": "{{ django_app_secret_key }}", "DEBUG": False, "WORKERS": 3}})
    env = sourced(path)
    for name, value in HOSTILE.items():
        assert env[name] == value, name
    assert env["SECRET_KEY"] == SECRET
    assert env["DEBUG"] == "false" and env["WORKERS"] == "3"
    assert env["DJANGO_SETTINGS_MODULE"] == "demoapp.settings"
    assert not [name for name in env if name.startswith("DJANGO_") and name != "DJANGO_SETTINGS_MODULE"]
    assert not Path("/tmp/pwned").exists()


def test_the_stack_preset_is_the_default_and_django_app_env_wins_over_it(tmp_path):
    path, _ = render(tmp_path, {"django_app_env": {"DJANGO_LOG_LEVEL": "WARNING", "EXTRA": "1"}})
    env = sourced(path)
    assert env["DJANGO_SECRET_KEY"] == SECRET and env["DJANGO_DB_PASSWORD"] == "p" * 12
    assert env["DJANGO_LOG_LEVEL"] == "WARNING" and env["EXTRA"] == "1"
    assert env["DJANGO_ALLOWED_HOSTS"] == "example.com"


def test_the_database_url_encodes_the_credentials_and_parses_back(tmp_path):
    password = "p@ss:w/rd?#%&=+ x!"
    _, urls = render(tmp_path, {"django_app_db_user": "app-user", "django_app_db_password": password,
                                "django_app_db_host": "db.internal", "django_app_db_port": 6432,
                                "django_app_db_name": "shop"})
    url = urlsplit(urls["database_url"])
    assert url.scheme == "postgres" and url.hostname == "db.internal" and url.port == 6432
    assert unquote(url.username) == "app-user" and unquote(url.password) == password
    assert url.path == "/shop"


def test_the_database_url_takes_a_socket_directory_and_an_ipv6_address(tmp_path):
    _, socket = render(tmp_path, {"django_app_db_host": "/run/postgresql"})
    assert unquote(urlsplit(socket["database_url"]).hostname) == "/run/postgresql"
    _, ipv6 = render(tmp_path, {"django_app_db_host": "fd00::5"})
    assert urlsplit(ipv6["database_url"]).hostname == "fd00::5"


def test_the_cache_url_lists_every_memcached_server(tmp_path):
    _, urls = render(tmp_path, {"django_app_cache_locations": ["10.0.0.5:11211", "10.0.0.6:11211"]})
    assert urls["cache_url"] == "pymemcache://10.0.0.5:11211,10.0.0.6:11211"
    _, none = render(tmp_path, {"django_app_cache_locations": []})
    assert none["cache_url"] == "locmem://"


def pingboard_parse_cache_url():
    """examples/pingboard's own CACHE_URL parser, taken from its settings module alone (the module
    itself needs the whole environment)."""
    import ast

    source = (ROOT / "examples" / "pingboard" / "pingboard" / "settings.py").read_text()
    function = next(node for node in ast.parse(source).body
                    if isinstance(node, ast.FunctionDef) and node.name == "parse_cache_url")
    namespace: dict = {"ImproperlyConfigured": ValueError}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "settings.py", "exec"), namespace)
    return namespace["parse_cache_url"]


def test_a_memcached_socket_reaches_the_apps_settings_as_a_socket(tmp_path):
    env, urls = render(tmp_path, {"django_app_cache_locations": ["unix:/run/memcached/memcached.sock"]})
    # The demo app's DJANGO_CACHE_LOCATION is Django's LOCATION as it is.
    assert sourced(env)["DJANGO_CACHE_LOCATION"] == "unix:/run/memcached/memcached.sock"
    # django-environ and django-cache-url read a URL without a host as a socket, its path the
    # socket's path (LOCATION unix:<path>); pymemcache://unix:/... would give them a host "unix:".
    assert urls["cache_url"] == "pymemcache:///run/memcached/memcached.sock"
    parts = urlsplit(urls["cache_url"])
    assert (parts.scheme, parts.netloc, parts.path) == ("pymemcache", "", "/run/memcached/memcached.sock")
    caches = pingboard_parse_cache_url()(urls["cache_url"])
    assert caches["LOCATION"] == ["unix:/run/memcached/memcached.sock"]

    # Django's PyMemcacheCache hands that LOCATION to pymemcache as the socket's path.
    from django.core.cache.backends.memcached import PyMemcacheCache

    clients = PyMemcacheCache(caches["LOCATION"], {})._cache.clients
    assert [client.server for client in clients.values()] == ["/run/memcached/memcached.sock"]


def test_the_media_bucket_reaches_the_app_and_the_export(tmp_path):
    (tmp_path / "local").mkdir()
    local, composites = render(tmp_path / "local", {})
    assert composites["media_on_s3"] is False and sourced(local)["DJANGO_MEDIA_S3_BUCKET"] == ""
    bucket = {"django_app_media_s3_bucket": "acme-media", "django_app_media_s3_endpoint_url": "https://s3.internal:9000",
              "django_app_media_s3_region": "eu-west-1", "django_app_media_s3_addressing_style": "path",
              "django_app_media_s3_access_key": "AKIDMEDIA", "django_app_media_s3_secret_key": "s3cr3t/+=",
              "django_app_media_s3_url": "https://cdn.example.com/media/"}
    (tmp_path / "s3").mkdir()
    path, composites = render(tmp_path / "s3", bucket)
    assert composites["media_on_s3"] is True and composites["media_s3_bucket"] == "acme-media"
    got = sourced(path)
    assert {name: got[name] for name in got if name.startswith("DJANGO_MEDIA_S3_")} == {
        "DJANGO_MEDIA_S3_BUCKET": "acme-media", "DJANGO_MEDIA_S3_ENDPOINT_URL": "https://s3.internal:9000",
        "DJANGO_MEDIA_S3_REGION": "eu-west-1", "DJANGO_MEDIA_S3_ADDRESSING_STYLE": "path",
        "DJANGO_MEDIA_S3_ACCESS_KEY": "AKIDMEDIA", "DJANGO_MEDIA_S3_SECRET_KEY": "s3cr3t/+=",
        "DJANGO_MEDIA_S3_URL": "https://cdn.example.com/media/"}
