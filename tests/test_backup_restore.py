"""django_restore (the backup role's module), run for real: swap, scratch, the session that is never a
superuser's, the migrations checked, onto a fresh server, over TCP as the owner role, encrypted sets.
See backup_support.py for how."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from backup_support import (COUNTS, MIGRATIONS, OWNER, OWNER_PASSWORD, PREFIX, ansible_env, backup, media_digest, play, run,
                            run_playbook)

pytestmark = pytest.mark.usefixtures("backup_host_tools")


def test_restore_swap_brings_back_rows_and_media(env):
    before_rows = env.sql("SELECT id, name, price::text, created::text FROM shop_item WHERE id IN (1, 5, 250, 500) "
                          "ORDER BY id")
    before_seq = env.sql("SELECT last_value FROM shop_item_id_seq")
    before_media = media_digest(env.media)
    set_id = backup(env)["set_id"]
    env.change_live_data()
    changed_counts = env.counts()
    assert changed_counts != COUNTS

    download = env.tmp / "download"
    download.mkdir()
    args = env.args(media_root=str(env.media), download_dir=str(download))
    plan = run(env.tmp, "django_restore", check=True, **args)
    assert plan["_rc"] == 0, plan.get("msg")
    assert plan["changed"] is True and plan["set_id"] == set_id
    assert [k.rsplit("/", 1)[1] for k in plan["would_download"]] == ["db.dump", "media.tar"]
    assert env.counts() == changed_counts and env.databases() == [env.db]

    app_session = env.cluster.connect(env.db)  # the app is still connected: the swap must cut it off
    try:
        result = run(env.tmp, "django_restore", **args)
    finally:
        app_session.close()
    assert result["_rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["set_id"] == set_id
    db = result["database"]
    assert db["mode"] == "swap" and db["name"] == env.db and db["owner"] == OWNER
    assert db["table_rows"] == COUNTS and db["rows"] == sum(COUNTS.values()) and db["tables"] == 4
    assert db["previous"].startswith(env.db + "_before_")
    assert env.databases() == sorted([env.db, db["previous"]])
    assert env.counts() == COUNTS
    assert env.sql("SELECT id, name, price::text, created::text FROM shop_item WHERE id IN (1, 5, 250, 500) "
                   "ORDER BY id") == before_rows
    assert env.sql("SELECT last_value FROM shop_item_id_seq") == before_seq
    assert env.sql("SELECT to_regclass('after_backup')") == [(None,)]
    assert env.sql("SELECT app || '.' || name FROM django_migrations ORDER BY id") == [(m,) for m in MIGRATIONS]
    assert env.sql(f"SELECT pg_get_userbyid(datdba), datacl::text FROM pg_database WHERE datname = '{env.db}'",
                   "postgres")[0][0] == OWNER
    acl = env.sql(f"SELECT datacl::text FROM pg_database WHERE datname = '{env.db}'", "postgres")[0][0]
    assert acl is not None and not any(e.startswith("=") for e in acl.strip("{}").split(","))  # nothing for PUBLIC
    assert env.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'shop_item'") == [(OWNER,)]
    assert env.counts(db["previous"]) == changed_counts  # the previous database is kept as it was

    media = result["media"]
    assert media["mode"] == "swap" and media["files"] == 3 and media["path"] == str(env.media)
    assert media_digest(env.media) == before_media
    assert (env.media / "empty").is_dir()
    assert {(p.stat().st_uid, p.stat().st_gid) for p in [env.media, *env.media.rglob("*")]} == \
        {(65534, 65534)}  # nobody:nogroup, as the live media were
    previous = Path(media["previous"])
    assert previous.parent == env.media.parent and (previous / "new-upload.bin").read_bytes() == b"new"
    assert list(download.iterdir()) == []  # the downloads were removed
    assert set(result["timings"]) >= {"download", "db_restore", "media_restore", "swap", "total"}


def test_no_mode_writes_into_the_live_database(env):
    """in_place (pg_restore --clean into the live database) was removed: refused, naming the option."""
    backup(env)
    result = run(env.tmp, "django_restore", db_restore_mode="in_place", media_restore_mode="skip",
                 download_dir=str(env.tmp), **env.args())
    assert result["_rc"] != 0 and "db_restore_mode must be one of: swap, scratch, skip" in result["msg"]
    assert env.databases() == [env.db]


# Runs for every row the restore copies in, in the session pg_restore logged in as: a dump whose SQL
# could reset pg_restore's SET ROLE would, in a superuser's session, be a superuser's.
SESSION_PROBE = """
CREATE FUNCTION restore_session_probe() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
    RAISE EXCEPTION 'the restore session % is a superuser', session_user;
  END IF;
  RETURN true;
