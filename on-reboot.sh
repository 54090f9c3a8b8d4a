#!/usr/bin/env bash
# Once-per-boot host setup for the station (conjure-docker.service and
# conjure-setup.service run it before the station starts). Reads conjure.conf
# (CONJURE_CONF, default sysconfig/conjure.conf, which sources
# /var/lib/conjure/conjure.conf; the environment wins) through a station binary's
# --print-config, or, before any is installed, with conjure_env.sh's cj_read_conf (a
# subset of the binary's format: nothing in the file is run or expanded) and checking
# the variables it reads itself (the same ranges; e2e/tests/scripts.rs compares the
# two), and, in this order:
#
#   1. finds the capture interfaces: those CJ_IFACE names, or, when CJ_IFACE and
#      PF_DRIVER are unset, the NICs driven by i40e, ixgbe or ice
#   2. configures the PF_RING ZC driver (pf_ringcfg) when CJ_IFACE is zc:IF
#   3. reserves CJ_HUGEPAGES 2 MiB hugepages and mounts hugetlbfs at CJ_HUGEPAGES_MOUNT
#      (empty: 1024 when CJ_IFACE is zc:..., else none)
#   4. turns off GRO, LRO, GSO and TSO on the capture interfaces
#   5. sets them up and promiscuous (AF_PACKET interfaces only with CJ_AFP_PROMISC=yes)
#   6. creates the queue directory CJ_SHM_DIR/conjure-CJ_CLUSTER_ID, owner CJ_SHM_OWNER
#      (its group CJ_GROUP when that is set), mode 3770 (sticky: group members cannot
#      replace the station's files); a symbolic link or file under that name is refused,
#      also one planted while the script runs (the directory is made under a fresh name
#      and renamed into place); CJ_SHM_DIR must be root's, and sticky if others may write it
#   7. creates tun<CJ_TUN_OFFSET+CJ_QUEUE_OFFSET+i> for i below CJ_CORECOUNT when CJ_TUN=yes
#      (flow divert; off by default)
#   8. makes /run/netns and /var/run/docker/netns shared mounts when they are private
#      (the detector container sees container namespaces through them)
#
# Each step looks first and changes only what is not already so: a second run
# changes nothing. Every change is printed as the command it runs.
#
#   on-reboot.sh [--dry-run] [--strict]
#     --dry-run   print each step and the command it would run; change nothing
#     --strict    exit 1 when a step could not be done (default: report it and go on)
#
# Exit: 0 done (steps that could not be done are listed at the end, each with why),
# 1 with --strict when a step could not be done, 2 a bad variable or option.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=scripts/conjure_env.sh
. "$(dirname "$(readlink -f "$0")")/scripts/conjure_env.sh"

DRY=0
STRICT=0
for arg in "$@"; do
    case $arg in
        --dry-run | -n) DRY=1 ;;
        --strict) STRICT=1 ;;
        -h | --help)
            sed '1d;/^set -euo pipefail/,$d' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) cj_die 2 "unknown option $arg (on-reboot.sh [--dry-run] [--strict])" ;;
    esac
done

cj_load_conf any sh

CHANGED=0
PROBLEMS=()

# A step's outcome, one line each.
ok() { printf 'on-reboot.sh: ok: %s\n' "$*"; }
could_not() {
    PROBLEMS+=("$*")
    printf 'on-reboot.sh: could not: %s\n' "$*" >&2
}
# Runs a command that changes the host (or says what it would run).
change() {
    CHANGED=$((CHANGED + 1))
    if [ "$DRY" = 1 ]; then
        printf 'on-reboot.sh: would run: %s\n' "$*"
        return 0
    fi
    printf 'on-reboot.sh: run: %s\n' "$*"
    local err
    if ! err=$("$@" 2>&1); then
        could_not "$* failed: $(printf '%s' "$err" | tr '\n' ' ')"
        return 1
    fi
}
have() { command -v "$1" >/dev/null 2>&1; }

