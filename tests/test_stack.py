"""The inventory's shape (roles/stack, playbooks/preflight.yml, playbooks/vars/wiring.yml).

The wiring each host gets is derived from the inventory's groups and each host's
stack_private_address; an inventory whose tiers cannot reach each other, or whose roles' inputs are
wrong, stops the run on every host before any change. The hosts here are names with a local
connection: only the checks and the derivation run, which read the inventory and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import fact_cache_env

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Production's shape: a database host, a cache host, two web servers (the first also takes the
# backups), one host for the broker, the workers and Solr.
SPLIT = {
    "dbservers": {"db1": {"stack_private_address": "10.0.0.10"}},
    "cacheservers": {"cache1": {"stack_private_address": "10.0.0.11"}},
    "webservers": {"web1": {"stack_private_address": "10.0.0.21"},
                   "web2": {"ansible_host": "10.0.0.22"}},
    "brokers": {"worker1": {"stack_private_address": "fd00::31"}},
    "workers": {"worker1": {"celery_beat_enabled": True}},
    "searchservers": {"worker1": {}},
    # From another host than the database's, backups connect as the app's role (pg_hba lets the
    # postgres superuser in over the database host's socket only).
    "backupservers": {"web1": {"backup_db_user": "demoapp"}},
}
# Its uploads in a bucket: three hosts run the app, and each reads every upload.
MEDIA_BUCKET = {"django_app_media_s3_bucket": "acme-media", "django_app_media_s3_region": "eu-central-1"}
ALL_IN_ONE = {group: {"stack": {}} for group in
              ("dbservers", "cacheservers", "brokers", "webservers", "workers", "searchservers", "backupservers")}
# An app without a broker, search or backups (the project scenario's shape): the groups are absent.
MINIMAL = {group: {"stack": {}} for group in ("dbservers", "cacheservers", "webservers", "workers")}

SHOW = """
- name: Check the inventory first, as site.yml does
  ansible.builtin.import_playbook: {preflight}

- name: Show what each host is wired with
  hosts: all
  gather_facts: false
  vars_files: [{wiring}]
  tasks:
    - name: Derive the addresses
      ansible.builtin.import_role:
        name: stack
        tasks_from: wiring
    - name: Write them down
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        content: "{{{{ dict(stack_wired_variables | zip(query('ansible.builtin.vars', *stack_wired_variables))) | to_json }}}}"
        mode: "0600"
      delegate_to: localhost
"""


def make_inventory(tmp_path: Path, groups: dict, extra_vars: dict | None = None) -> Path:
    """An inventory directory: the groups given, the demo's settings and (vaulted) secrets."""
    inv = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "demo" / "group_vars", inv / "group_vars")
    settings = inv / "group_vars" / "all" / "vars.yml"
    text = settings.read_text().replace(
        'django_app_source_path: "{{ inventory_dir }}/../../examples/demoapp"',
        f"django_app_source_path: {ROOT / 'examples' / 'demoapp'}")
    settings.write_text(text)
    (inv / "group_vars" / "all" / "zz-test.yml").write_text(yaml.safe_dump(
        {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **(extra_vars or {})}))
    hosts = {"all": {"children": {g: {"hosts": h} for g, h in groups.items()}}}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return inv


def run(inv: Path, playbook: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        {k: v for k, v in os.environ.items() if k not in ("SSH_CONNECTION", "SSH_CLIENT")},
        ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
        ANSIBLE_LIBRARY=str(ROOT / "library"),
        ANSIBLE_MODULE_UTILS=str(ROOT / "module_utils"),
        ANSIBLE_VAULT_IDENTITY_LIST=f"demo@{ROOT / 'inventories' / 'demo' / 'vault-password.txt'}",
        ANSIBLE_INJECT_FACT_VARS="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORKS="10",
        ANSIBLE_LOCALHOST_WARNING="false",
        **fact_cache_env(),
    )
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(playbook), *args],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def wiring(tmp_path: Path, groups: dict, *args: str, extra_vars: dict | None = None):
    """playbooks/preflight.yml, then what each host is wired with, written down only by a run that
    went past the checks: (the run, host -> wired variables)."""
    inv = make_inventory(tmp_path, groups, extra_vars)
    out = tmp_path / "wired"
    out.mkdir()
    play = tmp_path / "show.yml"
    play.write_text(SHOW.format(preflight=ROOT / "playbooks" / "preflight.yml",
                                wiring=ROOT / "playbooks" / "vars" / "wiring.yml", out=out))
    result = run(inv, play, *args)
    wired = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    return result, wired


