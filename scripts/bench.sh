#!/usr/bin/env bash
# Pipeline benchmark: per-stage and end-to-end packet rates of the station on
# generated captures, and pmacctd and softflowd on the same files in the same
# run, reported as rates and ratios (never pass/fail).
#   BIN=target/release scripts/bench.sh
# Knobs: BENCH_PACKETS (64-byte capture, default 5000000), BENCH_MIX_PACKETS
# (mixed sizes, default 2000000), BENCH_FLOWS_PACKETS (64-byte frames of 100,000
# flows, default 3000000), BENCH_OUT (default bench-out).
# End to end and for every peer: wall clock, CPU seconds summed over every
# process (user + system, as /usr/bin/time reports each; children a process
# waits for are in its figure) and the peak resident memory of the largest one.
set -euo pipefail

BIN=${BIN:-target/release}
OUT=${BENCH_OUT:-bench-out}
N64=${BENCH_PACKETS:-5000000}
NMIX=${BENCH_MIX_PACKETS:-2000000}
NFLOWS=${BENCH_FLOWS_PACKETS:-3000000}
TIME=/usr/bin/time
mkdir -p "$OUT"
RESULTS="$OUT/results.md"

now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.2f", n / t / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "n/a" }'; }
pow2_at_least() { local p=1; while [ "$p" -lt "$1" ]; do p=$((p * 2)); done; echo "$p"; }

gen() { # name spec
    local file="$OUT/$1.pcap"
    if [ ! -f "$file" ] || [ "$(cat "$OUT/$1.spec" 2>/dev/null)" != "$2" ]; then
        "$BIN/cj-balancer" generate "$2" "$file" >/dev/null 2>&1
        echo "$2" >"$OUT/$1.spec"
    fi
    cat "$file" >/dev/null # into the page cache
    echo "$file"
}

fresh_shm() { mktemp -d /dev/shm/station-bench.XXXXXX; }

# Runs a command under GNU time, appending "user system maxrss_kb" to the file $1.
timed() {
    local report=$1
    shift
    "$TIME" -a -o "$report" -f '%U %S %M' "$@"
}

# "cpu_seconds peak_mb" from a file of timed() lines (CPU summed, memory the largest).
usage() { awk '{ cpu += $1 + $2; if ($3 > m) m = $3 } END { printf "%.2f %.0f\n", cpu, m / 1024 }' "$1"; }

