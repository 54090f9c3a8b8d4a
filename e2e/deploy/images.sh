#!/usr/bin/env bash
# Builds, without any registry, the two images `make container` starts from, and
# prints their names (BASE_IMAGE then BUILDER_IMAGE, one per line):
#   station-base:bookworm     `debootstrap --variant=minbase bookworm` from Debian's mirror
#                             (DEBIAN_MIRROR), then `docker import`
#   station-builder:<rustc>   station-base plus gcc and libc6-dev (Debian packages) plus this
#                             machine's own Rust toolchain (rustc --print sysroot: bin/ and lib/)
# Each is built only when `docker image inspect` does not find it, so a second run
# reuses both. Needs root, docker, debootstrap. Progress goes to stderr.
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=station-base:bookworm
RUSTC_VER=$(rustc --version | awk '{print $2}')
BUILDER=station-builder:$RUSTC_VER

say() { echo "images.sh: $*" >&2; }
work=$(mktemp -d /var/tmp/station-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    say "debootstrap --variant=minbase bookworm from $MIRROR (a few minutes)"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
        tail -20 "$work/debootstrap.log" >&2
        say "debootstrap failed (is $MIRROR reachable?)"
        exit 1
    }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    rm -rf "$work/rootfs"
    say "imported $BASE"
fi

if ! docker image inspect "$BUILDER" >/dev/null 2>&1; then
    sysroot=$(rustc --print sysroot)
    say "building $BUILDER from $BASE and the toolchain in $sysroot"
    mkdir -p "$work/ctx/toolchain"
    # Hard links when on the same file system (no copy), else a copy; docs are left out.
    cp -al "$sysroot/bin" "$sysroot/lib" "$work/ctx/toolchain/" 2>/dev/null \
        || cp -a "$sysroot/bin" "$sysroot/lib" "$work/ctx/toolchain/"
    # The machine's own extra certificate authorities (an egress proxy's, say), so that
    # cargo in the image reaches crates.io as it does on this machine.
    mkdir -p "$work/ctx/ca"
    cp /usr/local/share/ca-certificates/*.crt "$work/ctx/ca/" 2>/dev/null || true
    cat >"$work/ctx/Dockerfile" <<DOCKERFILE
FROM $BASE
RUN apt-get update \\
    && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
COPY toolchain /usr/local/rust
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    CARGO_HOME=/usr/local/cargo
RUN rustc --version && cargo --version
DOCKERFILE
    docker build -q -t "$BUILDER" "$work/ctx" >/dev/null
    say "built $BUILDER"
fi

echo "$BASE"
echo "$BUILDER"
