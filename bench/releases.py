#!/usr/bin/env python3
"""Converge and rebuild figures on Debian 13 (trixie) and Debian 12 (bookworm), side by side.

One run, on this machine, every server a fresh systemd container of the local image of its
release (`make images`), reached over SSH with pipelining as users run Ansible:

1. converge, per release, interleaved (13 then 12; 12 then 13 in every other pair): the first
   converge of site.yml on the all-in-one server next to its floor (on another fresh server of the
   same release, a plain `apt-get install` of the packages the converge installed plus
   `pip install -r` of the app's requirements), then the second, idempotent converge;
2. the rebuild's RTO, across releases next to within one: a site converged on a Debian 12 server
   (with the backup tier), a note written, `playbooks/backup.yml` to an S3-compatible endpoint
   (moto's server, on this machine, listening on the bench network's gateway only); the server
   destroyed; a brand-new Debian 13 server provisioned with site.yml and `playbooks/restore.yml`
   run. RTO = from starting the new server to the restored note being served. The baseline is the
   same rebuild from a Debian 13 server.

Prints every run and the ratios Debian 13 / Debian 12 and cross-release / same-release RTO.
Targets: first converge / floor <= 1.5 and second converge <= 40 s on both releases; the
cross-release RTO <= 5 minutes. About 20 minutes on 2 cores.

Usage: .venv/bin/python bench/releases.py [--pairs N] [--skip-rto] [--skip-converge]   (`make bench-releases`)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import BASE_ARGS, ROOT, ensure_key, playbook, podman_rm, sh, start_server, wait_for_ssh, write_inventory
from converge import floor, manual_packages

RELEASES = {"13": "trixie", "12": "bookworm"}
STACK = "djstack-bench-rel"
NETWORK = "djstack-bench-rel-net"
# Holds the bench network's bridge (and so its gateway address, where moto listens) up while the
# servers come and go.
ANCHOR = "djstack-bench-rel-anchor"
SSH_PORT = int(os.environ.get("BENCH_REL_SSH_PORT", "2226"))
S3_PORT = int(os.environ.get("BENCH_REL_S3_PORT", "5226"))
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
BUCKET = "djstack-bench-rel"
APP_MANAGE = "/srv/demoapp/bin/manage"


def image(major: str) -> str:
    return f"localhost/djstack-debian:{RELEASES[major]}"


def converge(major: str, tmp: Path, logs: Path) -> dict:
    """First and second converge of site.yml on a fresh all-in-one server of release `major`; the floor."""
    known_hosts = tmp / f"known_hosts-converge-{major}"
    base_manual = set(sh(["podman", "run", "--rm", *BASE_ARGS, image(major), "apt-mark", "showmanual"]).stdout.split())
    try:
        start_server(STACK, SSH_PORT, image=image(major))
        wait_for_ssh(SSH_PORT, known_hosts)
        inv = write_inventory(Path(tempfile.mkdtemp(dir=tmp)), SSH_PORT, known_hosts, {})
        first, first_tasks, _, _ = playbook(inv, logs / f"debian{major}-first.log")
        second, _, second_changed, _ = playbook(inv, logs / f"debian{major}-second.log")
        packages = sorted(manual_packages(STACK) - base_manual)
    finally:
        podman_rm(STACK)
    parts = floor(packages, ROOT / "examples" / "demoapp" / "requirements.txt", image=image(major))
    return dict(first=first, first_tasks=first_tasks, second=second, second_changed=second_changed,
                floor=parts["apt"] + parts["pip"])


def network_gateway() -> str:
    """Create the bench network, keep its bridge up, return its gateway (this machine's address on it)."""
    podman_rm(ANCHOR)
    subprocess.run(["podman", "network", "rm", "-f", NETWORK], capture_output=True, check=False)
    sh(["podman", "network", "create", NETWORK])
    sh(["podman", "run", "-d", "--name", ANCHOR, "--network", NETWORK, "--runtime=runc", image("13"), "sleep", "infinity"])
    return json.loads(sh(["podman", "network", "inspect", NETWORK]).stdout)[0]["subnets"][0]["gateway"]


def start_s3(gateway: str, logs: Path) -> subprocess.Popen:
    log = (logs / "moto.log").open("w")
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", gateway, "-p", str(S3_PORT)], stdout=log, stderr=log,
                            start_new_session=True)
    for _ in range(60):
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://{gateway}:{S3_PORT}/{BUCKET}", method="PUT"),
                                   timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    raise SystemExit("bench: moto's S3 server did not start (see moto.log)")


def in_server(*cmd: str) -> str:
    return sh(["podman", "exec", STACK, *cmd]).stdout


