//! The command line of cj-detector.
//!
//! Guarantees: the arguments are station::cli's common ones (`--config FILE` or
//! `--config=FILE`, `-h`/`--help`, `-V`/`--version`, `--print-config`) and
//! `--inventory`; anything else is a usage error naming the argument, refused
//! as cj-balancer and cj-app refuse it. Everything else is configured by `CJ_*`
//! variables.

use std::path::PathBuf;

use station::cli::{Cli, Flag, Mode, Parsed};

use crate::error::DetectorError;

/// The command line: the run mode with `--inventory`.
const CLI: Cli = Cli {
    program: "cj-detector",
    modes: &[Mode { name: "", positionals: &[], flags: &[Flag::switch("--inventory")] }, station::cli::HEALTH_MODE],
};

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run, with this `--config` file if given.
    Run {
        /// The `--config` file.
        config: Option<PathBuf>,
    },
    /// Print what the container inventory sees now (`--inventory`), and exit.
    Inventory {
        /// The `--config` file.
        config: Option<PathBuf>,
    },
    /// Print the resolved configuration (`--print-config`), and exit.
    PrintConfig {
        /// The `--config` file.
        config: Option<PathBuf>,
    },
    /// `health`: whether every worker beats, and exit.
    Health {
        /// The `--config` file.
        config: Option<PathBuf>,
    },
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// The `--help` text.
pub const USAGE: &str = "\
cj-detector: pinned per-core workers that keep flow tables and emit flow records

Usage: cj-detector [--config FILE]
       cj-detector --inventory [--config FILE]
       cj-detector --print-config [--config FILE]
       cj-detector health [--config FILE]
       cj-detector --help | --version

Worker i runs on core c_i (from CJ_COREBASE, stepping over CJ_SKIP_CORE, for
CJ_CORECOUNT workers), reads packet queue pkt-<CJ_QUEUE_SET>-<q> with
q = CJ_QUEUE_OFFSET + i, and writes flow records to rec-<q>, both under
<CJ_SHM_DIR>/conjure-<CJ_CLUSTER_ID>/. Its counters are in stats-worker-<q>.

Options:
  --inventory     print the containers the inventory sees now (runtime, name,
                  id, host veth, netns, MACs, addresses) and the capture
                  sources on their veths, then exit: checks attribution and
                  its privileges before a run

Variables read: CJ_CLUSTER_ID, CJ_SHM_DIR, CJ_COREBASE, CJ_CORECOUNT,
CJ_SKIP_CORE, CJ_QUEUE_OFFSET, CJ_QUEUE_SET, CJ_QUEUE_SLOTS, CJ_SLOT_SIZE,
CJ_RECORD_QUEUE_SLOTS, CJ_WAIT, CJ_LOG_INTERVAL, CJ_FLOW_IDLE_TIMEOUT,
CJ_FLOW_ACTIVE_TIMEOUT, CJ_FLOW_TCP_CLOSE_TIMEOUT, CJ_FLOW_TABLE_SIZE.

Stops cleanly on SIGINT or SIGTERM (what is queued is processed, every flow
is flushed as a record, the record queues stay open for a restarted detector)
or when every packet queue has ended (then the record queues are closed). The
same signal again within 1 s is the same stop (`timeout` sends it twice); a
second signal 1 s or more after the first exits at once (status 130) without
the flush: the flows in the tables are lost.
";

/// Parses the arguments (without the program name).
///
/// # Errors
/// [`DetectorError::Usage`] for an unknown argument or a `--config` without a file.
pub fn parse(args: &[String]) -> Result<Command, DetectorError> {
    match CLI.parse(args).map_err(|e| DetectorError::Usage(e.0))? {
        Parsed::Help => Ok(Command::Help),
        Parsed::Version => Ok(Command::Version),
        Parsed::PrintConfig { config } => Ok(Command::PrintConfig { config }),
        Parsed::Run(inv) if inv.mode == "health" => Ok(Command::Health { config: inv.config }),
        Parsed::Run(inv) if inv.has("--inventory") => Ok(Command::Inventory { config: inv.config }),
        Parsed::Run(inv) => Ok(Command::Run { config: inv.config }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn inventory_takes_the_config_and_refuses_unknown_arguments() {
        assert_eq!(
            parse(&args(&["--inventory", "--config", "/x/c.conf"])).unwrap(),
            Command::Inventory { config: Some("/x/c.conf".into()) }
        );
        assert!(parse(&args(&["--inventory", "--bogus"])).is_err());
    }

    #[test]
    fn parses_config_help_version_and_refuses_the_rest() {
        assert_eq!(parse(&args(&[])).unwrap(), Command::Run { config: None });
        assert_eq!(
            parse(&args(&["--config", "/x/c.conf"])).unwrap(),
            Command::Run { config: Some("/x/c.conf".into()) }
        );
        assert_eq!(parse(&args(&["--config=/y"])).unwrap(), Command::Run { config: Some("/y".into()) });
        assert_eq!(parse(&args(&["--help"])).unwrap(), Command::Help);
        assert_eq!(parse(&args(&["-V"])).unwrap(), Command::Version);
        assert!(matches!(parse(&args(&["--config"])), Err(DetectorError::Usage(_))));
        assert_eq!(parse(&args(&["--print-config"])).unwrap(), Command::PrintConfig { config: None });
        assert!(parse(&args(&["--print-config", "--inventory"])).is_err());
        assert_eq!(parse(&args(&["stray"])).unwrap_err().to_string(), "unexpected argument \"stray\" (try --help)");
        let e = parse(&args(&["--bogus"])).unwrap_err();
        assert_eq!(e.to_string(), "unknown argument \"--bogus\" (try --help)");
        assert_eq!(e.exit_code(), 2);
    }
}
