#!/usr/bin/env python3
"""The all-in-one server's packages in one apt transaction, next to one transaction per role.

Why site.yml installs every tier's packages in one transaction (playbooks/base.yml, the common
role's `packages` entry point) instead of letting each role install its own: each transaction
pays apt's and dpkg's fixed costs again (reading the package lists and dpkg's database, the
triggers at its end).

Each side gets a fresh server (the local image, as in bench/converge.py) with policy-rc.d in place
(services stay stopped, as the roles install them) and a fresh `apt-get update`; then only the
installs are timed: side A in one `apt-get install` of all the packages, side B in one per role,
in site.yml's order. The package lists are the roles' own (`_<role>_packages` in vars/main.yml,
with their defaults). Sides alternate (A B A B ...) so that this machine's slow and quick minutes
fall on both. Prints every pair and the median of B / A.

Usage: .venv/bin/python bench/apt_transactions.py [--pairs 2]   (run `make image` first)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jinja2
import yaml

from benchlib import ROOT, podman_rm, sh, start_server

SERVER = "djstack-bench-apt"
# site.yml's order on the all-in-one server: base.yml (common, then django_app's prefetch),
# then the database, cache, broker and web tiers.
ROLES = ["common", "django_app", "postgresql", "memcached", "rabbitmq", "nginx"]


def role_packages(role: str) -> list[str]:
    """The role's `_<role>_packages`, rendered with its defaults (e.g. postgresql_version)."""
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    packages = yaml.safe_load((ROOT / "roles" / role / "vars" / "main.yml").read_text())[f"_{role}_packages"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return [env.from_string(p).render(**defaults) for p in packages]


def timed_installs(groups: list[list[str]]) -> float:
    """Seconds of `apt-get install` for each group in turn, on a fresh server."""
    start_server(SERVER, None)
    try:
        sh(["podman", "exec", SERVER, "bash", "-c",
            "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d"
            " && apt-get -o DPkg::Lock::Timeout=300 update -qq"])
        start = time.monotonic()
        for group in groups:
            sh(["podman", "exec", "-e", "DEBIAN_FRONTEND=noninteractive", SERVER, "bash", "-c",
                f"apt-get -o DPkg::Lock::Timeout=300 install -y -qq {' '.join(group)} >/dev/null"], timeout=1800)
        return time.monotonic() - start
    finally:
        podman_rm(SERVER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2, help="A/B pairs to run (default 2)")
    args = parser.parse_args()

    groups = [role_packages(role) for role in ROLES]
    everything = list(dict.fromkeys(p for group in groups for p in group))
    pairs = []
    for _ in range(args.pairs):
        one = timed_installs([everything])
        per_role = timed_installs(groups)
        pairs.append((one, per_role))

    print(f"apt-get install of the all-in-one server's {len(everything)} packages, services stopped, fresh servers:")
    print(f"  {'pair':<5}{'one transaction s':>19}{'one per role (' + str(len(groups)) + ') s':>22}{'ratio':>8}")
    for i, (one, per_role) in enumerate(pairs, 1):
        print(f"  {i:<5}{one:>19.1f}{per_role:>22.1f}{per_role / one:>8.2f}")
    ratio = statistics.median(per_role / one for one, per_role in pairs)
    print(f"one transaction per role / one transaction = {ratio:.2f} (median of {len(pairs)} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
