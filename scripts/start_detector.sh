#!/usr/bin/env bash
# Starts cj-detector as the units and the containers do: asks cj-detector --print-config for the configuration
# (CONJURE_CONF, default sysconfig/conjure.conf, which sources
# /var/lib/conjure/conjure.conf), checks the queue directory's parent, then execs
# the binary so that signals and the systemd notify socket reach it. The binary
# checks the core plan against the CPUs this process may use.
# Arguments are passed on to cj-detector.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=conjure_env.sh
. "$(dirname "$(readlink -f "$0")")/conjure_env.sh"
cj_load_conf cj-detector

# CJ_SHM_DIR is an absolute path: the binary refused anything else.
if [ ! -d "$CJ_SHM_DIR" ]; then
    cj_die 3 "CJ_SHM_DIR=\"$CJ_SHM_DIR\": no such directory (on-reboot.sh creates the queue directory; in a container, mount it or use ipc: host)"
fi

cj_exec cj-detector "$@"
