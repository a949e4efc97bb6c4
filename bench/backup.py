#!/usr/bin/env python3
"""Backup and restore figures for django_backup/django_restore, next to the plain way of doing it.

One run, on this machine, everything on loopback and removed at the end:

1. a throwaway PostgreSQL cluster (the release's) with a generated database of at least 1 GiB
   (pg_database_size: customers, orders, events; text, numbers, jsonb, indexes) and about
   300 MiB of incompressible media files, and moto's S3 server (in server mode);
2. ours: the core's command line (`python3 -m django_stack_backup.cli --config F backup` with
   roles/backup/module_utils on PYTHONPATH, what the systemd timer runs, under Debian's python3 and
   boto3): pg_dump and tar streamed into S3 multipart uploads, manifest, marker;
3. baseline: `pg_dump -Fc -f` to a local file, `tar -cf` of the media to a local file, then boto3's
   `upload_file` of both (default TransferConfig), one after the other;
4. restore, ours (`restore`, db_restore_mode=swap, media swap: download, verify every SHA-256,
   pg_restore into a new database, row counts, ANALYZE, swap) next to the baseline: `download_file`
   of both objects, `createdb`, `pg_restore`, `tar -x`.

Prints wall time, throughput and peak RSS of each side (the backup/restore process from its own
getrusage; pg_dump/pg_restore from /proc VmHWM, sampled), and ours/baseline ratios.
Targets: peak RSS of our process <= 200 MiB at any size; wall <= 1.2 x baseline.

With --before REF, the backup package of that git ref also backs up and restores the same data in
the same run (after ours), and the now/before ratios are printed: no regression is <= 1.05.

Usage: sudo .venv/bin/python bench/backup.py [--scale 1.0] [--media-mb 300] [--keep] [--before REF]
(`make bench-backup`, `make bench-backup BEFORE=<ref>`). Needs root (the cluster runs as postgres), postgresql, python3-boto3,
python3-psycopg2 and the test requirements (moto[server]); scripts/bootstrap.sh installs them.
About 10 minutes on 2 cores and up to 12 GB of disk under $BENCH_TMPDIR (default /var/tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import free_port, log, sh

ROOT = Path(__file__).resolve().parents[1]
# The newest PostgreSQL installed (the release's own: 15 on Debian 12, 17 on Debian 13).
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
             default=Path("/usr/lib/postgresql/15/bin"))
SYSTEM_PYTHON = "/usr/bin/python3"
# The backup role's package, run as its django-stack-backup command runs it on a server.
CORE_PATH = ROOT / "roles" / "backup" / "module_utils"
CORE = [SYSTEM_PYTHON, "-P", "-B", "-m", "django_stack_backup.cli"]
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
MIB = 1024 * 1024
KEY_ID, SECRET = "AKIDBENCH", "bench-secret"
TARGET_RSS_MIB = 200
TARGET_RATIO = 1.2

DATA_SQL = [
    # customers: ~1.0 M rows x scale
    """CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, city text,
                                created timestamptz NOT NULL, balance numeric(12, 2))""",
    """INSERT INTO customers
       SELECT i, 'Customer ' || i, 'user' || i || '@example.com',
              (ARRAY['Paris', 'Lyon', 'Berlin', 'Madrid', 'Rome', 'Oslo', 'Lisbon', 'Vienna'])[1 + i % 8],
              timestamptz '2020-01-01' + i * interval '37 seconds', round((random() * 10000)::numeric, 2)
       FROM generate_series(1, {customers}) i""",
    # orders: ~5 M rows x scale
    """CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, created timestamptz NOT NULL,
                             status text NOT NULL, total numeric(12, 2), items int, note text)""",
    """INSERT INTO orders
       SELECT i, 1 + (i::bigint * 7919) % {customers}, timestamptz '2021-01-01' + i * interval '6 seconds',
              (ARRAY['new', 'paid', 'shipped', 'delivered', 'refunded'])[1 + i % 5],
              round((random() * 500)::numeric, 2), 1 + i % 9,
              md5(i::text) || ' ' || (ARRAY['gift wrap', 'leave at the door', 'call first', '', 'fragile'])[1 + i % 5]
       FROM generate_series(1, {orders}) i""",
    # events: ~2 M rows x scale, jsonb
    """CREATE TABLE events (id bigint PRIMARY KEY, order_id bigint NOT NULL, kind text NOT NULL,
                             payload jsonb NOT NULL, at timestamptz NOT NULL)""",
    """INSERT INTO events
       SELECT i, 1 + (i::bigint * 104729) % {orders}, (ARRAY['view', 'cart', 'checkout', 'mail'])[1 + i % 4],
              jsonb_build_object('ip', '10.' || (i % 250) || '.' || (i % 199) || '.' || (i % 97),
                                 'agent', 'Mozilla/5.0 (X11; Linux x86_64) bench/' || (i % 1000),
                                 'ref', md5((i * 3)::text), 'n', i % 1000),
              timestamptz '2022-01-01' + i * interval '11 seconds'
       FROM generate_series(1, {events}) i""",
]
INDEX_SQL = [
    "CREATE INDEX orders_customer ON orders (customer_id)",
    "CREATE INDEX orders_created ON orders (created)",
    "CREATE INDEX events_order ON events (order_id)",
    "CREATE INDEX customers_email ON customers (email)",
]


class PeakSampler:
    """Samples /proc every 50 ms: the peak VmHWM (KiB) of each command among ROOT's descendants."""

    def __init__(self, root: int):
        self.root = root
        self.peaks: dict[str, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _tree(self) -> list[int]:
        parent = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                    parent[int(entry)] = int(fields[1])
                except (OSError, IndexError, ValueError):
                    continue
        found, frontier = [self.root], [self.root]
        while frontier:
            frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
            found += frontier
        return found

    def _run(self):
        while not self.done.is_set():
            for pid in self._tree():
                try:
                    with open(f"/proc/{pid}/status") as handle:
                        status = dict(line.split(":", 1) for line in handle if ":" in line)
                except OSError:
                    continue
                if "VmHWM" in status:
                    name = status["Name"].strip()
                    self.peaks[name] = max(self.peaks.get(name, 0), int(status["VmHWM"].split()[0]))
            self.done.wait(0.05)

    def stop(self) -> dict:
        self.done.set()
        self.thread.join()
        return self.peaks


def core_env(core: Path = CORE_PATH) -> dict:
    return dict(os.environ, PYTHONPATH=str(core))


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess, dict]:
    """Run CMD, sampling its process tree's memory; (seconds, result, peak VmHWM per command)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    sampler = PeakSampler(proc.pid)
    out, err = proc.communicate()
    seconds = time.monotonic() - started
    peaks = sampler.stop()
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, cmd[:6]))}... failed ({proc.returncode}): {err[-3000:]}")
    return seconds, result, peaks


UPLOADER = r"""
import json, resource, sys, boto3
client = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                      region_name="us-east-1")
for path, key in zip(sys.argv[4::2], sys.argv[5::2]):
    client.upload_file(path, "bench", key)
