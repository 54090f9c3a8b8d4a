//! The core plan (CJ_COREBASE, CJ_CORECOUNT, CJ_SKIP_CORE). (CONTRACT STUB.)
#![allow(clippy::todo, unused_variables)]

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

/// Worker cores: from `base`, `count` cores, stepping over `skip`.
pub fn plan_cores(base: u32, count: u32, skip: Option<u32>) -> Vec<u32> {
    todo!()
}

/// Checks every planned core is online and allowed.
///
/// # Errors
/// The first core that is not.
pub fn check_plan(plan: &[u32], allowed: &[u32], online: &[u32]) -> Result<(), CorePlanError> {
    todo!()
}

/// CPUs this process may run on (sched_getaffinity).
pub fn allowed_cpus() -> Vec<u32> {
    todo!()
}

/// CPUs online (/sys/devices/system/cpu/online).
pub fn online_cpus() -> Vec<u32> {
    todo!()
}

/// Formats a CPU list as ranges: "0-3,6".
pub fn format_cpu_list(cpus: &[u32]) -> String {
    todo!()
}
