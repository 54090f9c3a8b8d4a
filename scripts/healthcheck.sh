#!/usr/bin/env bash
# Container health check: healthcheck.sh balancer|detector|app. Healthy when the
# component's file in the queue directory exists (the balancer's stats page, the
# first worker's stats page, the first record queue): the process got past its
# setup and attached to the queues. The file names are the binary's own
# (`cj-<component> --print-config`: CJ_PATH_*), for the variables compose gave
# the container and CONJURE_CONF.
set -euo pipefail
case ${1:-} in
    balancer | detector | app) ;;
    *)
        echo "usage: healthcheck.sh balancer|detector|app" >&2
        exit 2
        ;;
esac
# shellcheck source-path=SCRIPTDIR
# shellcheck source=conjure_env.sh
. "$(dirname "$(readlink -f "$0")")/conjure_env.sh"
cj_load_conf "cj-$1"
case $1 in
    balancer) f=$CJ_PATH_BALANCER_STATS ;;
    detector) f=$CJ_PATH_WORKER_STATS ;;
    app) f=$CJ_PATH_RECORD_QUEUE ;;
esac
if [ ! -e "$f" ]; then
    echo "healthcheck: $f does not exist: the $1 has not attached to its queues" >&2
    exit 1
fi
