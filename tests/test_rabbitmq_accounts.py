"""library/rabbitmq_accounts.py, run for real against RabbitMQ: Debian's rabbitmq-server in a
throwaway systemd container from the project's local test image (installed from the Debian
mirror; this machine runs no broker of its own). Logins are checked over AMQP, by the test."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import secrets
import subprocess

import pytest

from module_server import LIBRARY, WORK, module_server, parse

NAME = "djtest-rabbitmq-accounts"
UNREACHABLE = "no-such-node@localhost"
# Quotes, backslash, backquote, newline, shell and Erlang syntax, and some that are not ASCII.
ODD = 'p"a\\s s\'w~$(id)`\n,}]).ö€'
SERVER = {}

APP = {"name": "app", "password": "app-secret-9f2c", "vhost": "appvh", "tags": ""}
MONITOR = {"name": "monitor", "password": ODD, "vhost": "appvh", "configure_priv": "^$",
           "write_priv": "^$", "read_priv": "^amq\\.", "tags": ["monitoring"]}
WANTED = {"vhosts": ["appvh"], "users": [APP, MONITOR]}
SECRETS = [APP["password"], ODD]
NOTHING = {"vhosts_created": [], "users_created": [], "users_updated": {}, "permissions_cleared": [],
           "topic_permissions_cleared": [], "users_removed": []}


@pytest.fixture(scope="module")
def broker():
    # The broker's node is rabbit@<short host name>: the module's default, rabbit@localhost.
    with module_server(NAME, "rabbitmq_accounts", network="podman", hostname="localhost") as server:
        server.exec("bash", "-c", "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
                    "apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null", timeout=900)
        server.exec("systemctl", "start", "rabbitmq-server", timeout=300)
        SERVER["broker"] = server
        yield server


def on_broker(test):
    """A test run against the broker in the container: marked `container`, the Makefile runs them apart."""
    return pytest.mark.container(pytest.mark.usefixtures("broker")(test))


def rabbitmqctl(*args: str, **kw) -> str:
    kw.setdefault("timeout", 120)  # a hung rabbitmqctl fails its test instead of the whole run
    return SERVER["broker"].exec("env", "LC_ALL=C.UTF-8", "rabbitmqctl", "--quiet", *args, **kw).stdout


def definitions() -> dict:
    return json.loads(rabbitmqctl("export_definitions", "-"))


def hashes() -> list[str]:
    return [u["password_hash"] for u in definitions()["users"] if u["password_hash"]]


def strings(value):
    """Every string in a result: keys and values, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def assert_no_secret(result: dict) -> None:
    texts = list(strings(result))
    for secret in SECRETS + hashes():
        assert not any(secret in text for text in texts), f"a password or hash is in the module's result: {result}"


def run(args: dict, check_mode: bool = False) -> dict:
    """The module's result; every run is checked for passwords and hashes in its output."""
    result = SERVER["broker"].run(args, check_mode=check_mode)
    assert_no_secret(result)
    return result


def changed(**changes) -> dict:
    return {**NOTHING, **changes}


def reported(result: dict) -> dict:
    return {key: result[key] for key in NOTHING}


def users() -> dict[str, list[str]]:
    """name -> tags, as rabbitmqctl lists them."""
    return {u["user"]: sorted(u["tags"]) for u in json.loads(rabbitmqctl("list_users", "--formatter", "json"))}


def permissions(user: str) -> list[dict]:
    return json.loads(rabbitmqctl("list_user_permissions", user, "--formatter", "json"))


