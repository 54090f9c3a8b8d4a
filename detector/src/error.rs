//! The one top-level error of cj-detector, and its exit codes.
//!
//! Guarantees: every failure the binary can report is one variant here, its
//! message is one line a person can act on (it names the variable, file or
//! core at fault), and [`DetectorError::exit_code`] maps it to station::cli's
//! exit codes, shared with cj-balancer and cj-app: 2 for usage, configuration
//! and core-plan errors (a core the worker cannot be pinned to included), 3 for
//! a queue or counter page that cannot be opened, 1 for other failures while
//! starting or running workers.

use std::path::PathBuf;

use station::config::ConfigError;
use station::coreplan::CorePlanError;

pub use station::cli::{EXIT_FAILURE, EXIT_QUEUES, EXIT_USAGE};

/// Everything that can stop cj-detector.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// `health`: a worker does not beat.
    #[error("{0}")]
    Unhealthy(String),
    /// A command-line argument is wrong.
    #[error("{0} (try --help)")]
    Usage(String),
    /// A configuration value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The core plan cannot run on this machine or in this container.
    #[error("{}", core_plan_message(.source, .allowed))]
    CorePlan {
        /// Which core and why.
        source: CorePlanError,
        /// This process's allowed CPU set, formatted ("0-3,6").
        allowed: String,
    },
    /// CJ_CORECOUNT is 0: there would be no worker.
    #[error("CJ_CORECOUNT=0: expected at least one worker core")]
    NoWorkers,
    /// Installing the SIGINT/SIGTERM handling failed.
    #[error("{0}")]
    Signal(#[from] station::signals::SignalError),
    /// The OS refused a worker thread.
    #[error("cannot start thread cj-worker-{queue}: {source}")]
    Spawn {
        /// Queue of the worker.
        queue: u32,
        /// Why.
        source: std::io::Error,
    },
    /// A worker could not be pinned to its planned core.
    #[error("cj-worker-{queue}: cannot pin to core {core} (planned from CJ_COREBASE, CJ_CORECOUNT, CJ_SKIP_CORE)")]
    Pin {
        /// Queue of the worker.
        queue: u32,
        /// The planned core.
        core: u32,
    },
    /// A worker's packet queue cannot be opened.
    #[error("cj-worker-{queue}: packet queue {}: {source}", path.display())]
    PacketQueue {
        /// Queue of the worker.
        queue: u32,
        /// The queue file.
        path: PathBuf,
        /// Why.
        source: shmq::QueueError,
    },
    /// A worker's record queue cannot be opened.
    #[error("cj-worker-{queue}: record queue {}: {source}", path.display())]
    RecordQueue {
        /// Queue of the worker.
        queue: u32,
        /// The queue file.
        path: PathBuf,
        /// Why.
        source: shmq::QueueError,
    },
    /// A worker's stats page cannot be opened.
    #[error("cj-worker-{queue}: stats page {}: {source}", path.display())]
    StatsPage {
        /// Queue of the worker.
        queue: u32,
        /// The page file.
        path: PathBuf,
        /// Why.
        source: shmq::QueueError,
    },
    /// Another worker failed to start, so this one stood down.
    /// CJ_DIVERT_RULES cannot be read or does not parse (file and line named).
    #[error("CJ_DIVERT_RULES: {0}")]
    Rules(#[from] crate::divert::RulesError),
    /// A worker's tun device cannot be used (CJ_TUN=yes).
    #[error("cj-worker-{queue}: {source}")]
    Tun { queue: u32, source: crate::tun::TunError },
    #[error("cj-worker-{queue}: stood down because another worker failed to start")]
    Aborted {
        /// Queue of the worker.
        queue: u32,
    },
    /// A worker thread panicked (a bug).
    #[error("cj-worker-{queue} panicked")]
    WorkerPanic {
        /// Queue of the worker.
        queue: u32,
    },
}

impl DetectorError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_)
            | Self::Config(_)
            | Self::CorePlan { .. }
            | Self::NoWorkers
            | Self::Rules(_)
            | Self::Pin { .. } => EXIT_USAGE,
            Self::PacketQueue { .. } | Self::RecordQueue { .. } | Self::StatsPage { .. } => EXIT_QUEUES,
            Self::Signal(_)
            | Self::Spawn { .. }
            | Self::Tun { .. }
            | Self::Aborted { .. }
            | Self::WorkerPanic { .. }
            | Self::Unhealthy(_) => EXIT_FAILURE,
        }
    }
}

/// The plan error, plus the allowed set when the error names only the online set.
fn core_plan_message(e: &CorePlanError, allowed: &str) -> String {
    match e {
        CorePlanError::Offline { .. } => {
            format!("{e}; this process's allowed CPU set is {allowed}")
        }
        CorePlanError::NotAllowed { .. } => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_plan_and_pin_errors_exit_2_runtime_errors_exit_1() {
        let plan = CorePlanError::NotAllowed { core: 7, var: "CJ_COREBASE".into(), allowed: "0-1".into() };
        let e = DetectorError::CorePlan { source: plan, allowed: "0-1".into() };
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "core 7 (from CJ_COREBASE) is outside this process's allowed CPU set 0-1");
        let plan = CorePlanError::Offline { core: 7, var: "CJ_COREBASE".into(), online: "0-1".into() };
        let e = DetectorError::CorePlan { source: plan, allowed: "0".into() };
        assert_eq!(
            e.to_string(),
            "core 7 (from CJ_COREBASE) is not online; online cores: 0-1; this process's allowed CPU set is 0"
        );
        assert_eq!(DetectorError::Pin { queue: 1, core: 3 }.exit_code(), 2);
        assert_eq!(DetectorError::Aborted { queue: 1 }.exit_code(), 1);
        assert_eq!(DetectorError::Usage("unknown argument --x".into()).exit_code(), 2);
    }
}
