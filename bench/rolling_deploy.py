#!/usr/bin/env python3
"""Requests failed during a rolling deploy through the load balancer: with the drains of
playbooks/deploy.yml next to the same deploy without them (`--skip-tags haproxy`), in one run.

Reuses a converged cluster (the `cluster` Molecule scenario, or a copy of it under other names,
after `molecule converge`): its inventory and its load balancer's container. Two deploys of new
versions of the demo app (requirements unchanged), each under the same bounded load: 8 clients on
the load balancer itself, to its HTTPS listener, half opening a new connection per request, half
sending 20 requests per connection (keep-alive). A request fails when it gets no answer or
another status than 200.

Prints, for each deploy, requests sent, failed, and the deploy's wall time, then the ratio of
failed requests (without / with draining). Target (issue #22): 0 failed with draining.

Usage: .venv/bin/python bench/rolling_deploy.py --inventory <molecule's inventory directory>
       (the scenario's, e.g. ~/.ansible/tmp/molecule.*.cluster/inventory)
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "molecule" / "resources" / "tests"))
from stackhelpers import app_version  # noqa: E402

CLIENTS = 8


def ansible_env(inventory: str) -> dict[str, str]:
    """What Molecule's provisioner sets (.config/molecule/config.yml), for runs outside Molecule; the
    scenario's host variables read files of its ephemeral directory (the inventory's parent), such
    as the Solr stand-in's archive."""
    return dict(os.environ, MOLECULE_EPHEMERAL_DIRECTORY=str(Path(inventory).resolve().parent), ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_LIBRARY=str(ROOT / "library"),
                ANSIBLE_MODULE_UTILS=str(ROOT / "module_utils"),
                ANSIBLE_VAULT_IDENTITY_LIST=f"demo@{ROOT / 'inventories' / 'demo' / 'vault-password.txt'}",
                ANSIBLE_INJECT_FACT_VARS="false", ANSIBLE_FORKS="10", ANSIBLE_PIPELINING="true",
                ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=120s -o PreferredAuthentications=publickey",
                ANSIBLE_NOCOLOR="1", MOLECULE_PROJECT_DIRECTORY=str(ROOT))


def load_balancer(inventory: str) -> str:
    out = subprocess.run(["ansible-inventory", "-i", inventory, "--graph", "loadbalancers"], env=ansible_env(inventory),
                         capture_output=True, text=True, check=True).stdout
    hosts = [line.split("--")[-1].strip() for line in out.splitlines() if "--" in line and "@" not in line]
    if len(hosts) != 1:
        sys.exit(f"bench: the inventory needs exactly one load balancer, found {hosts}")
    return hosts[0]


def podman_exec(container: str, script: str) -> str:
    return subprocess.run(["podman", "exec", container, "bash", "-c", script], capture_output=True, text=True,
                          check=True).stdout


def deploy_under_load(inventory: str, lb: str, source: Path, *extra: str) -> tuple[int, int, float]:
    """(requests, failed, seconds of the deploy)."""
    podman_exec(lb, "rm -f /tmp/bench-stop /tmp/bench-codes-*")
    for n in range(CLIENTS):
        urls = " ".join(["-o /dev/null https://localhost/counter/"] * (20 if n % 2 else 1))
        loop = (f"end=$((SECONDS+1800)); while [ ! -e /tmp/bench-stop ] && [ $SECONDS -lt $end ]; do "
                f"curl -sk --max-time 20 -w '%{{http_code}}\\n' {urls} >> /tmp/bench-codes-{n}; done")
        subprocess.run(["podman", "exec", "-d", lb, "bash", "-c", loop], check=True)
    time.sleep(2)
    started = time.monotonic()
    result = subprocess.run(["ansible-playbook", "-i", inventory, str(ROOT / "playbooks" / "deploy.yml"),
                             "-e", f"django_app_source_path={source}", *extra],
                            cwd=ROOT, env=ansible_env(inventory), capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    time.sleep(2)
    podman_exec(lb, "touch /tmp/bench-stop; sleep 3")
    codes = podman_exec(lb, "cat /tmp/bench-codes-*").split()
    if result.returncode != 0:
        sys.exit(f"bench: the deploy failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return len(codes), sum(code != "200" for code in codes), took


def rolling_rows(inventory: str) -> dict:
    """{label: (requests, failed, deploy seconds)} for a deploy without draining, then one with it;
    and 'clients'."""
    lb = load_balancer(inventory)
    rows: dict = {"clients": CLIENTS, "lb": lb}
    with tempfile.TemporaryDirectory(prefix="bench-rolling-") as tmp:
        stamp = time.strftime("%H%M%S")
        for label, version, extra in (("without draining", f"9.1-nodrain-{stamp}", ("--skip-tags", "haproxy")),
                                      ("with draining", f"9.2-drain-{stamp}", ())):
            source = app_version(Path(tmp) / version, version=version)
            rows[label] = deploy_under_load(inventory, lb, source, *extra)
    return rows


def print_rows(rows: dict) -> int:
    """Print the table of rolling_rows(); return the number of requests failed with draining."""
    print(f"\nrolling deploy through {rows['lb']}, {rows['clients']} clients (half keep-alive):")
    print(f"{'':20} {'requests':>9} {'failed':>7} {'deploy s':>9}")
    for label in ("without draining", "with draining"):
        sent, failed, took = rows[label]
        print(f"{label:20} {sent:9d} {failed:7d} {took:9.0f}")
    without, with_ = rows["without draining"][1], rows["with draining"][1]
    ratio = f"{without / with_:.1f}" if with_ else ("n/a (0 / 0)" if without == 0 else "inf (none failed with draining)")
    print(f"failed without / with draining: {ratio}  (target: 0 failed with draining)")
    return with_


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", required=True, help="the converged cluster's inventory (Molecule's)")
    args = parser.parse_args()
    return 0 if print_rows(rolling_rows(args.inventory)) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