def passing(tmp_path: Path, groups: dict, extra_vars: dict | None = None) -> dict[str, dict]:
    result, wired = wiring(tmp_path, groups, extra_vars=extra_vars)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return wired


def test_split_layout_passes_and_each_host_is_wired_from_the_inventory(tmp_path):
    w = passing(tmp_path, SPLIT, MEDIA_BUCKET)
    # The app reaches each service at its host's private address; IPv6 in brackets where a port follows.
    for host in ("web1", "web2", "worker1"):
        assert w[host]["django_app_db_host"] == "10.0.0.10"
        assert w[host]["django_app_cache_locations"] == ["10.0.0.11:11211"]
        assert w[host]["django_app_solr_url"] == "http://[fd00::31]:8983/solr/demoapp"
    assert w["web1"]["django_app_celery_broker_host"] == "fd00::31"
    assert w["worker1"]["django_app_celery_broker_host"] == "127.0.0.1"
    # PostgreSQL listens on its private address and lets in exactly the hosts that connect, for the app's role.
    assert w["db1"]["postgresql_listen_addresses"] == ["localhost", "10.0.0.10"]
    assert w["db1"]["postgresql_hba_clients"] == [
        {"database": "all", "user": "demoapp", "address": a} for a in ("10.0.0.21/32", "10.0.0.22/32", "fd00::31/128")]
    assert {r["name"]: r["sources"] for r in w["db1"]["firewall_rules"]} == {
        "postgresql": ["10.0.0.21", "10.0.0.22", "fd00::31"]}
    # memcached: the web servers and the worker; RabbitMQ and Solr: the web servers (the worker is local).
    assert w["cache1"]["memcached_listen_address"] == "127.0.0.1,10.0.0.11"
    assert w["cache1"]["memcached_socket_path"] == ""
    assert {r["name"]: r["sources"] for r in w["cache1"]["firewall_rules"]} == {
        "memcached": ["10.0.0.21", "10.0.0.22", "fd00::31"]}
    # RabbitMQ: plain AMQP on loopback only, AMQP over TLS on the private address for the web servers.
    assert w["worker1"]["rabbitmq_listen_addresses"] == ["127.0.0.1"]
    assert w["worker1"]["rabbitmq_ssl_listen_addresses"] == ["fd00::31"]
    assert w["worker1"]["solr_listen_address"] == "fd00::31"
    assert {r["name"]: (r["port"], r["sources"]) for r in w["worker1"]["firewall_rules"]} == {
        "rabbitmq": (5671, ["10.0.0.21", "10.0.0.22"]), "solr": (8983, ["10.0.0.21", "10.0.0.22"])}
    # The web servers serve nothing to other hosts of the stack; nothing else listens beyond loopback.
    assert w["web2"]["firewall_rules"] == [] and w["web2"]["postgresql_listen_addresses"] == ["localhost"]
    assert w["db1"]["memcached_listen_address"] == "127.0.0.1"
    # The backups dump over the network from web1.
    assert w["web1"]["backup_db_host"] == "10.0.0.10"


TLS_VARIABLES = ("pki_server_addresses", "postgresql_ssl_cert_file", "postgresql_ssl_key_file",
                 "rabbitmq_ssl_listen_addresses", "rabbitmq_ssl_cert_file", "rabbitmq_ssl_key_file",
                 "rabbitmq_ssl_ca_file", "django_app_db_sslmode", "django_app_db_sslrootcert",
                 "django_app_celery_broker_ca_file", "backup_db_sslmode", "backup_db_sslrootcert")