bench_capture() { # name file packets max_frame
    local name=$1 file=$2 n=$3 maxframe=$4
    local slot=$(( (8 + 16 + maxframe + 7) / 8 * 8 ))
    local slots; slots=$(pow2_at_least "$n")
    local shm t0 t1

    # 1. Balancer alone, one core: a queue large enough for the whole capture,
    #    no consumer. Source read + parse + hash + copy into shared memory.
    shm=$(fresh_shm)
    t0=$(now)
    CJ_SHM_DIR=$shm CJ_IFACE=pcap:$file CJ_CORECOUNT=1 CJ_SLOT_SIZE=$slot CJ_QUEUE_SLOTS=$slots \
        CJ_ON_FULL=drop CJ_LOG_INTERVAL=0 CJ_BALANCER_CORE=0 "$BIN/cj-balancer" 2>"$OUT/$name-balancer.log"
    t1=$(now)
    # The balancer's own figure: its packet loop, from first frame to end of
    # stream (the wall time also counts populating the whole-capture queue).
    local t_bal_wall; t_bal_wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    local t_bal; t_bal=$(grep -o 'received [0-9]* in [0-9.]*s' "$OUT/$name-balancer.log" | tail -1 | sed 's/.* in \([0-9.]*\)s/\1/')
    local dropped; dropped=$(grep -o 'queue full [0-9]*' "$OUT/$name-balancer.log" | tail -1 | awk '{print $3}')

    # 2. Detector alone (one worker) on that full, closed queue; the app drains records.
    mkdir -p "$OUT/$name-app"
    CJ_SHM_DIR=$shm CJ_CORECOUNT=1 CJ_SLOT_SIZE=$slot CJ_QUEUE_SLOTS=$slots CJ_LOG_INTERVAL=0 CJ_WAIT=backoff \
        "$BIN/cj-app" --out "$OUT/$name-app" >"$OUT/$name-app.log" 2>&1 &
    local app=$!
    t0=$(now)
    CJ_SHM_DIR=$shm CJ_CORECOUNT=1 CJ_COREBASE=1 CJ_SLOT_SIZE=$slot CJ_QUEUE_SLOTS=$slots CJ_LOG_INTERVAL=0 \
        CJ_WAIT=busy "$BIN/cj-detector" 2>"$OUT/$name-detector.log"
    t1=$(now)
    wait "$app"
    # The worker's own figure: first packet to last.
    local t_det_wall; t_det_wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    local t_det; t_det=$(grep -o 'packets in [0-9.]*s' "$OUT/$name-detector.log" | tail -1 | sed 's/packets in \([0-9.]*\)s/\1/')
    rm -rf "$shm"

    # 3. End to end: the three processes at once with default-sized queues, as
    #    deployed on dedicated cores: balancer pinned to core 0, one worker pinned
    #    to core 1 busy-polling (CJ_WAIT=busy), the app backing off on core 0 (it has
    #    little to do, and must not share the busy-polling worker's core).
    shm=$(fresh_shm)
    mkdir -p "$OUT/$name-e2e"
    local u_e2e="$OUT/$name-e2e.usage"
    : >"$u_e2e"
    t0=$(now)
    CJ_SHM_DIR=$shm CJ_IFACE=pcap:$file CJ_CORECOUNT=1 CJ_COREBASE=1 CJ_LOG_INTERVAL=0 \
        CJ_BALANCER_CORE=0 OUT="$OUT/$name-e2e" CAPTURE="$file" BIN="$BIN" TIME="$TIME" U="$u_e2e" \
        bash -c '
            CJ_WAIT=busy "$TIME" -a -o "$U" -f "%U %S %M" "$BIN/cj-detector" & d=$!
            CJ_WAIT=backoff "$TIME" -a -o "$U" -f "%U %S %M" taskset -c 0 "$BIN/cj-app" --out "$OUT" >"$OUT/app.log" 2>&1 & a=$!
            CJ_WAIT=backoff "$TIME" -a -o "$U" -f "%U %S %M" "$BIN/cj-balancer" 2>"$OUT/balancer.log"; wait $d; wait $a' 2>"$OUT/$name-e2e.log"
    t1=$(now)
    local t_e2e; t_e2e=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    rm -rf "$shm"

    # 4. pmacctd on the same file: the ZeroMQ plugin pipe, print plugin, same aggregate.
    local t_pm="0"
    if command -v pmacctd >/dev/null; then
        cat >"$OUT/pmacctd.conf" <<CONF
daemonize: false
pcap_savefile: $file
aggregate: src_host, dst_host, src_port, dst_port, proto
plugins: print
print_output: csv
print_output_file: $OUT/$name-pmacct.csv
print_refresh_time: 3600
plugin_pipe_zmq: true
plugin_pipe_zmq_profile: large
CONF
        : >"$OUT/$name-pmacctd.usage"
        t0=$(now)
        timed "$OUT/$name-pmacctd.usage" pmacctd -f "$OUT/pmacctd.conf" >"$OUT/$name-pmacctd.log" 2>&1
        t1=$(now)
        # pmacctd sleeps 2 s before reading a savefile (PCAP capture file, sleeping for 2 seconds).
        t_pm=$(awk -v a="$t0" -v b="$t1" 'BEGIN { t = b - a - 2; print (t > 0 ? t : 0.001) }')
    fi

    # 5. softflowd -r on the same file, exporting to a closed loopback port.
    #    softflowd 1.1.0 cuts the -r path to 16 characters (run it beside the
    #    file) and, with a control socket, blocks in accept() after reading a
    #    file (-c none: no socket, so it exits at the end of the file).
    local t_sf="0"
    if command -v softflowd >/dev/null; then
        local sf_usage; sf_usage=$(realpath -m "$OUT/$name-softflowd.usage")
        : >"$sf_usage"
        t0=$(now)
        (cd "$(dirname "$file")" && exec "$TIME" -a -o "$sf_usage" -f '%U %S %M' \
            softflowd -d -r "$(basename "$file")" -n 127.0.0.1:9 -m 1000000 \
            -c none -p "$PWD/softflowd.pid") >"$OUT/$name-softflowd.log" 2>&1 || true
        t1=$(now)
        t_sf=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    fi

    # 6. nfpcapd -r (nfdump) on the same file, writing its flow files.
    local t_nf="0"
    if command -v nfpcapd >/dev/null; then
        rm -rf "$OUT/$name-nfpcapd" && mkdir -p "$OUT/$name-nfpcapd"
        : >"$OUT/$name-nfpcapd.usage"
        t0=$(now)
        timed "$OUT/$name-nfpcapd.usage" nfpcapd -r "$file" -w "$OUT/$name-nfpcapd" >"$OUT/$name-nfpcapd.log" 2>&1 || true
        t1=$(now)
        t_nf=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    fi

    local r_bal r_det r_e2e r_pm r_sf r_nf
    r_bal=$(rate "$n" "$t_bal"); r_det=$(rate "$n" "$t_det"); r_e2e=$(rate "$n" "$t_e2e")
    r_pm=$( [ "$t_pm" != 0 ] && rate "$n" "$t_pm" || echo 0 )
    r_sf=$( [ "$t_sf" != 0 ] && rate "$n" "$t_sf" || echo 0 )
    r_nf=$( [ "$t_nf" != 0 ] && rate "$n" "$t_nf" || echo 0 )
    # CPU seconds and peak MB of each whole run, and CPU per packet relative to the station's.
    local c_e2e m_e2e c_pm m_pm c_sf m_sf c_nf m_nf
    read -r c_e2e m_e2e < <(usage "$u_e2e")
    read -r c_pm m_pm < <( [ -s "$OUT/$name-pmacctd.usage" ] && usage "$OUT/$name-pmacctd.usage" || echo "- -")
    read -r c_sf m_sf < <( [ -s "$OUT/$name-softflowd.usage" ] && usage "$OUT/$name-softflowd.usage" || echo "- -")
    read -r c_nf m_nf < <( [ -s "$OUT/$name-nfpcapd.usage" ] && usage "$OUT/$name-nfpcapd.usage" || echo "- -")
    {
        echo "### $name: $n frames ($(stat -c %s "$file") bytes)"
        echo
        echo "| stage | seconds | Mpps | station e2e vs it | CPU s (all processes) | CPU vs station | peak MB |"
        echo "|---|---|---|---|---|---|---|"
        echo "| balancer alone (1 core, read+hash+copy; its packet loop, wall $t_bal_wall s; dropped ${dropped:-?}) | $t_bal | $r_bal | | | | |"
        echo "| detector alone (1 worker busy-polling; first to last packet, wall $t_det_wall s) | $t_det | $r_det | | | | |"
        echo "| station end to end, wall clock: three processes started, capture read, files written (balancer + 1 worker busy-polling + app) | $t_e2e | $r_e2e | 1.0x | $c_e2e | 1.0x | $m_e2e |"
        echo "| pmacctd (ZeroMQ plugin pipe, print plugin) | $t_pm | $r_pm | $(ratio "$r_e2e" "$r_pm") | $c_pm | $(ratio "$c_pm" "$c_e2e") | $m_pm |"
        echo "| softflowd -r (table sized for 1M flows) | $t_sf | $r_sf | $(ratio "$r_e2e" "$r_sf") | $c_sf | $(ratio "$c_sf" "$c_e2e") | $m_sf |"
        echo "| nfpcapd -r (nfdump) | $t_nf | $r_nf | $(ratio "$r_e2e" "$r_nf") | $c_nf | $(ratio "$c_nf" "$c_e2e") | $m_nf |"
        echo
    } | tee -a "$RESULTS"
}

: >"$RESULTS"
echo "# make bench, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r)" | tee -a "$RESULTS"
echo | tee -a "$RESULTS"
f64=$(gen small64 "flows=10000,packets=$N64,sizes=64:100,v6=0,seed=1")
bench_capture small64 "$f64" "$N64" 64
fmix=$(gen mixed "flows=10000,packets=$NMIX,sizes=64:40/576:30/1514:30,v6=20,vlan=10,seed=2")
bench_capture mixed "$fmix" "$NMIX" 1526
f100k=$(gen flows100k "flows=100000,packets=$NFLOWS,sizes=64:100,v6=0,seed=3")
bench_capture flows100k "$f100k" "$NFLOWS" 64
echo "results in $RESULTS"
