# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""PostgreSQL: connections (as db_os_user when running as root), pg_dump/pg_restore, the tables and
their row counts, Django's applied migrations, and the administration a restore needs."""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import time

from .config import Config
from .errors import BackupError

LIST_SETTINGS = {"search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"}

TABLES_SQL = r"""
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%%' AND n.nspname NOT LIKE 'pg\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 1, 2
"""


class Postgres:
    """How to reach the server: host/port/user/password, as db_os_user when running as root."""

    def __init__(self, cfg: Config, warnings: list):
        self.cfg = cfg
        self.host = cfg.db_host
        self.port = cfg.db_port
        self.user = cfg.db_user
        self.os_user = None
        wanted = cfg.db_os_user
        if os.geteuid() == 0:
            if wanted is None and self.host.startswith("/"):
                try:
                    pwd.getpwnam("postgres")
                    wanted = "postgres"
                except KeyError:
                    wanted = None
            if wanted and wanted != "root":
                try:
                    self.os_user = pwd.getpwnam(wanted)
                except KeyError:
                    raise BackupError("db_os_user %r does not exist on this host" % wanted)
        elif wanted:
            warnings.append("db_os_user=%s is honoured only when running as root; connecting as %s"
                            % (wanted, pwd.getpwuid(os.geteuid()).pw_name))
        self.bindir = None
        self.server_version_num = None

    def who(self) -> str:
        where = ("socket %s" % self.host) if self.host.startswith("/") else ("%s:%s" % (self.host, self.port))
        text = "user %s on %s" % (self.user, where)
        if self.os_user:
            text += " (as OS user %s)" % self.os_user.pw_name
        return text

    def connect(self, dbname: str):
        try:
            import psycopg2
        except ImportError as exc:
            raise BackupError("psycopg2 is not installed for %s (apt-get install python3-psycopg2): %s"
                              % (sys.executable, exc))
        kwargs = dict(dbname=dbname, host=self.host, port=self.port, user=self.user, connect_timeout=15,
                      application_name="django_stack_backup")
        kwargs.update(self.ssl())
        if self.cfg.db_password:
            kwargs["password"] = self.cfg.db_password
        saved = None
        if self.os_user:
            saved = (os.getegid(), os.geteuid())
            os.setegid(self.os_user.pw_gid)
            os.seteuid(self.os_user.pw_uid)
        try:
            conn = psycopg2.connect(**kwargs)
        except psycopg2.Error as exc:
            raise BackupError("cannot connect to PostgreSQL database %s as %s: %s"
                              % (dbname, self.who(), str(exc).strip())) from None
        finally:
            if saved:
                os.seteuid(saved[1])
                os.setegid(saved[0])
        if self.server_version_num is None:
            self.server_version_num = conn.server_version
        return conn

    def ssl(self) -> dict:
        """libpq's TLS settings (db_sslmode, db_sslrootcert), for a server on another host: verify-full
        checks its certificate against the CA and the address connected to."""
        return {name: getattr(self.cfg, "db_" + name) for name in ("sslmode", "sslrootcert")
                if getattr(self.cfg, "db_" + name, None)}

    def admin(self):
        """An autocommit connection to db_maintenance_name, for CREATE DATABASE, renames and drops."""
        conn = self.connect(self.cfg.db_maintenance_name)
        conn.autocommit = True
        return conn

    def env(self) -> dict:
        env = dict(os.environ, PGAPPNAME="django_stack_backup", PGCONNECT_TIMEOUT="15")
        for name in ("PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS", "PGSSLMODE",
                     "PGSSLROOTCERT"):
            env.pop(name, None)
        # pg_dump and pg_restore take the same TLS settings as the connections here.
        for name, value in self.ssl().items():
            env["PG" + name.upper()] = value
        if self.cfg.db_password:
            env["PGPASSWORD"] = self.cfg.db_password
        if self.os_user:
            env.update(HOME=self.os_user.pw_dir, USER=self.os_user.pw_name, LOGNAME=self.os_user.pw_name)
        return env

    def popen_kwargs(self) -> dict:
        kwargs = dict(env=self.env(), cwd="/")
        if self.os_user:
            kwargs.update(user=self.os_user.pw_uid, group=self.os_user.pw_gid, extra_groups=[])
        return kwargs

    def conn_args(self, dbname: str) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, "-w", "-d", dbname]

    def tool(self, name: str) -> str:
        """pg_dump/pg_restore: from pg_bin_dir, else the newest Debian bin dir not older than the server."""
        if self.cfg.pg_bin_dir:
            path = os.path.join(self.cfg.pg_bin_dir, name)
            if not os.access(path, os.X_OK):
                raise BackupError("pg_bin_dir %s has no %s" % (self.cfg.pg_bin_dir, name))
            return path
        major = (self.server_version_num or 0) // 10000
        candidates = []
        base = "/usr/lib/postgresql"
        if os.path.isdir(base):
            for entry in os.listdir(base):
                if entry.isdigit() and int(entry) >= major and os.access(os.path.join(base, entry, "bin", name),
                                                                         os.X_OK):
                    candidates.append(int(entry))
        if candidates:
            return os.path.join(base, str(min(candidates)), "bin", name)
        found = shutil.which(name)
        if not found:
            raise BackupError("%s not found (install postgresql-client-%d, or set pg_bin_dir)" % (name, major or 15))
        return found


