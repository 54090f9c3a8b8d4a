#!/usr/bin/env bash
# Runs balancer, detector and app with one environment, in one command.
#
#   OUT=dir [CAPTURE=file.pcap] scripts/run_pipeline.sh        offline: runs to the end of the capture
#   OUT=dir CJ_IFACE=pcap:file.pcap scripts/run_pipeline.sh    the same
#   OUT=dir CJ_IFACE=eth1 scripts/run_pipeline.sh              live: runs until Ctrl-C (SIGINT) or SIGTERM
#
# Without CAPTURE or CJ_IFACE, a synthetic capture (SAMPLE_SPEC) is generated into
# $OUT/sample.pcap together with its ground truth $OUT/sample-truth.csv. CAPTURE and a
# CJ_IFACE of another source together are refused. Every CJ_* variable in the
# environment (CJ_CORECOUNT, ZBALANCE_HASH_MODE, ...) is passed on to the three.
#
# The queues live in a private directory under /dev/shm, removed at the end, unless
# CJ_SHM_DIR is set. A live run is stopped in pipeline order on SIGINT/SIGTERM: the
# balancer first, then the detector (it flushes every flow), then the app (it drains
# the record queues, writes its files and prints the summary). Exit 0 when all three
# exited 0, else the first failure's code.
set -euo pipefail

BIN=${BIN:-target/release}
OUT=${OUT:-out}
CAPTURE=${CAPTURE:-}
SAMPLE_SPEC=${SAMPLE_SPEC:-flows=2000,packets=200000,sizes=64:40/576:30/1500:30,v6=20,vlan=10,seed=1}
CJ_IFACE=${CJ_IFACE:-}

# rwxr-xr-x whatever the umask: cj-app refuses an output directory its group may
# write (umask 0002, the usual one on Ubuntu and Fedora, made it 0775).
mkdir -p "$OUT" && chmod go-w "$OUT"
if [ -n "$CAPTURE" ] && [ -n "$CJ_IFACE" ] && [ "$CJ_IFACE" != "pcap:$CAPTURE" ]; then
    echo "run_pipeline: CAPTURE=$CAPTURE and CJ_IFACE=$CJ_IFACE both name a source; give one" >&2
    exit 2
fi
if [ -z "$CAPTURE" ] && [ -z "$CJ_IFACE" ]; then
    CAPTURE="$OUT/sample.pcap"
    "$BIN/cj-balancer" generate "$SAMPLE_SPEC" "$CAPTURE" --truth "$OUT/sample-truth.csv"
fi
if [ -n "$CAPTURE" ]; then
    CJ_IFACE="pcap:$CAPTURE"
fi
case "$CJ_IFACE" in
    pcap:*)
        live=0
        file=${CJ_IFACE#pcap:}
        if [ ! -r "$file" ]; then
            echo "run_pipeline: cannot read capture $file" >&2
            exit 2
        fi
        ;;
    sim:*) live=0 ;;
    *) live=1 ;;
esac
export CJ_IFACE

if [ -z "${CJ_SHM_DIR:-}" ]; then
    SHM=$(mktemp -d /dev/shm/station-run.XXXXXX)
    trap 'rm -rf "$SHM"' EXIT
    export CJ_SHM_DIR="$SHM"
fi
# Offline nothing needs the stats lines; live, they show what is happening.
if [ "$live" = 1 ]; then
    export CJ_LOG_INTERVAL=${CJ_LOG_INTERVAL:-5}
else
    export CJ_LOG_INTERVAL=${CJ_LOG_INTERVAL:-0}
fi
# The cores are shared by the three processes here: back off rather than spin.
export CJ_WAIT=${CJ_WAIT:-backoff}

# Live, the three run in sessions of their own (setsid): Ctrl-C reaches only this script,
# which then stops them in pipeline order. (Offline, a Ctrl-C stops all three at once,
# each cleanly.)
spawn=()
if [ "$live" = 1 ]; then
    spawn=(setsid)
fi

status=0
# Waits for one process and keeps the first failure's exit code.
reap() {
    local code=0
    wait "$1" || code=$?
    if [ "$status" -eq 0 ] && [ "$code" -ne 0 ]; then
        status=$code
    fi
}

"${spawn[@]}" "$BIN/cj-detector" &
DET=$!
"${spawn[@]}" "$BIN/cj-app" --out "$OUT" &
APP=$!
if [ "$live" = 1 ]; then
    stopping=0
    trap 'stopping=1' INT TERM
    "${spawn[@]}" "$BIN/cj-balancer" &
    BAL=$!
    echo "run_pipeline: live capture on $CJ_IFACE; Ctrl-C stops it" >&2
    while [ "$stopping" = 0 ] && kill -0 "$BAL" 2>/dev/null; do
        wait "$BAL" 2>/dev/null || true
    done
    if kill -0 "$BAL" 2>/dev/null; then
        echo "run_pipeline: stopping the balancer, then the detector, then the app" >&2
        kill -TERM "$BAL" 2>/dev/null || true
    fi
    reap "$BAL"
    kill -TERM "$DET" 2>/dev/null || true
    reap "$DET"
    # The app ends by itself once every record queue ended and was drained; the signal
    # is harmless then, and ends it otherwise.
    kill -TERM "$APP" 2>/dev/null || true
    reap "$APP"
else
    "$BIN/cj-balancer" || status=$?
    reap "$DET"
    reap "$APP"
fi
if [ "$status" -ne 0 ]; then
    echo "run_pipeline: a process failed (exit $status)" >&2
    exit "$status"
fi
if [ -n "$CAPTURE" ]; then
    echo "capture: $CAPTURE"
fi
echo "results: $OUT/flows.csv $OUT/flows.json $OUT/summary.json"
if [ -f "$OUT/sample-truth.csv" ] && [ "$CAPTURE" = "$OUT/sample.pcap" ]; then
    echo "ground truth of the generated capture: $OUT/sample-truth.csv"
fi
