#!/usr/bin/env bash
# Container health check: healthcheck.sh balancer|detector|app. Healthy when the
# component's file in the queue directory exists (the balancer's stats page, the
# first worker's stats page, the first record queue): the process got past its
# setup and attached to the queues. Reads the variables compose gave the container.
set -euo pipefail
dir=${CJ_SHM_DIR:-/dev/shm}/conjure-${CJ_CLUSTER_ID:-98}
q=${CJ_QUEUE_OFFSET:-0}
# Queue set 0 has no set in the names (rec-<q>); other sets do (rec-<set>-<q>),
# as station::naming names them.
set_=${CJ_QUEUE_SET:-0}
if [ "$set_" != 0 ]; then
    q=$set_-$q
fi
case ${1:-} in
    balancer) f=$dir/stats-balancer ;;
    detector) f=$dir/stats-worker-$q ;;
    app) f=$dir/rec-$q ;;
    *)
        echo "usage: healthcheck.sh balancer|detector|app" >&2
        exit 2
        ;;
esac
if [ ! -e "$f" ]; then
    echo "healthcheck: $f does not exist: the $1 has not attached to its queues" >&2
    exit 1
fi
