"""django_backup and django_backup_info (the backup role's modules), retention, and the server's
command line as the role installs it, run for real: see backup_support.py for how. Restores are in
test_backup_restore.py, faults in test_backup_faults.py, the role's packaging in test_backup_install.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
import subprocess

import pytest
from backup_support import BIN, COUNTS, DOC_FRAGMENTS, LIBRARY, MIGRATIONS, PREFIX, backup, fake_set, play, run

pytestmark = pytest.mark.usefixtures("backup_host_tools")


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


def test_a_set_dated_in_the_future_is_suspect_never_counted_nor_pruned(env):
    """A server with a wrong clock, or a stolen key, writing a complete-looking set dated ahead: it
    would hold every retention slot while the real nightly sets got pruned, and pass freshness."""
    real = backup(env)["set_id"]
    future = "20991231T030000Z-f00001"
    fake_set(env, real, future)
    listing = run(env.tmp, "django_backup_info", **env.s3_args())
    by_id = {s["set_id"]: s for s in listing["sets"]}
    assert by_id[future]["complete"] is False and by_id[future]["suspect"] is True, by_id[future]
    assert "in the future" in by_id[future]["problem"] and listing["suspect"] == [future]
    assert listing["latest_complete"]["set_id"] == real
    assert any(future in w for w in listing.get("warnings", [])), listing
    pruned = run(env.tmp, "django_backup", **env.args(db_name=None, keep_daily=1, state="pruned",
                                                      incomplete_grace_hours=0))
    assert pruned["_rc"] == 0, pruned.get("msg")
    assert [k["set_id"] for k in pruned["kept"]] == [real] and pruned["suspect"] == [future]
    assert future not in pruned["pruned"] + pruned["removed_incomplete"]
    assert any(future in w for w in pruned.get("warnings", [])), pruned
    assert {k.split("/")[2] for k in env.keys()} == {real, future}
    # the newest complete set is the real one; a restore of the suspect one by name is refused
    refused = run(env.tmp, "django_restore", backup_set=future, media_restore_mode="skip", download_dir=str(env.tmp),
                  **env.args())
    assert refused["_rc"] != 0 and "in the future" in refused["msg"], refused.get("msg")


def test_freshness_fails_on_a_set_from_a_clock_ahead(env):
    config = env.args(media_root=str(env.media))
    rc, made, err = env.cli(config, "backup")
    assert rc == 0, err
    ahead = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).strftime("%Y%m%dT%H%M%SZ") + "-f00002"
    fake_set(env, made["set_id"], ahead, prefix="ahead/site")
    rc, fresh, err = env.cli(dict(config, s3_prefix="ahead/site"), "check-freshness", "--max-age-hours", "26")
    assert rc == 1 and ahead in err and "in the future" in err, err


# --- the command line (what the systemd timer runs) ------------------------------------------------------

def test_cli_backup_list_freshness_prune(env):
    config = env.args(media_root=str(env.media), keep_daily=7)
    rc, empty, err = env.cli(config, "check-freshness", "--max-age-hours", "26")
    assert rc == 1 and empty is None and "no complete backup set" in err
    rc, made, err = env.cli(config, "backup")
    assert rc == 0, err
    assert made["command"] == "backup" and made["changed"] is True and made["manifest"]["database"]["tables"] == COUNTS
    assert isinstance(made["peak_rss_kb"], int) and 10_000 < made["peak_rss_kb"] < 200_000
    assert made["retention"]["kept"][0]["set_id"] == made["set_id"]
    rc, listing, err = env.cli(config, "list", "--set", "latest")
    assert rc == 0 and listing["complete_count"] == 1 and listing["manifest"]["set_id"] == made["set_id"]
    rc, fresh, err = env.cli(config, "check-freshness", "--max-age-hours", "26")
    assert rc == 0 and fresh["latest_complete"] == made["set_id"]
    fake_set(env, made["set_id"], "20250101T030000Z-e00001", prefix="old/site")
    rc, stale, err = env.cli(dict(config, s3_prefix="old/site"), "check-freshness", "--max-age-hours", "26")
    assert rc == 1 and "20250101T030000Z-e00001" in err and "hours old (more than 26" in err
    rc, dry, err = env.cli(config, "prune", "--check")
    assert rc == 0 and dry["would_prune"] == [] and dry["changed"] is False
    rc, drill, err = env.cli(config, "-o", "db_restore_mode=scratch", "-o", f"db_scratch_name={env.db}_cli",
                             "restore", "-o", "media_restore_mode=skip", "-o", f"download_dir={env.tmp}")
    assert rc == 0, err
    assert drill["set_id"] == made["set_id"] and env.counts(env.db + "_cli") == COUNTS
    rc, bad, err = env.cli(dict(config, bucket="x"), "list")
    assert rc == 1 and "unknown option(s) bucket" in err
    broken = env.tmp / "broken.json"
    broken.write_text("{not json")
    proc = subprocess.run([str(env.command), "--config", str(broken), "list"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1 and "is not valid JSON" in proc.stderr


@pytest.mark.parametrize("module", ["django_backup", "django_backup_info", "django_restore"])
def test_ansible_doc_renders(module):
    proc = subprocess.run([str(BIN / "ansible-doc"), "-M", str(LIBRARY), module], capture_output=True,
                          text=True, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_DOC_FRAGMENT_PLUGINS=str(DOC_FRAGMENTS)))
    assert proc.returncode == 0, proc.stderr
    assert "s3_bucket" in proc.stdout and "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout
    assert "ERROR" not in proc.stderr


def prom_values(path) -> dict:
    """{metric name: value} of a textfile-collector file, checking its format as the collector would."""
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            assert line.split()[1] in ("HELP", "TYPE"), line
            continue
        name, value = line.rsplit(" ", 1)
        metric, labels = name.split("{", 1)
        assert labels == 'site="demoapp"}', line
        values[metric] = float(value)
    return values


def test_cli_writes_the_metrics_of_a_backup_and_of_each_freshness_check(env):
    """--metrics-file: the node exporter's textfile collector reads what the nightly backup and the
    freshness check measured, also when the check fails, and every user may read it (the exporter
    runs as its own user)."""
    config = env.args(media_root=str(env.media))
    metrics = env.tmp / "metrics"
    metrics.mkdir()
    site = ["--metrics-site", "demoapp"]
    fresh_file, backup_file = metrics / "freshness.prom", metrics / "backup.prom"
    before = time.time()
    rc, made, err = env.cli(config, "--metrics-file", str(backup_file), *site, "backup")
    assert rc == 0, err
    written = prom_values(backup_file)
    assert before <= written["django_stack_backup_last_success_timestamp_seconds"] <= time.time()
    assert written["django_stack_backup_last_size_bytes"] == made["size"] > 0
    assert written["django_stack_backup_last_duration_seconds"] == made["timings"]["total"] > 0
    assert backup_file.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in metrics.iterdir()] == ["backup.prom"]  # no temporary file left

    rc, fresh, err = env.cli(config, "--metrics-file", str(fresh_file), *site, "check-freshness", "--max-age-hours", "26")
    assert rc == 0, err
    checked = prom_values(fresh_file)
    assert checked["django_stack_backup_freshness_check_success"] == 1
    assert abs(checked["django_stack_backup_newest_complete_set_timestamp_seconds"] - before) < 60

    # A stale newest set: the check fails, and the metrics say how old the set is.
    fake_set(env, made["set_id"], "20250101T030000Z-e00001", prefix="old/site")
    rc, _, err = env.cli(dict(config, s3_prefix="old/site"), "--metrics-file", str(fresh_file), *site,
                         "check-freshness", "--max-age-hours", "26")
    assert rc == 1, err
    stale = prom_values(fresh_file)
    assert stale["django_stack_backup_freshness_check_success"] == 0
    assert stale["django_stack_backup_newest_complete_set_timestamp_seconds"] == \
        dt.datetime(2025, 1, 1, 3, 0, tzinfo=dt.timezone.utc).timestamp()

    # A store that cannot be read: failed, no date.
    rc, _, err = env.cli(dict(config, s3_bucket="no-such-bucket-djstack"), "--metrics-file", str(fresh_file), *site,
                         "check-freshness", "--max-age-hours", "26")
    assert rc == 1
    assert prom_values(fresh_file) == {"django_stack_backup_freshness_check_success": 0,
                                       "django_stack_backup_freshness_check_timestamp_seconds": pytest.approx(time.time(), abs=60)}
    # A failed backup leaves the last success's metrics as they were.
    rc, _, err = env.cli(dict(config, db_name="no_such_database"), "--metrics-file", str(backup_file), *site, "backup")
    assert rc == 1 and prom_values(backup_file) == written