# ---- variables this script reads (checked again: it may have run without a binary) ----
cj_number CJ_CLUSTER_ID 0 1023
cj_number CJ_CORECOUNT 1 1024
cj_number CJ_QUEUE_OFFSET 0 1023
if [ $((CJ_QUEUE_OFFSET + CJ_CORECOUNT)) -gt 1024 ]; then
    cj_die 2 "CJ_QUEUE_OFFSET=\"$CJ_QUEUE_OFFSET\" ($CONJURE_CONF or environment): expected a whole number from 0 to $((1024 - CJ_CORECOUNT)) with CJ_CORECOUNT=$CJ_CORECOUNT: queue numbers stop at 1023"
fi
CJ_TUN_OFFSET=${CJ_TUN_OFFSET:-0}
cj_number CJ_TUN_OFFSET 0 1000000
case ${CJ_TUN:-no} in
    yes | no) ;;
    *) cj_die 2 "CJ_TUN=\"$CJ_TUN\" ($CONJURE_CONF or environment): expected yes or no" ;;
esac
IFACE=${CJ_IFACE:-}
HUGEPAGES=${CJ_HUGEPAGES:-}
if [ -z "$HUGEPAGES" ]; then
    case $IFACE in
        zc:*) HUGEPAGES=1024 ;;
        *) HUGEPAGES=0 ;;
    esac
else
    cj_number CJ_HUGEPAGES 0 1048576
