"""The backup role's two keys, with the policies it ships (roles/backup/policies/), on an S3 server
that enforces them (moto with IAM), in a bucket with versioning and object lock: the server's key
backs up, lists and restores but cannot delete; the control node's key prunes; a pruned set's
objects stay as locked noncurrent versions. See backup_support.py for how the modules run."""

from __future__ import annotations

import json

import boto3
import pytest
from backup_support import PREFIX, ROLE, backup, fake_set, play, run
from conftest import start_moto, stop_moto

pytestmark = pytest.mark.usefixtures("backup_host_tools")

BUCKET = "locked-backups"
USERS = ("server", "controller", "owner")


def policy(name: str) -> str:
    text = (ROLE / "policies" / f"{name}.json").read_text()
    return text.replace("BUCKET", BUCKET).replace("PREFIX", PREFIX)


@pytest.fixture(scope="module")
def locked_store():
    """moto enforcing IAM after the setup's 9 requests (3 users, their keys and policies); the bucket
    is made by the owner, with object lock (which turns versioning on) and a default retention."""
    server = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "9"})
    try:
        iam = boto3.client("iam", endpoint_url=server.endpoint, aws_access_key_id="setup",
                           aws_secret_access_key="setup", region_name="us-east-1")
        keys = {}
        for user in USERS:
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        iam.put_user_policy(UserName="server", PolicyName="backup", PolicyDocument=policy("server"))
        iam.put_user_policy(UserName="controller", PolicyName="prune", PolicyDocument=policy("controller"))
        iam.put_user_policy(UserName="owner", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        owner = client(server, keys["owner"])
        owner.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        owner.put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
        yield server, keys
    finally:
        stop_moto(server)


def client(server, key):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        region_name="us-east-1")


def test_the_servers_key_adds_sets_and_cannot_destroy_them(env, locked_store):
    server, keys = locked_store
    owner = client(server, keys["owner"])
    assert owner.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    as_server = dict(s3_endpoint_url=server.endpoint, s3_bucket=BUCKET, s3_access_key=keys["server"][0],
                     s3_secret_key=keys["server"][1])
    as_controller = dict(as_server, s3_access_key=keys["controller"][0], s3_secret_key=keys["controller"][1])
    first = backup(env, **as_server)["set_id"]
    older = "20260101T031500Z" + first[16:]  # a set of a past day, as the nightly sets leave them
    env.bucket, env.s3 = BUCKET, owner
    fake_set(env, first, older)

    # The server's key: lists and restores (a drill), cannot prune or delete.
    rc, (listing, drill, prune) = play(env.tmp, [
        ("django_backup_info", env.s3_args(**as_server), False),
        ("django_restore", env.args(db_restore_mode="scratch", db_scratch_name=env.db + "_drill",
                                    download_dir=str(env.tmp), **as_server), False),
        ("django_backup", env.s3_args(state="pruned", keep_daily=1, **as_server), False),
    ], keep_going=True)
    assert listing["complete_count"] == 2 and not drill.get("failed"), drill.get("msg")
    assert prune["failed"] and "AccessDenied" in prune["msg"]
    with pytest.raises(Exception, match="AccessDenied"):
        client(server, keys["server"]).delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{older}/COMPLETE")

    # The control node's key prunes what the retention does not keep (one set a day: the older one
    # is kept as its day's, so keep one day only).
    pruned = run(env.tmp, "django_backup", **env.s3_args(state="pruned", keep_daily=1, **as_controller))
    assert pruned["_rc"] == 0, pruned.get("msg")
    assert pruned["pruned"] == [older] and [k["set_id"] for k in pruned["kept"]] == [first]
    listing = run(env.tmp, "django_backup_info", **env.s3_args(**as_server))
    assert [s["set_id"] for s in listing["sets"]] == [first]

    # The pruned set's objects stay, as noncurrent versions that no key can delete while locked.
    versions = owner.list_object_versions(Bucket=BUCKET, Prefix=f"{PREFIX}/{older}/")
    kept = [v for v in versions.get("Versions", []) if not v["IsLatest"]]
    assert {v["Key"].rsplit("/", 1)[1] for v in kept} >= {"manifest.json", "COMPLETE"}
    assert len(versions.get("DeleteMarkers", [])) == len({v["Key"] for v in kept})
    for who in ("controller", "owner"):
        with pytest.raises(Exception, match="AccessDenied"):
            client(server, keys[who]).delete_object(Bucket=BUCKET, Key=kept[0]["Key"], VersionId=kept[0]["VersionId"])
