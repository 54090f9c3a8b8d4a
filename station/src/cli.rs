//! The command line of cj-balancer, cj-detector and cj-app: one strict parser,
//! one set of exit codes, and `--print-config`.
//!
//! Each binary declares its modes ([`Cli`]: the run mode and its subcommands,
//! each with its positionals and flags); [`Cli::parse`] reads the arguments
//! against that declaration. Every binary accepts the same common flags:
//! `--config FILE` (or `--config=FILE`), `-h`/`--help`, `-V`/`--version` and
//! `--print-config`.
//!
//! # Guarantees
//!
//! - The same refusal everywhere: an unknown argument, a flag of another mode,
//!   a `--config` without a file, a flag without its value, a value given to a
//!   flag that takes none, a missing or stray positional are each a
//!   [`UsageError`] whose `Display` is one line naming the argument and ending
//!   in `(try --help)`; it maps to [`EXIT_USAGE`].
//! - `--config` is read here once; [`Invocation::config`] is the file.
//! - `--help` and `--version` win over everything after them; what comes before
//!   them is still checked.
//! - [`print_config`] gives the same text in every binary: each variable of
//!   [`crate::config::VARIABLES`] as `NAME='value'` (the value as given, `'`
//!   written `'\''`), a parallel `CJ_ORIGIN_<NAME>='origin'`, then the core plan
//!   and the file names the scripts need (see [`render`]). Every line is a shell
//!   comment or a single assignment of a single-quoted string, so a POSIX shell
//!   can `eval` it whatever the values and origins hold (newlines included).
//!   A configuration that the binaries would refuse, or whose deployment-only
//!   variables ([`deploy`]) are out of range, is refused instead.
//!
//! # Not guaranteed
//!
//! `--print-config` does not check what only one process checks when it starts:
//! `CJ_IFACE`'s source (the balancer), `CJ_METRICS_ADDR` and `CJ_EXPORT` (the
//! app), and the core plan against this machine's CPUs (the detector and the
//! balancer check their cores when they pin).

pub mod deploy;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, StationConfig, VARIABLES};

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: a failure at run time (a worker failed, a socket or signal
/// handler could not be set up, `cj-app query` found no app).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: a usage or configuration error (a bad argument, a bad `CJ_*`
/// value, a core plan that cannot run); nothing was started.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: shared memory (a packet or record queue, a counter page, the
/// queue directory) cannot be created, opened or used.
pub const EXIT_QUEUES: u8 = 3;
/// Exit code: the capture source or an output file cannot be read or written.
pub const EXIT_IO: u8 = 4;

/// The exit codes, as every `--help` text and the README list them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes (the same for cj-balancer, cj-detector and cj-app):
  0  done
  1  runtime failure (a worker failed, a socket or signal handler, no app to ask;
     cj-app: a second SIGINT/SIGTERM, 1 s or more after the first, before its files)
  2  usage or configuration (bad argument, bad CJ_* value, core plan): nothing started
  3  shared memory: a queue, counter page or the queue directory
  4  the capture source or an output file
  70 no progress for CJ_WATCHDOG_SEC (outside systemd): ended for its restart policy
  130 cj-detector: a second SIGINT/SIGTERM, 1 s or more after the first, before its flush
";

/// The common options, as every `--help` text lists them.
pub const COMMON_OPTIONS_HELP: &str = "\
Common options (the same for cj-balancer, cj-detector and cj-app):
  --config FILE    read CJ_* variables from FILE (KEY=VALUE lines, as in
                   sysconfig/conjure.conf); the environment overrides the file,
                   the file overrides the defaults
  --print-config   print every variable as resolved, with where it came from,
                   the core plan and the file names, as lines a shell can eval;
                   refuse a bad configuration (exit 2); takes only --config
  -h, --help       print this help
  -V, --version    print the version
";

/// The `health` subcommand every binary declares: whether this role's
/// processes beat ([`crate::health::check`]); exit 0 when they do, 1 when not.
pub const HEALTH_MODE: Mode = Mode { name: "health", positionals: &[], flags: &[] };

/// `health`, as every `--help` text lists it.
pub const HEALTH_HELP: &str = "\
Health (the same for cj-balancer, cj-detector and cj-app):
  health [--config FILE]   exit 0 when this process's stats pages (the
                   balancer's, every worker's, the app's) beat within 3 s, else
                   print why and exit 1: right across PID namespaces and after
                   a crash (the compose health checks run it)
";

/// A command-line error; `Display` is one line ending in `(try --help)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} (try --help)")]
pub struct UsageError(pub String);

/// One flag of a mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flag {
    /// `--out`, `--json`, ...
    pub name: &'static str,
    /// The name of its value in messages (`DIR`), or `None` for a switch.
    pub value: Option<&'static str>,
}

