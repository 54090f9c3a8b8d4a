#!/usr/bin/env bash
# Starts cj-app as the units and the containers do: asks cj-app --print-config for the configuration
# (CONJURE_CONF, default sysconfig/conjure.conf, which sources
# /var/lib/conjure/conjure.conf), checks that the app's TOML (CJ_STATION_CONFIG)
# is there when named, then execs the binary so that signals and the systemd
# notify socket reach it. Arguments are passed on to cj-app (e.g. --out DIR).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=conjure_env.sh
. "$(dirname "$(readlink -f "$0")")/conjure_env.sh"
cj_load_conf cj-app

if [ -n "${CJ_STATION_CONFIG:-}" ] && [ ! -r "$CJ_STATION_CONFIG" ]; then
    cj_die 2 "CJ_STATION_CONFIG=\"$CJ_STATION_CONFIG\": expected a readable TOML file (or empty for the built-in defaults)"
fi

cj_exec cj-app "$@"