fi
HUGEMNT=${CJ_HUGEPAGES_MOUNT:-/dev/hugepages}
SHM=${CJ_SHM_DIR:-/dev/shm}
for v in CJ_HUGEPAGES_MOUNT:"$HUGEMNT" CJ_SHM_DIR:"$SHM"; do
    case ${v#*:} in
        /*) ;;
        *) cj_die 2 "${v%%:*}=\"${v#*:}\" ($CONJURE_CONF or environment): expected an absolute path" ;;
    esac
done
# Below /dev, /mnt or /run only (never over /etc or /usr: hugetlbfs is mounted over it as root,
# and compose bind-mounts it read-write into every container); without . or .. (the binary's rule).
case /$HUGEMNT/ in
    */./* | */../*) HUGEMNT=/ ;;
esac
case $HUGEMNT in
    /dev/*[!/]* | /mnt/*[!/]* | /run/*[!/]*) ;;
    *) cj_die 2 "CJ_HUGEPAGES_MOUNT=\"${CJ_HUGEPAGES_MOUNT:-}\" ($CONJURE_CONF or environment): expected an absolute path under /dev, /mnt or /run, without . or .." ;;
esac
# As /proc/mounts writes it (/dev/hugepages/ is /dev/hugepages): else every run mounts again.
HUGEMNT=$(realpath -m -- "$HUGEMNT")
case $HUGEMNT in
    /dev/?* | /mnt/?* | /run/?*) ;;
    *) cj_die 2 "CJ_HUGEPAGES_MOUNT=\"${CJ_HUGEPAGES_MOUNT:-}\" ($CONJURE_CONF or environment): expected a path under /dev, /mnt or /run; it resolves to $HUGEMNT (a symbolic link)" ;;
esac
case ${CJ_AFP_PROMISC:-yes} in
    yes | no) ;;
    *) cj_die 2 "CJ_AFP_PROMISC=\"$CJ_AFP_PROMISC\" ($CONJURE_CONF or environment): expected yes or no" ;;
esac
OWNER=${CJ_SHM_OWNER:-root:root}
if ! [[ $OWNER =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]]; then
    cj_die 2 "CJ_SHM_OWNER=\"$OWNER\" ($CONJURE_CONF or environment): expected user:group"
fi
if ! id -u "${OWNER%%:*}" >/dev/null 2>&1 || ! getent group "${OWNER#*:}" >/dev/null 2>&1; then
    cj_die 2 "CJ_SHM_OWNER=\"$OWNER\" ($CONJURE_CONF or environment): expected an existing user and group (id, getent group)"
fi
want_uid=$(id -u "${OWNER%%:*}")
want_gid=$(getent group "${OWNER#*:}" | cut -d: -f3)
# CJ_GROUP (a name or gid): the binaries give what they create that group, and keep an
# existing directory's group: the queue directory gets it, not CJ_SHM_OWNER's group.
DIR_OWNER=$OWNER
if [ -n "${CJ_GROUP:-}" ]; then
    if ! group_gid=$(getent group "$CJ_GROUP" | cut -d: -f3) || [ -z "$group_gid" ]; then
        cj_die 2 "CJ_GROUP=\"$CJ_GROUP\" ($CONJURE_CONF or environment): expected an existing group (getent group)"
    fi
    if [ "$want_gid" != 0 ] && [ "$want_gid" != "$group_gid" ]; then
        cj_die 2 "CJ_SHM_OWNER=\"$OWNER\" ($CONJURE_CONF or environment): expected the group of CJ_GROUP=\"$CJ_GROUP\" (or root), which the queue directory gets: set CJ_SHM_OWNER=${OWNER%%:*}:$CJ_GROUP"
    fi
    want_gid=$group_gid
    DIR_OWNER=${OWNER%%:*}:$group_gid
fi
if [ "$(id -u)" != 0 ] && [ "$DRY" = 0 ]; then
    cj_die 2 "needs root (or run with --dry-run to see the steps)"
fi
[ "$DRY" = 1 ] && echo "on-reboot.sh: dry run: nothing is changed (CONJURE_CONF=$CONJURE_CONF)"

# ---- 1. capture interfaces ----
IFACES=()
# AF_PACKET (IF, IF1,IF2) honours CJ_AFP_PROMISC; PF_RING and ZC sources are made promiscuous.
PROMISC=yes
# zc:CLUSTER@QUEUE (numbers) is a ZC cluster queue; zc:IF@N and pfring:IF@N are RSS queue N of IF.
ZC_QUEUE=0
[[ $IFACE =~ ^zc:[0-9]+@[0-9]+$ ]] && ZC_QUEUE=1
case $IFACE in
    pcap:* | sim:* | containers* | pfring:pcap:*) ok "CJ_IFACE=$IFACE is not a network interface: no capture interface to set up" ;;
    zc:*)
        if [ "$ZC_QUEUE" = 1 ]; then
            ok "CJ_IFACE=$IFACE is a ZC cluster queue: its owner sets up the NIC"
        else
            dev=${IFACE#zc:}
            IFACES=("${dev%@*}")
        fi
        ;;
    pfring:*)
        dev=${IFACE#pfring:}
        IFACES=("${dev%@*}")
        ;;
    "")
        drivers=${PF_DRIVER:-i40e ixgbe ice}
        for dev in /sys/class/net/*; do
            name=${dev##*/}
            drv=$(basename "$(readlink -f "$dev/device/driver" 2>/dev/null)" 2>/dev/null || true)
            for d in $drivers; do
                if [ "$drv" = "$d" ]; then
                    IFACES+=("$name")
                    PF_DRIVER=${PF_DRIVER:-$d}
                fi
            done
        done
        if [ "${#IFACES[@]}" = 0 ]; then
            could_not "find a capture interface: CJ_IFACE is empty and no NIC is driven by ${drivers// /, } (set CJ_IFACE in /var/lib/conjure/conjure.conf)"
        else
            ok "CJ_IFACE is empty: found ${IFACES[*]} (driver $PF_DRIVER)"
        fi
        ;;
    *)
        IFS=, read -r -a IFACES <<<"$IFACE"
        PROMISC=${CJ_AFP_PROMISC:-yes}
        ;;
esac
LIVE=()
for dev in "${IFACES[@]}"; do
    if [ -e "/sys/class/net/$dev" ]; then
        LIVE+=("$dev")
    else
        could_not "set up $dev: no such interface (ip link shows the names)"
    fi
done

