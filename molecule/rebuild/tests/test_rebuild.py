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

from stackhelpers import APP_ROOT, PROJECT_DIR, curl, group_hosts, podman_hosts, post_form, recap, receiver, run_playbook, upload

testinfra_hosts = podman_hosts("webservers")[:1]

SERVER = group_hosts("webservers")[0]
BASE = "https://localhost"
CONFIG = "/etc/django-stack/backup-demoapp.json"
STATE: dict = {}


def vault_secrets() -> list[str]:
    """Every secret of the demo vault (each line of a multi-line one), decrypted as Ansible does."""
    import yaml

    vault = f"{PROJECT_DIR}/inventories/demo/group_vars/all/vault.yml"
    plain = subprocess.run(["ansible-vault", "view", vault], capture_output=True, text=True, check=True).stdout
    found = []
    for name, value in yaml.safe_load(plain).items():
        if name.endswith("_access_key"):
            continue  # an S3 access key id names the key (S3's own logs show it); its secret key is the secret
        found += [line.strip() for line in str(value).splitlines() if len(line.strip()) >= 12]
    assert len(found) >= 6, "the demo vault should hold the app's, the database's and the backups' secrets"
    return found


SECRETS = vault_secrets()


def assert_no_secret(text: str, where: str) -> None:
    shown = [f"{secret[:4]}... ({len(secret)} characters)" for secret in SECRETS if secret in text]
    assert not shown, f"{where} shows secrets of the vault: {shown}"


def playbook_ok(*args: str):
    """Run a playbook at -vvv (what an operator debugging it would see): it must succeed and show
    no secret of the vault."""
    result = run_playbook(*args, "-vvv")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert_no_secret(output, f"ansible-playbook {' '.join(args)} -vvv")
    return output


def assert_no_secret_on_the_host(host, while_running: str | None = None) -> None:
    """Not in the journal, in a file every user can read, or in a process's command line (also
    while WHILE_RUNNING, a oneshot unit, runs)."""
    assert_no_secret(host.check_output("journalctl --no-pager -q -o cat"), "the journal")
    # The patterns go in through stdin, into a file only root can read, never on a command line.
    readable = subprocess.run(
        ["podman", "exec", "-i", SERVER, "sh", "-c",
         "umask 077; cat > /root/.secret-patterns; "
         "find /etc /srv /var /opt /usr/local /tmp /run /root /home -xdev -type f -perm -o+r -size -20M "
         "-not -path '/var/lib/apt/*' -not -path '/var/cache/apt/*' -print0 2>/dev/null | "
         "xargs -0 -r grep -l -F -f /root/.secret-patterns; rm -f /root/.secret-patterns"],
        input="\n".join(SECRETS) + "\n", capture_output=True, text=True, check=False)
    assert readable.stdout.strip() == "", f"world-readable files hold secrets of the vault: {readable.stdout}"
    samples = [host.check_output("ps -eww -o args")]
    if while_running:
        host.check_output(f"systemctl start --no-block {while_running}")
        for _ in range(200):
            samples.append(host.check_output("ps -eww -o args"))
            if host.run(f"systemctl is-active --quiet {while_running}").rc != 0 and len(samples) > 3:
                break
            time.sleep(0.1)
    assert_no_secret("\n".join(samples), "the process list")


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
    # The point-in-time-recovery archive's retention, from the same playbook: its one base backup kept.
    assert re.search(r"Archive retention, from the control node: kept base backups pg-[0-9]+/[0-9T]+ and [0-9]+ WAL objects",
                     " ".join(output.split())), output[-3000:]


