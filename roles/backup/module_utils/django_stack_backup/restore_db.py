# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The database part of a restore: pg_restore into a new database next to the live one (swap,
scratch) in a session that is never a superuser's (restore_session), the row counts and the applied
migrations checked against the manifest, then (swap) the live database renamed out of the way (kept)
and the new one renamed in. The live database is never written to."""

from __future__ import annotations

import shutil
import time

from .config import Config
from .errors import BackupError
from .pipeline import feed_from_file
from .postgres import Postgres, applied_migrations, copy_database_settings, count_rows, db_exists, drop_db, ident, \
    list_tables, short_name, terminate
from .restore_session import RestoreSession
from .util import Timer, human

# The comment on every database a restore creates: the only databases a restore ever drops.
RESTORE_MARK = "django-stack restore"


class DatabaseRestore:
    def __init__(self, cfg: Config, pg: Postgres, timer: Timer, warnings: list, stamp: str, check_mode: bool):
        self.cfg, self.pg, self.timer, self.warnings = cfg, pg, timer, warnings
        self.stamp = stamp
        self.check_mode = check_mode
        self.created = None  # a database made by this run and not handed over yet: dropped on failure

    def check_server_version(self, manifest: dict) -> None:
        """Refuse, before anything is downloaded, a dump of a newer PostgreSQL major than this server's:
        pg_restore cannot restore it (the way across releases is forward: an older set onto a newer server)."""
        dumped = str(manifest.get("database", {}).get("server_version") or "")
        dumped_major = int(dumped.split(".")[0]) if dumped.split(".")[0].isdigit() else 0
        conn = self.pg.admin()
        conn.close()
        major = (self.pg.server_version_num or 0) // 10000
        if dumped_major > major:
            raise BackupError("set %s was dumped from PostgreSQL %s; this server (%s) runs PostgreSQL %d, which cannot "
                              "restore a dump of a newer major. Restore it onto a server running PostgreSQL %d or later "
                              "(a fresh server of that Debian release); nothing was downloaded or changed"
                              % (manifest.get("set_id"), dumped, self.pg.who(), major, dumped_major))

    def check_data_directory(self, size: int) -> None:
        """A warning when a local server's data directory has less room than the source database took."""
        if not self.pg.host.startswith("/"):
            return
        try:
            admin = self.pg.admin()
            try:
                cur = admin.cursor()
                cur.execute("SELECT current_setting('data_directory')")
                path = cur.fetchone()[0]
            finally:
                admin.close()
            free = shutil.disk_usage(path).free
        except Exception:  # not a superuser, or not this host's data directory: nothing to say
            return
        if free < size:
            self.warnings.append("the data directory %s has %s free; the source database took %s (a restore is "
                                 "usually smaller, and pg_restore fails cleanly if it runs out)"
                                 % (path, human(free), human(size)))

    def restore(self, manifest: dict, path: str | None, identity: str | None) -> dict:
        """The report of what was (in check mode: would be) restored where."""
        report = self.prepare(manifest)
        if self.check_mode:
            return report
        self.pg_restore(manifest, path, identity, report)
        self.verify(manifest, report)
        return report

    def check_access(self) -> None:
        """Before anything is downloaded: the owner role exists and db_user may do what this restore needs."""
        admin = self.pg.admin()
        try:
            self._owner_and_props(admin.cursor())
        finally:
            admin.close()

    def _owner_and_props(self, cur) -> tuple[str, tuple | None]:
        """The owner of the restored database and the live database's (owner, encoding, collate, ctype),
        after checking that db_user may restore for that owner (and, db_create, create and rename)."""
        cfg = self.cfg
        live = cfg.db_name
        props = None
        if live and db_exists(cur, live):
            cur.execute("SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
                        "FROM pg_database WHERE datname = %s", [live])
            props = cur.fetchone()
        owner = cfg.db_owner or (props[0] if props else cfg.db_user)
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [owner])
        if cur.fetchone() is None:
            raise BackupError("the owner role %r of the restored database does not exist (db_owner); create it "
                              "first (the postgresql role does)" % owner)
        if cfg.db_create:
            cur.execute("SELECT rolsuper OR (rolcreatedb AND pg_has_role(current_user, %s, 'MEMBER')) "
                        "FROM pg_roles WHERE rolname = current_user", [owner])
            if not cur.fetchone()[0]:
                raise BackupError(
                    "db_user %s can neither create a database for %s nor rename the live one: a restore builds the "
                    "new database beside the live one and swaps it in. Connect as a role with CREATEDB that is %s or "
                    "a member of it, or as postgres on the database host, or have the superuser make the database "
                    "(db_create=false, as the backup role does); nothing was downloaded or changed"
                    % (self.pg.user, owner, owner))
        else:
            cur.execute("SELECT rolsuper OR pg_has_role(current_user, %s, 'MEMBER') FROM pg_roles "
                        "WHERE rolname = current_user", [owner])
            if not cur.fetchone()[0]:
                raise BackupError(
                    "db_user %s is neither the owner role %s nor a member of it: the dump is restored as %s into the "
                    "database the PostgreSQL superuser made for it (db_create=false). Connect as %s, or grant it the "
                    "role on the database host; nothing was downloaded or changed" % (self.pg.user, owner, owner, owner))
        return owner, props

    def prepare(self, manifest: dict) -> dict:
        """Decide the owner and the target database; outside check mode, create the target (swap, scratch), or
        with db_create=false check the one the superuser made (exists, marked, owned by the owner, empty)."""
        from psycopg2 import sql
        cfg = self.cfg
        mode = cfg.db_restore_mode
        live = cfg.db_name
        admin = self.pg.admin()
        try:
            cur = admin.cursor()
            owner, props = self._owner_and_props(cur)
            if mode == "scratch":
                target = cfg.db_scratch_name
            else:
                target = short_name(live, "_restore_" + manifest["set_id"].lower().replace("-", "_"))
            report = dict(mode=mode, name=live, restored_into=target, owner=owner, previous=None)
            exists = db_exists(cur, target)
            if exists:
                # A leftover of an earlier run, the scratch database of the last drill, or (db_create=false)
                # the database the superuser made for this run: only a database a restore made (and marked)
                # is ever restored into or dropped.
                cur.execute("SELECT shobj_description(oid, 'pg_database'), pg_get_userbyid(datdba) FROM pg_database "
                            "WHERE datname = %s", [target])
                mark, target_owner = cur.fetchone()
                if not (mark or "").startswith(RESTORE_MARK):
                    raise BackupError(
                        "database %s exists and was not made by a restore: refusing to %s it%s. Name a "
                        "database that does not exist" % (target, "drop" if cfg.db_create else "restore into",
                                                          " (db_scratch_name)" if mode == "scratch" else ""))
            if not cfg.db_create:
                if not exists and not self.check_mode:
                    raise BackupError("database %s does not exist: with db_create=false the PostgreSQL superuser "
                                      "creates it first (owner %s, comment %r); nothing was restored"
                                      % (target, owner, RESTORE_MARK))
                if exists and target_owner != owner:
                    raise BackupError("database %s belongs to %s, not to the owner role %s: refusing to restore into "
                                      "it" % (target, target_owner, owner))
            if self.check_mode:
                report["would_create" if cfg.db_create else "would_restore_into"] = target
                return report
            if cfg.db_create:
                if exists:
                    drop_db(cur, target)
                create = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(ident(target), ident(owner))
                if props:
                    create = sql.SQL("{} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                        create, sql.Literal(props[1]), sql.Literal(props[2]), sql.Literal(props[3]))
                cur.execute(create)
                self.created = target
            else:
                self.check_empty(target)
            cur.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                ident(target), sql.Literal("%s of set %s" % (RESTORE_MARK, manifest["set_id"]))))
            cur.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(ident(target)))
            if props:
                copy_database_settings(cur, live, target, owner)
            return report
        finally:
            admin.close()

    def check_empty(self, target: str) -> None:
        """The superuser's new database holds no table yet (a restore into data would mix two sets)."""
        conn = self.pg.connect(target)
        try:
            tables = list_tables(conn.cursor())
        finally:
            conn.close()
        if tables:
            raise BackupError("database %s already holds tables (%s): a restore needs the empty database the "
                              "superuser made for it; nothing was restored"
                              % (target, ", ".join("%s.%s" % t for t in tables[:5])))

    def pg_restore(self, manifest: dict, path: str, identity: str | None, report: dict) -> None:
        started = time.monotonic()
        target, owner = report["restored_into"], report["owner"]
        session = RestoreSession(self.pg, owner, self.stamp)
        try:
            conn_args, env = session.open(target)
            report["session_user"] = session.user
            cmd = [self.pg.tool("pg_restore"), "--exit-on-error", "--no-owner", "--role=" + owner] + conn_args
            problems = feed_from_file(path, identity, "pg_restore", cmd, **dict(self.pg.popen_kwargs(), env=env))
        finally:
            problem = session.close()
            if problem:
                self.warnings.append(problem)
        if problems:
            raise BackupError("pg_restore of set %s into database %s failed, nothing was swapped in: %s"
                              % (manifest["set_id"], target, "; ".join(problems)))
        self.timer.mark("db_restore", started)

    def verify(self, manifest: dict, report: dict) -> None:
        """The row count of every table and the applied migrations equal the manifest's (then ANALYZE,
        unless db_analyze is false)."""
        started = time.monotonic()
        target = report["restored_into"]
        conn = self.pg.connect(target)
        try:
            conn.autocommit = True
            cur = conn.cursor()
            counts = count_rows(cur, list_tables(cur))
            migrations = applied_migrations(cur)
            if self.cfg.db_analyze:
                cur.execute("ANALYZE")
        finally:
            conn.close()
        expected = manifest["database"]["tables"]
        diff = []
        for table in sorted(set(expected) | set(counts)):
            if expected.get(table) != counts.get(table):
                diff.append("%s: %s rows restored, %s in the backup" % (table, counts.get(table, "no table"),
                                                                         expected.get(table, "no table")))
        wanted = manifest["database"].get("applied_migrations", migrations)
        if wanted != migrations:
            missing = [m for m in wanted or [] if m not in (migrations or [])]
            extra = [m for m in migrations or [] if m not in (wanted or [])]
            diff.append("applied migrations differ (missing: %s; not in the backup: %s)"
                        % (", ".join(missing[:10]) or "none", ", ".join(extra[:10]) or "none"))
        if diff:
            raise BackupError("database %s differs from the manifest of set %s, nothing was swapped in: %s"
                              % (target, manifest["set_id"], "; ".join(diff[:20])))
        self.timer.mark("db_verify", started)
        report.update(tables=len(counts), rows=sum(counts.values()), table_rows=counts,
                      applied_migrations=len(migrations or []))

    def swap(self, report: dict) -> None:
        """The live database renamed to <name>_before_<time> (kept), the restored one to the live name."""
        from psycopg2 import sql
        live, new = report["name"], report["restored_into"]
        admin = self.pg.admin()
        try:
            cur = admin.cursor()
            previous = None
            if db_exists(cur, live):
                previous = short_name(live, "_before_" + self.stamp)
                cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident(live)))
                try:
                    for attempt in range(20):
                        terminate(cur, live)
                        try:
                            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(live),
                                                                                         ident(previous)))
                            break
                        except Exception as exc:
                            if getattr(exc, "pgcode", None) != "55006" or attempt == 19:
                                raise
                            time.sleep(0.25)
                except Exception as exc:
                    cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident(live)))
                    raise BackupError("cannot rename the live database %s out of the way (%s): the restored copy "
                                      "stays in %s" % (live, str(exc).strip(), new))
                cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident(previous)))
            try:
                cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(new), ident(live)))
            except Exception as exc:
                if previous:
                    cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(previous), ident(live)))
                raise BackupError("cannot rename the restored database %s to %s (%s); the live database was put "
                                  "back" % (new, live, str(exc).strip()))
            # Live now: no longer a restore's database, which a later run may drop.
            cur.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(ident(live)))
            self.created = None
            report["previous"] = previous
        finally:
            admin.close()

    def keep(self) -> None:
        """The run succeeded: what it created stays (the scratch database of a drill)."""
        self.created = None

    def discard(self) -> str | None:
        """Drop the half-restored database; what failed, if anything."""
        name, self.created = self.created, None
        if not (name and self.cfg.db_restore_mode in ("swap", "scratch")):
            return None
        try:
            admin = self.pg.admin()
            try:
                drop_db(admin.cursor(), name)
            finally:
                admin.close()
        except Exception as exc:
            return "could not drop the partial restore database %s: %s" % (name, exc)
        return None
