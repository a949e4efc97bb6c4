#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Enable, start, stop or restart several systemd units with one systemctl call per action."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: systemd_units
short_description: Bring several systemd units to a state with one systemctl call per action
description:
  - Reads the state of every unit in O(names) with one C(systemctl show), then runs at most one
    C(systemctl enable) (or C(disable)) and one C(systemctl start), C(stop) or C(restart) for all
    the units that need it, side by side, in one systemd transaction.
  - M(ansible.builtin.systemd_service) manages one unit per module run and asks systemd several
    times per unit; a role that runs a socket and its service, or three timers, pays that for each.
  - Units that are already as asked are left alone, so the result is changed only when systemd was
    asked to change something. With neither O(state) nor O(enabled) the module only reads the
    units' state (RV(units)).
version_added: "1.0.0"
author:
  - django-stack maintainers
options:
  names:
    description: Full unit names (C(nginx.service), C(gunicorn@demoapp.socket), C(logrotate.timer)).
    type: list
    elements: str
    required: true
  state:
    description:
      - V(started) starts the units that are not active; V(stopped) stops those that are;
        V(restarted) restarts every unit (always changed); V(reloaded) reloads active units and
        starts inactive ones (always changed). With O(only_active), both act on active units only
        (changed when there was one).
      - Unset leaves whether the units run as it is.
    type: str
    choices: [started, stopped, restarted, reloaded]
  enabled:
    description: Whether the units start at boot. Unset leaves it as it is.
    type: bool
  daemon_reload:
    description: Run C(systemctl daemon-reload) first (after unit files changed).
    type: bool
    default: false
  no_block:
    description: Do not wait for the start, stop or restart jobs to finish (C(systemctl --no-block)).
    type: bool
    default: false
  only_active:
    description:
      - With O(state=restarted) or O(state=reloaded), act only on the units that are active
        (C(systemctl try-restart) and C(try-reload-or-restart) semantics); units that are not
        running, or that systemd does not know yet, are left alone, without failing.
      - For handlers that can fire before the task that starts the units has run (a first
        converge); a unit that starts later reads its new settings as it starts, and restarting
        it first would only start it twice.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Reports which units would be enabled, disabled, started, stopped or restarted; asks systemd nothing but their state.
  diff_mode:
    support: full
    details: Before and after of each changed unit's C(UnitFileState) and C(ActiveState).
notes:
  - A unit systemd does not know (C(LoadState=not-found)) fails the task, naming it, before
    anything is changed; in check mode it is reported as to be acted on, with a warning (a package
    the same run would install brings it). A masked unit cannot be started or enabled and fails the
    same way.
  - Units whose C(UnitFileState) is C(static), C(indirect), C(generated) or C(alias) have no
    install section of their own; with O(enabled=true) they count as enabled.
seealso:
  - module: ansible.builtin.systemd_service
"""

EXAMPLES = r"""
- name: service | Enable and start the gunicorn socket and service
  systemd_units:
    names: [gunicorn@demoapp.socket, gunicorn@demoapp.service]
    enabled: true
    state: started

- name: Restart every Celery worker and beat side by side
  systemd_units:
    names: "{{ celery_units }}"
    state: restarted
    daemon_reload: true

# A handler: restarts the units already running; on a first converge, where it fires before
# the units are started (or even written), it leaves them to the task that starts them.
- name: Restart memcached
  systemd_units:
    names: [memcached.service]
    state: restarted
    only_active: true
"""

RETURN = r"""
units:
  description: The state of each unit after the run (in check mode, as it would be), by name.
  returned: always
  type: dict
  sample: {"nginx.service": {"ActiveState": "active", "UnitFileState": "enabled", "changed": false}}
actions:
  description: The systemctl actions run (or, in check mode, that would run), each with its units.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "start", "units": ["memcached.service"]}]