def test_a_failed_backup_unit_runs_the_failure_command(host):
    """OnFailure=: a failed run is heard of through the notifier the playbooks wire (roles/notifier):
    a critical journal message, and a POST to the inventory's webhook."""
    # The scenario's notifier webhook points at 127.0.0.1:45090.
    with receiver(host, "test-hook", 45090) as received:
        try:
            since = host.check_output("date +%s")
            assert host.run("systemctl start django-stack-backup-freshness@nosuchsite.service").rc != 0
            wanted = "django-stack-backup-freshness@nosuchsite.service failed"
            for _ in range(40):
                logged = host.run(f"journalctl -q -t django-stack-notify -p crit --since @{since} --no-pager").stdout
                posted = received()
                if wanted in logged and posted:
                    break
                time.sleep(0.5)
            assert wanted in logged
            [notice] = posted
            assert notice["path"] == "/hooks/rebuild-test-token"
            assert notice["body"]["unit"] == "django-stack-backup-freshness@nosuchsite.service"
            assert notice["body"]["text"].startswith(wanted)
            # The URL's token is in a root-only file, not in the unit or the journal.
            assert host.file("/etc/django-stack-notify/notify.json").mode == 0o600
            assert "rebuild-test-token" not in host.run(f"journalctl -q --since @{since} --no-pager").stdout
        finally:
            host.run("systemctl reset-failed 'django-stack-backup-freshness@nosuchsite.service' "
                     "'django-stack-backup-failed@*'")


def test_the_backup_units_are_sandboxed(host):
    """systemd-analyze security's exposure of the backup (root, with three capabilities) and of the
    freshness check (root, none); docs/performance.md has the figures before and after."""
    limits = {"django-stack-backup@demoapp.service": 3.0, "django-stack-backup-freshness@demoapp.service": 2.5}
    for unit, limit in limits.items():
        out = host.check_output(f"systemd-analyze security --no-pager {unit} | tail -1")
        exposure = float(re.search(r"exposure level for \S+: ([0-9.]+)", out).group(1))
        assert exposure <= limit, (unit, out)


# The backups as on a split layout: the app's own role over TCP, no CREATEDB, connecting to the app's
# database for what is not inside one database; the superuser makes and drops the drill's and the
# restore's databases on the database host.
AS_APP_ROLE = ("-e", json.dumps({"backup_db_user": "demoapp", "backup_db_host": "127.0.0.1",
                                 "backup_db_maintenance_database": "demoapp",
                                 "backup_db_password": "{{ vault_django_app_db_password }}"}))


def task_result(output: str, name: str) -> str:
    """The first result line (ok:, changed:, ...) of the task NAME in a playbook's output."""
    found = re.search(r"TASK \[[^\]]*" + re.escape(name) + r"[^\]]*\].*?\n(ok|changed|skipping|failed|fatal): \[([^\]]*)\]",
                      output, re.S)
    assert found, f"no result of task {name!r}: {output[-3000:]}"
    return found.group(1) + " " + found.group(2)


def test_restore_drill_checks_the_set_without_touching_the_site(host):
    assert host.check_output("runuser -u postgres -- psql -Atc \"SELECT rolcreatedb FROM pg_roles "
                             "WHERE rolname = 'demoapp'\"") == "f"
    output = playbook_ok("playbooks/restore-drill.yml", *AS_APP_ROLE)
    assert re.search(r"RPO [0-9.]+ h", output) and re.search(r"RTO [0-9.]+ s", output), output[-3000:]
    assert "no pending migration" in output
    # The point-in-time-recovery archive too (playbooks/backup.yml took a base backup): the newest
    # recoverable moment and its age.
    assert re.search(r"Point-in-time recovery:\s+base\s+backup\s+\S+\s+\(pg-[0-9]+\)\s+ended.*?RPO\s+now\s+[0-9]+\s+s",
                     output, re.S), output[-3000:]
    # made and dropped by the superuser, delegated to the database host (here the same server)
    assert task_result(output, "database | Create it empty").startswith("changed"), output[-3000:]
    assert task_result(output, "drill | Drop the scratch database").startswith("changed"), output[-3000:]
    assert host.run("runuser -u postgres -- psql -lqt | cut -d'|' -f1 | grep -qw demoapp_drill").rc != 0
    assert set(STATE["titles"]) <= set(notes(host))


def test_no_secret_on_the_server_after_backups_and_a_drill(host):
    assert_no_secret_on_the_host(host)


