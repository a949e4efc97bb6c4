"""What the tests of the backup role's modules and command share (test_django_backup.py and
test_backup_*.py; their fixtures are in conftest.py).

The modules run through ansible-playbook (AnsiballZ packs the role's module_utils/django_stack_backup
package with them) under Debian's /usr/bin/python3 with Debian's python3-boto3 and python3-psycopg2,
as on a server. The command line runs as the role installs it: the package and the
django-stack-backup wrapper, put in a temp dir by the role's own install tasks. PostgreSQL is the
throwaway cluster of conftest.py; S3 is moto in server mode on loopback (conftest.py), given to the
modules as an endpoint URL exactly like MinIO or Ceph. Data is small: each test takes seconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from conftest import missing_prerequisite
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles" / "backup"
LIBRARY = ROLE / "library"
MODULE_UTILS = ROLE / "module_utils"
PACKAGE = MODULE_UTILS / "django_stack_backup"
DOC_FRAGMENTS = ROLE / "doc_fragments"
SYSTEM_PYTHON = "/usr/bin/python3"
BIN = Path(sys.executable).parent
KEY_ID, SECRET = "AKIDBACKUPTEST", "moto-secret-Zq7"  # distinctive: Ansible masks no_log values in its output
OWNER, OWNER_PASSWORD = "bkowner", "owner-pass-9Xq"
PREFIX = "site/prod"
COUNTS = {"public.django_migrations": 2, "public.shop_item": 500, "public.shop_order": 1200, "reports.daily": 30}
MIGRATIONS = ["shop.0001_initial", "shop.0002_order"]


def check_host_tools() -> None:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import boto3, psycopg2"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        missing_prerequisite("Debian's python3-boto3 and python3-psycopg2 are needed (scripts/bootstrap.sh installs them): "
                    + probe.stderr.strip().splitlines()[-1])
    for tool in ("age", "age-keygen", "tar"):
        if not shutil.which(tool):
            missing_prerequisite(f"{tool} is not installed (scripts/bootstrap.sh installs age)")


# --- running the modules -----------------------------------------------------------------------------

def ansible_env(tmp_path: Path, **extra: str) -> dict:
    """ansible-playbook's environment: the backup role's library and module_utils (where the role puts
    them when it loads), Debian's Python on the managed host, JSON on stdout."""
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    return dict(os.environ, ANSIBLE_CONFIG=str(cfg), ANSIBLE_LIBRARY=str(LIBRARY),
                ANSIBLE_MODULE_UTILS=str(MODULE_UTILS), ANSIBLE_PYTHON_INTERPRETER=SYSTEM_PYTHON,
                ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false",
                ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1",
                ANSIBLE_LOCAL_TEMP=str(tmp_path / ".ansible-local"),
                ANSIBLE_REMOTE_TEMP=str(tmp_path / ".ansible-remote"), **extra)


def run_playbook(tmp_path: Path, plays: list[dict], env: dict | None = None) -> tuple[int, list[dict]]:
    """Run PLAYS on localhost; (rc, the results of the first play's tasks, one per task)."""
    book = tmp_path / f"play-{time.monotonic_ns()}.json"
    book.write_text(json.dumps(plays))
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(book)], capture_output=True,
                          text=True, check=False, cwd=tmp_path, env=env or ansible_env(tmp_path), timeout=300)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"ansible-playbook printed no JSON (rc={proc.returncode}): "
                    f"{proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    results = [t["hosts"]["localhost"] for t in out["plays"][0]["tasks"]]
    return proc.returncode, results


def play(tmp_path: Path, tasks: list[tuple], keep_going: bool = False) -> tuple[int, list[dict]]:
    """Run TASKS, each (module, args, check_mode), as one playbook on localhost; (rc, one result per task)."""
    body = []
    for i, (module, args, check) in enumerate(tasks):
        task = {"name": f"task {i}", module: args, "check_mode": check}
        if keep_going:
            task["ignore_errors"] = True
        body.append(task)
    return run_playbook(tmp_path, [{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                    "tasks": body}])


def run(tmp_path: Path, module: str, check: bool = False, **args) -> dict:
    rc, results = play(tmp_path, [(module, args, check)])
    result = results[0]
    result["_rc"] = rc
    assert (rc == 0) != bool(result.get("failed")), (rc, result.get("msg"))
    return result


# --- the command line, installed as the role installs it -----------------------------------------------

# Tasks of tasks/install.yml that install Debian packages: not run here (apt needs the network; the
# packages are this machine's already). Every other task must be one of SAFE_MODULES, pointed at a temp dir.
PACKAGE_MODULES = {"ansible.builtin.apt", "ansible.builtin.package", "installed_packages"}
SAFE_MODULES = {"ansible.builtin.file", "ansible.builtin.copy", "ansible.builtin.template"}