"""

from ansible.module_utils.basic import AnsibleModule

PROPERTIES = ("Id", "LoadState", "ActiveState", "UnitFileState")
# UnitFileState values that mean "starts at boot" (or has no [Install] section to enable).
ENABLED_STATES = {"enabled", "enabled-runtime", "static", "indirect", "generated", "alias", "linked", "linked-runtime"}
ACTIVE_STATES = {"active", "activating", "reloading", "refreshing"}


def systemctl(module: AnsibleModule, *args: str, check_rc: bool = True) -> str:
    rc, out, err = module.run_command([module.get_bin_path("systemctl", required=True), *args])
    if rc != 0 and check_rc:
        module.fail_json(msg=f"systemctl {' '.join(args)} failed (exit {rc}): {(err or out).strip()}",
                         rc=rc, stdout=out, stderr=err)
    return out


def read_states(module: AnsibleModule, names: list[str]) -> dict[str, dict[str, str]]:
    out = systemctl(module, "show", "--property=" + ",".join(PROPERTIES), "--", *names)
    blocks = [block for block in out.strip().split("\n\n")]
    if len(blocks) != len(names):
        module.fail_json(msg=f"systemctl show returned {len(blocks)} units for {len(names)} names", stdout=out)
    states = {}
    for name, block in zip(names, blocks):
        states[name] = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
    return states


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            names=dict(type="list", elements="str", required=True),
            state=dict(type="str", choices=["started", "stopped", "restarted", "reloaded"]),
            enabled=dict(type="bool"),
            daemon_reload=dict(type="bool", default=False),
            no_block=dict(type="bool", default=False),
            only_active=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    names, state, enabled = module.params["names"], module.params["state"], module.params["enabled"]
    if not names:
        module.exit_json(changed=False, units={}, actions=[])
    bad = [n for n in names if "." not in n or any(c.isspace() for c in n)]
    if bad:
        module.fail_json(msg=f"names must be full unit names such as nginx.service (got: {', '.join(bad)})")
    if len(set(names)) != len(names):
        module.fail_json(msg=f"names lists a unit twice: {', '.join(names)}")

    if module.params["daemon_reload"] and not module.check_mode:
        systemctl(module, "daemon-reload")
    before = read_states(module, names)

    only_active = module.params["only_active"]
    if only_active and (state not in ("restarted", "reloaded") or enabled is not None):
        module.fail_json(msg="only_active goes with state=restarted or state=reloaded, without enabled")
    unknown = [n for n, s in before.items() if s.get("LoadState") == "not-found"]
    if only_active:
        # try-restart semantics: a unit systemd does not know yet is not running; nothing to do.
        unknown = []
    masked = [n for n, s in before.items() if s.get("LoadState") == "masked" or s.get("UnitFileState") == "masked"]
    if unknown and module.check_mode:
        # A package this run would install brings the unit: report what would be done to it.
        module.warn(f"systemd does not know {', '.join(unknown)} yet (a package still to be installed may bring it)")
        for n in unknown:
            before[n].update(ActiveState="inactive", UnitFileState="disabled")
    elif unknown:
        module.fail_json(msg=f"systemd does not know the unit(s) {', '.join(unknown)}: is the package installed, "
                             "the unit file written and systemd reloaded?", units=before)
    if masked and not only_active and (enabled or state in ("started", "restarted", "reloaded")):
        module.fail_json(msg=f"the unit(s) {', '.join(masked)} are masked: unmask them first", units=before)

    after = {n: dict(s) for n, s in before.items()}
    actions = []
    if enabled is True:
        todo = [n for n in names if before[n].get("UnitFileState") not in ENABLED_STATES]
        if todo:
            actions.append(("enable", todo))
            for n in todo:
                after[n]["UnitFileState"] = "enabled"
    elif enabled is False:
        todo = [n for n in names if before[n].get("UnitFileState") in ("enabled", "enabled-runtime")]
        if todo:
            actions.append(("disable", todo))
            for n in todo:
                after[n]["UnitFileState"] = "disabled"
    if state == "started":
        todo = [n for n in names if before[n].get("ActiveState") not in ACTIVE_STATES]
        if todo:
            actions.append(("start", todo))
    elif state == "stopped":
        todo = [n for n in names if before[n].get("ActiveState") in ACTIVE_STATES | {"deactivating"}]
        if todo:
            actions.append(("stop", todo))
    elif state in ("restarted", "reloaded"):
        action = "restart" if state == "restarted" else "reload-or-restart"
        todo = [n for n in names if not only_active or before[n].get("ActiveState") in ACTIVE_STATES]
        if todo:
            actions.append((action, todo))

    if not module.check_mode:
        for action, units in actions:
            flags = ["--no-block"] if module.params["no_block"] and action not in ("enable", "disable") else []
            systemctl(module, *flags, action, "--", *units)
        if actions:
            after = read_states(module, names)
    else:
        for action, units in actions:
            for n in units:
                if action in ("start", "restart", "reload-or-restart"):
                    after[n]["ActiveState"] = "active"
                elif action == "stop":
                    after[n]["ActiveState"] = "inactive"

    touched = {n for _, units in actions for n in units}
    result = dict(
        changed=bool(actions),
        actions=[{"action": a, "units": u} for a, u in actions],
        units={n: {"ActiveState": after[n].get("ActiveState"), "UnitFileState": after[n].get("UnitFileState"),
                   "changed": n in touched} for n in names},
    )
    if module._diff and actions:
        keys = ("ActiveState", "UnitFileState")
        result["diff"] = [{"before_header": n, "after_header": n,
                           "before": {k: before[n].get(k) for k in keys}, "after": {k: after[n].get(k) for k in keys}}
                          for n in names if n in touched]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