END $$;
CREATE TABLE probed (id int PRIMARY KEY, CHECK (restore_session_probe()));
INSERT INTO probed SELECT generate_series(1, 3);
"""


def restore_roles(env) -> list:
    return env.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'django\\_stack\\_restore\\_%'", "postgres")


def test_the_dump_never_runs_in_a_superuser_session(env):
    """Connected as postgres (a superuser, as on the database host), the dump's SQL still runs as a
    temporary role that is no superuser, dropped afterwards."""
    with env.cluster.connect(env.db, user=OWNER) as conn:  # the app's role makes the probed table
        conn.execute(SESSION_PROBE)
    set_id = backup(env)["set_id"]
    env.change_live_data()
    result = run(env.tmp, "django_restore", media_restore_mode="skip", download_dir=str(env.tmp), **env.args())
    assert result["_rc"] == 0, result.get("msg")
    assert result["set_id"] == set_id and env.counts() == COUNTS
    assert env.sql("SELECT count(*) FROM probed") == [(3,)]
    assert re.fullmatch(r"django_stack_restore_\d{14}_[0-9a-f]{6}", result["database"]["session_user"])
    assert restore_roles(env) == []
    assert result["database"]["applied_migrations"] == len(MIGRATIONS)


def test_restore_checks_the_applied_migrations(env):
    """A set whose database does not hold the migrations its manifest lists is never swapped in."""
    from backup_support import fake_set

    source = backup(env)["set_id"]
    env.change_live_data()
    changed_counts = env.counts()
    tampered = source[:9] + "000001Z" + source[16:]  # earlier today: not the newest

    def edit(manifest):
        manifest["database"]["applied_migrations"] = manifest["database"]["applied_migrations"] + ["shop.0003_x"]
    fake_set(env, source, tampered, edit=edit)
    result = run(env.tmp, "django_restore", backup_set=tampered, media_restore_mode="skip", download_dir=str(env.tmp),
                 **env.args())
    assert result["_rc"] != 0
    assert "applied migrations differ (missing: shop.0003_x; not in the backup: none)" in result["msg"]
    assert "nothing was swapped in" in result["msg"]
    assert env.counts() == changed_counts and env.databases() == [env.db] and restore_roles(env) == []


def test_restore_scratch_leaves_the_live_data_alone(env):
    before_media = media_digest(env.media)
    backup(env)
    env.change_live_data()
    changed_counts, changed_media = env.counts(), media_digest(env.media)
    scratch_dir = env.tmp / "drill" / "media"
    result = run(env.tmp, "django_restore", db_restore_mode="scratch", db_scratch_name=env.db + "_drill",
                 media_restore_mode="scratch", media_scratch_dir=str(scratch_dir), download_dir=str(env.tmp),
                 **env.args())
    assert result["_rc"] == 0, result.get("msg")
    assert result["database"]["restored_into"] == env.db + "_drill" and result["database"]["previous"] is None
    assert env.counts(env.db + "_drill") == COUNTS
    assert env.counts() == changed_counts and media_digest(env.media) == changed_media
    assert media_digest(scratch_dir) == before_media
    # a second drill replaces the scratch database
    again = run(env.tmp, "django_restore", db_restore_mode="scratch", db_scratch_name=env.db + "_drill",
                media_restore_mode="skip", download_dir=str(env.tmp), **env.args())
    assert again["_rc"] == 0, again.get("msg")
    assert env.counts(env.db + "_drill") == COUNTS and env.databases() == [env.db, env.db + "_drill"]


def test_a_drill_never_drops_a_database_it_did_not_make(env):
    """db_scratch_name naming another live database (not the app's own, which the config refuses)."""
    backup(env)
    other = env.db + "_billing"
    env.sql(f"CREATE DATABASE {other}", "postgres")
    env.sql("CREATE TABLE invoices (id int); INSERT INTO invoices VALUES (1), (2)", other)
    result = run(env.tmp, "django_restore", db_restore_mode="scratch", db_scratch_name=other,
                 media_restore_mode="skip", download_dir=str(env.tmp), **env.args())
    assert result["_rc"] != 0
    assert f"database {other} exists and was not made by a restore" in result["msg"], result["msg"]
    assert "db_scratch_name" in result["msg"]
    assert env.sql("SELECT count(*) FROM invoices", other) == [(2,)]
    # the app's database after a swap restore is live again: a later drill naming it is refused too
    swapped = run(env.tmp, "django_restore", media_restore_mode="skip", download_dir=str(env.tmp), **env.args())
    assert swapped["_rc"] == 0, swapped.get("msg")
    previous = swapped["database"]["previous"]
    refused = run(env.tmp, "django_restore", db_restore_mode="scratch", db_scratch_name=previous,
                  media_restore_mode="skip", download_dir=str(env.tmp), **env.args())
    assert refused["_rc"] != 0 and "was not made by a restore" in refused["msg"], refused.get("msg")


def test_restore_onto_a_fresh_server(env):
    """Disaster recovery: neither the database nor the media directory exists any more."""
    before_media = media_digest(env.media)
    set_id = backup(env)["set_id"]
    env.sql(f"DROP DATABASE {env.db} WITH (FORCE)", "postgres")
    shutil.rmtree(env.media)
    result = run(env.tmp, "django_restore", media_root=str(env.media), media_owner="nobody", media_group="nogroup",
                 db_owner=OWNER, download_dir=str(env.tmp), **env.args())
    assert result["_rc"] == 0, result.get("msg")
    assert result["set_id"] == set_id and result["database"]["previous"] is None and result["media"]["previous"] is None
    assert env.databases() == [env.db] and env.counts() == COUNTS
    assert env.sql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{env.db}'", "postgres") == \
        [(OWNER,)]
    assert media_digest(env.media) == before_media and env.media.stat().st_uid == 65534


def test_owner_role_over_tcp_with_password(env):
    """The app's owner role dumps its own database and restores it over TCP (no superuser, no peer auth)."""
    tcp = dict(db_host="127.0.0.1", db_port=env.cluster.port, db_user=OWNER, db_password=OWNER_PASSWORD)
    result = run(env.tmp, "django_backup", **env.args(**tcp))
    assert result["_rc"] == 0, result.get("msg")
    assert result["manifest"]["database"]["tables"] == COUNTS and result["manifest"]["media"] is None
    env.change_live_data()
    restored = run(env.tmp, "django_restore", download_dir=str(env.tmp), **env.args(**tcp))
    assert restored["_rc"] == 0, restored.get("msg")
    assert restored["database"]["owner"] == OWNER and env.counts() == COUNTS
    assert restored["database"]["session_user"] == OWNER  # no superuser: no temporary role either
    databases = env.databases()  # the live one and the one the swap kept
    env.sql(f"ALTER ROLE {OWNER} NOCREATEDB", "postgres")  # the app's role as the postgresql role makes it
    try:
        refused = run(env.tmp, "django_restore", download_dir=str(env.tmp), **env.args(**tcp))
    finally:
        env.sql(f"ALTER ROLE {OWNER} CREATEDB", "postgres")
    assert refused["_rc"] != 0 and f"db_user {OWNER} can neither create a database" in refused["msg"]
    assert "nothing was downloaded or changed" in refused["msg"] and env.databases() == databases
    wrong = run(env.tmp, "django_backup", **env.args(**dict(tcp, db_password="wrong-password")))
    assert wrong["_rc"] != 0
    assert f"cannot connect to PostgreSQL database {env.db} as user {OWNER} on 127.0.0.1:{env.cluster.port}" \
        in wrong["msg"] and "password authentication failed" in wrong["msg"]


def test_encrypted_backup_and_restore(env):
    keys = []
    for name in ("key", "other"):
        subprocess.run(["age-keygen", "-o", str(env.tmp / name)], check=True, capture_output=True)
        text = (env.tmp / name).read_text()
        keys.append((text, next(line.split(": ")[1] for line in text.splitlines() if "public key" in line)))
    (identity, recipient), (other_identity, _) = keys
    result = backup(env, encrypt_recipients=[recipient], s3_sse="AES256")
    set_id = result["set_id"]
    manifest = result["manifest"]
    assert manifest["encryption"] == {"type": "age", "recipients": [recipient]}
    assert [o["name"] for o in manifest["objects"]] == ["db.dump.age", "media.tar.age"]
    for name in ("db.dump.age", "media.tar.age"):
        key = f"{PREFIX}/{set_id}/{name}"
        body = env.get(key)
        assert body.startswith(b"age-encryption.org/v1") and b"PGDMP" not in body and b"report 2026" not in body
        assert env.s3.head_object(Bucket=env.bucket, Key=key)["ServerSideEncryption"] == "AES256"
    decrypted = subprocess.run(["age", "-d", "-i", str(env.tmp / "key")],
                               input=env.get(f"{PREFIX}/{set_id}/db.dump.age"), capture_output=True, check=True).stdout
    assert decrypted.startswith(b"PGDMP")

    env.change_live_data()
    args = env.args(media_root=str(env.media), download_dir=str(env.tmp))
    rc, (missing, wrong) = play(env.tmp, [("django_restore", args, False),
                                          ("django_restore", dict(args, age_identity=other_identity), False)],
                                keep_going=True)
    assert missing["failed"] and "is encrypted with age" in missing["msg"] and "give age_identity" in missing["msg"]
    assert wrong["failed"] and "is not one the set" in wrong["msg"]
    assert env.databases() == [env.db] and (env.media / "new-upload.bin").exists()
    restored = run(env.tmp, "django_restore", age_identity=identity, **args)
    assert restored["_rc"] == 0, restored.get("msg")
    assert restored["encrypted"] is True and env.counts() == COUNTS
    assert not (env.media / "new-upload.bin").exists() and restored["media"]["files"] == 3
    assert identity not in json.dumps(restored)


def test_the_identity_reaches_age_through_a_pipe_never_a_file(env, tmp_path_factory):
    """The age identity never touches the server's disk, nor a command line: age reads it from a pipe."""
    keys = tmp_path_factory.mktemp("keys")
    subprocess.run(["age-keygen", "-o", str(keys / "key")], check=True, capture_output=True)
    identity = (keys / "key").read_text()
    recipient = next(line.split(": ")[1] for line in identity.splitlines() if "public key" in line)
    secret = next(line for line in identity.splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    backup(env, encrypt_recipients=[recipient])
    # A shim in front of age records how it was given the identity, then runs the real age.
    shims = tmp_path_factory.mktemp("shims")
    log = shims / "age.log"
    (shims / "age").write_text(f"""#!/bin/sh
prev=""
for arg in "$@"; do
  [ "$prev" = "-i" ] && echo "$arg $(stat -L -c %F "$arg")" >> {log}
  prev="$arg"
done
echo "argv $*" >> {log}
exec {shutil.which("age")} "$@"
""")
    (shims / "age").chmod(0o755)
    args = env.args(media_root=str(env.media), download_dir=str(env.tmp), keep_download=True, age_identity=identity)
    rc, results = run_playbook(env.tmp, [{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                          "tasks": [{"django_restore": args}]}],
                               env=ansible_env(env.tmp, PATH=f"{shims}:{os.environ['PATH']}"))
    assert rc == 0, results[0].get("msg")
    given = [line for line in log.read_text().splitlines() if not line.startswith("argv ")]
    assert given and all(re.fullmatch(r"/dev/fd/\d+ fifo", line) for line in given), given
    assert secret not in log.read_text()  # nor on age's command line
    kept = Path(results[0]["download_dir"])  # the restore's private directory, kept (keep_download)
    assert kept.is_dir() and kept != env.tmp
    for path in kept.rglob("*"):
        assert path.is_dir() or secret.encode() not in path.read_bytes(), path


def test_the_app_role_restores_into_a_database_the_superuser_made(env):
    """A split layout: the app's own role over TCP, without CREATEDB and refused the `postgres` database (as
    pg_hba.conf refuses it there), restores with db_create=false into an empty database the superuser made for it
    (owned by the owner, marked), connecting to db_maintenance_name for the rest; it creates and drops nothing."""
    tcp = dict(db_host="127.0.0.1", db_port=env.cluster.port, db_user=OWNER, db_password=OWNER_PASSWORD,
               db_maintenance_name=env.db)
    backup(env)
    env.change_live_data()
    changed_counts = env.counts()
    target = env.db + "_restore"

    def made_by_superuser(name, owner=OWNER, comment="django-stack restore"):
        env.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", "postgres")
        env.sql(f"CREATE DATABASE {name} OWNER {owner} TEMPLATE template0", "postgres")
        if comment:
            env.sql(f"COMMENT ON DATABASE {name} IS '{comment}'", "postgres")

    scratch = dict(db_restore_mode="scratch", db_scratch_name=target, db_create=False, media_restore_mode="skip",
                   download_dir=str(env.tmp))
    env.sql(f"ALTER ROLE {OWNER} NOCREATEDB", "postgres")
    env.sql("REVOKE CONNECT ON DATABASE postgres FROM PUBLIC", "postgres")
    try:
        # the maintenance database refused to the role: the module says which database it could not reach
        refused = run(env.tmp, "django_restore", **env.args(**dict(tcp, db_maintenance_name="postgres")), **scratch)
        assert refused["_rc"] != 0 and f"cannot connect to PostgreSQL database postgres as user {OWNER}" \
            in refused["msg"], refused.get("msg")
        # without the superuser's database, nothing is restored (and nothing created)
        missing = run(env.tmp, "django_restore", **env.args(**tcp), **scratch)
        assert missing["_rc"] != 0 and f"database {target} does not exist" in missing["msg"], missing.get("msg")
        assert env.databases() == [env.db]
        # not marked as a restore's, another owner's, or holding tables: refused, left as it was
        made_by_superuser(target, comment=None)
        unmarked = run(env.tmp, "django_restore", **env.args(**tcp), **scratch)
        assert unmarked["_rc"] != 0 and "was not made by a restore: refusing to restore into it" in unmarked["msg"]
        made_by_superuser(target, owner="postgres")
        foreign = run(env.tmp, "django_restore", **env.args(**tcp), **scratch)
        assert foreign["_rc"] != 0 and f"belongs to postgres, not to the owner role {OWNER}" in foreign["msg"]
        made_by_superuser(target)
        env.sql("CREATE TABLE leftover (x int)", target)
        full = run(env.tmp, "django_restore", **env.args(**tcp), **scratch)
        assert full["_rc"] != 0 and "already holds tables (public.leftover)" in full["msg"], full.get("msg")
        assert env.sql("SELECT to_regclass('leftover')", target) == [("leftover",)]
        # the superuser's empty, marked database: restored into, checked, left for the caller
        made_by_superuser(target)
        plan = run(env.tmp, "django_restore", check=True, **env.args(**tcp), **scratch)
        assert plan["_rc"] == 0 and plan["database"]["would_restore_into"] == target, plan.get("msg")
        result = run(env.tmp, "django_restore", **env.args(**tcp), **scratch)
        assert result["_rc"] == 0, result.get("msg")
        assert result["database"]["restored_into"] == target and result["database"]["session_user"] == OWNER
        assert env.counts(target) == COUNTS and env.counts() == changed_counts
        assert env.databases() == sorted([env.db, target])
        assert env.sql(f"SELECT has_database_privilege('public', '{target}', 'CONNECT')", "postgres") == [(False,)]
        # a swap renames databases, which needs CREATEDB: not with db_create=false
        swap = run(env.tmp, "django_restore", **env.args(**tcp), db_create=False, media_restore_mode="skip",
                   download_dir=str(env.tmp))
        assert swap["_rc"] != 0 and "db_create=false needs db_restore_mode=scratch" in swap["msg"]
    finally:
        env.sql("GRANT CONNECT ON DATABASE postgres TO PUBLIC", "postgres")
        env.sql(f"ALTER ROLE {OWNER} CREATEDB", "postgres")
        env.sql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", "postgres")


def test_a_role_not_of_the_owner_is_told_before_anything_is_downloaded(env):
    """db_create=false needs db_user to be the owner role or a member of it: said before any download."""
    backup(env)
    other, password = "bkstranger", "stranger-password-1"
    env.sql(f"DROP ROLE IF EXISTS {other}", "postgres")
    env.sql(f"CREATE ROLE {other} LOGIN PASSWORD '{password}'", "postgres")
    try:
        download = env.tmp / "download"
        download.mkdir()
        result = run(env.tmp, "django_restore", db_restore_mode="scratch", db_scratch_name=env.db + "_restore",
                     db_create=False, media_restore_mode="skip", download_dir=str(download), db_owner=OWNER,
                     **env.args(db_host="127.0.0.1", db_port=env.cluster.port, db_user=other, db_password=password,
                                db_maintenance_name=env.db))
        assert result["_rc"] != 0
        assert f"db_user {other} is neither the owner role {OWNER} nor a member of it" in result["msg"], result["msg"]
        assert "nothing was downloaded or changed" in result["msg"]
        assert list(download.iterdir()) == [] and env.databases() == [env.db]
    finally:
        env.sql(f"DROP ROLE IF EXISTS {other}", "postgres")
