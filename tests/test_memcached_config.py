"""The memcached role's files, rendered by Ansible's own template module with the role's defaults
and vars (no memcached needed), read back as Debian's systemd-memcached-wrapper reads
/etc/memcached.conf: with a socket, memcached gets -s and its mode and no TCP listener; without
one, TCP as before. The tmpfiles.d entry makes the socket's directory again after a boot."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from role_templates import render_role_templates

TEMPLATES = ["memcached.conf", "tmpfiles.d/memcached.conf"]


def render(tmp_path: Path, extra: dict) -> dict[str, str]:
    files = render_role_templates(tmp_path, "memcached", [f"etc/{name}" for name in TEMPLATES],
                                  {"memcached_socket_group": "django", **extra})
    return {name: files[f"etc/{name}"] for name in TEMPLATES}


def wrapper_arguments(conf: str) -> list[str]:
    """memcached's arguments as Debian's systemd-memcached-wrapper builds them: comments and blank
    lines dropped, -d and -h skipped, the lines joined into one command line."""
    lines = []
    for line in conf.splitlines():
        line = re.sub(r"(?<!\\)#[^#]*", "", line).strip()
        if line and not re.match(r"-[dh]", line):
            lines.append(line)
    return shlex.split(" ".join(lines))


def options(arguments: list[str]) -> dict[str, list[str]]:
    """Each option (every one the template writes takes a value) -> its values, in order."""
    found: dict[str, list[str]] = {}
    for flag, value in zip(arguments[::2], arguments[1::2]):
        found.setdefault(flag, []).append(value)
    return found


def test_a_socket_replaces_every_tcp_listener(tmp_path):
    files = render(tmp_path, {"memcached_socket_path": "/run/memcached/memcached.sock"})
    opts = options(wrapper_arguments(files["memcached.conf"]))
    assert opts["-s"] == ["/run/memcached/memcached.sock"]
    # Owner and group only: the setgid directory gives the socket the app's group.
    assert opts["-a"] == ["0660"]
    assert "-l" not in opts and "-p" not in opts, opts
    assert opts["-U"] == ["0"] and opts["-u"] == ["memcache"]


def test_without_a_socket_memcached_listens_on_tcp(tmp_path):
    files = render(tmp_path, {})
    opts = options(wrapper_arguments(files["memcached.conf"]))
    assert opts["-l"] == ["127.0.0.1"] and opts["-p"] == ["11211"]
    assert "-s" not in opts and "-a" not in opts, opts


def tmpfiles_entries(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_sockets_directory_comes_back_after_a_boot_for_the_group_only(tmp_path):
    files = render(tmp_path, {"memcached_socket_path": "/run/memcached/memcached.sock"})
    # The same directory as Debian's PID directory: one entry, which replaces Debian's.
    assert tmpfiles_entries(files["tmpfiles.d/memcached.conf"]) == [
        ["d", "/run/memcached", "2710", "memcache", "django", "-"]]


def test_a_socket_directory_of_its_own_keeps_debians_pid_directory(tmp_path):
    files = render(tmp_path, {"memcached_socket_path": "/run/memcached-app/cache.sock",
                              "memcached_socket_group": "pingboard"})
    assert tmpfiles_entries(files["tmpfiles.d/memcached.conf"]) == [
        ["d", "/run/memcached", "0755", "memcache", "memcache", "-"],
        ["d", "/run/memcached-app", "2710", "memcache", "pingboard", "-"]]
    assert options(wrapper_arguments(files["memcached.conf"]))["-P"] == ["/var/run/memcached/memcached.pid"]
