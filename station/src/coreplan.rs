//! The core plan (CJ_COREBASE, CJ_CORECOUNT, CJ_SKIP_CORE).
//!
//! Worker i runs on core c_i: start at `CJ_COREBASE`; for each of `CJ_CORECOUNT`
//! workers, if the next core equals `CJ_SKIP_CORE` step over it; take it; step on.
//! COREBASE=0, CORECOUNT=4, SKIP_CORE=1 gives cores 0, 2, 3, 4.
//!
//! Guarantees: [`plan_cores`] is a pure function of its arguments and returns
//! exactly `count` distinct, increasing cores, none equal to `skip`.
//! [`check_plan`] names the first planned core that is offline or outside the
//! process's allowed CPU set. [`allowed_cpus`] and [`online_cpus`] read the
//! running system and return an empty list when they cannot tell.

/// Why a plan cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorePlanError {
    /// A planned core is not online.
    #[error("core {core} (from {var}) is not online; online cores: {online}")]
    Offline {
        /// The core.
        core: u32,
        /// The variable that placed it.
        var: String,
        /// The online list, formatted.
        online: String,
    },
    /// A planned core is outside the allowed CPU set.
    #[error("core {core} (from {var}) is outside this process's allowed CPU set {allowed}")]
    NotAllowed {
        /// The core.
        core: u32,
        /// The variable that placed it.
        var: String,
        /// The allowed list, formatted.
        allowed: String,
    },
}

/// The variables that place worker cores, as named in [`CorePlanError`].
pub const PLAN_VARS: &str = "CJ_COREBASE/CJ_CORECOUNT/CJ_SKIP_CORE";

/// Worker cores: from `base`, `count` cores, stepping over `skip`.
pub fn plan_cores(base: u32, count: u32, skip: Option<u32>) -> Vec<u32> {
    let mut cores = Vec::with_capacity(count as usize);
    let mut next = base;
    for _ in 0..count {
        if Some(next) == skip {
            next += 1;
        }
        cores.push(next);
        next += 1;
    }
    cores
}

/// Checks every planned core is online and allowed.
///
/// An empty `online` or `allowed` list means "unknown" and is not checked
/// (a system without `/sys` still runs).
///
/// # Errors
/// The first core that is not.
pub fn check_plan(plan: &[u32], allowed: &[u32], online: &[u32]) -> Result<(), CorePlanError> {
    plan.iter().try_for_each(|&core| check_core(core, PLAN_VARS, allowed, online))
}

/// Checks one core, placed by variable `var`, is online and allowed (an empty
/// list means unknown and is not checked).
///
/// # Errors
/// The core is offline or outside the allowed set.
pub fn check_core(core: u32, var: &str, allowed: &[u32], online: &[u32]) -> Result<(), CorePlanError> {
    if !online.is_empty() && !online.contains(&core) {
        return Err(CorePlanError::Offline { core, var: var.to_owned(), online: format_cpu_list(online) });
    }
    if !allowed.is_empty() && !allowed.contains(&core) {
        return Err(CorePlanError::NotAllowed { core, var: var.to_owned(), allowed: format_cpu_list(allowed) });
    }
    Ok(())
}

/// CPUs this process may run on (sched_getaffinity), increasing; empty when
/// the call fails.
pub fn allowed_cpus() -> Vec<u32> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).map(|i| i as u32).collect()
}

/// CPUs online (/sys/devices/system/cpu/online), increasing; empty when the
/// file cannot be read or parsed.
pub fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online").ok().and_then(|s| parse_cpu_list(&s)).unwrap_or_default()
}

/// Parses the kernel's CPU list format (`0-3,6`); `None` when malformed
/// (stride forms like `0-7:2` are refused).
/// Surrounding whitespace and an empty list are accepted. The result is
/// increasing and without duplicates.
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let s = s.trim();
    let mut cpus = Vec::new();
    if s.is_empty() {
        return Some(cpus);
    }
    for part in s.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 1 << 20 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Formats a CPU list as ranges: "0-3,6". The input need not be sorted.
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_steps_over_skip() {
        assert_eq!(plan_cores(0, 4, Some(1)), vec![0, 2, 3, 4]);
        assert_eq!(plan_cores(0, 4, None), vec![0, 1, 2, 3]);
        assert_eq!(plan_cores(2, 3, Some(0)), vec![2, 3, 4], "skip before base has no effect");
        assert_eq!(plan_cores(2, 3, Some(2)), vec![3, 4, 5], "skip == base starts at base+1");
        assert_eq!(plan_cores(0, 4, Some(3)), vec![0, 1, 2, 4]);
        assert_eq!(plan_cores(0, 2, Some(9)), vec![0, 1], "skip after the plan has no effect");
        assert_eq!(plan_cores(5, 0, None), Vec::<u32>::new());
    }

    #[test]
    fn check_names_core_and_variable() {
        let online = [0, 1, 2, 3];
        let allowed = [0, 1, 2];
        assert_eq!(check_plan(&[0, 2], &allowed, &online), Ok(()));
        let e = check_plan(&[0, 4], &allowed, &online).unwrap_err();
        assert_eq!(e, CorePlanError::Offline { core: 4, var: PLAN_VARS.into(), online: "0-3".into() });
        assert_eq!(
            e.to_string(),
            "core 4 (from CJ_COREBASE/CJ_CORECOUNT/CJ_SKIP_CORE) is not online; online cores: 0-3"
        );
        let e = check_plan(&[1, 3], &allowed, &online).unwrap_err();
        assert_eq!(
            e.to_string(),
            "core 3 (from CJ_COREBASE/CJ_CORECOUNT/CJ_SKIP_CORE) is outside this process's allowed CPU set 0-2"
        );
        // Unknown lists are not checked.
        assert_eq!(check_plan(&[7], &[], &[]), Ok(()));
    }

    #[test]
    fn cpu_lists_parse_and_format() {
        assert_eq!(parse_cpu_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3,1-2"), Some(vec![1, 2, 3]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("1,,2"), None);
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(format_cpu_list(&[6, 0, 2, 1]), "0-2,6");
        assert_eq!(format_cpu_list(&[4]), "4");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[1, 3, 5, 6]), "1,3,5-6");
        for s in ["0-3,6", "0", "1,3,5-7,9-12"] {
            assert_eq!(format_cpu_list(&parse_cpu_list(s).unwrap()), s);
        }
    }

    #[test]
    fn this_system_has_cpus() {
        let online = online_cpus();
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty());
        if !online.is_empty() {
            // Every allowed CPU is online.
            assert!(allowed.iter().all(|c| online.contains(c)), "{allowed:?} vs {online:?}");
        }
        assert_eq!(check_plan(&allowed[..1], &allowed, &online), Ok(()));
    }
}
