# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The session pg_restore runs the dump's SQL in: never a superuser.

`pg_restore --role=<owner>` is only a SET ROLE, which the SQL of a planted or tampered dump can undo
(RESET ROLE, or a function that runs it during the restore). So when the restore's own connection is
a superuser's (the postgres OS user over the local socket, as on the database host), pg_restore logs
in as a temporary role made for this run: NOSUPERUSER, no other attribute, a member of the owner
role only, a random password known only to this process (the server gets its SCRAM verifier, never
the password), valid for a day, dropped when the restore ends. When the connection is already a
non-superuser's (the app's role over TCP), pg_restore uses it as it is."""

from __future__ import annotations

import datetime as dt
import secrets

from .errors import BackupError
from .postgres import Postgres, ident

# The comment on every role a restore creates: the only roles a restore ever drops.
ROLE_MARK = "django-stack restore session"
ROLE_PREFIX = "django_stack_restore_"


class RestoreSession:
    """open() -> (pg_restore's connection arguments, its environment); close() -> a problem or None."""

    def __init__(self, pg: Postgres, owner: str, stamp: str):
        self.pg, self.owner, self.stamp = pg, owner, stamp
        self.role = None  # the temporary role, while it exists
        self.user = None  # who pg_restore logs in as

    def open(self, target: str) -> tuple[list[str], dict]:
        from psycopg2 import sql
        from psycopg2.extensions import encrypt_password
        admin = self.pg.admin()
        try:
            cur = admin.cursor()
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            if not cur.fetchone()[0]:
                self.user = self.pg.user
                return self.pg.conn_args(target), self.pg.env()
            self._drop_expired(cur)
            name = ROLE_PREFIX + self.stamp + "_" + secrets.token_hex(3)
            password = secrets.token_urlsafe(32)
            until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S+00")
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                                "INHERIT PASSWORD {} VALID UNTIL {}").format(
                ident(name), sql.Literal(encrypt_password(password, name, admin, "scram-sha-256")),
                sql.Literal(until)))
            self.role = name
            cur.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(ident(name), sql.Literal(ROLE_MARK)))
            cur.execute(sql.SQL("GRANT {} TO {}").format(ident(self.owner), ident(name)))
        finally:
            admin.close()
        # Over TCP even when the restore's own connection is the local socket: there, peer
        # authentication maps OS users to roles, and no OS user has this role's name.
        host = "127.0.0.1" if self.pg.host.startswith("/") else self.pg.host
        self._probe(host, name, password, target)
        self.user = name
        env = self.pg.env()
        env["PGPASSWORD"] = password
        return ["-h", host, "-p", str(self.pg.port), "-U", name, "-w", "-d", target], env

    def _probe(self, host: str, name: str, password: str, target: str) -> None:
        """Log in as the role once, so a refusal is reported as what it is, before pg_restore runs."""
        import psycopg2
        try:
            conn = psycopg2.connect(dbname=target, host=host, port=self.pg.port, user=name, password=password,
                                    connect_timeout=15, application_name="django_stack_backup", **self.pg.ssl())
        except psycopg2.Error as exc:
            raise BackupError(
                "the restore session (temporary role %s, not a superuser) cannot log in to %s:%s: %s. pg_hba.conf "
                "needs a scram-sha-256 'host' line for it from that address (the postgresql role's default has "
                "one for 127.0.0.1); nothing was restored" % (name, host, self.pg.port, str(exc).strip())) from None
        try:
            cur = conn.cursor()
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = session_user")
            if cur.fetchone()[0]:
                raise BackupError("the restore session's role %s is a superuser: refusing to restore" % name)
        finally:
            conn.close()

    @staticmethod
    def _drop_expired(cur) -> None:
        """Roles of earlier restores that could not drop them (a killed run), once they expired."""
        from psycopg2 import sql
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s AND rolvaliduntil < now() "
                    "AND shobj_description(oid, 'pg_authid') = %s", [ROLE_PREFIX + "%", ROLE_MARK])
        for (name,) in cur.fetchall():
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(name)))

    def close(self) -> str | None:
        """Drop the temporary role (it owns nothing: every object belongs to the owner); what failed, if anything."""
        from psycopg2 import sql
        name, self.role = self.role, None
        if not name:
            return None
        try:
            admin = self.pg.admin()
            try:
                cur = admin.cursor()
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name])
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(name)))
            finally:
                admin.close()
        except Exception as exc:
            return ("could not drop the restore session's role %s (it expires within a day, and the next restore "
                    "drops it): %s" % (name, str(exc).strip()))
        return None