# --- what a database holds ----------------------------------------------------------------------------

def list_tables(cur) -> list[tuple[str, str]]:
    cur.execute(TABLES_SQL)
    return [(s, t) for s, t in cur.fetchall()]


def count_rows(cur, tables, savepoint: bool = False) -> dict:
    """Exact row count of each table. With SAVEPOINT, an error does not end the transaction (whose
    exported snapshot pg_dump may not have imported yet)."""
    from psycopg2 import sql
    counts = {}
    for schema, table in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        try:
            if savepoint:
                cur.execute("SAVEPOINT row_count")
            cur.execute(query)
            counts["%s.%s" % (schema, table)] = cur.fetchone()[0]
            if savepoint:
                cur.execute("RELEASE SAVEPOINT row_count")
        except Exception as exc:
            if savepoint:
                try:
                    cur.execute("ROLLBACK TO SAVEPOINT row_count")
                except Exception:
                    pass
            raise BackupError("counting the rows of table %s.%s failed: %s" % (schema, table, str(exc).strip()))
    return counts


def applied_migrations(cur) -> list[str] | None:
    cur.execute("SELECT to_regclass('django_migrations') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT app, name FROM django_migrations ORDER BY id")
    return ["%s.%s" % row for row in cur.fetchall()]


# --- administration (on an autocommit connection to the maintenance database) -------------------------

def ident(name: str):
    from psycopg2 import sql
    return sql.Identifier(name)


def short_name(base: str, suffix: str) -> str:
    """BASE + SUFFIX within PostgreSQL's 63-byte identifier limit (BASE is cut, on a character boundary)."""
    room = 63 - len(suffix.encode())
    raw = base.encode()[:room].decode("utf-8", "ignore")
    return raw + suffix


def db_exists(cur, name: str) -> bool:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
    return cur.fetchone() is not None


def terminate(cur, name: str) -> None:
    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid()", [name])


def drop_db(cur, name: str) -> None:
    from psycopg2 import sql
    cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident(name)))
    for attempt in range(10):
        terminate(cur, name)
        try:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident(name)))
            return
        except Exception as exc:
            if getattr(exc, "pgcode", None) != "55006" or attempt == 9:  # object_in_use
                raise
            time.sleep(0.3)


def copy_database_settings(cur, live: str, target: str, owner: str) -> None:
    """The live database's privileges granted to other roles and its ALTER DATABASE ... SET settings."""
    from psycopg2 import sql
    cur.execute("SELECT a.privilege_type, r.rolname FROM pg_database d, aclexplode(d.datacl) a "
                "JOIN pg_roles r ON r.oid = a.grantee WHERE d.datname = %s AND r.rolname <> %s", [live, owner])
    for privilege, role in cur.fetchall():
        cur.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}").format(sql.SQL(privilege), ident(target), ident(role)))
    cur.execute("SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                "WHERE d.datname = %s AND s.setrole = 0", [live])
    for (setting,) in cur.fetchall():
        name, _, value = setting.partition("=")
        values = [v.strip() for v in value.split(",")] if name in LIST_SETTINGS else [value]
        cur.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            ident(target), sql.Identifier(name), sql.SQL(", ").join(sql.Literal(v) for v in values)))