def test_split_layout_encrypts_what_leaves_a_host_and_verifies_it(tmp_path):
    w = passing(tmp_path, SPLIT, MEDIA_BUCKET)
    ca = "/etc/ssl/django-stack/ca.crt"
    # The CA the pki role creates lives on the database host; each server's certificate names its address.
    assert {w[h]["pki_ca_host"] for h in w} == {"db1"}
    assert w["db1"]["pki_server_addresses"] == ["10.0.0.10"]
    assert w["worker1"]["pki_server_addresses"] == ["fd00::31"]
    assert w["web2"]["pki_server_addresses"] == []
    # PostgreSQL: its certificate on the database host only; every client elsewhere verifies it.
    assert w["db1"]["postgresql_ssl_cert_file"] == "/etc/ssl/django-stack/postgresql.crt"
    assert w["db1"]["postgresql_ssl_key_file"] == "/etc/ssl/django-stack/postgresql.key"
    for host in ("web1", "web2", "worker1"):
        assert (w[host]["django_app_db_sslmode"], w[host]["django_app_db_sslrootcert"]) == ("verify-full", ca)
        assert w[host]["postgresql_ssl_cert_file"] == ""
    assert (w["web1"]["backup_db_sslmode"], w["web1"]["backup_db_sslrootcert"]) == ("verify-full", ca)
    # RabbitMQ: TLS on the broker's host; the web servers use amqps on 5671 with the CA, the worker
    # beside the broker plain AMQP on loopback.
    assert w["worker1"]["rabbitmq_ssl_cert_file"] == "/etc/ssl/django-stack/rabbitmq.crt"
    assert w["worker1"]["rabbitmq_ssl_key_file"] == "/etc/ssl/django-stack/rabbitmq.key"
    assert w["worker1"]["rabbitmq_ssl_ca_file"] == ca
    for host in ("web1", "web2"):
        assert (w[host]["django_app_celery_broker_port"], w[host]["django_app_celery_broker_ca_file"]) == (5671, ca)
        assert w[host]["rabbitmq_ssl_listen_addresses"] == []
    assert (w["worker1"]["django_app_celery_broker_port"], w["worker1"]["django_app_celery_broker_ca_file"]) == (5672, "")
    # Nothing plain leaves a host: no firewall rule opens RabbitMQ's plain port.
    assert not [r for h in w for r in w[h]["firewall_rules"] if r["port"] == 5672]


def test_all_in_one_encrypts_nothing(tmp_path):
    w = passing(tmp_path, ALL_IN_ONE)["stack"]
    assert {name: w[name] for name in TLS_VARIABLES} == {name: ([] if name.endswith("addresses") else "")
                                                         for name in TLS_VARIABLES}
    assert w["django_app_celery_broker_port"] == 5672


def test_all_in_one_passes_and_stays_on_loopback(tmp_path):
    w = passing(tmp_path, ALL_IN_ONE)["stack"]
    assert w["django_app_db_host"] == "127.0.0.1"
    assert w["django_app_celery_broker_host"] == "127.0.0.1"
    assert w["django_app_solr_url"] == "http://127.0.0.1:8983/solr/demoapp"
    assert w["postgresql_listen_addresses"] == ["localhost"] and w["postgresql_hba_clients"] == []
    assert w["memcached_socket_path"] == "/run/memcached/memcached.sock"
    assert w["django_app_cache_locations"] == ["unix:/run/memcached/memcached.sock"]
    assert w["rabbitmq_listen_addresses"] == ["127.0.0.1"] and w["solr_listen_address"] == "127.0.0.1"
    assert w["firewall_rules"] == []
    assert w["backup_db_host"] == "/var/run/postgresql"
    # No monitoring group: no exporter, no metrics.
    assert w["exporters_postgres"] is False and w["exporters_nginx"] is False and w["nginx_stub_status_port"] == 0
    assert w["backup_metrics_dir"] == "" and w["rabbitmq_prometheus_address"] == "" and w["postgresql_monitoring_user"] == ""


