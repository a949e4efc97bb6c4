"""django_backup, django_backup_info, django_restore and the core's command line, run for real.

The modules run through ansible-playbook (AnsiballZ packs module_utils/django_stack_backup.py with
them) under Debian's /usr/bin/python3 with Debian's python3-boto3 and python3-psycopg2, as on a
server. PostgreSQL is the throwaway cluster of conftest.py; S3 is moto in server mode on loopback
(conftest.py), given to the modules as an endpoint URL exactly like MinIO or Ceph. The wrong-credentials
case uses a second moto server with IAM authentication on. Data is small: each test takes seconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from conftest import start_moto, stop_moto

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "module_utils" / "django_stack_backup.py"
SYSTEM_PYTHON = "/usr/bin/python3"
BIN = Path(sys.executable).parent
KEY_ID, SECRET = "AKIDBACKUPTEST", "moto-secret-Zq7"  # distinctive: Ansible masks no_log values in its output
OWNER, OWNER_PASSWORD = "bkowner", "owner-pass-9Xq"
PREFIX = "site/prod"
COUNTS = {"public.django_migrations": 2, "public.shop_item": 500, "public.shop_order": 1200, "reports.daily": 30}
MIGRATIONS = ["shop.0001_initial", "shop.0002_order"]
SET_RE = r"^\d{8}T\d{6}Z-[0-9a-f]{6}$"


@pytest.fixture(scope="session", autouse=True)
def host_tools():
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import boto3, psycopg2"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip("Debian's python3-boto3 and python3-psycopg2 are needed (scripts/bootstrap.sh installs them): "
                    + probe.stderr.strip().splitlines()[-1])
    for tool in ("age", "age-keygen", "tar"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (scripts/bootstrap.sh installs age)")


# --- running the modules and the CLI ---------------------------------------------------------------

def ansible_env(tmp_path: Path) -> dict:
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    return dict(os.environ, ANSIBLE_CONFIG=str(cfg), ANSIBLE_LIBRARY=str(ROOT / "library"),
                ANSIBLE_MODULE_UTILS=str(ROOT / "module_utils"), ANSIBLE_PYTHON_INTERPRETER=SYSTEM_PYTHON,
                ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false",
                ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1",
                ANSIBLE_LOCAL_TEMP=str(tmp_path / ".ansible-local"),
                ANSIBLE_REMOTE_TEMP=str(tmp_path / ".ansible-remote"))


def play(tmp_path: Path, tasks: list[tuple], keep_going: bool = False) -> tuple[int, list[dict]]:
    """Run TASKS, each (module, args, check_mode), as one playbook on localhost; (rc, one result per task)."""
    body = []
    for i, (module, args, check) in enumerate(tasks):
        task = {"name": f"task {i}", module: args, "check_mode": check}
        if keep_going:
            task["ignore_errors"] = True
        body.append(task)
    book = tmp_path / f"play-{time.monotonic_ns()}.json"
    book.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": body}]))
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(book)], capture_output=True,
                          text=True, check=False, cwd=tmp_path, env=ansible_env(tmp_path), timeout=300)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"ansible-playbook printed no JSON (rc={proc.returncode}): "
                    f"{proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    results = [t["hosts"]["localhost"] for t in out["plays"][0]["tasks"]]
    return proc.returncode, results


def run(tmp_path: Path, module: str, check: bool = False, **args) -> dict:
    rc, results = play(tmp_path, [(module, args, check)])
    result = results[0]
    result["_rc"] = rc
    assert (rc == 0) != bool(result.get("failed")), (rc, result.get("msg"))
    return result


def cli(tmp_path: Path, config: dict, *argv: str, timeout: float = 120) -> tuple[int, dict | None, str]:
    path = tmp_path / f"cli-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    proc = subprocess.run([SYSTEM_PYTHON, str(CORE), "--config", str(path), *argv], capture_output=True, text=True,
                          check=False, timeout=timeout)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr


# --- one database, one media directory and one bucket per test ----------------------------------------

SCHEMA = f"""
SET ROLE {OWNER};
CREATE TABLE shop_item (id bigserial PRIMARY KEY, name text NOT NULL, price numeric(10, 2),
                        created timestamptz NOT NULL DEFAULT '2026-01-02 03:04:05+00');
CREATE INDEX shop_item_name ON shop_item (name);
CREATE TABLE shop_order (id bigserial PRIMARY KEY, item_id bigint REFERENCES shop_item (id), qty int, note text);
CREATE TABLE django_migrations (id serial PRIMARY KEY, app varchar(255), name varchar(255),
                                applied timestamptz NOT NULL DEFAULT now());
