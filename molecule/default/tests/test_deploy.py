"""Release-based deploys on the default scenario's server, in order: A (the release serving when
they start) -> B -> failed C -> rollback to A -> D -> refused rollback -> E refused at the gate.
They run after every other check of the scenario (conftest.py): they leave D serving.

Versions are the demo app plus the files under molecule/default/versions/<X>/ (C builds on B):
B changes the version shown and adds a reversible migration (notes.0002_note_pinned), C adds a
migration that fails, D adds an irreversible data migration to A, E (on D) answers its health page
with 200 and its home page with 500: the gate before the switch refuses it.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from stackhelpers import (
    APP_ROOT,
    APP_USER,
    app_version,
    curl,
    current_release,
    deploy,
    health,
    podman_hosts,
    run_playbook,
    start_watchers,
    stop_watchers,
)

testinfra_hosts = podman_hosts("webservers")[:1]

VERSIONS = Path(__file__).resolve().parents[1] / "versions"
BASE = "https://localhost"
STATE: dict[str, str] = {}  # release ids seen by earlier tests (they run in file order)

@pytest.fixture(scope="module")
def app_versions(tmp_path_factory) -> dict[str, Path]:
    """Source trees of versions B, C, D and E on the controller."""
    root = tmp_path_factory.mktemp("app-versions")
    layers = {"B": ["B"], "C": ["B", "C"], "D": ["D"], "E": ["D", "E"]}
    return {name: app_version(root / name, [VERSIONS / layer for layer in overlays])
            for name, overlays in layers.items()}


def main_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value gunicorn@demoapp.service")


def has_pinned_column(host) -> bool:
    sql = ("SELECT count(*) FROM information_schema.columns "
           "WHERE table_name = 'notes_note' AND column_name = 'pinned'")
    return host.check_output(f'runuser -u postgres -- psql -d demoapp -tAc "{sql}"') == "1"


def applied(host, app: str = "notes") -> list[str]:
    sql = f"SELECT name FROM django_migrations WHERE app = '{app}' ORDER BY id"
    return host.check_output(f'runuser -u postgres -- psql -d demoapp -tAc "{sql}"').split()


def enqueue_slow_task(host, token: str, seconds: int) -> None:
    cmd = f"{APP_ROOT}/bin/manage enqueue_slow_task --token {token} --seconds {seconds}"
    assert host.run(f"runuser -u {APP_USER} -- {cmd}").rc == 0


def wait_for_run(host, token: str, ready, timeout: float = 120) -> dict:
    """The slow task's run once `ready(run)` holds (its state from /jobs/status)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = json.loads(curl(host, f"{BASE}/jobs/status", "-k").stdout)["runs"]
        run = next((r for r in runs if r["token"] == token), None)
        if run and ready(run):
            return run
        assert time.monotonic() < deadline, runs
        time.sleep(1)


def worker_started_at(host) -> datetime:
    usec = host.check_output("systemctl show -p ActiveEnterTimestampMonotonic --value celery-worker@default.service")
    uptime = float(host.check_output("cut -d' ' -f1 /proc/uptime"))
    now = datetime.now(timezone.utc).timestamp()
    return datetime.fromtimestamp(now - uptime + int(usec) / 1e6, timezone.utc)


def test_a_is_served_before_the_deploys(host):
    STATE["A"] = current_release(host)
    assert health(host) == {"database": "ok", "cache": "ok", "version": "1.0", "release": STATE["A"]}
    assert applied(host) == ["0001_initial"] and not has_pinned_column(host)


def test_deploy_b_switches_gracefully_to_new_code_and_schema(host, app_versions):
    pid = main_pid(host)
    # A long task is running when the deploy restarts the workers: the restart must wait for it.
    enqueue_slow_task(host, "across-deploy-b", 45)
    wait_for_run(host, "across-deploy-b", lambda run: run["started"])
    start_watchers(host)
    try:
        result = deploy(app_versions["B"])
    finally:
        missing, codes = stop_watchers(host)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    STATE["B"] = current_release(host)
    assert STATE["B"] != STATE["A"]
    # The new code answers (not the old one through a stale working directory), after a
    # graceful reload: same master process, new workers.
    assert health(host) == {"database": "ok", "cache": "ok", "version": "2.0-B", "release": STATE["B"]}
    assert "demoapp version 2.0-B" in curl(host, f"{BASE}/", "-k").stdout
    assert main_pid(host) == pid
    assert applied(host) == ["0001_initial", "0002_note_pinned"] and has_pinned_column(host)
    assert host.check_output(f"readlink {APP_ROOT}/previous").endswith(STATE["A"])
    record = json.loads(host.file(f"{APP_ROOT}/releases/{STATE['B']}/.release.json").content_string)
    assert "notes.0002_note_pinned" in record["migrations"]
    # During the deploy: `current` was never missing, and no request failed.
    assert missing == 0
    assert len(codes) > 20 and set(codes) == {"200"}, codes
    # The task ran once, to its end, and the worker restarted (new code) only after it.
    run = wait_for_run(host, "across-deploy-b", lambda run: run["finished"])
    assert run["attempts"] == 1, run
    assert worker_started_at(host) >= datetime.fromisoformat(run["finished"]), run


