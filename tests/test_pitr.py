"""The pitr role's archive, end to end on this machine: a real PostgreSQL cluster archives its WAL
through the role's own archiver script (barman-cloud, Debian's) to an S3 server that enforces the
role's two policies (moto with IAM); the role's base backup script takes a base backup; the
pitr_base_backups module chooses the base backup of a moment; the role's restore script replays the
archive into a new cluster, which has the rows written before the moment and not those after.

The servers' key may add objects and read nothing: the catalog refuses it. The tests run in file
order and share the fixture's archive."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest
from conftest import PG_BIN, ROOT, free_port, missing_prerequisite, start_moto, stop_moto
from role_templates import render_role_templates

ROLE = ROOT / "roles" / "pitr"
BUCKET, PREFIX = "site-archive", "django-stack-pitr/demo"
SCRIPTS = ["usr/local/sbin/django-stack-wal-archive", "usr/local/sbin/django-stack-wal-restore",
           "usr/local/sbin/django-stack-base-backup", "usr/local/sbin/django-stack-wal-archive-check",
           "etc/django-stack-pitr/config"]


def policy(name: str, extra_actions: tuple[str, ...] = ()) -> str:
    doc = json.loads((ROLE / "policies" / f"{name}.json").read_text().replace("BUCKET", BUCKET).replace("PREFIX", PREFIX))
    # moto checks HEAD on a bucket as s3:HeadBucket, which AWS folds into s3:ListBucket (the policies' own):
    # the test adds it to the bucket statement, as AWS would grant it.
    doc["Statement"][0]["Action"] += list(extra_actions)
    return json.dumps(doc)


def postgres(*cmd: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, check=check,
                          env=env, timeout=300)


def run_module(base: Path, name: str, args: dict, check: bool = False, python: str = "/usr/bin/python3") -> dict:
    """A module of the role, run by ansible on localhost as the role runs it (Debian's python3 on a
    server; the control node's own for the retention)."""
    cfg = base / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(cfg), ANSIBLE_LIBRARY=str(ROLE / "library"),
               ANSIBLE_MODULE_UTILS=str(ROLE / "module_utils"),
               ANSIBLE_PYTHON_INTERPRETER=python, ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-m", name,
                           "-a", json.dumps(args), *(["--check"] if check else [])],
                          capture_output=True, text=True, env=env, check=False, timeout=120)
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


