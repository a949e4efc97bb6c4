"""The nginx role's site, rendered by Ansible's own template module with the role's defaults and
vars, and read back structurally (no nginx needed): what the plain-HTTP server proxies, what it
redirects, and which paths maintenance mode lets through (nginx_plain_http_paths,
nginx_maintenance_exempt_paths)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from role_templates import render_role_templates

TEMPLATES = ["sites-available/django.conf", "snippets/security-headers.conf", "snippets/security-headers-plain-http.conf"]


SITE = {"nginx_site_name": "demoapp", "nginx_server_names": ["example.com"],
        "nginx_static_root": "/srv/demoapp/static", "nginx_media_root": "/srv/demoapp/shared/media",
        "nginx_upstream": "unix:/run/gunicorn/demoapp.sock"}


def render(tmp_path: Path, extra: dict) -> dict[str, str]:
    files = render_role_templates(tmp_path, "nginx", [f"etc/nginx/{name}" for name in TEMPLATES], {**SITE, **extra})
    return {name: files[f"etc/nginx/{name}"] for name in TEMPLATES}


def blocks(text: str, head: str) -> list[str]:
    """Bodies of the top-level `head {...}` blocks of `text` (nginx syntax, comments removed), with
    their nested blocks; `head` is a regular expression for what precedes the brace."""
    text = re.sub(r"#[^\n]*", "", text)
    found, depth, start = [], 0, None
    for match in re.finditer(r"[{}]", text):
        if match.group() == "{":
            if depth == 0:
                line = text[text.rfind("\n", 0, match.start()) + 1:match.start()].strip()
                start = match.end() if re.fullmatch(head, line) else None
            depth += 1
        else:
            depth -= 1
            if depth == 0 and start is not None:
                found.append(text[start:match.start()])
                start = None
    return found


def directives(body: str) -> list[str]:
    """The directives of a block at its own level (nested blocks left out), whitespace collapsed."""
    flat, depth = [], 0
    for char in re.sub(r"#[^\n]*", "", body):
        depth += char == "{"
        if depth == 0:
            flat.append(char)
        elif depth == 1 and char == "}":
            flat.append(";")  # a nested block ends its statement, as a ";" does
        depth -= char == "}"
    return [" ".join(d.split()) for d in "".join(flat).split(";") if d.strip()]


def plain_http_server(site: str) -> str:
    """The plain-HTTP server of the site's own names (not the default server nor the catch-all)."""
    servers = [body for body in blocks(site, "server")
               if "server_name example.com" in directives(body) and not any("ssl" in d for d in directives(body)
                                                                            if d.startswith("listen"))]
    assert len(servers) == 1, servers
    return servers[0]


def https_server(site: str) -> str:
    servers = [body for body in blocks(site, "server")
               if "server_name example.com" in directives(body) and "listen 443 ssl http2" in directives(body)]
    assert len(servers) == 1, servers
    return servers[0]


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict[str, str]:
    return render(tmp_path_factory.mktemp("plain"), {
        "nginx_plain_http_paths": ["/ping/", "/hooks/github"],
        "nginx_maintenance_exempt_paths": ["/healthz", "/status/ready"],
    })


@pytest.fixture(scope="module")
def default(tmp_path_factory) -> dict[str, str]:
    return render(tmp_path_factory.mktemp("default"), {})


def test_each_plain_http_path_is_proxied_to_the_app_like_https(plain):
    server = plain_http_server(plain["sites-available/django.conf"])
    https_root = blocks(https_server(plain["sites-available/django.conf"]), r"location /")
    assert len(https_root) == 1
    proxying = [d for d in directives(https_root[0]) if d.startswith(("proxy_", "proxy_hide_header"))]
    assert "proxy_pass http://demoapp_app" in proxying
    for path in ("/ping/", "/hooks/github"):
        found = blocks(server, rf"location \^~ {re.escape(path)}")
        assert len(found) == 1, (path, server)
        location = directives(found[0])
        # The same proxying as HTTPS: upstream, headers (X-Forwarded-Proto from $scheme: http here).
        assert [d for d in location if d.startswith("proxy_")] == proxying
        assert "proxy_set_header X-Forwarded-Proto $scheme" in location
        # The security headers but HSTS, and the maintenance rule.
        assert "include snippets/demoapp-security-headers-plain-http.conf" in location
        assert "include snippets/demoapp-security-headers.conf" not in location
        assert [directives(b) for b in blocks(found[0], r"if \(\$maintenance\)")] == [["return 503"]]