impl Flag {
    /// A flag without a value.
    pub const fn switch(name: &'static str) -> Self {
        Self { name, value: None }
    }

    /// A flag with a value, `--name VALUE` or `--name=VALUE`.
    pub const fn with_value(name: &'static str, value: &'static str) -> Self {
        Self { name, value: Some(value) }
    }
}

/// A mode of a binary: the run mode (name `""`) or a subcommand, which is then
/// the first argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// `""` for the run mode, else the subcommand (`generate`, `status`).
    pub name: &'static str,
    /// Names of the positionals it needs, in order (`SPEC`, `FILE`).
    pub positionals: &'static [&'static str],
    /// Its flags (besides the common ones).
    pub flags: &'static [Flag],
}

/// A binary's command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cli {
    /// `cj-balancer`, ...
    pub program: &'static str,
    /// The modes; the one named `""` is the run mode (there must be one).
    pub modes: &'static [Mode],
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// `--help`
    Help,
    /// `--version`
    Version,
    /// `--print-config [--config FILE]`
    PrintConfig {
        /// The `--config` file.
        config: Option<PathBuf>,
    },
    /// A mode with its arguments.
    Run(Invocation),
}

/// A mode and the arguments given to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    /// The mode's name (`""`: the run mode).
    pub mode: &'static str,
    /// The `--config` file (the last one given).
    pub config: Option<PathBuf>,
    /// The positionals, as many as the mode declares.
    pub positionals: Vec<String>,
    /// The flags in the order given, with their values.
    pub flags: Vec<(&'static str, Option<String>)>,
}

impl Invocation {
    /// Whether the switch or flag `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| *n == name)
    }

    /// The value of flag `name` (the last one given).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(n, _)| *n == name).and_then(|(_, v)| v.as_deref())
    }
}

