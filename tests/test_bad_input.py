"""A role given invalid input fails before changing anything, naming the variable.

The roles run for real here (connection local, check mode as a second safety net):
the failure must come from argument-spec validation or the preflight asserts, which
run before the first task that could change the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fact_cache_env

ROOT = Path(__file__).resolve().parents[1]
VALID_SECRET = "s" * 20 + "-unit-test-only-" + "k" * 20

PLAY = """
- name: Apply one role with the given variables
  hosts: localhost
  gather_facts: true
  roles:
    - role: {role}
"""


# What each role that serves the app needs to run alone: its own variables, which the playbooks
# fill from django_app's export (docs/architecture.md).
APP = {"name": "demoapp", "user": "django", "group": "django", "root": "/srv/demoapp",
       "current": "/srv/demoapp/current", "venv": "/srv/demoapp/current/.venv", "env": "/srv/demoapp/shared/env"}
ROLE_INPUTS = {
    "gunicorn": {"gunicorn_app_name": APP["name"], "gunicorn_user": APP["user"], "gunicorn_group": APP["group"],
                 "gunicorn_virtualenv": APP["venv"], "gunicorn_wsgi_app": "demoapp.wsgi:application",
                 "gunicorn_env_file": APP["env"], "gunicorn_working_dir": APP["current"]},
    "apache_wsgi": {"apache_wsgi_app_name": APP["name"], "apache_wsgi_user": APP["user"],
                    "apache_wsgi_group": APP["group"], "apache_wsgi_working_dir": APP["current"],
                    "apache_wsgi_virtualenv": APP["venv"], "apache_wsgi_wsgi_app": "demoapp.wsgi:application",
                    "apache_wsgi_env_file": APP["env"]},
    "nginx": {"nginx_site_name": APP["name"], "nginx_server_names": ["example.com"],
              "nginx_static_root": APP["root"] + "/static", "nginx_media_root": APP["root"] + "/shared/media",
              "nginx_upstream": "unix:/run/gunicorn/demoapp.sock"},
    "celery": {"celery_app_module": APP["name"], "celery_user": APP["user"], "celery_group": APP["group"],
               "celery_virtualenv": APP["venv"], "celery_working_dir": APP["current"], "celery_env_file": APP["env"]},
    "django_processes": {"django_processes_app_name": APP["name"], "django_processes_user": APP["user"],
                         "django_processes_group": APP["group"], "django_processes_virtualenv": APP["venv"],
                         "django_processes_working_dir": APP["current"], "django_processes_env_file": APP["env"]},
    "backup": {"backup_name": APP["name"], "backup_db_name": APP["name"], "backup_db_owner": APP["name"],
               "backup_media_root": APP["root"] + "/shared/media", "backup_media_owner": APP["user"],
               "backup_media_group": APP["group"], "backup_media_s3_bucket": "", "backup_media_s3_endpoint_url": "",
               "backup_media_s3_region": "", "backup_media_s3_addressing_style": "auto",
               "backup_release_path": APP["current"],
               "backup_env_file": APP["env"], "backup_app_user": APP["user"]},
    "solr": {"solr_core_name": APP["name"], "solr_app_manage": APP["root"] + "/bin/manage",
             "solr_app_user": APP["user"], "solr_app_group": APP["group"]},
    "memcached": {"memcached_socket_group": APP["group"]},
    "haproxy": {"haproxy_site_name": APP["name"], "haproxy_server_name": "example.com", "haproxy_health_path": "/healthz",
                "haproxy_backends": [{"name": "web1", "address": "10.0.0.21"}, {"name": "web2", "address": "10.0.0.22"}]},
}


def run_role(tmp_path: Path, role: str, extra: dict, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(role=role))
    varfile = tmp_path / "vars.json"
    variables = {**ROLE_INPUTS.get(role, {}), **extra}
    varfile.write_text(json.dumps({k: v for k, v in variables.items() if k not in drop}))
    env = dict(
        os.environ,
        ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
        ANSIBLE_LIBRARY=str(ROOT / "library"),
        ANSIBLE_MODULE_UTILS=str(ROOT / "module_utils"),
        ANSIBLE_INJECT_FACT_VARS="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING="false",
        **fact_cache_env(),
    )
    bindir = Path(sys.executable).parent
    return subprocess.run(
        [str(bindir / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--check", str(play),
         "-e", f"@{varfile}"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


def assert_rejected(result: subprocess.CompletedProcess, *needles: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    for needle in needles:
        assert needle in out, f"{needle!r} not named in the failure:\n{out[-3000:]}"
    # Nothing ran past the checks: the recap shows no change.
    assert "changed=0" in out, out[-2000:]


PG_OK = {"postgresql_users": [{"name": "app", "password": "app-password-123"}],
         "postgresql_databases": [{"name": "app", "owner": "app"}]}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"postgresql_version": "fifteen"}, ["postgresql_version"]),
        ({"postgresql_version": 99}, ["postgresql_version"]),
        ({"postgresql_users": [{"name": "app"}]}, ["password", "postgresql_users"]),
        ({"postgresql_hba_entries": [{"type": "host", "database": "all", "user": "all",
                                      "address": "0.0.0.0/0", "method": "trust"}]}, ["postgresql_hba_entries"]),
        ({"postgresql_listen_addresses": ["*"]}, ["postgresql_listen_addresses"]),
        ({"postgresql_databases": [{"name": "x", "owner": "nobody_known"}]}, ["postgresql_databases"]),
        ({"postgresql_listen_addresses": ["::0"]}, ["postgresql_listen_addresses", "every interface"]),
        ({"postgresql_listen_addresses": ["10.0.0.5; host all all 0.0.0.0/0 trust"]}, ["postgresql_listen_addresses"]),
        ({"postgresql_hba_entries": [{"type": "host", "database": "all", "user": "app\nhost all all 0.0.0.0/0 trust",
                                      "address": "10.0.0.0/24", "method": "scram-sha-256"}]}, ["postgresql_hba_entries"]),
        ({"postgresql_hba_entries": [{"type": "host", "database": "all", "user": "app",
                                      "address": "10.0.0.0/24 trust", "method": "scram-sha-256"}]},
         ["postgresql_hba_entries", "CIDR"]),
        ({"postgresql_extra_settings": {"work_mem = '4MB'\nlisten_addresses": "*"}}, ["postgresql_extra_settings"]),
        ({"postgresql_extra_settings": {"log_line_prefix": "%m\nlisten_addresses = '*'"}}, ["postgresql_extra_settings"]),
        ({"postgresql_extra_settings": {"listen_addresses": "*"}}, ["postgresql_extra_settings", "listen_addresses"]),
        # A replica with no password for its primary, an unnamed slot, a primary that is no address.
        ({"postgresql_primary_address": "10.0.0.10", "postgresql_replica_slot": "db2"},
         ["postgresql_replication_password", "is a replica"]),
        ({"postgresql_primary_address": "10.0.0.10", "postgresql_replication_password": "r" * 20},
         ["postgresql_replica_slot"]),
        ({"postgresql_primary_address": "db1.example.com", "postgresql_replica_slot": "db2",
          "postgresql_replication_password": "r" * 20}, ["postgresql_primary_address", "db1.example.com"]),
        ({"postgresql_replicas": [{"name": "db-2; drop", "address": "10.0.0.12"}],
          "postgresql_replication_password": "r" * 20}, ["postgresql_replicas", "db-2; drop"]),
        ({"postgresql_replicas": [{"name": "db2", "address": "10.0.0.12"}]}, ["postgresql_replication_password"]),
        ({"postgresql_max_slot_wal_keep_size_mb": 10}, ["postgresql_max_slot_wal_keep_size_mb"]),
        ({"postgresql_promote_max_lag_bytes": "lots"}, ["postgresql_promote_max_lag_bytes"]),
        ({"postgresql_archive_timeout": 0}, ["postgresql_archive_timeout=0", "RPO"]),
        ({"postgresql_archive_command": "/x '%p'"}, ["postgresql_archive_command"]),
    ],
    ids=["version-type", "version-unavailable", "user-without-password", "trust-auth", "listen-everywhere", "unknown-owner",
         "listen-unspecified-v6", "listen-not-an-address", "hba-user-newline", "hba-address-not-a-network",
         "extra-setting-key-newline", "extra-setting-value-newline", "extra-setting-listener",
         "replica-without-password", "replica-without-slot", "primary-not-an-address", "slot-name", "replicas-without-password",
         "slot-wal-cap-too-small", "promote-lag-type", "archive-timeout-zero", "archive-command-quote"],
)
def test_postgresql_rejects_bad_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "postgresql", {**PG_OK, **extra}), *needles)


APP_OK = {
    "django_app_secret_key": VALID_SECRET,
    "django_app_db_password": "db-password-123",
    "django_app_allowed_hosts": ["example.com"],
    "django_app_source_path": str(ROOT / "examples" / "demoapp"),
}


@pytest.mark.parametrize(
    ("extra", "drop", "needles"),
    [
        ({}, "django_app_secret_key", ["django_app_secret_key"]),
        ({}, "django_app_db_password", ["django_app_db_password"]),
        ({"django_app_secret_key": "too-short"}, None, ["django_app_secret_key"]),
        ({"django_app_secret_key": "CHANGE_ME" + "x" * 50}, None, ["django_app_secret_key"]),
        ({"django_app_source": "svn"}, None, ["django_app_source"]),
        ({"django_app_allowed_hosts": []}, None, ["django_app_allowed_hosts"]),
        ({"django_app_debug": True}, None, ["django_app_debug"]),
        ({"django_app_db_port": "five"}, None, ["django_app_db_port"]),
        ({"django_app_source_path": "/nonexistent"}, None, ["django_app_source_path"]),
        ({"django_app_env": {"X": "it's"}}, None, ["django_app_env", "X"]),
        ({"django_app_env": {"X": "a\nB=1"}}, None, ["django_app_env", "X"]),
        ({"django_app_env": {"X": ["a", "b"]}}, None, ["django_app_env", "X"]),
        ({"django_app_env": {"X=1; touch /tmp/pwned; Y": "1"}}, None, ["django_app_env", "names"]),
        ({"django_app_env": {"$(reboot)": "1"}}, None, ["django_app_env", "names"]),
        ({"django_app_env": {"9LIVES": "1"}}, None, ["django_app_env", "names"]),
        ({"django_app_env_preset": "dj12"}, None, ["django_app_env_preset"]),
        ({"django_app_extra_env": {"X": "1"}}, None, ["django_app_extra_env", "django_app_env"]),
        ({"django_app_source": "git", "django_app_git_repo": "https://deploy:ghp_token@github.com/o/r.git"}, None,
         ["django_app_git_repo", "django_app_git_key_file"]),
        ({"django_app_source": "git", "django_app_git_repo": "ssh://git@example.com/r.git",
          "django_app_git_key_file": "/nonexistent/key"}, None, ["django_app_git_key_file", "/nonexistent/key"]),
        ({"django_app_deploy_commands": [{"name": "cache", "command": ["createcachetable"], "runas": "root"}]}, None,
         ["django_app_deploy_commands", "runas"]),
        ({"django_app_deploy_commands": [{"name": "cache", "command": []}]}, None, ["django_app_deploy_commands", "cache"]),
        ({"django_app_deploy_commands": [{"name": "slow", "command": ["x"], "timeout": 0}]}, None,
         ["django_app_deploy_commands", "slow"]),
        ({"django_app_deploy_commands": [{"name": "a", "command": ["x"]}, {"name": "a", "command": ["y"]}]}, None,
         ["django_app_deploy_commands", '"a"']),
        ({"django_app_deploy_commands": [{"command": ["x"]}]}, None, ["django_app_deploy_commands", "name"]),
        ({"django_app_pip_extra_requirements": ["gunicorn"]}, None, ["django_app_pip_extra_requirements", "gunicorn"]),
        ({"django_app_pip_extra_requirements": ["gunicorn==23.0.0; rm -rf /"]}, None,
         ["django_app_pip_extra_requirements"]),
        ({"django_app_build_user": "django"}, None, ["django_app_build_user"]),
        ({"django_app_build_user": "root"}, None, ["django_app_build_user"]),
        ({"django_app_build_user": "Build User"}, None, ["django_app_build_user"]),
        ({"django_app_pip_require_hashes": True}, None, ["django_app_pip_require_hashes", "celery==5.7.0"]),
        ({"django_app_cache_locations": ["unix:run/memcached/memcached.sock"]}, None,
         ["django_app_cache_locations", "unix:run/memcached/memcached.sock"]),
        ({"django_app_cache_locations": ["unix:/run/memcached/../x.sock"]}, None, ["django_app_cache_locations"]),
        ({"django_app_cache_locations": ["unix:/run/memcached/memcached.sock", "10.0.0.5:11211"]}, None,
         ["django_app_cache_locations", "only entry"]),
        ({"django_app_cache_locations": ["10.0.0.5:11211 -l"]}, None, ["django_app_cache_locations", "10.0.0.5:11211 -l"]),
        ({"django_app_cache_locations": ["10.0.0.5:11211,10.0.0.6:11211"]}, None, ["django_app_cache_locations"]),
        ({"django_app_cache_locations": ["10.0.0.5:99999"]}, None, ["django_app_cache_locations", "10.0.0.5:99999"]),
        ({"django_app_cache_locations": ["::1:11211"]}, None, ["django_app_cache_locations"]),
        # The form the app server imports: a module alone used to pass the checks and fail the build.
        ({"django_app_wsgi_module": "demoapp.wsgi"}, None, ["django_app_wsgi_module", "module:attribute", '"demoapp.wsgi"']),
        ({"django_app_wsgi_module": "demoapp.wsgi:application --bind 0.0.0.0:80"}, None, ["django_app_wsgi_module"]),
        ({"django_app_settings_module": "demoapp/settings", "django_app_celery_app": "demoapp"}, None, ["django_app_settings_module", '"demoapp/settings"']),
        ({"django_app_sentry_dsn": "http://key@sentry.internal/1"}, None, ["django_app_sentry_dsn", "django_app_sentry_allow_http"]),
        ({"django_app_sentry_dsn": "https://sentry.internal/1"}, None, ["django_app_sentry_dsn"]),
    ],
    ids=["no-secret-key", "no-db-password", "short-secret-key", "placeholder-secret-key", "unknown-source",
         "no-allowed-hosts", "debug-on", "port-type", "missing-source", "unsafe-env-value", "env-value-newline",
         "env-value-list", "env-name-command", "env-name-substitution", "env-name-digit", "unknown-env-preset",
         "old-extra-env-name", "git-credentials-in-url", "git-key-file-missing",
         "deploy-command-unknown-key", "deploy-command-empty", "deploy-command-timeout", "deploy-command-duplicate",
         "deploy-command-no-name", "extra-requirement-unpinned", "extra-requirement-injection", "build-user-is-app-user", "build-user-root", "build-user-name",
         "require-hashes-without-hashes", "cache-socket-relative", "cache-socket-dotdot", "cache-socket-not-alone",
         "cache-location-space", "cache-location-comma", "cache-location-port-range", "cache-location-v6-unbracketed",
         "wsgi-module-without-attribute", "wsgi-module-injection", "settings-module-path", "sentry-dsn-http", "sentry-dsn-no-key"],
)
def test_django_app_rejects_bad_input(tmp_path, extra, drop, needles):
    variables = {**APP_OK, **extra}
    if drop:
        variables.pop(drop)
    assert_rejected(run_role(tmp_path, "django_app", variables), *needles)


@pytest.mark.parametrize("locations", [["unix:/run/memcached/memcached.sock"],
                                       ["10.0.0.5:11211", "[fd00::5]:11211", "cache-1.internal:11211"], []],
                         ids=["socket", "tcp", "none"])
def test_django_app_accepts_good_cache_locations(tmp_path, locations):
    """The same check passes good entries: the failures above come from the bad values."""
    result = run_role(tmp_path, "django_app", {**APP_OK, "django_app_cache_locations": locations,
                                               "django_app_build_user": "root"})
    out = result.stdout + result.stderr
    # It went past the locations' check to a later one, which failed.
    assert result.returncode != 0 and "django_app_build_user" in out, out[-3000:]
    assert "django_app_cache_locations: each entry" not in out, out[-3000:]


MEDIA_S3 = {"django_app_media_s3_bucket": "acme-media", "django_app_media_s3_endpoint_url": "https://s3.internal:9000",
            "django_app_media_s3_access_key": "AKIDMEDIA", "django_app_media_s3_secret_key": "media-secret-value"}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"django_app_media_s3_bucket": "Acme_Media"}, ["django_app_media_s3_bucket", "'Acme_Media'"]),
        ({"django_app_media_s3_bucket": "ab"}, ["django_app_media_s3_bucket", "'ab'"]),
        ({"django_app_media_s3_bucket": "acme..media"}, ["django_app_media_s3_bucket", "'acme..media'"]),
        ({"django_app_media_s3_bucket": "192.168.1.10"}, ["django_app_media_s3_bucket", "not an IP address"]),
        ({"django_app_media_s3_endpoint_url": "http://s3.internal:9000"},
         ["django_app_media_s3_allow_http", "'http://s3.internal:9000'"]),
        ({"django_app_media_s3_endpoint_url": "https://s3.internal/bucket path"}, ["django_app_media_s3_endpoint_url"]),
        ({"django_app_media_s3_secret_key": ""}, ["django_app_media_s3_access_key and django_app_media_s3_secret_key"]),
        ({"django_app_media_s3_url": "http://cdn.example.com/"}, ["django_app_media_s3_url", "'http://cdn.example.com/'"]),
        ({"django_app_media_s3_addressing_style": "dns"}, ["django_app_media_s3_addressing_style"]),
        ({"django_app_media_s3_bucket": ""}, ["the endpoint", "need django_app_media_s3_bucket"]),
    ],
    ids=["bucket-case", "bucket-short", "bucket-dots", "bucket-ip", "endpoint-http", "endpoint-path", "half-keys",
         "url-http", "addressing-style", "settings-without-bucket"],
)
def test_django_app_rejects_bad_media_bucket(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "django_app", {**APP_OK, **MEDIA_S3, **extra}), *needles)


def test_django_app_accepts_a_media_bucket(tmp_path):
    """Good bucket settings (a private http endpoint allowed) pass the bucket's check."""
    variables = {**APP_OK, **MEDIA_S3, "django_app_media_s3_endpoint_url": "http://10.0.0.5:9000",
                 "django_app_media_s3_allow_http": True, "django_app_media_s3_url": "https://cdn.example.com/media/",
                 "django_app_build_user": "root"}
    result = run_role(tmp_path, "django_app", variables)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "django_app_build_user" in out, out[-3000:]
    assert "Invalid media bucket input" not in out, out[-3000:]
    assert "media-secret-value" not in out