# An AMQP 0-9-1 client's first steps, run in the container: protocol header, Connection.Start,
# Connection.StartOk with PLAIN credentials (from standard input, as UTF-8 bytes); the broker
# answers Connection.Tune when they are right, Connection.Close 403 when not.
AMQP_LOGIN = r"""
import json, socket, struct, sys
creds = json.loads(sys.stdin.read())
def frame(sock):
    data = b""
    while len(data) < 7 or len(data) < 8 + struct.unpack(">I", data[3:7])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data[7:7 + struct.unpack(">I", data[3:7])[0]]
def short(s):
    return bytes([len(s)]) + s
sock = socket.create_connection(("127.0.0.1", 5672), timeout=20)
sock.sendall(b"AMQP\x00\x00\x09\x01")
assert frame(sock)[:4] == struct.pack(">HH", 10, 10)
caps = short(b"authentication_failure_close") + b"t\x01"
props = short(b"capabilities") + b"F" + struct.pack(">I", len(caps)) + caps
plain = b"\x00" + creds["user"].encode() + b"\x00" + creds["password"].encode()
args = (struct.pack(">HHI", 10, 11, len(props)) + props + short(b"PLAIN") + struct.pack(">I", len(plain)) + plain
        + short(b"en_US"))
sock.sendall(struct.pack(">BHI", 1, 0, len(args)) + args + b"\xce")
reply = frame(sock)
if reply[:4] == struct.pack(">HH", 10, 30):
    print("ok")
elif reply[:6] == struct.pack(">HHH", 10, 50, 403):
    print("refused")
else:
    print("unexpected", reply)
"""


def can_log_in(user: str, password: str) -> bool:
    out = SERVER["broker"].exec("python3", "-c", AMQP_LOGIN,
                                input=json.dumps({"user": user, "password": password})).stdout.strip()
    assert out in ("ok", "refused"), out
    return out == "ok"


def converge() -> None:
    run(WANTED)
    assert run(WANTED)["changed"] is False


@on_broker
def test_a_fresh_broker_gets_vhost_users_permissions_and_loses_guest():
    assert "guest" in users()
    before = definitions()
    predicted = run(WANTED, check_mode=True)
    assert predicted["_rc"] == 0 and predicted["changed"] is True, predicted
    assert definitions() == before, "check mode wrote to the broker"

    result = run(WANTED)
    assert result["_rc"] == 0 and result["changed"] is True, result
    expected = changed(vhosts_created=["appvh"], users_created=["app", "monitor"], users_removed=["guest"])
    assert reported(result) == reported(predicted) == expected
    assert users() == {"app": [], "monitor": ["monitoring"]}
    assert permissions("app") == [{"vhost": "appvh", "configure": ".*", "write": ".*", "read": ".*"}]
    assert permissions("monitor") == [{"vhost": "appvh", "configure": "^$", "write": "^$", "read": "^amq\\."}]
    # The odd password arrived byte for byte: the broker takes it over AMQP, and nothing close to it.
    assert can_log_in("monitor", ODD) and can_log_in("app", APP["password"])
    assert not can_log_in("monitor", ODD[:-1]) and not can_log_in("monitor", ODD.encode().decode("latin-1"))
    assert {u["hashing_algorithm"] for u in definitions()["users"]} == {"rabbit_password_hashing_sha256"}


@on_broker
def test_a_second_run_changes_nothing_in_either_mode():
    run(WANTED)
    before = definitions()
    for check_mode in (True, False):
        result = run(WANTED, check_mode=check_mode)
        assert result["_rc"] == 0 and result["changed"] is False and reported(result) == NOTHING, result
    assert definitions() == before, "a run with nothing to do wrote to the broker (a password re-salted?)"


DRIFT = {
    "wrong password": (
        [("change_password", "app", "changed-by-hand")],
        changed(users_updated={"app": ["password"]})),
    "wrong tags": (
        [("set_user_tags", "app", "administrator"), ("set_user_tags", "monitor", "monitoring", "management")],
        changed(users_updated={"app": ["tags"], "monitor": ["tags"]})),
    "wrong permissions": (
        [("set_permissions", "--vhost", "appvh", "monitor", ".*", ".*", ".*")],
        changed(users_updated={"monitor": ["permissions"]})),
    "permissions on another vhost": (
        [("add_vhost", "other"), ("set_permissions", "--vhost", "/", "monitor", ".*", ".*", ".*"),
         ("set_permissions", "--vhost", "other", "monitor", ".*", ".*", ".*")],
        changed(permissions_cleared=[{"user": "monitor", "vhost": "/"}, {"user": "monitor", "vhost": "other"}])),
    "topic permissions": (
        [("set_topic_permissions", "--vhost", "appvh", "app", "amq.topic", ".*", ".*")],
        changed(topic_permissions_cleared=[{"user": "app", "vhost": "appvh"}])),
    "missing vhost": (
        [("delete_vhost", "appvh")],
        changed(vhosts_created=["appvh"], users_updated={"app": ["permissions"], "monitor": ["permissions"]})),
    "guest back": (
        [("add_user", "guest", "guest")],
        changed(users_removed=["guest"])),
    "a user deleted, another's password and tags changed": (
        [("delete_user", "monitor"), ("change_password", "app", "x"), ("set_user_tags", "app", "management")],
        changed(users_created=["monitor"], users_updated={"app": ["password", "tags"]})),
}