impl Cli {
    /// Parses the arguments (without the program name).
    ///
    /// # Errors
    /// A [`UsageError`] naming the first argument that does not fit.
    ///
    /// # Panics
    /// When the declaration has no run mode (a bug in the binary).
    pub fn parse(&self, args: &[String]) -> Result<Parsed, UsageError> {
        let run = self.modes.iter().find(|m| m.name.is_empty());
        #[allow(clippy::expect_used)]
        let run = run.expect("a Cli declares a run mode");
        let (mode, rest) = match args.first() {
            Some(first) => match self.modes.iter().find(|m| !m.name.is_empty() && m.name == first.as_str()) {
                Some(sub) => (sub, &args[1..]),
                None => (run, args),
            },
            None => (run, args),
        };
        let of = if mode.name.is_empty() { String::new() } else { format!(" of {} {}", self.program, mode.name) };
        let mut inv = Invocation { mode: mode.name, ..Invocation::default() };
        let mut print_config = false;
        let mut i = 0;
        while i < rest.len() {
            let arg = rest[i].as_str();
            i += 1;
            match arg {
                "-h" | "--help" => return Ok(Parsed::Help),
                "-V" | "--version" => return Ok(Parsed::Version),
                "--print-config" if mode.name.is_empty() => {
                    print_config = true;
                    continue;
                }
                _ => {}
            }
            if !arg.starts_with('-') || arg == "-" {
                if inv.positionals.len() < mode.positionals.len() {
                    inv.positionals.push(arg.to_owned());
                    continue;
                }
                return Err(UsageError(format!("unexpected argument {arg:?}{of}")));
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v)),
                _ => (arg, None),
            };
            // `--config` is every mode's; the others are the mode's own.
            let (flag, value_name) = if name == "--config" {
                ("--config", Some("FILE"))
            } else {
                match mode.flags.iter().find(|f| f.name == name) {
                    Some(f) => (f.name, f.value),
                    None => return Err(UsageError(format!("unknown argument {arg:?}{of}"))),
                }
            };
            let value = match (value_name, inline) {
                (None, None) => None,
                (None, Some(_)) => return Err(UsageError(format!("{name} takes no value, not {arg:?}"))),
                (Some(_), Some(v)) => Some(v.to_owned()),
                (Some(what), None) => match rest.get(i) {
                    // A flag where the value should be is a forgotten value, not a value.
                    Some(v) if !v.starts_with("--") => {
                        i += 1;
                        Some(v.clone())
                    }
                    _ => return Err(UsageError(format!("{name} needs a {what}"))),
                },
            };
            if flag == "--config" {
                match value {
                    Some(file) if !file.is_empty() => inv.config = Some(PathBuf::from(file)),
                    _ => return Err(UsageError("--config needs a FILE".into())),
                }
            } else {
                inv.flags.push((flag, value));
            }
        }
        if print_config {
            if let Some((flag, _)) = inv.flags.first() {
                return Err(UsageError(format!("--print-config takes only --config FILE, not {flag}")));
            }
            if let Some(p) = inv.positionals.first() {
                return Err(UsageError(format!("--print-config takes only --config FILE, not {p:?}")));
            }
            return Ok(Parsed::PrintConfig { config: inv.config });
        }
        if inv.positionals.len() < mode.positionals.len() {
            let missing = mode.positionals[inv.positionals.len()..].join(" ");
            let who =
                if mode.name.is_empty() { self.program.to_owned() } else { format!("{} {}", self.program, mode.name) };
            return Err(UsageError(format!("{who} needs {missing}")));
        }
        Ok(Parsed::Run(inv))
    }
}

/// `health`: whether `role` runs under the configuration of the environment and
/// `config_file` (its stats pages beat, [`crate::health::check`]): `Ok(line)`
/// when healthy, `Err(line)` naming what does not beat.
///
/// # Errors
/// A bad configuration (exit [`EXIT_USAGE`]).
pub fn health(role: crate::health::Role, config_file: Option<&Path>) -> Result<Result<String, String>, ConfigError> {
    let cfg = StationConfig::load(config_file)?;
    Ok(crate::health::check(role, &cfg, crate::naming::heartbeat_ms()))
}

/// Loads the configuration (the process environment and `config_file`), checks
/// the deployment-only variables too, and renders it (see [`render`]).
///
/// # Errors
/// The first invalid value, as the binaries report it (exit [`EXIT_USAGE`]).
pub fn print_config(config_file: Option<&Path>) -> Result<String, ConfigError> {
    let cfg = StationConfig::load(config_file)?;
    deploy::check(&cfg)?;
    Ok(render(&cfg))
}