def test_a_monitoring_host_scrapes_every_exporter_on_private_addresses_and_nobody_else_may(tmp_path):
    w = passing(tmp_path, {**SPLIT, "monitoring": {"mon1": {"stack_private_address": "10.0.0.9"}}}, MEDIA_BUCKET)
    exporters = {"node-exporter", "postgres-exporter", "nginx-exporter", "rabbitmq-prometheus"}

    def metrics_rules(host):
        return {r["name"]: (r["port"], r["sources"]) for r in w[host]["firewall_rules"] if r["name"] in exporters}

    assert metrics_rules("db1") == {"node-exporter": (9100, ["10.0.0.9"]), "postgres-exporter": (9187, ["10.0.0.9"])}
    assert w["db1"]["exporters_postgres"] is True and w["db1"]["postgresql_monitoring_user"] == "prometheus"
    for web in ("web1", "web2"):
        assert metrics_rules(web) == {"node-exporter": (9100, ["10.0.0.9"]), "nginx-exporter": (9113, ["10.0.0.9"])}
        assert w[web]["nginx_stub_status_port"] == 8089
        assert w[web]["exporters_nginx_scrape_uri"] == "http://127.0.0.1:8089/stub_status"
    assert w["web1"]["exporters_listen_address"] == "10.0.0.21" and w["web2"]["exporters_listen_address"] == "10.0.0.22"
    assert metrics_rules("worker1") == {"node-exporter": (9100, ["10.0.0.9"]), "rabbitmq-prometheus": (15692, ["10.0.0.9"])}
    assert w["worker1"]["rabbitmq_prometheus_address"] == "fd00::31"
    assert metrics_rules("cache1") == {"node-exporter": (9100, ["10.0.0.9"])}
    # The backups write their metrics where the node exporter reads them.
    assert w["web1"]["backup_metrics_dir"] == "/var/lib/prometheus/node-exporter"
    # The monitoring host's own exporter needs no rule: its traffic to itself is local.
    assert w["mon1"]["exporters_listen_address"] == "10.0.0.9" and metrics_rules("mon1") == {}
    # What the monitoring host scrapes (every exporter, IPv6 in brackets) and probes (without load
    # balancers, each web server is the site).
    targets = w["mon1"]["monitoring_targets"]
    assert {t["instance"]: t["address"] for t in targets["node"]} == {
        "db1": "10.0.0.10:9100", "cache1": "10.0.0.11:9100", "web1": "10.0.0.21:9100", "web2": "10.0.0.22:9100",
        "worker1": "[fd00::31]:9100", "mon1": "10.0.0.9:9100"}
    # In name order, whatever the groups' order: a promotion (which swaps two groups) changes no line.
    assert [t["instance"] for t in targets["node"]] == ["cache1", "db1", "mon1", "web1", "web2", "worker1"]
    assert targets["postgres"] == [{"instance": "db1", "address": "10.0.0.10:9187"}]
    assert targets["nginx"] == [{"instance": "web1", "address": "10.0.0.21:9113"},
                                {"instance": "web2", "address": "10.0.0.22:9113"}]
    assert targets["rabbitmq"] == [{"instance": "worker1", "address": "[fd00::31]:15692"}]
    assert sorted((p["job"], p["instance"], p["address"]) for p in w["mon1"]["monitoring_probes"]) == [
        ("health", "web1", "10.0.0.21:443"), ("health", "web2", "10.0.0.22:443"),
        ("site", "web1", "10.0.0.21:443"), ("site", "web2", "10.0.0.22:443")]
    # nginx's default certificate is self-signed: the probes cannot verify it (SiteDown would fire).
    assert w["mon1"]["monitoring_probe_tls_insecure"] is True


def test_the_probes_verify_a_certificate_that_a_ca_signs(tmp_path):
    acme = {"nginx_tls_mode": "acme"}
    inventory = {**SPLIT, "webservers": {name: {**hostvars, **acme} for name, hostvars in SPLIT["webservers"].items()},
                 "monitoring": {"mon1": {"stack_private_address": "10.0.0.9"}}}
    assert passing(tmp_path, inventory, MEDIA_BUCKET)["mon1"]["monitoring_probe_tls_insecure"] is False