@pytest.mark.parametrize(
    ("urls", "needles"),
    [
        ([{"path": "healthz"}], ["django_app_healthcheck_urls", '"healthz"', "must start with /"]),
        ([{"path": "/ok then"}], ["django_app_healthcheck_urls", "whitespace"]),
        ([{"path": "/healthz", "expect": 200}], ["django_app_healthcheck_urls", "expect"]),
        ([{"path": "/healthz", "status": 0}], ["django_app_healthcheck_urls", "status 0", "between 100 and 599"]),
        ([{"path": "/"}, {"path": "/healthz", "status": [200, 600]}], ["django_app_healthcheck_urls", "entry 2", "600"]),
    ],
    ids=["no-leading-slash", "whitespace", "unknown-key", "status-zero", "status-in-list-too-high"],
)
def test_django_app_rejects_bad_healthcheck_urls(tmp_path, urls, needles):
    result = run_role(tmp_path, "django_app", {**APP_OK, "django_app_healthcheck_urls": urls})
    assert_rejected(result, *needles)


def test_django_app_accepts_healthcheck_urls_with_statuses_and_text(tmp_path):
    """The same check passes good entries: the failures above come from the bad values."""
    urls = [{"path": "/healthz"}, {"path": "/", "status": [200, 302], "contains": "Notes"}, {"path": "/x?y=1", "status": 404}]
    result = run_role(tmp_path, "django_app", {**APP_OK, "django_app_healthcheck_urls": urls, "django_app_build_user": "root"})
    out = result.stdout + result.stderr
    # It went past the URL check to a later one, which failed.
    assert result.returncode != 0 and "django_app_build_user" in out, out[-3000:]
    assert "django_app_healthcheck_urls" not in out, out[-3000:]