def fresh_server() -> None:
    """The server is gone; a brand-new one (same name, empty Debian 13 image) takes its place."""
    subprocess.run(["podman", "rm", "-f", "-t", "5", SERVER], check=True, capture_output=True)
    subprocess.run(
        ["podman", "run", "-d", "--name", SERVER, "--hostname", "stack", "--network", "mol-rebuild-net",
         "--systemd=always", "--runtime=runc", "--cap-add=SYS_ADMIN", "--cap-add=NET_ADMIN", "--ulimit", "nofile=20000:20000",
         "--ulimit", "nproc=4096:4096", "-v", f"{PROJECT_DIR}/.cache/ssh/id_ed25519.pub:/root/.ssh/authorized_keys:ro",
         "localhost/djstack-debian:trixie", "/sbin/init"],
        check=True, capture_output=True,
    )
    # On a loaded machine the exec may come before systemd has its bus: ask again.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        boot = subprocess.run(["podman", "exec", SERVER, "systemctl", "is-system-running", "--wait"],
                              capture_output=True, text=True, timeout=180, check=False)
        if boot.stdout.strip() in ("running", "degraded"):
            break
        time.sleep(3)


def test_destroy_rebuild_and_restore_serve_the_same_data():
    started = time.monotonic()
    fresh_server()
    # At -vvv too: provisioning sets every secret of the vault for the first time (bench/releases.py
    # times the RTO without the extra output).
    playbook_ok("site.yml")
    provisioned = time.monotonic()
    output = playbook_ok("playbooks/restore.yml", *AS_APP_ROLE)
    restored = time.monotonic()
    assert f"Restored set {STATE['set_id']}" in output, output[-3000:]
    assert task_result(output, "Swap the restored database in").startswith("changed"), output[-3000:]

    import testinfra

    host = testinfra.get_host(f"podman://{SERVER}")
    # Everything the restore stopped runs again (started, on every worker host).
    for unit in ("celery-worker@default.service", "celery-beat@demoapp.service"):
        assert host.service(unit).is_running, host.run(f"systemctl status --no-pager {unit}").stdout
    assert "demoapp_restore" not in host.check_output("runuser -u postgres -- psql -Atc 'SELECT datname FROM pg_database'")
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

    # A restore that fails before swapping anything (a set that does not exist): the run fails, and
    # the live data, the site (out of maintenance) and the workers are back.
    failed = run_playbook("playbooks/restore.yml", "-e", "backup_set=20200101T000000Z-abcdef", *AS_APP_ROLE)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "Nothing was swapped in" in output, output[-3000:]
    assert_no_secret(output, "a failed restore")
    for unit in ("celery-worker@default.service", "celery-beat@demoapp.service"):
        assert host.service(unit).is_running, host.run(f"systemctl status --no-pager {unit}").stdout
    assert counter(host) == STATE["count"] + 2 and set(STATE["titles"]) <= set(notes(host))


def psql(host, sql: str) -> str:
    return host.check_output(f"runuser -u postgres -- psql -d demoapp -XAtc {sql!r}")