@on_broker
@pytest.mark.parametrize("drift", DRIFT)
def test_drift_is_reported_in_check_mode_and_repaired(drift):
    commands, expected = DRIFT[drift]
    converge()
    for command in commands:
        rabbitmqctl(*command)
    before = definitions()
    predicted = run(WANTED, check_mode=True)
    assert predicted["_rc"] == 0 and predicted["changed"] is True and reported(predicted) == expected, predicted
    assert definitions() == before, "check mode wrote to the broker"

    result = run(WANTED)
    assert result["_rc"] == 0 and result["changed"] is True and reported(result) == expected, result
    assert users() == {"app": [], "monitor": ["monitoring"]}
    assert permissions("app") == [{"vhost": "appvh", "configure": ".*", "write": ".*", "read": ".*"}]
    assert permissions("monitor") == [{"vhost": "appvh", "configure": "^$", "write": "^$", "read": "^amq\\."}]
    assert json.loads(rabbitmqctl("list_user_topic_permissions", "app", "--formatter", "json")) == []
    assert can_log_in("app", APP["password"]) and can_log_in("monitor", ODD)
    assert not can_log_in("app", "changed-by-hand")
    assert run(WANTED)["changed"] is False


@on_broker
def test_a_changed_odd_password_arrives_byte_for_byte():
    converge()
    odd = {**APP, "password": ODD + "\\\\ \"'` é"}
    SECRETS.append(odd["password"])
    result = run({**WANTED, "users": [odd, MONITOR]})
    assert result["changed"] is True and reported(result) == changed(users_updated={"app": ["password"]}), result
    assert can_log_in("app", odd["password"]) and not can_log_in("app", APP["password"])
    converge()


@on_broker
def test_names_with_quotes_and_non_ascii_reach_the_broker_as_given():
    """Names travel in the imported document and as rabbitmqctl arguments (through Debian's wrapper)."""
    converge()
    odd = {"name": "mönitor 'q\"", "password": "pw-ö", "vhost": "vé \"q'", "tags": "monitoring, management"}
    SECRETS.append(odd["password"])
    wanted = {"vhosts": ["appvh", odd["vhost"]], "users": [APP, MONITOR, odd]}
    assert run(wanted)["users_created"] == [odd["name"]]
    rabbitmqctl("set_permissions", "--vhost", "appvh", odd["name"], ".*", ".*", ".*")
    rabbitmqctl("set_topic_permissions", "--vhost", odd["vhost"], odd["name"], "amq.topic", ".*", ".*")
    result = run(wanted)
    assert reported(result) == changed(permissions_cleared=[{"user": odd["name"], "vhost": "appvh"}],
                                       topic_permissions_cleared=[{"user": odd["name"], "vhost": odd["vhost"]}])
    assert run(wanted)["changed"] is False
    assert users()[odd["name"]] == ["management", "monitoring"]
    assert permissions(odd["name"]) == [{"vhost": odd["vhost"], "configure": ".*", "write": ".*", "read": ".*"}]
    assert can_log_in(odd["name"], odd["password"])
    rabbitmqctl("delete_user", odd["name"])
    rabbitmqctl("delete_vhost", odd["vhost"])


