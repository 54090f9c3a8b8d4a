#!/usr/bin/env bash
# Container health check: healthcheck.sh balancer|detector|app. Healthy while the
# component's process beats: `cj-<component> health` reads its stats pages (the
# balancer's, every worker's, the app's) and exits 0 when each heartbeat is at
# most 3 s old, 1 otherwise (not started, killed, hung, or ended). A heartbeat,
# not a pid or a file's existence: right across PID namespaces and after a crash.
# The configuration is the binary's own reading of CONJURE_CONF and the
# environment compose gave the container.
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
bin=$(cj_bin "cj-$1")
exec "$bin" health --config "$CONJURE_CONF"
