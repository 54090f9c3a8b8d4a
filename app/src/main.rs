//! cj-app: drains every record queue of its detector, merges and aggregates
//! the flow records pmacct-style, writes print files and a summary with the
//! accounting identity; `cj-app status` shows the pipeline from the queue headers.
//!
//! Guarantees: the run mode stops when every record queue has ended and is
//! drained, or on SIGINT/SIGTERM after draining what is already queued (a second
//! signal exits at once with status 1); either way it writes the files, prints
//! the summary and exits 0. Errors are one line on stderr prefixed `cj-app: `;
//! exit status 2 for usage and configuration errors, 1 for runtime errors.
#![deny(unsafe_code)]

mod aggregate;
mod containers;
mod identity;
mod intake;
mod settings;
mod sinks;
mod status;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use station::config::{ConfigError, HashMode, StationConfig};

use crate::aggregate::Accounts;
use crate::identity::AppSide;
use crate::intake::{Intake, IntakeError, Poll};
use crate::settings::{Command, RunArgs, Settings, SettingsError};
use crate::sinks::WriteError;
use crate::summary::Report;

/// Every way cj-app fails.
#[derive(Debug, thiserror::Error)]
enum AppError {
    /// Bad command line or app TOML.
    #[error("{0}")]
    Settings(#[from] SettingsError),
    /// Bad CJ_* variable.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A record queue cannot be opened.
    #[error("{0}")]
    Intake(#[from] IntakeError),
    /// An output file cannot be written.
    #[error("{0}")]
    Write(#[from] WriteError),
    /// `status` found nothing.
    #[error("{0}")]
    NoQueues(#[from] status::NoQueues),
    /// A signal handler cannot be installed.
    #[error("cannot install the signal handlers: {0}")]
    Signal(std::io::Error),
}

impl AppError {
    fn exit_code(&self) -> u8 {
        match self {
            AppError::Settings(_) | AppError::Config(_) => 2,
            AppError::Intake(_) | AppError::Write(_) | AppError::NoQueues(_) | AppError::Signal(_) => 1,
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cj-app: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_main(args: &[String]) -> Result<(), AppError> {
    match settings::parse_command(args)? {
        Command::Help => {
            print!("{}", settings::USAGE);
            Ok(())
        }
        Command::Version => {
            println!("cj-app {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Status => {
            let cfg = StationConfig::load(station::config::parse_args_config(args).as_deref())?;
            print!("{}", status::report(&cfg.cluster_dir())?);
            Ok(())
        }
        Command::Run(run) => run_mode(args, &run),
    }
}

/// State of one run.
struct Run {
    cfg: StationConfig,
    settings: Settings,
    intake: Intake,
    accounts: Accounts,
}

impl Run {
    /// `complete`: every record queue ended and was drained; `drained`: the app
    /// has just emptied every record queue (a stop on a signal).
    fn report_and_write(&self, complete: bool, drained: bool) -> Result<(Vec<PathBuf>, String), WriteError> {
        let stats = self.intake.stats();
        let queues = self.intake.queues();
        let app = AppSide {
            queues: &queues,
            totals: self.accounts.per_queue(),
            records_missing: stats.iter().map(|s| s.records_missing).sum(),
            complete,
            drained: complete || drained,
            fan_out: self.accounts.fan_out(),
            set: self.cfg.queue_set,
        };
        let id = identity::check(&self.cfg.cluster_dir(), &app);
        let report = Report {
            settings: &self.settings,
            accounts: &self.accounts,
            intake: &stats,
            identity: &id,
            complete,
            hash_mode: summary::hash_mode_name(self.cfg.hash_mode),
        };
        let files = report.write()?;
        let text = report.text(&files);
        Ok((files, text))
    }

    fn poll(&mut self) -> Poll {
        let accounts = &mut self.accounts;
        self.intake.poll(|qi, r| accounts.add(qi, r))
    }

    fn log_line(&self, started: Instant) -> String {
        let t = self.accounts.totals();
        let stats = self.intake.stats();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        format!(
            "cj-app: records {} ({:.0}/s) flows {} packets {} bytes {} rows {} invalid {} gaps {} ended {}/{}",
            t.records,
            t.records as f64 / secs,
            t.flows,
            t.packets,
            t.bytes,
            self.accounts.main_table().len(),
            stats.iter().map(|s| s.records_invalid).sum::<u64>(),
            stats.iter().map(|s| s.records_gap).sum::<u64>(),
            stats.iter().filter(|s| s.ended).count(),
            stats.len()
        )
    }
}

fn run_mode(args: &[String], run_args: &RunArgs) -> Result<(), AppError> {
    let cfg = StationConfig::load(station::config::parse_args_config(args).as_deref())?;
    let settings = settings::resolve(cfg.station_config.as_deref(), run_args)?;
    summary::check_out_dir(&settings.out_dir)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while draining exits at once (status 1).
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop)).map_err(AppError::Signal)?;
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(AppError::Signal)?;
    }

    let intake = Intake::attach(&cfg)?;
    let fan_out = cfg.hash_mode == HashMode::FanOut;
    let accounts =
        Accounts::new(settings.primitives, &intake.queues(), fan_out).with_container_logs(settings.container_logs);
    let started_line = format!(
        "reading record queues {:?} under {} ({}); aggregate {}; writing {}{}",
        intake.queues(),
        cfg.cluster_dir().display(),
        summary::hash_mode_name(cfg.hash_mode),
        settings.primitives,
        settings.out_dir.display(),
        match settings.refresh {
            Some(d) => format!(" every {}s and at the end", d.as_secs()),
            None => " at the end".to_string(),
        }
    );
    eprintln!("cj-app: {started_line}");
    let mut notifier = station::notify::Notifier::from_env("cj-app");
    notifier.ready(&started_line);
    let mut run = Run { cfg, settings, intake, accounts };

    let started = Instant::now();
    let mut next_refresh = run.settings.refresh.map(|d| started + d);
    let log_interval = (!run.cfg.log_interval.is_zero()).then_some(run.cfg.log_interval);
    let mut next_log = log_interval.map(|d| started + d);
    let (complete, drained) = loop {
        // Each pass drained the record queues (or found them empty): progress for the watchdog.
        notifier.alive();
        if stop.load(Ordering::Relaxed) {
            eprintln!("cj-app: stopping: draining what is queued");
            notifier.stopping("draining what is queued");
            let ended = loop {
                match run.poll() {
                    Poll::Progress(_) => {}
                    Poll::Idle => break false,
                    Poll::AllEnded => break true,
                }
            };
            break (ended, true);
        }
        if run.poll() == Poll::AllEnded {
            break (true, true);
        }
        let now = Instant::now();
        if let (Some(at), Some(every)) = (next_refresh, run.settings.refresh) {
            if now >= at {
                if let Err(e) = run.report_and_write(false, false) {
                    eprintln!("cj-app: warning: refresh: {e}");
                }
                next_refresh = Some(next_deadline(at, every, now));
            }
        }
        if let (Some(at), Some(every)) = (next_log, log_interval) {
            if now >= at {
                let line = run.log_line(started);
                eprintln!("{line}");
                notifier.status(&line);
                next_log = Some(next_deadline(at, every, now));
            }
        }
    };
    notifier.stopping("writing the output files");
    let (_, text) = run.report_and_write(complete, drained)?;
    print!("{text}");
    Ok(())
}

/// The next deadline after `at` that is in the future (skipping missed ones).
fn next_deadline(at: Instant, every: std::time::Duration, now: Instant) -> Instant {
    let next = at + every;
    if next > now {
        next
    } else {
        now + every
    }
}
