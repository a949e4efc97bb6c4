#!/usr/bin/env python3
"""Point-in-time recovery figures for the pitr role, next to the nightly dump's.

One run, on this machine, everything on loopback and removed at the end:

1. moto's S3 server, and a throwaway PostgreSQL cluster (the release's) that archives its WAL
   through the role's own archiver script (rendered from roles/pitr/templates, barman-cloud from
   Debian) with the role's default archive_timeout (30 s); a generated database (pgbench's tables,
   --scale 30 is about 450 MiB);
2. the role's base backup script, and a pg_dump -Fc of the same database uploaded next to it (what
   a nightly backup set holds: the baseline);
3. a steady write load (one commit every 100 ms, each row stamped with its commit time) for
   --load-seconds, then the server "dies" (pg_ctl stop -m immediate: the archiver gets no last
   chance);
4. RPO: the newest row a restore to latest recovers, next to the last row committed; the
   baseline's RPO is the age of the dump at the crash (what a dump-only site loses);
5. restore time: barman-cloud-restore of the base backup and the replay of the archive to latest
   (what the role's restore does), next to the download and pg_restore of the dump into a new
   database (the same rows, without the load's).

Prints each figure, its baseline and the ratio. Targets: RPO <= 60 s (the issue's bound).

Usage: sudo .venv/bin/python bench/pitr.py [--scale 30] [--load-seconds 150] (`make bench-pitr`).
Needs root (the clusters run as postgres), postgresql, barman-cli-cloud and the test requirements
(moto[server]); scripts/bootstrap.sh installs them. About 6 minutes on 2 cores, a few GB of disk
under $BENCH_TMPDIR (default /var/tmp).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from benchlib import free_port, log  # noqa: E402
from role_templates import render_role_templates  # noqa: E402  (the role's own scripts, rendered)

PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
             default=Path("/usr/lib/postgresql/15/bin"))
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
BUCKET, PREFIX = "bench-pitr", "django-stack-pitr/bench"
TARGET_RPO = 60
ARCHIVE_TIMEOUT = 30  # the postgresql role's default (postgresql_archive_timeout)


def postgres(*cmd: str, env: dict | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, check=False,
                            env=env, **kw)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}... failed: {result.stderr[-2000:]}")
    return result


class Bench:
    def __init__(self, base: Path):
        self.base = base
        self.port = free_port()
        self.data = base / "data"
        self.conf = base / "conf"
        self.moto = None
        self.endpoint = ""

    def psql(self, sql: str, port: int | None = None, db: str = "bench") -> str:
        return postgres(str(PG_BIN / "psql"), "-h", str(self.base), "-p", str(port or self.port), "-d", db,
                        "-XAtc", sql).stdout.strip()

    def start_moto(self) -> None:
        port = free_port()
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        self.moto = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.endpoint = f"http://127.0.0.1:{port}"
        import boto3

        for _ in range(100):
            try:
                self.s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="bench",
                                       aws_secret_access_key="bench", region_name="us-east-1")
                self.s3.create_bucket(Bucket=BUCKET)
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        raise SystemExit("moto_server did not start")

    def render(self) -> None:
        self.conf.mkdir()
        render_dir = self.base / "render"
        render_dir.mkdir()
        names = ["usr/local/sbin/django-stack-wal-archive", "usr/local/sbin/django-stack-wal-restore",
                 "usr/local/sbin/django-stack-base-backup", "etc/django-stack-pitr/config", "etc/django-stack-pitr/credentials"]
        texts = render_role_templates(render_dir, "pitr", names, {
            "pitr_name": "bench", "pitr_s3_bucket": BUCKET, "pitr_s3_prefix": PREFIX, "pitr_s3_endpoint_url": self.endpoint,
            "pitr_s3_region": "us-east-1", "pitr_s3_addressing_style": "path", "pitr_s3_sse": "none",
            "pitr_postgresql_port": self.port, "_pitr_bin_dir": str(PG_BIN), "_pitr_data_dir": str(self.data),
            "_pitr_credentials_file": str(self.conf / "credentials"),
            "_pitr_restore_credentials_file": str(self.conf / "credentials"),
            "_pitr_aws_config_file": str(self.conf / "config"), "_pitr_key": {"access": "bench", "secret": "bench"}})
        for name, text in texts.items():
            path = self.conf / Path(name).name
            path.write_text(text)
            path.chmod(0o755 if name.startswith("usr/") else 0o644)
        self.files = {Path(n).name: self.conf / Path(n).name for n in names}

    def start_cluster(self, scale: int) -> None:
        postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "--auth-local=trust", "-U", "postgres", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"archive_mode = on\narchive_command = '{self.files['django-stack-wal-archive']} %p'\n"
                       f"archive_timeout = {ARCHIVE_TIMEOUT}\nlisten_addresses = ''\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.base}'\nmax_wal_size = 2GB\n")
        postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w", "start")
        postgres(str(PG_BIN / "createdb"), "-h", str(self.base), "-p", str(self.port), "bench")
        started = time.monotonic()
        postgres(str(PG_BIN / "pgbench"), "-h", str(self.base), "-p", str(self.port), "-i", "-q", "-s", str(scale), "bench")
        self.psql("CREATE TABLE load (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        size = int(self.psql("SELECT pg_database_size('bench')"))
        log(f"generated {size / 2**20:.0f} MiB in {time.monotonic() - started:.0f} s")
        self.size = size

    def stop(self) -> None:
        for data in (self.data, self.base / "restored"):
            if (data / "postmaster.pid").exists():
                postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        if self.moto:
            self.moto.terminate()
            self.moto.wait(10)


def steady_load(bench: Bench, seconds: float, last: dict) -> None:
    """One commit every 100 ms through one connection; LAST gets each committed row's time."""
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "psql"), "-h", str(bench.base), "-p",
                             str(bench.port), "-d", "bench", "-XAtq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, bufsize=1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        proc.stdin.write("INSERT INTO load DEFAULT VALUES RETURNING at;\n")
        proc.stdin.flush()
        line = proc.stdout.readline().strip()
        if line:
            last["at"], last["count"] = line, last.get("count", 0) + 1
        time.sleep(0.1)
    proc.stdin.close()
    proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=30, help="pgbench scale of the generated database (30: about 450 MiB)")
    parser.add_argument("--load-seconds", type=float, default=150, help="how long the steady write load runs before the crash")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the clusters run as the postgres user")
    for tool in ("barman-cloud-backup", "barman-cloud-restore", str(PG_BIN / "pgbench"), str(MOTO_SERVER)):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: scripts/bootstrap.sh installs it")
    base = Path(tempfile.mkdtemp(prefix="bench-pitr-", dir=os.environ.get("BENCH_TMPDIR", "/var/tmp")))
    shutil.chown(base, "postgres", "postgres")
    base.chmod(0o755)
    bench = Bench(base)
    try:
        bench.start_moto()
        bench.render()
        bench.start_cluster(args.scale)
        env = dict(os.environ, PGHOST=str(base))

        log("base backup (the role's script) and the dump next to it")
        started = time.monotonic()
        postgres(str(bench.files["django-stack-base-backup"]), env=env)
        base_backup_s = time.monotonic() - started
        dump = base / "bench.dump"
        started = time.monotonic()
        postgres(str(PG_BIN / "pg_dump"), "-h", str(base), "-p", str(bench.port), "-Fc", "-f", str(dump), "bench")
        bench.s3.upload_file(str(dump), BUCKET, "sets/bench.dump")
        dumped_at = dt.datetime.now(dt.timezone.utc)
        dump_s = time.monotonic() - started
        dump.unlink()

        log(f"steady writes for {args.load_seconds:.0f} s, then the server dies")
        last: dict = {}
        load_started = dt.datetime.now(dt.timezone.utc)
        steady_load(bench, args.load_seconds, last)
        crashed_at = dt.datetime.now(dt.timezone.utc)
        postgres(str(PG_BIN / "pg_ctl"), "-D", str(bench.data), "-m", "immediate", "-w", "stop")
        last_commit = dt.datetime.fromisoformat(last["at"])
        # The RPO at any moment of the load is at most the time since the last segment reached the
        # store: the longest gap between two uploads is the worst moment to lose the server.
        uploads = sorted(o["LastModified"] for p in bench.s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=PREFIX + "/") for o in p.get("Contents", []) if "/wals/" in o["Key"]
            and o["LastModified"] >= load_started - dt.timedelta(seconds=1))
        worst_gap = max(((b - a).total_seconds() for a, b in zip(uploads, uploads[1:])), default=float("nan"))

        log("restore to latest: the base backup, then the archive's replay")
        restored = base / "restored"
        restored.mkdir(mode=0o700)
        shutil.chown(restored, "postgres", "postgres")
        keys = dict(env, AWS_SHARED_CREDENTIALS_FILE=str(bench.files["credentials"]), AWS_CONFIG_FILE=str(bench.files["config"]))
        (lineage,) = [p["Prefix"].split("/")[-2] for p in bench.s3.list_objects_v2(
            Bucket=BUCKET, Prefix=PREFIX + "/", Delimiter="/")["CommonPrefixes"]]
        listing = postgres("barman-cloud-backup-list", "--cloud-provider", "aws-s3", "--endpoint-url", bench.endpoint,
                           "--format", "json", f"s3://{BUCKET}/{PREFIX}", lineage, env=keys)
        backup = json.loads(listing.stdout)["backups_list"][-1]
        started = time.monotonic()
        postgres("barman-cloud-restore", "--cloud-provider", "aws-s3", "--endpoint-url", bench.endpoint,
                 f"s3://{BUCKET}/{PREFIX}", lineage, backup["backup_id"], str(restored), env=keys)
        port = free_port()
        with open(restored / "postgresql.auto.conf", "a") as conf:
            conf.write(f"restore_command = '{bench.files['django-stack-wal-restore']} %f %p'\n"
                       f"recovery_target_action = 'promote'\narchive_mode = off\nport = {port}\n")
        (restored / "recovery.signal").touch()
        shutil.chown(restored / "recovery.signal", "postgres", "postgres")
        postgres(str(PG_BIN / "pg_ctl"), "-D", str(restored), "-l", str(base / "restored.log"), "-w", "-t", "3600", "start")
        while bench.psql("SELECT pg_is_in_recovery()", port) != "f":
            time.sleep(0.2)
        pitr_restore_s = time.monotonic() - started
        newest = dt.datetime.fromisoformat(bench.psql("SELECT max(at) FROM load", port))
        recovered_rows = int(bench.psql("SELECT count(*) FROM load", port))
        postgres(str(PG_BIN / "pg_ctl"), "-D", str(restored), "-m", "fast", "-w", "stop")

        log("restore of the dump: download, createdb, pg_restore")
        started = time.monotonic()
        bench.s3.download_file(BUCKET, "sets/bench.dump", str(dump))
        shutil.chown(dump, "postgres", "postgres")
        postgres(str(PG_BIN / "pg_ctl"), "-D", str(restored), "-l", str(base / "restored.log"), "-w", "start")
        postgres(str(PG_BIN / "createdb"), "-h", str(base), "-p", str(port), "fromdump")
        postgres(str(PG_BIN / "pg_restore"), "-h", str(base), "-p", str(port), "-d", "fromdump", str(dump))
        dump_restore_s = time.monotonic() - started

        rpo = (last_commit - newest).total_seconds()
        dump_rpo = (crashed_at - dumped_at).total_seconds()
        print(f"\nPoint-in-time recovery, {dt.date.today()}, PostgreSQL {PG_BIN.parent.name}, database "
              f"{bench.size / 2**20:.0f} MiB, archive_timeout {ARCHIVE_TIMEOUT} s, {last['count']} commits in "
              f"{args.load_seconds:.0f} s")
        print(f"  RPO (last commit - newest recovered row):  {rpo:6.1f} s   (target <= {TARGET_RPO} s; "
              f"{recovered_rows} of {last['count']} load rows recovered)")
        print(f"  worst moment of the load (longest gap between archived segments): {worst_gap:6.1f} s "
              f"({len(uploads)} segments archived)")
        print(f"  baseline, the dump's age at the crash:       {dump_rpo:6.1f} s   ratio {rpo / dump_rpo:.2f}"
              " (a nightly dump's RPO is up to 24 h)")
        print(f"  restore, base backup + replay to latest:     {pitr_restore_s:6.1f} s")
        print(f"  baseline, download + pg_restore of the dump: {dump_restore_s:6.1f} s   ratio {pitr_restore_s / dump_restore_s:.2f}")
        print(f"  (taking them: base backup {base_backup_s:.1f} s, pg_dump + upload {dump_s:.1f} s)")
        return 0 if max(rpo, worst_gap) <= TARGET_RPO else 1
    finally:
        bench.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