class Archive:
    """The S3 server, its keys, a cluster that archives into it, and the role's scripts rendered for it."""

    def __init__(self, base: Path):
        self.base = base
        self.moto = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "10"})
        try:
            self.setup()
        except BaseException:
            stop_moto(self.moto)
            raise

    def setup(self) -> None:
        iam = boto3.client("iam", endpoint_url=self.moto.endpoint, aws_access_key_id="setup",
                           aws_secret_access_key="setup", region_name="us-east-1")
        self.keys = {}
        for user, doc in (("archiver", policy("archiver", ("s3:HeadBucket",))), ("restore", policy("restore", ("s3:HeadBucket",))),
                          ("owner", json.dumps({"Version": "2012-10-17", "Statement": [
                              {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            self.keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=doc)
        self.s3("owner").create_bucket(Bucket=BUCKET)
        self.data = self.base / "data"
        self.port = free_port()
        self.files = self.render()

    def s3(self, who: str):
        return boto3.client("s3", endpoint_url=self.moto.endpoint, aws_access_key_id=self.keys[who][0],
                            aws_secret_access_key=self.keys[who][1], region_name="us-east-1")

    def render(self) -> dict[str, Path]:
        conf = self.base / "conf"
        conf.mkdir()
        variables = {"pitr_name": "demo", "pitr_s3_bucket": BUCKET, "pitr_s3_endpoint_url": self.moto.endpoint,
                     "pitr_s3_region": "us-east-1", "pitr_s3_addressing_style": "path", "pitr_s3_sse": "none",
                     "pitr_postgresql_port": self.port, "_pitr_bin_dir": str(PG_BIN), "_pitr_data_dir": str(self.data),
                     "_pitr_credentials_file": str(conf / "credentials"),
                     "_pitr_restore_credentials_file": str(conf / "restore-credentials"),
                     "_pitr_aws_config_file": str(conf / "config")}
        for sub in ("render-server", "render-restore"):
            (self.base / sub).mkdir()
        texts = render_role_templates(self.base / "render-server", "pitr", SCRIPTS + ["etc/django-stack-pitr/credentials"],
                                      {**variables, "_pitr_key": {"access": self.keys["archiver"][0],
                                                                  "secret": self.keys["archiver"][1]}})
        restore_key = render_role_templates(self.base / "render-restore", "pitr", ["etc/django-stack-pitr/credentials"],
                                            {**variables, "_pitr_key": {"access": self.keys["restore"][0],
                                                                        "secret": self.keys["restore"][1]}})
        files = {}
        for name, text in {**texts, "restore-credentials": restore_key["etc/django-stack-pitr/credentials"]}.items():
            path = conf / Path(name).name
            path.write_text(text)
            path.chmod(0o755 if name.startswith("usr/") else 0o640)
            shutil.chown(path, "root", "postgres")
            files[Path(name).name] = path
        return files

    def psql(self, sql: str, port: int | None = None) -> str:
        return postgres(str(PG_BIN / "psql"), "-h", str(self.base), "-p", str(port or self.port), "-XAtc", sql).stdout.strip()

    def catalog(self, who: str, target: str = "latest", version: int = 0) -> dict:
        """The pitr_base_backups module, run as Ansible runs it on a server (Debian's python3)."""
        return run_module(self.base, "pitr_base_backups", {
            **self.s3_args(who), "target_time": target, "postgresql_version": version})

    def s3_args(self, who: str, prefix: str = PREFIX) -> dict:
        return {"s3_bucket": BUCKET, "s3_prefix": prefix, "s3_endpoint_url": self.moto.endpoint, "s3_region": "us-east-1",
                "s3_addressing_style": "path", "s3_access_key": self.keys[who][0], "s3_secret_key": self.keys[who][1]}

    def stop(self) -> None:
        for data in (self.data, self.base / "restored"):
            if data.exists():
                postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        stop_moto(self.moto)


@pytest.fixture(scope="module")
def archive():
    for tool in ("barman-cloud-wal-archive", "barman-cloud-backup", "barman-cloud-restore", "barman-cloud-wal-restore"):
        if not shutil.which(tool):
            missing_prerequisite(f"{tool} is absent: install barman-cli-cloud (scripts/bootstrap.sh does)")
    if os.geteuid() != 0:
        missing_prerequisite("the cluster runs as the postgres user with runuser, which needs root")
    base = Path(tempfile.mkdtemp(prefix="djtest-pitr-"))
    shutil.chown(base, "postgres", "postgres")
    base.chmod(0o755)
    try:
        archive = Archive(base)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        postgres(str(PG_BIN / "initdb"), "-D", str(archive.data), "--auth-local=trust", "-U", "postgres", "--no-sync")
        # The settings the postgresql role writes when postgresql_archive_command is set.
        with open(archive.data / "postgresql.conf", "a") as conf:
            conf.write(f"archive_mode = on\narchive_command = '{archive.files['django-stack-wal-archive']} %p'\n"
                       f"archive_timeout = 5\nlisten_addresses = ''\nport = {archive.port}\n"
                       f"unix_socket_directories = '{base}'\nfsync = off\n")
        postgres(str(PG_BIN / "pg_ctl"), "-D", str(archive.data), "-l", str(base / "log"), "-w", "start")
        yield archive
    finally:
        archive.stop()
        shutil.rmtree(base, ignore_errors=True)


def wait_archived(archive: Archive, after: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if archive.psql(f"SELECT coalesce(last_archived_time > '{after}', false) FROM pg_stat_archiver") == "t":
            return
        time.sleep(0.5)
    raise AssertionError(archive.psql("SELECT * FROM pg_stat_archiver") + (archive.base / "log").read_text()[-2000:])


STATE: dict = {}


def test_the_servers_key_archives_and_takes_a_base_backup_but_cannot_read_them(archive):
    archive.psql("CREATE TABLE notes (title text, at timestamptz DEFAULT clock_timestamp())")
    env = dict(os.environ, PGHOST=str(archive.base))
    backup = postgres(str(archive.files["django-stack-base-backup"]), env=env, check=False)
    assert backup.returncode == 0, backup.stderr[-2000:]
    objects = [o["Key"] for o in archive.s3("owner").list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]]
    sysid = postgres(str(PG_BIN / "pg_controldata"), str(archive.data)).stdout.split("Database system identifier:")[1].split()[0]
    assert any(k.startswith(f"{PREFIX}/pg-{sysid}/base/") and k.endswith("/backup.info") for k in objects), objects
    assert any(f"{PREFIX}/pg-{sysid}/wals/" in k for k in objects), objects
    # Not a byte of it comes back with the server's key, and the catalog says so.
    with pytest.raises(Exception, match="AccessDenied|Forbidden|403"):
        archive.s3("archiver").get_object(Bucket=BUCKET, Key=next(k for k in objects if k.endswith("backup.info")))
    refused = archive.catalog("archiver")
    assert refused.get("failed") and ("AccessDenied" in refused["msg"] or "403" in refused["msg"]), refused
    STATE["sysid"] = sysid


def test_a_restore_to_a_moment_has_the_rows_before_it_and_not_after(archive, tmp_path):
    archive.psql("INSERT INTO notes (title) VALUES ('before T1')")
    time.sleep(1.5)
    t1 = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    time.sleep(1.5)
    archive.psql("INSERT INTO notes (title) VALUES ('after T1')")
    wait_archived(archive, archive.psql("SELECT now()"))

    version = int(PG_BIN.parent.name)
    chosen = archive.catalog("restore", t1.isoformat(), version)
    assert not chosen.get("failed") and chosen["chosen"]["lineage"] == f"pg-{STATE['sysid']}", chosen
    assert chosen["chosen"]["version"] == version and chosen["newest_wal"]["name"], chosen
    # Moments the archive cannot reach, and a base backup of another major: refused, with the reason.
    before = archive.catalog("restore", "2020-01-01T00:00:00Z", version)
    assert before["chosen"] is None and "ended at" in before["reason"], before
    future = archive.catalog("restore", "2099-01-01T00:00:00+01:00", version)
    assert future.get("failed") and "in the future" in future["msg"], future
    other = archive.catalog("restore", "latest", version + 1)
    assert other["chosen"] is None and f"no base backup of PostgreSQL {version + 1}" in other["reason"], other
    assert archive.catalog("restore", "2026-12-06 14:03", version).get("failed")  # no time zone

    # The restore entry point's steps, with the role's scripts: the base backup, then a replay to T1.
    restored = archive.base / "restored"
    restored.mkdir(mode=0o700)
    shutil.chown(restored, "postgres", "postgres")
    env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=str(archive.files["restore-credentials"]),
               AWS_CONFIG_FILE=str(archive.files["config"]))
    download = postgres("barman-cloud-restore", "--cloud-provider", "aws-s3", "--endpoint-url", archive.moto.endpoint,
                        f"s3://{BUCKET}/{PREFIX}", chosen["chosen"]["lineage"], chosen["chosen"]["backup_id"], str(restored),
                        env=env, check=False)
    assert download.returncode == 0, download.stderr[-2000:]
    port = free_port()
    with open(restored / "postgresql.auto.conf", "a") as conf:
        conf.write(f"restore_command = '{archive.files['django-stack-wal-restore']} %f %p'\n"
                   f"recovery_target_time = '{t1.isoformat()}'\nrecovery_target_action = 'promote'\n"
                   f"archive_mode = off\nport = {port}\n")
    (restored / "recovery.signal").touch()
    shutil.chown(restored / "recovery.signal", "postgres", "postgres")
    started = postgres(str(PG_BIN / "pg_ctl"), "-D", str(restored), "-l", str(archive.base / "restored.log"), "-w", "-t", "120",
                       "start", check=False)
    assert started.returncode == 0, (archive.base / "restored.log").read_text()[-3000:]
    deadline = time.monotonic() + 60
    while archive.psql("SELECT pg_is_in_recovery()", port) != "f" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert archive.psql("SELECT title FROM notes ORDER BY at", port).splitlines() == ["before T1"]
    # The restore key file is what the restore puts in /run: the restore command read the archive with it.
    assert "restored log file" in (archive.base / "restored.log").read_text()


def test_an_unreachable_archive_raises_the_alarm_and_loses_nothing(archive):
    """The store unreachable (the archiver pointed at a closed port): the segment stays in pg_wal,
    the archive check fails once it has waited longer than pitr_archive_max_delay_minutes (10; the
    test ages the waiting files instead of waiting), and when the store is back the segment is
    archived and the check passes."""
    script = archive.files["django-stack-wal-archive"]
    good = script.read_text()
    script.write_text(good.replace(archive.moto.endpoint, f"http://127.0.0.1:{free_port()}"))
    archive.psql("SELECT pg_reload_conf()")
    failed_before = int(archive.psql("SELECT failed_count FROM pg_stat_archiver"))
    archive.psql("INSERT INTO notes (title) VALUES ('while the store is away')")
    segment = archive.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    archive.psql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 60
    while int(archive.psql("SELECT failed_count FROM pg_stat_archiver")) == failed_before and time.monotonic() < deadline:
        time.sleep(0.5)
    ready = archive.data / "pg_wal" / "archive_status" / f"{segment}.ready"
    assert ready.exists(), "the segment should wait in pg_wal"
    check = [str(archive.files["django-stack-wal-archive-check"])]
    env = dict(os.environ, PGHOST=str(archive.base))
    assert postgres(*check, env=env, check=False).returncode == 0  # not late yet
    stamp = time.time() - 11 * 60
    os.utime(ready, (stamp, stamp))
    alarm = postgres(*check, env=env, check=False)
    assert alarm.returncode == 1 and "waiting more than 10 minutes" in alarm.stderr, (alarm.stdout, alarm.stderr)
    assert "last failure" in alarm.stdout, alarm.stdout

    script.write_text(good)
    archive.psql("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 90
    while ready.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ready.exists(), archive.psql("SELECT * FROM pg_stat_archiver")
    keys = [o["Key"] for o in archive.s3("owner").list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/pg-{STATE['sysid']}/wals/")
            ["Contents"]]
    assert any(k.endswith(f"/{segment}.gz") for k in keys), keys
    ok = postgres(*check, env=env, check=False)
    assert ok.returncode == 0 and "archiving keeps up" in ok.stdout, ok.stderr


def fake_backup(s3, prefix: str, lineage: str, ended: dt.datetime, begin: int, end: int, status: str = "DONE") -> str:
    backup_id = (ended - dt.timedelta(minutes=5)).strftime("%Y%m%dT%H%M%S")
    info = (f"status={status}\nend_time={ended.isoformat()}\nbegin_wal=00000001{begin:016X}\n"
            f"end_wal=00000001{end:016X}\nversion=170000\ntimeline=1\n")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{lineage}/base/{backup_id}/backup.info", Body=info.encode())
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{lineage}/base/{backup_id}/data.tar.gz", Body=b"x")
    return f"{lineage}/{backup_id}"


def test_the_retention_keeps_what_each_kept_point_needs(archive):
    """Three complete base backups a week apart: with one day and two weeks kept, the oldest goes; the
    week-old one keeps the segments it needs to reach its end, and nothing between it and the
    newest's first segment; from the newest on, every segment. A lineage with no complete base
    backup is left alone; an unfinished base backup over a day old goes; history files stay."""
    prefix, s3 = "retention-test", archive.s3("owner")
    now = dt.datetime.now(dt.timezone.utc)
    newest = fake_backup(s3, prefix, "pg-1", now - dt.timedelta(hours=1), 0x70, 0x71)
    week = fake_backup(s3, prefix, "pg-1", now - dt.timedelta(days=8), 0x30, 0x31)
    oldest = fake_backup(s3, prefix, "pg-1", now - dt.timedelta(days=15), 0x10, 0x11)
    broken = fake_backup(s3, prefix, "pg-1", now - dt.timedelta(days=3), 0x40, 0x40, status="FAILED")
    for seg in range(0x10, 0x80):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/pg-1/wals/0000000100000000/00000001{seg:016X}.gz", Body=b"w")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/pg-1/wals/00000002.history", Body=b"h")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/pg-2/wals/0000000100000000/000000010000000000000001.gz", Body=b"w")
    args = {**archive.s3_args("owner", prefix), "keep_daily": 1, "keep_weekly": 2, "keep_monthly": 0}

    def keys() -> set[str]:
        return {o["Key"][len(prefix) + 1:] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")["Contents"]}

    before = keys()
    dry = run_module(archive.base, "pitr_prune", args, check=True, python=sys.executable)
    assert dry["changed"] and keys() == before, dry
    done = run_module(archive.base, "pitr_prune", args, python=sys.executable)
    assert done["kept"] == [week, newest] and sorted(done["pruned_backups"]) == sorted([oldest, broken]), done
    left = keys()
    segments = {int(k.split("/")[-1][8:24], 16) for k in left if k.startswith("pg-1/wals/") and k.endswith(".gz")}
    assert segments == {0x30, 0x31} | set(range(0x70, 0x80)), sorted(hex(s) for s in segments)
    assert "pg-1/wals/00000002.history" in left and "pg-2/wals/0000000100000000/000000010000000000000001.gz" in left
    assert not any(k.startswith(f"{oldest}/") or k.startswith(f"{broken}/") for k in (k.replace("/base", "") for k in left))
    again = run_module(archive.base, "pitr_prune", args, python=sys.executable)
    assert not again["changed"] and again["pruned_segments"] == 0, again
    # The servers' key may not prune.
    refused = run_module(archive.base, "pitr_prune", {**archive.s3_args("archiver"), "keep_daily": 1}, python=sys.executable)
    assert refused.get("failed"), refused
