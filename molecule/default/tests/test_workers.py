"""RabbitMQ and Celery on the all-in-one server: the broker is locked down, workers answer,
a task sent over HTTP comes back over HTTP, and beat fires."""

from __future__ import annotations

import base64
import io
import json
import struct
import time

import yaml
from PIL import Image

from stackhelpers import (APP_NAME, APP_ROOT, APP_USER, PROJECT_DIR, curl, listeners, podman_hosts, recap,
                          run_playbook, upload)

testinfra_hosts = podman_hosts("webservers")[:1]

BASE = "https://localhost"


def in_app(host, command: str):
    """A command in the current release, as the app user, with the app's settings."""
    script = f"set -a; . {APP_ROOT}/shared/env; set +a; cd {APP_ROOT}/current && {command}"
    return host.run(f"runuser -u {APP_USER} -- sh -c '{script}'")


def status(host) -> dict:
    return json.loads(curl(host, f"{BASE}/jobs/status", "-k").stdout)


def test_rabbitmq_listens_only_on_loopback(host):
    for port in (5672, 25672, 4369):
        addrs = listeners(host, port)
        assert addrs, f"nothing listens on {port}"
        assert set(addrs) <= {"127.0.0.1"}, (port, addrs)
    assert listeners(host, 15672) == []  # the management plugin is off


def test_guest_is_gone_and_cannot_log_in(host):
    users = host.check_output("rabbitmqctl list_users --quiet --no-table-headers")
    assert "guest" not in users.split() and "demoapp" in users.split()
    probe = ("import amqp; c = amqp.Connection('127.0.0.1:5672', userid='guest', password='guest', "
             "virtual_host='/', connect_timeout=5)\ntry:\n    c.connect()\nexcept Exception as e:\n"
             "    print('refused', type(e).__name__)\nelse:\n    print('accepted')")
    encoded = base64.b64encode(probe.encode()).decode()
    result = in_app(host, f"echo {encoded} | base64 -d | .venv/bin/python -")
    assert result.stdout.startswith("refused"), result.stdout + result.stderr


def test_celery_inspect_ping_answers(host):
    result = in_app(host, f".venv/bin/celery --app {APP_NAME} inspect ping --timeout 10")
    assert result.rc == 0, result.stdout + result.stderr
    assert "default@" in result.stdout and "pong" in result.stdout


def test_a_task_sent_over_http_comes_back_over_http(host):
    """Upload an image: the view queues make_thumbnail on RabbitMQ, a worker makes it, the
    uploads page and /jobs/status show it, and nginx serves it."""
    out = io.BytesIO()
    Image.new("RGB", (600, 300), (30, 90, 200)).save(out, format="PNG")
    name = f"celery-{int(time.time())}.png"
    host.run(f"echo {base64.b64encode(out.getvalue()).decode()} | base64 -d > /tmp/{name}")
    upload(host, name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [t for t in status(host)["thumbnails"] if t["upload"] == name]
        if found:
            break
        time.sleep(1)
    assert found, status(host)
    png = curl(host, f"{BASE}{found[0]['url']}", "-k", "-o", "/tmp/thumb.png", "-w", "%{http_code} %{content_type}")
    assert png.stdout == "200 image/png"
    header = base64.b64decode(host.check_output("head -c 24 /tmp/thumb.png | base64 -w0"))
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (128, 64)
    assert found[0]["url"] in curl(host, f"{BASE}/uploads/", "-k").stdout


def test_beat_fires_the_periodic_task(host):
    first = status(host)["heartbeat"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        later = status(host)["heartbeat"]
        if later["count"] > first["count"]:
            break
        time.sleep(1)
    assert later["count"] > first["count"] >= 0 and later["last"], (first, later)


def test_a_worker_dropped_from_celery_workers_is_stopped_disabled_and_its_settings_removed(host):
    """Add a worker, then converge without it: the role finds its settings as no longer wanted
    (by its drop-in directory), stops and disables it and removes that directory; the
    worker that stays is left running. The host ends as the converge left it."""
    unit_dir = "/etc/systemd/system"
    workers = yaml.safe_load((PROJECT_DIR / "roles" / "celery" / "defaults" / "main.yml").read_text())["celery_workers"]
    assert [w["name"] for w in workers] == ["default"]  # the scenario runs the role's default worker
    extra = dict(workers[0], name="reports", queues=["reports"], concurrency=1)

    added = run_playbook("playbooks/app.yml", "--tags", "celery", "-e", json.dumps({"celery_workers": [*workers, extra]}))
    assert added.returncode == 0, added.stdout[-4000:] + added.stderr[-2000:]
    assert host.service("celery-worker@reports.service").is_running
    assert host.file(f"{unit_dir}/celery-worker@reports.service.d").is_directory
    default_pid = host.check_output("systemctl show -p MainPID --value celery-worker@default.service")

    dropped = run_playbook("playbooks/app.yml", "--tags", "celery")
    assert dropped.returncode == 0, dropped.stdout[-4000:] + dropped.stderr[-2000:]
    assert all(counts["changed"] > 0 for counts in recap(dropped.stdout).values())
    reports = host.service("celery-worker@reports.service")
    assert not reports.is_running and not reports.is_enabled
    assert not host.file(f"{unit_dir}/celery-worker@reports.service.d").exists
    assert host.service("celery-worker@default.service").is_running
    assert host.check_output("systemctl show -p MainPID --value celery-worker@default.service") == default_pid
    assert host.check_output("systemctl show -p NeedDaemonReload --value celery-worker@default.service") == "no"
