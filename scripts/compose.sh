#!/usr/bin/env bash
# Runs the compose stack of docker/docker-compose.yaml with conjure.conf's
# variables: asks a station binary for the configuration (`--print-config` with
# CONJURE_CONF, default sysconfig/conjure.conf, which sources
# /var/lib/conjure/conjure.conf; the environment wins), writes every variable
# to an env file the containers get (CONJURE_ENV_FILE, default
# /run/conjure/compose.env), and exports what the compose file itself uses:
# CJ_IMAGE, CJ_DETECTOR_CPUS (the detector's core plan as a cpuset, the
# binary's CJ_PLAN_WORKER_CORES), CJ_HUGEPAGES_MOUNT. With CJ_TUN=yes it adds
# docker/docker-compose.tun.yaml (the detector gets /dev/net/tun for flow
# divert; not with CJ_TUN=no). conjure-docker.service runs `compose.sh up` and
# `compose.sh down`. The binary (cj-balancer, cj-detector or cj-app) is looked
# for in CJ_BIN_DIR, target/release of this checkout, then PATH.
#
#   compose.sh up | down | config | ps | logs [...] | <any docker compose command>
#   compose.sh env    print the env file and the compose variables, run nothing
#
# down, stop and ps read no configuration (neither a binary nor conjure.conf is
# needed): they run compose with the project name and both compose files, so a
# typo in /var/lib/conjure/conjure.conf, or no host binary, cannot keep
# conjure-docker.service's ExecStop from stopping balancer, detector and app in order.
#
# Also read: CONJURE_DATA (the host directory mounted at /var/lib/conjure,
# default /var/lib/conjure), PF_RING_ETC (default /etc/pf_ring),
# COMPOSE_PROJECT_NAME (default conjure), CONJURE_OOM_SCORE_ADJ (default -500),
# CONJURE_LOG_DRIVER (default journald), CONJURE_HEALTH_INTERVAL (how often the
# health checks run, default 30s: a compose duration such as 1s or 1m30s),
# CONJURE_WATCHDOG_SEC (the containers' CJ_WATCHDOG_SEC, default 30: a process
# whose loop makes no progress that long exits and is restarted; 0: off). Uses `docker compose` (v2) when
# present, else `docker-compose` (v1).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=conjure_env.sh
. "$(dirname "$(readlink -f "$0")")/conjure_env.sh"

# Sets `compose` to docker compose (v2), else docker-compose (v1).
find_compose() {
    if docker compose version >/dev/null 2>&1; then
        compose=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        compose=(docker-compose)
    else
        cj_die 3 "neither docker compose (the compose plugin) nor docker-compose is installed (apt-get install docker-compose)"
    fi
}

case ${1:-up} in
    down | stop | ps)
        # The containers are found by project name; the tun file only adds a device to
        # the detector, so both files stop a stack started with or without it, in the
        # order of depends_on. The env file is what `up` wrote (compose refuses a missing
        # one, and /dev/null: an empty one is made when it is gone).
        export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-conjure}
        export CONJURE_ENV_FILE=${CONJURE_ENV_FILE:-/run/conjure/compose.env}
        if [ ! -f "$CONJURE_ENV_FILE" ]; then
            mkdir -p "$(dirname "$CONJURE_ENV_FILE")"
            (umask 077 && : >>"$CONJURE_ENV_FILE")
        fi
        find_compose
        exec "${compose[@]}" -f "$CONJURE_REPO/docker/docker-compose.yaml" -f "$CONJURE_REPO/docker/docker-compose.tun.yaml" "$@"
        ;;
esac

cj_load_conf any

