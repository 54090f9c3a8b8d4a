//! Checks of the variables only the deployment scripts read (`on-reboot.sh`,
//! `compose.sh`), so that `--print-config` refuses what the scripts would.
//!
//! Guarantees: [`check`] accepts exactly what `on-reboot.sh`'s own checks
//! accept (e2e/tests/scripts.rs runs both on the same inputs): `CJ_HUGEPAGES`
//! empty (1024 for a `zc:` source, else none) or a whole number from 0 to
//! 1048576; `CJ_HUGEPAGES_MOUNT` empty (`/dev/hugepages`) or an absolute path
//! below `/dev`, `/mnt` or `/run` without `.` or `..` components;
//! `CJ_SHM_OWNER` empty (`root:root`) or `user:group` of the characters a user
//! or group name may hold. A refusal is a [`ConfigError`] naming the variable,
//! the value, its origin and what is expected.
//!
//! Not guaranteed: that `CJ_SHM_OWNER`'s user and group exist. Only
//! `on-reboot.sh` needs them (it chowns the queue directory on the host), and the
//! containers that also ask `--print-config` do not have the host's users.

use crate::config::{ConfigError, StationConfig};

/// Largest CJ_HUGEPAGES (2 TiB of 2 MiB pages).
pub const MAX_HUGEPAGES: u64 = 1_048_576;

/// Checks the deployment-only variables of `cfg`.
///
/// # Errors
/// The first one out of range.
pub fn check(cfg: &StationConfig) -> Result<(), ConfigError> {
    let value = |var: &str| cfg.values.get(var).map_or("", String::as_str);

    let pages = value("CJ_HUGEPAGES");
    let ok = pages.is_empty()
        || (pages.len() <= 9
            && pages.bytes().all(|b| b.is_ascii_digit())
            && pages.parse::<u64>().is_ok_and(|n| n <= MAX_HUGEPAGES));
    if !ok {
        return Err(refuse(
            cfg,
            "CJ_HUGEPAGES",
            &format!("empty (1024 for a zc: source, else none) or a whole number from 0 to {MAX_HUGEPAGES}"),
        ));
    }
    let mount = value("CJ_HUGEPAGES_MOUNT");
    if !mount.is_empty() && !hugepage_mount_ok(mount) {
        return Err(refuse(
            cfg,
            "CJ_HUGEPAGES_MOUNT",
            "an absolute path under /dev, /mnt or /run, without . or .. (empty: /dev/hugepages)",
        ));
    }
    let owner = value("CJ_SHM_OWNER");
    if !owner.is_empty() && !owner.split_once(':').is_some_and(|(u, g)| is_name(u) && is_name(g)) {
        return Err(refuse(cfg, "CJ_SHM_OWNER", "user:group (empty: root:root)"));
    }
    Ok(())
}

/// The error for `var`'s value in `cfg`.
fn refuse(cfg: &StationConfig, var: &str, expected: &str) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        value: cfg.values.get(var).cloned().unwrap_or_default(),
        origin: cfg.origin(var).to_owned(),
        expected: expected.to_owned(),
    }
}

/// A hugetlbfs mount point as on-reboot.sh accepts it: below `/dev`, `/mnt`
/// or `/run`, never a directory the system lives in (`/etc`, `/usr`, ...):
/// on-reboot.sh mounts hugetlbfs over it as root and compose bind-mounts it
/// read-write into every container.
fn hugepage_mount_ok(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    let parts: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    parts.len() >= 2 && matches!(parts[0], "dev" | "mnt" | "run") && parts.iter().all(|c| *c != "." && *c != "..")
}

/// A user or group name as on-reboot.sh accepts it: `[A-Za-z0-9_][A-Za-z0-9_.-]*`.
fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_one(var: &str, value: &str) -> Result<(), String> {
        let cfg = StationConfig::load_from(&[(var.to_owned(), value.to_owned())], None).unwrap();
        check(&cfg).map_err(|e| e.to_string())
    }

    #[test]
    fn deployment_variables_are_checked_with_the_scripts_ranges() {
        for (var, good) in [
            ("CJ_HUGEPAGES", &["", "0", "1024", "1048576"][..]),
            ("CJ_HUGEPAGES_MOUNT", &["", "/dev/hugepages", "/mnt/huge", "/mnt/huge/", "/run/cj/huge"]),
            ("CJ_SHM_OWNER", &["", "root:root", "conjure:conjure", "_a.b-c:9"]),
        ] {
            for v in good {
                assert_eq!(check_one(var, v), Ok(()), "{var}={v:?}");
            }
        }
        for (var, bad) in [
            ("CJ_HUGEPAGES", &["lots", "-1", "1048577", "1e3", " 5", "0x10"][..]),
            (
                "CJ_HUGEPAGES_MOUNT",
                &["relative/path", "hugepages", "/etc", "/dev", "/mnt/", "/usr/lib/x", "/dev/../etc", "/mnt/./x"],
            ),
            ("CJ_SHM_OWNER", &["root", ":root", "root:", "a b:c", "-x:y", "a:b:c"]),
        ] {
            for v in bad {
                let e = check_one(var, v).unwrap_err();
                assert!(e.starts_with(&format!("{var}={v:?} (environment): expected ")), "{e}");
            }
        }
    }
}
