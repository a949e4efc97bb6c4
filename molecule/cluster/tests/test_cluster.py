"""Five servers, each tier where production puts it, converged with site.yml over SSH as `deploy`
(a sudo user, as on a cloud image): the wiring derived from the inventory's groups and each
server's stack_private_address works across hosts. The load balancer and rolling deploys: test_rolling.py.

Tests talk to each server through testinfra's podman backend (as root, to look); what Ansible does
(converge, check mode, backup, drill) goes over SSH as deploy. The tests run in file order.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time

import pytest
import testinfra

from stackhelpers import (APP_NAME, APP_ROOT, APP_USER, INVENTORY, PROJECT_DIR, curl, group_hosts, http_status,
                          listeners, post_form, run_playbook, upload)
from testinfra.utils.ansible_runner import AnsibleRunner

BASE = "https://localhost"
DB, = group_hosts("dbservers")
WEB = group_hosts("webservers")
WORKER, = group_hosts("workers")
LBS = group_hosts("loadbalancers")
SERVERS = [DB, *WEB, WORKER, *LBS]
RUNNER = AnsibleRunner.get_runner(INVENTORY)
ADDRESS = {name: RUNNER.get_variables(name)["stack_private_address"] for name in SERVERS}


def server(name: str):
    return testinfra.get_host(f"podman://{name}")


def timed(label: str, started: float) -> None:
    print(f"\n{label}: {time.monotonic() - started:.0f} s")


def notes(host) -> list[str]:
    page = curl(host, f"{BASE}/", "-k", "-H", "Cache-Control: no-cache").stdout
    return re.findall(r"<h2>([^<]*)</h2>", page)


def test_the_layout_is_the_inventorys():
    assert (sorted(WEB), group_hosts("backupservers")) == (["mol-cluster-web1", "mol-cluster-web2"], ["mol-cluster-web1"])
    assert group_hosts("brokers") == group_hosts("cacheservers") == group_hosts("searchservers") == [WORKER]
    # Each server is at the address the inventory names (the scenario's network has a fixed subnet).
    for name in SERVERS:
        found = subprocess.run(["podman", "inspect", name, "--format",
                                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert found == ADDRESS[name], name


def test_ansible_comes_in_as_deploy_and_becomes_root_through_sudo():
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    for become, expected in (([], "deploy"), (["--become"], "root")):
        result = subprocess.run(["ansible", "all", "-i", INVENTORY, "-o", "-m", "ansible.builtin.command",
                                 "-a", "whoami", *become], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                                check=False, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        answers = dict(re.findall(r"^(\S+) \| CHANGED \| rc=0 \| \(stdout\) (\S+)$", result.stdout, re.M))
        assert answers == {name: expected for name in SERVERS}, result.stdout


@pytest.mark.parametrize("name", SERVERS)
def test_nothing_the_stack_wrote_is_owned_by_deploy(name):
    """deploy only logs in: the stack's files belong to root, the app's user or the services'."""
    host = server(name)
    uid = host.check_output("id -u deploy")
    found = host.check_output(f"find / -xdev -uid {uid} -not -path '/home/deploy' -not -path '/home/deploy/*' "
                              "-not -path '/proc/*' 2>/dev/null || true")
    assert found == "", found
    # Nor did Ansible leave module files behind (a background job as an unprivileged become user would).
    assert host.run("ls -d /var/tmp/ansible-tmp-* /tmp/ansible-tmp-*").stdout == ""


@pytest.mark.parametrize("name", WEB)
def test_each_web_server_serves_the_site_through_its_nginx(name):
    host = server(name)
    assert http_status(host, f"{BASE}/healthz") == 200
    assert http_status(host, f"{BASE}/") == 200
    assert json.loads(curl(host, f"{BASE}/healthz", "-k").stdout)


def test_a_note_written_through_web1_is_read_through_web2():
    title = f"cluster note {secrets.token_hex(4)}"
    web1, web2 = (server(name) for name in sorted(WEB))
    notes(web2)  # the note list is now in the cache: the write must reach web2's reads through it
    assert post_form(web1, "/notes/new/", f"title={title}", "body=written on web1") == "302"
    # Through web2, the same database (and the shared memcached the note list is cached in).
    assert title in notes(web2)


