#!/usr/bin/env bash
# Starts cj-balancer as the units and the containers do: asks cj-balancer --print-config for the configuration
# (CONJURE_CONF, default sysconfig/conjure.conf, which sources
# /var/lib/conjure/conjure.conf), checks what a zc: source needs from the host,
# then execs the binary so that signals and the systemd notify socket reach it.
# Arguments are passed on to cj-balancer.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=conjure_env.sh
. "$(dirname "$(readlink -f "$0")")/conjure_env.sh"
cj_load_conf cj-balancer

# PF_RING ZC: the kernel module, hugepages, and a ZC driver on the interface. Each
# missing piece is one line with the remedy (README "Troubleshooting").
check_zc() {
    local dev=$1 total mounted info
    if [ ! -d /proc/net/pf_ring ]; then
        cj_die 3 "CJ_IFACE=\"zc:$dev\" needs the PF_RING kernel module and it is not loaded (no /proc/net/pf_ring): modprobe pf_ring (scripts/install_pfring.sh installs it)"
    fi
    total=$(awk '/^HugePages_Total:/ {print $2}' /proc/meminfo)
    if [ "${total:-0}" -eq 0 ]; then
        cj_die 3 "CJ_IFACE=\"zc:$dev\" needs hugepages and none are reserved (HugePages_Total: 0): set CJ_HUGEPAGES in /var/lib/conjure/conjure.conf and run on-reboot.sh"
    fi
    mounted=$(awk '$3 == "hugetlbfs" {print $2; exit}' /proc/mounts)
    if [ -z "$mounted" ]; then
        cj_die 3 "CJ_IFACE=\"zc:$dev\" needs a hugetlbfs mount and there is none: run on-reboot.sh (it mounts CJ_HUGEPAGES_MOUNT=${CJ_HUGEPAGES_MOUNT:-/dev/hugepages})"
    fi
    case $dev in
        *@*) return 0 ;; # a queue of a ZC cluster: its owner checked the NIC
    esac
    info=/proc/net/pf_ring/dev/$dev/info
    if [ ! -r "$info" ]; then
        cj_die 3 "CJ_IFACE=\"zc:$dev\": PF_RING does not know $dev (no $info): check the name with ip link, and that the PF_RING driver is loaded"
    fi
    if ! grep -q 'Polling Mode:.*ZC' "$info"; then
        cj_die 3 "CJ_IFACE=\"zc:$dev\": $dev has no PF_RING ZC driver ($(grep -m1 'Polling Mode' "$info" | tr -s ' \t' ' ')): pf_ringcfg --configure-driver ${PF_DRIVER:-<driver>} --rss-queues 1, or use CJ_IFACE=pfring:$dev"
    fi
}

case ${CJ_IFACE:-} in
    zc:*) check_zc "${CJ_IFACE#zc:}" ;;
esac

cj_exec cj-balancer "$@"
