#!/usr/bin/env bash
# Starts cj-balancer as the units and the containers do: asks cj-balancer --print-config for the configuration
# (CONJURE_CONF, default sysconfig/conjure.conf, which sources
# /var/lib/conjure/conjure.conf), then execs the binary so that signals and the
# systemd notify socket reach it. What a zc: source needs from the host (the
# PF_RING module, hugepages, a ZC driver) is the binary's own preflight.
# Arguments are passed on to cj-balancer.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=conjure_env.sh
. "$(dirname "$(readlink -f "$0")")/conjure_env.sh"
cj_load_conf cj-balancer

cj_exec cj-balancer "$@"
