"""What goes wrong, for real: an unreachable endpoint, wrong credentials (a second moto server with
IAM authentication on), a corrupted object, an upload killed or stopped mid-way, a failing pg_dump or
pg_restore, a full disk, bad input. Each fails naming what to check and leaves the live data, and
the bucket, as they were. See backup_support.py for how the modules and the command run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import boto3
import pytest
from backup_support import COUNTS, OWNER, PREFIX, backup, fake_set, media_digest, play, run
from conftest import start_moto, stop_moto, missing_prerequisite

pytestmark = pytest.mark.usefixtures("backup_host_tools")


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
    code, out, err = env.cli(args, "backup")  # the timer's path: a non-zero exit and the message on stderr
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
    code, out, err = env.cli(dict(args, s3_secret_key="not-the-" + secret[:8]), "backup")
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
    proc = subprocess.Popen([str(env.command), "--config", str(path), "backup"], stdout=subprocess.PIPE,
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
        missing_prerequisite(f"cannot mount a tmpfs here (root and a kernel that allows it): {proc.stderr.strip()}")
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
    rc, (swap, scratch) = play(env.tmp, [
        ("django_restore", env.args(media_restore_mode="skip", download_dir=str(env.tmp)), False),
        ("django_restore", env.args(db_restore_mode="scratch", db_scratch_name=env.db + "_drill",
                                    download_dir=str(env.tmp)), False),
    ], keep_going=True)
    for result in (swap, scratch):
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
         "media_restore_mode is swap but any of the following are missing: media_root, media_s3_bucket"),
        ("django_restore", dict(base, download_dir="/nonexistent"), "download_dir /nonexistent is not a directory"),
    ]
    cases = [(m, {k: v for k, v in a.items() if v is not None}, msg) for m, a, msg in cases]
    rc, results = play(env.tmp, [(module, args, False) for module, args, _ in cases], keep_going=True)
    assert len(results) == len(cases)
    for (module, _, message), result in zip(cases, results):
        assert result.get("failed") is True, (module, message, result)
        assert message in result["msg"], (module, message, result["msg"])
    assert env.keys("") == []


def test_a_dump_of_a_newer_postgresql_is_refused_before_anything_changes(env):
    """A set dumped from a newer major (a newer Debian release's PostgreSQL) cannot be restored onto this
    server's: the restore says so and what to do, before it downloads or changes anything."""
    source = backup(env)["set_id"]
    newer = "20250101T000000Z-a00001"  # an older set: a future-dated one is suspect and refused anyway
    fake_set(env, source, newer, edit=lambda manifest: manifest["database"].update(server_version="99.1"))
    env.change_live_data()
    counts = env.counts()
    result = run(env.tmp, "django_restore", **env.args(backup_set=newer, download_dir=str(env.tmp)))
    assert result["_rc"] != 0 and result.get("changed") is not True
    assert "dumped from PostgreSQL 99.1" in result["msg"] and "PostgreSQL 99 or later" in result["msg"], result["msg"]
    assert env.counts() == counts and env.databases() == [env.db]
    assert not list(env.tmp.glob("django-restore-*"))