@pytest.mark.parametrize(
    ("variable", "value", "looked_for"),
    [
        ("django_app_settings_module", "mysite.settings", "mysite/settings.py"),
        ("django_app_wsgi_module", "mysite.wsgi:application", "mysite/wsgi.py"),
    ],
    ids=["settings-module", "wsgi-module"],
)
def test_django_app_refuses_an_archive_source_without_the_named_module(tmp_path, variable, value, looked_for):
    """A wrong app name or settings module is found before anything is built, not at collectstatic."""
    project = tmp_path / "project"
    (project / "demoapp").mkdir(parents=True)
    (project / "manage.py").write_text("#!/usr/bin/env python\n")
    (project / "demoapp" / "__init__.py").write_text("")
    (project / "demoapp" / "settings.py").write_text("")
    (project / "demoapp" / "wsgi.py").write_text("")
    (project / "requirements.txt").write_text("Django==5.2\n")
    result = run_role(tmp_path, "django_app", {**APP_OK, "django_app_source_path": str(project), variable: value})
    assert_rejected(result, variable, str(project / looked_for))


@pytest.mark.parametrize(
    ("role", "extra", "needles"),
    [
        ("common", {"common_timezone": "Europe/Berlin; rm -rf /"}, ["common_timezone"]),
        ("common", {"common_journald_storage": "tape"}, ["common_journald_storage"]),
        ("common", {"common_needrestart_mode": "i"}, ["common_needrestart_mode"]),
        ("gunicorn", {"gunicorn_memory_deny_write_execute": "sometimes"}, ["gunicorn_memory_deny_write_execute"]),
        ("celery", {"celery_memory_deny_write_execute": "sometimes"}, ["celery_memory_deny_write_execute"]),
        ("memcached", {"memcached_listen_address": "0.0.0.0"}, ["memcached_listen_address"]),
        ("memcached", {"memcached_listen_address": "127.0.0.1,::0"}, ["memcached_listen_address", "every interface"]),
        ("memcached", {"memcached_listen_address": "[::]"}, ["memcached_listen_address"]),
        ("memcached", {"memcached_listen_address": "127.0.0.1 -U 11211"}, ["memcached_listen_address"]),
        ("apache_wsgi", {"apache_wsgi_listen_address": "::"}, ["apache_wsgi_listen_address"]),
        ("nginx", {"nginx_static_url": "/static"}, ["nginx_static_url"]),
        ("nginx", {"nginx_media_url": "media/"}, ["nginx_media_url"]),
        ("memcached", {"memcached_memory_mb": "lots"}, ["memcached_memory_mb"]),
        ("memcached", {"memcached_socket_path": "memcached.sock"}, ["memcached_socket_path"]),
        ("memcached", {"memcached_socket_path": "/run/postgresql/memcached.sock"}, ["memcached_socket_path"]),
        ("memcached", {"memcached_socket_path": "/run/memcached/../lock/memcached.sock"}, ["memcached_socket_path"]),
        ("memcached", {"memcached_socket_path": "/run/memcached/" + "m" * 100}, ["memcached_socket_path"]),
        ("memcached", {"memcached_socket_path": "/run/memcached/memcached.sock -l 0.0.0.0"}, ["memcached_socket_path"]),
        ("memcached", {"memcached_socket_path": "/run/memcached/memcached.sock", "memcached_socket_group": "root"},
         ["memcached_socket_group"]),
        ("memcached", {"memcached_socket_path": "/run/memcached/memcached.sock", "memcached_socket_group": "app -"},
         ["memcached_socket_group"]),
        ("memcached", {"memcached_socket_path": "/run/memcached/memcached.sock",
                       "memcached_socket_group": "no-such-group-djstack"}, ["memcached_socket_group", "not a group"]),
        ("memcached", {"memcached_extra_options": ["-v -l 0.0.0.0"]}, ["memcached_extra_options", "-l"]),
        ("memcached", {"memcached_extra_options": ["-vs/tmp/m.sock"]}, ["memcached_extra_options"]),
        ("memcached", {"memcached_extra_options": ["--unix-mask=0777"]}, ["memcached_extra_options"]),
        ("gunicorn", {"gunicorn_workers": 0}, ["gunicorn_workers"]),
        ("nginx", {"nginx_tls_mode": "letsencrypt", "nginx_server_names": ["example.com"]}, ["nginx_tls_mode"]),
        ("nginx", {"nginx_tls_mode": "provided", "nginx_server_names": ["example.com"]},
         ["nginx_tls_certificate"]),
        ("nginx", {"nginx_server_names": ["_"]}, ["nginx_server_names"]),
        ("nginx", {"nginx_hsts_preload": True, "nginx_hsts_max_age": 300}, ["nginx_hsts_preload"]),
    ],
    ids=["bad-timezone", "journald-choice", "needrestart-interactive", "gunicorn-mdwe-type", "celery-mdwe-type",
         "memcached-everywhere", "memcached-unspecified-v6", "memcached-bracketed",
         "memcached-not-an-address", "apache-everywhere", "static-url-no-trailing-slash", "media-url-relative",
         "memcached-memory-type", "memcached-socket-relative", "memcached-socket-other-service",
         "memcached-socket-dotdot", "memcached-socket-too-long", "memcached-socket-space", "memcached-socket-group-root",
         "memcached-socket-group-not-a-name", "memcached-socket-group-missing", "memcached-extra-listener",
         "memcached-extra-socket-cluster", "memcached-extra-unix-mask", "no-workers",
         "tls-mode-choice", "provided-without-certificate", "catch-all-server-name", "hsts-preload-short"],
)
def test_other_roles_reject_bad_input(tmp_path, role, extra, needles):
    assert_rejected(run_role(tmp_path, role, extra), *needles)


