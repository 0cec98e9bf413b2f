#!/usr/bin/env bash
# Build a local Debian bookworm base image from Debian packages (debootstrap + docker import), for machines
# that reach a Debian mirror and a Python package index but no public image registry. Prints its tag.
#
# The image carries python3 + python3-venv (a base for docker/Dockerfile) and redis-server (the Redis image
# of docker-compose.yml), plus this host's CA bundle, so that pip inside a build trusts what this host trusts.
# The tag is a content hash of this script, the mirror, the package list and the CA bundle: a second run
# with the same inputs reuses the image instead of rebuilding it. Needs root, debootstrap and a Docker engine.
#
#   HAPVR_BASE_IMAGE=$(docker/local-base.sh) HAPVR_REDIS_IMAGE=$HAPVR_BASE_IMAGE docker compose build
set -euo pipefail

MIRROR=${HAPVR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates,redis-server
CA_BUNDLE=${HAPVR_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

hash=$( { cat "$0"; echo "$MIRROR $SUITE $PACKAGES"; cat "$CA_BUNDLE"; } | sha256sum | cut -c1-12)
tag=hapvr-local/bookworm:$hash
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

root=$(mktemp -d /var/tmp/hapvr-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "local-base: debootstrap $SUITE from $MIRROR into $root" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >&2
cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["bash"]' - "$tag" >&2
echo "local-base: built $tag" >&2
echo "$tag"