/// Single-quotes `s` for a POSIX shell: `'...'`, each `'` written `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The text of `--print-config` for a loaded configuration: comment lines, then
/// one `NAME='value'` assignment a line:
///
/// - every variable of [`VARIABLES`], in its order, with its value as given,
///   each followed by `CJ_ORIGIN_<NAME>='default' | 'FILE:LINE' | 'environment'`;
/// - `CJ_VARIABLES`: the names of those variables, separated by spaces;
/// - the core plan ([`crate::coreplan`]): `CJ_PLAN_BALANCER_CORE` (empty when
///   the balancer is not pinned), `CJ_PLAN_WORKER_CORES` (worker i's core is the
///   i-th, comma separated: also the cpuset compose gives the detector),
///   `CJ_PLAN_WORKER_QUEUES`;
/// - `CJ_PLAN_SLOT_SIZE`: the packet slot size in bytes as resolved (`CJ_SLOT_SIZE=auto`
///   gives 256, or 2048 with divert), so scripts need not repeat the rule;
/// - the file names ([`crate::naming`]): `CJ_PATH_CLUSTER_DIR`,
///   `CJ_PATH_BALANCER_STATS`, and for this detector's first worker
///   (CJ_QUEUE_SET, CJ_QUEUE_OFFSET) `CJ_PATH_WORKER_STATS` and
///   `CJ_PATH_RECORD_QUEUE`.
pub fn render(cfg: &StationConfig) -> String {
    let mut out = String::from(
        "# The station's configuration as the binaries resolve it (defaults < --config FILE < environment).\n\
         # Each NAME='value' is followed by CJ_ORIGIN_NAME='where it came from'; safe to eval in sh.\n",
    );
    let mut line = |name: &str, value: &str| {
        let _ = writeln!(out, "{name}={}", shell_quote(value));
    };
    let mut names = Vec::new();
    for (name, value, origin) in cfg.resolved() {
        line(name, value);
        line(&format!("CJ_ORIGIN_{name}"), origin);
        names.push(name);
    }
    line("CJ_VARIABLES", &names.join(" "));
    let plan = crate::coreplan::plan_cores(cfg.corebase, cfg.corecount, cfg.skip_core);
    let csv = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    line("CJ_PLAN_BALANCER_CORE", &cfg.balancer_core.map_or(String::new(), |c| c.to_string()));
    line("CJ_PLAN_WORKER_CORES", &csv(&plan));
    line("CJ_PLAN_WORKER_QUEUES", &csv(&cfg.worker_queues()));
    line("CJ_PLAN_SLOT_SIZE", &cfg.slot_size.to_string());
    let dir = cfg.cluster_dir();
    let path = |p: PathBuf| p.display().to_string();
    line("CJ_PATH_CLUSTER_DIR", &path(dir.clone()));
    line("CJ_PATH_BALANCER_STATS", &path(crate::naming::balancer_stats_path(&dir)));
    line("CJ_PATH_WORKER_STATS", &path(crate::naming::set_worker_stats_path(&dir, cfg.queue_set, cfg.queue_offset)));
    line("CJ_PATH_RECORD_QUEUE", &path(crate::naming::set_record_queue_path(&dir, cfg.queue_set, cfg.queue_offset)));
    out
}

/// The names `render` assigns besides the variables of [`VARIABLES`].
pub const DERIVED_NAMES: &[&str] = &[
    "CJ_VARIABLES",
    "CJ_PLAN_BALANCER_CORE",
    "CJ_PLAN_WORKER_CORES",
    "CJ_PLAN_WORKER_QUEUES",
    "CJ_PLAN_SLOT_SIZE",
    "CJ_PATH_CLUSTER_DIR",
    "CJ_PATH_BALANCER_STATS",
    "CJ_PATH_WORKER_STATS",
    "CJ_PATH_RECORD_QUEUE",
];

