#!/usr/bin/env bash
# Build a local "fresh server" image of a Debian release, used by `make demo`, `make test`
# and bench/: debootstrap from the Debian mirror named in this host's apt sources,
# systemd as PID 1, sshd (as on a cloud server), and this host's locally added CA
# certificates trusted inside. Nothing is ever pulled from a registry.
#
# One image per release, localhost/djstack-debian:<release>. Each is cached: its recipe hash
# (this script, the release and the CA certificates) is stored as a label, and the image is
# rebuilt only when that hash changes.
#
# Usage: scripts/build-image.sh [--force] [trixie|bookworm]   (default: trixie, Debian 13)
set -euo pipefail

FORCE=""
SUITE=trixie
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        bookworm|trixie) SUITE=$arg ;;
        *) echo "build-image: unknown argument '$arg' (usage: build-image.sh [--force] [trixie|bookworm])" >&2; exit 2 ;;
    esac
done
IMAGE="localhost/djstack-debian:$SUITE"
HERE="$(cd "$(dirname "$0")" && pwd)"
PODMAN=(podman)

die() { echo "build-image: $*" >&2; exit 1; }

mirror_from_host() {
    # The first Debian archive URI the host's apt sources use (deb822 or one-line
    # format); the security archive is derived from the host's sources too.
    local uri=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
            /etc/apt/sources.list | head -n1)
    fi
    [ -n "$uri" ] || die "could not find a Debian mirror in /etc/apt/sources.list{,.d}"
    echo "${uri%/}"
}

security_from_host() {
    local uri=""
    # Only live entries: "URIs:" lines (deb822) and "deb" lines, never comments.
    uri=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]*security[^ ]*' | head -n1 || true)
    echo "${uri%/}"
}

recipe_hash() {
    {
        echo "$SUITE"
        cat "$0"
        cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true
    } | sha256sum | cut -c1-16
}

command -v podman >/dev/null || die "podman is not installed (run: make deps)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (run: make deps)"

HASH=$(recipe_hash)
if [ -z "$FORCE" ] && "${PODMAN[@]}" image exists "$IMAGE"; then
    current=$("${PODMAN[@]}" image inspect --format '{{ index .Labels "djstack.recipe" }}' "$IMAGE" 2>/dev/null || true)
    if [ "$current" = "$HASH" ]; then
        echo "build-image: $IMAGE is up to date (recipe $HASH)"
        exit 0
    fi
    echo "build-image: recipe changed ($current -> $HASH), rebuilding $IMAGE"
fi

MIRROR=$(mirror_from_host)
SECURITY=$(security_from_host)
ROOTFS=$(mktemp -d /var/tmp/djstack-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

echo "build-image: debootstrap $SUITE from $MIRROR"
# What a cloud provider's fresh Debian server has: systemd, sshd, sudo, python3,
# CA certificates; nothing from the stack itself.
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,sudo,iproute2,ca-certificates,openssh-server,procps,less \
    "$SUITE" "$ROOTFS" "$MIRROR" >/dev/null

# Apt sources as a fresh server of that release has them: deb822 on Debian 13, one line each on 12.
rm -f "$ROOTFS/etc/apt/sources.list"
if [ "$SUITE" = bookworm ]; then
    {
        echo "deb $MIRROR $SUITE main"
        echo "deb $MIRROR $SUITE-updates main"
        if [ -n "$SECURITY" ]; then echo "deb $SECURITY $SUITE-security main"; fi
    } >"$ROOTFS/etc/apt/sources.list"
else
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: %s\n' \
            "$MIRROR" "$SUITE" "$SUITE" /usr/share/keyrings/debian-archive-keyring.gpg
        if [ -n "$SECURITY" ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
                "$SECURITY" "$SUITE" /usr/share/keyrings/debian-archive-keyring.gpg
        fi
    } >"$ROOTFS/etc/apt/sources.list.d/debian.sources"
fi

# Trust the CA certificates this host added locally (a TLS-inspecting proxy),
# so that pip inside the test servers reaches PyPI as it does on the host.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates >/dev/null
fi

# Like cloud images: no SSH host keys baked into the image; each server makes its own.
rm -f "$ROOTFS"/etc/ssh/ssh_host_*
mkdir -p "$ROOTFS/etc/systemd/system/ssh.service.d"
cat >"$ROOTFS/etc/systemd/system/ssh.service.d/host-keys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
# Containers have no consoles or kernel to tune; keep these units quiet.
for unit in getty@tty1.service systemd-sysctl.service; do
    ln -sf /dev/null "$ROOTFS/etc/systemd/system/$unit"
done
: >"$ROOTFS/etc/machine-id"
chroot "$ROOTFS" apt-get clean

echo "build-image: importing as $IMAGE"
tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import \
    --change 'CMD ["/sbin/init"]' \
    --change "LABEL djstack.recipe=$HASH" \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    - "$IMAGE" >/dev/null
echo "build-image: built $IMAGE (recipe $HASH)"