WEBHOOK_TOKEN = "hook-token-unit-test-only-8c1d"


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"notifier_webhook_url": f"http://hooks.example.com/{WEBHOOK_TOKEN}"},
         ["notifier_webhook_url", "notifier_webhook_allow_http"]),
        ({"notifier_webhook_url": f"hooks.example.com/{WEBHOOK_TOKEN}", "notifier_webhook_allow_http": True},
         ["notifier_webhook_url"]),
        ({"notifier_webhook_url": f"https://hooks.example.com/{WEBHOOK_TOKEN} --data @/etc/shadow"},
         ["notifier_webhook_url"]),
        ({"notifier_email_to": ["ops@example.com, everyone@example.org"]}, ["notifier_email_to"]),
        ({"notifier_sendmail": "sendmail"}, ["notifier_sendmail"]),
        ({"notifier_timeout": 0}, ["notifier_timeout"]),
        ({"notifier_timeout": 600}, ["notifier_timeout"]),
    ],
    ids=["webhook-plain-http", "webhook-no-scheme", "webhook-space", "email-two-in-one",
         "sendmail-relative", "timeout-zero", "timeout-long"],
)
def test_notifier_rejects_bad_input(tmp_path, extra, needles):
    result = run_role(tmp_path, "notifier", extra)
    assert_rejected(result, *needles)
    # The webhook URL usually holds a token: no message shows it.
    assert WEBHOOK_TOKEN not in result.stdout + result.stderr


def test_nginx_rejects_a_relative_renewal_failure_command(tmp_path):
    assert_rejected(run_role(tmp_path, "nginx", {**ACME_OK, "nginx_acme_on_failure_command": ["notify", "%i"]}),
                    "nginx_acme_on_failure_command")


