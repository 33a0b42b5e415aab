#!/usr/bin/env bash
# Build the base image both Flywheel images start FROM, without any registry: a Debian
# bookworm root filesystem made by debootstrap from Debian's own mirror, imported with
# `docker import`. With registry access, images/base/Dockerfile (FROM debian:bookworm-slim
# plus the same apt packages) gives an equivalent image; see images/README.md.
#
# Usage: images/base/build-base.sh [TAG]   (default flywheel/base:bookworm; run as root)
# Env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), FORCE=1 to rebuild.
set -euo pipefail

TAG="${1:-flywheel/base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the Python runtime needs, and nothing to compile with: python3 + venv (the images
# build /opt/venv from wheels), CA roots, libgomp1 (XGBoost's OpenMP), bash and wget
# (KubeRay's default Ray pod probes run `bash -c "wget ... | grep success"`), tini as PID 1.
PACKAGES="python3,python3-venv,ca-certificates,libgomp1,bash,wget,tini"

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists (FORCE=1 rebuilds it)"
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "debootstrap needs root: run as root (or build images/base/Dockerfile with a registry)" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install debootstrap" >&2; exit 1; }

ROOTFS="$(mktemp -d /tmp/flywheel-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
chmod 755 "$ROOTFS"  # apt inside the chroot drops to user _apt, which must reach it
echo "debootstrap bookworm ($MIRROR) into $ROOTFS with $PACKAGES"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR"

# Security fixes too, as debian:bookworm-slim would have them; then drop what a runtime
# image does not need (apt lists and caches, docs, man pages, locales other than C).
cat > "$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
chroot "$ROOTFS" /bin/sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q'
chroot "$ROOTFS" /bin/sh -c 'apt-get clean'
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/log/*.log \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/tmp/* "$ROOTFS"/etc/resolv.conf
: > "$ROOTFS/etc/resolv.conf"

echo "importing as $TAG"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase bookworm + $PACKAGES" \
    - "$TAG"
docker run --rm "$TAG" python3 -c 'import sys, ensurepip; print("base ok:", sys.version.split()[0])'