@dataclass
class InstalledBackup:
    base: Path
    core_dir: Path     # _backup_core_dir: the package is core_dir/django_stack_backup
    command: Path      # _backup_command: the wrapper the systemd units run
    config_dir: Path   # dirname of _backup_config_file


def install_backup_command(base: Path) -> InstalledBackup:
    """Run the backup role's install tasks on this machine (its package tasks left out), into BASE instead
    of /usr/local and /etc: a copy of the role whose tasks are those of tasks/install.yml."""
    tasks = yaml.safe_load((ROLE / "tasks" / "install.yml").read_text())
    kept = [t for t in tasks if not PACKAGE_MODULES & set(t)]
    unknown = [t["name"] for t in kept if not SAFE_MODULES & set(t)]
    assert not unknown, f"tasks/install.yml has tasks this test does not know it may run here: {unknown}"
    role = base / "roles" / "backup"
    (role / "tasks").mkdir(parents=True)
    (role / "tasks" / "main.yml").write_text(yaml.safe_dump(kept, sort_keys=False))
    for part in ("defaults", "vars", "templates", "module_utils", "library"):
        (role / part).symlink_to(ROLE / part)
    installed = InstalledBackup(base, base / "lib" / "django-stack", base / "sbin" / "django-stack-backup",
                                base / "etc" / "django-stack")
    installed.command.parent.mkdir(parents=True)
    extra = base / "extra-vars.json"
    extra.write_text(json.dumps({"_backup_core_dir": str(installed.core_dir),
                                 "_backup_command": str(installed.command),
                                 "_backup_config_file": str(installed.config_dir / "backup-test.json")}))
    book = base / "install.json"
    book.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                 "roles": ["backup"]}]))
    # The controller's bytecode cache of the package, as a test or a developer may leave it: never shipped.
    cache = PACKAGE / "__pycache__"
    planted = not cache.exists()
    if planted:
        cache.mkdir()
        (cache / "probe.pyc").write_bytes(b"not shipped")
    try:
        proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-e", f"@{extra}", str(book)],
                              capture_output=True, text=True, check=False, cwd=base, timeout=300,
                              env=ansible_env(base, ANSIBLE_ROLES_PATH=str(base / "roles")))
    finally:
        if planted:
            shutil.rmtree(cache, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return installed


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
    """What one test works on: its database (owned by bkowner), its media dir, its bucket, and the
    installed backup command."""

    def __init__(self, tmp_path: Path, cluster, moto, name: str, command: Path):
        self.tmp, self.cluster, self.moto = tmp_path, cluster, moto
        self.command = command
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

    def cli(self, config: dict, *argv: str, timeout: float = 120) -> tuple[int, dict | None, str]:
        """The installed django-stack-backup with CONFIG as its --config file (mode 0600, as the role writes it)."""
        path = self.tmp / f"cli-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        proc = subprocess.run([str(self.command), "--config", str(path), *argv], capture_output=True, text=True,
                              check=False, timeout=timeout)
        return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr

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


def backup(env: Env, **extra) -> dict:
    result = run(env.tmp, "django_backup", **env.args(media_root=str(env.media), **extra))
    assert result["_rc"] == 0, result.get("msg")
    return result


def fake_set(env: Env, source_id: str, new_id: str, marker: str | None = "valid", prefix: str = PREFIX,
             edit=None) -> None:
    """A copy of a real set under another id (another date), as the sets of past days would be; `edit`
    may change its manifest (the marker is then the edited manifest's, as a real backup writes it)."""
    manifest = json.loads(env.get(f"{PREFIX}/{source_id}/manifest.json"))
    for obj in manifest["objects"]:
        new_key = f"{prefix}/{new_id}/{obj['name']}"
        # Read and written again (not copied): a bucket with object lock wants a checksum with every
        # write, which boto3 sends with an upload's body.
        env.s3.put_object(Bucket=env.bucket, Key=new_key, Body=env.get(obj["key"]))
        obj["key"] = new_key
    when = dt.datetime.strptime(new_id[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest.update(set_id=new_id, created_at=when, completed_at=when)
    if edit:
        edit(manifest)
    raw = json.dumps(manifest).encode()
    env.s3.put_object(Bucket=env.bucket, Key=f"{prefix}/{new_id}/manifest.json", Body=raw)
    if marker is not None:
        text = hashlib.sha256(raw).hexdigest() if marker == "valid" else marker
        env.s3.put_object(Bucket=env.bucket, Key=f"{prefix}/{new_id}/COMPLETE", Body=text.encode())