# Samples every process's command line in the container (raw /proc/*/cmdline, and `ps -eww -o args`)
# until the stop file appears; prints what it saw.
SAMPLER = r"""
import base64, json, os, subprocess, sys
seen, rounds = set(), 0
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    rounds += 1
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                seen.add(f.read().replace(b"\0", b" "))
        except OSError:
            pass
    seen.add(subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True).stdout)
print(json.dumps({"rounds": rounds, "seen": [base64.b64encode(s).decode() for s in seen]}))
"""


@on_broker
def test_no_password_or_hash_on_any_command_line_while_the_module_runs():
    converge()
    fresh = {"name": "psuser", "password": "ps-" + secrets.token_hex(16), "vhost": "appvh"}
    changed_odd = {**MONITOR, "password": ODD + "-2"}
    SECRETS.extend([fresh["password"], changed_odd["password"]])
    rabbitmqctl("set_permissions", "--vhost", "/", "app", ".*", ".*", ".*")
    wanted = {**WANTED, "users": [APP, changed_odd, fresh]}
    server, stop = SERVER["broker"], f"{WORK}/stop-sampler"
    server.exec("rm", "-f", stop)
    sampler = subprocess.Popen(["podman", "exec", NAME, "python3", "-c", SAMPLER, stop],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert sampler.stdout.readline().strip() == "ready"
        command, _ = server.module_command(wanted)
        result = parse(subprocess.run(command, capture_output=True, text=True, check=False, timeout=300))
    finally:
        server.exec("touch", stop)
        out, _ = sampler.communicate(timeout=60)
    assert result["changed"] is True and result["users_created"] == ["psuser"], result
    assert result["users_updated"] == {"monitor": ["password"]}, result
    assert result["permissions_cleared"] == [{"user": "app", "vhost": "/"}], result
    sampled = json.loads(out)
    seen = [base64.b64decode(s) for s in sampled["seen"]]
    # The sampler saw the module's rabbitmqctl calls (so it looked at the right time).
    for call in (b"export_definitions", b"import_definitions", b"clear_permissions"):
        assert any(call in line for line in seen), f"the sampler never saw {call!r} in {sampled['rounds']} rounds"
    needles = [*SECRETS, *hashes(), fresh["password"][3:], ODD.split("\n")[0]]
    for secret in [needle.encode() for needle in needles]:
        leaks = [line for line in seen if secret in line]
        assert not leaks, f"a password or hash was on a command line: {leaks}"
    assert can_log_in("psuser", fresh["password"]) and can_log_in("monitor", changed_odd["password"])
    rabbitmqctl("delete_user", "psuser")
    converge()


@on_broker
@pytest.mark.parametrize(("args", "message"), [
    ({"users": [APP, {**APP, "vhost": "/"}], "vhosts": ["appvh", "/"]}, "listed more than once: app"),
    ({**WANTED, "absent_users": ["app"]}, "both name app"),
    ({**WANTED, "users": [{**APP, "password": ""}]}, "the password of user app is empty"),
    ({"users": [APP]}, "the vhost 'appvh' of user app is not listed in vhosts"),
    ({"vhosts": [""]}, "vhosts: the name '' is empty"),
    ({"absent_users": ["$(touch /tmp/pwned)"]}, "absent_users: the name '$(touch /tmp/pwned)' holds a control"),
    ({**WANTED, "users": [{**APP, "name": "a`id`"}]}, "users: the name 'a`id`' holds"),
    ({"vhosts": ["new\nline"]}, "holds a control character"),
    ({"absent_users": ["--help"]}, "starts with -"),
    ({"users": [{"name": "x", "vhost": "/"}]}, "missing required arguments: password"),
])
def test_bad_input_fails_before_touching_the_broker(args, message):
    converge()
    before = definitions()
    for node in ("rabbit@localhost", UNREACHABLE):
        # With a node that cannot be reached, the message is still about the input: it is checked first.
        result = run({**args, "node": node})
        assert result["_rc"] != 0 and result.get("failed") is True, result
        assert message in result["msg"], result["msg"]
    assert definitions() == before
    assert SERVER["broker"].exec("test", "-e", "/tmp/pwned", check=False).returncode != 0


@on_broker
def test_permissions_on_a_vhost_whose_name_a_shell_would_expand_are_refused_untouched():
    converge()
    # Debian's wrapper leaves \$ to its shell: the vhost a$(id). (Not through import_definitions
    # from stdin, which RabbitMQ 4.0 never finishes reading.)
    rabbitmqctl("add_vhost", "a\\$(id)")
    rabbitmqctl("set_permissions", "-p", "a\\$(id)", "monitor", ".*", ".*", ".*")
    assert {"user": "monitor", "vhost": "a$(id)", "configure": ".*", "write": ".*", "read": ".*"} in \
        definitions()["permissions"]
    before = definitions()
    result = run(WANTED)
    assert result["_rc"] != 0 and "user monitor has permissions on the vhost 'a$(id)'" in result["msg"], result
    assert "nothing was changed" in result["msg"] and definitions() == before
    rabbitmqctl("delete_vhost", "a\\$(id)")  # Debian's wrapper leaves \$ to its shell: the vhost a$(id)
    converge()


@on_broker
def test_a_bad_node_name_is_refused():
    result = run({**WANTED, "node": "rabbit@$(id)"})
    assert result["_rc"] != 0 and "node: 'rabbit@$(id)' is not an Erlang node name" in result["msg"], result


@on_broker
def test_an_unreachable_node_fails_with_a_clear_message():
    result = run({**WANTED, "node": UNREACHABLE})
    assert result["_rc"] != 0 and result.get("failed") is True, result
    assert f"rabbitmqctl export_definitions - on node {UNREACHABLE} failed (exit 69)" in result["msg"], result["msg"]
    assert "unable to perform an operation on node" in result["msg"], result["msg"]


@on_broker
def test_a_failing_import_fails_the_task_with_rabbitmqctl_error():
    converge()
    before = definitions()
    SECRETS.append("another-secret")
    result = run({**WANTED, "users": [{**APP, "password": "another-secret", "configure_priv": "("}, MONITOR]})
    assert result["_rc"] != 0 and result.get("failed") is True, result
    assert "rabbitmqctl import_definitions on node rabbit@localhost failed" in result["msg"], result["msg"]
    assert "invalid_regexp" in result["msg"], result["msg"]
    assert definitions()["permissions"] == before["permissions"]
    converge()


def test_password_hashes_of_every_algorithm_are_verified_without_the_broker():
    """No container needed: the hash check itself (as RabbitMQ stores hashes, see its definitions)."""
    spec = importlib.util.spec_from_file_location("rabbitmq_accounts_under_test", LIBRARY / "rabbitmq_accounts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    salt = b"\x01\x02\x03\x04"
    for algorithm, function in (("rabbit_password_hashing_sha256", hashlib.sha256),
                                ("rabbit_password_hashing_sha512", hashlib.sha512),
                                ("rabbit_password_hashing_md5", hashlib.md5)):
        stored = base64.b64encode(salt + function(salt + ODD.encode()).digest()).decode()
        assert module.password_matches({"password_hash": stored, "hashing_algorithm": algorithm}, ODD)
        assert not module.password_matches({"password_hash": stored, "hashing_algorithm": algorithm}, ODD + "x")
    stored = base64.b64encode(salt + hashlib.sha256(salt + b"pw").digest()).decode()
    assert module.password_matches({"password_hash": stored}, "pw")  # no algorithm: RabbitMQ's default, SHA-256
    for user in ({"password_hash": stored, "hashing_algorithm": "rabbit_password_hashing_sha3"},
                 {"password_hash": "not base64!", "hashing_algorithm": "rabbit_password_hashing_sha256"},
                 {"password_hash": ""}, {}):
        assert not module.password_matches(user, "pw"), user
    assert module.password_matches({"password_hash": module.new_hash(ODD)}, ODD)
    assert module.tag_list("monitoring, management,,") == module.tag_list(["management", "monitoring"])
    assert module.tag_list(None) == module.tag_list("") == []