def test_postgresql_listens_on_its_private_address_and_lets_in_exactly_the_app_hosts():
    host = server(DB)
    addrs = set(listeners(host, 5432))
    assert ADDRESS[DB] in addrs and addrs <= {"127.0.0.1", "[::1]", ADDRESS[DB]}, addrs
    rules = host.check_output("runuser -u postgres -- psql -AtF ' ' -c "
                              "\"SELECT address, netmask FROM pg_hba_file_rules WHERE type IN ('host', 'hostssl')\"")
    remote = {line.split()[0] for line in rules.splitlines() if line.split()[0] not in ("127.0.0.1", "::1")}
    assert remote == {ADDRESS[name] for name in (*WEB, WORKER)}, rules
    # Nothing else of the stack runs there.
    assert not host.service("nginx").is_running and not host.service("rabbitmq-server").is_running


def test_the_services_of_the_worker_listen_on_its_private_address_for_the_others():
    host = server(WORKER)
    for port in (11211, 5671, 8983):
        assert ADDRESS[WORKER] in listeners(host, port), port


@pytest.mark.parametrize("name", WEB)
def test_the_apps_environment_points_at_the_private_addresses(name):
    env = dict(re.findall(r"^([A-Z_]+)='(.*)'$", server(name).file(f"{APP_ROOT}/shared/env").content_string, re.M))
    # The primary, then the replica: a connection that writes takes the first that accepts writes.
    assert env["DJANGO_DB_HOST"] == f"{ADDRESS[DB]},{ADDRESS[WORKER]}"
    assert env["DJANGO_DB_TARGET_SESSION_ATTRS"] == "read-write"
    assert (env["DJANGO_DB_REPLICA_HOST"], env["DJANGO_DB_REPLICA_SSLMODE"]) == (ADDRESS[WORKER], "verify-full")
    assert env["DJANGO_CACHE_LOCATION"] == f"{ADDRESS[WORKER]}:11211"
    assert f"@{ADDRESS[WORKER]}:5671/" in env["DJANGO_CELERY_BROKER_URL"]
    assert env["DJANGO_SOLR_URL"] == f"http://{ADDRESS[WORKER]}:8983/solr/{APP_NAME}"


def test_the_workers_celery_runs_tasks():
    """beat on the worker sends the heartbeat, the worker runs it against the database on db, and
    a web server reads it; the worker answers a ping through the broker."""
    web = server(WEB[0])
    first = json.loads(curl(web, f"{BASE}/jobs/status", "-k").stdout)["heartbeat"]
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        later = json.loads(curl(web, f"{BASE}/jobs/status", "-k").stdout)["heartbeat"]
        if later["count"] > first["count"]:
            break
        time.sleep(1)
    assert later["count"] > first["count"] and later["last"], (first, later)
    worker = server(WORKER)
    script = f"set -a; . {APP_ROOT}/shared/env; set +a; cd {APP_ROOT}/current && .venv/bin/celery --app {APP_NAME} inspect ping --timeout 10"
    ping = worker.run(f"runuser -u {APP_USER} -- sh -c '{script}'")
    assert ping.rc == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr


def test_a_backup_from_web1_and_a_restore_drill_succeed():
    # An upload besides the notes in the database: in the media bucket (zz-media.yml), which the
    # backups on web1 copy into the set.
    upload(server(group_hosts("backupservers")[0]), f"cluster-{secrets.token_hex(4)}.txt", secrets.token_hex(64))
    started = time.monotonic()
    result = run_playbook("playbooks/backup.yml")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert re.search(r"Backup set \S+: ", result.stdout), result.stdout[-3000:]
    timed("backup from web1 (database over the private network)", started)
    started = time.monotonic()
    result = run_playbook("playbooks/restore-drill.yml")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert re.search(r"RPO [0-9.]+ h", result.stdout) and "no pending migration" in result.stdout, result.stdout[-3000:]
    assert re.search(r"rows and [1-9][0-9]* media files", result.stdout), result.stdout[-3000:]
    timed("restore drill", started)
    # The scratch database is gone from db.
    names = server(DB).check_output("runuser -u postgres -- psql -Atc 'SELECT datname FROM pg_database'").split()
    assert f"{APP_NAME}_drill" not in names and APP_NAME in names