def test_the_rest_of_plain_http_still_redirects_to_https(plain, default):
    for rendered in (plain, default):
        server = plain_http_server(rendered["sites-available/django.conf"])
        root = blocks(server, "location /")
        assert len(root) == 1
        assert directives(root[0]) == ["return 301 https://$host$request_uri"]
    # Without nginx_plain_http_paths the HTTP server proxies nothing and checks no flag file.
    server = plain_http_server(default["sites-available/django.conf"])
    assert "proxy_pass" not in server and "$maintenance" not in server


def test_plain_http_maintenance_follows_the_https_rule(plain):
    server = directives(plain_http_server(plain["sites-available/django.conf"]))
    https = directives(https_server(plain["sites-available/django.conf"]))
    rule = [d for d in https if d.startswith(("set $maintenance", "if (")) and d != "if ($maintenance)"]
    assert len(rule) == 4, https
    assert rule == [d for d in server if d.startswith(("set $maintenance", "if ("))]
    # HTTPS answers 503 for every path; plain HTTP only in its proxied locations (the redirect stays).
    assert "if ($maintenance)" in https and "if ($maintenance)" not in server
    assert "error_page 503 @maintenance" in server
    page = blocks(plain_http_server(plain["sites-available/django.conf"]), "location @maintenance")
    assert len(page) == 1 and "include snippets/demoapp-security-headers-plain-http.conf" in directives(page[0])


def test_the_maintenance_map_holds_exactly_the_exempt_paths(plain, default):
    for rendered, paths in ((plain, ["/healthz", "/status/ready"]), (default, ["/healthz"])):
        site = rendered["sites-available/django.conf"]
        found = blocks(site, r"map \$uri \$demoapp_maintenance_exempt_path")
        assert len(found) == 1, site
        assert directives(found[0]) == ["default 0", *(f"{path} 1" for path in paths)]
        # The HTTPS server reads the map; no literal path is left in its maintenance rule.
        https = https_server(site)
        assert "if ($demoapp_maintenance_exempt_path)" in " ".join(https.split())
        assert "$uri =" not in https


def test_hsts_only_in_the_https_snippet(plain):
    assert "Strict-Transport-Security" in plain["snippets/security-headers.conf"]
    assert "Strict-Transport-Security" not in plain["snippets/security-headers-plain-http.conf"]
    https_headers = [line for line in plain["snippets/security-headers.conf"].splitlines()
                     if line.startswith("add_header") and "Strict-Transport-Security" not in line]
    plain_headers = [line for line in plain["snippets/security-headers-plain-http.conf"].splitlines()
                     if line.startswith("add_header")]
    assert plain_headers == https_headers and len(plain_headers) == 4


# --- A staging site (nginx_noindex, nginx_basic_auth_users) ---------------------------------------

NOINDEX = 'add_header X-Robots-Tag "noindex, nofollow" always'


@pytest.fixture(scope="module")
def staging(tmp_path_factory) -> dict[str, str]:
    return render(tmp_path_factory.mktemp("staging"), {
        "nginx_noindex": True,
        "nginx_basic_auth_users": [{"name": "tester", "password": "not-a-real-one"}],
        "nginx_basic_auth_realm": "Staging site",
        "nginx_plain_http_paths": ["/ping/", "/hooks/v1.0"],
        "nginx_maintenance_exempt_paths": ["/healthz", "/status/ready"],
    })


def locations(server: str) -> dict[str, list[str]]:
    """Each location of a server (nested ones too) by its head, with its own directives."""
    found = {}
    for head in re.findall(r"^\s*(location [^{]+?)\s*\{", re.sub(r"#[^\n]*", "", server), re.M):
        for body in blocks(server, re.escape(head)) or []:
            found[head] = directives(body)
    nested = re.findall(r"(location ~ \"[^\"]+\")\s*\{([^{}]*)\}", server)
    found.update({head: directives(body) for head, body in nested})
    return found


