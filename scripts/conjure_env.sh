# shellcheck shell=bash
# Sourced by the start scripts, on-reboot.sh and compose.sh: loads conjure.conf
# the way the binaries do, finds the binaries, and prints one-line messages.
#
#   CONJURE_CONF   the conjure.conf to load (default: sysconfig/conjure.conf of this
#                  checkout, /opt/conjure/sysconfig/conjure.conf in the images); it
#                  sources /var/lib/conjure/conjure.conf for local overrides
#   CJ_BIN_DIR     where cj-balancer, cj-detector and cj-app are (default: target/release
#                  of this checkout when built, else PATH)
#
# Precedence is the binaries' own: defaults < conjure.conf (and its includes) < the
# environment. A variable already in the environment keeps its value; the file fills
# in the rest. The binaries are started with `--config "$CONJURE_CONF"`, so they read
# the same file themselves and a bad value is reported with its file and line.

CONJURE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONJURE_CONF=${CONJURE_CONF:-$CONJURE_REPO/sysconfig/conjure.conf}
CONJURE_PROG=${CONJURE_PROG:-$(basename "$0")}

# One line on stderr, prefixed with the program name.
cj_say() {
    printf '%s: %s\n' "$CONJURE_PROG" "$*" >&2
}

# One line on stderr, then exit (2: configuration, 3: a precondition of the host).
cj_die() {
    local code=$1
    shift
    cj_say "$*"
    exit "$code"
}

# The names conjure.conf assigns: every variable the station knows (the file holds them all).
cj_conf_names() {
    sed -n 's/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}\([A-Z_][A-Z0-9_]*\)=.*/\2/p' \
        "$CONJURE_REPO/sysconfig/conjure.conf" "$CONJURE_CONF" 2>/dev/null | sort -u
}

# Loads CONJURE_CONF into this shell; the environment wins over the file.
cj_load_conf() {
    if [ ! -f "$CONJURE_CONF" ] || [ ! -r "$CONJURE_CONF" ]; then
        cj_die 2 "CONJURE_CONF=\"$CONJURE_CONF\": expected a readable conjure.conf (sysconfig/conjure.conf of the checkout)"
    fi
    local name
    local -A from_env=()
    for name in $(compgen -e); do
        case $name in
            CJ_* | ZBALANCE_HASH_MODE | N_QUEUE_SETS | PFRING_VER | PF_DRIVER) from_env[$name]=${!name} ;;
        esac
    done
    # The file is the subset of sh the station's parser accepts; what the parser would
    # refuse is left to the binary, which names the file and line. A failed command in
    # it must not stop this script before the binary can say so.
    # shellcheck disable=SC1090
    . "$CONJURE_CONF" >/dev/null 2>&1 || true
    for name in "${!from_env[@]}"; do
        printf -v "$name" '%s' "${from_env[$name]}"
        export "${name?}"
    done
}

# Path of a station binary.
cj_bin() {
    local name=$1 dir
    for dir in ${CJ_BIN_DIR:+"$CJ_BIN_DIR"} "$CONJURE_REPO/target/release"; do
        if [ -x "$dir/$name" ]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    cj_die 3 "$name not found (looked in ${CJ_BIN_DIR:+$CJ_BIN_DIR, }$CONJURE_REPO/target/release and PATH): run make build, or set CJ_BIN_DIR"
}

# Replaces this shell with a station binary reading CONJURE_CONF, so that signals
# (systemd's, docker's) and the systemd notify socket reach the binary itself.
cj_exec() {
    local name=$1
    shift
    local bin
    bin=$(cj_bin "$name")
    exec "$bin" --config "$CONJURE_CONF" "$@"
}

# Whole number check for the scripts' own variables: cj_number VAR MIN MAX.
cj_number() {
    local var=$1 min=$2 max=$3 value=${!1-}
    if ! [[ $value =~ ^[0-9]+$ ]] || [ "${#value}" -gt 9 ] || [ "$value" -lt "$min" ] || [ "$value" -gt "$max" ]; then
        cj_die 2 "$var=\"$value\" ($CONJURE_CONF or environment): expected a whole number from $min to $max"
    fi
}

# Cores of the detector's plan (CJ_COREBASE, CJ_CORECOUNT, CJ_SKIP_CORE), comma separated,
# as station::coreplan plans them: start at CJ_COREBASE, step over CJ_SKIP_CORE.
cj_core_plan() {
    local core=${CJ_COREBASE:-0} count=${CJ_CORECOUNT:-1} skip=${CJ_SKIP_CORE:--1} i out=""
    [ -n "$skip" ] || skip=-1
    for ((i = 0; i < count; i++)); do
        if [ "$core" = "$skip" ]; then
            core=$((core + 1))
        fi
        out="${out:+$out,}$core"
        core=$((core + 1))
    done
    printf '%s\n' "$out"
}
