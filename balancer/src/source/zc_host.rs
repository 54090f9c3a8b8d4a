//! What a `zc:` source needs from the host, checked by the balancer's
//! preflight (before it creates queues or holds for its consumers): the PF_RING
//! kernel module, reserved hugepages, a hugetlbfs mount, and, for a NIC (not a
//! `CLUSTER@QUEUE` of a ZC cluster, whose owner checked its NIC), PF_RING
//! knowing the interface and a ZC driver on it. These were start_balancer.sh's
//! `check_zc`; they live here so that one program says it, in one wording.
//!
//! Guarantees: [`check`] reads only `/proc` under the root it is given (tests use
//! fake trees), never opens a capture, and names the first missing piece with
//! its fix in one line.
//!
//! Not guaranteed: that the open then succeeds (library and module versions,
//! privileges, a licence): the PF_RING source diagnoses a failed open itself.
#![cfg_attr(not(feature = "pfring"), allow(dead_code))] // zc: sources need the pfring feature

use std::path::Path;

/// Checks the host under `root` for `zc:DEV`; `hugepages_mount` and
/// `pf_driver` are CJ_HUGEPAGES_MOUNT and PF_DRIVER as configured (for the fixes).
///
/// # Errors
/// The first missing piece, as one line naming CJ_IFACE and the fix.
pub fn check(root: &Path, dev: &str, hugepages_mount: &str, pf_driver: &str) -> Result<(), String> {
    let iface = format!("CJ_IFACE=\"zc:{dev}\"");
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).ok();
    if !root.join("proc/net/pf_ring").is_dir() {
        return Err(format!(
            "{iface} needs the PF_RING kernel module and it is not loaded (no /proc/net/pf_ring): \
             modprobe pf_ring (scripts/install_pfring.sh installs it)"
        ));
    }
    let meminfo = read("proc/meminfo").unwrap_or_default();
    let total = field(&meminfo, "HugePages_Total").and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    if total == 0 {
        return Err(format!(
            "{iface} needs hugepages and none are reserved (HugePages_Total: 0): set CJ_HUGEPAGES in \
             /var/lib/conjure/conjure.conf and run on-reboot.sh"
        ));
    }
    let mounted =
        read("proc/mounts").is_some_and(|m| m.lines().any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs")));
    if !mounted {
        let mount = if hugepages_mount.is_empty() { "/dev/hugepages" } else { hugepages_mount };
        return Err(format!(
            "{iface} needs a hugetlbfs mount and there is none: run on-reboot.sh (it mounts \
             CJ_HUGEPAGES_MOUNT={mount})"
        ));
    }
    if dev.contains('@') {
        return Ok(()); // a queue of a ZC cluster: its owner checked the NIC
    }
    let info_path = format!("/proc/net/pf_ring/dev/{dev}/info");
    let Some(info) = read(info_path.trim_start_matches('/')) else {
        return Err(format!(
            "{iface}: PF_RING does not know {dev} (no {info_path}): check the name with ip link, and that the \
             PF_RING driver is loaded"
        ));
    };
    let mode = field(&info, "Polling Mode").unwrap_or("unknown");
    if !mode.contains("ZC") {
        let driver = if pf_driver.is_empty() { "<driver>" } else { pf_driver };
        return Err(format!(
            "{iface}: {dev} has no PF_RING ZC driver (Polling Mode: {mode}): pf_ringcfg --configure-driver \
             {driver} --rss-queues 1, or use CJ_IFACE=pfring:{dev}"
        ));
    }
    Ok(())
}

/// The value of `Key: value` (or `Key : value`) in a /proc text.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /proc: each step adds the next piece the check asks for.
    fn tree(steps: usize) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        w("proc/meminfo", "MemTotal: 1 kB\nHugePages_Total:       0\n");
        w("proc/mounts", "proc /proc proc rw 0 0\n");
        if steps >= 1 {
            std::fs::create_dir_all(d.path().join("proc/net/pf_ring")).unwrap();
        }
        if steps >= 2 {
            w("proc/meminfo", "MemTotal: 1 kB\nHugePages_Total:    1024\n");
        }
        if steps >= 3 {
            w("proc/mounts", "proc /proc proc rw 0 0\nnodev /mnt/huge hugetlbfs rw 0 0\n");
        }
        if steps >= 4 {
            w("proc/net/pf_ring/dev/eth1/info", "Name:         eth1\nPolling Mode: NAPI\n");
        }
        if steps >= 5 {
            w("proc/net/pf_ring/dev/eth1/info", "Name:         eth1\nPolling Mode: NAPI/ZC\n");
        }
        d
    }

    #[test]
    fn each_missing_piece_is_named_with_its_fix_in_order() {
        let wants = [
            "CJ_IFACE=\"zc:eth1\" needs the PF_RING kernel module and it is not loaded (no /proc/net/pf_ring): modprobe pf_ring",
            "CJ_IFACE=\"zc:eth1\" needs hugepages and none are reserved (HugePages_Total: 0)",
            "CJ_IFACE=\"zc:eth1\" needs a hugetlbfs mount and there is none: run on-reboot.sh (it mounts CJ_HUGEPAGES_MOUNT=/dev/hugepages)",
            "CJ_IFACE=\"zc:eth1\": PF_RING does not know eth1 (no /proc/net/pf_ring/dev/eth1/info)",
            "CJ_IFACE=\"zc:eth1\": eth1 has no PF_RING ZC driver (Polling Mode: NAPI): pf_ringcfg --configure-driver ixgbe --rss-queues 1, or use CJ_IFACE=pfring:eth1",
        ];
        for (steps, want) in wants.iter().enumerate() {
            let d = tree(steps);
            let e = check(d.path(), "eth1", "", "ixgbe").unwrap_err();
            assert!(e.starts_with(want), "{steps} pieces: {e}");
            assert!(!e.contains('\n'));
        }
        assert_eq!(check(tree(5).path(), "eth1", "", "ixgbe"), Ok(()));
    }

    #[test]
    fn a_zc_cluster_queue_needs_no_nic_checks() {
        assert_eq!(check(tree(3).path(), "99@0", "/mnt/huge", ""), Ok(()));
        assert!(check(tree(2).path(), "99@0", "/mnt/huge", "").unwrap_err().contains("CJ_HUGEPAGES_MOUNT=/mnt/huge"));
    }
}