def test_failed_migration_stops_the_deploy_and_b_keeps_serving(host, app_versions):
    pid = main_pid(host)
    result = deploy(app_versions["C"])
    output = result.stdout + result.stderr  # failures may be printed on stderr
    assert result.returncode != 0, output[-3000:]
    assert "notes.0003_broken" in output and "fails on purpose" in output, output[-3000:]
    assert current_release(host) == STATE["B"]
    assert health(host)["release"] == STATE["B"]
    assert main_pid(host) == pid  # nothing was reloaded
    assert applied(host) == ["0001_initial", "0002_note_pinned"]


def test_rollback_serves_a_and_restores_its_schema(host):
    result = run_playbook("playbooks/rollback.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert current_release(host) == STATE["A"]
    assert health(host) == {"database": "ok", "cache": "ok", "version": "1.0", "release": STATE["A"]}
    assert "demoapp version 1.0" in curl(host, f"{BASE}/", "-k").stdout
    assert applied(host) == ["0001_initial"] and not has_pinned_column(host)
    assert host.check_output(f"readlink {APP_ROOT}/previous").endswith(STATE["B"])
    # A's own static manifest is the one A reads: its pages link assets that exist.
    css = re.search(r'href="(/static/notes/site\.[0-9a-f]{12}\.css)"', curl(host, f"{BASE}/", "-k").stdout)
    assert css and curl(host, f"{BASE}{css.group(1)}", "-k", "-o", "/dev/null", "-w", "%{http_code}").stdout == "200"


def test_rollback_over_an_irreversible_migration_is_refused(host, app_versions):
    result = deploy(app_versions["D"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    STATE["D"] = current_release(host)
    assert applied(host) == ["0001_initial", "0002_seed_welcome_note"]
    result = run_playbook("playbooks/rollback.yml")
    output = result.stdout + result.stderr  # failures may be printed on stderr
    assert result.returncode != 0, output[-3000:]
    assert "cannot be reversed" in output and "notes.0002_seed_welcome_note" in output, output[-3000:]
    assert current_release(host) == STATE["D"]  # nothing changed
    assert health(host)["release"] == STATE["D"]
    assert applied(host) == ["0001_initial", "0002_seed_welcome_note"]


def test_a_task_survives_its_worker_being_killed(host):
    """acks_late: the message stays in RabbitMQ until the task ends, so a worker killed mid-task
    (SIGKILL: out of memory, a lost machine) does not lose it; the restarted worker runs it again."""
    enqueue_slow_task(host, "killed-worker", 10)
    wait_for_run(host, "killed-worker", lambda run: run["started"])
    # The whole worker dies: the main process is frozen (so that it respawns no pool process),
    # its pool processes are killed, then it is. Killed directly, not by systemd: on these
    # cgroup-v1 test hosts systemd does not notice a cgroup emptied by its own SIGKILL until
    # TimeoutStopSec. systemd then restarts the worker (Restart=on-failure).
    main = host.check_output("systemctl show -p MainPID --value celery-worker@default.service")
    kill = f"kill -STOP {main} && kill -KILL $(cat /proc/{main}/task/*/children) && sleep 1 && kill -KILL {main}"
    assert host.run(kill).rc == 0
    try:
        run = wait_for_run(host, "killed-worker", lambda run: run["finished"])
    except AssertionError:
        diagnostics = host.run("systemctl status celery-worker@default.service --no-pager; "
                               "journalctl -u celery-worker@default.service --no-pager -n 40; "
                               "rabbitmqctl -n rabbit@localhost list_queues -p demoapp name messages_ready "
                               "messages_unacknowledged")
        raise AssertionError(diagnostics.stdout + diagnostics.stderr) from None
    assert run["attempts"] == 2, run
    assert host.service("celery-worker@default.service").is_running


def test_the_gate_refuses_a_release_whose_home_page_fails(host, app_versions):
    """E's health page answers 200, its home page 500: the side-socket gate asks every URL of
    django_app_healthcheck_urls (the demo inventory lists / too), so E never goes live."""
    before = current_release(host)
    pid = main_pid(host)
    result = deploy(app_versions["E"])
    output = result.stdout + result.stderr  # failures may be printed on stderr
    assert result.returncode != 0, output[-3000:]
    assert "GET / answered 500, expected 200" in output, output[-3000:]
    assert "the home page is broken on purpose" in output, output[-3000:]
    assert current_release(host) == before  # nothing was switched
    assert health(host)["release"] == before
    assert main_pid(host) == pid  # nor reloaded
