"""Encrypted traffic between hosts, without a server: PostgreSQL's pg_hba.conf and settings drop-in
and RabbitMQ's rabbitmq.conf rendered by Ansible's template module with and without a certificate,
the app's and the backups' connection settings, and the pki role run for real on the control node
(a CA of your own, its files in a temporary directory): the certificate it signs verifies against
the CA for the server's address, a second run changes nothing, and a changed address, a
certificate near its end or a new CA each get a new one. (The wiring that decides who gets TLS is
in tests/test_stack.py; the cluster scenario's test_tls.py checks it on four servers.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from role_templates import render_role_templates

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HBA = "etc/postgresql/VERSION/main/pg_hba.conf"
DROP_IN = "etc/postgresql/VERSION/main/conf.d/50-django-stack.conf"
CLIENTS = [{"database": "all", "user": "demoapp", "address": "10.0.0.21"},
           {"database": "all", "user": "demoapp", "address": "fd00::31/128"}]
TLS = {"postgresql_ssl_cert_file": "/etc/ssl/django-stack/postgresql.crt",
       "postgresql_ssl_key_file": "/etc/ssl/django-stack/postgresql.key"}
PG_FACTS = {"ansible_facts": {"memtotal_mb": 2048, "distribution_major_version": "13", "distribution": "Debian"},
            "postgresql_version": 17}


def hba_rules(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def settings(text: str) -> dict[str, str]:
    return dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line and not line.startswith("#"))


def test_remote_clients_get_hostssl_rules_and_loopback_stays_host(tmp_path):
    files = render_role_templates(tmp_path, "postgresql", [HBA, DROP_IN],
                                  {**PG_FACTS, "postgresql_hba_clients": CLIENTS, **TLS})
    rules = hba_rules(files[HBA])
    # Loopback and the socket as before; each other host over TLS only, with its password.
    assert ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"] in rules
    assert ["host", "all", "all", "::1/128", "scram-sha-256"] in rules
    remote = [rule for rule in rules if rule[0] != "local" and rule[3] not in ("127.0.0.1/32", "::1/128")]
    assert remote == [["hostssl", "all", "demoapp", "10.0.0.21/32", "scram-sha-256"],
                      ["hostssl", "all", "demoapp", "fd00::31/128", "scram-sha-256"]]
    conf = settings(files[DROP_IN])
    assert conf["ssl"] == "on"
    assert conf["ssl_cert_file"] == "'/etc/ssl/django-stack/postgresql.crt'"
    assert conf["ssl_key_file"] == "'/etc/ssl/django-stack/postgresql.key'"
    assert conf["ssl_min_protocol_version"] == "'TLSv1.2'"


def test_without_a_certificate_nothing_changes(tmp_path):
    files = render_role_templates(tmp_path, "postgresql", [HBA, DROP_IN],
                                  {**PG_FACTS, "postgresql_hba_clients": CLIENTS})
    assert not [rule for rule in hba_rules(files[HBA]) if rule[0] == "hostssl"]
    assert [rule[0] for rule in hba_rules(files[HBA]) if rule[2] == "demoapp"] == ["host", "host"]
    assert not [name for name in settings(files[DROP_IN]) if name.startswith("ssl")]


STANDBY = "etc/postgresql/VERSION/main/conf.d/60-django-stack-standby.conf"
PGPASS = "var/lib/postgresql/pgpass"


def test_a_replica_verifies_its_primary_and_reads_its_password_from_a_file(tmp_path):
    secret = "pa:ss\\word'" + "x" * 12
    files = render_role_templates(tmp_path, "postgresql", [HBA, STANDBY, PGPASS], {
        **PG_FACTS, **TLS, "postgresql_primary_address": "10.0.0.10", "postgresql_replica_slot": "db2",
        "postgresql_primary_sslrootcert": "/etc/ssl/django-stack/ca.crt", "postgresql_replication_password": secret,
        "postgresql_replicas": [{"name": "db1", "address": "10.0.0.10"}]})
    conf = settings(files[STANDBY])
    conninfo = conf["primary_conninfo"].strip("'").split()
    assert {"host=10.0.0.10", "port=5432", "user=replicator", "sslmode=verify-full",
            "sslrootcert=/etc/ssl/django-stack/ca.crt", "passfile=/var/lib/postgresql/.pgpass"} <= set(conninfo)
    assert secret not in files[STANDBY] and "password" not in conf["primary_conninfo"]
    assert (conf["primary_slot_name"], conf["hot_standby"], conf["hot_standby_feedback"]) == ("'db2'", "on", "on")
    # libpq's password file: ':' and '\' escaped, the database field matching the replication connection.
    line = [x for x in files[PGPASS].splitlines() if not x.startswith("#")]
    assert line == ["10.0.0.10:5432:*:replicator:pa\\:ss\\\\word'" + "x" * 12]
    # The primary may connect for replication, over TLS only (it becomes a replica of this one after a promotion).
    assert ["hostssl", "replication", "replicator", "10.0.0.10/32", "scram-sha-256"] in hba_rules(files[HBA])


def rabbitmq_conf(tmp_path: Path, extra: dict) -> dict[str, str]:
    text = render_role_templates(tmp_path, "rabbitmq", ["etc/rabbitmq/rabbitmq.conf"], extra)["etc/rabbitmq/rabbitmq.conf"]
    return settings(text)


def test_the_broker_serves_other_hosts_over_tls_and_plain_amqp_on_loopback(tmp_path):
    conf = rabbitmq_conf(tmp_path, {
        "rabbitmq_listen_addresses": ["127.0.0.1"], "rabbitmq_ssl_listen_addresses": ["10.0.0.31"],
        "rabbitmq_ssl_cert_file": "/etc/ssl/django-stack/rabbitmq.crt",
        "rabbitmq_ssl_key_file": "/etc/ssl/django-stack/rabbitmq.key",
        "rabbitmq_ssl_ca_file": "/etc/ssl/django-stack/ca.crt"})
    assert {k: v for k, v in conf.items() if k.startswith("listeners.")} == {
        "listeners.tcp.1": "127.0.0.1:5672", "listeners.ssl.1": "10.0.0.31:5671"}
    assert conf["ssl_options.certfile"] == "/etc/ssl/django-stack/rabbitmq.crt"
    assert conf["ssl_options.keyfile"] == "/etc/ssl/django-stack/rabbitmq.key"
    assert conf["ssl_options.cacertfile"] == "/etc/ssl/django-stack/ca.crt"
    assert {conf["ssl_options.versions.1"], conf["ssl_options.versions.2"]} == {"tlsv1.3", "tlsv1.2"}


def test_a_broker_for_its_own_host_has_no_tls_listener(tmp_path):
    conf = rabbitmq_conf(tmp_path, {})
    assert conf["listeners.ssl"] == "none" and conf["listeners.tcp.1"] == "127.0.0.1:5672"
    assert not [k for k in conf if k.startswith("ssl_options.") or k.startswith("listeners.ssl.")]


# --- the app's connection settings (django_app's defaults, as the environment file gets them) -----

URLS = """
- name: Compose the app's URLs
  hosts: localhost
  gather_facts: false
  vars_files: [{defaults}]
  tasks:
    - name: Write them down
      ansible.builtin.copy:
        dest: "{out}"
        content: "{{{{ {{'db': django_app_database_url, 'broker': django_app_celery_broker_url}} | to_json }}}}"
        mode: "0600"
