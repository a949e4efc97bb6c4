#!/usr/bin/env bash
# The demo server: a fresh systemd container from the local image of DEBIAN_RELEASE (trixie,
# Debian 13, by default; bookworm for Debian 12), reached over SSH on 127.0.0.1:2222 like a real
# server, converged with site.yml.
#   scripts/demo.sh up       start (or reuse) the server and converge it
#   scripts/demo.sh destroy  remove it
# INVENTORY=<dir> converges the same server with another inventory (make demo INVENTORY=...):
# one whose host is 127.0.0.1:2222 like inventories/demo/hosts.yml, such as
# examples/pingboard/inventory. Its vault password is <dir>/vault-password.txt when that exists;
# extra arguments go to ansible-playbook (--ask-vault-pass, -e ...).
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${DEMO_CONTAINER:-djstack-demo}
INVENTORY=${INVENTORY:-inventories/demo}
IMAGE=localhost/djstack-debian:${DEBIAN_RELEASE:-trixie}
SSH_DIR=.cache/ssh
KEY=$SSH_DIR/id_ed25519
export PATH="$PWD/.venv/bin:$PATH"

die() { echo "demo: $*" >&2; exit 1; }

wait_for_ssh() {
    for _ in $(seq 1 60); do
        if ssh -q -i "$KEY" -p 2222 -o BatchMode=yes -o ConnectTimeout=2 \
            -o UserKnownHostsFile="$SSH_DIR/known_hosts" -o StrictHostKeyChecking=accept-new \
            root@127.0.0.1 true 2>/dev/null; then
            return 0
        fi
        sleep 1
    done
    die "the demo server did not answer SSH on 127.0.0.1:2222 within 60 s (podman logs $NAME)"
}

up() {
    mkdir -p "$SSH_DIR"
    [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "django-stack demo" -f "$KEY"
    if ! podman container exists "$NAME"; then
        rm -f "$SSH_DIR/known_hosts"
        echo "demo: starting a fresh server ($NAME)"
        # Published on loopback only: 8443 -> 443, 8080 -> 80, 2222 -> 22.
        # SYS_ADMIN: what systemd needs to apply the units' sandboxing; NET_ADMIN: what the firewall
        # role needs to load its nftables table; both as on a real server.
        podman run -d --name "$NAME" --hostname demo --runtime=runc --systemd=always \
            --cap-add SYS_ADMIN --cap-add NET_ADMIN --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
            -p 127.0.0.1:8443:443 -p 127.0.0.1:8080:80 -p 127.0.0.1:2222:22 \
            -v "$PWD/$KEY.pub:/root/.ssh/authorized_keys:ro" \
            "$IMAGE" >/dev/null
    elif [ "$(podman container inspect -f '{{.State.Running}}' "$NAME")" != "true" ]; then
        podman start "$NAME" >/dev/null
    fi
    [ -e "$INVENTORY" ] || die "no inventory at $INVENTORY (INVENTORY=<dir>)"
    local vault=()
    [ -f "$INVENTORY/vault-password.txt" ] && vault=(--vault-id "demo@$INVENTORY/vault-password.txt")
    wait_for_ssh
    echo "demo: converging with the inventory $INVENTORY"
    ansible-playbook site.yml -i "$INVENTORY" "${vault[@]}" "$@"
    local APP
    APP=$(ssh -q -i "$KEY" -p 2222 -o BatchMode=yes -o UserKnownHostsFile="$SSH_DIR/known_hosts" root@127.0.0.1 \
        'for f in /srv/*/current; do basename "$(dirname "$f")"; done | head -n 1')
    cat <<MSG

The demo site is up:
  https://127.0.0.1:8443/        (self-signed certificate)
  http://127.0.0.1:8080/         (redirects to HTTPS)
  https://127.0.0.1:8443/admin/  (create a user: ssh -p 2222 -i $KEY root@127.0.0.1
                                  runuser -u django -- /srv/$APP/bin/manage createsuperuser)
Run 'make demo' again to re-converge, 'make demo-destroy' to remove it.
MSG
}

destroy() {
    if podman container exists "$NAME"; then
        podman rm -f -t 5 "$NAME" >/dev/null
        echo "demo: removed $NAME"
    else
        echo "demo: no demo server to remove"
    fi
    rm -f "$SSH_DIR/known_hosts"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    destroy) destroy ;;
    *) die "usage: $0 up|destroy" ;;
esac
