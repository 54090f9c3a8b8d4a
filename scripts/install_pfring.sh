#!/usr/bin/env bash
# Installs PF_RING (kernel module and user library) for cj-balancer's `pfring`
# feature, then prints the installed user-library and kernel-module versions and
# fails when they differ (a mismatch makes every pfring_open fail with
# "Wrong RING version").
#
#   PFRING_VER=latest scripts/install_pfring.sh    ntop's packages (pfring, pfring-dkms) from ntop's apt repository
#   PFRING_VER=8.8.0  scripts/install_pfring.sh    build that tag of ntop/PF_RING from source into PREFIX
#   PFRING_SRC=/path/to/PF_RING scripts/install_pfring.sh
#                                                   build from that local source tree (no download)
#   scripts/install_pfring.sh --library             the user library only (any of the three ways above):
#                                                   no kernel module, no kernel headers; for images
#                                                   (docker/Dockerfile), whose module is the host's
#   scripts/install_pfring.sh --check               install nothing: print both versions, fail if they differ
#
# Variables:
#   PFRING_VER   latest (default) or a tag of ntop/PF_RING (8.8.0, 8.6.1, ...)
#   PFRING_SRC   a PF_RING source tree (kernel/, userland/) to build from instead
#   PFRING_ZC    1: also install the ZC drivers package (pfring-drivers-zc-dkms; packages only)
#   PREFIX       where a source build installs the user library (default /usr/local)
#   SRC_DIR      where a source build is checked out (default /usr/src/PF_RING-$PFRING_VER)
#
# Needs root. A source build needs gcc, make, bison, flex, libpcap-dev, git (to
# clone) and the headers of the running kernel (linux-headers-$(uname -r), not
# with --library); the script installs them with apt-get when it can.
# Afterwards: modprobe pf_ring (packages: systemctl restart pf_ring), and build
# the station with `cargo build --release -p balancer --features pfring`
# (PF_RING_DIR=$PREFIX when PREFIX is not /usr/local or /usr).
set -euo pipefail

PFRING_VER=${PFRING_VER:-latest}
PFRING_SRC=${PFRING_SRC:-}
PFRING_ZC=${PFRING_ZC:-0}
PREFIX=${PREFIX:-/usr/local}
SRC_DIR=${SRC_DIR:-/usr/src/PF_RING-$PFRING_VER}
REPO_URL=${REPO_URL:-https://github.com/ntop/PF_RING.git}
# --library: the user library only.
LIBRARY_ONLY=0

say() { echo "install_pfring: $*" >&2; }
die() {
    say "$*"
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "run as root (it installs a kernel module and a library)"
}

install_packages() {
    command -v apt-get >/dev/null || die "PFRING_VER=latest installs ntop's .deb packages and needs apt-get; set PFRING_VER=<tag> to build from source"
    local id codename version deb
    # shellcheck disable=SC1091
    id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    # shellcheck disable=SC1091
    version=$(. /etc/os-release && echo "${VERSION_ID:-}")
    # ntop's repository is named by codename on Debian (bookworm), by release on Ubuntu (22.04).
    case "$id" in
        debian) deb="https://packages.ntop.org/apt-stable/${codename}/all/apt-ntop-stable.deb" ;;
        ubuntu) deb="https://packages.ntop.org/apt-stable/${version}/all/apt-ntop-stable.deb" ;;
        *) die "ntop's packages cover Debian and Ubuntu; on ${id:-this system} set PFRING_VER=<tag> to build from source" ;;
    esac
    say "adding ntop's repository ($deb)"
    apt-get update
    local headers=("linux-headers-$(uname -r)")
    [ "$LIBRARY_ONLY" = 1 ] && headers=()
    apt-get install -y --no-install-recommends ca-certificates wget gnupg "${headers[@]}"
    local tmp
    tmp=$(mktemp -d)
    wget -q -O "$tmp/apt-ntop-stable.deb" "$deb" \
        || die "cannot fetch $deb (is packages.ntop.org reachable?); without it: PFRING_SRC=<a PF_RING source tree> builds one copied here (make container pfring_src=DIR for images)"
    apt-get install -y "$tmp/apt-ntop-stable.deb"
    rm -rf "$tmp"
    apt-get update
    if [ "$LIBRARY_ONLY" = 1 ]; then
        # pfring holds the library, its headers and linux/pf_ring.h; pfring-dkms (the
        # module) is only recommended by it.
        apt-get install -y --no-install-recommends pfring
        return
    fi
    local pkgs=(pfring pfring-dkms)
    [ "$PFRING_ZC" = 1 ] && pkgs+=(pfring-drivers-zc-dkms)
    apt-get install -y "${pkgs[@]}"
    # The service loads pf_ring.ko with /etc/pf_ring/pf_ring.conf.
    systemctl restart pf_ring 2>/dev/null || modprobe pf_ring
}

