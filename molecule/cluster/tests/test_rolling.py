"""The load balancer in front of the two web servers, and rolling deploys through it (in file order,
after test_cluster.py): the site through HAProxy, the client's address as nginx sees it, a stopped
web server taken out by the health checks and back once it answers, a deploy under load with no
failed request (the canary first, every host on the new release), a release refused on the canary
that stops the rollout with web2 still serving, and a good deploy that brings everything back.

The load runs on the balancer itself (curl to its own HTTPS listener), some clients with a new
connection per request, some reusing theirs (keep-alive).
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from pathlib import Path

import pytest
import testinfra

from stackhelpers import (APP_ROOT, app_version, basic_auth, current_release, curl, group_hosts, health, http_status,
                          run_playbook)

BASE = "https://localhost"
LB, = group_hosts("loadbalancers")
WEB = group_hosts("webservers")          # inventory order: the first one is the canary
CANARY, *REST = WEB
WORKER, = group_hosts("workers")
VERSIONS = Path(__file__).resolve().parents[2] / "default" / "versions"
STATE: dict[str, str] = {}

# HAProxy's runtime API (roles/haproxy): the servers of the site's backend and their status.
STAT = r"""
import csv, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect("/run/haproxy/admin.sock")
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
rows = csv.DictReader(data.decode().lstrip("# ").splitlines())
for row in rows:
    if row["svname"] not in ("FRONTEND", "BACKEND"):
        print(row["pxname"], row["svname"], row["status"])