ACME_OK = {"nginx_tls_mode": "acme", "nginx_acme_email": "hostmaster@example.com",
           "nginx_server_names": ["example.com", ".example.org", "192.0.2.10"]}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"nginx_acme_email": ""}, ["nginx_acme_email"]),
        ({"nginx_acme_email": "hostmaster"}, ["nginx_acme_email"]),
        ({"nginx_acme_domains": ["exa mple.com"]}, ["nginx_acme_domains", "exa mple.com"]),
        ({"nginx_acme_domains": ["*.example.org"]}, ["nginx_acme_domains", "*.example.org"]),
        ({"nginx_acme_domains": ["192.0.2.10"]}, ["nginx_acme_domains", "192.0.2.10"]),
        ({"nginx_acme_domains": ["www.example.net"]}, ["nginx_acme_domains", "not served: ['www.example.net']"]),
        ({"nginx_server_names": ["192.0.2.10"]}, ["nginx_acme_domains", "at least one host name"]),
        ({"nginx_acme_directory_url": "http://acme.example.com/directory"}, ["nginx_acme_directory_url"]),
        ({"nginx_acme_directory_url": "ftp://127.0.0.1/dir"}, ["nginx_acme_directory_url"]),
        ({"nginx_acme_ca_bundle": "pebble.pem"}, ["nginx_acme_ca_bundle"]),
        ({"nginx_acme_key_type": "dsa1024"}, ["nginx_acme_key_type"]),
        ({"nginx_acme_ca_bundle": "/etc/ssl/ca.pem\nExecStart=/bin/sh"}, ["nginx_acme_ca_bundle", "line break"]),
        ({"nginx_acme_directory_url": "https://acme.example.com/dir\n"}, ["nginx_acme_directory_url", "line break"]),
        ({"nginx_tls_mode": "selfsigned", "nginx_ocsp_stapling": True}, ["nginx_ocsp_stapling"]),
        ({"nginx_ocsp_stapling": True, "nginx_ocsp_resolvers": ["dns.example.com"]}, ["nginx_ocsp_resolvers"]),
    ],
    ids=["acme-no-email", "acme-email-not-an-address", "acme-domain-not-a-hostname", "acme-domain-wildcard",
         "acme-domain-ip", "acme-domain-not-served", "acme-no-host-name", "acme-directory-plain-http",
         "acme-directory-scheme", "acme-ca-bundle-relative", "acme-key-type-choice", "acme-ca-bundle-newline",
         "acme-directory-newline", "ocsp-selfsigned", "ocsp-resolver-not-an-address"],
)
def test_nginx_rejects_bad_acme_and_ocsp_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "nginx", {**ACME_OK, **extra}), *needles)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"nginx_plain_http_paths": ["ping/"]}, ["nginx_plain_http_paths", "'ping/'"]),
        ({"nginx_plain_http_paths": ["/ping me/"]}, ["nginx_plain_http_paths", "'/ping me/'"]),
        ({"nginx_plain_http_paths": ["/ping/; return 200"]}, ["nginx_plain_http_paths", "'/ping/; return 200'"]),
        ({"nginx_plain_http_paths": ["/ping/{"]}, ["nginx_plain_http_paths", "'/ping/{'"]),
        ({"nginx_plain_http_paths": ["/"]}, ["nginx_plain_http_paths", "Refused in nginx_plain_http_paths: ['/']"]),
        ({"nginx_plain_http_paths": ["/ping/", "/ping/"]}, ["nginx_plain_http_paths", "distinct"]),
        ({"nginx_maintenance_exempt_paths": ["healthz"]}, ["nginx_maintenance_exempt_paths", "'healthz'"]),
        ({"nginx_maintenance_exempt_paths": ["/healthz$"]}, ["nginx_maintenance_exempt_paths", "'/healthz$'"]),
    ],
    ids=["plain-http-path-relative", "plain-http-path-space", "plain-http-path-semicolon", "plain-http-path-brace",
         "plain-http-path-root", "plain-http-path-twice", "maintenance-exempt-path-relative",
         "maintenance-exempt-path-dollar"],
)
def test_nginx_rejects_bad_plain_http_and_maintenance_paths(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "nginx", extra), *needles)


CELERY_OK = {"celery_beat_enabled": True}
WORKER = {"name": "default", "queues": ["celery"]}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"celery_workers": [{**WORKER, "prefech_multiplier": 4}]}, ["prefech_multiplier"]),
        ({"celery_workers": [{**WORKER, "queues": []}]}, ["celery_workers", "default"]),
        ({"celery_workers": [{"name": "default"}]}, ["queues"]),
        ({"celery_workers": [WORKER, {**WORKER, "name": "default"}]}, ["celery_workers", "unique"]),
        ({"celery_workers": [{**WORKER, "time_limit": 60, "soft_time_limit": 90}]}, ["soft_time_limit", "default"]),
        ({"celery_beat_enabled": False}, ["celery_beat_enabled", "exactly"]),
    ],
    ids=["unknown-worker-option", "no-queue", "queues-missing", "duplicate-worker", "soft-above-hard", "no-beat-host"],
)
def test_celery_rejects_bad_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "celery", {**CELERY_OK, **extra}), *needles)


PROCESS = {"name": "sendalerts", "command": ["python", "manage.py", "sendalerts"]}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"django_processes_list": [{**PROCESS, "replica": False}]}, ["django_processes_list", "replica"]),
        ({"django_processes_list": [{"name": "sendalerts"}]}, ["django_processes_list", "command"]),
        ({"django_processes_list": [{**PROCESS, "environment": {"X=1; Y": "1"}}]},
         ["django_processes_list", "environment names", "sendalerts", "X=1; Y"]),
        ({"django_processes_list": [{**PROCESS, "environment": {"GREETING": "hello\nExecStartPre=/bin/true"}}]},
         ["django_processes_list", "sendalerts", "GREETING"]),
        ({"django_processes_list": [{**PROCESS, "environment": {"GREETING": 'say "hi"'}}]},
         ["django_processes_list", "double quote", "sendalerts: \"GREETING\""]),
        ({"django_processes_list": [{**PROCESS, "name": "Send_Alerts"}]}, ["django_processes_list", "Send_Alerts"]),
        ({"django_processes_list": [PROCESS, {**PROCESS, "command": ["python", "manage.py", "other"]}]},
         ["django_processes_list", "unique", "sendalerts"]),
        ({"django_processes_list": [{**PROCESS, "command": ["bin/run"]}]}, ["django_processes_list", "absolute", "sendalerts"]),
        ({"django_processes_list": [{**PROCESS, "instances": 0}]}, ["django_processes_list", "instances", "sendalerts"]),
        ({"django_processes_list": [{**PROCESS, "read_write_paths": ["srv/media"]}]},
         ["django_processes_list", "read_write_paths", "srv/media"]),
        ({"django_processes_user": "root"}, ["django_processes_user"]),
        ({"django_processes_list": [{**PROCESS, "replicas": False}], "django_processes_singleton_host": "nohost"},
         ["django_processes_singleton_host", "nohost"]),
    ],
    ids=["unknown-process-option", "command-missing", "env-name-not-identifier", "env-value-newline",
         "env-value-quote", "bad-name", "duplicate-names", "relative-program", "no-instance", "relative-path",
         "user-root", "singleton-host-unknown"],
)
def test_django_processes_rejects_bad_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "django_processes", extra), *needles)


