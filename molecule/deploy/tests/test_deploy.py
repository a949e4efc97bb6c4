"""Release-based deploys, in order: A (converged) -> B -> failed C -> rollback to A -> D -> refused rollback.

Versions are the demo app plus the files under molecule/deploy/versions/<X>/ (C builds on B):
B changes the version shown and adds a reversible migration (notes.0002_note_pinned), C adds a
migration that fails, D adds an irreversible data migration to A.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from stackhelpers import APP_ROOT, PROJECT_DIR, curl, current_release, podman_hosts, run_playbook

testinfra_hosts = podman_hosts("webservers")[:1]

VERSIONS = Path(__file__).resolve().parents[1] / "versions"
BASE = "https://localhost"
STATE: dict[str, str] = {}  # release ids seen by earlier tests (they run in file order)


def ignore(directory: str, names: list[str]) -> set[str]:
    """What a checkout would not have: byte code anywhere, local data at the project root only
    (the app's own notes/static/ must stay)."""
    skipped = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
    if Path(directory) == PROJECT_DIR / "examples" / "demoapp":
        skipped |= {n for n in names if n in ("db.sqlite3", "static", "media")}
    return skipped


@pytest.fixture(scope="module")
def app_versions(tmp_path_factory) -> dict[str, Path]:
    """Source trees of versions B, C and D on the controller."""
    root = tmp_path_factory.mktemp("app-versions")
    built = {}
    for name, layers in {"B": ["B"], "C": ["B", "C"], "D": ["D"]}.items():
        tree = root / name
        shutil.copytree(PROJECT_DIR / "examples" / "demoapp", tree, ignore=ignore)
        for layer in layers:
            shutil.copytree(VERSIONS / layer, tree, dirs_exist_ok=True, ignore=ignore)
        built[name] = tree
    return built


def deploy(source: Path):
    return run_playbook("playbooks/deploy.yml", "-e", f"django_app_source_path={source}")


def health(host) -> dict:
    return json.loads(curl(host, f"{BASE}/healthz", "-k").stdout)


def main_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value gunicorn@demoapp.service")


def has_pinned_column(host) -> bool:
    sql = ("SELECT count(*) FROM information_schema.columns "
           "WHERE table_name = 'notes_note' AND column_name = 'pinned'")
    return host.check_output(f'runuser -u postgres -- psql -d demoapp -tAc "{sql}"') == "1"


def applied(host, app: str = "notes") -> list[str]:
    sql = f"SELECT name FROM django_migrations WHERE app = '{app}' ORDER BY id"
    return host.check_output(f'runuser -u postgres -- psql -d demoapp -tAc "{sql}"').split()


def start_watchers(host) -> None:
    """While a deploy runs: poll `current` (the switch must never leave it missing) and send
    requests through nginx one after another (none may fail)."""
    host.run("rm -f /tmp/current-missing /tmp/codes")
    host.run(f"nohup bash -c 'while [ ! -e /tmp/stop-watch ]; do [ -e {APP_ROOT}/current/manage.py ] "
             "|| echo missing >> /tmp/current-missing; done' >/dev/null 2>&1 &")
    host.run("nohup bash -c 'while [ ! -e /tmp/stop-watch ]; do curl -sk -o /dev/null --max-time 20 "
             "-w \"%{http_code}\\n\" https://localhost/counter/ >> /tmp/codes; done' >/dev/null 2>&1 &")


def stop_watchers(host) -> tuple[int, list[str]]:
    host.run("touch /tmp/stop-watch; sleep 1; rm -f /tmp/stop-watch")
    missing = host.run("cat /tmp/current-missing").stdout.split()
    codes = host.run("cat /tmp/codes").stdout.split()
    return len(missing), codes


def test_a_is_served_after_converge(host):
    STATE["A"] = current_release(host)
    assert health(host) == {"database": "ok", "cache": "ok", "version": "1.0", "release": STATE["A"]}
    assert applied(host) == ["0001_initial"] and not has_pinned_column(host)


def test_deploy_b_switches_gracefully_to_new_code_and_schema(host, app_versions):
    pid = main_pid(host)
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
