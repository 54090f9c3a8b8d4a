//! cj-app: drains every record queue of its detector, merges and aggregates
//! the flow records pmacct-style, writes print files and a summary with the
//! accounting identity; `cj-app status` shows the pipeline from the queue headers.
//!
//! Guarantees: the run mode stops when every record queue has ended and is
//! drained, or on SIGINT/SIGTERM after draining what is already queued (the
//! same signal again within 1 s is the same request, as `timeout` sends it;
//! a second signal 1 s or more after the first exits at once with status 1,
//! see `station::signals`); either way it writes the files, prints
//! the summary and exits 0. With a paced export (`CJ_EXPORT_RATE`) the
//! records are taken only as fast as the export sends them, so draining and
//! the export's last records take their time at that rate (see `ipfix`);
//! with `CJ_EXPORT_BEHIND=drop` they are taken at full speed and the export
//! of those that do not fit is dropped, counted, so a stop drains at full
//! speed and sends at most the export's bound at that rate;
//! queries, metrics, the heartbeat and the watchdog are served meanwhile. A refresh that cannot write (a full disk) says so
//! once, keeps every count in memory and writes them at the next refresh;
//! the final write that cannot write the flow tables still writes
//! `summary.json` marked `complete: false` with the reason and exits 0, and
//! exits 4 only when even `summary.json` cannot be written (no partial or
//! temporary file is left either way). The aggregate is bounded by
//! CJ_APP_MAX_ROWS rows per table (see `aggregate`). Errors are one line on
//! stderr prefixed `cj-app: `; the exit status is station::cli's, shared with
//! cj-balancer and cj-detector: 2 for usage and configuration errors (a bad
//! `--out` included), 3 when a record queue cannot be opened or `status` finds
//! none, 4 when an output file cannot be written, 1 for other runtime errors.
#![deny(unsafe_code)]

