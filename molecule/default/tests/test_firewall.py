"""The firewall (roles/firewall) as a client on the network sees it: the tests connect from the
podman host, which sits on the scenario's network and is not in firewall_admin_networks, to the
server's address on that network; Ansible's SSH comes in over loopback, as molecule/resources/
ssh-connection.yml says."""

from __future__ import annotations

import http.client
import ipaddress
import json
import shlex
import socket
import ssl
import subprocess
import time

import pytest

from stackhelpers import INVENTORY, PROJECT_DIR, group_hosts, podman_hosts, web_variable

testinfra_hosts = podman_hosts("webservers")[:1]

TABLE = "django_stack"
# A port no role opens: what the firewall must stop whatever listens there.
PORT = 18080
# Echoes each line back on the same connection: what an open connection still carries is visible.
ECHO = ("import socketserver\n"
        "class H(socketserver.StreamRequestHandler):\n"
        "    def handle(self):\n"
        "        for line in self.rfile:\n"
        "            self.wfile.write(line)\n"
        "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
        f"socketserver.ThreadingTCPServer(('0.0.0.0', {PORT}), H).serve_forever()\n")


def server_address() -> str:
    """The server's address on the scenario's network (as the podman host reaches it)."""
    name = group_hosts("webservers")[0]
    out = subprocess.run(["podman", "inspect", "-f", "{{json .NetworkSettings.Networks}}", name],
                         capture_output=True, text=True, check=True).stdout
    addresses = [net["IPAddress"] for net in json.loads(out).values() if net.get("IPAddress")]
    assert addresses, out
    return addresses[0]


def connects(address: str, port: int, timeout: float = 3) -> bool:
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def own_address_towards(address: str) -> str:
    """The podman host's source address for packets to `address` (what the server sees)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((address, 9))
        return probe.getsockname()[0]


@pytest.fixture
def listener(host):
    """An echo server on 0.0.0.0:PORT inside the server, stopped afterwards (--collect: a transient
    unit leaves no failed unit behind, which test_stack's checks would report)."""
    unit = "firewall-test-listener"
    host.run(f"systemctl stop {unit}.service")
    host.check_output(f"systemd-run --unit={unit} --collect --property=RuntimeMaxSec=300 "
                      f"/usr/bin/python3 -c {shlex.quote(ECHO)}")
    try:
        deadline = time.monotonic() + 30
        while host.run(f"ss -ltnH 'sport = :{PORT}'").stdout.strip() == "":
            assert time.monotonic() < deadline, "the test listener did not start"
            time.sleep(0.5)
        yield PORT
    finally:
        host.run(f"systemctl stop {unit}.service")


def test_nftables_is_enabled_and_the_table_filters_input(host):
    service = host.service("nftables")
    assert service.is_enabled
    assert host.run("systemctl is-active nftables.service").stdout.strip() == "active"
    objects = json.loads(host.check_output(f"nft -j list table inet {TABLE}"))["nftables"]
    chains = {o["chain"]["name"]: o["chain"] for o in objects if "chain" in o}
    assert set(chains) == {"input"}, chains  # no forward chain, no output chain
    assert chains["input"]["hook"] == "input" and chains["input"]["policy"] == "drop", chains


def test_a_port_nobody_opened_answers_on_loopback_and_not_from_the_network(host, listener):
    probe = (f"import socket; s = socket.create_connection(('127.0.0.1', {listener}), timeout=5); "
             "s.sendall(b'ping\\n'); print(s.recv(5).decode().strip())")
    assert host.check_output(f"python3 -c {shlex.quote(probe)}") == "ping"
    assert not connects(server_address(), listener), f"{server_address()}:{listener} answers from the network"


def test_https_answers_from_the_network():
    connection = http.client.HTTPSConnection(server_address(), 443, timeout=20,
                                             context=ssl._create_unverified_context())  # self-signed
    connection.request("GET", "/healthz", headers={"Host": "localhost"})
    assert connection.getresponse().status == 200


def test_ssh_answers_the_admin_path_only():
    # Ansible's own path (loopback inside the server) still works...
    ping = subprocess.run(["ansible", group_hosts("webservers")[0], "-i", INVENTORY, "-m", "ansible.builtin.ping"],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False)
    assert ping.returncode == 0, ping.stdout[-2000:] + ping.stderr[-2000:]
    # ...while this host, not an admin network, is not let in.
    me = ipaddress.ip_address(own_address_towards(server_address()))
    admins = [ipaddress.ip_network(n) for n in web_variable("firewall_admin_networks", [])]
    assert admins and not any(me in net for net in admins), (me, admins)
    assert not connects(server_address(), 22)


def test_an_open_connection_survives_a_reload_that_closes_its_port(host, listener):
    address = server_address()
    host.check_output(f"nft add rule inet {TABLE} input tcp dport {listener} accept")
    try:
        with socket.create_connection((address, listener), timeout=5) as conn:
            conn.sendall(b"before\n")
            assert conn.recv(7) == b"before\n"
            # The role's table, loaded anew: the rule added above is gone.
            host.check_output("systemctl reload nftables.service")
            conn.sendall(b"after\n")
            assert conn.recv(6) == b"after\n"
        assert not connects(address, listener), "the reload did not replace the table"
    finally:
        host.run("systemctl reload nftables.service")


def test_other_tables_survive_a_reload_and_a_restart(host):
    """A container runtime's, libvirt's or fail2ban's table is not the role's to remove."""
    host.check_output("nft add table inet firewall_test_other")
    try:
        for action in ("reload", "restart"):
            host.check_output(f"systemctl {action} nftables.service")
            tables = host.check_output("nft list tables")
            assert "table inet firewall_test_other" in tables, (action, tables)
            assert f"table inet {TABLE}" in tables, (action, tables)
    finally:
        host.run("nft delete table inet firewall_test_other")