RABBITMQ_OK = {"rabbitmq_erlang_cookie": "C" * 32}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"rabbitmq_listen_addresses": ["0.0.0.0"]}, ["rabbitmq_listen_addresses"]),
        ({"rabbitmq_erlang_cookie": "short"}, ["rabbitmq_erlang_cookie"]),
        ({"rabbitmq_users": [{"name": "app", "password": "pass word!", "vhost": "app"}], "rabbitmq_vhosts": ["app"]},
         ["rabbitmq_users"]),
        ({"rabbitmq_users": [{"name": "app", "password": "secret123", "vhost": "nowhere"}]}, ["rabbitmq_users", "nowhere"]),
        ({"rabbitmq_distribution_address": "0.0.0.0"}, ["rabbitmq_distribution_address"]),
        ({"rabbitmq_distribution_address": "::0"}, ["rabbitmq_distribution_address"]),
        ({"rabbitmq_management_address": "[::]"}, ["rabbitmq_management_address"]),
        ({"rabbitmq_listen_addresses": ["rabbit.example.com"]}, ["rabbitmq_listen_addresses", "IP addresses"]),
        ({"rabbitmq_extra_settings": {"listeners.tcp.2": "0.0.0.0:5672"}}, ["rabbitmq_extra_settings", "listeners.tcp.2"]),
        ({"rabbitmq_extra_settings": {"log.file.level": "info\nlisteners.tcp.2 = 0.0.0.0:5672"}},
         ["rabbitmq_extra_settings", "line break"]),
    ],
    ids=["listen-everywhere", "short-cookie", "password-characters", "unknown-vhost", "distribution-everywhere",
         "distribution-unspecified-v6", "management-bracketed", "listen-hostname", "extra-setting-listener",
         "extra-setting-newline"],
)
def test_rabbitmq_rejects_bad_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "rabbitmq", {**RABBITMQ_OK, **extra}), *needles)


BACKUP_OK = {"backup_s3_bucket": "acme-backups",
             "backup_encrypt_recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"backup_s3_bucket": "Bad_Bucket"}, ["backup_s3_bucket"]),
        ({"backup_s3_access_key": "AKIAEXAMPLE"}, ["backup_s3_secret_key"]),
        ({"backup_encrypt_recipients": ["not-a-key"]}, ["backup_encrypt_recipients"]),
        ({"backup_keep_daily": 0}, ["backup_keep_daily"]),
        ({"backup_s3_sse": "rot13"}, ["backup_s3_sse"]),
        ({"backup_encrypt_recipients": []}, ["backup_encrypt_recipients", "backup_allow_unencrypted"]),
        ({"backup_drill_db_name": "demoapp"}, ["backup_drill_db_name"]),
        ({"backup_drill_db_name": "postgres"}, ["backup_drill_db_name"]),
        ({"backup_restore_mode": "in_place"}, ["backup_restore_mode is no longer a setting"]),
        ({"backup_restore_db_name": "demoapp"}, ["backup_restore_db_name"]),
        ({"backup_restore_db_name": "Demo-Restore"}, ["backup_restore_db_name"]),
        ({"backup_db_maintenance_database": "postgres; DROP"}, ["backup_db_maintenance_database"]),
        ({"backup_db_admin_host": "db9.example.com"}, ["backup_db_admin_host"]),
        ({"backup_media_s3_bucket": "Media_Bucket"}, ["backup_media_s3_bucket", "'Media_Bucket'"]),
        ({"backup_media_s3_bucket": "media", "backup_media_s3_endpoint_url": "https://s3.internal/x y"},
         ["backup_media_s3_endpoint_url", "'https://s3.internal/x y'"]),
        ({"backup_media_s3_bucket": "media", "backup_media_s3_access_key": "AKIDMEDIA"},
         ["backup_media_s3_access_key and backup_media_s3_secret_key"]),
        ({"backup_media_s3_addressing_style": "dns"}, ["backup_media_s3_addressing_style"]),
    ],
    ids=["bucket-name", "key-without-secret", "recipient", "no-daily", "sse-choice", "unencrypted",
         "drill-on-the-live-database", "drill-on-postgres", "restore-in-place", "restore-on-the-live-database",
         "restore-db-name", "maintenance-database-name", "admin-host-not-in-inventory", "media-bucket-name",
         "media-endpoint", "media-key-without-secret", "media-addressing-style"],
)
def test_backup_rejects_bad_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "backup", {**BACKUP_OK, **extra}), *needles)