print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

DOWNLOADER = r"""
import json, resource, sys, boto3
from boto3.s3.transfer import TransferConfig
client = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                      region_name="us-east-1")
config = TransferConfig() if sys.argv[4] == "default" else TransferConfig(multipart_threshold=1 << 40)
for key, path in zip(sys.argv[5::2], sys.argv[6::2]):
    client.download_file("bench", key, path, Config=config)
print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


class Bench:
    def __init__(self, args):
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="djstack-bench-backup-",
                                          dir=os.environ.get("BENCH_TMPDIR", "/var/tmp")))
        self.base.chmod(0o755)
        self.pg_dir = self.base / "pg"
        self.port = free_port()
        self.moto = None
        self.pg_started = False
        self.db = "benchdb"

    # --- services
    def start(self):
        self.pg_dir.mkdir()
        shutil.chown(self.pg_dir, "postgres", "postgres")
        data = self.pg_dir / "data"
        # TCP with passwords on loopback, as on a server: a restore's session logs in there.
        sh(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "--auth-local=trust",
            "--auth-host=scram-sha-256", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.pg_dir} -c fsync=off -c full_page_writes=off "
                "-c synchronous_commit=off -c shared_buffers=256MB -c maintenance_work_mem=256MB -c max_wal_size=8GB "
                "-c wal_level=minimal -c max_wal_senders=0 -c checkpoint_timeout=30min")
        sh(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.pg_dir / "log"),
            "-w", "-t", "60", "-o", opts, "start"])
        self.pg_started = True
        moto_port = free_port()
        self.endpoint = f"http://127.0.0.1:{moto_port}"
        env = dict(os.environ, TMPDIR=str(self.base))
        self.moto = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(moto_port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", moto_port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("bench: moto_server did not start")
        self.s3py("c.create_bucket(Bucket='bench')")

    def s3py(self, code: str) -> str:
        prog = ("import boto3, json\nc = boto3.client('s3', endpoint_url=%r, aws_access_key_id=%r, "
                "aws_secret_access_key=%r, region_name='us-east-1')\n%s" % (self.endpoint, KEY_ID, SECRET, code))
        return sh([SYSTEM_PYTHON, "-c", prog]).stdout

    def psql(self, sql: str, db: str = "postgres") -> str:
        return sh(["runuser", "-u", "postgres", "--", str(PG_BIN / "psql"), "-h", str(self.pg_dir),
                   "-p", str(self.port), "-d", db, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], cwd="/").stdout.strip()

    def stop(self):
        if self.moto and self.moto.poll() is None:
            os.killpg(self.moto.pid, signal.SIGTERM)
            try:
                self.moto.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.moto.pid, signal.SIGKILL)
        if self.pg_started:
            subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.pg_dir / "data"),
                            "-m", "immediate", "-w", "stop"], capture_output=True, check=False)
        if not self.args.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    # --- data
    def generate(self):
        scale = self.args.scale
        sizes = dict(customers=int(1_000_000 * scale), orders=int(5_000_000 * scale), events=int(2_500_000 * scale))
        self.psql(f"CREATE DATABASE {self.db}")
        started = time.monotonic()
        statements = [s.format(**sizes) for s in DATA_SQL]
        # two sessions at once (2 cores): orders alone, the two others in sequence; then the indexes by two
        self.parallel([[statements[2], statements[3]], [statements[0], statements[1], statements[4], statements[5]]])
        self.parallel([INDEX_SQL[:2], INDEX_SQL[2:]])
        self.psql("VACUUM ANALYZE", self.db)
        self.db_size = int(self.psql("SELECT pg_database_size(current_database())", self.db))
        self.rows = int(self.psql("SELECT sum(n_live_tup) FROM pg_stat_user_tables", self.db))
        log(f"database {self.db_size / MIB:.0f} MiB, {self.rows} rows in {time.monotonic() - started:.0f} s")
        if self.db_size < 1024 * MIB and scale >= 1.0:
            raise SystemExit(f"bench: the generated database is {self.db_size / MIB:.0f} MiB, less than 1 GiB")
        self.media = self.base / "srv" / "media"
        count = self.args.media_mb * 4  # 256 KiB files
        for i in range(count):
            folder = self.media / f"uploads/2026/{i % 12 + 1:02d}/{i % 25:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"photo-{i:05d}.jpg").write_bytes(os.urandom(256 * 1024))
        self.media_bytes = count * 256 * 1024
        self.media_files = count
        log(f"media {self.media_bytes / MIB:.0f} MiB in {count} files")

    def parallel(self, jobs: list[list[str]]) -> None:
        errors = []

        def run(job):
            try:
                for statement in job:
                    self.psql(statement, self.db)
            except BaseException as exc:  # SystemExit from sh() too
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise SystemExit(str(errors[0]))

    def warm(self):
        """Both sides read the tables from a warm cache: one pass over everything first."""
        self.psql("SELECT count(*) FROM customers; SELECT count(*) FROM orders; SELECT count(*) FROM events", self.db)
        sh(["tar", "-C", str(self.media), "-cf", "/dev/null", "."])

    # --- runs
    def config(self, **extra) -> Path:
        cfg = dict(s3_bucket="bench", s3_prefix="ours", s3_endpoint_url=self.endpoint, s3_access_key=KEY_ID,
                   s3_secret_key=SECRET, s3_region="us-east-1", db_name=self.db, db_host=str(self.pg_dir),
                   db_port=self.port, media_root=str(self.media), download_dir=str(self.base))
        cfg.update(extra)
        path = self.base / f"config-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(cfg))
        path.chmod(0o600)
        return path

    def ours_backup(self, core: Path = CORE_PATH, prefix: str = "ours") -> dict:
        seconds, proc, peaks = timed([*CORE, "--config", str(self.config(s3_prefix=prefix)), "backup"],
                                     env=core_env(core))
        result = json.loads(proc.stdout)
        return dict(wall=seconds, rss=result["peak_rss_kb"], pg_dump=peaks.get("pg_dump", 0), tar=peaks.get("tar", 0),
                    stored=result["size"], set_id=result["set_id"], timings=result["timings"])

    def baseline_backup(self) -> dict:
        local = self.base / "baseline"
        local.mkdir()
        shutil.chown(local, "postgres", "postgres")
        dump, tar = local / "db.dump", local / "media.tar"
        t_dump, _, dump_peaks = timed(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_dump"), "-Fc", "-h",
                                       str(self.pg_dir), "-p", str(self.port), "-f", str(dump), self.db], cwd="/")
        t_tar, _, _ = timed(["tar", "-C", str(self.media), "-cf", str(tar), "."])
        t_up, proc, _ = timed([SYSTEM_PYTHON, "-c", UPLOADER, self.endpoint, KEY_ID, SECRET,
                               str(dump), "baseline/db.dump", str(tar), "baseline/media.tar"])
        rss = json.loads(proc.stdout)["peak_rss_kb"]
        stored = dump.stat().st_size + tar.stat().st_size
        shutil.rmtree(local)
        return dict(wall=t_dump + t_tar + t_up, dump=t_dump, tar=t_tar, upload=t_up, rss=rss,
                    pg_dump=dump_peaks.get("pg_dump", 0), stored=stored)

    def ours_restore(self, core: Path = CORE_PATH, prefix: str = "ours") -> dict:
        seconds, proc, peaks = timed([*CORE, "--config", str(self.config(s3_prefix=prefix)), "restore"],
                                     env=core_env(core))
        result = json.loads(proc.stdout)
        previous = result["database"]["previous"]
        self.psql(f"DROP DATABASE {previous}")  # keep the disk in check
        shutil.rmtree(result["media"]["previous"], ignore_errors=True)
        return dict(wall=seconds, rss=result["peak_rss_kb"], pg_restore=peaks.get("pg_restore", 0),
                    timings=result["timings"], rows=result["database"]["rows"])

    def baseline_restore(self, transfer: str) -> dict:
        local = self.base / f"baseline-restore-{transfer}"
        local.mkdir()
        dump, tar = local / "db.dump", local / "media.tar"
        t_down, proc, _ = timed([SYSTEM_PYTHON, "-c", DOWNLOADER, self.endpoint, KEY_ID, SECRET, transfer,
                                 "baseline/db.dump", str(dump), "baseline/media.tar", str(tar)])
        rss = json.loads(proc.stdout)["peak_rss_kb"]
        target = f"{self.db}_baseline_{transfer}"
        started = time.monotonic()
        self.psql(f"CREATE DATABASE {target} TEMPLATE template0")
        t_create = time.monotonic() - started
        with open(dump, "rb") as handle:
            t_restore, _, peaks = timed(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_restore"),
                                         "--exit-on-error", "-h", str(self.pg_dir), "-p", str(self.port),
                                         "-d", target], stdin=handle, cwd="/")
        media = local / "media"
        media.mkdir()
        t_tar, _, _ = timed(["tar", "-x", "-f", str(tar), "-C", str(media)])
        self.psql(f"DROP DATABASE {target}")
        shutil.rmtree(local)
        return dict(wall=t_down + t_create + t_restore + t_tar, download=t_down, pg_restore_s=t_restore, tar=t_tar,
                    rss=rss, pg_restore=peaks.get("pg_restore", 0))


def split(timings: dict, *names: str) -> str:
    return " / ".join("%.1f" % timings.get(name, 0) for name in names) + " s"


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def report(bench: Bench, ours: dict, base: dict, r_ours: dict, r_base: dict, r_single: dict) -> None:
    source = bench.db_size + bench.media_bytes
    ratio_b = ours["wall"] / base["wall"]
    ratio_r = r_ours["wall"] / r_base["wall"]
    ratio_rs = r_ours["wall"] / r_single["wall"]

    def row(label, mine="", theirs="", ratio="", note=""):
        print(f"{label:<46} {mine:>22} {theirs:>22} {ratio:>8}  {note}".rstrip())

    def rss_note(kib):
        return f"target <= {TARGET_RSS_MIB} MiB: {'met' if kib / 1024 <= TARGET_RSS_MIB else 'MISSED'}"

    print()
    print(f"bench/backup.py: database {bench.db_size / MIB:.0f} MiB (pg_database_size; 3 tables, {bench.rows} rows, "
          f"4 indexes), media {bench.media_bytes / MIB:.0f} MiB ({bench.media_files} files, incompressible)")
    print(f"S3 = moto server on loopback; {os.cpu_count()} cores; both sides run Debian's /usr/bin/python3 + boto3")
    print()
    row("BACKUP", "ours", "baseline", "ratio")
    row("wall time", f"{ours['wall']:.1f} s", f"{base['wall']:.1f} s", f"{ratio_b:.2f}", f"target <= {TARGET_RATIO}")
    row("  ours: database / media / manifest", split(ours["timings"], "database", "media", "manifest"))
    row("  baseline: pg_dump -Fc / tar / upload_file", "", split(base, "dump", "tar", "upload"))
    row("stored in S3", f"{ours['stored'] / MIB:.0f} MiB", f"{base['stored'] / MIB:.0f} MiB")
    row("throughput, (db size + media) / wall", f"{source / MIB / ours['wall']:.1f} MiB/s",
        f"{source / MIB / base['wall']:.1f} MiB/s")
    row("throughput, bytes uploaded / wall", f"{ours['stored'] / MIB / ours['wall']:.1f} MiB/s",
        f"{base['stored'] / MIB / base['wall']:.1f} MiB/s")
    row("peak RSS, backup process / uploader", mib(ours["rss"]), mib(base["rss"]),
        f"{ours['rss'] / base['rss']:.2f}", rss_note(ours["rss"]))
    row("peak RSS, pg_dump", mib(ours["pg_dump"]), mib(base["pg_dump"]))
    row("peak RSS, tar", mib(ours["tar"]))
    print()
    row("RESTORE", "ours", "baseline", "ratio")
    row("wall time, baseline download_file default", f"{r_ours['wall']:.1f} s", f"{r_base['wall']:.1f} s",
        f"{ratio_r:.2f}", f"target <= {TARGET_RATIO}")
    row("wall time, baseline download_file one GET", f"{r_ours['wall']:.1f} s", f"{r_single['wall']:.1f} s",
        f"{ratio_rs:.2f}", f"target <= {TARGET_RATIO}")
    row("  ours: download+sha256 / pg_restore /", split(r_ours["timings"], "download", "db_restore", "db_verify",
                                                          "media_restore", "swap"))
    row("        row counts+ANALYZE / tar -x / swap")
    row("  baseline default: download / pg_restore / tar", "", split(r_base, "download", "pg_restore_s", "tar"))
    row("  baseline one GET: download / pg_restore / tar", "", split(r_single, "download", "pg_restore_s", "tar"))
    row("peak RSS, restore process / downloader", mib(r_ours["rss"]), mib(r_base["rss"]),
        f"{r_ours['rss'] / r_base['rss']:.2f}", rss_note(r_ours["rss"]))
    row("peak RSS, pg_restore", mib(r_ours["pg_restore"]), mib(r_base["pg_restore"]))
    print()
    print(f"backup:  ours/baseline wall {ratio_b:.2f} (target <= {TARGET_RATIO}), "
          f"peak RSS {ours['rss'] / 1024:.0f} MiB (target <= {TARGET_RSS_MIB} MiB)")
    print(f"restore: ours/baseline wall {ratio_r:.2f} (default download_file) and {ratio_rs:.2f} (one GET per object), "
          f"peak RSS {r_ours['rss'] / 1024:.0f} MiB")


def report_before(ref: str, now: dict, before: dict, r_now: dict, r_before: dict) -> None:
    """The code of REF next to the working tree's, in the same run, on the same data."""
    print()
    print(f"{'SAME RUN, THE CODE OF ' + ref:<46} {'now':>22} {'before':>22} {'ratio':>8}")
    for label, a, b in (("backup wall time", now["wall"], before["wall"]),
                        ("restore wall time", r_now["wall"], r_before["wall"])):
        print(f"{label:<46} {a:>20.1f} s {b:>20.1f} s {a / b:>8.2f}")
    for label, a, b in (("backup peak RSS", now["rss"], before["rss"]),
                        ("restore peak RSS", r_now["rss"], r_before["rss"])):
        print(f"{label:<46} {mib(a):>22} {mib(b):>22} {a / b:>8.2f}")
    print(f"before ({ref}) vs now: backup {now['wall'] / before['wall']:.2f}, restore {r_now['wall'] / r_before['wall']:.2f} "
          f"(wall time ratios, now/before; <= 1.05 is no regression)")