def test_production_has_no_staging_guard(default, plain):
    """The default (stack_environment production): no X-Robots-Tag, robots.txt or basic auth anywhere."""
    for rendered in (default, plain):
        text = "\n".join(rendered.values())
        assert "X-Robots-Tag" not in text
        assert "robots.txt" not in text
        assert "auth_basic" not in text and "htpasswd" not in text


def test_every_answer_of_a_noindex_site_carries_x_robots_tag(staging):
    site = staging["sites-available/django.conf"]
    # Both snippets: every HTTPS location with headers of its own and the plain-HTTP paths include one.
    for snippet in ("snippets/security-headers.conf", "snippets/security-headers-plain-http.conf"):
        assert [line for line in staging[snippet].splitlines() if "X-Robots-Tag" in line] == [NOINDEX + ";"]
    https, plain_http = https_server(site), plain_http_server(site)
    # Server level of both servers: what has no add_header of its own (proxied pages, the app's
    # errors, 401s, the redirect, ACME) inherits it.
    assert "include snippets/demoapp-security-headers.conf" in directives(https)
    assert NOINDEX in directives(plain_http)
    # nginx drops the server's add_headers in a location that has its own: each such location
    # (static, hashed static, media, the maintenance page, robots.txt) includes the snippet again.
    for server, snippet in ((https, "snippets/demoapp-security-headers.conf"),
                            (plain_http, "snippets/demoapp-security-headers-plain-http.conf")):
        found = locations(server)
        assert "location @maintenance" in found, found.keys()
        for head, body in found.items():
            if any(d.startswith("add_header") for d in body) or head.startswith("location ^~ /"):
                assert f"include {snippet}" in body or NOINDEX in body, (head, body)
    # The app's own X-Robots-Tag is hidden, so the header appears once.
    root = blocks(https, "location /")
    assert len(root) == 1 and "proxy_hide_header X-Robots-Tag" in directives(root[0])


def test_a_noindex_site_answers_robots_txt_itself(staging):
    https = https_server(staging["sites-available/django.conf"])
    robots = blocks(https, "location = /robots.txt")
    assert len(robots) == 1
    assert directives(robots[0]) == ["include snippets/demoapp-security-headers.conf", "default_type text/plain",
                                     'return 200 "User-agent: *\\nDisallow: /\\n"']


def test_basic_auth_covers_the_https_site_but_the_open_paths(staging):
    site = staging["sites-available/django.conf"]
    https = directives(https_server(site))
    assert "auth_basic $demoapp_basic_auth" in https
    assert "auth_basic_user_file /etc/nginx/demoapp.htpasswd" in https
    found = blocks(site, r"map \$uri \$demoapp_basic_auth")
    assert len(found) == 1
    # The realm by default; "off" for the health check (maintenance-exempt paths, exactly), robots.txt
    # and the plain-HTTP prefixes (regular expressions anchored at the start, dots escaped).
    assert directives(found[0]) == ['default "Staging site"', "/healthz off", "/status/ready off", "/robots.txt off",
                                    '"~^/ping/" off', '"~^/hooks/v1\\.0" off']
    # The maintenance page is for everyone; plain HTTP never asks for credentials.
    page = blocks(https_server(site), "location @maintenance")
    assert len(page) == 1 and "auth_basic off" in directives(page[0])
    plain_http = plain_http_server(site)
    assert "auth_basic $" not in plain_http and "auth_basic_user_file" not in plain_http


def test_media_served_from_disk_unless_they_live_in_a_bucket(default, tmp_path):
    media = 'location /media/ {'
    assert "alias /srv/demoapp/shared/media/;" in default["sites-available/django.conf"]
    assert len(blocks(https_server(default["sites-available/django.conf"]), "location /media/")) == 1
    bucket = render(tmp_path, {"nginx_media_serve": False})["sites-available/django.conf"]
    assert media not in bucket and "/srv/demoapp/shared/media" not in bucket
    assert len(blocks(https_server(bucket), "location /static/")) == 1
