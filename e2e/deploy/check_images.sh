#!/usr/bin/env bash
# make check-images: builds every target of docker/Dockerfile with `make container` and
# checks each image by running it, against the generator's truth:
#
#   conjure_sim, conjure_det, conjure_app   every binary starts (--version), no compiler in the image;
#                                           conjure_sim's three containers on a generated capture
#                                           (pcap:): flows.csv equals the generator's truth
#   conjure (default), conjure_zbalance     the balancer links libpfring; the same capture through
#                                           PF_RING's pcap device (pfring:pcap:FILE, libpfring only,
#                                           no kernel module): once with conjure for all three, once
#                                           with conjure_zbalance + conjure_det + conjure_app:
#                                           flows.csv equals the generator's truth
#
# Variables (those of make container):
#   base_image, builder_image   the Debian and Rust images; both empty: e2e/deploy/images.sh makes
#                               them here from Debian's mirror and this machine's toolchain
#   pfring_src                  a PF_RING source tree: the PF_RING images build their user library
#                               from it (no download from ntop). Empty: under CI the PF_RING images
#                               are NOT CHECKED (one line); elsewhere they are built the default way
#                               (ntop's packages, or the tag pfring_ver) and checked
#   pfring_ver, DOCKER, MAKE    passed on
#
# Needs root and docker. Everything it starts is named station-check-<pid>-* and removed
# at the end. The images stay, and so do the builder and PF_RING stages, tagged
# station-build-cache:check-images[-pfring], the cache of the next run; the untagged
# stages of earlier builds of docker/Dockerfile are pruned (by its label).
set -euo pipefail
cd "$(dirname "$0")/../.."

DOCKER=${DOCKER:-docker}
MAKE=${MAKE:-make}
base_image=${base_image:-}
builder_image=${builder_image:-}
pfring_src=${pfring_src:-}
pfring_ver=${pfring_ver:-latest}
# Long enough to fill the queues several times over, short enough for seconds per run.
SPEC=flows=300,packets=30000,sizes=64:40/576:30/1500:30,v6=20,vlan=10,seed=7
TAG=station-check-$$

say() { echo "check-images: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}

work=$(mktemp -d /var/tmp/station-check-images.XXXXXX)
queues=()
cleanup() {
    local ids
    ids=$("$DOCKER" ps -aq --filter "name=^$TAG-" 2>/dev/null || true)
    # shellcheck disable=SC2086 # one id per word
    [ -z "$ids" ] || "$DOCKER" rm -f $ids >/dev/null 2>&1 || true
    # The containers wrote as root into bind mounts: removed here, by the same root.
    rm -rf "$work" "${queues[@]}"
    "$DOCKER" image prune -f --filter label=station.build=conjure >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [ -z "$base_image" ] && [ -z "$builder_image" ]; then
    say "base and builder images from e2e/deploy/images.sh (no registry)"
    { read -r base_image && read -r builder_image; } < <(e2e/deploy/images.sh)
fi
make_args=()
[ -n "$base_image" ] && make_args+=("base_image=$base_image")
[ -n "$builder_image" ] && make_args+=("builder_image=$builder_image")
make_args+=("pfring_ver=$pfring_ver")
[ -n "$pfring_src" ] && make_args+=("pfring_src=$pfring_src")

# make container [target=$1]; the last lines of its output when it fails.
build() {
    local target=$1 image=conjure${1:+_$1} log="$work/build-${1:-default}.log"
    say "make container${target:+ target=$target} -> $image"
    "$MAKE" --no-print-directory container ${target:+"target=$target"} "${make_args[@]}" >"$log" 2>&1 || {
        tail -40 "$log" >&2
        fail "make container${target:+ target=$target} (log above)"
    }
    # Its id, at once: the checks below run this build even if another one retags the name.
    ids[$image]=$("$DOCKER" image inspect -f '{{.Id}}' "$image")
}
declare -A ids

# Tags stage $1 of the build just made (every step cached: seconds) as $2, so that it stays
# the cache of the next build while the prune at the end drops the stages older builds
# left untagged (and only those of docker/Dockerfile). $3...: the build arguments.
keep_stage() {
    local stage=$1 tag=$2
    shift 2
    "$DOCKER" build -q -f docker/Dockerfile --target "$stage" "$@" -t "$tag" . >"$work/keep-$stage.log" 2>&1 || {
        tail -40 "$work/keep-$stage.log" >&2
        fail "docker build --target $stage (log above)"
    }
}
build_args=(--build-arg "pfring_ver=$pfring_ver")
[ -n "$base_image" ] && build_args+=(--build-arg "BASE_IMAGE=$base_image")
[ -n "$builder_image" ] && build_args+=(--build-arg "BUILDER_IMAGE=$builder_image")

# Runs `$2 $3...` in image $1 (as built above; entrypoint $2); its output.
in_image() {
    local image=$1 entry=$2
    shift 2
    "$DOCKER" run --rm --entrypoint "$entry" "${ids[$image]}" "$@"
}

# Each binary of the image starts; no compiler in it.
smoke() {
    local image=$1 bin out
    shift
    for bin in "$@"; do
        out=$(in_image "$image" "$bin" --version 2>&1) || fail "$image: $bin --version: $out"
        case "$out" in
            "$bin "*) ;;
            *) fail "$image: $bin --version printed: $out" ;;
        esac
    done
    if out=$(in_image "$image" sh -c 'command -v cc || command -v cargo || command -v clang'); then
        fail "$image holds a compiler: $out"
    fi
    say "$image: $* start; no compiler"
}