"""


def app_urls(tmp_path: Path, extra: dict) -> dict:
    out = tmp_path / "urls.json"
    play = tmp_path / "urls.yml"
    play.write_text(URLS.format(defaults=ROOT / "roles" / "django_app" / "defaults" / "main.yml", out=out))
    base = {"django_app_name": "demoapp", "django_app_db_password": "pw", "django_app_celery_broker_user": "demoapp",
            "django_app_celery_broker_password": "p" * 20, "django_app_root": "/srv/demoapp"}
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_CONNECTION", "SSH_CLIENT")}
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play),
                             "-e", json.dumps({**base, **extra, "ansible_python_interpreter": sys.executable})],
                            capture_output=True, text=True, check=False, timeout=300,
                            env=dict(env, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                                     ANSIBLE_LOCALHOST_WARNING="false"))
    assert result.returncode == 0, result.stdout[-3000:]
    return json.loads(out.read_text())


def test_the_app_verifies_a_remote_database_and_broker(tmp_path):
    urls = app_urls(tmp_path, {"django_app_db_host": "10.0.0.10", "django_app_db_sslmode": "verify-full",
                               "django_app_db_sslrootcert": "/etc/ssl/django-stack/ca.crt",
                               "django_app_celery_broker_host": "10.0.0.31", "django_app_celery_broker_port": 5671,
                               "django_app_celery_broker_ca_file": "/etc/ssl/django-stack/ca.crt"})
    assert urls["db"] == ("postgres://demoapp:pw@10.0.0.10:5432/demoapp"
                          "?sslmode=verify-full&sslrootcert=/etc/ssl/django-stack/ca.crt")
    assert urls["broker"] == "amqps://demoapp:" + "p" * 20 + "@10.0.0.31:5671/demoapp"


def test_the_app_on_the_services_host_keeps_plain_urls(tmp_path):
    urls = app_urls(tmp_path, {})
    assert urls["db"] == "postgres://demoapp:pw@127.0.0.1:5432/demoapp"
    assert urls["broker"] == "amqp://demoapp:" + "p" * 20 + "@127.0.0.1:5672/demoapp"


def test_the_backups_pass_tls_to_libpq_and_to_pg_dump():
    sys.path.insert(0, str(ROOT / "roles" / "backup" / "module_utils"))
    try:
        from django_stack_backup.config import Config
        from django_stack_backup.postgres import Postgres
    finally:
        sys.path.pop(0)
    cfg = Config(db_host="10.0.0.10", db_port=5432, db_user="demoapp", db_password="pw", db_os_user=None,
                 db_sslmode="verify-full", db_sslrootcert="/etc/ssl/django-stack/ca.crt", pg_bin_dir=None)
    pg = Postgres(cfg, [])
    assert pg.ssl() == {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/django-stack/ca.crt"}
    env = pg.env()
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == "/etc/ssl/django-stack/ca.crt"
    plain = Postgres(Config(db_host="/var/run/postgresql", db_port=5432, db_user="demoapp", db_password=None,
                            db_os_user="root", db_sslmode=None, db_sslrootcert=None, pg_bin_dir=None), [])
    assert plain.ssl() == {} and "PGSSLMODE" not in plain.env()


# --- the pki role, for real on the control node ------------------------------------------------

PKI_PLAY = """
- name: A server certificate from a CA of your own
  hosts: localhost
  gather_facts: false
  roles:
    - role: pki
  handlers:
    - name: Certificate changed
      ansible.builtin.debug:
        msg: CERTIFICATE-CHANGED
      listen: pki certificate changed
