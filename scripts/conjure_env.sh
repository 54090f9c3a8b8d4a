# shellcheck shell=bash
# Sourced by the start scripts, on-reboot.sh, compose.sh and healthcheck.sh: asks a
# station binary for the configuration (`--print-config`: every variable as the
# binaries resolve it, the core plan, the file names), finds the binaries, and prints
# one-line messages. Nothing here re-derives what the binaries know.
#
#   CONJURE_CONF   the conjure.conf to load (default: sysconfig/conjure.conf of this
#                  checkout, /opt/conjure/sysconfig/conjure.conf in the images); it
#                  sources /var/lib/conjure/conjure.conf for local overrides
#   CJ_BIN_DIR     where cj-balancer, cj-detector and cj-app are (default: target/release
#                  of this checkout when built, else PATH)
#
# Precedence is the binaries' own: defaults < conjure.conf (and its includes) < the
# environment. The variables are set in the calling shell but exported only when
# they already were; the binaries are started with `--config "$CONJURE_CONF"`, so
# they read the same file themselves and a bad value is reported with its file and line.

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

# Loads the configuration into this shell as the binaries resolve it:
#   cj_load_conf NAME [sh]
# runs NAME (`any`: the first of cj-balancer, cj-detector, cj-app that is there)
# with `--config "$CONJURE_CONF" --print-config` and evals what it prints: every
# variable (NAME='value'), where each came from (CJ_ORIGIN_NAME), the core plan
# (CJ_PLAN_*) and the file names (CJ_PATH_*). A bad value stops the script with the
# binary's one line (exit 2). With no binary there, a script that must run before
# anything is installed (on-reboot.sh) passes `sh`: the file is then sourced as sh
# (the environment still wins) and the script checks the variables it reads itself;
# e2e/tests/scripts.rs checks that both ways agree.
cj_load_conf() {
    if [ ! -f "$CONJURE_CONF" ] || [ ! -r "$CONJURE_CONF" ]; then
        cj_die 2 "CONJURE_CONF=\"$CONJURE_CONF\": expected a readable conjure.conf (sysconfig/conjure.conf of the checkout)"
    fi
    local want=$1 fallback=${2:-} name bin="" printed
    [ "$want" = any ] && want="cj-balancer cj-detector cj-app"
    for name in $want; do
        if bin=$(cj_find_bin "$name"); then
            break
        fi
    done
    if [ -z "$bin" ]; then
        if [ "$fallback" = sh ]; then
            cj_source_conf
            return 0
        fi
        cj_die 3 "${want// / or } not found (looked in ${CJ_BIN_DIR:+$CJ_BIN_DIR, }$CONJURE_REPO/target/release and PATH); it prints the configuration this script needs (--print-config): run make build, or set CJ_BIN_DIR"
    fi
    # The binary says what is wrong, in one line; its exit code is ours.
    printed=$("$bin" --config "$CONJURE_CONF" --print-config) || exit $?
    eval "$printed"
}

# Sources CONJURE_CONF as sh, the environment winning: the fallback of cj_load_conf.
cj_source_conf() {
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

# Path of a station binary, or status 1 when there is none: CJ_BIN_DIR, then
# target/release of this checkout, then PATH.
cj_find_bin() {
    local name=$1 dir
    for dir in ${CJ_BIN_DIR:+"$CJ_BIN_DIR"} "$CONJURE_REPO/target/release"; do
        if [ -x "$dir/$name" ]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    command -v "$name" 2>/dev/null
}

# Path of a station binary; stops the script when there is none.
cj_bin() {
    cj_find_bin "$1" || cj_die 3 "$1 not found (looked in ${CJ_BIN_DIR:+$CJ_BIN_DIR, }$CONJURE_REPO/target/release and PATH): run make build, or set CJ_BIN_DIR"
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

# Whole number check for on-reboot.sh's own checks: cj_number VAR MIN MAX.
cj_number() {
    local var=$1 min=$2 max=$3 value=${!1-}
    if ! [[ $value =~ ^[0-9]+$ ]] || [ "${#value}" -gt 9 ] || [ "$value" -lt "$min" ] || [ "$value" -gt "$max" ]; then
        cj_die 2 "$var=\"$value\" ($CONJURE_CONF or environment): expected a whole number from $min to $max"
    fi
}
