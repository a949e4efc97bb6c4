"""Apache + mod_wsgi behind nginx: who serves what, a deploy without a dropped request, and a
clean switch to gunicorn and back. The switch tests run last (file order)."""

from __future__ import annotations

import secrets

from stackhelpers import (
    APP_NAME,
    APP_USER,
    app_version,
    curl,
    deploy,
    health,
    listeners,
    podman_hosts,
    run_playbook,
    start_watchers,
    static_manifest,
    stop_watchers,
)

testinfra_hosts = podman_hosts("webservers")[:1]

BASE = "https://localhost"
ACCESS_LOG = f"/var/log/apache2/{APP_NAME}-access.log"
ERROR_LOG = "/var/log/apache2/error.log"


def test_apache_runs_the_app_in_mod_wsgi_daemon_processes_on_mpm_event(host):
    assert "mpm_event_module" in host.check_output("apache2ctl -M")
    daemons = host.check_output(f"ps -o user=,args= -C apache2 | grep -F '(wsgi:{APP_NAME})' || true")
    assert daemons and all(line.split()[0] == APP_USER for line in daemons.splitlines()), daemons
    assert listeners(host, 8001) == ["127.0.0.1"] and listeners(host, 80) and "apache2" not in host.check_output(
        "ss -ltnpH '( sport = :80 or sport = :443 )'")


def test_dynamic_requests_go_through_nginx_to_apache_with_the_client_address(host):
    marker = secrets.token_hex(6)
    # From ::1 (curl picks that source for that destination), not from nginx's own address towards
    # Apache (127.0.0.1, the trusted proxy): the log can only show it if it is the client's.
    assert curl(host, f"{BASE}/counter/?from={marker}", "-k", "--resolve", "localhost:443:[::1]",
                "-o", "/dev/null", "-w", "%{http_code}").stdout == "200"
    lines = [line for line in host.file(ACCESS_LOG).content_string.splitlines() if marker in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("::1 "), lines  # the client's address (nginx's X-Forwarded-For)


def test_static_and_media_requests_never_reach_apache(host):
    css = static_manifest(host)["notes/site.css"]
    for path in (f"/static/{css}", "/static/admin/css/base.css", "/media/"):
        curl(host, f"{BASE}{path}", "-k", "-o", "/dev/null", check=False)
    log = host.file(ACCESS_LOG).content_string
    assert "/static/" not in log and "/media/" not in log, log[-2000:]


def wsgi_daemon_pids(host) -> set[str]:
    return set(host.check_output(f"pgrep --full '^\\(wsgi:{APP_NAME}\\)' || true").split())


def apache_restarts(host) -> int:
    """Apache's own restarts, graceful or not, as its error log counts them (AH00493, AH00494)."""
    return int(host.check_output(f"grep -cE 'AH0049[34]' {ERROR_LOG} || true") or 0)


def test_a_deploy_on_apache_drops_no_request(host, tmp_path):
    version = app_version(tmp_path / "demoapp", version=f"apache-{secrets.token_hex(3)}")
    daemons_before, restarts_before = wsgi_daemon_pids(host), apache_restarts(host)
    apache_main_pid = host.service("apache2").systemd_properties["MainPID"]
    start_watchers(host)
    try:
        result = deploy(version)
    finally:
        missing, codes = stop_watchers(host)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert health(host)["version"] == (version / "demoapp" / "version.py").read_text().split('"')[-2]
    assert missing == 0
    assert len(codes) > 20 and set(codes) == {"200"}, codes
    # The deploy restarted the app's daemon processes (every one is new), not Apache: its main
    # process is the same and it logged no restart (an Apache-wide reload loses queued requests).
    daemons_after = wsgi_daemon_pids(host)
    assert daemons_before and daemons_after and not daemons_before & daemons_after, (daemons_before, daemons_after)
    assert host.service("apache2").systemd_properties["MainPID"] == apache_main_pid
    assert apache_restarts(host) == restarts_before


def test_a_virtualenv_of_another_python_is_refused_before_apache_changes(host):
    # A virtualenv whose interpreter reports another Python than the one mod_wsgi links.
    venv = "/var/tmp/venv-of-another-python"
    host.run(f"mkdir -p {venv}/bin && printf '#!/bin/sh\\necho 3.99\\n' > {venv}/bin/python && chmod 755 {venv}/bin/python")
    config = "find /etc/apache2 -type f -exec md5sum {} + | sort"
    before, pid = host.check_output(config), host.check_output("systemctl show -p MainPID --value apache2")
    try:
        result = run_playbook("playbooks/app.yml", "-e", f"apache_wsgi_virtualenv={venv}")
    finally:
        host.run(f"rm -rf {venv}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    linked = host.check_output("ldd /usr/lib/apache2/modules/mod_wsgi.so | grep -o 'libpython[0-9.]*[0-9]' | head -n1")
    assert f"built for Python {linked.removeprefix('libpython')}" in output and "runs Python 3.99" in output, output[-3000:]
    assert "django_app_python" in output, output[-3000:]
    assert host.check_output(config) == before
    assert host.check_output("systemctl show -p MainPID --value apache2") == pid
    assert health(host)["database"] == "ok"


def test_switching_to_gunicorn_and_back_is_clean(host):
    for server, running, retired in (("gunicorn", f"gunicorn@{APP_NAME}.socket", "apache2"),
                                     ("apache_wsgi", "apache2", f"gunicorn@{APP_NAME}.socket")):
        start_watchers(host)
        try:
            result = run_playbook("site.yml", "-e", f"django_app_server={server}")
        finally:
            _, codes = stop_watchers(host)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert host.service(running).is_running and host.service(running).is_enabled, server
        assert not host.service(retired).is_running and not host.service(retired).is_enabled, server
        assert health(host)["database"] == "ok"
        assert set(codes) == {"200"}, (server, codes)
