"""library/django_migrate.py, run for real as Ansible runs it (a subprocess with JSON args).

The module migrates the small project in tests/django_migrate_fixtures/project (app "shop":
0001 creates a model, 0002 adds a field, 0003 is a RunPython without reverse; EXTRA_APPS in the
env file adds "failapp", whose 0002 raises, or "slowapp", whose 0001 sleeps two seconds), once on
SQLite and once on a throwaway PostgreSQL cluster started for the session.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import module_run

ROOT = Path(__file__).resolve().parents[1]
PROJECT = Path(__file__).resolve().parent / "django_migrate_fixtures" / "project"
PYTHON = sys.executable  # the project venv: Django and psycopg are installed there
SHOP = ["shop.0001_initial", "shop.0002_item_price", "shop.0003_seed"]
ENV = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")


def module_command(tmp_path: Path, check_mode: bool = False, diff: bool = False, **args) -> list[str]:
    return module_run.module_command("django_migrate", tmp_path, args, check_mode, diff)


def run_module(tmp_path: Path, check_mode: bool = False, diff: bool = False, **args) -> dict:
    return module_run.run_module("django_migrate", tmp_path, args, check_mode, diff, env=ENV)


# --- databases ---------------------------------------------------------------------------------

# pg_cluster (a throwaway PostgreSQL cluster for the session) comes from conftest.py.


class Database:
    """One empty database of one backend, and how to read its django_migrations table."""

    def __init__(self, vendor: str, env: dict, connect):
        self.vendor, self.env, self.connect = vendor, env, connect

    def applied(self) -> list[str]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute("SELECT app, name FROM django_migrations ORDER BY id")
            except Exception:  # no table yet: nothing applied
                return []
            return [f"{app}.{name}" for app, name in cur.fetchall()]
        finally:
            conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Database:
    if request.param == "sqlite":
        path = tmp_path / "db.sqlite3"
        return Database("sqlite", {"DB_ENGINE": "sqlite3", "DB_NAME": str(path)}, lambda: sqlite3.connect(path))
    import psycopg

    cluster = request.getfixturevalue("pg_cluster")
    host, port = cluster.host, cluster.port
    name = "t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    env = {"DB_ENGINE": "postgresql", "DB_NAME": name, "DB_HOST": host, "DB_PORT": str(port), "DB_USER": "postgres"}
    return Database("postgresql", env, lambda: psycopg.connect(host=host, port=port, user="postgres", dbname=name))


def env_file(tmp_path: Path, db: Database, extra_apps: str = "") -> str:
    """A systemd-style env file: comments, blank lines, quoted values."""
    path = tmp_path / f"env-{extra_apps or 'plain'}"
    lines = ["# written by the test", ""]
    for i, (key, value) in enumerate(sorted(dict(db.env, EXTRA_APPS=extra_apps).items())):
        quote = ["'", '"', ""][i % 3] if value else "'"
        lines.append(f"{key}={quote}{value}{quote}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def migrate(tmp_path, db, extra_apps="", check_mode=False, diff=False, **args):
    return run_module(tmp_path, check_mode=check_mode, diff=diff, project_path=str(PROJECT), python=PYTHON,
                      env_file=env_file(tmp_path, db, extra_apps), **args)


# --- tests -------------------------------------------------------------------------------------

def test_check_mode_lists_pending_and_touches_nothing(tmp_path, db):
    result = migrate(tmp_path, db, check_mode=True)
    assert result["_rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["applied"] == []
    assert result["pending"] == SHOP
    assert [step["irreversible"] for step in result["plan"]] == [False, False, True]
    assert result["vendor"] == db.vendor
    assert db.applied() == []


def test_plan_only_reports_without_change(tmp_path, db):
    result = migrate(tmp_path, db, plan_only=True)
    assert result["_rc"] == 0 and result["changed"] is False and result["pending"] == SHOP
    assert "shop.0003_seed" in result["leaves"]  # the state a full migrate of this code reaches
    assert db.applied() == []


def test_apply_then_second_run_is_unchanged(tmp_path, db):
    first = migrate(tmp_path, db)
    assert first["_rc"] == 0, first.get("msg")
    assert first["changed"] is True and first["applied"] == SHOP and first["pending"] == []
    assert "Applying shop.0003_seed... OK" in first["stdout"]
    assert db.applied() == SHOP
    assert "shop.0003_seed" in first["leaves"] and "shop.0002_item_price" not in first["leaves"]
    again = migrate(tmp_path, db)
    assert again["_rc"] == 0 and again["changed"] is False and again["applied"] == [] and again["plan"] == []


def test_apply_without_lock_runs_manage_py(tmp_path, db):
    result = migrate(tmp_path, db, lock=False, settings="testproj.settings")
    assert result["_rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["applied"] == SHOP and db.applied() == SHOP
    assert result["cmd"][1:] == ["manage.py", "migrate", "--noinput", "--database", "default"]


def test_diff_shows_applied_before_and_after(tmp_path, db):
    migrate(tmp_path, db, app_label="shop", migration="0001")
    result = migrate(tmp_path, db, check_mode=True, diff=True)
    assert result["changed"] is True and result["pending"] == SHOP[1:]
    assert result["diff"]["before"] == "shop.0001_initial\n"
    assert result["diff"]["after"] == "".join(m + "\n" for m in SHOP)
    assert db.applied() == SHOP[:1]


def test_backwards_to_0001(tmp_path, db):
    up = migrate(tmp_path, db, app_label="shop", migration="0002")
    assert up["_rc"] == 0 and up["applied"] == SHOP[:2]
    down = migrate(tmp_path, db, app_label="shop", migration="0001")
    assert down["_rc"] == 0, down.get("msg")
    assert down["changed"] is True and down["backwards"] is True
    assert down["applied"] == ["shop.0002_item_price"] and down["irreversible"] == []
    assert db.applied() == SHOP[:1]
    zero = migrate(tmp_path, db, app_label="shop", migration="zero")
    assert zero["_rc"] == 0 and zero["applied"] == ["shop.0001_initial"] and db.applied() == []


def test_backwards_over_irreversible_is_flagged_and_refused(tmp_path, db):
    assert migrate(tmp_path, db)["changed"] is True
    plan = migrate(tmp_path, db, check_mode=True, app_label="shop", migration="0002")
    assert plan["_rc"] == 0 and plan["changed"] is True
    assert plan["irreversible"] == ["shop.0003_seed"] and plan["plan"][0]["backwards"] is True
    assert "a real run will fail" in json.dumps(plan.get("warnings"))  # 2.19 warnings are structured
    real = migrate(tmp_path, db, app_label="shop", migration="0002")
    assert real["_rc"] != 0 and real["failed"] is True
    assert "irreversible" in real["msg"] and "shop.0003_seed" in real["msg"]
    assert real["applied"] == [] and real["changed"] is False
    assert db.applied() == SHOP
    faked = migrate(tmp_path, db, app_label="shop", migration="0002", fake=True)
    assert faked["_rc"] == 0 and faked["applied"] == ["shop.0003_seed"] and db.applied() == SHOP[:2]


@pytest.mark.parametrize("lock", [True, False], ids=["helper", "manage.py"])
def test_failing_migration_is_named_and_earlier_ones_stay(tmp_path, db, lock):
    result = migrate(tmp_path, db, extra_apps="failapp", lock=lock)
    assert result["_rc"] != 0 and result["failed"] is True
    assert result["failed_migration"] == "failapp.0002_boom"
    assert "failapp.0002_boom" in result["msg"] and "boom: this migration always fails" in result["msg"]
    assert "RuntimeError" in result["stderr"]
    assert result["applied"] == SHOP + ["failapp.0001_ok"]
    assert result["pending"] == ["failapp.0002_boom"]
    assert db.applied() == SHOP + ["failapp.0001_ok"]


def test_concurrent_runs_serialize(tmp_path, db):
    """Two hosts at once: the second waits for the lock, then finds nothing to do."""
    args = dict(project_path=str(PROJECT), python=PYTHON, env_file=env_file(tmp_path, db, "slowapp"))
    procs = [subprocess.Popen(module_command(tmp_path, **args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(module_run.parse(out, proc.returncode))
    assert [r["_rc"] for r in results] == [0, 0], [r.get("msg") for r in results]
    assert sorted(r["changed"] for r in results) == [False, True]
    winner = next(r for r in results if r["changed"])
    waiter = next(r for r in results if not r["changed"])
    assert winner["applied"] == SHOP + ["slowapp.0001_slow"] and waiter["applied"] == []
    assert waiter["lock_wait"] > 0.5
    assert db.applied() == SHOP + ["slowapp.0001_slow"]


def test_lock_timeout_fails_clearly(tmp_path, db):
    """Someone else holds the lock: the run gives up after lock_timeout, naming the lock."""
    if db.vendor == "sqlite":
        import fcntl

        holder = open(db.env["DB_NAME"] + ".migrate.lock", "a")
        fcntl.flock(holder, fcntl.LOCK_EX)
        release = holder.close
    else:
        digest = hashlib.sha256(f"django_migrate:{db.env['DB_NAME']}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        holder = db.connect()
        holder.execute("SELECT pg_advisory_lock(%s)", [key])
        release = holder.close
    try:
        started = time.monotonic()
        result = migrate(tmp_path, db, lock_timeout=1)
        assert time.monotonic() - started < 10
    finally:
        release()
    assert result["_rc"] != 0 and "could not obtain the migration lock" in result["msg"]
    assert "lock_timeout=1" in result["msg"] and db.applied() == []


def test_unknown_target_fails_clearly(tmp_path, db):
    result = migrate(tmp_path, db, app_label="shop", migration="0009")
    assert result["_rc"] != 0 and "migration '0009' not found in app 'shop'" in result["msg"]
    result = migrate(tmp_path, db, app_label="nope")
    assert result["_rc"] != 0 and "app_label 'nope'" in result["msg"]


def test_env_overrides_the_env_file(tmp_path):
    """`env` wins over env_file: here it points the run at another database."""
    (tmp_path / "env").write_text(f"DB_NAME={tmp_path / 'live.sqlite3'}\n")
    scratch = tmp_path / "scratch.sqlite3"
    result = run_module(tmp_path, project_path=str(PROJECT), python=PYTHON, env_file=str(tmp_path / "env"),
                        env={"DB_NAME": str(scratch)})
    assert result["_rc"] == 0, result.get("msg")
    assert result["applied"] == SHOP and scratch.exists() and not (tmp_path / "live.sqlite3").exists()


def test_virtualenv_option(tmp_path):
    path = tmp_path / "db.sqlite3"
    env = tmp_path / "env"
    env.write_text(f"DB_NAME={path}\n")
    result = run_module(tmp_path, project_path=str(PROJECT), virtualenv=str(Path(PYTHON).parent.parent),
                        env_file=str(env))
    assert result["_rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["applied"] == SHOP


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(python=PYTHON, migration="0001"), "requires app_label"),
        (dict(python=PYTHON, project_path="/nonexistent"), "project_path /nonexistent has no manage.py"),
        (dict(virtualenv="/tmp"), "virtualenv /tmp has no executable bin/python"),
        (dict(python="/nonexistent/python"), "python /nonexistent/python is not an executable"),
        (dict(python=PYTHON, env_file="/nonexistent/env"), "env_file /nonexistent/env"),
        (dict(python=PYTHON, settings="no.such.settings", env_file=None), "cannot set up Django"),
        ({}, "one of the following is required: virtualenv, python"),
    ],
    ids=["migration-without-app", "no-manage-py", "venv-without-python", "bad-python", "env-file", "bad-settings",
         "no-interpreter"],
)
def test_bad_input_fails_naming_the_option(tmp_path, args, message):
    full = dict(project_path=str(PROJECT), env_file=str(tmp_path / "env"))
    (tmp_path / "env").write_text(f"DB_NAME={tmp_path / 'db.sqlite3'}\n")
    full.update(args)
    full = {k: v for k, v in full.items() if v is not None}
    result = run_module(tmp_path, **full)
    assert result["_rc"] != 0 and result["failed"] is True
    assert message in result["msg"]


def test_ansible_doc_renders_the_documentation():
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "ansible-doc"), "-M", str(module_run.LIBRARY), "django_migrate"],
        capture_output=True, text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "pg_advisory_lock" in proc.stdout and "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout
