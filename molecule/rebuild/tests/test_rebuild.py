"""Move a site to a new Debian release by rebuilding it: data in through the site of a Debian 12
server (PostgreSQL 15) -> backup -> drill -> server destroyed -> brand-new Debian 13 server
(PostgreSQL 17) provisioned with site.yml -> restore -> the same rows, media bytes and migrations,
the search index rebuilt, the site served.

The tests run in file order and share STATE.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import subprocess
import time

from PIL import Image

from stackhelpers import APP_ROOT, PROJECT_DIR, curl, group_hosts, podman_hosts, post_form, run_playbook, upload

testinfra_hosts = podman_hosts("webservers")[:1]

SERVER = group_hosts("webservers")[0]
BASE = "https://localhost"
CONFIG = "/etc/django-stack/backup-demoapp.json"
STATE: dict = {}


def playbook_ok(*args: str):
    result = run_playbook(*args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return output


def notes(host) -> list[str]:
    page = curl(host, f"{BASE}/", "-k", "-H", "Cache-Control: no-cache").stdout
    return re.findall(r"<h2>([^<]*)</h2>", page)


def counter(host) -> int:
    return json.loads(curl(host, f"{BASE}/counter/?format=json", "-k").stdout)["count"]


def backup_sets(host) -> dict:
    return json.loads(host.check_output(f"django-stack-backup --config {CONFIG} list"))


def os_release(host) -> str:
    return host.check_output(". /etc/os-release && echo $VERSION_ID")


def applied_migrations(host) -> list[str]:
    out = host.check_output(f"runuser -u django -- {APP_ROOT}/bin/manage showmigrations --plan")
    return sorted(line.split("]", 1)[1].strip() for line in out.splitlines() if line.startswith("[X]"))


def search(host, words: str) -> str:
    return curl(host, f"{BASE}/search/?q={words}", "-k").stdout


def test_the_site_to_move_runs_debian_12_and_postgresql_15(host):
    assert os_release(host) == "12"
    assert host.service("postgresql@15-main").is_running


def test_a_worker_runs_tasks_on_debian_12s_rabbitmq_under_its_sandbox(host):
    """The demo's Celery and kombu against RabbitMQ 3.10 (Debian 13's 4.0: the default scenario):
    an uploaded image's thumbnail, made by a worker that may write only the media."""
    assert host.check_output("dpkg-query -W -f '${Version}' rabbitmq-server").startswith("3.10")
    out = io.BytesIO()
    Image.new("RGB", (600, 300), (200, 90, 30)).save(out, format="PNG")
    name = f"rebuild-{secrets.token_hex(4)}.png"
    host.run(f"echo {base64.b64encode(out.getvalue()).decode()} | base64 -d > /tmp/{name}")
    upload(host, name)
    deadline, found = time.monotonic() + 60, []
    while time.monotonic() < deadline and not found:
        found = [t for t in json.loads(curl(host, f"{BASE}/jobs/status", "-k").stdout)["thumbnails"]
                 if t["upload"] == name]
        time.sleep(1)
    assert found, "no thumbnail within 60 s"
    assert host.check_output("systemctl show -p ProtectSystem --value celery-worker@default.service") == "strict"


def test_put_data_in_through_the_site(host):
    tag = secrets.token_hex(4)
    STATE["titles"] = [f"rebuild {tag} note {i}" for i in range(3)]
    for title in STATE["titles"]:
        assert post_form(host, "/notes/new/", f"title={title}", f"body=written before the backup ({tag})") == "302"
    STATE["uploads"] = {}
    for i in range(2):
        content = f"rebuild-{tag}-upload-{i}-" + secrets.token_hex(256)
        STATE["uploads"][upload(host, f"rebuild-{tag}-{i}.txt", content)] = content
    for _ in range(3):
        STATE["count"] = counter(host)
    assert set(STATE["titles"]) <= set(notes(host))
    STATE["migrations"] = applied_migrations(host)
    STATE["search_word"] = f"rebuild {tag}"
    assert STATE["titles"][0] in search(host, f"rebuild+{tag}")


def test_backup_makes_a_complete_encrypted_set(host):
    playbook_ok("playbooks/backup.yml")
    sets = backup_sets(host)
    complete = [s for s in sets["sets"] if s["complete"]]
    assert len(complete) == 1, sets
    STATE["set_id"] = complete[0]["set_id"]
    info = json.loads(host.check_output(f"django-stack-backup --config {CONFIG} list --set {STATE['set_id']}"))
    manifest = info["manifest"]
    assert manifest["release_id"] == host.check_output(f"readlink {APP_ROOT}/current").rsplit("/", 1)[-1]
    assert manifest["database"]["tables"]["public.notes_note"] >= 3
    assert "notes.0001_initial" in manifest["database"]["applied_migrations"]
    assert manifest["media"]["files"] >= 2
    assert all(o["key"].endswith(".age") for o in manifest["objects"])  # encrypted on the server
    # The timer on the host runs the same code and finds the set fresh.
    assert host.run("systemctl start django-stack-backup-freshness@demoapp.service").rc == 0