def checkout_core(ref: str, into: Path) -> Path:
    """The backup package of REF (git archive), to run beside the working tree's."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "roles/backup/module_utils"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "roles" / "backup" / "module_utils"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="database size factor (1.0 gives about 1.3 GiB)")
    parser.add_argument("--media-mb", type=int, default=300, help="MiB of media files (256 KiB each)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (cluster data, media)")
    parser.add_argument("--before", metavar="REF", help="also run the backup package of this git ref, in the same "
                        "run on the same data, and print now/before")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (the cluster runs as postgres with runuser)")
    for path in (PG_BIN / "initdb", MOTO_SERVER, Path(SYSTEM_PYTHON)):
        if not path.exists():
            raise SystemExit(f"bench: {path} is missing: run scripts/bootstrap.sh")
    bench = Bench(args)
    try:
        log(f"starting PostgreSQL and moto in {bench.base}")
        bench.start()
        bench.generate()
        bench.warm()
        log("baseline backup: pg_dump -Fc to a file, tar to a file, upload_file both")
        base = bench.baseline_backup()
        log(f"  {base['wall']:.1f} s")
        bench.warm()
        log("our backup: the CLI, streamed")
        ours = bench.ours_backup()
        log(f"  {ours['wall']:.1f} s")
        log("baseline restore: download_file (default TransferConfig), createdb, pg_restore, tar -x")
        r_base = bench.baseline_restore("default")
        log(f"  {r_base['wall']:.1f} s")
        log("baseline restore: download_file with one GET per object, createdb, pg_restore, tar -x")
        r_single = bench.baseline_restore("single")
        log(f"  {r_single['wall']:.1f} s")
        log("our restore: the CLI, swap mode")
        r_ours = bench.ours_restore()
        log(f"  {r_ours['wall']:.1f} s")
        if args.before:
            before_core = checkout_core(args.before, bench.base / "before")
            bench.warm()
            log(f"the backup package of {args.before}: backup")
            before = bench.ours_backup(before_core, prefix="before")
            log(f"  {before['wall']:.1f} s")
            log(f"the backup package of {args.before}: restore")
            r_before = bench.ours_restore(before_core, prefix="before")
            log(f"  {r_before['wall']:.1f} s")
        report(bench, ours, base, r_ours, r_base, r_single)
        if args.before:
            report_before(args.before, ours, before, r_ours, r_before)
    finally:
        log("cleaning up")
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
