"""library/rabbitmq_accounts.py, run for real against RabbitMQ: Debian's rabbitmq-server in a
throwaway systemd container from the project's local test image (installed from the Debian
mirror; this machine runs no broker of its own)."""

from __future__ import annotations

import json

import pytest

from module_server import module_server

NAME = "djstack-test-rabbitmq"
# Every character that could break out of an Erlang string, and some that are not ASCII.
ODD = 'p"a\\s s\'w~$(id)`\n,}]).ö€'
SERVER = {}


@pytest.fixture(scope="module", autouse=True)
def broker():
    # The broker's node is rabbit@<short host name>: the module's default, rabbit@localhost.
    with module_server(NAME, "rabbitmq_accounts", network="podman", hostname="localhost") as server:
        server.exec("bash", "-c", "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
                    "apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null", timeout=900)
        server.exec("systemctl", "start", "rabbitmq-server", timeout=300)
        SERVER["broker"] = server
        yield server


def run(args: dict, check_mode: bool = False) -> dict:
    return SERVER["broker"].run(args, check_mode=check_mode)


def rabbitmqctl(*args: str) -> str:
    return SERVER["broker"].exec("rabbitmqctl", "--quiet", *args).stdout


def users() -> dict[str, list[str]]:
    """name -> tags, as rabbitmqctl lists them."""
    out = json.loads(rabbitmqctl("list_users", "--formatter", "json"))
    return {u["user"]: sorted(u["tags"]) for u in out}


def permissions(user: str) -> list[dict]:
    return json.loads(rabbitmqctl("list_user_permissions", user, "--formatter", "json"))


def can_log_in(user: str, password: str) -> bool:
    """The broker's own login check, in Erlang (Debian's rabbitmqctl wrapper passes its arguments
    through sh -c, so `rabbitmqctl authenticate_user` cannot take every password)."""
    def erlang_binary(value: str) -> str:
        return "<<" + ",".join(str(b) for b in value.encode()) + ">>"
    expr = (f"element(1, rabbit_access_control:check_user_pass_login("
            f"{erlang_binary(user)}, {erlang_binary(password)})).")
    out = SERVER["broker"].exec("rabbitmqctl", "--quiet", "eval", input=expr).stdout.strip()
    assert out in ("ok", "refused"), out
    return out == "ok"


APP = {"name": "app", "password": "app-secret", "vhost": "appvh"}
MONITOR = {"name": "monitor", "password": ODD, "vhost": "appvh", "configure_priv": "^$",
           "write_priv": "^$", "read_priv": "^amq\\.", "tags": ["monitoring"]}
WANTED = {"vhosts": ["appvh"], "users": [APP, MONITOR]}


def test_a_fresh_broker_gets_vhost_users_permissions_and_loses_guest():
    assert "guest" in users()
    predicted = run(WANTED, check_mode=True)
    assert predicted["_rc"] == 0 and predicted["changed"] is True, predicted
    # Check mode wrote nothing.
    assert "guest" in users() and "app" not in users()
    assert "appvh" not in rabbitmqctl("list_vhosts").split()

    result = run(WANTED)
    assert result["_rc"] == 0 and result["changed"] is True, result
    assert result["changes"] == predicted["changes"] == [
        "vhost appvh: created",
        "user app: created", "user app: permissions on appvh set",
        "user monitor: created", "user monitor: tags set", "user monitor: permissions on appvh set",
        "user guest: deleted",
    ]
    assert users() == {"app": [], "monitor": ["monitoring"]}
    assert permissions("app") == [{"vhost": "appvh", "configure": ".*", "write": ".*", "read": ".*"}]
    assert permissions("monitor") == [{"vhost": "appvh", "configure": "^$", "write": "^$", "read": "^amq\\."}]
    # The odd password arrived byte for byte.
    assert can_log_in("monitor", ODD) and can_log_in("app", "app-secret")
    assert not can_log_in("monitor", "p")


def test_a_second_run_changes_nothing_in_either_mode():
    run(WANTED)
    for check_mode in (True, False):
        result = run(WANTED, check_mode=check_mode)
        assert result["_rc"] == 0 and result["changed"] is False and result["changes"] == [], result


def test_drift_is_reported_in_check_mode_and_repaired():
    run(WANTED)
    rabbitmqctl("change_password", "app", "changed-by-hand")
    rabbitmqctl("set_user_tags", "app", "administrator")
    rabbitmqctl("set_permissions", "--vhost", "appvh", "monitor", ".*", ".*", ".*")
    rabbitmqctl("set_permissions", "--vhost", "/", "monitor", ".*", ".*", ".*")
    rabbitmqctl("set_topic_permissions", "--vhost", "appvh", "app", "amq.topic", ".*", ".*")
    rabbitmqctl("add_user", "guest", "guest")
    expected = [
        "user app: password changed", "user app: tags set", "user app: topic permissions cleared",
        "user monitor: permissions on appvh set", "user monitor: permissions on other vhosts cleared",
        "user guest: deleted",
    ]
    predicted = run(WANTED, check_mode=True)
    assert predicted["changed"] is True and predicted["changes"] == expected, predicted
    assert can_log_in("app", "changed-by-hand") and "guest" in users()

    result = run(WANTED)
    assert result["changed"] is True and result["changes"] == expected, result
    assert can_log_in("app", "app-secret") and not can_log_in("app", "changed-by-hand")
    assert users() == {"app": [], "monitor": ["monitoring"]}
    assert permissions("monitor") == [{"vhost": "appvh", "configure": "^$", "write": "^$", "read": "^amq\\."}]
    assert json.loads(rabbitmqctl("list_user_topic_permissions", "app", "--formatter", "json")) == []
    assert run(WANTED)["changed"] is False


def test_no_password_reaches_the_output():
    run(WANTED)
    rabbitmqctl("change_password", "monitor", "changed-by-hand")
    result = run(WANTED)
    assert result["changed"] is True
    assert ODD not in json.dumps(result) and "app-secret" not in json.dumps(result)


@pytest.mark.parametrize(("args", "message"), [
    ({"users": [APP, {**APP, "vhost": "/"}]}, "listed more than once: app"),
    ({"users": [APP], "absent_users": ["app"]}, "both name app"),
    ({"users": [{**APP, "password": ""}]}, "the password of user app is empty"),
    ({"vhosts": [""]}, "vhosts: an entry is empty"),
    ({"users": [{"name": "x", "vhost": "/"}]}, "password"),
])
def test_bad_input_fails_before_touching_the_broker(args, message):
    before = users()
    result = run(args)
    assert result["_rc"] != 0 and result.get("failed") is True, result
    assert message in result["msg"], result["msg"]
    assert users() == before


def test_a_failing_write_fails_the_task_with_the_reason():
    # The vhost is neither there nor listed: set_permissions fails on the node.
    result = run({"users": [{**APP, "vhost": "no-such-vhost"}]})
    assert result["_rc"] != 0 and result.get("failed") is True, result
    assert "rabbitmqctl eval on node rabbit@" in result["msg"] and "permissions_set" in result["msg"], result["msg"]
    assert "app-secret" not in json.dumps(result)


def test_an_unreachable_node_fails_with_a_clear_message():
    result = run({**WANTED, "node": "no-such-node@localhost"})
    assert result["_rc"] != 0 and result.get("failed") is True, result
    assert "rabbitmqctl eval on node no-such-node@localhost failed" in result["msg"], result["msg"]