install_source() {
    local src=$SRC_DIR
    [ -n "$PFRING_SRC" ] && src=$PFRING_SRC
    if command -v apt-get >/dev/null; then
        local pkgs=(gcc make bison flex libpcap-dev)
        [ -z "$PFRING_SRC" ] && pkgs+=(git ca-certificates)
        [ "$LIBRARY_ONLY" = 1 ] || pkgs+=("linux-headers-$(uname -r)")
        apt-get update
        apt-get install -y --no-install-recommends "${pkgs[@]}"
    fi
    for tool in gcc make bison flex; do
        command -v "$tool" >/dev/null || die "a source build needs $tool"
    done
    if [ -n "$PFRING_SRC" ]; then
        if [ ! -d "$src/userland/lib" ] || [ ! -f "$src/kernel/linux/pf_ring.h" ]; then
            die "PFRING_SRC=$src is not a PF_RING source tree (it needs userland/lib and kernel/linux/pf_ring.h)"
        fi
        say "building from the local tree $src"
    elif [ ! -d "$SRC_DIR/.git" ]; then
        command -v git >/dev/null || die "a source build of a tag needs git (or set PFRING_SRC to a local tree)"
        say "cloning $REPO_URL tag $PFRING_VER into $SRC_DIR"
        git clone --depth 1 --branch "$PFRING_VER" "$REPO_URL" "$SRC_DIR" \
            || git clone --depth 1 --branch "v$PFRING_VER" "$REPO_URL" "$SRC_DIR" \
            || die "no tag $PFRING_VER (nor v$PFRING_VER) in $REPO_URL (without access to it: PFRING_SRC=<a local PF_RING tree>)"
    fi
    if [ "$LIBRARY_ONLY" = 0 ]; then
        say "building the kernel module"
        make -C "$src/kernel"
        make -C "$src/kernel" install
    fi
    say "building the user library into $PREFIX"
    # configure (userland/lib/configure runs userland's) writes every userland Makefile;
    # the cleans drop objects a build elsewhere may have left in the tree.
    (cd "$src/userland/lib" && ./configure --prefix="$PREFIX")
    make -C "$src/userland/nbpf" clean
    make -C "$src/userland/lib" clean
    make -C "$src/userland/lib"
    make -C "$src/userland/lib" install
    # pfring.h includes <linux/pf_ring.h>; the kernel install put it in /usr/include,
    # a prefix build gets its own copy so PF_RING_DIR alone is enough.
    mkdir -p "$PREFIX/include/linux"
    cp "$src/kernel/linux/pf_ring.h" "$PREFIX/include/linux/"
    ldconfig
    if [ "$LIBRARY_ONLY" = 0 ]; then
        rmmod pf_ring 2>/dev/null || true
        modprobe pf_ring
    fi
}

# The user library's version, asked of the library itself when a compiler is
# there, else read from the installed file's name (libpfring.so.X.Y.Z).
library_version() {
    local dir lib
    for dir in "$PREFIX/lib" /usr/local/lib /usr/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu; do
        [ -e "$dir/libpfring.so" ] || continue
        if command -v cc >/dev/null; then
            local tmp
            tmp=$(mktemp -d)
            cat >"$tmp/v.c" <<'EOF'
#include <stdio.h>
#include <stdint.h>
extern void pfring_version_noring(uint32_t *version);
int main(void) {
  uint32_t v = 0;
  pfring_version_noring(&v);
  printf("%u.%u.%u\n", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
  return 0;
}
EOF
            if cc "$tmp/v.c" -o "$tmp/v" -L"$dir" -Wl,-rpath,"$dir" -Wl,--no-as-needed -lpfring -lpcap 2>/dev/null \
                && "$tmp/v"; then
                rm -rf "$tmp"
                return 0
            fi
            rm -rf "$tmp"
        fi
        lib=$(readlink -f "$dir/libpfring.so")
        lib=${lib##*/libpfring.so.}
        case "$lib" in
            *.*.*) echo "$lib" && return 0 ;;
        esac
    done
    return 1
}

# The kernel module's version: the loaded one, else the installed one.
module_version() {
    if [ -r /proc/net/pf_ring/info ]; then
        sed -n 's/^PF_RING Version *: *\([^ ]*\).*/\1/p' /proc/net/pf_ring/info
    else
        modinfo -F version pf_ring 2>/dev/null
    fi
}

check_versions() {
    local lib mod
    lib=$(library_version) || lib=""
    if [ "$LIBRARY_ONLY" = 1 ]; then
        echo "PF_RING user library: ${lib:-not found}"
        [ -n "$lib" ] || die "no libpfring.so under $PREFIX/lib, /usr/local/lib or /usr/lib"
        say "user library $lib installed without a kernel module: the host that runs it needs pf_ring.ko $lib (scripts/install_pfring.sh --check there)"
        return
    fi
    mod=$(module_version) || mod=""
    echo "PF_RING user library: ${lib:-not found}"
    if [ -r /proc/net/pf_ring/info ]; then
        echo "PF_RING kernel module: ${mod:-unknown} (loaded)"
    else
        echo "PF_RING kernel module: ${mod:-not found} (not loaded: modprobe pf_ring)"
    fi
    [ -n "$lib" ] || die "no libpfring.so under $PREFIX/lib, /usr/local/lib or /usr/lib"
    [ -n "$mod" ] || die "no pf_ring kernel module installed"
    [ "$lib" = "$mod" ] || die "user library $lib and kernel module $mod differ: every pfring_open would fail with 'Wrong RING version'; install one release of both"
    say "user library and kernel module are both $lib"
}

main() {
    case "${1:-}" in
        --check)
            check_versions
            return
            ;;
        -h | --help)
            sed -n 's/^# \{0,1\}//; 2,28p' "$0"
            return
            ;;
        --library) LIBRARY_ONLY=1 ;;
        "") ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    need_root
    if [ -z "$PFRING_SRC" ] && [ "$PFRING_VER" = latest ]; then
        install_packages
    else
        install_source
    fi
    check_versions
}

main "$@"
