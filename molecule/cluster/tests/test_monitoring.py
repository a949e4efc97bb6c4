"""The monitoring tier on lb (roles/monitoring): Prometheus scrapes every server's exporters and
probes the site; a backup set that grows too old fires an alert, which Alertmanager posts to a
webhook receiver; the web interfaces stay on loopback."""

from __future__ import annotations

import json
import shlex
import time
import urllib.parse

import testinfra

from stackhelpers import APP_NAME, group_hosts, receiver

MONITOR, = group_hosts("monitoring")
BACKUP_HOST, = group_hosts("backupservers")
FRESHNESS = f"/var/lib/prometheus/node-exporter/django-stack-backup-freshness-{APP_NAME}.prom"


def server(name: str):
    return testinfra.get_host(f"podman://{name}")


def prometheus(path: str, **params) -> dict:
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    out = server(MONITOR).check_output(f"curl -sS --max-time 10 {shlex.quote('http://127.0.0.1:9090/api/v1/' + path + query)}")
    answer = json.loads(out)
    assert answer["status"] == "success", answer
    return answer["data"]


def wait_for(what: str, check, timeout: float = 120, every: float = 3):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def test_prometheus_scrapes_every_exporter_and_the_probes_pass():
    """Every target up: each server's node exporter, PostgreSQL's on db and on the replica, nginx's on
    both web servers, RabbitMQ's plugin, the blackbox probes of the site through lb and of each web
    server's health path; and no alert fires on the converged cluster."""
    def all_up():
        targets = prometheus("targets", state="active")["activeTargets"]
        down = [(t["labels"]["job"], t["labels"]["instance"], t["lastError"]) for t in targets if t["health"] != "up"]
        return targets if targets and not down else None

    targets = wait_for("every target up", all_up)
    jobs = {}
    for target in targets:
        jobs.setdefault(target["labels"]["job"], set()).add(target["labels"]["instance"])
    servers = set(group_hosts("all"))
    assert jobs["node"] == servers, jobs
    assert jobs["postgres"] == set(group_hosts("dbservers") + group_hosts("dbreplicas")), jobs
    assert jobs["nginx"] == set(group_hosts("webservers")) and jobs["rabbitmq"] == set(group_hosts("brokers")), jobs
    probes = prometheus("query", query="probe_success")["result"]
    assert {(p["metric"]["probe"], p["metric"]["instance"]) for p in probes} == \
        {("site", MONITOR)} | {("health", web) for web in group_hosts("webservers")}, probes
    assert all(p["value"][1] == "1" for p in probes), probes
    # The site's certificate is there to be watched (the expiry alert's input).
    expiry = prometheus("query", query="min(probe_ssl_earliest_cert_expiry) - time()")["result"]
    assert expiry and float(expiry[0]["value"][1]) > 86400, expiry
    # The rules are loaded; on a healthy cluster none fires.
    rules = {r["name"] for g in prometheus("rules")["groups"] for r in g["rules"]}
    assert {"SiteDown", "HealthCheckFailing", "BackupTooOld", "WalArchivingFailing", "ReplicaLagging", "DiskFilling",
            "CertificateExpiring", "SystemdUnitFailed", "MemoryPressure"} <= rules, rules
    firing = [a for a in prometheus("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == [], firing


def test_an_old_newest_backup_fires_the_alert_and_the_webhook_receives_it():
    """The backup host's freshness metrics say the newest complete set is three days old: BackupTooOld
    fires, Alertmanager posts it to the receiver; fresh again, the resolution follows."""
    monitor, backup = server(MONITOR), server(BACKUP_HOST)
    old = time.time() - 3 * 86400
    fake = (f"django_stack_backup_newest_complete_set_timestamp_seconds{{site=\"{APP_NAME}\"}} {old}\n"
            f"django_stack_backup_freshness_check_success{{site=\"{APP_NAME}\"}} 1\n"
            f"django_stack_backup_freshness_check_timestamp_seconds{{site=\"{APP_NAME}\"}} {time.time()}\n")
    # The scenario's Alertmanager webhook points at 127.0.0.1:45091 on the monitoring host.
    with receiver(monitor, "test-alerts", 45091) as received:
        try:
            backup.check_output(f"printf %s {shlex.quote(fake)} > {FRESHNESS}.tmp && mv {FRESHNESS}.tmp {FRESHNESS}")

            def posted(status: str):
                def check():
                    return [n for n in received()
                            if any(a["labels"]["alertname"] == "BackupTooOld" and a["status"] == status
                                   for a in n["body"]["alerts"])]
                return check

            [notice, *_] = wait_for("BackupTooOld posted", posted("firing"), timeout=180)
            assert notice["path"] == "/alerts/cluster-test-token"
            alert = next(a for a in notice["body"]["alerts"] if a["labels"]["alertname"] == "BackupTooOld")
            assert alert["labels"]["site"] == APP_NAME and alert["labels"]["instance"] == BACKUP_HOST, alert
            assert "3d" in alert["annotations"]["summary"] or "72h" in alert["annotations"]["summary"], alert
            # The real check writes the truth again; the alert resolves.
            backup.check_output(f"systemctl start django-stack-backup-freshness@{APP_NAME}.service")
            wait_for("BackupTooOld resolved", posted("resolved"), timeout=240)
        finally:
            backup.run(f"systemctl start django-stack-backup-freshness@{APP_NAME}.service")


def test_the_monitoring_interfaces_listen_on_loopback_only():
    listening = server(MONITOR).check_output("ss -Htln")
    for port in (9090, 9093, 9115):
        assert f"127.0.0.1:{port} " in listening, listening
        assert f"0.0.0.0:{port} " not in listening and f"*:{port} " not in listening, listening
    # No Alertmanager cluster port (9094) at all.
    assert ":9094 " not in listening, listening