# ---- 2. PF_RING ZC driver ----
case $ZC_QUEUE:$IFACE in
    1:*) ;;
    0:zc:*)
        dev=${IFACE#zc:}
        dev=${dev%@*}
        if grep -qs 'Polling Mode:.*ZC' "/proc/net/pf_ring/dev/$dev/info"; then
            ok "$dev runs the PF_RING ZC driver"
        elif ! have pf_ringcfg; then
            could_not "configure the ZC driver for $dev: pf_ringcfg is not installed (PFRING_ZC=1 scripts/install_pfring.sh)"
        else
            drv=${PF_DRIVER:-$(basename "$(readlink -f "/sys/class/net/$dev/device/driver" 2>/dev/null)" 2>/dev/null || true)}
            drv=${drv%_zc}
            if [ -z "$drv" ]; then
                could_not "configure the ZC driver for $dev: its driver is unknown (set PF_DRIVER)"
            elif [[ $IFACE == *@* ]]; then
                # zc:IF@N reads RSS queue N: one RSS queue would leave no queue N. The
                # driver's own count (one per core) is kept; the queue must be below it.
                change pf_ringcfg --configure-driver "$drv" || true
                ok "$IFACE reads RSS queue ${IFACE##*@} of $dev: the driver's RSS queue count (one per core unless set) must exceed it"
            else
                # zc:IF is RSS queue 0: with one queue it sees all of the traffic.
                change pf_ringcfg --configure-driver "$drv" --rss-queues 1 || true
            fi
        fi
        ;;
    *) ok "CJ_IFACE is not zc:: no ZC driver to configure" ;;
esac

# ---- 3. hugepages ----
NR=/proc/sys/vm/nr_hugepages
if [ "$HUGEPAGES" = 0 ]; then
    ok "no hugepages configured (CJ_HUGEPAGES=${CJ_HUGEPAGES:-}; CJ_IFACE is not zc:)"
else
    have_pages=$(cat "$NR" 2>/dev/null || echo 0)
    if [ "$have_pages" -ge "$HUGEPAGES" ]; then
        ok "$have_pages hugepages reserved (CJ_HUGEPAGES=$HUGEPAGES)"
    elif change sh -c "echo $HUGEPAGES > $NR" && [ "$DRY" = 0 ]; then
        got=$(cat "$NR")
        if [ "$got" -lt "$HUGEPAGES" ]; then
            could_not "reserve $HUGEPAGES hugepages: the kernel gave $got (memory is fragmented: reserve at boot with hugepages=$HUGEPAGES on the kernel command line)"
        fi
    fi
    if awk -v m="$HUGEMNT" '$2 == m && $3 == "hugetlbfs" {f=1} END {exit !f}' /proc/mounts; then
        ok "hugetlbfs mounted at $HUGEMNT"
    else
        [ -d "$HUGEMNT" ] || change mkdir -p "$HUGEMNT" || true
        change mount -t hugetlbfs nodev "$HUGEMNT" || true
    fi
fi

# ---- 4. offloads, 5. link up and promiscuous ----
for dev in "${LIVE[@]}"; do
    if ! have ethtool; then
        could_not "turn off GRO/LRO/GSO/TSO on $dev: ethtool is not installed (apt-get install ethtool)"
    else
        off=()
        while IFS=: read -r feature state; do
            state=${state# }
            case $feature in
                generic-receive-offload) short=gro ;;
                large-receive-offload) short=lro ;;
                generic-segmentation-offload) short=gso ;;
                tcp-segmentation-offload) short=tso ;;
                *) continue ;;
            esac
            case $state in
                "on [fixed]"*) could_not "turn off $feature on $dev: the driver fixes it on" ;;
                on*) off+=("$short" off) ;;
            esac
        done < <(ethtool -k "$dev" 2>/dev/null)
        if [ "${#off[@]}" = 0 ]; then
            ok "$dev: GRO, LRO, GSO and TSO are off"
        else
            change ethtool -K "$dev" "${off[@]}" || true
        fi
    fi
    flags=$(ip -o link show dev "$dev" | sed -n 's/^[^<]*<\([^>]*\)>.*/\1/p')
    if [[ ,$flags, == *,UP,* ]]; then
        ok "$dev is up"
    else
        change ip link set dev "$dev" up || true
    fi
    if [ "$PROMISC" = no ]; then
        ok "$dev: promiscuous mode left as it is (CJ_AFP_PROMISC=no)"
    elif [[ ,$flags, == *,PROMISC,* ]]; then
        ok "$dev is promiscuous"
    else
        change ip link set dev "$dev" promisc on || true
    fi
done

