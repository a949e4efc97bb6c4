# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The program library/django_migrate.py runs inside the project's own interpreter: it imports
Django from the project's virtualenv, which the module's interpreter cannot. Kept apart from the
module because it is a program of its own, with its own imports and output contract."""

from __future__ import annotations

# Run by the project's interpreter (python -c HELPER '<json args>'), with cwd = project_path.
# It prints one line "RESULT_MARK<json>" last; anything else on stdout is the project's output.
HELPER = r'''
import contextlib, hashlib, io, json, os, sys, time, traceback

MARK = "@@DJANGO_MIGRATE_RESULT@@"
TAIL = 40


class HelperError(Exception):
    pass


def emit(obj):
    sys.__stdout__.write("\n" + MARK + json.dumps(obj) + "\n")
    sys.__stdout__.flush()


def tail(text, n=TAIL):
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


def lock_key(name):
    digest = hashlib.sha256(("django_migrate:%s" % name).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def targets_for(executor, args):
    loader = executor.loader
    app_label, migration = args.get("app_label"), args.get("migration")
    if app_label and app_label not in loader.migrated_apps:
        raise HelperError("app_label %r has no migrations (is it in INSTALLED_APPS?)" % app_label)
    if app_label and migration:
        if migration == "zero":
            return [(app_label, None)]
        try:
            found = loader.get_migration_by_prefix(app_label, migration)
        except KeyError:
            raise HelperError("migration %r not found in app %r" % (migration, app_label))
        except Exception as exc:  # AmbiguityError
            raise HelperError("migration %r of app %r: %s" % (migration, app_label, exc))
        return [(app_label, found.name)]
    leaves = loader.graph.leaf_nodes()
    if app_label:
        return [key for key in leaves if key[0] == app_label]
    return leaves


def state(conn, args):
    from django.db.migrations.executor import MigrationExecutor
    executor = MigrationExecutor(conn)
    conflicts = executor.loader.detect_conflicts()
    if conflicts:
        raise HelperError("conflicting migrations (run makemigrations --merge): %s" % ", ".join(
            "%s: %s" % (app, ", ".join(sorted(names))) for app, names in sorted(conflicts.items())))
    plan = []
    for migration, backwards in executor.migration_plan(targets_for(executor, args)):
        ops = list(migration.operations)
        plan.append({
            "app": migration.app_label,
            "name": migration.name,
            "backwards": bool(backwards),
            "irreversible": any(not op.reversible for op in ops),
            "operations": [op.__class__.__name__ for op in ops],
        })
    applied = sorted("%s.%s" % key for key in executor.loader.applied_migrations)
    leaves = sorted("%s.%s" % key for key in executor.loader.graph.leaf_nodes())
    return plan, applied, leaves


@contextlib.contextmanager
def migrate_lock(conn, args, info):
    if not args.get("lock"):
        info["lock"] = None
        yield
        return
    deadline = time.monotonic() + args["lock_timeout"]
    started = time.monotonic()
    name = conn.settings_dict.get("NAME")
    if conn.vendor == "postgresql":
        key = lock_key(name)
        info["lock"] = "pg_advisory_lock(%d)" % key
        while True:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", [key])
                if cur.fetchone()[0]:
                    break
            if time.monotonic() >= deadline:
                raise HelperError(
                    "could not obtain the migration lock pg_advisory_lock(%d) on database %r within "
                    "lock_timeout=%ss: another migrate is still running" % (key, name, args["lock_timeout"]))
            time.sleep(0.2)
        info["lock_wait"] = round(time.monotonic() - started, 2)
        try:
            yield
        finally:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", [key])
            except Exception:
                conn.close()  # closing the session releases the lock too
    elif conn.vendor == "sqlite" and name and str(name) != ":memory:" and not str(name).startswith("file:"):
        import fcntl
        path = "%s.migrate.lock" % name
        info["lock"] = "flock(%s)" % path
        handle = open(path, "a")
        try:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise HelperError(
                            "could not obtain the migration lock flock(%s) within lock_timeout=%ss: "
                            "another migrate is still running" % (path, args["lock_timeout"]))
                    time.sleep(0.2)
            info["lock_wait"] = round(time.monotonic() - started, 2)
            yield
        finally:
            handle.close()
    else:
        info["lock"] = None
        info["warnings"].append("no migration lock for database vendor %r: concurrent runs are not serialized"
                                % conn.vendor)
        yield


def applied_now(conn):
    from django.db.migrations.recorder import MigrationRecorder
    from django.db.migrations.loader import MigrationLoader
    try:
        if conn.in_atomic_block:
            conn.rollback()
        loader = MigrationLoader(conn)
    except Exception:
        conn.close()
        loader = MigrationLoader(conn)
    return sorted("%s.%s" % key for key in loader.applied_migrations)


def run_migrate(conn, args, info):
    from django.core.management import call_command
    plan, applied, leaves = state(conn, args)
    info.update(plan=plan, applied_before=applied, leaves=leaves)
    if not plan:
        info["ran"] = False
        return
    if plan[0]["backwards"] and not args.get("fake"):
        bad = ["%s.%s" % (m["app"], m["name"]) for m in plan if m["irreversible"]]
        if bad:
            info["ran"] = False
            info["refused"] = bad
            return
    positional = [x for x in (args.get("app_label"), args.get("migration")) if x]
    out, err = io.StringIO(), io.StringIO()
    info["ran"] = True
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            call_command("migrate", *positional, database=args["database"], interactive=False,
                         fake=bool(args.get("fake")), fake_initial=bool(args.get("fake_initial")),
                         verbosity=1, stdout=out, stderr=err)
    except BaseException as exc:
        info["exception"] = "%s: %s" % (exc.__class__.__name__, exc)
        err.write(traceback.format_exc())
        info["applied_after"] = applied_now(conn)
    info["stdout"] = out.getvalue()
    info["stderr"] = err.getvalue()
    if "exception" not in info:
        info["remaining"] = state(conn, args)[0]


def main():
    args = json.loads(sys.argv[1])
    info = {"warnings": []}
    try:
        project_out = io.StringIO()
        with contextlib.redirect_stdout(project_out):
            try:
                import django
                django.setup()
            except Exception as exc:
                raise HelperError("cannot set up Django (DJANGO_SETTINGS_MODULE=%s): %s: %s\n%s" % (
                    os.environ.get("DJANGO_SETTINGS_MODULE"), exc.__class__.__name__, exc,
                    tail(traceback.format_exc(), 15)))
            from django.db import connections
            from django.db.utils import ConnectionDoesNotExist
            try:
                conn = connections[args["database"]]
            except ConnectionDoesNotExist:
                raise HelperError("database alias %r is not in DATABASES" % args["database"])
            info["vendor"] = conn.vendor
            info["django"] = django.get_version()
            if args["mode"] == "plan":
                info["plan"], info["applied_before"], info["leaves"] = state(conn, args)
            else:
                with migrate_lock(conn, args, info):
                    run_migrate(conn, args, info)
    except HelperError as exc:
        info["error"] = str(exc)
    except Exception as exc:
        info["error"] = "%s: %s\n%s" % (exc.__class__.__name__, exc, tail(traceback.format_exc(), 15))
    info["project_output"] = project_out.getvalue()
    emit(info)


main()
'''
