"""The firewall role without a server: its table rendered by Ansible's template module for a few
inputs, read back, checked by nft and loaded for real in a throwaway network namespace (never the
machine's own ruleset); and its preflight refusing bad input and rules that would shut out
Ansible's own SSH connection, before anything changes, naming the variable.

nft comes from Debian's nftables package (scripts/bootstrap.sh installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import missing_prerequisite
from role_templates import render_role_templates

ROOT = Path(__file__).resolve().parents[1]
TABLE_FILE = "etc/nftables.d/django-stack.nft"
TEMPLATES = [TABLE_FILE, "etc/nftables.conf", "etc/systemd/system/nftables.service.d/django-stack.conf"]
BIN = Path(sys.executable).parent


ADMIN = ["10.8.0.0/24", "2001:db8:8::/48", "192.0.2.7"]
RULES = [
    {"name": "postgresql", "port": 5432, "sources": ["10.0.0.21", "10.0.0.22", "fd00:1::21"]},
    {"name": "syslog", "port": [514, 6514], "proto": "udp", "sources": ["10.0.0.0/24"]},
    {"name": "memcached", "port": 11211, "sources": []},
]


def ansible_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
    return dict(env, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false",
                ANSIBLE_PYTHON_INTERPRETER=sys.executable)


def render(tmp_path: Path, extra: dict) -> dict[str, str]:
    return render_role_templates(tmp_path, "firewall", TEMPLATES, extra)


def statements(text: str) -> list[str]:
    """The ruleset's lines without comments, blank lines or indentation."""
    return [line.strip() for line in re.sub(r"#[^\n]*", "", text).splitlines() if line.strip()]


def nft_tools() -> tuple[str, str]:
    nft, unshare = shutil.which("nft"), shutil.which("unshare")
    if not nft:
        missing_prerequisite("nft is absent: install nftables (scripts/bootstrap.sh does)")
    if os.geteuid() != 0 or not unshare:
        missing_prerequisite("loading a ruleset in a throwaway network namespace needs root and unshare")
    return nft, unshare


