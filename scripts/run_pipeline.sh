#!/usr/bin/env bash
# Runs balancer, detector and app on one capture, offline, with queues in a
# private directory under /dev/shm that is removed afterwards.
#   OUT=dir CAPTURE=file.pcap scripts/run_pipeline.sh
# Without CAPTURE, a synthetic capture (SAMPLE_SPEC) is generated into $OUT/sample.pcap
# together with its ground truth $OUT/sample-truth.csv.
# CJ_* variables in the environment (CJ_CORECOUNT, ZBALANCE_HASH_MODE, ...) are passed on.
set -euo pipefail

BIN=${BIN:-target/release}
OUT=${OUT:-out}
CAPTURE=${CAPTURE:-}
SAMPLE_SPEC=${SAMPLE_SPEC:-flows=2000,packets=200000,sizes=64:40/576:30/1500:30,v6=20,vlan=10,seed=1}

mkdir -p "$OUT"
if [ -z "$CAPTURE" ]; then
    CAPTURE="$OUT/sample.pcap"
    "$BIN/cj-balancer" generate "$SAMPLE_SPEC" "$CAPTURE" --truth "$OUT/sample-truth.csv"
fi
if [ ! -r "$CAPTURE" ]; then
    echo "run_pipeline: cannot read capture $CAPTURE" >&2
    exit 2
fi

SHM=$(mktemp -d /dev/shm/station-run.XXXXXX)
trap 'rm -rf "$SHM"' EXIT
export CJ_SHM_DIR="$SHM"
export CJ_IFACE="pcap:$CAPTURE"
export CJ_LOG_INTERVAL=${CJ_LOG_INTERVAL:-0}
# Offline the cores are shared with the balancer and the app: back off rather than spin.
export CJ_WAIT=${CJ_WAIT:-backoff}

"$BIN/cj-detector" &
DET=$!
"$BIN/cj-app" --out "$OUT" &
APP=$!
status=0
"$BIN/cj-balancer" || status=$?
wait "$DET" || status=$?
wait "$APP" || status=$?
if [ "$status" -ne 0 ]; then
    echo "run_pipeline: a process failed (exit $status)" >&2
    exit "$status"
fi
echo "capture: $CAPTURE"
echo "results: $OUT/flows.csv $OUT/flows.json $OUT/summary.json"
if [ -f "$OUT/sample-truth.csv" ] && [ "$CAPTURE" = "$OUT/sample.pcap" ]; then
    echo "ground truth of the generated capture: $OUT/sample-truth.csv"
fi
