"""examples/pingboard, a project not written for this stack, deployed with inventory variables only.

In file order: the converge (git source, deploy key) is checked, then --check --diff, then the
project's own contract (its setting names, its top-level static/, its deploy-time command, its
plain-HTTP pings, its process, its plain-text health page), then a deploy of version B (the
process restarts), a release whose pages answer 500 (refused before it goes live), and the process
dropped from the list (stopped and removed). Versions are examples/pingboard plus the files under
molecule/project/versions/<X>/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stackhelpers import APP_ROOT, APP_USER, PROJECT_DIR, app_version, curl, current_release, podman_hosts, recap, run_playbook

testinfra_hosts = podman_hosts("webservers")[:1]

VERSIONS = Path(__file__).resolve().parents[1] / "versions"
BASE = "https://localhost"
EXAMPLE_CHECK = "00000000-0000-4000-8000-000000000001"
PROCESS = "django-pingboard-sendalerts@1.service"
STATE: dict[str, str] = {}


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pingboard-versions")
    layers = {"B": ["B"], "broken": ["B", "broken"], "proxied-fail": ["B", "proxied-fail"]}
    return {name: app_version(root / name, [VERSIONS / layer for layer in overlays],
                              project=PROJECT_DIR / "examples" / "pingboard")
            for name, overlays in layers.items()}


def archive_deploy(source: Path, *extra: str):
    return run_playbook("playbooks/deploy.yml", "-e", "django_app_source=archive",
                        "-e", f"django_app_source_path={source}", *extra)


def unit(host, name: str, prop: str) -> str:
    return host.check_output(f"systemctl show -p {prop} --value {name}")


def cwd(host, pid: str) -> str:
    """Where a process of the app user runs (root in the container may not read another user's)."""
    return host.check_output(f"runuser -u {APP_USER} -- readlink /proc/{pid}/cwd")


def home(host) -> str:
    return curl(host, BASE + "/", "-k").stdout


def test_the_converge_checked_the_project_out_of_git_with_the_deploy_key(host):
    key = host.file(f"{APP_ROOT}/git/deploy_key")
    assert key.user == "root" and key.mode == 0o600
    assert host.file(f"{APP_ROOT}/git").mode == 0o700
    # The URL carries no credential, and the checkout trusts only the given host key.
    config = host.check_output(f"cat {APP_ROOT}/repo/.git/config")
    assert "ssh://git@localhost/srv/git/pingboard.git" in config
    commit = host.check_output(f"git -C {APP_ROOT}/repo rev-parse HEAD")
    assert current_release(host).endswith("-" + commit[:12])
    STATE["A"] = current_release(host)


def test_check_diff_on_the_converged_host_reports_no_change(host):  # host: keeps it in file order
    result = run_playbook("--check", "--diff", "site.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert all(counts["changed"] == 0 for counts in recap(result.stdout).values()), result.stdout[-3000:]


def test_the_project_reads_its_own_setting_names_each_secret_written_once(host):
    env = host.check_output(f"cat {APP_ROOT}/shared/env")
    names = re.findall(r"^([A-Z_][A-Z0-9_]*)=", env, re.M)
    assert {"SECRET_KEY", "DATABASE_URL", "CACHE_URL", "ALLOWED_HOSTS", "STATIC_ROOT", "SITE_ROOT"} <= set(names)
    assert [n for n in names if n.startswith("DJANGO_")] == ["DJANGO_SETTINGS_MODULE"]
    assert "DATABASE_URL='postgres://pingboard:" in env and "@127.0.0.1:5432/pingboard'" in env
    # What the running app server sees: the values of the file, exactly.
    pid = unit(host, "gunicorn@pingboard.service", "MainPID")
    environ = dict(item.split("=", 1) for item in host.check_output(
        f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines() if "=" in item)
    assert environ["CACHE_URL"] == "pymemcache:///run/memcached/memcached.sock"
    assert environ["ALLOWED_HOSTS"] == "localhost,127.0.0.1"


def test_pages_render_from_templates_with_the_projects_own_static_files(host):
    page = home(host)
    assert "pingboard version A" in page and "example" in page
    css = re.search(r'href="(/static/css/pingboard\.[0-9a-f]{12}\.css)"', page)
    assert css, page[:2000]
    response = curl(host, BASE + css.group(1), "-k", "-D", "-", "-o", "/dev/null").stdout.lower()
    assert " 200" in response.splitlines()[0]
    assert "cache-control: public, max-age=31536000, immutable" in response
    # Served by nginx from the collected files (the top-level static/ was shipped and collected).
    assert host.file(f"{APP_ROOT}/static{css.group(1)[len('/static'):]}").exists
    assert host.file(f"{APP_ROOT}/current/static/css/pingboard.css").exists


def test_the_deploy_command_made_the_cache_table_and_pings_arrive_over_plain_http(host):
    tables = host.check_output("runuser -u postgres -- psql -d pingboard -tAc \"SELECT to_regclass('pingboard_cache')\"")
    assert tables == "pingboard_cache"
    ping = curl(host, f"http://localhost/ping/{EXAMPLE_CHECK}/", "-i")
    assert ping.stdout.splitlines()[0].split()[1] == "200" and ping.stdout.rstrip().endswith("OK")
    assert "strict-transport-security" not in ping.stdout.lower()
    # Everything else on plain HTTP still goes to HTTPS.
    other = curl(host, "http://localhost/", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}").stdout
    assert other == "301 https://localhost/"


def test_maintenance_mode_exempts_the_configured_health_path(host):
    flag = "/var/www/maintenance/pingboard/on"
    host.run(f"touch {flag}")
    try:
        health = curl(host, BASE + "/health/", "-k", "-w", " %{http_code}").stdout
        page = curl(host, BASE + "/", "-k", "-o", "/dev/null", "-w", "%{http_code}").stdout
    finally:
        host.run(f"rm -f {flag}")
    assert health == "OK 200"
    assert page == "503"


def test_the_process_runs_as_the_app_user_from_the_current_release(host):
    assert unit(host, PROCESS, "ActiveState") == "active"
    assert unit(host, PROCESS, "User") == APP_USER
    pid = unit(host, PROCESS, "MainPID")
    assert cwd(host, pid) == f"{APP_ROOT}/releases/{current_release(host)}"
    assert f"pid={pid}" in host.check_output(f"journalctl -u {PROCESS} --no-pager -o cat")
    assert host.run(f"systemctl is-enabled {PROCESS}").stdout.strip() == "enabled"


def test_a_deploy_in_maintenance_mode_goes_live_and_restarts_the_process(host, versions):
    # In maintenance mode nginx answers 503 for the pages on purpose: the check through nginx asks
    # the health path alone, and the deploy is not rolled back for the 503s.
    before = unit(host, PROCESS, "MainPID")
    flag = "/var/www/maintenance/pingboard/on"
    host.run(f"touch {flag}")
    try:
        result = archive_deploy(versions["B"])
    finally:
        host.run(f"rm -f {flag}")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "pingboard version B" in home(host)
    after = unit(host, PROCESS, "MainPID")
    assert after != before and unit(host, PROCESS, "ActiveState") == "active"
    assert cwd(host, after) == f"{APP_ROOT}/releases/{current_release(host)}"
    STATE["B"] = current_release(host)


def test_a_release_whose_pages_fail_is_refused_before_it_goes_live(host, versions):
    result = archive_deploy(versions["broken"])
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # The gate names the page, its status and the start of its answer; the health page alone
    # (which still answers OK) let nothing through.
    assert "GET / answered 500, expected 200" in output, output[-3000:]
    assert "GET /admin/login/ answered 500, expected 200" in output, output[-3000:]
    assert current_release(host) == STATE["B"]
    assert "pingboard version B" in home(host)


def test_a_release_failing_only_through_nginx_is_rolled_back_after_the_switch(host, versions):
    result = archive_deploy(versions["proxied-fail"], "-e", "django_app_healthcheck_timeout=6")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    failed = re.search(r"Verify through nginx failed for release ([0-9]{8}T[0-9]{6}Z-[0-9a-f]{12})", output)
    assert failed, output[-3000:]
    assert f"Rolled back to release {STATE['B']}, which now answers as expected" in output, output[-3000:]
    assert "GET / answered 500, expected 200" in output
    assert current_release(host) == STATE["B"]
    assert host.check_output(f"readlink {APP_ROOT}/previous").rsplit("/", 1)[-1] == failed.group(1)
    assert "pingboard version B" in home(host)
    # The process runs the release that is live again.
    pid = unit(host, PROCESS, "MainPID")
    assert cwd(host, pid) == f"{APP_ROOT}/releases/{STATE['B']}"


def test_a_process_dropped_from_the_list_is_stopped_and_removed(host):
    result = run_playbook("playbooks/app.yml", "--tags", "django_processes", "-e", '{"django_processes_list": []}')
    assert result.returncode == 0, result.stdout[-3000:]
    assert current_release(host) == STATE["B"]
    assert not host.file("/etc/systemd/system/django-pingboard-sendalerts@.service").exists
    assert host.run(f"systemctl is-active {PROCESS}").stdout.strip() in {"inactive", "unknown"}
    assert not host.run(f"pgrep -u {APP_USER} -f 'manage.py sendalerts'").stdout.strip()