def test_behind_load_balancers_the_web_ports_open_to_them_only_and_they_balance_every_web_server(tmp_path):
    w = passing(tmp_path, {**SPLIT, "loadbalancers": {"lb1": {"stack_private_address": "10.0.0.5"},
                                                      "lb2": {"stack_private_address": "10.0.0.6"}}}, MEDIA_BUCKET)
    for lb in ("lb1", "lb2"):
        assert w[lb]["firewall_public_tcp_ports"] == [80, 443] and w[lb]["firewall_rules"] == []
        assert w[lb]["haproxy_backends"] == [{"name": "web1", "address": "10.0.0.21"},
                                             {"name": "web2", "address": "10.0.0.22"}]
        assert w[lb]["haproxy_backend_port"] == 443
    for web in ("web1", "web2"):
        assert w[web]["firewall_public_tcp_ports"] == []
        assert {r["name"]: (r["port"], r["sources"]) for r in w[web]["firewall_rules"]} == {
            "web": ([80, 443], ["10.0.0.5", "10.0.0.6"])}
        assert w[web]["nginx_real_ip_from"] == ["10.0.0.5", "10.0.0.6"]
    # The other tiers let the balancers into nothing.
    assert {r["name"]: r["sources"] for r in w["db1"]["firewall_rules"]} == {
        "postgresql": ["10.0.0.21", "10.0.0.22", "fd00::31"]}


def test_without_load_balancers_the_web_servers_face_everyone_and_trust_no_forwarded_header(tmp_path):
    w = passing(tmp_path, SPLIT, MEDIA_BUCKET)
    for web in ("web1", "web2"):
        assert w[web]["firewall_public_tcp_ports"] == [80, 443]
        assert w[web]["nginx_real_ip_from"] == []
    assert passing(tmp_path / "aio", ALL_IN_ONE)["stack"]["firewall_public_tcp_ports"] == [80, 443]


def refused(tmp_path: Path, groups: dict, *args: str, extra_vars: dict | None = None) -> str:
    """A run that stopped in the checks: no host changed, and no host went on to the next play."""
    result, wired = wiring(tmp_path, groups, *args, extra_vars=extra_vars)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert "changed=0" in out and "changed=1" not in out, out[-2000:]
    assert wired == {}, f"hosts went past the checks: {sorted(wired)}"
    return out


# One inventory with every kind of shape problem: each is named, all in the same run.
BAD = {
    **SPLIT,
    "dbservers": {"db1": {"stack_private_address": "10.0.0.10"}, "db2": {"stack_private_address": "10.0.0.12"}},
    "webservers": {"web1": {"stack_private_address": "10.0.0.21"},
                   "web2": {"ansible_host": "203.0.113.7", "django_app_db_host": "10.9.9.9"}},
    "workers": {"worker1": {"celery_beat_enabled": True},
                "worker2": {"ansible_host": "worker2.example.com", "celery_beat_enabled": True}},
    "backupservers": {"web1": {}},
}


def test_a_bad_inventory_stops_every_host_before_any_change_naming_each_problem(tmp_path):
    out = refused(tmp_path, BAD)
    for needle in ["2 host(s) in the dbservers group (db1, db2)",
                   "celery beat is enabled on worker1, worker2", "at most one host",
                   "outside the private networks", "web2 (203.0.113.7)",
                   "no IP address to be reached at", "worker2. Set stack_private_address",
                   "sets django_app_db_host, which the playbooks derive",
                   "web1 take(s) the backups from another host than the database's (db1) as backup_db_user postgres"]:
        assert needle in " ".join(out.split()), f"{needle!r} not in:\n{out[-4000:]}"