def test_the_nightly_unit_makes_a_complete_set_under_its_sandbox(host):
    """What the timer starts every night: the backup service, with its sandboxing applied."""
    result = host.run("systemctl start django-stack-backup@demoapp.service")
    assert result.rc == 0, host.run("journalctl -u django-stack-backup@demoapp.service -n 40 --no-pager").stdout
    complete = [s["set_id"] for s in backup_sets(host)["sets"] if s["complete"]]
    # A new set, now the newest; the server deletes nothing (its config has no retention: the
    # control node prunes), so the earlier one of today is still there.
    assert len(complete) == 2 and complete[0] > STATE["set_id"] == complete[1], (complete, STATE["set_id"])
    assert not {"keep_daily", "keep_weekly", "keep_monthly"} & set(json.loads(host.check_output(f"cat {CONFIG}")))
    STATE["set_id"] = complete[0]  # what the restore takes
    assert host.check_output("systemctl show -p ProtectSystem --value django-stack-backup@demoapp.service") == "strict"


def test_the_control_node_prunes_with_its_own_key(host):
    """playbooks/prune-backups.yml: the retention (one set a day) on the control node drops the
    earlier set of today; --check first changes nothing."""
    before = [s["set_id"] for s in backup_sets(host)["sets"] if s["complete"]]
    output = playbook_ok("playbooks/prune-backups.yml", "--check")
    assert f"would prune {before[1]}" in output, output[-3000:]
    assert [s["set_id"] for s in backup_sets(host)["sets"] if s["complete"]] == before
    output = playbook_ok("playbooks/prune-backups.yml")
    assert f"pruned {before[1]}" in output, output[-3000:]
    assert [s["set_id"] for s in backup_sets(host)["sets"]] == [STATE["set_id"]]


def test_restore_drill_checks_the_set_without_touching_the_site(host):
    output = playbook_ok("playbooks/restore-drill.yml")
    assert re.search(r"RPO [0-9.]+ h", output) and re.search(r"RTO [0-9.]+ s", output), output[-3000:]
    assert "no pending migration" in output
    assert host.run("runuser -u postgres -- psql -lqt | cut -d'|' -f1 | grep -qw demoapp_drill").rc != 0
    assert set(STATE["titles"]) <= set(notes(host))


def test_destroy_rebuild_and_restore_serve_the_same_data():
    # The server is gone; a brand-new one (same name, empty image) takes its place.
    started = time.monotonic()
    subprocess.run(["podman", "rm", "-f", "-t", "5", SERVER], check=True, capture_output=True)
    subprocess.run(
        ["podman", "run", "-d", "--name", SERVER, "--hostname", "stack", "--network", "mol-rebuild-net",
         "--systemd=always", "--runtime=runc", "--cap-add=SYS_ADMIN", "--ulimit", "nofile=20000:20000",
         "--ulimit", "nproc=4096:4096", "-v", f"{PROJECT_DIR}/.cache/ssh/id_ed25519.pub:/root/.ssh/authorized_keys:ro",
         "localhost/djstack-debian:trixie", "/sbin/init"],
        check=True, capture_output=True,
    )
    subprocess.run(["podman", "exec", SERVER, "systemctl", "is-system-running", "--wait"], capture_output=True,
                   timeout=120, check=False)
    playbook_ok("site.yml")
    provisioned = time.monotonic()
    output = playbook_ok("playbooks/restore.yml")
    restored = time.monotonic()
    assert f"Restored set {STATE['set_id']}" in output, output[-3000:]

    import testinfra

    host = testinfra.get_host(f"podman://{SERVER}")
    assert os_release(host) == "13"
    assert host.service("postgresql@17-main").is_running
    assert set(STATE["titles"]) <= set(notes(host))
    assert applied_migrations(host) == STATE["migrations"]
    found = search(host, STATE["search_word"].replace(" ", "+"))
    assert all(title in found for title in STATE["titles"]), found[-2000:]
    for url, content in STATE["uploads"].items():
        assert curl(host, f"{BASE}{url}", "-k").stdout == content
    assert counter(host) == STATE["count"] + 1  # the restored row, incremented by this request
    print(f"\nRTO, fresh Debian 13 server -> serving the restored data of a Debian 12 one: {restored - started:.0f} s "
          f"(provisioning with site.yml {provisioned - started:.0f} s, restore {restored - provisioned:.0f} s)")
