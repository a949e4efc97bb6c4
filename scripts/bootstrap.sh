#!/usr/bin/env bash
# Install what `make demo`, `make test` and bench/ need on a Debian 12 or 13 machine,
# as root: podman + runc + debootstrap from Debian, and the pinned Python tooling
# in ./.venv. Quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bootstrap: $*" >&2; exit 1; }

# python3-boto3, python3-psycopg2 and age: the backup modules' tests run them under Debian's python3, as on a server.
# postgresql (the release's major): the modules' tests start a throwaway cluster with its binaries.
# barman-cli-cloud: the pitr role's archive, base backup and restore scripts (tests/test_pitr.py).
# wrk: bench/appserver.py's load generator. nftables: the firewall role's tests check its ruleset with nft.
# valgrind: bench/sentry_request_cost.py counts instructions with it.
APT_PACKAGES=(podman runc debootstrap python3-venv rsync openssh-client make postgresql python3-boto3 python3-psycopg2 age barman-cli-cloud wrk nftables valgrind)
# Containers of a scenario find each other by name: Debian 12's podman uses CNI (the dnsname plugin),
# Debian 13's netavark (aardvark-dns, which its podman already depends on).
case "$(. /etc/os-release 2>/dev/null && echo "${VERSION_ID:-}")" in
    12) APT_PACKAGES+=(golang-github-containernetworking-plugin-dnsname) ;;
esac

[ "$(id -u)" = 0 ] || die "run as root: podman runs rootful containers with systemd, and packages come from apt"
command -v apt-get >/dev/null || die "apt-get not found: this project's tooling needs Debian 12 (or a derivative with apt)"
command -v dpkg-query >/dev/null || die "dpkg-query not found: this project's tooling needs Debian 12"

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: apt-get install ${missing[*]}"
    apt-get update -qq || die "apt-get update failed: check /etc/apt/sources.list.d and the network"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

# Rootful podman with systemd containers needs cgroups and a working runtime.
podman info >/dev/null 2>&1 || die "podman is installed but cannot run here (podman info failed): containers are not possible on this machine"

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || die "python3 not found"
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt examples/demoapp/requirements.txt requirements-test.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: creating .venv with the pinned tooling (a minute or two)"
    [ -x .venv/bin/python ] || "$PY" -m venv .venv || die "python3 -m venv failed (is python3-venv installed?)"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -r requirements.txt -r requirements-test.txt || die "pip install failed: is PyPI reachable?"
    echo "$want" >"$stamp"
fi
# The key Ansible uses to reach the demo and test servers over SSH (mounted as their authorized_keys).
if [ ! -f .cache/ssh/id_ed25519 ]; then
    mkdir -p .cache/ssh
    ssh-keygen -q -t ed25519 -N '' -C "django-stack servers" -f .cache/ssh/id_ed25519 || die "ssh-keygen failed"
fi
echo "bootstrap: ready (podman $(podman --version | awk '{print $3}'), $(.venv/bin/ansible --version | sed -n 1p))"