def test_a_replica_follows_the_primary_and_every_database_server_lets_the_others_in(tmp_path):
    w = passing(tmp_path, {**SPLIT, "dbreplicas": {"db2": {"stack_private_address": "10.0.0.12"}}}, MEDIA_BUCKET)
    ca = "/etc/ssl/django-stack/ca.crt"
    apps = ["10.0.0.21", "10.0.0.22", "fd00::31"]
    # db2 follows db1 through its slot "db2", verifying db1's certificate; db1 keeps that slot.
    assert (w["db2"]["postgresql_primary_address"], w["db2"]["postgresql_replica_slot"],
            w["db2"]["postgresql_primary_sslrootcert"]) == ("10.0.0.10", "db2", ca)
    assert (w["db1"]["postgresql_primary_address"], w["db1"]["postgresql_replica_slot"]) == ("", "")
    assert w["db1"]["postgresql_replicas"] == [{"name": "db2", "address": "10.0.0.12"}]
    # Each database server lets the other in for replication and the app's hosts in, so that a
    # promotion changes no rule; the replica listens on its address with its own certificate.
    assert w["db2"]["postgresql_replicas"] == [{"name": "db1", "address": "10.0.0.10"}]
    assert w["db2"]["postgresql_listen_addresses"] == ["localhost", "10.0.0.12"]
    assert w["db2"]["postgresql_ssl_cert_file"] == "/etc/ssl/django-stack/postgresql.crt"
    assert [c["address"] for c in w["db2"]["postgresql_hba_clients"]] == ["10.0.0.21/32", "10.0.0.22/32", "fd00::31/128"]
    assert {r["name"]: r["sources"] for r in w["db1"]["firewall_rules"]} == {"postgresql": [*apps, "10.0.0.12"]}
    assert {r["name"]: r["sources"] for r in w["db2"]["firewall_rules"]} == {"postgresql": [*apps, "10.0.0.10"]}
    # The app writes through the primary, then the replica (the first that takes writes), and
    # sends its read-only work to the replica; the CA stays on db1.
    for host in ("web1", "web2", "worker1"):
        assert w[host]["django_app_db_failover_hosts"] == ["10.0.0.12"]
        assert (w[host]["django_app_db_replica_host"], w[host]["django_app_db_replica_sslmode"],
                w[host]["django_app_db_replica_sslrootcert"]) == ("10.0.0.12", "verify-full", ca)
    assert {w[h]["pki_ca_host"] for h in w} == {"db1"}


def test_after_a_promotion_the_ca_stays_where_it_is(tmp_path):
    w = passing(tmp_path, {**SPLIT, "dbservers": {"db2": {"stack_private_address": "10.0.0.12"}},
                           "dbreplicas": {"db1": {"stack_private_address": "10.0.0.10"}}}, MEDIA_BUCKET)
    assert w["db1"]["postgresql_primary_address"] == "10.0.0.12"
    assert w["web1"]["django_app_db_host"] == "10.0.0.12"
    assert {w[h]["pki_ca_host"] for h in w} == {"db1"}


def test_replicas_without_a_primary_or_in_both_groups_are_refused(tmp_path):
    out = " ".join(refused(tmp_path / "none", {**{g: h for g, h in SPLIT.items() if g != "dbservers"},
                                               "dbreplicas": {"db2": {"stack_private_address": "10.0.0.12"}}}).split())
    assert "replicas (db2, the dbreplicas group) but no primary for them to follow" in out, out[-3000:]
    out = " ".join(refused(tmp_path / "both", {**SPLIT, "dbreplicas": {"db1": {}}}).split())
    assert "db1 in both dbservers and dbreplicas" in out, out[-3000:]
    out = " ".join(refused(tmp_path / "two", {**SPLIT, "dbservers": {"db1": {"stack_private_address": "10.0.0.10"},
                                                                     "db2": {"stack_private_address": "10.0.0.12"}}}).split())
    assert "two primaries would each take writes the other never sees" in out, out[-3000:]


def test_a_load_balancer_on_a_web_server_is_refused(tmp_path):
    out = refused(tmp_path, {**SPLIT, "loadbalancers": {"web1": {}}})
    assert "web1 in both loadbalancers and webservers" in " ".join(out.split()), out[-3000:]