def reachable(source: str, targets: list[tuple[str, int]]) -> dict[tuple[str, int], bool]:
    """Whether a TCP connection from one server to each (address, port) opens, all at once (the
    firewall drops what it does not allow, so a refused one times out)."""
    probes = " ".join(f"(timeout 3 bash -c '</dev/tcp/{a}/{p}' 2>/dev/null && echo '{a} {p} open' || echo '{a} {p} shut') &"
                      for a, p in targets)
    out = server(source).check_output(f"bash -c \"{probes} wait\"")
    seen = {(a, int(p)): state == "open" for a, p, state in (line.split() for line in out.splitlines())}
    assert set(seen) == set(targets), out
    return seen


# Every server's exporters (roles/exporters), and who may scrape them: the monitoring host only.
MONITOR, = group_hosts("monitoring")
EXPORTERS = {(name, 9100): "node_systemd_unit_state" for name in SERVERS} | {
    (DB, 9187): "pg_up 1", (WORKER, 9187): "pg_up 1",
    **{(web, 9113): "nginx_up 1" for web in WEB},
    (WORKER, 15692): "rabbitmq_build_info",
}


def test_each_service_port_opens_only_for_the_hosts_that_use_it():
    """The firewall's allowlist, seen from the other servers: every client of a service gets through,
    a server that is not its client does not, and nothing reaches RabbitMQ's plain AMQP, epmd or
    distribution port (AMQP from other hosts is TLS, on 5671). Every exporter opens to the
    monitoring host only."""
    web1, web2 = sorted(WEB)
    matrix = {
        (DB, 5432): {web1, web2, WORKER},
        (WORKER, 5432): {web1, web2, DB},   # the replica: the app's read-only work, replication from db
        (WORKER, 11211): {web1, web2},
        (WORKER, 5671): {web1, web2},
        (WORKER, 5672): set(),
        (WORKER, 8983): {web1, web2},
        (WORKER, 4369): set(),
        (WORKER, 25672): set(),
        # nginx's stub status is on loopback only.
        **{(web, 8089): set() for web in WEB},
        **{target: {MONITOR} for target in EXPORTERS},
    }
    found = {}
    for source in SERVERS:
        targets = [(target, port) for (target, port) in matrix if target != source]
        seen = reachable(source, [(ADDRESS[target], port) for target, port in targets])
        found.update({(source, target, port): seen[(ADDRESS[target], port)] for target, port in targets})
    expected = {(source, target, port): source in clients
                for (target, port), clients in matrix.items() for source in SERVERS if source != target}
    assert found == expected


def test_every_exporter_answers_the_monitoring_host_with_its_metrics():
    """What the monitoring host scrapes: the node exporter's systemd states, PostgreSQL's exporter
    connected (as its pg_monitor role, on the primary and on the replica), nginx's through its stub
    status, RabbitMQ's own plugin; and the backups' metrics on the backup host."""
    backup_host, = group_hosts("backupservers")
    server(backup_host).check_output(f"systemctl start django-stack-backup-freshness@{APP_NAME}.service")
    monitor = server(MONITOR)
    for (target, port), wanted in EXPORTERS.items():
        metrics = monitor.check_output(f"curl -sS --max-time 10 http://{ADDRESS[target]}:{port}/metrics")
        assert wanted in metrics, (target, port, metrics[-2000:])
    node = monitor.check_output(f"curl -sS --max-time 10 http://{ADDRESS[backup_host]}:9100/metrics")
    fresh = re.search(r'^django_stack_backup_freshness_check_success\{site="%s"\} (\S+)$' % APP_NAME, node, re.M)
    assert fresh and float(fresh.group(1)) == 1, node[-3000:]
    newest = re.search(r'^django_stack_backup_newest_complete_set_timestamp_seconds\{site="%s"\} (\S+)$' % APP_NAME, node, re.M)
    assert newest and time.time() - float(newest.group(1)) < 3600, node[-3000:]
    # Least privilege: the exporter's role reads statistics, not the app's data.
    denied = server(DB).run(f"runuser -u prometheus -- psql -h /var/run/postgresql -d {APP_NAME} -Atc 'SELECT 1'")
    assert denied.rc != 0 and "permission denied" in denied.stderr, denied.stderr
    # Loopback only for nginx's counters; each exporter listens on its host's private address.
    for web in WEB:
        listening = server(web).check_output("ss -Htln")
        assert "127.0.0.1:8089 " in listening and f"{ADDRESS[web]}:9113 " in listening, listening