export CJ_DETECTOR_CPUS=$CJ_PLAN_WORKER_CORES
export CJ_IMAGE=${CJ_IMAGE:-conjure}
export CJ_HUGEPAGES_MOUNT=${CJ_HUGEPAGES_MOUNT:-/dev/hugepages}
export CONJURE_DATA=${CONJURE_DATA:-/var/lib/conjure}
export PF_RING_ETC=${PF_RING_ETC:-/etc/pf_ring}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-conjure}
export CONJURE_ENV_FILE=${CONJURE_ENV_FILE:-/run/conjure/compose.env}
export CONJURE_HEALTH_INTERVAL=${CONJURE_HEALTH_INTERVAL:-30s}
[[ $CONJURE_HEALTH_INTERVAL =~ ^([0-9]+(ms|s|m|h))+$ ]] || cj_die 2 "CONJURE_HEALTH_INTERVAL=\"$CONJURE_HEALTH_INTERVAL\": expected a duration such as 30s, 1s or 1m30s"
export CONJURE_WATCHDOG_SEC=${CONJURE_WATCHDOG_SEC:-30}
if ! [[ $CONJURE_WATCHDOG_SEC =~ ^[0-9]{1,4}$ ]] || ((10#$CONJURE_WATCHDOG_SEC > 3600)); then
    cj_die 2 "CONJURE_WATCHDOG_SEC=\"$CONJURE_WATCHDOG_SEC\": expected whole seconds from 0 (off) to 3600"
fi
# A negative OOM score protects the station; lowering it needs CAP_SYS_RESOURCE, which
# some sandboxes (nested VMs, rootless docker) do not have: then the containers get 0.
export CONJURE_OOM_SCORE_ADJ=${CONJURE_OOM_SCORE_ADJ:--500}
[[ $CONJURE_OOM_SCORE_ADJ =~ ^-?[0-9]{1,4}$ ]] || cj_die 2 "CONJURE_OOM_SCORE_ADJ=\"$CONJURE_OOM_SCORE_ADJ\": expected a whole number from -1000 to 1000"
if [ "$CONJURE_OOM_SCORE_ADJ" -lt 0 ] && ! sh -c 'echo -1 >/proc/self/oom_score_adj' 2>/dev/null; then
    cj_say "this host cannot lower oom_score_adj (no CAP_SYS_RESOURCE): the containers run with 0 instead of $CONJURE_OOM_SCORE_ADJ"
    CONJURE_OOM_SCORE_ADJ=0
fi

# Bind mounts of paths that do not exist would be created by docker as empty
# directories; create the ones the station owns, and say which are missing.
if [ "${1:-}" = env ]; then
    # What the containers and compose would get, and nothing run.
    for name in $CJ_VARIABLES; do
        printf '%s=%s\n' "$name" "${!name}"
    done
    for name in CJ_DETECTOR_CPUS CJ_IMAGE CJ_HUGEPAGES_MOUNT; do
        printf 'compose: %s=%s\n' "$name" "${!name}"
    done
    exit 0
fi
mkdir -p "$CONJURE_DATA" "$CONJURE_DATA/out" "$(dirname "$CONJURE_ENV_FILE")"
for dir in "$CJ_HUGEPAGES_MOUNT" "$PF_RING_ETC"; do
    if [ ! -d "$dir" ]; then
        mkdir -p "$dir"
        cj_say "created the empty directory $dir for the compose mounts (on-reboot.sh mounts hugepages; PF_RING keeps /etc/pf_ring)"
    fi
done

# The containers' environment: every conjure.conf variable as this shell resolved it
# (the start scripts in the containers keep environment values over their own copy).
umask 077
tmp=$(mktemp "$CONJURE_ENV_FILE.XXXXXX")
for name in $CJ_VARIABLES; do
    value=${!name}
    case $value in
        *$'\n'*) cj_die 2 "$name: a value with a newline cannot be passed to the containers" ;;
    esac
    printf '%s=%s\n' "$name" "$value" >>"$tmp"
done
mv "$tmp" "$CONJURE_ENV_FILE"

find_compose
files=(-f "$CONJURE_REPO/docker/docker-compose.yaml")
# CJ_TUN is yes or no: the binary refused anything else.
if [ "$CJ_TUN" = yes ]; then
    files+=(-f "$CONJURE_REPO/docker/docker-compose.tun.yaml")
fi

case ${1:-up} in
    up)
        shift || true
        exec "${compose[@]}" "${files[@]}" up -d --remove-orphans "$@"
        ;;
    *) exec "${compose[@]}" "${files[@]}" "$@" ;;
esac