# The balancer of image $1 links libpfring, which the image holds.
links_pfring() {
    local image=$1 out
    out=$(in_image "$image" ldd /usr/local/bin/cj-balancer 2>&1) || fail "$image: ldd cj-balancer: $out"
    grep -q 'libpfring\.so.* => /' <<<"$out" || fail "$image: cj-balancer does not link libpfring:"$'\n'"$out"
    if grep 'not found' <<<"$out"; then
        fail "$image: cj-balancer misses libraries (above)"
    fi
}

# "key,packets,bytes" per (src, dst, sport, dport, proto), summed (the default aggregate
# merges VLANs), sorted: for flows.csv and for the truth alike (first seven columns).
rows() {
    awk -F, 'NR > 1 && NF >= 7 { k = $1 "," $2 "," $3 "," $4 "," $5; p[k] += $6; b[k] += $7 }
             END { for (k in p) print k "," p[k] "," b[k] }' "$1" | LC_ALL=C sort
}

# The capture and its truth, written by the generator in conjure_sim.
data="$work/data"
mkdir -p "$data"
generate() {
    "$DOCKER" run --rm -v "$data:/data" --entrypoint cj-balancer "${ids[conjure_sim]}" \
        generate "$SPEC" /data/capture.pcap --truth /data/truth.csv >/dev/null 2>&1 \
        || fail "cj-balancer generate in conjure_sim"
}

# The output of run $1's three containers.
logs() {
    local c
    for c in app detector balancer; do
        echo "--- $c:"
        "$DOCKER" logs "$TAG-$1-$c" 2>&1 | tail -20
    done
}

# Balancer, detector and app, each in its own container of image $2, $3, $4, with the
# balancer reading CJ_IFACE=$5; the queues in a host directory mounted in all three.
# flows.csv must equal the truth and every container must exit 0.
pipeline() {
    local name=$1 bal=$2 det=$3 app=$4 iface=$5 q
    q=$(mktemp -d /dev/shm/station-check-images.XXXXXX)
    queues+=("$q")
    local common=(-v "$data:/data" -v "$q:/queues"
        -e CJ_IFACE="$iface" -e CJ_SHM_DIR=/queues -e CJ_CORECOUNT=1 -e CJ_COREBASE=0
        -e CJ_LOG_INTERVAL=0 -e CJ_WAIT=backoff -e CJ_QUEUE_SLOTS=4096
        -e CJ_RECORD_QUEUE_SLOTS=4096 -e CJ_FLOW_TABLE_SIZE=65536)
    "$DOCKER" run -d --name "$TAG-$name-app" "${common[@]}" --entrypoint cj-app "${ids[$app]}" --out "/data/out-$name" >/dev/null
    "$DOCKER" run -d --name "$TAG-$name-detector" "${common[@]}" --entrypoint cj-detector "${ids[$det]}" >/dev/null
    "$DOCKER" run -d --name "$TAG-$name-balancer" "${common[@]}" --entrypoint cj-balancer "${ids[$bal]}" >/dev/null
    local c state deadline=$((SECONDS + 300))
    for c in balancer detector app; do
        while :; do
            state=$("$DOCKER" inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$TAG-$name-$c")
            [ "${state% *}" = exited ] && break
            [ "$SECONDS" -lt "$deadline" ] \
                || fail "$name: the $c container still ${state% *} after 300 s, waiting for the end of the capture:"$'\n'"$(logs "$name")"
            sleep 0.5
        done
        [ "${state#* }" = 0 ] || fail "$name: the $c container exited ${state#* }:"$'\n'"$(logs "$name")"
    done
    [ -s "$data/out-$name/flows.csv" ] || fail "$name: no flows.csv"
    if ! diff <(rows "$data/truth.csv") <(rows "$data/out-$name/flows.csv") >"$work/diff-$name"; then
        head -20 "$work/diff-$name" >&2
        fail "$name: flows.csv differs from the generator's truth (< truth, > flows.csv)"
    fi
    say "$name: $iface through $bal, $det, $app: flows.csv equals the generator's truth ($(rows "$data/truth.csv" | wc -l) rows, $(awk -F, 'NR > 1 { s += $6 } END { print s }' "$data/truth.csv") packets)"
}

# ---- without PF_RING
build sim
keep_stage builder station-build-cache:check-images "${build_args[@]}"
build det
build app
smoke conjure_sim cj-balancer cj-detector cj-app
smoke conjure_det cj-detector
smoke conjure_app cj-app
generate
pipeline sim conjure_sim conjure_sim conjure_sim pcap:/data/capture.pcap

# ---- with PF_RING
if [ -z "$pfring_src" ] && [ -n "${CI:-}" ]; then
    echo "check-images: NOT CHECKED under CI: the PF_RING images (the default target conjure, and conjure_zbalance) were neither built nor run, because CI cannot reach ntop's packages or sources and PF_RING's sources may not be committed here; run make check-images pfring_src=<PF_RING source tree> where one is"
    exit 0
fi
if [ -n "$pfring_src" ]; then
    say "PF_RING user library from the local tree $pfring_src"
else
    say "PF_RING user library from ntop (pfring_ver=$pfring_ver); where ntop cannot be reached give pfring_src=<PF_RING source tree>"
fi
build ""
[ -n "$pfring_src" ] && build_args+=(--build-arg PFRING_SRC_IMAGE=station-pfring-src)
keep_stage pfring station-build-cache:check-images-pfring "${build_args[@]}"
build zbalance
smoke conjure cj-balancer cj-detector cj-app
smoke conjure_zbalance cj-balancer
links_pfring conjure
links_pfring conjure_zbalance
pipeline default conjure conjure conjure pfring:pcap:/data/capture.pcap
pipeline split conjure_zbalance conjure_det conjure_app pfring:pcap:/data/capture.pcap
say "every image built and checked"
