//! The command line of cj-detector.
//!
//! Guarantees: the only arguments are `--config FILE` (or `--config=FILE`),
//! `--help`/`-h` and `--version`/`-V`; anything else is a usage error naming the
//! argument. Everything else is configured by `CJ_*` variables.

use std::path::PathBuf;

use crate::error::DetectorError;

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
       cj-detector --help | --version

Worker i runs on core c_i (from CJ_COREBASE, stepping over CJ_SKIP_CORE, for
CJ_CORECOUNT workers), reads packet queue pkt-<CJ_QUEUE_SET>-<q> with
q = CJ_QUEUE_OFFSET + i, and writes flow records to rec-<q>, both under
<CJ_SHM_DIR>/conjure-<CJ_CLUSTER_ID>/. Its counters are in stats-worker-<q>.

Options:
  --config FILE   read CJ_* variables from FILE (KEY=VALUE lines); the
                  environment overrides the file, the file overrides defaults
  --inventory     print the containers the inventory sees now (runtime, name,
                  id, host veth, netns, MACs, addresses) and the capture
                  sources on their veths, then exit: checks attribution and
                  its privileges before a run
  -h, --help      print this help
  -V, --version   print the version

Variables read: CJ_CLUSTER_ID, CJ_SHM_DIR, CJ_COREBASE, CJ_CORECOUNT,
CJ_SKIP_CORE, CJ_QUEUE_OFFSET, CJ_QUEUE_SET, CJ_QUEUE_SLOTS, CJ_SLOT_SIZE,
CJ_RECORD_QUEUE_SLOTS, CJ_WAIT, CJ_LOG_INTERVAL, CJ_FLOW_IDLE_TIMEOUT,
CJ_FLOW_ACTIVE_TIMEOUT, CJ_FLOW_TCP_CLOSE_TIMEOUT, CJ_FLOW_TABLE_SIZE.

Stops cleanly on SIGINT or SIGTERM (what is queued is processed, every flow
is flushed as a record, the record queues stay open for a restarted detector)
or when every packet queue has ended (then the record queues are closed). A
second signal exits at once.

Exit codes: 0 done; 1 a worker failed; 2 usage, configuration or core plan.
";

/// Parses the arguments (without the program name).
///
/// # Errors
/// [`DetectorError::Usage`] for an unknown argument or a `--config` without a file.
pub fn parse(args: &[String]) -> Result<Command, DetectorError> {
    let mut config = None;
    let mut inventory = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--inventory" => inventory = true,
            "--config" => match it.next() {
                Some(f) if !f.is_empty() => config = Some(PathBuf::from(f)),
                _ => return Err(DetectorError::Usage("--config needs a FILE".into())),
            },
            _ => match a.strip_prefix("--config=") {
                Some(f) if !f.is_empty() => config = Some(PathBuf::from(f)),
                Some(_) => return Err(DetectorError::Usage("--config needs a FILE".into())),
                None => return Err(DetectorError::Usage(format!("unknown argument {a:?}"))),
            },
        }
    }
    Ok(if inventory { Command::Inventory { config } } else { Command::Run { config } })
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
        let e = parse(&args(&["--bogus"])).unwrap_err();
        assert_eq!(e.to_string(), "unknown argument \"--bogus\" (try --help)");
        assert_eq!(e.exit_code(), 2);
    }
}
