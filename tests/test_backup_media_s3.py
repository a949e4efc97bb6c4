"""Media in an S3 bucket (the app's django-storages bucket, media_s3_*), backed up and restored by the
backup role's modules for real, against moto's S3 server: each object streamed into the set with its
SHA-256 in the manifest; a restore that needs the bucket's versioning, uploads what differs, deletes
the keys the set does not hold last, and leaves the previous objects as noncurrent versions.
See backup_support.py for how the modules run."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from backup_support import BIN, COUNTS, KEY_ID, PREFIX, ROLE, SECRET, ansible_env, fake_set, play, run

pytestmark = pytest.mark.usefixtures("backup_host_tools")

MEDIA = {
    "uploads/photo.png": b"\x89PNG" + bytes(range(256)) * 200,
    "uploads/r\u00e9sum\u00e9 2026.pdf": b"%PDF" + b"x" * 70_000,
    "thumbnails/thumb-1.png": b"\x89PNG small",
}


@pytest.fixture
def media(env):
    """The app's media bucket, beside the backup bucket, with versioning on and a folder marker."""
    name = env.bucket + "-media"
    env.s3.create_bucket(Bucket=name)
    env.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    for key, body in MEDIA.items():
        env.s3.put_object(Bucket=name, Key=key, Body=body, ContentType="image/png" if key.endswith(".png") else
                          "application/pdf")
    env.s3.put_object(Bucket=name, Key="uploads/", Body=b"")
    return name


def media_args(env, bucket: str, **extra) -> dict:
    return env.args(media_s3_bucket=bucket, media_s3_endpoint_url=env.moto.endpoint, media_s3_region="us-east-1",
                    media_s3_access_key=KEY_ID, media_s3_secret_key=SECRET, media_s3_addressing_style="path", **extra)


def contents(env, bucket: str) -> dict:
    listed = env.s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: env.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed
            if not o["Key"].endswith("/")}


def test_backup_streams_every_object_with_its_checksum(env, media):
    result = run(env.tmp, "django_backup", **media_args(env, media))
    assert result["_rc"] == 0, result.get("msg")
    entry = result["manifest"]["media"]
    assert entry["bucket"] == media and entry["files"] == 3 and entry["bytes"] == sum(map(len, MEDIA.values()))
    assert {o["key"]: o["sha256"] for o in entry["objects"]} == \
        {k: hashlib.sha256(v).hexdigest() for k, v in MEDIA.items()}
    assert [o["name"] for o in result["manifest"]["objects"]] == ["db.dump", "media.tar"]
    # The set's media.tar holds the objects' bytes under their keys.
    tar = env.tmp / "media.tar"
    tar.write_bytes(env.get(f"{PREFIX}/{result['set_id']}/media.tar"))
    out = env.tmp / "x"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(out)], check=True)
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == MEDIA
    # Check mode lists the bucket, uploads nothing.
    plan = run(env.tmp, "django_backup", check=True, **media_args(env, media))
    assert plan["media"]["files"] == 3 and plan["media"]["bucket"] == media
    assert f"s3://{media}" in plan["objects"][1]["source"]


def test_restore_puts_the_set_back_and_keeps_the_previous_objects_as_versions(env, media):
    set_id = run(env.tmp, "django_backup", **media_args(env, media))["set_id"]
    env.change_live_data()
    env.s3.put_object(Bucket=media, Key="uploads/photo.png", Body=b"overwritten after the backup")
    env.s3.delete_object(Bucket=media, Key="thumbnails/thumb-1.png")
    env.s3.put_object(Bucket=media, Key="uploads/new.bin", Body=b"new")
    download = env.tmp / "download"
    download.mkdir()
    result = run(env.tmp, "django_restore", download_dir=str(download), **media_args(env, media))
    assert result["_rc"] == 0, result.get("msg")
    assert result["set_id"] == set_id and env.counts() == COUNTS
    report = result["media"]
    assert report["mode"] == "swap" and report["files"] == 3
    assert (report["uploaded"], report["unchanged"], report["deleted"]) == (2, 1, 1)
    assert contents(env, media) == MEDIA
    assert env.s3.head_object(Bucket=media, Key="uploads/photo.png")["ContentType"] == "image/png"
    versions = env.s3.list_object_versions(Bucket=media)
    kept = {(v["Key"], v["IsLatest"]) for v in versions.get("Versions", [])}
    assert ("uploads/new.bin", False) in kept  # deleted: a delete marker on top, the object kept
    assert {m["Key"] for m in versions.get("DeleteMarkers", []) if m["IsLatest"]} == {"uploads/new.bin"}
    previous = [v for v in versions["Versions"] if v["Key"] == "uploads/photo.png" and not v["IsLatest"]]
    assert b"overwritten after the backup" in [
        env.s3.get_object(Bucket=media, Key=v["Key"], VersionId=v["VersionId"])["Body"].read() for v in previous]
    assert list(download.iterdir()) == []
    # A second restore uploads and deletes nothing.
    again = run(env.tmp, "django_restore", download_dir=str(download), **media_args(env, media))
    assert (again["media"]["uploaded"], again["media"]["unchanged"], again["media"]["deleted"]) == (0, 3, 0)