# ---- 6. queue directory ----
# Anyone may create names in CJ_SHM_DIR (/dev/shm): a symbolic link or a file planted
# under the queue directory's name is refused, never followed. A new queue directory is
# made under a fresh name of root's own (mktemp -d: mode 0700, in a sticky CJ_SHM_DIR
# no one else can rename or enter it), given its owner and mode there, and only then
# renamed to its name (mv -T: one rename(2), which never replaces a link, a file or a
# directory with entries, and never follows a link); a link or file planted meanwhile
# makes the rename fail, and the fresh directory is removed. So chown and chmod never
# act on a name someone else could have replaced. An existing directory must be owned by
# root or the CJ_SHM_OWNER user (as the binaries require): then only they can rename it
# in a sticky CJ_SHM_DIR. CJ_SHM_DIR itself must be root's, and sticky if others may
# write it (/dev/shm is root's, 1777).
QDIR=$SHM/conjure-$CJ_CLUSTER_ID
# Owner and mode of a directory, by name, without following a link: "uid:gid mode".
qdir_state() { stat -c '%u:%g %a' -- "$1" 2>/dev/null || true; }
shm_state=$(stat -L -c '%u %a' -- "$SHM" 2>/dev/null || true)
shm_mode=8#${shm_state#* }
if [ ! -d "$SHM" ]; then
    could_not "create $QDIR: CJ_SHM_DIR=$SHM does not exist (a tmpfs or hugetlbfs mount)"
elif [ -L "$SHM" ] && [ "$(stat -c '%u' -- "$SHM" 2>/dev/null)" != 0 ]; then
    # As the binaries judge it: a link on the way is followed only when root made it.
    could_not "create $QDIR: CJ_SHM_DIR=$SHM is a symbolic link another user made (owner uid $(stat -c '%u' -- "$SHM")): name the directory itself"