"""


def server(name: str):
    return testinfra.get_host(f"podman://{name}")


def balancer_status() -> dict[str, str]:
    """web server -> its status in the balancer (UP, DOWN, MAINT, DRAIN, ...)."""
    out = server(LB).check_output(f"python3 -c {shlex.quote(STAT)}")
    return {name: status for _, name, status in (line.split(" ", 2) for line in out.splitlines())}


def wait_for_status(name: str, wanted: str, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        status = balancer_status()
        if status.get(name, "").startswith(wanted):
            return status
        assert time.monotonic() < deadline, (name, wanted, status)
        time.sleep(1)


def start_load(clients: int = 4, seconds: int = 1200) -> None:
    """Requests through the balancer until stop_load() (or `seconds`): half the clients open a new
    connection per request, half send 20 requests per connection."""
    lb = server(LB)
    lb.run("rm -f /tmp/stop-load /tmp/load-codes-*")
    auth = " ".join(shlex.quote(a) for a in basic_auth())
    for n in range(clients):
        urls = " ".join([f"-o /dev/null {BASE}/counter/"] * (20 if n % 2 else 1))
        script = (f"end=$((SECONDS+{seconds})); while [ ! -e /tmp/stop-load ] && [ $SECONDS -lt $end ]; do "
                  f"curl -sk --max-time 20 {auth} -w '%{{http_code}}\\n' {urls} >> /tmp/load-codes-{n}; done")
        lb.run(f"nohup bash -c {shlex.quote(script)} >/dev/null 2>&1 &")


def stop_load() -> list[str]:
    lb = server(LB)
    lb.run("touch /tmp/stop-load; sleep 2")
    return lb.run("cat /tmp/load-codes-*").stdout.split()


def switch_order(output: str) -> list[list[str]]:
    """The hosts of each switch of `current`, in the order the deploy ran them (one list per batch)."""
    blocks = re.findall(r"TASK \[django_app : activate \| Switch current to the release[^\n]*\n(.*?)(?=\n(?:TASK|PLAY|RUNNING))",
                        output, re.S)
    return [hosts for hosts in (re.findall(r"^changed: \[([^\]]+)\]", block, re.M) for block in blocks) if hosts]


def versions() -> dict[str, str]:
    return {name: health(server(name))["version"] for name in WEB}


def deploy(source: Path):
    return run_playbook("playbooks/deploy.yml", "-e", f"django_app_source_path={source}")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rolling")
    return {
        "good": app_version(root / "good", version="3.0-rolling"),
        # Version E's home page answers 500 (its health page 200): refused by the gate on the canary.
        "broken": app_version(root / "broken", [VERSIONS / "E"], version="4.0-broken"),
        "back": app_version(root / "back", version="5.0-back"),
    }


def test_the_site_answers_through_the_balancer_with_both_web_servers_up():
    lb = server(LB)
    assert http_status(lb, f"{BASE}/healthz") == 200
    assert http_status(lb, f"{BASE}/") == 200
    assert json.loads(curl(lb, f"{BASE}/healthz", "-k").stdout)["database"] == "ok"
    # Plain HTTP is redirected to HTTPS.
    assert curl(lb, "http://localhost/", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}").stdout \
        == "301 https://localhost/"
    assert balancer_status() == {name: "UP" for name in WEB}
    # Only root and the haproxy group reach the runtime API.
    assert lb.check_output("stat -c '%U %G %a' /run/haproxy/admin.sock") == "root haproxy 660"


def test_nginx_sees_the_clients_address_and_trusts_the_header_only_from_the_balancer():
    token = secrets.token_hex(6)
    lb = server(LB)
    for _ in WEB:  # round robin: one request lands on each web server
        assert http_status(lb, f"{BASE}/healthz?probe={token}") == 200
    for name in WEB:
        lines = server(name).run(f"grep -h 'probe={token}' /var/log/nginx/access.log").stdout.splitlines()
        assert lines, name
        # The balancer's client was its own loopback: nginx logs that, not the balancer's address.
        assert all(line.split()[0] in ("127.0.0.1", "::1") for line in lines), lines
    # A client that is not a balancer cannot choose its address with the header.
    web = server(WEB[0])
    curl(web, f"{BASE}/healthz?spoof={token}", "-k", "-o", "/dev/null", "-H", "X-Forwarded-For: 198.51.100.7")
    line = web.check_output(f"grep -h 'spoof={token}' /var/log/nginx/access.log")
    assert not line.startswith("198.51.100.7"), line


def test_the_web_servers_web_ports_open_to_the_balancer_only():
    address = {name: server(name).check_output("hostname -I").split()[0] for name in (*WEB, LB, WORKER)}
    for port in (80, 443):
        for target in WEB:
            for source in (LB, WORKER, *[w for w in WEB if w != target]):
                opened = server(source).run(f"timeout 3 bash -c '</dev/tcp/{address[target]}/{port}'").rc == 0
                assert opened == (source == LB), (source, target, port)


def test_a_stopped_web_server_is_taken_out_and_comes_back():
    web2 = server(REST[0])
    start_load(clients=2, seconds=120)
    try:
        web2.run("systemctl stop nginx")
        wait_for_status(REST[0], "DOWN", timeout=30)
        time.sleep(3)  # requests keep coming while it is out
    finally:
        web2.run("systemctl start nginx")
    wait_for_status(REST[0], "UP", timeout=30)
    codes = stop_load()
    assert codes and set(codes) == {"200"}, {c: codes.count(c) for c in set(codes)}


def test_a_web_server_slow_to_answer_its_health_check_stays_in():
    """A busy web server answers its health check late, not never: its app server frozen for 3 s
    at a time (longer than the check interval, shorter than haproxy_check_timeout_ms), five times
    in a row, it is never taken out. With the interval as the checks' limit, it was: on a loaded
    site every web server at once, and every request answered 503."""
    web2 = server(REST[0])
    freeze = ("for i in 1 2 3 4 5; do systemctl kill -s STOP gunicorn@demoapp.service; sleep 3; "
              "systemctl kill -s CONT gunicorn@demoapp.service; sleep 0.3; done; touch /tmp/thawed")
    web2.run("rm -f /tmp/thawed")
    web2.run(f"nohup bash -c {shlex.quote(freeze)} >/dev/null 2>&1 &")
    seen = set()
    try:
        deadline = time.monotonic() + 60
        while not web2.file("/tmp/thawed").exists:
            seen.add(balancer_status()[REST[0]])
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        web2.run("systemctl kill -s CONT gunicorn@demoapp.service")
    assert seen == {"UP"}, seen
    assert balancer_status() == {name: "UP" for name in WEB}


def test_a_rolling_deploy_under_load_fails_no_request_and_starts_with_the_canary(sources):
    before = {name: current_release(server(name)) for name in (*WEB, WORKER)}
    start_load()
    started = time.monotonic()
    result = deploy(sources["good"])
    took = time.monotonic() - started
    codes = stop_load()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    print(f"\nrolling deploy of {len(WEB)} web servers and a worker: {took:.0f} s, {len(codes)} requests through the "
          f"balancer, {sum(c != '200' for c in codes)} failed")
    assert len(codes) > 50 and set(codes) == {"200"}, {c: codes.count(c) for c in set(codes)}
    # The canary alone first, then the other web servers, then the worker; every host on the new
    # release, the same one.
    assert switch_order(output) == [[CANARY], REST, [WORKER]], switch_order(output)
    assert versions() == {name: "3.0-rolling" for name in WEB}
    releases = {name: current_release(server(name)) for name in (*WEB, WORKER)}
    assert len(set(releases.values())) == 1 and releases[CANARY] != before[CANARY], (before, releases)
    STATE["good"] = releases[CANARY]
    assert balancer_status() == {name: "UP" for name in WEB}


def test_a_release_refused_on_the_canary_stops_the_rollout_and_web2_keeps_serving(sources):
    start_load(clients=2)
    result = deploy(sources["broken"])
    codes = stop_load()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "GET / answered 500, expected 200" in output, output[-3000:]
    # Nothing switched anywhere: the canary was refused before its switch, the rest never started.
    assert {name: current_release(server(name)) for name in (*WEB, WORKER)} == {
        name: STATE["good"] for name in (*WEB, WORKER)}
    assert switch_order(output) == []
    # The canary stays out of the balancer; web2 serves every request.
    status = balancer_status()
    assert status[CANARY].startswith("MAINT") and all(status[name] == "UP" for name in REST), status
    assert codes and set(codes) == {"200"}, {c: codes.count(c) for c in set(codes)}
    assert http_status(server(LB), f"{BASE}/") == 200


def test_a_good_deploy_after_it_brings_everything_back(sources):
    result = deploy(sources["back"])
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert versions() == {name: "5.0-back" for name in WEB}
    assert len({current_release(server(name)) for name in (*WEB, WORKER)}) == 1
    assert balancer_status() == {name: "UP" for name in WEB}
    assert server(WORKER).check_output(f"readlink {APP_ROOT}/current") != f"{APP_ROOT}/releases/{STATE['good']}"
