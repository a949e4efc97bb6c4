"""The staging guard on the apache scenario's server (stack_environment: staging, one basic-auth
user in host_vars): what playbooks/app.yml wires from stack_environment, in front of mod_wsgi and
next to the ACME challenges (served over plain HTTP, outside the basic auth).
"""

from __future__ import annotations

import re

from stackhelpers import APP_NAME, APP_ROOT, APP_USER, curl, headers, http_status, podman_hosts, static_manifest, web_variable

testinfra_hosts = podman_hosts("webservers")[:1]

BASE = "https://localhost"
NOINDEX = "noindex, nofollow"


def test_the_scenario_is_a_staging_site():
    assert web_variable("stack_environment", "production") == "staging"
    assert web_variable("stack_basic_auth_users", [])


def test_robots_txt_disallows_everything_whatever_the_app_has(host):
    result = curl(host, f"{BASE}/robots.txt", "-k", "-D", "-", auth=False)
    head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/2 200") and "content-type: text/plain" in head.lower(), head
    assert body == "User-agent: *\nDisallow: /\n"


def test_every_kind_of_answer_carries_x_robots_tag_once(host):
    css = static_manifest(host)["notes/site.css"]
    answers = {
        "page": headers(host, f"{BASE}/"),
        "static file": headers(host, f"{BASE}/static/{css}"),
        "404": headers(host, f"{BASE}/no-such-page/"),
        "401": headers(host, f"{BASE}/", auth=False),
        "health": headers(host, f"{BASE}/healthz", auth=False),
        "redirect": headers(host, "http://localhost/"),
    }
    assert answers["redirect"].get("location") == "https://localhost/"
    for kind, found in answers.items():
        assert found.get("x-robots-tag") == NOINDEX, (kind, found)
    # Once, not twice (nginx hides the app's own): the raw header lines of a page.
    raw = curl(host, f"{BASE}/", "-k", "-o", "/dev/null", "-D", "-").stdout.lower()
    assert raw.count("x-robots-tag:") == 1, raw


def test_the_maintenance_page_carries_x_robots_tag(host):
    flag = f"/var/www/maintenance/{APP_NAME}/on"
    assert host.run(f"touch {flag}").rc == 0
    try:
        found = headers(host, f"{BASE}/")
        status = http_status(host, f"{BASE}/", auth=False)
    finally:
        host.run(f"rm -f {flag}")
    assert found.get("retry-after") and found.get("x-robots-tag") == NOINDEX, found
    assert status == 503  # the maintenance page, credentials or not


def test_basic_auth_guards_the_site_but_the_health_path(host):
    assert http_status(host, f"{BASE}/", auth=False) == 401
    assert 'basic realm="restricted"' in headers(host, f"{BASE}/", auth=False).get("www-authenticate", "").lower()
    assert http_status(host, f"{BASE}/", "-u", "tester:wrong password", auth=False) == 401
    assert http_status(host, f"{BASE}/static/{static_manifest(host)['notes/site.css']}", auth=False) == 401
    assert http_status(host, f"{BASE}/") == 200
    # Load balancers and monitoring still see the app.
    assert http_status(host, f"{BASE}/healthz", auth=False) == 200


def test_the_password_file_is_hashed_and_readable_by_nginx_alone(host):
    htpasswd = host.file(f"/etc/nginx/{APP_NAME}.htpasswd")
    assert (htpasswd.user, htpasswd.group, htpasswd.mode) == ("root", "www-data", 0o640)
    lines = [line for line in htpasswd.content_string.splitlines() if not line.startswith("#")]
    assert len(lines) == 1 and re.fullmatch(r"tester:\$6\$[0-9a-f]{16}\$[./0-9A-Za-z]{86}", lines[0]), lines
    assert "not a secret" not in htpasswd.content_string


def test_every_page_names_the_environment(host):
    for path in ("/", "/counter/", "/uploads/", "/admin/login/"):
        page = curl(host, f"{BASE}{path}", "-k").stdout
        assert 'id="environment-banner"' in page and "<strong>staging</strong> environment" in page, path


def test_email_goes_to_the_sink(host):
    """The app's mail goes to the console backend (the journal), never to an SMTP server: Django's
    own sendtestemail writes the message to stdout and succeeds with no MTA on the server."""
    env = host.file(f"{APP_ROOT}/shared/env").content_string
    assert "DJANGO_EMAIL_BACKEND='django.core.mail.backends.console.EmailBackend'" in env
    assert "DJANGO_ENVIRONMENT_NAME='staging'" in env
    assert host.run("ss -ltnH '( sport = :25 )'").stdout.strip() == ""  # nothing would take SMTP
    result = host.run(f"runuser -u {APP_USER} -- {APP_ROOT}/bin/manage sendtestemail someone@example.com")
    assert result.rc == 0, result.stderr
    assert "To: someone@example.com" in result.stdout and "Subject: Test email from" in result.stdout, result.stdout