elif [ "${shm_state%% *}" != 0 ] || { [ $((shm_mode & 8#022)) != 0 ] && [ $((shm_mode & 8#1000)) = 0 ]; }; then
    could_not "create $QDIR: CJ_SHM_DIR=$SHM (owner uid ${shm_state%% *}, mode ${shm_state#* }) is not root's, or others may write it and it is not sticky, so another user could replace the queue directory: use /dev/shm, or chown root $SHM and chmod 1777 $SHM"
elif [ -L "$QDIR" ] || { [ -e "$QDIR" ] && [ "$(stat -c %F -- "$QDIR")" != directory ]; }; then
    could_not "create $QDIR: a $(stat -c %F -- "$QDIR") is there, not a directory (planted by someone else?): remove it (rm $QDIR) and run again"
elif [ -d "$QDIR" ] && ! [[ " 0 $want_uid " == *" $(stat -c %u -- "$QDIR") "* ]]; then
    could_not "set up $QDIR: it is owned by uid $(stat -c %u -- "$QDIR"), neither root nor $OWNER's user (made by someone else?): remove it (rm -r $QDIR) and run again"
elif [ -d "$QDIR" ]; then
    # Root's or CJ_SHM_OWNER's directory in a root-owned CJ_SHM_DIR that is sticky or
    # closed to others: no one else can replace it between this check and the change.
    ok "$QDIR exists"
    if [ "$(stat -c %u:%g -- "$QDIR")" = "$want_uid:$want_gid" ]; then
        ok "$QDIR is owned by $DIR_OWNER"
    else
        change chown -h "$DIR_OWNER" "$QDIR" || true
    fi
    if [ "$(stat -c %a -- "$QDIR")" = 3770 ]; then
        ok "$QDIR has mode 3770"
    else
        change chmod 3770 "$QDIR" || true
    fi
elif [ "$DRY" = 1 ]; then
    CHANGED=$((CHANGED + 3))
    printf 'on-reboot.sh: would run: mkdir %s (as a fresh directory of mktemp -d in %s, then mv -T)\n' "$QDIR" "$SHM"
    printf 'on-reboot.sh: would run: chown -h %s %s\n' "$DIR_OWNER" "$QDIR"
    printf 'on-reboot.sh: would run: chmod 3770 %s\n' "$QDIR"
elif ! fresh=$(mktemp -d -- "$SHM/.conjure-$CJ_CLUSTER_ID.XXXXXXXXXX" 2>&1); then
    could_not "create $QDIR: mktemp -d in $SHM failed: $(printf '%s' "$fresh" | tr '\n' ' ')"
else
    moved=0
    if change chown -h "$DIR_OWNER" "$fresh" && change chmod 3770 "$fresh"; then
        CHANGED=$((CHANGED + 1))
        printf 'on-reboot.sh: run: mv -T -- %s %s\n' "$fresh" "$QDIR"
        if err=$(mv -T -- "$fresh" "$QDIR" 2>&1); then
            moved=1
        else
            # A link or file planted meanwhile: the rename refused it, nothing was done to it.
            could_not "create $QDIR: something was put under that name while on-reboot.sh ran ($(printf '%s' "$err" | tr '\n' ' ')): remove it (rm $QDIR) and run again"
        fi
    fi
    if [ "$moved" = 0 ]; then
        rmdir -- "$fresh" 2>/dev/null || true
    elif [ ! -L "$QDIR" ] && [ -d "$QDIR" ] && [ "$(qdir_state "$QDIR")" = "$want_uid:$want_gid 3770" ]; then
        # Checked again by name, without following a link: what is there is what was made.
        ok "$QDIR made, owned by $DIR_OWNER, mode 3770"
    else
        could_not "create $QDIR: after the rename it is $(qdir_state "$QDIR") (a $(stat -c %F -- "$QDIR" 2>/dev/null)), not $want_uid:$want_gid 3770: remove it (rm -r $QDIR) and run again"
    fi
fi

# ---- 7. tun devices for flow mirroring ----
if [ "${CJ_TUN:-no}" = yes ]; then
    if [ ! -c /dev/net/tun ]; then
        could_not "create the tun devices: no /dev/net/tun (modprobe tun)"
    else
        for ((i = 0; i < CJ_CORECOUNT; i++)); do
            tun=tun$((CJ_TUN_OFFSET + CJ_QUEUE_OFFSET + i))
            if ip -o link show dev "$tun" >/dev/null 2>&1; then
                ok "$tun exists"
                flags=$(ip -o link show dev "$tun" | sed -n 's/^[^<]*<\([^>]*\)>.*/\1/p')
            else
                change ip tuntap add mode tun name "$tun" || continue
                flags=""
            fi
            if [[ ,$flags, == *,UP,* ]]; then
                ok "$tun is up"
            else
                change ip link set dev "$tun" up || true
            fi
        done
    fi
else
    ok "CJ_TUN=no: no tun devices"
fi

# ---- 8. network namespace directories as shared mounts ----
# The detector container mounts them rslave (docker/docker-compose.yaml) to see the
# namespaces of containers started after it; docker refuses an rslave mount of a path
# whose mount is private. systemd hosts have / shared already; others need this.
# CONJURE_NETNS_DIRS (environment) replaces the list; empty: this step is skipped.
for nsdir in ${CONJURE_NETNS_DIRS-/run/netns /var/run/docker/netns}; do
    if [ "$nsdir" = /var/run/docker/netns ] && [ ! -d /var/run/docker ]; then
        continue
    fi
    prop=$(findmnt -n -o PROPAGATION --target "$nsdir" 2>/dev/null || true)
    if [ -d "$nsdir" ] && [[ $prop == shared* || $prop == *slave* ]]; then
        ok "$nsdir is on a $prop mount"
    elif ! have findmnt; then
        could_not "check the propagation of $nsdir: findmnt is not installed (util-linux)"
    else
        [ -d "$nsdir" ] || change mkdir -p "$nsdir" || true
        # --rbind: the namespaces already mounted there (docker's "default") stay visible.
        if change mount --rbind "$nsdir" "$nsdir"; then
            change mount --make-shared "$nsdir" || true
        fi
    fi
done

# ---- summary ----
verb=$([ "$DRY" = 1 ] && echo "would change" || echo "changed")
if [ "${#PROBLEMS[@]}" = 0 ]; then
    echo "on-reboot.sh: done: $verb $CHANGED thing(s), nothing left undone"
    exit 0
fi
echo "on-reboot.sh: done: $verb $CHANGED thing(s); ${#PROBLEMS[@]} could not be done:" >&2
for p in "${PROBLEMS[@]}"; do
    echo "on-reboot.sh:   - $p" >&2
done
[ "$STRICT" = 1 ] && exit 1
exit 0