def test_an_inventory_without_a_database_host_is_refused(tmp_path):
    out = refused(tmp_path, {g: h for g, h in SPLIT.items() if g != "dbservers"})
    assert "0 host(s) in the dbservers group (none); the app needs exactly one" in " ".join(out.split()), out[-3000:]


def test_an_app_on_several_hosts_with_its_uploads_on_local_disk_is_refused(tmp_path):
    out = " ".join(refused(tmp_path, SPLIT).split())
    assert "The app runs on 3 hosts (web1, web2, worker1) with its uploads on each one's own disk" in out, out[-3000:]
    assert "Set django_app_media_s3_bucket" in out and "stack_media_shared: true" in out, out[-3000:]


def test_uploads_shared_otherwise_are_accepted_on_several_hosts(tmp_path):
    passing(tmp_path, SPLIT, {"stack_media_shared": True})


def test_a_bad_secret_is_named_readably_and_stops_every_host(tmp_path):
    out = refused(tmp_path, SPLIT, extra_vars={**MEDIA_BUCKET, "rabbitmq_erlang_cookie": "short"})
    assert "rabbitmq on worker1:\n  - rabbitmq_erlang_cookie must be 20 to 255 letters and digits" in out, out[-3000:]
    assert "argument_spec_data" not in out


def test_a_type_error_is_named_one_per_line_without_the_spec(tmp_path):
    out = refused(tmp_path, MINIMAL, extra_vars={"django_app_keep_releases": "several"})
    assert "django_app on stack:\n  - argument 'django_app_keep_releases' is of type" in out, out[-3000:]
    assert "argument_spec_data" not in out


def test_check_mode_on_a_server_never_converged_says_why(tmp_path):
    out = refused(tmp_path, MINIMAL, "--check")
    assert "stack was never converged by this project: --check cannot foresee a first converge" in " ".join(out.split()), \
        out[-3000:]


def test_the_architecture_page_lists_exactly_the_derived_variables():
    wired = yaml.safe_load((ROOT / "playbooks" / "vars" / "wiring.yml").read_text())
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Derived from the inventory", 1)[1].split("\n## ", 1)[0]
    listed = {name for line in section.splitlines() if line.startswith("| `")
              for name in line.split("|")[1].replace("`", "").replace(",", " ").split()}
    assert listed == set(wired["stack_wired_variables"])
    assert set(wired) - {"stack_wired_variables"} == listed, "wiring.yml sets a variable it does not declare"


def filled_vault(example: Path) -> dict:
    """vault.yml.example's values, each made by the command its comment gives, as a user would;
    those without a command (keys from a storage provider) get a stand-in of the same kind."""
    values, command = {}, None
    for line in example.read_text().splitlines():
        if line.startswith("# command: "):
            command = line[len("# command: "):]
        elif line and not line.startswith(("#", "---")):
            name = line.split(":", 1)[0]
            if command:
                values[name] = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                                              check=True).stdout.strip()
            else:
                values[name] = "stand-in-" + name.replace("_", "-")
            command = None
    return values


@pytest.mark.parametrize("example", ["production", "staging"])
def test_an_example_inventory_passes_the_checks_once_its_vault_is_filled_as_it_says(tmp_path, example):
    inv = tmp_path / example
    shutil.copytree(ROOT / "inventories" / example, inv)
    vault = filled_vault(inv / "group_vars" / "all" / "vault.yml.example")
    assert all(v and "CHANGE" not in v for v in vault.values()), vault.keys()
    (inv / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(vault))
    (inv / "group_vars" / "all" / "zz-test.yml").write_text(yaml.safe_dump(
        {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}))
    (inv / "files").mkdir(exist_ok=True)
    (inv / "files" / "deploy_key").write_text("a deploy key, made by ssh-keygen and vault-encrypted\n")
    result = run(inv, ROOT / "playbooks" / "preflight.yml")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    if example == "staging":
        return
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())["all"]["children"]
    assert {"dbservers", "cacheservers", "brokers", "webservers", "workers", "searchservers",
            "backupservers"} <= set(hosts)
    assert len(hosts["webservers"]["hosts"]) == 2