mod aggregate;
mod ahead;
mod checkpoint;
mod conn;
mod containers;
mod control;
mod cost;
mod divert_pages;
mod identity;
mod intake;
mod interned;
mod ipfix;
mod metrics;
mod previous;
mod query;
mod settings;
mod sinks;
mod status;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// `--out` is not a directory the app can write.
    #[error("{0}")]
    OutDir(#[from] summary::OutDirError),
    /// `status` found nothing.
    #[error("{0}")]
    NoQueues(#[from] status::NoQueues),
    /// The metrics endpoint cannot be opened.
    #[error("{0}")]
    Metrics(#[from] metrics::MetricsError),
    /// The query socket cannot be created, or `cj-app query` failed.
    #[error("{0}")]
    Query(#[from] query::QueryError),
    #[error("{0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("cannot continue the checkpoint in the output directory: {0}; move it away to start from zero")]
    Restore(#[from] intake::RestoreError),
    /// The last run's files cannot be moved aside for a new run.
    #[error(
        "cannot move the last run's checkpoint and files aside in {} ({cause}): its record queues were re-created (a reboot), so it cannot be continued; move {}/checkpoint away by hand",
        out.display(),
        out.display()
    )]
    SetAside {
        /// The output directory.
        out: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The SIGINT/SIGTERM handling cannot be installed.
    #[error("{0}")]
    Signal(#[from] station::signals::SignalError),
    /// `health`: the app does not beat.
    #[error("{0}")]
    Unhealthy(String),
    /// The run ended with a broken accounting identity (files written, saying so).
    #[error("the accounting identity is broken ({0}); the files are written and say so (summary.json, identity)")]
    IdentityBroken(String),
    /// Its stats page cannot be created.
    #[error("cannot open the app's stats page: {0}")]
    StatsPage(shmq::QueueError),
}

impl AppError {
    /// The exit code (station::cli's, shared by the three binaries).
    fn exit_code(&self) -> u8 {
        use station::cli::{EXIT_FAILURE, EXIT_IO, EXIT_QUEUES, EXIT_USAGE};
        match self {
            AppError::Settings(_)
            | AppError::Config(_)
            | AppError::OutDir(_)
            | AppError::Checkpoint(_)
            | AppError::Restore(_) => EXIT_USAGE,
            AppError::Intake(_) | AppError::NoQueues(_) | AppError::StatsPage(_) => EXIT_QUEUES,
            AppError::Write(_) | AppError::SetAside { .. } => EXIT_IO,
            AppError::Signal(_)
            | AppError::Metrics(_)
            | AppError::Query(_)
            | AppError::Unhealthy(_)
            | AppError::IdentityBroken(_) => EXIT_FAILURE,
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            station::cj_error!("cj-app: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_main(args: &[String]) -> Result<(), AppError> {
    let (command, config_file) = settings::parse_command(args)?;
    let config_file = config_file.as_deref();
    match command {
        Command::Help => {
            print!(
                "{}\n{}\n{}\n{}",
                settings::USAGE,
                station::cli::COMMON_OPTIONS_HELP,
                station::cli::HEALTH_HELP,
                station::cli::EXIT_CODES_HELP
            );
            Ok(())
        }
        Command::PrintConfig => {
            print!("{}", station::cli::print_config(config_file)?);
            Ok(())
        }
        Command::Version => {
            println!("cj-app {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Health => {
            let line = station::cli::health(station::health::Role::App, config_file)?.map_err(AppError::Unhealthy)?;
            println!("cj-app: {line}");
            Ok(())
        }
        Command::Status => {
            let cfg = StationConfig::load(config_file)?;
            print!("{}", status::report(&cfg.cluster_dir())?);
            Ok(())
        }
        Command::Query(q) => {
            let cfg = StationConfig::load(config_file)?;
            print!("{}", query::client(&cfg.cluster_dir(), cfg.queue_set, &q)?);
            Ok(())
        }
        Command::Run(run) => run_mode(config_file, &run),
    }
}

/// State of one run.
struct Run {
    cfg: StationConfig,
    settings: Settings,
    intake: Intake,
    accounts: Accounts,
    /// `CJ_EXPORT`'s IPFIX exporter, fed every record the intake takes (None: off).
    exporter: Option<ipfix::Exporter>,
    /// The output directory, open since the start (summary::check_out_dir).
    out: sinks::OutDir,
    /// `<out dir>/checkpoint`, its saver and what it must fit.
    checkpoint: checkpoint::Place,
    saver: checkpoint::Saver,
    fit: checkpoint::Fit,
    /// A failed checkpoint was warned about (once until one succeeds).
    checkpoint_warned: bool,
    /// When the last checkpoint was saved.
    last_checkpoint: Instant,
    /// Makes the rows' memory ready while idle.
    ahead: ahead::Ahead,
    /// Valid records this process read (not those a checkpoint counted before it started).
    records_read: u64,
    /// The record queues read.
    queue_count: usize,
    /// A checkpoint was asked for and waits for the paced export to send
    /// the records it counts; meanwhile no records are taken.
    checkpoint_due: bool,
}

/// Longest sleep of the main loop while it waits for the paced export: it
/// answers queries and renews its heartbeat at least this often.
const EXPORT_WAIT: Duration = Duration::from_millis(5);

impl Run {
    /// Saves the accounts with the intake's positions, then releases the
    /// record-queue slots read so far (checkpoint.rs). A checkpoint that cannot
    /// be written is warned about and the slots are released anyway: holding
    /// them would stall the detector, and what is lost is only what a crash
    /// before the next good checkpoint would lose.
    ///
    /// Only when the export has sent every record read: see
    /// [`Run::request_checkpoint`].
    fn checkpoint(&mut self) {
        // The records a checkpoint counts are sent first: after a crash the
        // restarted app skips them, so a record still pending here would
        // never reach a collector (the export is at least once across a crash).
        if let Some(e) = self.exporter.as_mut() {
            e.seal();
            debug_assert!(e.all_sent(), "a checkpoint before the paced export sent what it counts");
        }
        let export = self.exporter.as_ref().map(ipfix::Exporter::saved);
        match self.saver.save(&self.fit, self.intake.saved(), export, &mut self.accounts) {
            Ok(()) => self.checkpoint_warned = false,
            Err(e) if !self.checkpoint_warned => {
                self.checkpoint_warned = true;
                station::cj_warn!(
                    "cj-app: warning: {e}; the record-queue slots are released anyway (the detector must not stall): \
                     until a checkpoint succeeds, a restarted cj-app would not continue these totals"
                );
            }
            Err(_) => {}
        }
        self.intake.release_all();
        self.last_checkpoint = Instant::now();
    }
}

impl Run {
    /// Asks for a checkpoint. The export's pending records are sealed, and
    /// the checkpoint is saved once every record it counts has been sent:
    /// now when unpaced; paced, when the export has sent what it holds (at
    /// most its bound at `CJ_EXPORT_RATE`, about 0.1 s), and until then the
    /// main loop takes no records ([`Run::checkpoint_if_sent`], [`Run::take`]).
    fn request_checkpoint(&mut self) {
        if let Some(e) = self.exporter.as_mut() {
            e.seal();
        }
        self.checkpoint_due = true;
        self.checkpoint_if_sent();
    }

    /// Saves the checkpoint asked for once the export has sent every record read.
    fn checkpoint_if_sent(&mut self) {
        if self.checkpoint_due && self.exporter.as_ref().is_none_or(ipfix::Exporter::all_sent) {
            self.checkpoint_due = false;
            self.checkpoint();
        }
    }

    /// Takes the next round of records, at most as many as the paced export
    /// has room for. When it has none, or (not `stopping`) a checkpoint waits
    /// for it, waits instead until its next send (at most [`EXPORT_WAIT`]) and
    /// returns `None`: the record queues hold the records back meanwhile.
    ///
    /// With `CJ_EXPORT_BEHIND=drop` the export has no room limit, and a
    /// round taken while a checkpoint waits goes into the tables with its
    /// export counted dropped behind (the checkpoint counts those records, so
    /// they may not wait in the export after it). The slots read meanwhile
    /// are held until the save: once a record queue has three quarters of
    /// its slots held, the intake waits for the checkpoint after all (a
    /// queue filling within a bound's time at R), counted in `intake_held_ms`.
    fn take(&mut self, stopping: bool) -> Option<Poll> {
        let room = self.exporter.as_ref().and_then(|e| e.intake_room(self.queue_count));
        let drops = self.exporter.as_ref().is_some_and(ipfix::Exporter::drops_behind);
        let checkpoint_waits = self.checkpoint_due && !stopping;
        let held = room == Some(0) || (checkpoint_waits && (!drops || self.intake.must_release()));
        match self.exporter.as_mut() {
            Some(e) if held => {
                let t = Instant::now();
                std::thread::sleep(e.next_send_in(t).unwrap_or(EXPORT_WAIT).min(EXPORT_WAIT));
                e.count_intake_held(t.elapsed());
                None
            }
            _ => Some(self.poll(room.unwrap_or(intake::BATCH), !checkpoint_waits)),
        }
    }

    /// Writes every output file and returns the paths and the printed summary.
    ///
    /// `ended`: every record queue ended and was drained; `drained`: the app
    /// has just emptied every record queue (a stop on a signal); `last`: the
    /// final write, where a table that cannot be written (a full disk) still
    /// leaves a `summary.json` marked incomplete with the reason.
    ///
    /// # Errors
    /// A refresh: the first file that cannot be written (the accounts are kept
    /// and the next refresh writes them again). The final write: only when even
    /// `summary.json` cannot be written.
    fn report_and_write(&self, ended: bool, drained: bool, last: bool) -> Result<(Vec<PathBuf>, String), WriteError> {
        let stats = self.intake.stats();
        let id = self.identity(ended, drained);
        let incomplete_reason = if id.source_errors > 0 {
            Some(format!(
                "the capture source had {} unreadable record(s) (source_errors) and was not read in full",
                id.source_errors
            ))
        } else if !ended && !id.stopped_in_order {
            Some(incomplete_stop(&id).to_string())
        } else {
            None
        };
        let mut report = Report {
            settings: &self.settings,
            out: &self.out,
            accounts: &self.accounts,
            intake: &stats,
            identity: &id,
            complete: incomplete_reason.is_none(),
            incomplete_reason,
            max_rows: self.cfg.app_max_rows,
            hash_mode: summary::hash_mode_name(self.cfg.hash_mode),
            export: self.exporter.as_ref().map(ipfix::Exporter::stats),
            divert: divert_pages::summary(&self.cfg.cluster_dir(), self.cfg.queue_set),
            capture_filter: (!self.cfg.filter.is_empty()).then(|| self.cfg.filter.clone()),
            top_rows: None,
        };
        let files = match report.write_tables() {
            Ok(tables) => report.write_summary(tables)?,
            Err(e) if last => {
                station::cj_error!(
                    "cj-app: error: {e}; the flow tables of this run are not written, summary.json says so"
                );
                let reason = format!("the flow tables could not be written ({e})");
                report.incomplete_reason = Some(match report.incomplete_reason.take() {
                    Some(other) => format!("{reason}; {other}"),
                    None => reason,
                });
                report.complete = false;
                report.write_summary(Vec::new()).map_err(|s| {
                    station::cj_error!("cj-app: error: {s}: summary.json could not be written either");
                    s
                })?
            }
            Err(e) => return Err(e),
        };
        let text = report.text(&files);
        Ok((files, text))
    }

    /// Reads a round of at most `limit` records per queue; `export`: false
    /// when their export is to be counted dropped behind instead (see
    /// [`Run::take`]).
    fn poll(&mut self, limit: usize, export: bool) -> Poll {
        let (accounts, exporter, read) = (&mut self.accounts, &mut self.exporter, &mut self.records_read);
        // A batch at a time: the aggregate table hashes and prefetches ahead;
        // the exporter sees the same records in the same order.
        self.intake.poll_batch(limit, |qi, records| {
            *read += records.len() as u64;
            accounts.add_batch(qi, records);
            match exporter.as_mut() {
                Some(e) if export => records.iter().for_each(|r| e.add(qi, r)),
                Some(e) => records.iter().for_each(|r| e.add_dropped_behind(qi, r)),
                None => {}
            }
        })
    }

    /// For the stop line: how the export's rest goes out when paced.
    fn export_pace_note(&self) -> String {
        let Some(e) = self.exporter.as_ref() else { return String::new() };
        match e.rate() {
            Some(rate) if e.drops_behind() => format!(
                " (the export is paced with CJ_EXPORT_BEHIND=drop: the record queues are drained at full speed, the \
                 export of what does not fit is dropped and counted, and what it holds goes out at {rate} data \
                 records/s; a second signal, 1 s or more after the first, exits at once without the files)"
            ),
            Some(rate) => format!(
                " (the export is paced: what is queued goes out at {rate} data records/s; a second signal, 1 s or \
                 more after the first, exits at once without the files)"
            ),
            None => String::new(),
        }
    }

    fn log_line(&self, started: Instant) -> String {
        let t = self.accounts.totals();
        let stats = self.intake.stats();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        format!(
            "cj-app: records {} ({:.0}/s) flows {} packets {} bytes {} rows {} rows_overflowed {} invalid {} gaps {} \
             ended {}/{}",
            t.records,
            t.records as f64 / secs,
            t.flows,
            t.packets,
            t.bytes,
            self.accounts.main_table().len(),
            self.accounts.rows_overflowed(),
            stats.iter().map(|s| s.records_invalid).sum::<u64>(),
            stats.iter().map(|s| s.records_gap).sum::<u64>(),
            stats.iter().filter(|s| s.ended).count(),
            stats.len()
        ) + &self.exporter.as_ref().map_or(String::new(), |e| {
            let s = e.stats();
            let paced = e.rate().map_or(String::new(), |_| {
                format!(
                    " export_unsent {} export_held_s {:.1} export_dropped_behind {}",
                    e.unsent(),
                    s.counters.intake_held_ms as f64 / 1000.0,
                    s.counters.records_dropped_behind
                )
            });
            format!(" exported {} export_dropped {}{paced}", s.counters.records_exported, s.counters.records_dropped)
        })
    }
}

impl Run {
    /// The identity as a report now would show it (see [`Run::report_and_write`] for the flags).
    fn identity(&self, ended: bool, drained: bool) -> identity::Identity {
        let stats = self.intake.stats();
        let queues = self.intake.queues();
        let app = AppSide {
            queues: &queues,
            totals: self.accounts.per_queue(),
            records_missing: stats.iter().map(|s| s.records_missing).sum(),
            complete: ended,
            drained: ended || drained,
            fan_out: self.accounts.fan_out(),
            set: self.cfg.queue_set,
        };
        identity::check(&self.cfg.cluster_dir(), &app)
    }

    /// Answers a service thread's question (between two polls).
    fn answer(&self, ask: control::Ask) {
        let stats = self.intake.stats();
        let ended = stats.iter().all(|s| s.ended);
        match ask {
            control::Ask::Query(req, reply) => {
                let _ = reply.try_send(query::answer(&self.accounts, &req, ended));
            }
            control::Ask::Metrics(reply) => {
                let view = metrics::AppView {
                    identity: self.identity(ended, false),
                    totals: self.accounts.main_totals(),
                    rows: self.accounts.main_table().len(),
                    rows_overflowed: self.accounts.rows_overflowed(),
                    records_invalid: stats.iter().map(|s| s.records_invalid).sum(),
                    records_missing: stats.iter().map(|s| s.records_missing).sum(),
                    containers: self.accounts.containers().rows().cloned().collect(),
                    export: self.exporter.as_ref().map(ipfix::Exporter::stats),
                };
                let _ = reply.try_send(view);
            }
        }
    }
}

fn run_mode(config_file: Option<&std::path::Path>, run_args: &RunArgs) -> Result<(), AppError> {
    let cfg = StationConfig::load(config_file)?;
    shmq::files::set_group(cfg.group); // CJ_GROUP: group of the files this process creates
    let mut settings = settings::resolve(cfg.station_config.as_deref(), run_args)?;
    if !cfg.decap.is_off() {
        // Decapsulated flows: every table keys on the tunnel too (its columns
        // appear only then, so pmacct comparisons of plain runs stay as they are).
        settings.primitives = settings.primitives.with_tunnel();
    }
    if settings.refresh_from_station {
        settings.refresh = Some(cfg.refresh);
    }
    // Opened once: every file below is made relative to this descriptor.
    let out = summary::check_out_dir(&settings.out_dir)?;
    let metrics_addr = metrics::listen_addr(&cfg)?;
    let mut exporter = ipfix::Exporter::from_config(&cfg, cfg.hash_mode == HashMode::FanOut)?;

    let stop = Arc::new(AtomicBool::new(false));
    // A repeat within 1 s of the first signal is the same request (`timeout`
    // sends it twice); one later exits at once (status 1), without the files.
    station::signals::install(
        "cj-app",
        &stop,
        station::signals::Repeat::Exit {
            status: station::cli::EXIT_FAILURE,
            loses: "without writing its files (flows.csv, flows.json, summary.json): the last checkpoint stands, \
                    and the next start with the same --out continues from it",
        },
    )?;

    let mut intake = Intake::attach(&cfg)?;
    let intake_queue_count = intake.queues().len();
    let fan_out = cfg.hash_mode == HashMode::FanOut;
    let max_rows = usize::try_from(cfg.app_max_rows).unwrap_or(usize::MAX);
    // Slots are released only once they are in a checkpoint (checkpoint.rs).
    intake.hold_releases();
    let fit = checkpoint::fit_of(&cfg, &settings, fan_out);
    let place = || {
        checkpoint::Place::in_dir(&out)
            .map_err(|source| summary::OutDirError::Create { path: settings.out_dir.clone(), source })
    };
    let checkpoint_place = place()?;
    let saver = checkpoint::Saver::new(place()?);
    let fresh_accounts = || {
        Accounts::new(settings.primitives, &intake.queues(), fan_out)
            .with_max_rows(max_rows)
            .with_container_logs(settings.container_logs)
    };
    let mut loaded = checkpoint::load(&checkpoint_place, &fit)?;
    if let Some(l) = &loaded {
        if let Err(e @ intake::RestoreError::Recreated { .. }) = intake.check_restore(&l.intake) {
            // The checkpoint's queues are gone (a reboot): a new run, which must
            // start by itself; the last run's files are kept aside (previous.rs).
            let dir = previous::set_aside(&out, checkpoint::FILE_NAME)
                .map_err(|cause| AppError::SetAside { out: settings.out_dir.clone(), cause })?;
            station::cj_warn!(
                "cj-app: {e}: a new run starts from zero; the last run's checkpoint and files were moved to {}",
                dir.display()
            );
            loaded = None;
        }
    }
    let accounts = match loaded {
        Some(loaded) => {
            let skipped = intake.restore(&loaded.intake, loaded.cut_at)?;
            station::cj_info!(
                "cj-app: continuing from {}: {} record(s) counted before this start, {} of them still queued and \
                 skipped",
                checkpoint_place.path().display(),
                loaded.intake.iter().map(|q| q.stats.records).sum::<u64>(),
                skipped
            );
            // The export's counters go on too: a record the checkpoint counts
            // whose export was dropped behind stays counted (ipfix.rs).
            if let (Some(e), Some(saved)) = (exporter.as_mut(), loaded.export.as_ref()) {
                e.continue_from(saved);
            }
            loaded.accounts
        }
        None => {
            let read_before: Vec<u32> =
                intake.saved().iter().filter(|q| q.next_seq.is_none()).map(|q| q.queue).collect();
            // Queues a finished run left drained are not a loss: the next run starts them again.
            // A checkpoint missing here was moved or removed by root or cj-app's user
            // (only they can change entries of a directory check_out_dir accepts), or
            // --out is another directory (the operator's, or --out renamed away by the
            // owner of the directory above it): said here and by the identity, never silent.
            if !read_before.is_empty() && !intake.awaiting_new_run() {
                station::cj_warn!(
                    "cj-app: warning: record queue(s) {read_before:?} were read by an earlier cj-app, and {} holds no \
                     checkpoint of it (another --out, or moved or removed since): what it read is not in these \
                     totals (the identity will say so); stop, put the checkpoint back and start again to continue them",
                    settings.out_dir.display()
                );
            }
            fresh_accounts()
        }
    };
    // Room for the rows of one whole record queue of new flows (two directions
    // each): a table that grows to them rebuilds its index only while small
    // (the reserved one is made at 1/128 of its rows: aggregate.rs).
    let mut accounts = accounts;
    accounts.reserve_rows(2 * usize::try_from(cfg.record_queue_slots).unwrap_or(0));
    // While idle, the memory of the rows the workers' flows will become is made ready (ahead.rs).
    let worker_pages = intake
        .queues()
        .iter()
        .map(|&q| station::naming::set_worker_stats_path(&cfg.cluster_dir(), cfg.queue_set, q))
        .collect();
    let ahead = ahead::Ahead::new(worker_pages, settings.primitives);
    // The service threads ask the main loop, which alone owns the tables (see `control`).
    let (mut control, asker) = control::Control::new();
    let socket = query::listen(&cfg.cluster_dir(), cfg.queue_set)?;
    query::serve(&socket, asker.clone())?;
    let endpoint = match metrics_addr {
        Some(addr) => Some(metrics::start(addr, cfg.cluster_dir(), asker)?),
        None => None,
    };
    let services = format!(
        "; queries on {}{}",
        socket.path().display(),
        endpoint.map_or(String::new(), |e| format!("; metrics on http://{}/metrics", e.addr))
    );
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
    let exporting = exporter.as_ref().map_or(String::new(), |e| format!("; {}", e.describe()));
    let started_line = format!("{started_line}{services}{exporting}");
    station::cj_info!("cj-app: {started_line}");
    // The app's heartbeat (station::health): `cj-app status` and `health` judge liveness by it.
    let page = shmq::CounterPage::open_or_create(
        &station::naming::app_stats_path(&cfg.cluster_dir(), cfg.queue_set),
        station::naming::APP_COUNTERS,
    )
    .map_err(AppError::StatsPage)?;
    let mut beat = Beat { page, last: None };
    beat.renew(&accounts, 0);
    let mut notifier = station::notify::Notifier::from_env("cj-app").with_own_watchdog(cfg.watchdog);
    notifier.ready(&started_line);
    let mut run = Run {
        cfg,
        settings,
        intake,
        accounts,
        exporter,
        saver,
        checkpoint: checkpoint_place,
        out,
        fit,
        checkpoint_warned: false,
        last_checkpoint: Instant::now(),
        records_read: 0,
        queue_count: intake_queue_count,
        checkpoint_due: false,
        ahead,
    };

    let started = Instant::now();
    let mut next_refresh = run.settings.refresh.map(|d| started + d);
    let log_interval = (!run.cfg.log_interval.is_zero()).then_some(run.cfg.log_interval);
    let mut next_log = log_interval.map(|d| started + d);
    let mut busy = false;
    let mut stopping = false;
    let (complete, drained) = loop {
        // Each pass drained the record queues (or found them empty), or waited
        // for the paced export: progress for the watchdog.
        notifier.alive();
        beat.renew(&run.accounts, 0);
        // Queries take at most a tenth of the loop while records come (control::Budget).
        control.answer_pending(busy, |ask| run.answer(ask));
        if !stopping && stop.load(Ordering::Relaxed) {
            // Drains what is queued, then writes the files. Paced, the queued
            // records go out at CJ_EXPORT_RATE (taken only as they are sent).
            stopping = true;
            station::cj_info!("cj-app: stopping: draining what is queued{}", run.export_pace_note());
            notifier.stopping("draining what is queued");
        }
        if let Some(e) = run.exporter.as_mut() {
            e.tick(Instant::now());
        }
        if !stopping {
            run.checkpoint_if_sent();
        }
        let polled = run.take(stopping);
        busy = matches!(polled, Some(Poll::Progress(_)));
        match polled {
            Some(Poll::AllEnded) => break (true, true),
            Some(Poll::Idle) if stopping => break (false, true),
            _ if stopping => continue,
            _ => {}
        }
        // Half a queue held, or the queues went quiet with records held: save
        // and release (when quiet, at most once a second), so that held slots
        // do not linger as fill while nothing comes. Paced, also once a second
        // while records are held: the intake goes at the export's pace, and a
        // detector stopping behind a full queue must see room well within its
        // patience (detector: SHUTDOWN_WAIT, 5 s).
        let paced = run.exporter.as_ref().is_some_and(ipfix::Exporter::holds_intake);
        if !run.checkpoint_due
            && (run.intake.should_release()
                || ((polled == Some(Poll::Idle) || paced)
                    && run.intake.holding()
                    && run.last_checkpoint.elapsed() >= Duration::from_secs(1)))
        {
            run.request_checkpoint();
        }
        let now = Instant::now();
        if polled == Some(Poll::Idle) {
            run.ahead.step(&mut run.accounts, now);
        }
        if let (Some(at), Some(every)) = (next_refresh, run.settings.refresh) {
            // Waiting for a new run on the queues of a finished one: its files stay as they are.
            if now >= at && run.intake.awaiting_new_run() {
                next_refresh = Some(next_deadline(at, every, now));
            } else if now >= at {
                if let Err(e) = run.report_and_write(false, false, false) {
                    // Once per refresh interval; the accounts stay in memory and the next refresh writes them.
                    station::cj_warn!(
                        "cj-app: warning: refresh: {e}; nothing is lost: the data is kept and written again in {}s",
                        every.as_secs()
                    );
                }
                run.request_checkpoint();
                beat.identity(run.identity(false, false).status);
                next_refresh = Some(next_deadline(at, every, now));
            }
        }
        if let (Some(at), Some(every)) = (next_log, log_interval) {
            if now >= at {
                let line = run.log_line(started);
                station::cj_info!("{line}");
                notifier.status(&line);
                next_log = Some(next_deadline(at, every, now));
            }
        }
    };
    if !complete && run.intake.awaiting_new_run() {
        // Stopped before a new run's detector attached: nothing was read, and
        // the output directory holds the finished run's files. Writing now would
        // replace them with an empty table, and a checkpoint would make the next
        // cj-app end at once with one.
        station::cj_info!(
            "cj-app: stopped before a detector attached to the drained queues of a finished run: nothing read; {} left as it is",
            run.settings.out_dir.display()
        );
        beat.renew(&run.accounts, 2);
        return Ok(());
    }
    send_the_rest(&mut run, &mut beat, &mut notifier, &mut control, &stop);
    notifier.stopping("writing the output files");
    let (_, text) = run.report_and_write(complete, drained, true)?;
    if complete {
        // Every queue read to its end and the files written: the next run starts
        // from zero. The final positions are saved before the slots are given
        // back, and only then is the checkpoint removed: killed in between, a
        // restarted cj-app finds a checkpoint that agrees with the queues and
        // writes the same files again (released first, the checkpoint lagged
        // the queues and every restart refused it).
        run.checkpoint();
        checkpoint::remove(&run.checkpoint)?;
    } else {
        // Stopped mid-stream: a restarted cj-app continues from here.
        run.checkpoint();
    }
    let id = run.identity(complete, drained);
    beat.identity(id.status);
    beat.renew(&run.accounts, if complete { 1 } else { 2 });
    print!("{text}");
    station::cj_info!("{}", cost_line(run.records_read, &cost::Usage::now()));
    if id.status == "broken" {
        // Exact counts are the product: a difference no term explains is a failure, not a note.
        return Err(AppError::IdentityBroken(id.line));
    }
    Ok(())
}

/// Sends what the export still holds before the final files (which count
/// it) and the final checkpoint: unpaced at once; paced at `CJ_EXPORT_RATE`,
/// the main loop's services (queries, metrics, heartbeat, watchdog) served
/// meanwhile. A signal stops nothing here: the first one is already what
/// brought the app here or is taken as one, a second 1 s or more after the
/// first exits at once (status 1, see `run_mode`'s `station::signals`): no
/// files, and the last checkpoint stands.
fn send_the_rest(
    run: &mut Run,
    beat: &mut Beat,
    notifier: &mut station::notify::Notifier,
    control: &mut control::Control,
    stop: &AtomicBool,
) {
    let Some(e) = run.exporter.as_mut() else { return };
    e.seal();
    if e.all_sent() {
        return;
    }
    let (unsent, rate) = (e.unsent(), e.rate().unwrap_or(u32::MAX));
    let secs = unsent as f64 / f64::from(rate);
    let line = format!(
        "sending the export's last {unsent} data records at {rate}/s (about {secs:.1} s) before writing the files; \
         a second SIGINT or SIGTERM, 1 s or more after the first, exits at once without them"
    );
    if secs >= 1.0 {
        station::cj_info!("cj-app: {line}");
    }
    notifier.stopping(&line);
    let mut told = stop.load(Ordering::Relaxed);
    loop {
        notifier.alive();
        beat.renew(&run.accounts, 0);
        // No record is taken any more: the intake is idle for the query budget.
        control.answer_pending(false, |ask| run.answer(ask));
        if !told && stop.load(Ordering::Relaxed) {
            told = true;
            station::cj_info!(
                "cj-app: stopping: still sending the export's last records; a second signal, 1 s or more after the \
                 first, exits at once"
            );
        }
        let Some(e) = run.exporter.as_mut() else { return };
        let now = Instant::now();
        e.tick(now);
        if e.all_sent() {
            return;
        }
        std::thread::sleep(e.next_send_in(now).unwrap_or(EXPORT_WAIT).min(EXPORT_WAIT));
    }
}

/// The line cj-app prints at exit (stderr) with its own cost; `scripts/bench.sh` reads it:
/// `cj-app: cost: 100000 records, 0.084 s CPU (0.84 µs per record), peak RSS 52 MB`.
fn cost_line(records: u64, usage: &cost::Usage) -> String {
    format!("cj-app: {}", usage.per_record(records))
}

/// The app's stats page, renewed at most every 100 ms.
struct Beat {
    page: shmq::CounterPage,
    last: Option<Instant>,
}

impl Beat {
    /// Writes the heartbeat, the records and the end mark (0, or 1 / 2 at the end: always written).
    fn renew(&mut self, accounts: &Accounts, ended: u64) {
        use station::naming::app_counter;
        let now = Instant::now();
        if ended == 0 && self.last.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_millis(100)) {
            return;
        }
        self.last = Some(now);
        self.page.set(app_counter::RECORDS, accounts.totals().records);
        self.page.set(app_counter::ENDED, ended);
        self.page.set(app_counter::HEARTBEAT_MS, station::naming::heartbeat_ms());
    }

    /// Writes the identity's verdict (`holds`, `broken`, anything else: not final).
    fn identity(&self, status: &str) {
        let code = match status {
            "holds" => 1,
            "broken" => 2,
            _ => 0,
        };
        self.page.set(station::naming::app_counter::IDENTITY, code);
    }
}

/// Why a run that stopped before every record queue ended is incomplete
/// (one that was stopped in order is complete: `Identity::stopped_in_order`).
fn incomplete_stop(id: &identity::Identity) -> &'static str {
    if id.status == "unchecked" {
        "the app stopped before every record queue ended, and the identity cannot be checked (identity.reason)"
    } else if !id.balancer_ended && !id.balancer_stopped {
        "the app stopped while the balancer was still running: what it took in since, and the flows still open in \
         the detector, are not in these files (stop the balancer, then the detector, then the app)"
    } else {
        "the app stopped before every detector flushed its flows and it drained every record queue: flows still \
         open in a detector are not in these files (stop the detector before the app)"
    }
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