INSERT INTO shop_item (name, price) SELECT 'item ' || i, i * 1.5 FROM generate_series(1, 500) i;
INSERT INTO shop_order (item_id, qty, note)
    SELECT 1 + i % 500, i % 7, repeat('x', i % 50) FROM generate_series(1, 1200) i;
INSERT INTO django_migrations (app, name) VALUES ('shop', '0001_initial'), ('shop', '0002_order');
CREATE SCHEMA reports;
CREATE TABLE reports.daily (day date PRIMARY KEY, total numeric);
INSERT INTO reports.daily SELECT d::date, 100 FROM generate_series('2026-01-01'::date, '2026-01-30', '1 day') d;
RESET ROLE;
"""


class Env:
    """What one test works on: its database (owned by bkowner), its media dir, its bucket."""

    def __init__(self, tmp_path: Path, cluster, moto, name: str):
        self.tmp, self.cluster, self.moto = tmp_path, cluster, moto
        self.db = name
        self.bucket = name.replace("_", "-")
        self.s3 = boto3.client("s3", endpoint_url=moto.endpoint, aws_access_key_id=KEY_ID,
                               aws_secret_access_key=SECRET, region_name="us-east-1")
        self.s3.create_bucket(Bucket=self.bucket)
        with cluster.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name} OWNER {OWNER}")
        with cluster.connect(name) as conn:
            conn.execute(SCHEMA)
        self.media = tmp_path / "srv" / "media"
        (self.media / "avatars").mkdir(parents=True)
        (self.media / "docs").mkdir()
        (self.media / "empty").mkdir()
        (self.media / "avatars" / "a.png").write_bytes(os.urandom(20_000))
        (self.media / "docs" / "report 2026.pdf").write_bytes(os.urandom(30_000))
        (self.media / "ünïcode.txt").write_text("héllo\n")
        subprocess.run(["chown", "-R", "nobody:nogroup", str(self.media)], check=True)

    def args(self, **extra) -> dict:
        base = dict(s3_bucket=self.bucket, s3_prefix=PREFIX, s3_endpoint_url=self.moto.endpoint,
                    s3_access_key=KEY_ID, s3_secret_key=SECRET, s3_region="us-east-1",
                    db_name=self.db, db_host=self.cluster.host, db_port=self.cluster.port)
        base.update(extra)
        return {k: v for k, v in base.items() if v is not None}

    def s3_args(self, **extra) -> dict:
        """The options of django_backup_info: the S3 ones only."""
        return {k: v for k, v in self.args(**extra).items() if not k.startswith("db_")}

    def sql(self, query: str, db: str | None = None):
        with self.cluster.connect(db or self.db) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else None

    def counts(self, db: str | None = None) -> dict:
        return {t: self.sql(f"SELECT count(*) FROM {t}", db)[0][0] for t in COUNTS}

    def databases(self) -> list[str]:
        return sorted(r[0] for r in self.sql(f"SELECT datname FROM pg_database WHERE datname LIKE '{self.db}%'",
                                             "postgres"))

    def keys(self, prefix: str = PREFIX) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def uploads(self) -> list[dict]:
        return self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def change_live_data(self) -> None:
        """What a bad deploy or an operator's mistake might do after the backup."""
        self.sql("DELETE FROM shop_order WHERE id > 100; UPDATE shop_item SET price = 0 WHERE id <= 10; "
                 "INSERT INTO django_migrations (app, name) VALUES ('shop', '0003_broken'); "
                 "CREATE TABLE after_backup (x int)")
        (self.media / "avatars" / "a.png").write_bytes(b"overwritten")
        (self.media / "docs" / "report 2026.pdf").unlink()
        (self.media / "new-upload.bin").write_bytes(b"new")


def media_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def owner_role(pg_cluster):
    with pg_cluster.connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [OWNER]).fetchone():
            conn.execute(f"CREATE ROLE {OWNER} LOGIN CREATEDB PASSWORD '{OWNER_PASSWORD}'")
    return OWNER


@pytest.fixture
def env(request, tmp_path, pg_cluster, moto_s3, owner_role) -> Env:
    name = "bk_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    return Env(tmp_path, pg_cluster, moto_s3, name)


def backup(env: Env, **extra) -> dict:
    result = run(env.tmp, "django_backup", **env.args(media_root=str(env.media), **extra))
    assert result["_rc"] == 0, result.get("msg")
    return result