/// Whether `name` is a variable of [`VARIABLES`] (for tests and scripts' checks).
pub fn is_variable(name: &str) -> bool {
    VARIABLES.iter().any(|v| v.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Cli = Cli {
        program: "cj-test",
        modes: &[
            Mode {
                name: "",
                positionals: &[],
                flags: &[Flag::with_value("--out", "DIR"), Flag::switch("--inventory")],
            },
            Mode { name: "generate", positionals: &["SPEC", "FILE"], flags: &[Flag::with_value("--truth", "CSV")] },
            Mode { name: "status", positionals: &[], flags: &[] },
        ],
    };

    fn parse(a: &[&str]) -> Result<Parsed, UsageError> {
        TEST.parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run(a: &[&str]) -> Invocation {
        match parse(a) {
            Ok(Parsed::Run(inv)) => inv,
            other => panic!("{a:?}: {other:?}"),
        }
    }

    fn err(a: &[&str]) -> String {
        parse(a).unwrap_err().to_string()
    }

    #[test]
    fn the_common_flags_are_read_in_every_mode() {
        assert_eq!(run(&[]), Invocation::default());
        assert_eq!(run(&["--config", "/c"]).config, Some("/c".into()));
        assert_eq!(run(&["--config=/c"]).config, Some("/c".into()));
        assert_eq!(run(&["status", "--config=/c"]).config, Some("/c".into()));
        assert_eq!(run(&["--config=/a", "--config", "/b"]).config, Some("/b".into()), "the last one wins");
        assert_eq!(parse(&["--help"]), Ok(Parsed::Help));
        assert_eq!(parse(&["status", "-h"]), Ok(Parsed::Help));
        assert_eq!(parse(&["-V"]), Ok(Parsed::Version));
        assert_eq!(parse(&["--print-config"]), Ok(Parsed::PrintConfig { config: None }));
        assert_eq!(parse(&["--config", "/c", "--print-config"]), Ok(Parsed::PrintConfig { config: Some("/c".into()) }));
    }

    #[test]
    fn a_config_without_a_file_is_refused_in_every_form() {
        for a in [&["--config"][..], &["--config="], &["--config", ""], &["--config", "--print-config"]] {
            assert_eq!(err(a), "--config needs a FILE (try --help)", "{a:?}");
        }
        assert_eq!(err(&["status", "--config"]), "--config needs a FILE (try --help)");
    }

    #[test]
    fn unknown_arguments_and_stray_positionals_are_refused_by_name() {
        assert_eq!(err(&["--bogus"]), "unknown argument \"--bogus\" (try --help)");
        assert_eq!(err(&["-x"]), "unknown argument \"-x\" (try --help)");
        assert_eq!(err(&["stray"]), "unexpected argument \"stray\" (try --help)");
        assert_eq!(err(&["status", "--out", "/o"]), "unknown argument \"--out\" of cj-test status (try --help)");
        assert_eq!(err(&["status", "x"]), "unexpected argument \"x\" of cj-test status (try --help)");
        assert_eq!(err(&["--inventory=yes"]), "--inventory takes no value, not \"--inventory=yes\" (try --help)");
        assert_eq!(err(&["--out"]), "--out needs a DIR (try --help)");
        assert_eq!(err(&["--bogus", "--help"]), "unknown argument \"--bogus\" (try --help)", "checked before --help");
    }

    #[test]
    fn a_subcommand_takes_its_positionals_and_its_flags() {
        let inv = run(&["generate", "flows=1", "/x.pcap", "--truth", "/t.csv"]);
        assert_eq!(inv.mode, "generate");
        assert_eq!(inv.positionals, ["flows=1", "/x.pcap"]);
        assert_eq!(inv.value("--truth"), Some("/t.csv"));
        assert_eq!(err(&["generate", "flows=1"]), "cj-test generate needs FILE (try --help)");
        assert_eq!(err(&["generate"]), "cj-test generate needs SPEC FILE (try --help)");
        assert_eq!(err(&["generate", "a", "b", "c"]), "unexpected argument \"c\" of cj-test generate (try --help)");
        assert_eq!(err(&["generate", "a", "b", "--truth"]), "--truth needs a CSV (try --help)");
    }

    #[test]
    fn run_mode_flags_keep_their_values_and_order() {
        let inv = run(&["--out=/a", "--inventory", "--out", "/b"]);
        assert_eq!(inv.value("--out"), Some("/b"));
        assert!(inv.has("--inventory"));
        assert_eq!(run(&["--out", ""]).value("--out"), Some(""), "an empty value is the mode's to judge");
    }

    #[test]
    fn print_config_takes_only_the_config_file() {
        assert_eq!(
            err(&["--print-config", "--out", "/o"]),
            "--print-config takes only --config FILE, not --out (try --help)"
        );
        assert_eq!(
            err(&["status", "--print-config"]),
            "unknown argument \"--print-config\" of cj-test status (try --help)"
        );
    }

    #[test]
    fn exit_codes_are_distinct_and_listed_in_the_help() {
        let codes = [EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_QUEUES, EXIT_IO];
        for (i, c) in codes.iter().enumerate() {
            assert!(!codes[..i].contains(c));
            assert!(EXIT_CODES_HELP.contains(&format!("\n  {c}  ")), "{c}");
        }
    }

    /// Runs `sh -c 'eval "$1"; printf ...'` and returns the values sh got.
    fn sh_eval(text: &str, names: &[&str]) -> Vec<String> {
        let script = names.iter().map(|n| format!("printf '%s\\0' \"${n}\"; ")).collect::<String>();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("eval \"$1\" || exit 9; {script}"))
            .arg("sh")
            .arg(text)
            .output()
            .expect("sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().split_terminator('\0').map(str::to_owned).collect()
    }

    #[test]
    fn the_printed_configuration_is_safe_to_eval_whatever_the_values_hold() {
        let hostile = "a'b\"c $(touch /tmp/cj-pwned) `x` \\ ; \n# d";
        let env = vec![("CJ_IP4_ADDR".to_owned(), hostile.to_owned()), ("CJ_CORECOUNT".to_owned(), "3".to_owned())];
        let cfg = StationConfig::load_from(&env, None).unwrap();
        let text = render(&cfg);
        let got = sh_eval(&text, &["CJ_IP4_ADDR", "CJ_ORIGIN_CJ_IP4_ADDR", "CJ_CORECOUNT", "CJ_ORIGIN_CJ_SHM_DIR"]);
        assert_eq!(got, [hostile, "environment", "3", "default"]);
        assert!(!Path::new("/tmp/cj-pwned").exists());
    }

    #[test]
    fn the_plan_and_paths_are_those_of_coreplan_and_naming() {
        let env: Vec<(String, String)> = [
            ("CJ_COREBASE", "2"),
            ("CJ_CORECOUNT", "4"),
            ("CJ_SKIP_CORE", "3"),
            ("CJ_QUEUE_OFFSET", "5"),
            ("N_QUEUE_SETS", "2"),
            ("CJ_QUEUE_SET", "1"),
            ("CJ_BALANCER_CORE", "1"),
            ("CJ_SHM_DIR", "/tmp/s"),
            ("CJ_CLUSTER_ID", "7"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let text = render(&StationConfig::load_from(&env, None).unwrap());
        let got = sh_eval(&text, DERIVED_NAMES);
        let names = VARIABLES.iter().map(|v| v.name).collect::<Vec<_>>().join(" ");
        // Written out by hand: cores 2, (3 skipped), 4, 5, 6; queues 5..=8 of set 1.
        assert_eq!(
            got,
            [
                names.as_str(),
                "1",
                "2,4,5,6",
                "5,6,7,8",
                "256",
                "/tmp/s/conjure-7",
                "/tmp/s/conjure-7/stats-balancer",
                "/tmp/s/conjure-7/stats-worker-1-5",
                "/tmp/s/conjure-7/rec-1-5",
            ]
        );
        let defaults = sh_eval(&render(&StationConfig::default()), &["CJ_PLAN_BALANCER_CORE", "CJ_PLAN_WORKER_CORES"]);
        assert_eq!(defaults, ["", "0"]);
    }
}