def rebuild(source: str, tmp: Path, logs: Path, gateway: str) -> dict:
    """Site on Debian `source` -> backup -> destroyed -> fresh Debian 13 -> site.yml + restore."""
    backup_vars = {"backup_s3_bucket": BUCKET, "backup_s3_endpoint_url": f"http://{gateway}:{S3_PORT}",
                   "backup_s3_region": "us-east-1"}
    title = f"bench note {secrets.token_hex(6)}"
    name = f"rto-{source}"
    known_hosts = tmp / f"known_hosts-{name}"
    try:
        start_server(STACK, SSH_PORT, image=image(source), network=NETWORK)
        wait_for_ssh(SSH_PORT, known_hosts)
        inv = write_inventory(Path(tempfile.mkdtemp(dir=tmp)), SSH_PORT, known_hosts, backup_vars,
                              groups=("backupservers",))
        playbook(inv, logs / f"{name}-source-site.log")
        in_server("runuser", "-u", "django", "--", APP_MANAGE, "shell", "-c",
                  f"from notes.models import Note; Note.objects.create(title={title!r}, body='before the move')")
        playbook(inv, logs / f"{name}-backup.log", "playbooks/backup.yml")
        podman_rm(STACK)
        known_hosts.unlink()

        started = time.monotonic()
        start_server(STACK, SSH_PORT, image=image("13"), network=NETWORK)
        wait_for_ssh(SSH_PORT, known_hosts)
        provision, _, _, _ = playbook(inv, logs / f"{name}-target-site.log")
        restore, _, _, _ = playbook(inv, logs / f"{name}-restore.log", "playbooks/restore.yml")
        page = in_server("curl", "-sfk", "-H", "Cache-Control: no-cache", "https://localhost/")
        rto = time.monotonic() - started
        if title not in page:
            raise SystemExit(f"bench: the restored site does not serve the note written before the backup ({name})")
        target = in_server("sh", "-c", ". /etc/os-release && echo $VERSION_ID").strip()
    finally:
        podman_rm(STACK)
    return dict(rto=rto, provision=provision, restore=restore, target=target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1, help="converge pairs (13 and 12) to run (default 1)")
    parser.add_argument("--skip-converge", action="store_true", help="only the rebuild's RTO")
    parser.add_argument("--skip-rto", action="store_true", help="only the converge figures")
    parser.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench" / "releases",
                        help="directory for the playbook logs (per-task timings); default .cache/bench/releases")
    args = parser.parse_args()

    ensure_key()
    args.logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"13": [], "12": []}
    rtos: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="djstack-bench-rel-") as tmpdir:
        tmp = Path(tmpdir)
        if not args.skip_converge:
            for pair in range(args.pairs):
                for major in (("13", "12") if pair % 2 == 0 else ("12", "13")):
                    runs[major].append(converge(major, tmp, args.logs))
        if not args.skip_rto:
            moto = None
            try:
                gateway = network_gateway()
                moto = start_s3(gateway, args.logs)
                for source in ("12", "13"):
                    rtos[source] = rebuild(source, tmp, args.logs, gateway)
            finally:
                if moto:
                    os.killpg(moto.pid, signal.SIGTERM)
                    moto.wait(timeout=30)
                podman_rm(STACK)
                podman_rm(ANCHOR)
                subprocess.run(["podman", "network", "rm", "-f", NETWORK], capture_output=True, check=False)

    if runs["13"]:
        print(f"Converge of site.yml, fresh all-in-one servers, {args.pairs} pair(s) interleaved, SSH with pipelining:")
        print(f"  {'Debian':<8}{'first s':>9}{'floor s':>9}{'first/floor':>13}{'second s':>10}{'changed':>9}{'tasks':>7}")
        for major in ("13", "12"):
            for r in runs[major]:
                print(f"  {major:<8}{r['first']:>9.1f}{r['floor']:>9.1f}{r['first'] / r['floor']:>13.2f}"
                      f"{r['second']:>10.1f}{r['second_changed']:>9}{r['first_tasks']:>7}")
        med = {m: dict(ratio=statistics.median(r["first"] / r["floor"] for r in runs[m]),
                       second=statistics.median(r["second"] for r in runs[m])) for m in runs}
        print(f"  Debian 13 / Debian 12: first/floor {med['13']['ratio'] / med['12']['ratio']:.2f}, "
              f"second converge {med['13']['second'] / med['12']['second']:.2f}")
        print("  targets on both: first/floor <= 1.5, second converge <= 40 s, 0 changed")
    if rtos:
        print("Rebuild onto a fresh Debian 13 server (site.yml, then playbooks/restore.yml), until the restored data is served:")
        for source in ("12", "13"):
            r = rtos[source]
            print(f"  from Debian {source}: RTO {r['rto']:.0f} s (site.yml {r['provision']:.0f} s, restore "
                  f"{r['restore']:.0f} s; rebuilt server runs Debian {r['target']})")
        print(f"  cross-release / same-release RTO: {rtos['12']['rto'] / rtos['13']['rto']:.2f}; target: cross-release <= 300 s")
    print(f"logs with per-task timings: {args.logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