def fake_set(env: Env, source_id: str, new_id: str, marker: str | None = "valid", prefix: str = PREFIX) -> None:
    """A copy of a real set under another id (another date), as the sets of past days would be."""
    manifest = json.loads(env.get(f"{PREFIX}/{source_id}/manifest.json"))
    for obj in manifest["objects"]:
        new_key = f"{prefix}/{new_id}/{obj['name']}"
        env.s3.copy_object(Bucket=env.bucket, Key=new_key, CopySource={"Bucket": env.bucket, "Key": obj["key"]})
        obj["key"] = new_key
    when = dt.datetime.strptime(new_id[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest.update(set_id=new_id, created_at=when, completed_at=when)
    raw = json.dumps(manifest).encode()
    env.s3.put_object(Bucket=env.bucket, Key=f"{prefix}/{new_id}/manifest.json", Body=raw)
    if marker is not None:
        text = hashlib.sha256(raw).hexdigest() if marker == "valid" else marker
        env.s3.put_object(Bucket=env.bucket, Key=f"{prefix}/{new_id}/COMPLETE", Body=text.encode())


# --- backup and info -----------------------------------------------------------------------------------

def test_backup_then_info_shows_one_complete_set(env):
    release = env.tmp / "releases" / "20261120-1a2b3c4"
    release.mkdir(parents=True)
    (env.tmp / "current").symlink_to(release)
    result = backup(env, release_path=str(env.tmp / "current"))
    assert result["changed"] is True
    set_id = result["set_id"]
    assert set_id.__class__ is str and len(set_id) == 23
    assert env.keys() == [f"{PREFIX}/{set_id}/{n}" for n in ("COMPLETE", "db.dump", "manifest.json", "media.tar")]
    assert env.uploads() == []

    rc, (listing, detail) = play(env.tmp, [("django_backup_info", env.s3_args(), False),
                                           ("django_backup_info", env.s3_args(backup_set="latest"), True)])
    assert rc == 0, listing.get("msg")
    assert listing["changed"] is False and listing["count"] == 1 and listing["complete_count"] == 1
    entry = listing["sets"][0]
    assert entry["set_id"] == set_id and entry["complete"] is True and entry["problem"] is None
    assert entry["release_id"] == "20261120-1a2b3c4" and entry["encrypted"] is False
    assert 0 <= entry["age_seconds"] < 120
    assert entry["size"] == sum(len(env.get(k)) for k in env.keys())
    assert listing["latest_complete"]["set_id"] == set_id

    manifest = detail["manifest"]
    assert detail["backup_set"] == set_id and detail["changed"] is False
    assert manifest == json.loads(env.get(f"{PREFIX}/{set_id}/manifest.json"))
    assert env.get(f"{PREFIX}/{set_id}/COMPLETE").decode().strip() == \
        hashlib.sha256(env.get(f"{PREFIX}/{set_id}/manifest.json")).hexdigest()
    assert manifest["set_id"] == set_id and manifest["format_version"] == 1
    assert manifest["database"]["tables"] == COUNTS == env.counts()
    assert manifest["database"]["applied_migrations"] == MIGRATIONS
    assert manifest["database"]["server_version"].startswith("15.")
    assert manifest["database"]["pg_dump_version"].startswith("pg_dump (PostgreSQL) 15.")
    assert manifest["media"]["files"] == 3 and manifest["media"]["bytes"] == 50_000 + len("héllo\n".encode())
    for obj in manifest["objects"]:
        body = env.get(obj["key"])
        assert obj["size"] == len(body) and obj["sha256"] == hashlib.sha256(body).hexdigest()
    assert env.get(f"{PREFIX}/{set_id}/db.dump")[:5] == b"PGDMP"


def test_check_mode_uploads_nothing(env):
    result = run(env.tmp, "django_backup", check=True, keep_daily=3, **env.args(media_root=str(env.media)))
    assert result["_rc"] == 0, result.get("msg")
    assert result["changed"] is True
    names = [key.rsplit("/", 1)[1] for key in result["would_upload"]]
    assert names == ["db.dump", "media.tar", "manifest.json", "COMPLETE"]
    assert result["database"]["tables"] == 4 and result["media"]["files"] == 3
    assert result["retention"]["would_prune"] == [] and result["retention"]["kept"][0]["set_id"] == result["set_id"]
    assert env.keys("") == [] and env.uploads() == []


# --- restore -------------------------------------------------------------------------------------------

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


def test_restore_in_place(env):
    set_id = backup(env)["set_id"]
    env.change_live_data()
    result = run(env.tmp, "django_restore", db_restore_mode="in_place", media_restore_mode="skip",
                 download_dir=str(env.tmp), **env.args())
    assert result["_rc"] == 0, result.get("msg")
    assert result["set_id"] == set_id and result["database"]["mode"] == "in_place"
    assert result["database"]["previous"] is None and result["media"] == {"mode": "skip"}
    assert env.counts() == COUNTS and env.databases() == [env.db]
    assert env.sql("SELECT count(*) FROM shop_item WHERE price = 0") == [(0,)]
    # pg_restore --clean drops what the dump holds; a table made later stays, and the task says so
    assert result["database"]["tables_not_in_backup"] == ["public.after_backup"]
    assert "after_backup" in json.dumps(result.get("warnings"))
    assert (env.media / "new-upload.bin").exists()  # media skipped


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


# --- retention -------------------------------------------------------------------------------------------

def test_retention_dry_run_then_prune(env):
    newest = backup(env)["set_id"]
    daily = [f"2025{m:02d}{d:02d}T030000Z-a{m:02d}{d:03d}" for m, first, last in ((2, 24, 28), (3, 1, 10))
             for d in range(first, last + 1)]
    monthly = ["20241215T030000Z-a12015", "20250115T030000Z-a01015"]
    for set_id in daily + monthly:
        fake_set(env, newest, set_id)
    fake_set(env, newest, "20250310T010000Z-b00001")              # an older set of the same day
    fake_set(env, newest, "20250309T120000Z-c00001", marker=None)  # interrupted: no marker
    fake_set(env, newest, "20250305T030000Z-c00002", marker="0" * 64)  # marker does not match its manifest
    young = newest[:9] + "000000Z-c00003"                         # today, maybe still running
    fake_set(env, newest, young, marker=None)
    env.s3.create_multipart_upload(Bucket=env.bucket, Key=f"{PREFIX}/{young}/media.tar")  # its upload in flight

    listing = run(env.tmp, "django_backup_info", **env.s3_args())
    by_id = {s["set_id"]: s for s in listing["sets"]}
    assert listing["count"] == 22 and listing["complete_count"] == 19
    assert by_id["20250309T120000Z-c00001"]["complete"] is False
    assert "does not match" in by_id["20250305T030000Z-c00002"]["problem"]
    assert [s["set_id"] for s in listing["sets"]][:2] == [newest, young]
    assert listing["latest_complete"]["set_id"] == newest

    args = env.args(db_name=None, keep_daily=3, keep_weekly=2, keep_monthly=3, state="pruned")
    keys_before = env.keys()
    dry = run(env.tmp, "django_backup", check=True, **args)
    assert dry["_rc"] == 0, dry.get("msg")
    kept = {k["set_id"]: k["reasons"] for k in dry["kept"]}
    assert set(kept) == {newest, "20250310T030000Z-a03010", "20250309T030000Z-a03009", "20250228T030000Z-a02028"}
    assert "newest complete set" in kept[newest]
    assert kept["20250310T030000Z-a03010"] == ["daily 2025-03-10", "weekly 2025-W11", "monthly 2025-03"]
    assert kept["20250309T030000Z-a03009"] == ["daily 2025-03-09"]  # not the incomplete one of the same day
    assert kept["20250228T030000Z-a02028"] == ["monthly 2025-02"]
    assert len(dry["would_prune"]) == 19 - 4 and "20250310T010000Z-b00001" in dry["would_prune"]
    assert set(monthly) <= set(dry["would_prune"])  # the 3 newest months with sets are 2026-.., 2025-03, 2025-02
    assert sorted(dry["would_remove_incomplete"]) == ["20250305T030000Z-c00002", "20250309T120000Z-c00001"]
    assert dry["incomplete_within_grace"] == [young] and dry["would_abort_uploads"] == []
    assert dry["changed"] is True and dry["pruned"] == [] and env.keys() == keys_before

    real = run(env.tmp, "django_backup", **args)
    assert real["_rc"] == 0, real.get("msg")
    assert sorted(real["pruned"]) == sorted(dry["would_prune"]) and real["kept"] == dry["kept"]
    remaining = {k.split("/")[2] for k in env.keys()}
    assert remaining == set(kept) | {young}
    assert len(env.uploads()) == 1

    # Only the newest complete set is ever certain to stay; the young incomplete one goes once its grace is over.
    last = run(env.tmp, "django_backup", **dict(args, keep_daily=0, keep_weekly=None, keep_monthly=None,
                                                 incomplete_grace_hours=0))
    assert last["_rc"] == 0, last.get("msg")
    assert [k["set_id"] for k in last["kept"]] == [newest] and last["removed_incomplete"] == [young]
    assert len(last["aborted_uploads"]) == 1 and env.uploads() == []
    assert {k.split("/")[2] for k in env.keys()} == {newest}
    again = run(env.tmp, "django_backup", **dict(args, keep_daily=0, keep_weekly=None, keep_monthly=None))
    assert again["changed"] is False and again["pruned"] == []


def test_backup_with_retention_prunes_after_success(env):
    first = backup(env)["set_id"]
    fake_set(env, first, "20250101T030000Z-d00001")
    result = backup(env, keep_daily=1)
    assert sorted(result["retention"]["pruned"]) == sorted([first, "20250101T030000Z-d00001"])
    assert [k["set_id"] for k in result["retention"]["kept"]] == [result["set_id"]]
    assert {k.split("/")[2] for k in env.keys()} == {result["set_id"]}


# --- faults -------------------------------------------------------------------------------------------------

def test_unreachable_endpoint(env):
    port = 1  # nothing listens there
    args = env.args(s3_endpoint_url=f"http://127.0.0.1:{port}", s3_max_attempts=2, s3_connect_timeout=2)
    info = {k: v for k, v in args.items() if not k.startswith("db_")}
    modules = ["django_backup", "django_backup_info", "django_restore"]
    rc, results = play(env.tmp, [(m, info if m == "django_backup_info" else args, False) for m in modules],
                       keep_going=True)
    for module, result in zip(modules, results):
        assert result.get("failed") is True, module
        assert f"cannot reach the S3 endpoint http://127.0.0.1:{port}" in result["msg"], (module, result["msg"])
    code, out, err = cli(env.tmp, args, "backup")  # the timer's path: a non-zero exit and the message on stderr
    assert code == 1 and out is None and f"cannot reach the S3 endpoint http://127.0.0.1:{port}" in err
    assert env.keys("") == [] and env.databases() == [env.db]


@pytest.fixture(scope="session")
def moto_iam():
    """A second moto server that enforces IAM: the first 4 requests (the setup below) are let through."""
    server = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        kw = dict(endpoint_url=server.endpoint, aws_access_key_id="setup", aws_secret_access_key="setup",
                  region_name="us-east-1")
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="backup")
        key = iam.create_access_key(UserName="backup")["AccessKey"]
        iam.put_user_policy(UserName="backup", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        boto3.client("s3", **kw).create_bucket(Bucket="iam-backups")
        yield server, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        stop_moto(server)


def test_wrong_credentials(env, moto_iam):
    server, key_id, secret = moto_iam
    args = env.args(s3_endpoint_url=server.endpoint, s3_bucket="iam-backups", s3_access_key=key_id,
                    s3_secret_key=secret, media_root=str(env.media))
    rc, (good, wrong_secret, unknown_key) = play(env.tmp, [
        ("django_backup", args, False),
        ("django_backup", dict(args, s3_secret_key="not-the-" + secret[:8]), False),
        ("django_backup_info", {k: v for k, v in dict(args, s3_access_key="AKIDNOSUCHKEY").items()
                                if not k.startswith(("db_", "media"))}, False),
    ], keep_going=True)
    assert not good.get("failed"), good.get("msg")  # the right key works: the failures below are real rejections
    assert wrong_secret["failed"] and "S3 rejected the credentials for bucket iam-backups" in wrong_secret["msg"]
    assert "SignatureDoesNotMatch" in wrong_secret["msg"] and "s3_secret_key" in wrong_secret["msg"]
    assert unknown_key["failed"] and "InvalidAccessKeyId" in unknown_key["msg"]
    code, out, err = cli(env.tmp, dict(args, s3_secret_key="not-the-" + secret[:8]), "backup")
    assert code == 1 and out is None and "SignatureDoesNotMatch" in err


def test_corrupted_object_is_never_restored(env):
    set_id = backup(env)["set_id"]
    env.change_live_data()
    changed_counts, changed_media = env.counts(), media_digest(env.media)
    key = f"{PREFIX}/{set_id}/db.dump"
    body = bytearray(env.get(key))
    body[len(body) // 2] ^= 0xFF  # same size, one byte flipped
    env.s3.put_object(Bucket=env.bucket, Key=key, Body=bytes(body))
    download = env.tmp / "download"
    download.mkdir()
    result = run(env.tmp, "django_restore", media_root=str(env.media), download_dir=str(download), **env.args())
    assert result["_rc"] != 0
    assert f"checksum mismatch for s3://{env.bucket}/{key}" in result["msg"]
    assert env.counts() == changed_counts and media_digest(env.media) == changed_media
    assert env.databases() == [env.db] and list(download.iterdir()) == []

    media_key = f"{PREFIX}/{set_id}/media.tar"
    env.s3.put_object(Bucket=env.bucket, Key=media_key, Body=env.get(media_key)[:1000])  # truncated
    rc, (listing, refused, by_id) = play(env.tmp, [
        ("django_backup_info", env.s3_args(), False),
        ("django_restore", env.args(media_root=str(env.media), download_dir=str(download)), False),
        ("django_restore", env.args(backup_set=set_id, download_dir=str(download)), False),
    ], keep_going=True)
    assert listing["complete_count"] == 0 and "media.tar holds 1000 bytes" in listing["sets"][0]["problem"]
    assert refused["failed"] and "no complete backup set" in refused["msg"]
    assert by_id["failed"] and f"backup set {set_id}" in by_id["msg"] and "is incomplete" in by_id["msg"]
    assert env.counts() == changed_counts and env.databases() == [env.db]


class StallingProxy:
    """TCP proxy to moto that stops forwarding on the connection whose upload crosses LIMIT bytes
    (a network that hangs mid-upload); every other connection is forwarded as it is."""

    def __init__(self, port: int, limit: int):
        self.port, self.limit, self.sent = port, limit, 0
        self.stalled = threading.Event()
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = "http://127.0.0.1:%d" % self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, counting):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if counting and not self.stalled.is_set():
                    with self.lock:
                        self.sent += len(data)
                        stall = self.sent >= self.limit
                    if stall:
                        self.stalled.set()
                        self.closing.wait()
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            src.close()
            dst.close()

    def close(self):
        self.closing.set()
        self.server.close()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_interrupted_upload_leaves_an_incomplete_set(env, how):
    older = backup(env)["set_id"]
    (env.media / "big.bin").write_bytes(os.urandom(12 * 1024 * 1024))
    proxy = StallingProxy(env.moto.port, limit=8 * 1024 * 1024)
    config = env.args(s3_endpoint_url=proxy.endpoint, media_root=str(env.media), s3_part_size_mb=5,
                      s3_max_concurrency=1)
    path = env.tmp / "timer.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([SYSTEM_PYTHON, str(CORE), "--config", str(path), "backup"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proxy.stalled.wait(60), "the upload never reached the stall point"
        time.sleep(0.2)
        if how == "SIGKILL":
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as the OOM killer or a reboot would
        else:
            proc.send_signal(signal.SIGTERM)  # what systemd sends when the timer's unit is stopped
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proxy.close()
    assert proc.returncode != 0
    if how == "SIGTERM":
        assert proc.returncode == 1 and "interrupted by SIGTERM" in err and out == ""
        assert env.uploads() == []  # it aborted its multipart upload on the way out
    else:
        assert len(env.uploads()) == 1  # left for prune

    newest_id = max(k.split("/")[2] for k in env.keys())
    rc, (listing, restored, refused) = play(env.tmp, [
        ("django_backup_info", env.s3_args(), False),
        ("django_restore", env.args(db_restore_mode="scratch", db_scratch_name=env.db + "_drill",
                                    download_dir=str(env.tmp)), False),
        ("django_restore", env.args(backup_set=newest_id, download_dir=str(env.tmp)), False),
    ], keep_going=True)
    assert listing["count"] == 2 and listing["complete_count"] == 1
    partial = listing["sets"][0]
    assert partial["set_id"] == newest_id > older and partial["complete"] is False
    assert "COMPLETE" not in partial["objects"] and listing["latest_complete"]["set_id"] == older
    assert not restored.get("failed"), restored.get("msg")
    assert restored["set_id"] == older and env.counts(env.db + "_drill") == COUNTS  # latest = the older complete set
    assert refused["failed"] and "is incomplete" in refused["msg"] and "refusing to restore it" in refused["msg"]

    pruned = run(env.tmp, "django_backup", state="pruned", keep_daily=7, incomplete_grace_hours=0,
                 **env.args(db_name=None))
    assert pruned["_rc"] == 0, pruned.get("msg")
    assert pruned["removed_incomplete"] == [partial["set_id"]] and env.uploads() == []
    assert [k["set_id"] for k in pruned["kept"]] == [older]


def test_pg_dump_failure_aborts_the_upload(env):
    """A dump that breaks mid-way (a table the role cannot read) leaves no set and no upload behind."""
    reader = env.db + "_reader"
    env.sql(f"DROP ROLE IF EXISTS {reader}", "postgres")
    env.sql(f"CREATE ROLE {reader} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}; "
            f"GRANT USAGE ON SCHEMA reports TO {reader}; CREATE TABLE reports.secret (x int); "
            f"ALTER TABLE reports.secret OWNER TO {OWNER}")
    result = run(env.tmp, "django_backup", db_user=reader, **env.args(media_root=str(env.media)))
    assert result["_rc"] != 0
    assert "permission denied for table" in result["msg"] and ("daily" in result["msg"] or "secret" in result["msg"])
    assert env.uploads() == [] and env.keys() == []


@pytest.fixture
def tiny_fs(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_local_disk(env, tiny_fs):
    (env.media / "photo.raw").write_bytes(os.urandom(1024 * 1024))
    backup(env)
    env.change_live_data()
    changed_counts, changed_media = env.counts(), media_digest(env.media)
    rc, (result, media) = play(env.tmp, [
        ("django_restore", env.args(media_root=str(env.media), download_dir=str(tiny_fs)), False),
        ("django_restore", env.args(media_root=str(tiny_fs / "media"), download_dir=str(env.tmp)), False),
    ], keep_going=True)
    assert result["failed"] is True
    assert f"not enough free space in {tiny_fs}" in result["msg"] and "the downloaded objects" in result["msg"]
    assert media["failed"] and f"not enough free space in {tiny_fs}" in media["msg"]
    assert "the extracted media" in media["msg"]
    assert env.counts() == changed_counts and media_digest(env.media) == changed_media
    assert env.databases() == [env.db] and list(tiny_fs.iterdir()) == []


def test_pg_restore_error_leaves_the_live_database_untouched(env):
    reporting = env.db + "_reporting"
    env.sql(f"DROP ROLE IF EXISTS {reporting}", "postgres")
    env.sql(f"CREATE ROLE {reporting}; GRANT SELECT ON shop_item TO {reporting}")
    set_id = backup(env)["set_id"]
    env.sql(f"REVOKE SELECT ON shop_item FROM {reporting}; DROP ROLE {reporting}")  # gone on the new server
    env.change_live_data()
    changed_counts = env.counts()
    rc, (swap, in_place) = play(env.tmp, [
        ("django_restore", env.args(media_restore_mode="skip", download_dir=str(env.tmp)), False),
        ("django_restore", env.args(db_restore_mode="in_place", download_dir=str(env.tmp)), False),
    ], keep_going=True)
    for result in (swap, in_place):
        assert result["failed"] is True
        assert f"pg_restore of set {set_id}" in result["msg"] and f'role "{reporting}" does not exist' in result["msg"]
    assert "nothing was swapped in" in swap["msg"]
    assert env.counts() == changed_counts and env.databases() == [env.db]


def test_bad_input_fails_naming_the_option(env):
    base = env.args()
    info = {k: v for k, v in base.items() if not k.startswith("db_")}
    cases = [
        ("django_backup", dict(base, s3_sse="DES"), "s3_sse must be one of"),
        ("django_backup", {k: v for k, v in base.items() if k != "s3_bucket"}, "missing required arguments: s3_bucket"),
        ("django_backup", dict(base, s3_bucket="no-such-bucket"), "bucket no-such-bucket does not exist"),
        ("django_backup", dict(base, s3_part_size_mb=1), "s3_part_size_mb must be between 5 and 5120"),
        ("django_backup", dict(base, encrypt_recipients=["age1nope"]), "encrypt_recipients: 'age1nope' is not an age"),
        ("django_backup", dict(info, state="pruned"), "pruning needs at least one of keep_daily, keep_weekly"),
        ("django_backup", dict(base, media_root="/nonexistent"), "media_root /nonexistent is not a directory"),
        ("django_backup", info, "state is present but all of the following are missing: db_name"),
        ("django_backup", dict(base, bucket="x"), "Unsupported parameters"),
        ("django_backup", dict(base, s3_access_key=None), "s3_access_key and s3_secret_key go together"),
        ("django_backup", dict(base, db_port=70000), "db_port must be between 1 and 65535"),
        ("django_backup", dict(base, db_name="nosuchdb"), "cannot connect to PostgreSQL database nosuchdb"),
        ("django_backup", dict(base, keep_daily=-1), "keep_daily must be 0 or more"),
        ("django_backup_info", dict(info, s3_endpoint_url="minio:9000"), "s3_endpoint_url 'minio:9000' must be"),
        ("django_backup_info", dict(info, s3_max_attempts=0), "s3_max_attempts must be 1 or more"),
        ("django_restore", dict(base, backup_set="yesterday"), "backup_set 'yesterday' is neither 'latest' nor"),
        ("django_restore", dict(base, backup_set="20200101T000000Z-abcdef"), "there is no backup set 20200101T000000Z"),
        ("django_restore", dict(base, db_restore_mode="scratch"),
         "db_restore_mode is scratch but all of the following are missing: db_scratch_name"),
        ("django_restore", dict(base, db_restore_mode="scratch", db_scratch_name=env.db),
         "db_scratch_name must differ from db_name"),
        ("django_restore", dict(base, db_restore_mode="swap", media_restore_mode="swap"),
         "media_restore_mode is swap but all of the following are missing: media_root"),
        ("django_restore", dict(base, download_dir="/nonexistent"), "download_dir /nonexistent is not a directory"),
    ]
    cases = [(m, {k: v for k, v in a.items() if v is not None}, msg) for m, a, msg in cases]
    rc, results = play(env.tmp, [(module, args, False) for module, args, _ in cases], keep_going=True)
    assert len(results) == len(cases)
    for (module, _, message), result in zip(cases, results):
        assert result.get("failed") is True, (module, message, result)
        assert message in result["msg"], (module, message, result["msg"])
    assert env.keys("") == []


# --- the command line (what the systemd timer runs) ------------------------------------------------------

def test_cli_backup_list_freshness_prune(env):
    config = env.args(media_root=str(env.media), keep_daily=7)
    rc, empty, err = cli(env.tmp, config, "check-freshness", "--max-age-hours", "26")
    assert rc == 1 and empty is None and "no complete backup set" in err
    rc, made, err = cli(env.tmp, config, "backup")
    assert rc == 0, err
    assert made["command"] == "backup" and made["changed"] is True and made["manifest"]["database"]["tables"] == COUNTS
    assert isinstance(made["peak_rss_kb"], int) and 10_000 < made["peak_rss_kb"] < 200_000
    assert made["retention"]["kept"][0]["set_id"] == made["set_id"]
    rc, listing, err = cli(env.tmp, config, "list", "--set", "latest")
    assert rc == 0 and listing["complete_count"] == 1 and listing["manifest"]["set_id"] == made["set_id"]
    rc, fresh, err = cli(env.tmp, config, "check-freshness", "--max-age-hours", "26")
    assert rc == 0 and fresh["latest_complete"] == made["set_id"]
    fake_set(env, made["set_id"], "20250101T030000Z-e00001", prefix="old/site")
    rc, stale, err = cli(env.tmp, dict(config, s3_prefix="old/site"), "check-freshness", "--max-age-hours", "26")
    assert rc == 1 and "20250101T030000Z-e00001" in err and "hours old (more than 26" in err
    rc, dry, err = cli(env.tmp, config, "prune", "--check")
    assert rc == 0 and dry["would_prune"] == [] and dry["changed"] is False
    rc, drill, err = cli(env.tmp, config, "-o", "db_restore_mode=scratch", "-o", f"db_scratch_name={env.db}_cli",
                         "restore", "-o", "media_restore_mode=skip", "-o", f"download_dir={env.tmp}")
    assert rc == 0, err
    assert drill["set_id"] == made["set_id"] and env.counts(env.db + "_cli") == COUNTS
    rc, bad, err = cli(env.tmp, dict(config, bucket="x"), "list")
    assert rc == 1 and "unknown option(s) bucket" in err
    broken = env.tmp / "broken.json"
    broken.write_text("{not json")
    proc = subprocess.run([SYSTEM_PYTHON, str(CORE), "--config", str(broken), "list"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1 and "is not valid JSON" in proc.stderr


@pytest.mark.parametrize("module", ["django_backup", "django_backup_info", "django_restore"])
def test_ansible_doc_renders(module):
    proc = subprocess.run([str(BIN / "ansible-doc"), "-M", str(ROOT / "library"), module], capture_output=True,
                          text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert proc.returncode == 0, proc.stderr
    assert "s3_bucket" in proc.stdout and "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout
    assert "ERROR" not in proc.stderr