PITR_OK = {"pitr_name": "demoapp", "pitr_s3_bucket": "site-archive"}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"pitr_restore_target_time": "yesterday"}, ["pitr_restore_target_time=yesterday", "ISO 8601"]),
        ({"pitr_restore_target_time": "2026-12-06 14:03"}, ["pitr_restore_target_time", "time zone"]),
        ({"pitr_s3_bucket": "Site_Archive"}, ["pitr_s3_bucket=Site_Archive"]),
        ({"pitr_s3_prefix": "/archive/"}, ["pitr_s3_prefix"]),
        ({"pitr_s3_endpoint_url": "https://s3.internal/x"}, ["pitr_s3_endpoint_url"]),
        ({"pitr_s3_access_key": "AKIDARCHIVER"}, ["pitr_s3_access_key/pitr_s3_secret_key"]),
        ({"pitr_restore_s3_secret_key": "secret with spaces", "pitr_restore_s3_access_key": "AKIDRESTORE"},
         ["pitr_restore_s3_access_key/pitr_restore_s3_secret_key"]),
        ({"pitr_name": "demo app"}, ["pitr_name"]),
        ({"pitr_s3_sse": "aes"}, ["pitr_s3_sse"]),
        ({"pitr_on_failure_command": ["logger", "failed"]}, ["pitr_on_failure_command"]),
    ],
    ids=["target-not-a-moment", "target-without-zone", "bucket-name", "prefix-slashes", "endpoint-path",
         "key-without-secret", "restore-secret", "name", "sse-choice", "failure-command-relative"],
)
def test_pitr_rejects_bad_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "pitr", {**PITR_OK, **extra}), *needles)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"solr_version": "8.11.2"}, ["solr_version", "Solr 9"]),
        ({"solr_version": "10.0.0"}, ["solr_version"]),
        ({"solr_heap": "4096g"}, ["solr_heap", "memory"]),
        ({"solr_heap": "lots"}, ["solr_heap"]),
        ({"solr_core_name": "my core/../x"}, ["solr_core_name"]),
        ({"solr_listen_address": "0.0.0.0"}, ["solr_listen_address"]),
        ({"solr_listen_address": "::0"}, ["solr_listen_address"]),
        ({"solr_listen_address": "[::]"}, ["solr_listen_address"]),
        ({"solr_archive_local_path": __file__}, ["solr_archive_sha512"]),
        ({"solr_archive_local_path": __file__, "solr_archive_sha512": "0" * 128}, ["refusing to install it"]),
        ({"solr_java_package": "openjdk-8-jre-headless"}, ["solr_java_package", "Java 11 or later"]),
    ],
    ids=["major-8", "major-10", "heap-above-memory", "heap-not-a-size", "core-name", "listen-everywhere",
         "listen-unspecified-v6", "listen-bracketed",
         "local-archive-without-checksum", "local-archive-wrong-checksum", "java-too-old"],
)
def test_solr_rejects_bad_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "solr", extra), *needles)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"haproxy_backends": []}, ["haproxy_backends"]),
        ({"haproxy_backends": [{"name": "web1", "address": "web1.example.com"}]}, ["haproxy_backends"]),
        ({"haproxy_backends": [{"name": "web 1", "address": "10.0.0.21"}]}, ["haproxy_backends"]),
        ({"haproxy_backends": [{"name": "web1", "address": "10.0.0.21"}, {"name": "web1", "address": "10.0.0.22"}]},
         ["haproxy_backends"]),
        ({"haproxy_server_name": ".example.com"}, ["haproxy_server_name"]),
        ({"haproxy_health_path": "healthz"}, ["haproxy_health_path"]),
        ({"haproxy_health_path": "/healthz hdr Host evil"}, ["haproxy_health_path"]),
        ({"haproxy_check_timeout_ms": 0}, ["haproxy_check_interval_ms", "haproxy_check_timeout_ms"]),
        ({"haproxy_https_port": 80}, ["haproxy_https_port"]),
        ({"haproxy_tls_mode": "provided"}, ["haproxy_tls_certificate"]),
        ({"haproxy_tls_mode": "acme"}, ["haproxy_tls_mode"]),
        ({"haproxy_backend_ca": "not a certificate"}, ["haproxy_backend_ca"]),
    ],
    ids=["no-backend", "backend-not-an-address", "backend-name-space", "backend-name-twice", "server-name-wildcard",
         "health-path-relative", "health-path-syntax", "check-timeout-zero", "same-ports",
         "provided-without-certificate", "tls-mode-choice", "backend-ca-not-pem"],
)
def test_haproxy_rejects_bad_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "haproxy", extra), *needles)


@pytest.mark.parametrize("networks", [["0.0.0.0/0"], ["lb1.example.com"], ["10.0.0.5; real_ip_header X-Evil"]],
                         ids=["everyone", "not-an-address", "syntax"])
def test_nginx_refuses_trusting_forwarded_addresses_from_anyone_but_addresses(tmp_path, networks):
    assert_rejected(run_role(tmp_path, "nginx", {"nginx_real_ip_from": networks}),
                    "nginx_real_ip_from must list the load balancers' IP addresses or networks")


@pytest.mark.parametrize(
    ("role", "extra", "needles"),
    [
        ("exporters", {"exporters_listen_address": "203.0.113.7"}, ["exporters_listen_address", "private network"]),
        ("exporters", {"exporters_listen_address": "0.0.0.0"}, ["exporters_listen_address"]),
        ("exporters", {"exporters_listen_address": "::"}, ["exporters_listen_address"]),
        ("exporters", {"exporters_listen_address": "10.0.0.5 --web.config.file=/tmp/x"}, ["exporters_listen_address"]),
        ("exporters", {"exporters_node_port": 9187, "exporters_postgres": True}, ["exporters_node_port"]),
        ("exporters", {"exporters_nginx_scrape_uri": "http://203.0.113.7/stub_status"}, ["exporters_nginx_scrape_uri"]),
        ("exporters", {"exporters_private_networks": ["everything"]}, ["exporters_private_networks"]),
        ("nginx", {"nginx_stub_status_port": 443}, ["nginx_stub_status_port"]),
        ("postgresql", {**PG_OK, "postgresql_monitoring_user": "app"}, ["postgresql_monitoring_user"]),
        ("postgresql", {**PG_OK, "postgresql_monitoring_user": "Prometheus; DROP"}, ["postgresql_monitoring_user"]),
        ("backup", {**BACKUP_OK, "backup_metrics_dir": "var/lib/metrics"}, ["backup_metrics_dir"]),
        ("rabbitmq", {**RABBITMQ_OK, "rabbitmq_prometheus_address": "0.0.0.0"}, ["rabbitmq_prometheus_address"]),
        ("monitoring", {"monitoring_disk_max_used_percent": 100}, ["monitoring_disk_max_used_percent=100"]),
        ("monitoring", {"monitoring_backup_max_age_hours": 0}, ["monitoring_backup_max_age_hours=0"]),
        ("monitoring", {"monitoring_certificate_min_days": 90, "monitoring_scrape_interval_seconds": 1},
         ["monitoring_certificate_min_days=90", "monitoring_scrape_interval_seconds=1"]),
        ("monitoring", {"monitoring_alert_webhook_url": f"http://hooks.example.com/{WEBHOOK_TOKEN}"},
         ["monitoring_alert_webhook_url", "monitoring_alert_webhook_allow_http"]),
        ("monitoring", {"monitoring_alert_email_to": ["ops@example.com"]}, ["monitoring_alert_email_from"]),
        ("monitoring", {"monitoring_targets": {"node": [{"instance": "db1", "address": "10.0.0.10:9100\n- x"}]}},
         ["monitoring_targets"]),
        ("monitoring", {"monitoring_targets": {"mysql": [{"instance": "db1", "address": "10.0.0.10:9104"}]}},
         ["monitoring_targets"]),
        ("monitoring", {"monitoring_probes": [{"job": "site", "instance": "lb1", "address": "lb1.example.com:443"}]},
         ["monitoring_probes"]),
        ("monitoring", {"monitoring_probe_host": "example.com\"; rm"}, ["monitoring_probe_host"]),
        ("common", {"common_syslog_forward_target": "logs.example.com"}, ["common_syslog_forward_target"]),
        ("common", {"common_syslog_forward_target": "logs.example.com:514 protocol=udp"}, ["common_syslog_forward_target"]),
    ],
    ids=["exporter-public-address", "exporter-everywhere", "exporter-everywhere-v6", "exporter-not-an-address",
         "exporter-ports-clash", "nginx-exporter-remote-status", "exporter-networks-not-cidr", "stub-status-on-https",
         "monitoring-user-is-the-app", "monitoring-user-not-a-name", "backup-metrics-relative",
         "rabbitmq-metrics-everywhere", "disk-threshold-100", "backup-age-zero", "two-thresholds-named",
         "alert-webhook-plain-http", "alert-email-without-from", "target-line-break", "target-unknown-job",
         "probe-not-an-address", "probe-host-quote", "syslog-target-without-port", "syslog-target-space"],
)
def test_metrics_inputs_are_refused_when_bad(tmp_path, role, extra, needles):
    result = run_role(tmp_path, role, extra)
    assert_rejected(result, *needles)
    assert WEBHOOK_TOKEN not in result.stdout + result.stderr