def load_in_netns(*files: Path) -> str:
    """Each file loaded with `nft -f`, in order, in a new network namespace; the ruleset at the end."""
    nft, unshare = nft_tools()
    script = "".join(f'{nft} -f "${i}" && ' for i in range(1, len(files) + 1)) + f"{nft} list ruleset"
    result = subprocess.run([unshare, "--net", "--", "sh", "-c", script, "sh", *map(str, files)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_table_drops_input_by_default_and_opens_exactly_what_it_is_given(tmp_path):
    text = render(tmp_path, {"firewall_admin_networks": ADMIN, "firewall_public_tcp_ports": [443, 80, 443],
                             "firewall_rules": RULES})[TABLE_FILE]
    lines = statements(text)
    # One transaction: the table created if missing, deleted, loaded anew; no other table named.
    assert lines[:3] == ["table inet django_stack {", "}", "delete table inet django_stack"], lines
    assert not any(line.startswith(("flush ruleset", "flush table")) for line in lines), lines
    assert {m for m in re.findall(r"table (\w+ \w+)", "\n".join(lines))} == {"inet django_stack"}
    chains = re.findall(r"chain (\w+)", text)
    assert chains == ["input"], chains  # no forward chain (not a router), output open
    body = lines[lines.index("chain input {") + 1:]
    assert body[0] == "type filter hook input priority filter; policy drop;"
    assert body[1:4] == ["ct state established,related accept", "ct state invalid drop", "iif lo accept"]
    icmpv6 = next(line for line in body if "icmpv6 type" in line)
    for kind in ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert", "packet-too-big", "echo-request"):
        assert kind in icmpv6
    assert 'ip saddr { 10.8.0.0/24, 192.0.2.7/32 } tcp dport 22 accept comment "ssh"' in body
    assert 'ip6 saddr { 2001:db8:8::/48 } tcp dport 22 accept comment "ssh"' in body
    assert 'tcp dport { 80, 443 } accept comment "public"' in body
    assert 'ip saddr { 10.0.0.21/32, 10.0.0.22/32 } tcp dport { 5432 } accept comment "postgresql"' in body
    assert 'ip6 saddr { fd00:1::21/128 } tcp dport { 5432 } accept comment "postgresql"' in body
    assert 'ip saddr { 10.0.0.0/24 } udp dport { 514, 6514 } accept comment "syslog"' in body
    # A rule without sources opens nothing.
    assert "11211" not in text and "memcached" not in text
    # Nothing else is opened.
    opened = [line for line in body if "dport" in line]
    assert len(opened) == 6, opened


def test_the_ruleset_loads_replaces_itself_and_leaves_other_tables_alone(tmp_path):
    table = tmp_path / "django-stack.nft"
    table.write_text(render(tmp_path, {"firewall_admin_networks": ADMIN, "firewall_public_tcp_ports": [80, 443],
                                       "firewall_rules": RULES})[TABLE_FILE])
    other = tmp_path / "other.nft"
    other.write_text("table inet container_runtime {\n chain forward {\n  type filter hook forward priority 0;\n }\n}\n")
    # Loaded on a host with someone else's table, then loaded again over itself (a reload).
    ruleset = load_in_netns(other, table, table)
    assert ruleset.count("table inet django_stack {") == 1, ruleset
    assert "table inet container_runtime {" in ruleset, ruleset
    assert "policy drop;" in ruleset and 'comment "postgresql"' in ruleset, ruleset


def test_the_disabled_table_is_empty_and_loads(tmp_path):
    text = render(tmp_path, {"firewall_enabled": False})[TABLE_FILE]
    assert statements(text) == ["table inet django_stack {", "}", "delete table inet django_stack"]
    table = tmp_path / "off.nft"
    table.write_text(text)
    assert "django_stack" not in load_in_netns(table)


def test_ssh_from_anywhere_when_asked_for(tmp_path):
    text = render(tmp_path, {"firewall_admin_networks": ["0.0.0.0/0", "::/0"], "firewall_allow_ssh_from_anywhere": True,
                             "firewall_ssh_port": 2222})[TABLE_FILE]
    assert 'ip saddr { 0.0.0.0/0 } tcp dport 2222 accept comment "ssh"' in statements(text)
    table = tmp_path / "anywhere.nft"
    table.write_text(text)
    assert "tcp dport 2222 accept" in load_in_netns(table)


def test_nftables_conf_includes_the_tables_and_flushes_nothing(tmp_path):
    rendered = render(tmp_path, {"firewall_admin_networks": ADMIN})
    assert statements(rendered["etc/nftables.conf"]) == ['include "/etc/nftables.d/*.nft"']
    dropin = statements(rendered["etc/systemd/system/nftables.service.d/django-stack.conf"])
    assert dropin == ["[Service]", "ExecStop=", "ExecStop=-/usr/sbin/nft delete table inet django_stack"]


# --- preflight --------------------------------------------------------------------------------------

PLAY = """
- name: Apply the firewall role with the given variables
  hosts: localhost
  gather_facts: false
  roles:
    - role: firewall
"""


def run_role(tmp_path: Path, variables: dict, ssh_connection: str | None = None,
             tags: str | None = None) -> subprocess.CompletedProcess:
    """The role on localhost (connection local, check mode as a second safety net). With
    ssh_connection, Ansible runs as in an SSH login from that client (SSH_CONNECTION)."""
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    varfile = tmp_path / "vars.json"
    varfile.write_text(json.dumps(variables))
    env = dict(ansible_env(), ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_INJECT_FACT_VARS="false")
    if ssh_connection:
        env["SSH_CONNECTION"] = ssh_connection
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--check", str(play), "-e", f"@{varfile}"]
    return subprocess.run(cmd + (["--tags", tags] if tags else []), capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def assert_rejected(result: subprocess.CompletedProcess, *needles: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not named in the failure:\n{out[-3000:]}"
    assert "changed=0" in out, out[-2000:]


OK = {"firewall_admin_networks": ["10.8.0.0/24"]}


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"firewall_admin_networks": []}, ["firewall_admin_networks", "is empty"]),
        ({"firewall_admin_networks": ["10.8.0.5/24"]}, ["firewall_admin_networks", '"10.8.0.5/24"', "host bits"]),
        ({"firewall_admin_networks": ["office"]}, ["firewall_admin_networks", '"office"']),
        ({"firewall_admin_networks": ["10.8.0.0/24 accept"]}, ["firewall_admin_networks", '"10.8.0.0/24 accept"']),
        ({"firewall_admin_networks": ["10.8.0.0/24", "0.0.0.0/0"]}, ["firewall_admin_networks", "firewall_allow_ssh_from_anywhere"]),
        ({"firewall_admin_networks": ["::/0"]}, ["firewall_admin_networks", "firewall_allow_ssh_from_anywhere"]),
        ({"firewall_ssh_port": 70000}, ["firewall_ssh_port", "70000"]),
        ({"firewall_ssh_port": "ssh"}, ["firewall_ssh_port"]),
        ({"firewall_public_tcp_ports": [443, 0]}, ["firewall_public_tcp_ports", "0 is not a port"]),
        ({"firewall_public_tcp_ports": [65536]}, ["firewall_public_tcp_ports", "65536"]),
        ({"firewall_rules": [{"name": 'pg" accept; #', "port": 5432, "sources": ["10.0.0.21"]}]},
         ["firewall_rules", "the name must be"]),
        ({"firewall_rules": [{"name": "pg", "port": 0, "sources": ["10.0.0.21"]}]}, ["firewall_rules", 'rule "pg"', "port"]),
        ({"firewall_rules": [{"name": "pg", "port": [5432, "x"], "sources": ["10.0.0.21"]}]}, ["firewall_rules", 'rule "pg"', "port"]),
        ({"firewall_rules": [{"name": "pg", "port": 5432, "proto": "icmp", "sources": ["10.0.0.21"]}]}, ["firewall_rules", "proto"]),
        ({"firewall_rules": [{"name": "pg", "port": 5432, "sources": ["10.0.0.21; accept"]}]},
         ["firewall_rules", 'rule "pg"', '"10.0.0.21; accept"']),
        ({"firewall_rules": [{"name": "pg", "port": 5432, "sources": ["0.0.0.0/0"]}]}, ["firewall_rules", 'rule "pg"', "everyone"]),
        ({"firewall_rules": [{"name": "pg", "port": 5432, "sources": []}, {"name": "pg", "port": 6432, "sources": []}]},
         ["firewall_rules", "more than once"]),
        ({"firewall_rules": [{"name": "pg", "ports": 5432, "sources": []}]}, ["firewall_rules", "ports"]),
        ({"firewall_rules": [{"name": "pg\nx", "port": 5432, "sources": []}]}, ["firewall_rules"]),
    ],
    ids=["admin-empty", "admin-host-bits", "admin-name", "admin-injection", "admin-anywhere-v4", "admin-anywhere-v6",
         "ssh-port-range", "ssh-port-type", "public-port-zero", "public-port-high", "rule-name-unsafe", "rule-port-zero",
         "rule-port-not-int", "rule-proto", "rule-source-injection", "rule-source-anywhere", "rule-name-twice",
         "rule-unknown-key", "rule-name-newline"],
)
def test_bad_input_is_refused_before_any_change(tmp_path, extra, needles):
    assert_rejected(run_role(tmp_path, {**OK, **extra}), *needles)


