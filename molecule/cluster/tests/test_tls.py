"""Encrypted traffic between the servers: what leaves a host to PostgreSQL or RabbitMQ is TLS,
verified against the private CA the roles made on db (roles/pki), for the address connected to.

From web1: a plain connection to the database is refused by pg_hba, sslmode=verify-full works and
is SSL, a name the certificate does not carry is refused; on db, the app's own connections from
the web servers are SSL. The broker's TLS port presents a certificate that verifies for the
worker's address, its plain port is closed to the other hosts, and the web servers' Celery
connections are TLS, seen from both ends. test_cluster.py's backup and drill run over the same TLS.
"""

from __future__ import annotations

import re
import shlex
import time

import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

from stackhelpers import APP_NAME, APP_ROOT, APP_USER, INVENTORY, group_hosts

DB, = group_hosts("dbservers")
WEB = sorted(group_hosts("webservers"))
WORKER, = group_hosts("workers")
CA = "/etc/ssl/django-stack/ca.crt"


def server(name: str):
    return testinfra.get_host(f"podman://{name}")


def address(name: str) -> str:
    """The server's address on the scenario's network, as the inventory names it."""
    return AnsibleRunner.get_runner(INVENTORY).get_variables(name)["stack_private_address"]


def app_env(host) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)='(.*)'$", host.file(f"{APP_ROOT}/shared/env").content_string, re.M))


def psql(host, conninfo: str, sql: str):
    """psql on `host` as the app's role with its password, over the given connection string."""
    env = app_env(host)
    conninfo = (f"host={address(DB)} port={env['DJANGO_DB_PORT']} dbname={env['DJANGO_DB_NAME']} "
                f"user={env['DJANGO_DB_USER']} connect_timeout=10 {conninfo}")
    return host.run(f"PGPASSWORD={shlex.quote(env['DJANGO_DB_PASSWORD'])} psql -AtX {shlex.quote(conninfo)} "
                    f"-c {shlex.quote(sql)}")


def test_every_server_has_the_ca_and_only_db_has_its_key():
    for name in (DB, *WEB, WORKER):
        host = server(name)
        assert host.file(CA).exists and host.file(CA).mode == 0o644, name
        assert "BEGIN CERTIFICATE" in host.file(CA).content_string, name
    ca_dir = server(DB).file("/etc/ssl/django-stack-ca")
    assert ca_dir.is_directory and ca_dir.user == "root" and ca_dir.mode == 0o700
    assert server(DB).file("/etc/ssl/django-stack-ca/ca.key").mode == 0o600
    for name in (*WEB, WORKER):
        assert not server(name).file("/etc/ssl/django-stack-ca").exists, name


def test_a_plain_connection_from_web1_to_the_database_is_refused():
    result = psql(server(WEB[0]), "sslmode=disable", "SELECT 1")
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr and "no encryption" in result.stderr, result.stderr


def test_verify_full_from_web1_works_and_the_session_is_ssl():
    result = psql(server(WEB[0]), f"sslmode=verify-full sslrootcert={CA}",
                  "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert result.rc == 0, result.stderr
    ssl, version = result.stdout.strip().split("|")
    assert ssl == "t" and version in ("TLSv1.2", "TLSv1.3"), result.stdout


def test_verify_full_refuses_a_name_the_certificate_does_not_carry():
    # The same server at the same address, asked for under another name: the check is on.
    result = psql(server(WEB[0]), f"hostaddr={address(DB)} host=db.invalid sslmode=verify-full sslrootcert={CA}",
                  "SELECT 1")
    assert result.rc != 0 and "does not match host name" in result.stderr, result.stderr


def test_the_apps_connections_from_the_web_servers_are_ssl():
    for name in WEB:
        host = server(name)
        env = app_env(host)
        assert (env["DJANGO_DB_SSLMODE"], env["DJANGO_DB_SSLROOTCERT"]) == ("verify-full", CA)
        # A page that reads the database, so that each web server's app holds a connection (reused 60 s).
        assert host.run("curl -sk -o /dev/null -w '%{http_code}' https://localhost/").stdout == "200"
    sql = ("SELECT a.client_addr, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
           f"WHERE a.usename = '{APP_NAME}' AND a.client_addr IN ({', '.join(repr(address(n)) for n in WEB)})")
    rows = [line.split("|") for line in
            server(DB).check_output(f"runuser -u postgres -- psql -AtX -c {shlex.quote(sql)}").splitlines()]
    assert {addr for addr, _ in rows} == {address(n) for n in WEB}, rows
    assert all(ssl == "t" for _, ssl in rows), rows


def test_the_broker_presents_a_certificate_that_verifies_for_the_workers_address():
    web1 = server(WEB[0])
    worker = address(WORKER)
    ok = web1.run(f"openssl s_client -connect {worker}:5671 -CAfile {CA} -verify_return_error "
                  f"-verify_ip {worker} </dev/null")
    assert ok.rc == 0 and "Verify return code: 0 (ok)" in ok.stdout, ok.stdout[-2000:] + ok.stderr[-1000:]
    # Not for another address: the certificate names the worker's only.
    wrong = web1.run(f"openssl s_client -connect {worker}:5671 -CAfile {CA} -verify_return_error "
                     f"-verify_ip {address(DB)} </dev/null")
    assert wrong.rc != 0, wrong.stdout[-2000:]
    # Plain AMQP is on loopback only.
    listening = server(WORKER).check_output("ss -Hltn 'sport = :5672'")
    assert listening and all(line.split()[3].startswith("127.0.0.1:") for line in listening.splitlines()), listening


def test_the_web_servers_celery_connections_are_tls():
    """Each web server's app, with its own settings, holds a broker connection: the client sees TLS,
    and RabbitMQ lists the connection from that address as ssl."""
    script = ("import time; from demoapp.celery import app; c = app.connection(); c.connect(); "
              "print(c.transport_cls, c.connection._transport.sock.version(), flush=True); time.sleep(20)")
    for name in WEB:
        env = app_env(server(name))
        assert env["DJANGO_CELERY_BROKER_URL"].startswith("amqps://")
        assert f"@{address(WORKER)}:5671/" in env["DJANGO_CELERY_BROKER_URL"]
        assert env["DJANGO_CELERY_BROKER_CA_FILE"] == CA
        command = (f"set -a; . {APP_ROOT}/shared/env; set +a; cd {APP_ROOT}/current && "
                   f"exec .venv/bin/python -c {shlex.quote(script)}")
        server(name).run(f"nohup runuser -u {APP_USER} -- sh -c {shlex.quote(command)} "
                         f"> /tmp/tls-celery.out 2>&1 &")
    deadline = time.monotonic() + 15
    while True:
        listed = server(WORKER).check_output("rabbitmqctl -q list_connections peer_host ssl ssl_protocol")
        rows = [line.split("\t") for line in listed.splitlines() if line.strip()]
        from_web = {row[0]: row[1:] for row in rows if row[0] in {address(n) for n in WEB}}
        if len(from_web) == len(WEB) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(from_web) == {address(n) for n in WEB}, listed
    assert all(ssl == "true" and protocol.startswith("tlsv1.") for ssl, protocol in from_web.values()), listed
    for name in WEB:
        out = server(name).check_output("cat /tmp/tls-celery.out")
        assert re.search(r"TLSv1\.[23]", out), out
