"""nginx_plain_http_paths: the scenario serves its health check over plain HTTP too (host_vars),
proxied to the app without the redirect; everything else on plain HTTP still goes to HTTPS."""

from stackhelpers import curl, podman_hosts, web_variable

testinfra_hosts = podman_hosts("webservers")[:1]


def answer(host, url: str) -> tuple[str, dict[str, list[str]], str]:
    """Status line, headers (lower-case names, every value) and body of a GET that follows nothing."""
    out = curl(host, url, "-D", "-").stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    hdrs: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        hdrs.setdefault(name.strip().lower(), []).append(value.strip())
    return lines[0], hdrs, body


def test_the_scenario_exempts_its_health_path():
    assert web_variable("nginx_plain_http_paths", []) == [web_variable("django_app_healthcheck_path", "/healthz")]


def test_the_health_path_reaches_the_app_over_plain_http(host):
    path = web_variable("nginx_plain_http_paths", [])[0]
    status, hdrs, body = answer(host, f"http://localhost{path}")
    assert status.split()[1] == "200", (status, hdrs)
    assert "location" not in hdrs, hdrs
    # The app's own answer (its checks), not an nginx page.
    assert '"database": "ok"' in body and '"cache": "ok"' in body, body
    # The security headers once each, but HSTS, which only HTTPS answers carry.
    assert "strict-transport-security" not in hdrs, hdrs
    for name in ("x-content-type-options", "x-frame-options", "referrer-policy"):
        assert len(hdrs.get(name, [])) == 1, (name, hdrs)


def test_the_rest_of_plain_http_still_redirects_to_https(host):
    for path in ("/", "/counter/", "/admin/login/"):
        out = curl(host, f"http://localhost{path}", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}").stdout
        assert out == f"301 https://localhost{path}", (path, out)