@pytest.mark.parametrize(
    ("admin", "ssh_connection", "needles"),
    [
        (["10.8.0.0/24"], "203.0.113.7 50022 10.0.0.10 22", ["firewall_admin_networks", "203.0.113.7"]),
        (["10.8.0.0/24", "2001:db8:8::/48"], "2001:db8:99::7 50022 2001:db8::10 22", ["firewall_admin_networks", "2001:db8:99::7"]),
        (["10.8.0.0/24"], "10.8.0.7 50022 10.0.0.10 2222", ["firewall_ssh_port", "2222"]),
    ],
    ids=["client-v4-outside", "client-v6-outside", "sshd-on-another-port"],
)
def test_rules_that_would_shut_out_ansibles_own_ssh_connection_are_refused(tmp_path, admin, ssh_connection, needles):
    assert_rejected(run_role(tmp_path, {"firewall_admin_networks": admin}, ssh_connection), *needles)


@pytest.mark.parametrize(
    ("variables", "ssh_connection"),
    [
        ({"firewall_admin_networks": ["10.8.0.0/24"]}, "10.8.0.7 50022 10.0.0.10 22"),
        ({"firewall_admin_networks": ["2001:db8:8::/48"]}, "2001:db8:8::7 50022 2001:db8::10 22"),
        ({"firewall_admin_networks": ["10.8.0.0/24"]}, "127.0.0.1 50022 127.0.0.1 22"),
        ({"firewall_admin_networks": ["10.8.0.0/24"]}, None),
        ({"firewall_admin_networks": ["0.0.0.0/0"], "firewall_allow_ssh_from_anywhere": True}, "203.0.113.7 50022 10.0.0.10 22"),
        ({"firewall_enabled": False}, "203.0.113.7 50022 10.0.0.10 22"),
        ({**OK, "firewall_public_tcp_ports": [80, 443], "firewall_rules": RULES}, None),
    ],
    ids=["client-inside", "client-v6-inside", "loopback", "local-without-ssh", "anywhere-allowed", "disabled", "full"],
)
def test_preflight_passes_good_input_and_a_connection_the_rules_admit(tmp_path, variables, ssh_connection):
    """The same checks pass these: the refusals above come from the bad values."""
    result = run_role(tmp_path, variables, ssh_connection, tags="firewall_preflight")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