def test_restore_refuses_a_bucket_without_versioning_before_any_change(env, media):
    run(env.tmp, "django_backup", **media_args(env, media))
    plain = env.bucket + "-plain"
    env.s3.create_bucket(Bucket=plain)
    env.s3.put_object(Bucket=plain, Key="uploads/live.txt", Body=b"live")
    env.change_live_data()
    result = run(env.tmp, "django_restore", download_dir=str(env.tmp), **media_args(env, plain))
    assert result["_rc"] != 0 and "has no versioning" in result["msg"] and "nothing was changed" in result["msg"]
    assert contents(env, plain) == {"uploads/live.txt": b"live"}
    assert env.databases() == [env.db] and env.counts() != COUNTS


def test_an_object_whose_checksum_differs_from_the_manifest_is_never_restored(env, media):
    set_id = run(env.tmp, "django_backup", **media_args(env, media))["set_id"]

    def tamper(manifest):
        manifest["media"]["objects"][0]["sha256"] = "0" * 64

    fake_set(env, set_id, "20260101T000000Z-aaaaaa", edit=tamper)
    env.s3.put_object(Bucket=media, Key="uploads/new.bin", Body=b"new")
    before = contents(env, media)
    env.change_live_data()
    result = run(env.tmp, "django_restore", backup_set="20260101T000000Z-aaaaaa", download_dir=str(env.tmp),
                 **media_args(env, media))
    assert result["_rc"] != 0
    assert "does not have the SHA-256 the manifest records" in result["msg"], result["msg"]
    assert contents(env, media) == before and env.databases() == [env.db]


def test_encrypted_set_of_a_bucket_drilled_into_a_scratch_directory(env, media):
    subprocess.run(["age-keygen", "-o", str(env.tmp / "key")], check=True, capture_output=True)
    text = (env.tmp / "key").read_text()
    recipient = next(line.split(": ")[1] for line in text.splitlines() if "public key" in line)
    result = run(env.tmp, "django_backup", encrypt_recipients=[recipient], **media_args(env, media))
    assert result["_rc"] == 0, result.get("msg")
    body = env.get(f"{PREFIX}/{result['set_id']}/media.tar.age")
    assert body.startswith(b"age-encryption.org/v1") and b"thumb-1" not in body
    scratch = env.tmp / "drill" / "media"
    drill = run(env.tmp, "django_restore", db_restore_mode="skip", media_restore_mode="scratch",
                media_scratch_dir=str(scratch), download_dir=str(env.tmp), age_identity=text, **env.args())
    assert drill["_rc"] == 0, drill.get("msg")
    assert {str(p.relative_to(scratch)): p.read_bytes() for p in scratch.rglob("*") if p.is_file()} == MEDIA


def test_media_root_and_a_media_bucket_are_refused_together(env, media):
    rc, (both, half) = play(env.tmp, [
        ("django_backup", media_args(env, media, media_root=str(env.media)), False),
        ("django_backup", dict(media_args(env, media), media_s3_secret_key=None), False),
    ], keep_going=True)
    assert both["failed"] and "media_root" in both["msg"] and "media_s3_bucket" in both["msg"]
    assert half["failed"] and "media_s3_access_key and media_s3_secret_key go together" in half["msg"]
    assert env.keys() == []


ROLE_CONFIG_PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  tasks:
    - ansible.builtin.copy:
        content: "{{{{ _backup_config | to_json }}}}"
        dest: "{out}"
        mode: "0600"
"""


def role_config(env, **variables) -> dict:
    """The server's configuration file as the backup role writes it (its _backup_config)."""
    out = env.tmp / f"config-{len(variables)}.json"
    book = env.tmp / "config-play.yml"
    book.write_text(ROLE_CONFIG_PLAY.format(role=ROLE, out=out))
    base = dict(backup_name="demo", backup_s3_bucket=env.bucket, backup_s3_prefix=PREFIX,
                backup_s3_endpoint_url=env.moto.endpoint, backup_s3_region="us-east-1", backup_s3_access_key=KEY_ID,
                backup_s3_secret_key=SECRET, backup_db_name=env.db, backup_db_host=env.cluster.host,
                backup_db_port=env.cluster.port, backup_db_owner="x", backup_media_root=str(env.media),
                backup_media_owner="nobody", backup_media_group="nogroup", backup_media_s3_bucket="",
                backup_media_s3_endpoint_url="", backup_media_s3_region="", backup_media_s3_addressing_style="auto",
                backup_release_path="", backup_env_file="/dev/null", backup_app_user="nobody",
                backup_encrypt_recipients=[])
    extra = env.tmp / "config-vars.json"
    extra.write_text(json.dumps({**base, **variables}))
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(book),
                           "-e", f"@{extra}"], capture_output=True, text=True, check=False, timeout=120,
                          env=ansible_env(env.tmp))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_the_role_configures_the_nightly_backup_of_the_bucket(env, media):
    local = role_config(env)
    assert local["media_root"] == str(env.media) and not any(k.startswith("media_s3") for k in local)
    config = role_config(env, backup_media_s3_bucket=media, backup_media_s3_endpoint_url=env.moto.endpoint,
                         backup_media_s3_region="us-east-1", backup_media_s3_addressing_style="path",
                         backup_media_s3_access_key=KEY_ID, backup_media_s3_secret_key=SECRET)
    assert "media_root" not in config and config["media_s3_bucket"] == media
    config.pop("release_path", None)
    rc, made, err = env.cli(config, "backup")  # the command the nightly timer runs
    assert rc == 0, err
    assert made["manifest"]["media"]["bucket"] == media and made["manifest"]["media"]["files"] == 3