# A line break in any role's variable, even one no other check reads; the role's own inputs are
# otherwise valid.
LINE_BREAKS = {
    "common": {"common_locale": "en_US.UTF-8\nLC_ALL=C"},
    "postgresql": {**PG_OK, "postgresql_databases": [{"name": "app", "owner": "app", "encoding": "UTF8\r"}]},
    "memcached": {"memcached_extra_options": ["-v\n-l 0.0.0.0"]},
    "rabbitmq": {**RABBITMQ_OK, "rabbitmq_disk_free_limit": "1GB\nlisteners.tcp.2 = 0.0.0.0:5672"},
    "nginx": {"nginx_client_max_body_size": "20m", "nginx_site_name": "demoapp\nx"},
    "haproxy": {"haproxy_health_path": "/healthz\nserver evil 203.0.113.9:443"},
    "gunicorn": {"gunicorn_wsgi_app": "demoapp.wsgi:application\nExecStartPre=/bin/true"},
    "apache_wsgi": {"apache_wsgi_wsgi_app": "demoapp.wsgi:application\nx"},
    "celery": {**CELERY_OK, "celery_app_module": "demoapp\nExecStartPre=/bin/true"},
    "django_processes": {"django_processes_read_write_paths": ["/srv/demoapp/shared/media\nExecStartPre=/bin/true"]},
    "solr": {"solr_core_name": "demoapp", "solr_app_manage": "/srv/demoapp/bin/manage\nx"},
    "backup": {**BACKUP_OK, "backup_s3_region": "us-east-1\n"},
    "pitr": {**PITR_OK, "pitr_s3_region": "us-east-1\n"},
    "django_app": {**APP_OK, "django_app_wsgi_module": "demoapp.wsgi\nx"},
    "notifier": {"notifier_email_from": "ops@example.com\nBcc: everyone@example.org"},
    "monitoring": {"monitoring_alert_smarthost": "localhost:25\nsmtp_require_tls: false"},
    "exporters": {"exporters_nginx_scrape_uri": "http://127.0.0.1:8089/stub_status\nARGS=--web.listen-address=:9113"},
}


@pytest.mark.parametrize("role", sorted(LINE_BREAKS))
def test_a_line_break_in_any_variable_is_refused(tmp_path, role):
    result = run_role(tmp_path, role, LINE_BREAKS[role])
    name = next(k for k, v in LINE_BREAKS[role].items() if "\\n" in json.dumps(v) or "\\r" in json.dumps(v))
    assert_rejected(result, name)


@pytest.mark.parametrize("role", sorted(ROLE_INPUTS))
def test_a_role_run_alone_without_the_apps_names_fails_naming_them(tmp_path, role):
    """The app's names and paths have no defaults in the roles that serve it: a play that forgets to
    pass them fails at the argument check, naming every one missing."""
    ok = {"celery": CELERY_OK, "backup": BACKUP_OK}.get(role, {})
    missing = tuple(ROLE_INPUTS[role])[-2:]
    assert_rejected(run_role(tmp_path, role, ok, drop=missing), *missing)


# Facts of a host the stack does not support (extra vars win over gathered facts).
UNSUPPORTED = {
    "debian-14": {"distribution": "Debian", "distribution_major_version": "14", "distribution_version": "14.0"},
    "ubuntu-24": {"distribution": "Ubuntu", "distribution_major_version": "24", "distribution_version": "24.04"},
}


@pytest.mark.parametrize("facts", sorted(UNSUPPORTED))
@pytest.mark.parametrize("role", ["common", "postgresql", "backup", "solr"])
def test_an_unsupported_release_is_refused_naming_the_supported_ones(tmp_path, role, facts):
    fake = {**UNSUPPORTED[facts], "memtotal_mb": 4096, "processor_vcpus": 2, "os_family": "Debian"}
    extra = {**{"postgresql": PG_OK, "backup": BACKUP_OK}.get(role, {}), "ansible_facts": fake}
    assert_rejected(run_role(tmp_path, role, extra), "distribution_major_version", "Debian 12", "13")



# The staging guard's inputs reach HTML, the environment file, curl's configuration and nginx's
# password file and site: refused before any change, naming the variable.
@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"django_app_environment_name": "<b>staging</b>"}, ["django_app_environment_name"]),
        ({"django_app_environment_name": "staging env"}, ["django_app_environment_name"]),
        ({"django_app_environment_name": "s" * 31}, ["django_app_environment_name"]),
        ({"django_app_email_backend": "console"}, ["django_app_email_backend"]),
        ({"django_app_email_backend": "x.y; import os"}, ["django_app_email_backend"]),
        ({"django_app_healthcheck_basic_auth": {"name": "a:b", "password": "pw"}}, ["django_app_healthcheck_basic_auth"]),
        ({"django_app_healthcheck_basic_auth": {"name": "tester", "password": ""}}, ["django_app_healthcheck_basic_auth"]),
    ],
    ids=["env-name-html", "env-name-space", "env-name-long", "email-backend-word", "email-backend-code",
         "basic-auth-name-colon", "basic-auth-empty-password"],
)
def test_django_app_rejects_bad_staging_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "django_app", {**APP_OK, **extra}), *needles)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"nginx_basic_auth_users": [{"name": "a:b", "password": "pw"}]}, ["nginx_basic_auth_users", "'a:b'"]),
        ({"nginx_basic_auth_users": [{"name": "te ster", "password": "pw"}]}, ["nginx_basic_auth_users", "'te ster'"]),
        ({"nginx_basic_auth_users": [{"name": "#tester", "password": "pw"}]}, ["nginx_basic_auth_users", "'#tester'"]),
        ({"nginx_basic_auth_users": [{"name": "tester", "password": ""}]}, ["nginx_basic_auth_users", "not empty"]),
        ({"nginx_basic_auth_users": [{"name": "tester", "password": "a"}, {"name": "tester", "password": "b"}]},
         ["nginx_basic_auth_users", "distinct"]),
        ({"nginx_basic_auth_users": [{"name": "tester"}]}, ["nginx_basic_auth_users", "password"]),
        ({"nginx_basic_auth_users": [{"name": "tester", "password": "a\nb"}]}, ["nginx_basic_auth_users", "line break"]),
        ({"nginx_basic_auth_realm": 'Staging"; return 200; #'}, ["nginx_basic_auth_realm"]),
        ({"nginx_basic_auth_realm": "Staging $host"}, ["nginx_basic_auth_realm"]),
        ({"nginx_noindex": "maybe"}, ["nginx_noindex"]),
    ],
    ids=["name-colon", "name-space", "name-comment", "empty-password", "duplicate-name", "no-password",
         "password-line-break", "realm-quote", "realm-variable", "noindex-not-bool"],
)
def test_nginx_rejects_bad_staging_input(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, "nginx", extra), *needles)
