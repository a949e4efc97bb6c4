"""playbooks/maintenance.yml: 503 with Retry-After and a page, the health check path and admins pass."""

from stackhelpers import curl, http_status, podman_hosts, recap, run_playbook, web_variable

testinfra_hosts = podman_hosts("webservers")[:1]

BASE = "https://localhost"


def switch(state: str) -> dict:
    result = run_playbook("playbooks/maintenance.yml", "-e", f"maintenance={state}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return next(iter(recap(result.stdout).values()))


def status_and_headers(host, url: str, *args: str) -> tuple[int, str]:
    out = curl(host, url, "-k", "-o", "/dev/null", "-D", "-", *args).stdout
    return int(out.split()[1]), out.lower()


def test_maintenance_mode_on_and_off(host):
    try:
        assert switch("on")["changed"] == 1
        assert switch("on")["changed"] == 0  # switching again changes nothing

        status, hdrs = status_and_headers(host, f"{BASE}/counter/")
        assert status == 503
        assert "retry-after: 300" in hdrs
        page = curl(host, f"{BASE}/", "-k").stdout
        assert "Down for maintenance" in page

        # The load balancer's health check (the path the app is configured with, which
        # playbooks/app.yml passes to nginx) and the admins' address still reach the app.
        health = web_variable("django_app_healthcheck_path", "/healthz")
        assert status_and_headers(host, f"{BASE}{health}")[0] == 200
        assert status_and_headers(host, f"{BASE}/counter/", "--interface", "127.0.0.2")[0] == 200

        # Plain HTTP (nginx_plain_http_paths: the health path in this scenario): the health path
        # reaches the app, the rest is still redirected to HTTPS, which answers 503.
        assert http_status(host, f"http://localhost{health}") == 200
        assert curl(host, "http://localhost/", "-o", "/dev/null", "-w", "%{http_code}").stdout == "301"
        assert http_status(host, f"{BASE}/") == 503
    finally:
        switch("off")
    assert status_and_headers(host, f"{BASE}/counter/")[0] == 200
    assert switch("off")["changed"] == 0


def test_maintenance_playbook_refuses_a_missing_state():
    result = run_playbook("playbooks/maintenance.yml")
    assert result.returncode != 0
    assert "maintenance=on" in result.stdout
