#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Run a Django project's migrations in its virtualenv, serialized across hosts."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: django_migrate
short_description: Apply (or plan) a Django project's database migrations, one host at a time
description:
  - Computes the migration plan of a Django project with the project's own interpreter
    (C(MigrationExecutor.migration_plan)) and applies it with C(migrate), as the user the task
    runs as (use C(become_user) to run as the app user), with the app's settings and environment file.
  - Idempotent. When nothing is pending the task reports C(changed=false) and runs nothing.
  - In check mode, or with O(plan_only), the plan is reported and nothing is applied.
    With diff mode the set of applied migrations before and after is shown.
  - With O(lock), concurrent runs against the same database (several web servers in one play)
    are serialized, on PostgreSQL with a session-level C(pg_advisory_lock), on SQLite with an
    C(flock) on C(<database file>.migrate.lock). The plan is recomputed once the lock is held,
    so the runs that waited find nothing left to do and report C(changed=false).
  - A backwards plan (O(migration) older than the current state, or C(zero)) that would unapply
    a migration with an irreversible operation (C(RunPython) without reverse code, C(RunSQL)
    without reverse SQL) is refused before anything is touched, unless O(fake) is set.
version_added: "1.0.0"
author:
  - django-stack maintainers
options:
  project_path:
    description: Directory that holds the project's C(manage.py); the commands run there.
    type: path
    required: true
  virtualenv:
    description:
      - The project's virtualenv; its C(bin/python) runs Django, and its C(bin) is put first in E(PATH).
      - One of O(virtualenv) and O(python) is required.
    type: path
  python:
    description:
      - Interpreter that can import Django and the project, when there is no virtualenv to name.
      - One of O(virtualenv) and O(python) is required.
    type: path
  settings:
    description:
      - Value of E(DJANGO_SETTINGS_MODULE). It takes precedence over the environment file.
      - When neither sets it, the default that C(manage.py) gives with C(os.environ.setdefault) is used.
    type: str
  env_file:
    description:
      - File of C(KEY=value) lines, as read by systemd's C(EnvironmentFile=) (the app's C(shared/env)).
        Blank lines and lines starting with C(#) or C(;) are ignored; one level of single or double
        quotes around a value is removed. The variables are passed to the Django process only.
    type: path
  env:
    description:
      - Extra environment variables for the Django process; they override the same names from
        O(env_file) (for instance the database name of a scratch copy in a restore drill).
    type: dict
    default: {}
  database:
    description: Database alias from C(DATABASES) to migrate.
    type: str
    default: default
  app_label:
    description: Migrate only this app (to its latest migration, or to O(migration)).
    type: str
  migration:
    description:
      - Target migration of O(app_label) (a name or unique prefix, such as C(0002)). Older than the
        current state means a backwards migration; C(zero) unapplies all of the app's migrations.
      - Requires O(app_label).
    type: str
  fake:
    description: Mark the migrations as applied (or unapplied) without running their operations.
    type: bool
    default: false
  fake_initial:
    description: Fake initial migrations whose tables all exist already (C(--fake-initial)).
    type: bool
    default: false
  plan_only:
    description: Report the plan and apply nothing; the task then never reports a change.
    type: bool
    default: false
  lock:
    description:
      - Serialize concurrent runs against the same database (PostgreSQL advisory lock, SQLite file lock).
      - Other database vendors are not locked; a warning says so.
    type: bool
    default: true
  lock_timeout:
    description: Seconds to wait for the lock before failing.
    type: int
    default: 600
attributes:
  check_mode:
    support: full
    details: The plan is computed (this reads the database) but nothing is applied and no lock is taken.
  diff_mode:
    support: full
    details: Shows the applied migrations (C(app.name), one a line) before and after the plan.
notes:
  - The PostgreSQL advisory lock key is the first 8 bytes of SHA-256 of C(django_migrate:<database NAME>),
    as a signed 64-bit integer, so every host and release directory migrating one database shares it.
    A waiting run shows in C(pg_locks) with C(locktype=advisory).
  - When O(lock) is false, C(python manage.py migrate ...) is run as a separate command; when it is true,
    one helper process takes the lock, recomputes the plan and calls C(call_command("migrate", ...)).
  - After a real run the plan is recomputed and must be empty, or the task fails.
requirements:
  - Django 3.2 or later in the project's interpreter.
"""

EXAMPLES = r"""
- name: Apply the app's migrations as the app user
  django_migrate:
    project_path: /srv/demoapp/current
    virtualenv: /srv/demoapp/venv
    settings: demoapp.settings
    env_file: /srv/demoapp/shared/env
  become: true
  become_user: demoapp
  register: _django_app_migrate
  notify: reload django app

- name: Show what would be applied, without applying it
  django_migrate:
    project_path: /srv/demoapp/current
    virtualenv: /srv/demoapp/venv
    env_file: /srv/demoapp/shared/env
    plan_only: true
  register: _plan

- name: Roll the polls app back to its first migration
  django_migrate:
    project_path: /srv/demoapp/current
    virtualenv: /srv/demoapp/venv
    env_file: /srv/demoapp/shared/env
    app_label: polls
    migration: "0001"
    lock_timeout: 120
"""

RETURN = r"""
plan:
  description:
    - The plan computed before the run, in order. RV(plan[].backwards) is true when the migration is unapplied.
    - RV(plan[].irreversible) is true when the migration has an operation that cannot be reversed.
  returned: always
  type: list
  elements: dict
  sample: [{"app": "polls", "name": "0002_choice_votes", "backwards": false, "irreversible": false,
            "operations": ["AddField"]}]
pending:
  description:
    - Migrations (C(app.name)) the plan would run and that this task did not run
      (in check mode or with O(plan_only), the whole plan; after a real run, empty).
  returned: always
  type: list
  elements: str
  sample: ["polls.0002_choice_votes"]
applied:
  description:
    - Migrations (C(app.name)) this task ran, in order (for a backwards plan, those it unapplied).
    - On failure, those that succeeded before the failing one.
  returned: always
  type: list
  elements: str
  sample: ["polls.0002_choice_votes"]
failed_migration:
  description: The migration (C(app.name)) that failed.
  returned: when a migration fails
  type: str
  sample: polls.0003_backfill
irreversible:
  description: Migrations of a backwards plan (C(app.name)) with an irreversible operation.
  returned: always
  type: list
  elements: str
  sample: ["polls.0003_backfill"]
backwards:
  description: True when the plan unapplies migrations.
  returned: always
  type: bool
cmd:
  description: The equivalent C(manage.py migrate) command line.
  returned: always
  type: list
  elements: str
  sample: ["/srv/demoapp/venv/bin/python", "manage.py", "migrate", "--noinput", "--database", "default"]
stdout:
  description: Output of C(migrate).
  returned: when migrate ran
  type: str
  sample: "Operations to perform: ...\n  Applying polls.0002_choice_votes... OK\n"
stderr:
  description: Error output of C(migrate) (the last 40 lines, with the traceback, on failure).
  returned: when migrate ran
  type: str
leaves:
  description:
    - The last migration of every app in the project's migration graph (C(app.name)), that is the
      state a full C(migrate) of this code reaches. Record it per release to migrate back to it later.
  returned: always
  type: list
  elements: str
  sample: ["admin.0003_logentry_add_action_flag_choices", "notes.0002_note_pinned"]
vendor:
  description: Database vendor of the alias (C(postgresql), C(sqlite), ...).
  returned: always
  type: str
  sample: postgresql
lock:
  description: The lock taken (C(pg_advisory_lock(<key>)) or C(flock(<path>))), or null.
  returned: when migrate ran
  type: str
  sample: pg_advisory_lock(-3290123370722051811)
lock_wait:
  description: Seconds spent waiting for the lock.
  returned: when migrate ran with O(lock)
  type: float
  sample: 2.03
"""

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.django_migrate_helper import HELPER

RESULT_MARK = "@@DJANGO_MIGRATE_RESULT@@"
TAIL_LINES = 40

def parse_env_file(text):
    """Parse systemd EnvironmentFile= text into (dict, list of bad line numbers)."""
    env = {}
    bad = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            bad.append(number)
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env, bad


def settings_from_manage_py(text):
    """The DJANGO_SETTINGS_MODULE default that manage.py sets with os.environ.setdefault, or None."""
    match = re.search(r"""setdefault\(\s*['"]DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""", text)
    return match.group(1) if match else None


def label(step):
    return "%s.%s" % (step["app"], step["name"])


def migrate_command(python, params):
    """The manage.py migrate command line for these options."""
    cmd = [python, "manage.py", "migrate"]
    cmd += [x for x in (params["app_label"], params["migration"]) if x]
    cmd += ["--noinput", "--database", params["database"]]
    if params["fake"]:
        cmd.append("--fake")
    if params["fake_initial"]:
        cmd.append("--fake-initial")
    return cmd


def split_progress(plan, applied_after):
    """(migrations of the plan that completed, the first one that did not or None)."""
    done = []
    now = set(applied_after)
    for step in plan:
        finished = (label(step) not in now) if step["backwards"] else (label(step) in now)
        if not finished:
            return done, label(step)
        done.append(label(step))
    return done, None


def after_plan(applied, plan):
    """Applied migrations once the plan has run."""
    result = set(applied)
    for step in plan:
        if step["backwards"]:
            result.discard(label(step))
        else:
            result.add(label(step))
    return sorted(result)


def tail(text, lines=TAIL_LINES):
    return "\n".join((text or "").rstrip("\n").splitlines()[-lines:])


def parse_helper_output(stdout):
    """The helper's JSON result (last marked line), or None."""
    for line in reversed((stdout or "").splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    return None


class Migrator:
    def __init__(self, module):
        self.module = module
        p = module.params
        self.params = p
        self.project = p["project_path"]
        self.python = p["python"] or os.path.join(p["virtualenv"], "bin", "python")
        self.cmd = migrate_command(self.python, p)
        self.result = dict(changed=False, plan=[], pending=[], applied=[], irreversible=[], backwards=False,
                           leaves=[], cmd=self.cmd, vendor=None)
        self.env = self.environment()

    def fail(self, msg, **extra):
        self.result.update(extra)
        self.module.fail_json(msg="django_migrate: " + msg, **self.result)

    def environment(self):
        p = self.params
        env = {}
        if p["env_file"]:
            try:
                with open(p["env_file"]) as handle:
                    text = handle.read()
            except (OSError, UnicodeDecodeError) as exc:
                self.fail("env_file %s cannot be read: %s" % (p["env_file"], exc))
            env, bad = parse_env_file(text)
            if bad:
                self.module.warn("env_file %s: lines %s are not KEY=value and were ignored"
                                 % (p["env_file"], ", ".join(map(str, bad))))
        env.update({str(k): str(v) for k, v in (p["env"] or {}).items()})
        if p["settings"]:
            env["DJANGO_SETTINGS_MODULE"] = p["settings"]
        elif "DJANGO_SETTINGS_MODULE" not in env and not os.environ.get("DJANGO_SETTINGS_MODULE"):
            try:
                with open(os.path.join(self.project, "manage.py")) as handle:
                    default = settings_from_manage_py(handle.read())
            except OSError:
                default = None
            if default:
                env["DJANGO_SETTINGS_MODULE"] = default
        if p["virtualenv"]:
            env["VIRTUAL_ENV"] = p["virtualenv"]
            env["PATH"] = os.path.join(p["virtualenv"], "bin") + os.pathsep + os.environ.get("PATH", os.defpath)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def helper(self, mode):
        p = self.params
        args = dict(mode=mode, database=p["database"], app_label=p["app_label"], migration=p["migration"],
                    fake=p["fake"], fake_initial=p["fake_initial"], lock=p["lock"], lock_timeout=p["lock_timeout"])
        rc, out, err = self.module.run_command([self.python, "-c", HELPER, json.dumps(args)], cwd=self.project,
                                               environ_update=self.env)
        info = parse_helper_output(out)
        if info is None:
            self.fail("the helper run by %s exited with rc=%s without a result: %s" % (self.python, rc, tail(err or out)),
                      rc=rc, stdout=out, stderr=tail(err))
        for warning in info.get("warnings", []):
            self.module.warn(warning)
        if info.get("vendor"):
            self.result["vendor"] = info["vendor"]
        if info.get("leaves"):
            self.result["leaves"] = info["leaves"]
        if info.get("error"):
            self.fail(info["error"])
        return info

    def set_plan(self, plan, applied_before):
        self.result["plan"] = plan
        self.result["pending"] = [label(s) for s in plan]
        self.result["backwards"] = any(s["backwards"] for s in plan)
        self.result["irreversible"] = [label(s) for s in plan if s["backwards"] and s["irreversible"]]
        if self.module._diff and plan:
            before = applied_before
            after = after_plan(applied_before, plan)
            self.result["diff"] = dict(before_header="applied migrations", after_header="applied migrations",
                                       before="".join(x + "\n" for x in before), after="".join(x + "\n" for x in after))

    def refuse_irreversible(self, names):
        self.fail("refusing to migrate backwards over irreversible migration(s) %s (an operation has no reverse, "
                  "Django would raise IrreversibleError); set fake=true to only mark them unapplied"
                  % ", ".join(names))

    def report_run(self, plan, ran_out, ran_err, rc, exception, applied_after):
        """After migrate ran: fail naming the migration that failed, or exit changed."""
        self.result.update(stdout=ran_out, stderr=tail(ran_err))
        if rc != 0 or exception:
            done, failed = split_progress(plan, applied_after)
            self.result["applied"] = done
            self.result["pending"] = [label(s) for s in plan][len(done):]
            self.result["changed"] = bool(done)
            what = failed or "migrate"
            self.fail("migration %s failed%s: %s" % (what, " (after applying %s)" % ", ".join(done) if done else "",
                                                     exception or tail(ran_err or ran_out, TAIL_LINES)),
                      failed_migration=failed)
        self.result.update(changed=True, applied=[label(s) for s in plan], pending=[])

    def run(self):
        p = self.params
        if self.module.check_mode or p["plan_only"] or not p["lock"]:
            info = self.helper("plan")
            plan = info["plan"]
            self.set_plan(plan, info["applied_before"])
            if self.module.check_mode or p["plan_only"]:
                self.result["changed"] = bool(plan) and not p["plan_only"]
                if plan and self.result["irreversible"] and not p["fake"]:
                    self.module.warn("the backwards plan crosses irreversible migration(s) %s: a real run will fail"
                                     % ", ".join(self.result["irreversible"]))
                self.module.exit_json(**self.result)
            if not plan:
                self.module.exit_json(**self.result)
            if self.result["irreversible"] and not p["fake"]:
                self.refuse_irreversible(self.result["irreversible"])
            # lock is false: run manage.py itself.
            rc, out, err = self.module.run_command(self.cmd, cwd=self.project, environ_update=self.env)
            applied_after = self.helper("plan")["applied_before"] if rc != 0 else []
            self.report_run(plan, out, err, rc, None, applied_after)
            remaining = self.helper("plan")["plan"]
        else:
            info = self.helper("migrate")
            self.set_plan(info["plan"], info["applied_before"])
            self.result.update(lock=info.get("lock"), lock_wait=info.get("lock_wait"))
            if info.get("refused"):
                self.refuse_irreversible(info["refused"])
            if not info.get("ran"):
                self.module.exit_json(**self.result)
            self.report_run(info["plan"], info.get("stdout", ""), info.get("stderr", ""), 0, info.get("exception"),
                            info.get("applied_after", []))
            remaining = info.get("remaining", [])
        if remaining:
            self.fail("migrate finished but the plan is not empty: %s still pending" % ", ".join(map(label, remaining)),
                      pending=[label(s) for s in remaining])
        self.module.exit_json(**self.result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project_path=dict(type="path", required=True),
            virtualenv=dict(type="path"),
            python=dict(type="path"),
            settings=dict(type="str"),
            env_file=dict(type="path"),
            env=dict(type="dict", default={}),
            database=dict(type="str", default="default"),
            app_label=dict(type="str"),
            migration=dict(type="str"),
            fake=dict(type="bool", default=False),
            fake_initial=dict(type="bool", default=False),
            plan_only=dict(type="bool", default=False),
            lock=dict(type="bool", default=True),
            lock_timeout=dict(type="int", default=600),
        ),
        required_one_of=[("virtualenv", "python")],
        mutually_exclusive=[("virtualenv", "python")],
        supports_check_mode=True,
    )
    p = module.params
    if p["migration"] and not p["app_label"]:
        module.fail_json(msg="django_migrate: migration=%r requires app_label (the app it belongs to)" % p["migration"])
    if p["fake"] and p["fake_initial"]:
        module.fail_json(msg="django_migrate: fake and fake_initial are mutually exclusive")
    if p["lock_timeout"] < 0:
        module.fail_json(msg="django_migrate: lock_timeout must be 0 or more seconds, got %d" % p["lock_timeout"])
    if not os.path.isfile(os.path.join(p["project_path"], "manage.py")):
        module.fail_json(msg="django_migrate: project_path %s has no manage.py" % p["project_path"])
    if p["virtualenv"]:
        if not os.access(os.path.join(p["virtualenv"], "bin", "python"), os.X_OK):
            module.fail_json(msg="django_migrate: virtualenv %s has no executable bin/python" % p["virtualenv"])
    elif not os.access(p["python"], os.X_OK) or os.path.isdir(p["python"]):
        module.fail_json(msg="django_migrate: python %s is not an executable interpreter" % p["python"])
    if p["env_file"] and not os.path.isfile(p["env_file"]):
        module.fail_json(msg="django_migrate: env_file %s is not a readable file" % p["env_file"])
    Migrator(module).run()


if __name__ == "__main__":
    main()