"""


def make_ca(common_name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def run_pki(tmp_path: Path, extra: dict) -> subprocess.CompletedProcess:
    play = tmp_path / "pki.yml"
    play.write_text(PKI_PLAY)
    variables = tmp_path / "vars.yml"
    variables.write_text(yaml.safe_dump({"pki_dir": str(tmp_path / "tls"), "pki_server_name": "postgresql",
                                         "ansible_python_interpreter": sys.executable, **extra}))
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_CONNECTION", "SSH_CLIENT")}
    # The apt step is the server's; the control node has the cryptography library already.
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play),
                           "--skip-tags", "pki_install", "-e", f"@{variables}"],
                          capture_output=True, text=True, check=False, timeout=300,
                          env=dict(env, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                                   ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_LOCALHOST_WARNING="false"))


def changed(result: subprocess.CompletedProcess) -> int:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    recap = [line for line in result.stdout.splitlines() if line.startswith("localhost")][-1]
    return int(recap.split("changed=")[1].split()[0])


def server_certificate(tmp_path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((tmp_path / "tls" / "postgresql.crt").read_bytes())


def test_pki_signs_a_certificate_for_the_address_renews_it_and_keeps_the_key_private(tmp_path):
    ca_pem, ca_key = make_ca("test CA")
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout.strip()
    own = {"pki_ca_certificate": ca_pem, "pki_ca_private_key": ca_key, "pki_server_key_group": group}
    first = run_pki(tmp_path, {**own, "pki_server_addresses": ["10.0.0.10"]})
    assert changed(first) > 0 and "CERTIFICATE-CHANGED" in first.stdout
    # The CA's key is never shown, and never written beside the certificates.
    assert "PRIVATE KEY" not in first.stdout + first.stderr
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "ca.crt", "postgresql.crt", "postgresql.csr", "postgresql.key"]
    assert (tmp_path / "tls" / "ca.crt").read_text().strip() == ca_pem.strip()
    assert oct((tmp_path / "tls" / "postgresql.key").stat().st_mode & 0o777) == "0o640"
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    cert = server_certificate(tmp_path)
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.10"]
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
    # The certificate is for the server's own key.
    key = serialization.load_pem_private_key((tmp_path / "tls" / "postgresql.key").read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()

    # Idempotent: the same inputs change nothing and notify nobody.
    again = run_pki(tmp_path, {**own, "pki_server_addresses": ["10.0.0.10"]})
    assert changed(again) == 0 and "CERTIFICATE-CHANGED" not in again.stdout
    assert server_certificate(tmp_path) == cert

    # A new address: a new certificate naming it.
    moved = run_pki(tmp_path, {**own, "pki_server_addresses": ["10.0.0.11"]})
    assert changed(moved) > 0 and "CERTIFICATE-CHANGED" in moved.stdout
    san = server_certificate(tmp_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.11"]

    # Due for renewal (it ends within the renewal window): signed anew.
    before = server_certificate(tmp_path)
    renewed = run_pki(tmp_path, {**own, "pki_server_addresses": ["10.0.0.11"], "pki_certificate_valid_days": 900,
                                 "pki_certificate_renew_days": 400})
    assert changed(renewed) > 0
    assert server_certificate(tmp_path).serial_number != before.serial_number

    # A new CA: every certificate it did not sign is signed anew, and the clients get its certificate.
    new_pem, new_key = make_ca("another CA")
    rotated = run_pki(tmp_path, {**own, "pki_ca_certificate": new_pem, "pki_ca_private_key": new_key,
                                 "pki_server_addresses": ["10.0.0.11"]})
    assert changed(rotated) > 0
    server_certificate(tmp_path).verify_directly_issued_by(x509.load_pem_x509_certificate(new_pem.encode()))
    assert (tmp_path / "tls" / "ca.crt").read_text().strip() == new_pem.strip()


@pytest.mark.parametrize("bad, named", [
    ({"pki_ca_certificate": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"}, "pki_ca_private_key"),
    ({"pki_server_addresses": ["db.example.com"]}, "pki_server_addresses"),
    ({"pki_server_addresses": []}, "pki_server_addresses"),
    ({"pki_certificate_renew_days": 400}, "pki_certificate_renew_days"),
])
def test_pki_refuses_bad_input_before_any_change_naming_the_variable(tmp_path, bad, named):
    result = run_pki(tmp_path, {"pki_server_addresses": ["10.0.0.10"], **bad})
    assert result.returncode != 0
    assert named in result.stdout
    assert not (tmp_path / "tls").exists()
