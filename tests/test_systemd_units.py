"""library/systemd_units.py, run for real against systemd: in a throwaway systemd container from the
project's local test image (the machine running the tests has no systemd as PID 1)."""

from __future__ import annotations

import json

import pytest

from module_server import ModuleServer, module_server

NAME = "djstack-test-systemd-units"

UNIT = """[Unit]
Description=systemd_units test unit {n}
[Service]
ExecStart=/bin/sleep infinity
[Install]
WantedBy=multi-user.target
"""


@pytest.fixture(scope="module")
def server():
    with module_server(NAME, "systemd_units") as srv:
        for n in (1, 2, 3):
            srv.exec("sh", "-c", f"printf '%s' '{UNIT.format(n=n)}' > /etc/systemd/system/djtest{n}.service")
        # A unit as a package installs it (systemctl mask links over it in /etc).
        srv.exec("sh", "-c", f"printf '%s' '{UNIT.format(n=4)}' > /usr/lib/systemd/system/djtest4.service")
        srv.exec("systemctl", "daemon-reload")
        yield srv


def run(server: ModuleServer, check_mode: bool = False, diff: bool = False, **args) -> dict:
    return server.run(args, check_mode=check_mode, diff=diff)


def state(server: ModuleServer, unit: str, prop: str) -> str:
    return server.exec("systemctl", "show", "--value", "-p", prop, unit).stdout.strip()


def test_enable_and_start_several_units_in_one_run_then_nothing(server):
    units = ["djtest1.service", "djtest2.service"]
    first = run(server, names=units, enabled=True, state="started")
    assert first["_rc"] == 0, first
    assert first["changed"] is True
    assert first["actions"] == [{"action": "enable", "units": units}, {"action": "start", "units": units}]
    for unit in units:
        assert state(server, unit, "ActiveState") == "active"
        assert state(server, unit, "UnitFileState") == "enabled"
    again = run(server, names=units, enabled=True, state="started")
    assert again["changed"] is False and again["actions"] == []


def test_check_mode_reports_and_changes_nothing(server):
    run(server, names=["djtest3.service"], enabled=False, state="stopped")
    result = run(server, check_mode=True, diff=True, names=["djtest3.service"], enabled=True, state="started")
    assert result["changed"] is True
    assert result["diff"][0]["before"] == {"ActiveState": "inactive", "UnitFileState": "disabled"}
    assert result["diff"][0]["after"] == {"ActiveState": "active", "UnitFileState": "enabled"}
    assert state(server, "djtest3.service", "ActiveState") == "inactive"
    assert state(server, "djtest3.service", "UnitFileState") == "disabled"


def test_restarted_restarts_every_unit_and_reports_changed(server):
    units = ["djtest1.service", "djtest2.service"]
    run(server, names=units, state="started")
    before = [state(server, unit, "MainPID") for unit in units]
    result = run(server, names=units, state="restarted")
    assert result["changed"] is True and result["actions"] == [{"action": "restart", "units": units}]
    after = [state(server, unit, "MainPID") for unit in units]
    assert all(a != b and a != "0" for a, b in zip(after, before))


def test_only_active_restarts_the_running_units_and_skips_the_others(server):
    run(server, names=["djtest1.service"], state="started")
    run(server, names=["djtest2.service"], state="stopped")
    pid = state(server, "djtest1.service", "MainPID")
    result = run(server, names=["djtest1.service", "djtest2.service", "not-written-yet.service"],
                 state="restarted", only_active=True)
    assert result["_rc"] == 0, result
    assert result["changed"] is True and result["actions"] == [{"action": "restart", "units": ["djtest1.service"]}]
    assert state(server, "djtest1.service", "MainPID") not in (pid, "0")
    assert state(server, "djtest2.service", "ActiveState") == "inactive"
    nothing = run(server, names=["djtest2.service", "not-written-yet.service"], state="reloaded", only_active=True)
    assert nothing["_rc"] == 0 and nothing["changed"] is False and nothing["actions"] == []
    assert state(server, "djtest2.service", "ActiveState") == "inactive"


def test_only_active_without_restarted_or_reloaded_is_refused(server):
    result = run(server, names=["djtest1.service"], state="started", only_active=True)
    assert result["_rc"] == 1 and "only_active" in result["msg"]


def test_stopped_and_disabled_only_touches_units_that_need_it(server):
    run(server, names=["djtest1.service"], enabled=True, state="started")
    run(server, names=["djtest2.service"], enabled=False, state="stopped")
    result = run(server, names=["djtest1.service", "djtest2.service"], enabled=False, state="stopped")
    assert result["actions"] == [{"action": "disable", "units": ["djtest1.service"]},
                                 {"action": "stop", "units": ["djtest1.service"]}]
    assert state(server, "djtest1.service", "ActiveState") == "inactive"
    assert state(server, "djtest1.service", "UnitFileState") == "disabled"


def test_an_unknown_unit_fails_naming_it_and_changes_nothing(server):
    run(server, names=["djtest3.service"], state="stopped")
    result = run(server, names=["djtest3.service", "no-such-unit.service"], state="started")
    assert result["_rc"] == 1 and result["failed"] is True
    assert "no-such-unit.service" in result["msg"] and "djtest3" not in result["msg"]
    assert state(server, "djtest3.service", "ActiveState") == "inactive"


def test_check_mode_reports_an_unknown_unit_as_to_be_started(server):
    result = run(server, check_mode=True, names=["not-installed-yet.service"], enabled=True, state="started")
    assert result["_rc"] == 0 and result["changed"] is True
    assert "not-installed-yet.service" in json.dumps(result.get("warnings", []))


def test_a_masked_unit_fails_before_anything_changes(server):
    server.exec("systemctl", "mask", "djtest4.service")
    try:
        result = run(server, names=["djtest3.service", "djtest4.service"], state="started")
        assert result["_rc"] == 1 and "masked" in result["msg"] and "djtest4.service" in result["msg"]
        assert state(server, "djtest3.service", "ActiveState") == "inactive"
    finally:
        server.exec("systemctl", "unmask", "djtest4.service")


def test_daemon_reload_picks_up_a_changed_unit_file(server):
    server.exec("sh", "-c",
                "sed -i 's/^Description=.*/Description=changed/' /etc/systemd/system/djtest3.service")
    result = run(server, names=["djtest3.service"], daemon_reload=True, state="started")
    assert result["_rc"] == 0 and state(server, "djtest3.service", "Description") == "changed"


@pytest.mark.parametrize("args, message", [
    ({"names": ["nginx"], "state": "started"}, "full unit names"),
    ({"names": ["a.service", "a.service"], "state": "started"}, "twice"),
])
def test_bad_input_fails_with_a_clear_message(server, args, message):
    result = run(server, **args)
    assert result["_rc"] == 1 and message in result["msg"]


def test_without_state_or_enabled_it_only_reads(server):
    run(server, names=["djtest1.service"], enabled=True, state="started")
    result = run(server, names=["djtest1.service", "djtest3.service"])
    assert result["_rc"] == 0 and result["changed"] is False and result["actions"] == []
    assert result["units"]["djtest1.service"] == {"ActiveState": "active", "UnitFileState": "enabled", "changed": False}