def archived_after(host, moment: str, timeout: int = 90) -> None:
    """Wait until PostgreSQL has archived a segment after MOMENT (UTC): every write before it is in
    the archive. archive_timeout (10 s in this scenario) bounds the wait on a quiet server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if psql(host, f"SELECT coalesce(last_archived_time > '{moment}', false) FROM pg_stat_archiver") == "t":
            return
        time.sleep(2)
    raise AssertionError(f"nothing archived after {moment} within {timeout} s: "
                         + psql(host, "SELECT * FROM pg_stat_archiver"))


def test_point_in_time_recovery_onto_a_new_cluster():
    """Rows written at T1 and at T2 (more than archive_timeout later) on the rebuilt server, which
    archives its WAL; then its cluster is lost and made anew, as on a fresh server (Debian's package
    makes an empty one; site.yml configures it, and it starts a lineage of its own). The restore
    recovers the database to latest (both rows) and then to T1 (T1's rows, not T2's). Moments the
    archive cannot reach are refused before any change. The fresh server itself, site.yml on an
    empty image, is test_destroy_rebuild_and_restore_serve_the_same_data's: this scenario builds it
    once."""
    import testinfra

    host = testinfra.get_host(f"podman://{SERVER}")
    # The server's key may only add objects: the base backup and the segments need nothing more.
    playbook_ok("playbooks/backup.yml")
    assert "archiving keeps up" in host.check_output(
        "systemctl start django-stack-wal-archive-check@demoapp.service && "
        "journalctl -u django-stack-wal-archive-check@demoapp.service -o cat --no-pager -n 5")
    # A failed check or base backup is heard of (tests/test_pitr.py makes the check fail), and both
    # run as postgres, sandboxed.
    for unit in ("django-stack-wal-archive-check@demoapp.service", "django-stack-base-backup@demoapp.service"):
        props = host.check_output(f"systemctl show -p OnFailure -p User -p ProtectSystem -p NoNewPrivileges {unit}")
        assert "OnFailure=django-stack-pitr-failed@" in props and "User=postgres" in props, props
        assert "ProtectSystem=strict" in props and "NoNewPrivileges=yes" in props, props
    tag = secrets.token_hex(4)
    before = f"pitr {tag} before T1"
    assert post_form(host, "/notes/new/", f"title={before}", "body=written before T1") == "302"
    time.sleep(2)
    t1 = host.check_output("date -u +%Y-%m-%dT%H:%M:%SZ")
    time.sleep(12)  # more than the scenario's archive_timeout (10 s)
    after = f"pitr {tag} after T1"
    assert post_form(host, "/notes/new/", f"title={after}", "body=written at T2") == "302"
    t2 = host.check_output("date -u +%Y-%m-%dT%H:%M:%SZ")
    archived_after(host, t2)
    rows = psql(host, "SELECT count(*) FROM pg_stat_user_tables")

    lineage = psql(host, "SELECT system_identifier FROM pg_control_system()")
    host.check_output("pg_dropcluster --stop 17 main && pg_createcluster 17 main")
    playbook_ok("site.yml")
    assert psql(host, "SELECT system_identifier FROM pg_control_system()") != lineage
    assert before not in notes(host)

    # (A moment in the future is the catalog's refusal too: tests/test_pitr.py.)
    for moment, why in (("2020-01-01T00:00:00Z", "ended at"), ("yesterday", "ISO 8601")):
        refused = run_playbook("playbooks/restore.yml", "-e", f"restore_target_time={moment}")
        output = refused.stdout + refused.stderr
        flat = " ".join(output.split())  # Ansible folds long messages
        assert refused.returncode != 0 and f"pitr_restore_target_time={moment}" in flat and why in flat, output[-3000:]
        assert "Switch nginx maintenance mode on" not in output, "a refused moment changed something"

    output = playbook_ok("playbooks/restore.yml", "-e", "restore_target_time=latest")
    assert "Recovered to latest" in " ".join(output.split()), output[-3000:]
    titles = notes(host)
    assert before in titles and after in titles, titles
    assert set(STATE["titles"]) <= set(titles)
    assert psql(host, "SELECT count(*) FROM pg_stat_user_tables") == rows

    output = playbook_ok("playbooks/restore.yml", "-e", f"restore_target_time={t1}")
    assert f"Recovered to {t1.replace('Z', '+00:00')}" in " ".join(output.split()), output[-3000:]
    titles = notes(host)
    assert before in titles and after not in titles, titles
    assert set(STATE["titles"]) <= set(titles)
    # The previous clusters are kept aside, and the restored one archives on a new timeline.
    kept = host.check_output("ls -d /var/lib/postgresql/17/main.before-pitr-* | wc -l")
    assert kept == "2", kept
    assert host.service("django-stack-wal-archive-check@demoapp.timer").is_running


def test_no_secret_in_check_diff_deploy_or_on_the_rebuilt_server():
    """The rebuilt server, at -vvv (its provisioning was too): `site.yml --check --diff` (nothing to
    change after the restore), a deploy; then the journal, the world-readable files and the process
    lists, also while the nightly backup runs."""
    import testinfra

    host = testinfra.get_host(f"podman://{SERVER}")
    for args in (["site.yml", "--check", "--diff"], ["playbooks/deploy.yml"]):
        output = playbook_ok(*args)
        if "--check" in args:
            assert recap(output)[group_hosts("webservers")[0]]["changed"] == 0, output[-3000:]
    assert_no_secret_on_the_host(host, while_running="django-stack-backup@demoapp.service")
