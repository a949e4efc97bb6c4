"""Uploads in a bucket (group_vars/all/zz-media.yml): web1, web2 and the worker are three hosts, and
each reads every upload from the S3-compatible bucket (moto, the scenario's endpoint), none from its
own disk. An upload through web1 is served byte for byte through web2, the worker's thumbnail of it
is readable through both web servers, and the backup set from web1 holds the bucket's objects.

The pages link presigned URLs of the bucket (http://s3:5000/... on the private network): each is
fetched from inside the web server whose page listed it, as its visitors' browsers would.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import struct
import time
import zlib

import pytest
import testinfra

from stackhelpers import APP_ROOT, APP_USER, curl, group_hosts, http_status, post_form, run_playbook

BASE = "https://localhost"
WEB1, WEB2 = sorted(group_hosts("webservers"))
WORKER, = group_hosts("workers")
BACKUP, = group_hosts("backupservers")
BUCKET = "djstack-cluster-media"
# What the tests leave for the next ones (they run in file order): the file uploaded through web1,
# and the bucket's keys when the backup was taken.
STATE: dict = {}


def server(name: str):
    return testinfra.get_host(f"podman://{name}")


def png(width: int, height: int) -> bytes:
    """A plain RGB PNG, made without Pillow (the controller's tests need none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes((40, 90, 200)) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def put_file(host, name: str, content: bytes) -> None:
    host.check_output(f"echo {base64.b64encode(content).decode()} | base64 -d > /tmp/{name}")


def fetch(host, url: str) -> bytes:
    """The bytes at url, as the server gets them (curl inside it), checked for a 200."""
    result = host.run(f"curl -sS --max-time 20 -o /tmp/fetched -w '%{{http_code}}' '{url}' "
                      "&& base64 -w0 /tmp/fetched && rm -f /tmp/fetched")
    assert result.rc == 0 and result.stdout.startswith("200"), (url, result.stdout[:200], result.stderr)
    return base64.b64decode(result.stdout[3:])


def listed_url(host, name: str) -> str:
    """The URL the uploads page of host links for the upload named name (its stem, as Django may
    add a suffix to a name already taken)."""
    stem = name.rsplit(".", 1)[0]
    page = curl(host, f"{BASE}/uploads/", "-k").stdout
    found = re.findall(r'<a href="([^"]*/uploads/' + re.escape(stem) + r'[^"]*)"', page)
    assert len(found) == 1, page[-3000:]
    return html.unescape(found[0])


def app_env(name: str) -> dict[str, str]:
    content = server(name).file(f"{APP_ROOT}/shared/env").content_string
    return dict(re.findall(r"^([A-Z_0-9]+)='(.*)'$", content, re.M))


def in_bucket(host, listing: str):
    """What an S3 listing of the media bucket gives (`c` the client, `b` the bucket), run with the
    app's own boto3 and settings on host."""
    script = ("import boto3, os, json; e = os.environ; c = boto3.client('s3', endpoint_url=e['DJANGO_MEDIA_S3_ENDPOINT_URL'], "
              "region_name=e['DJANGO_MEDIA_S3_REGION'], aws_access_key_id=e['DJANGO_MEDIA_S3_ACCESS_KEY'], "
              "aws_secret_access_key=e['DJANGO_MEDIA_S3_SECRET_KEY']); b = e['DJANGO_MEDIA_S3_BUCKET']; "
              f"print(json.dumps({listing}))\n")
    # A file, not -c: the script's quotes would end the shell's.
    put_file(host, "list-media-bucket.py", script.encode())
    command = (f"set -a; . {APP_ROOT}/shared/env; set +a; cd {APP_ROOT}/current && .venv/bin/python /tmp/list-media-bucket.py")
    return json.loads(host.check_output(f"runuser -u {APP_USER} -- sh -c '{command}'"))


def bucket_keys(host) -> list[str]:
    """The keys in the media bucket (its current objects)."""
    return sorted(in_bucket(host, "[o['Key'] for p in c.get_paginator('list_objects_v2').paginate(Bucket=b) "
                                  "for o in p.get('Contents', [])]"))


@pytest.mark.parametrize("name", [WEB1, WEB2, WORKER])
def test_every_app_host_keeps_its_uploads_in_the_bucket(name):
    env = app_env(name)
    assert env["DJANGO_MEDIA_S3_BUCKET"] == BUCKET and env["DJANGO_MEDIA_S3_ENDPOINT_URL"] == "http://s3:5000"


@pytest.mark.parametrize("name", [WEB1, WEB2])
def test_nginx_serves_no_media_from_disk(name):
    site = server(name).check_output("nginx -T 2>/dev/null")
    assert "location /media/" not in site and f"{APP_ROOT}/shared/media" not in site


def test_a_file_uploaded_through_web1_is_served_byte_for_byte_through_web2():
    web1, web2 = server(WEB1), server(WEB2)
    name = f"media-{secrets.token_hex(4)}.bin"
    # Within one command line's limit once in base64 (put_file).
    content = secrets.token_bytes(60_000)
    put_file(web1, name, content)
    assert post_form(web1, "/uploads/", f"file=@/tmp/{name}") == "302"
    url = listed_url(web2, name)
    assert url.startswith(f"http://s3:5000/{BUCKET}/uploads/") and "X-Amz-Signature=" in url, url
    got = fetch(web2, url)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(content).hexdigest()
    STATE["file"] = (name, content)
    # web1's own link gives the same bytes.
    assert fetch(web1, listed_url(web1, name)) == content


def test_a_thumbnail_made_by_the_worker_is_readable_through_both_web_servers():
    web1 = server(WEB1)
    name = f"photo-{secrets.token_hex(4)}.png"
    put_file(web1, name, png(640, 320))
    assert post_form(web1, "/uploads/", f"file=@/tmp/{name}") == "302"
    # The web server queues make_thumbnail; only the worker (on its own host) runs Celery.
    deadline = time.monotonic() + 60
    while True:
        found = {host: [t for t in json.loads(curl(server(host), f"{BASE}/jobs/status", "-k").stdout)["thumbnails"]
                        if t["upload"] == name] for host in (WEB1, WEB2)}
        if all(found.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert all(found.values()), found
    for host, thumbnails in found.items():
        url = thumbnails[0]["url"]
        assert url.startswith(f"http://s3:5000/{BUCKET}/thumbnails/"), url
        image = fetch(server(host), url)
        assert image[:8] == b"\x89PNG\r\n\x1a\n", host
        assert struct.unpack(">II", image[16:24]) == (128, 64), host
    # Nothing landed on any host's disk: the upload and its thumbnail are the bucket's only.
    for host in (WEB1, WEB2, WORKER):
        left = server(host).run(f"find {APP_ROOT}/shared/media -type f 2>/dev/null").stdout.strip()
        assert left == "", (host, left)


def test_the_backup_from_web1_holds_the_buckets_objects_and_the_drill_counts_them():
    keys = bucket_keys(server(BACKUP))
    STATE["keys"] = keys
    assert any(k.startswith("uploads/") for k in keys) and any(k.startswith("thumbnails/") for k in keys), keys
    result = run_playbook("playbooks/backup.yml")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    result = run_playbook("playbooks/restore-drill.yml")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    counted = re.search(r"rows and ([0-9]+) media files", result.stdout)
    assert counted, result.stdout[-3000:]
    # Every object of the bucket, and only those: the set was made from the bucket, not a disk.
    assert int(counted.group(1)) == len(keys), (counted.group(0), keys)


def test_a_restore_puts_the_buckets_objects_of_the_set_back():
    """The set over the live site: a file uploaded after the backup leaves the bucket (its bytes kept
    as a noncurrent version: the bucket is versioned) and the pages; what the set holds is served again."""
    assert "keys" in STATE and "file" in STATE, "needs the tests above"
    web1, web2 = server(WEB1), server(WEB2)
    later = f"after-{secrets.token_hex(4)}.txt"
    put_file(web2, later, b"uploaded after the backup")
    assert post_form(web2, "/uploads/", f"file=@/tmp/{later}") == "302"
    later_key = next(k for k in bucket_keys(server(BACKUP)) if k.startswith(f"uploads/{later[:-4]}"))
    result = run_playbook("playbooks/restore.yml")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert re.search(r"noncurrent versions in s3://" + BUCKET, result.stdout), result.stdout[-3000:]
    assert bucket_keys(server(BACKUP)) == STATE["keys"]
    versions = in_bucket(server(BACKUP), "[v['Key'] for v in c.list_object_versions(Bucket=b, Prefix='uploads/')"
                                         ".get('Versions', []) if not v['IsLatest']]")
    assert later_key in versions, versions
    # The database is the set's too: the later upload is listed nowhere; the earlier file is served again.
    name, content = STATE["file"]
    for host in (web1, web2):
        assert http_status(host, f"{BASE}/healthz") == 200
        assert later[:-4] not in curl(host, f"{BASE}/uploads/", "-k").stdout
    assert fetch(web2, listed_url(web2, name)) == content
