//! cj-balancer: reads one source (CJ_IFACE) and spreads its frames over the
//! packet queues of every queue set (ZBALANCE_HASH_MODE, N_QUEUE_SETS), as
//! zbalance_ipc does.
//!
//! Guarantees: every frame received is either enqueued or counted as dropped
//! (per queue in the queue headers, in total in the stats page); at the end of
//! a finite source every queue is published and closed, so consumers know the
//! stream ended, and the process exits 0. On SIGINT/SIGTERM it publishes what
//! it has and exits 0 without closing the queues: a restarted balancer goes on
//! where this one stopped, and for an offline source (`pcap:`, `sim:`) after
//! the last frame each queue holds, after a SIGKILL too (`resume`). A second
//! signal changes nothing (one line says so; `station::signals`): the stop
//! takes at most the capture's block timeout and its sockets' close, and an
//! exit before its end would lose, uncounted, what the AF_PACKET rings hold.
//! The command line is station::cli's (the same
//! flags, refusals and exit codes as cj-detector and cj-app): 2 for usage,
//! configuration and core-plan errors, 3 for the queues, 4 for the source or a
//! file `generate` writes, 1 for other runtime failures.
#![deny(unsafe_code)]

mod dispatch;
mod filter;
mod resume;
mod source;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmq::{QueueFile, QueueSpec, WaitStrategy};
use station::cli::{self, Cli, Flag, Invocation, Mode, Parsed, UsageError};
use station::config::{ConfigError, OnFull, SourceSpec, StationConfig};
use station::naming;

use crate::dispatch::Dispatcher;
use crate::source::{Poll, SourceError};
use crate::stats::BalancerStats;

/// Frames taken from the source per batch; the queues are published once per batch.
const BATCH: usize = 256;

const USAGE: &str = "\
cj-balancer: read a packet source and spread it over shared-memory packet queues

usage:
  cj-balancer [--config FILE]               run (CJ_IFACE names the source)
  cj-balancer generate SPEC FILE [--truth CSV] [--nanos]
                                            write a synthetic capture and its ground truth
  cj-balancer --print-config [--config FILE]
  cj-balancer --help | --version

Configuration comes from CJ_* variables in the environment and from --config FILE
(KEY=VALUE lines, as in sysconfig/conjure.conf); the environment wins.
Sources: IF | IF1,IF2 (AF_PACKET)  containers (every container veth, followed live)
         pcap:FILE  sim:SPEC  (SPEC e.g. flows=1000,packets=100000,sizes=64:50/1500:50,v6=20,vlan=10,seed=1,rate=0)
";

/// The command line: the run mode and `generate`.
const CLI: Cli = Cli {
    program: "cj-balancer",
    modes: &[
        Mode { name: "", positionals: &[], flags: &[] },
        cli::HEALTH_MODE,
        Mode {
            name: "generate",
            positionals: &["SPEC", "FILE"],
            flags: &[Flag::with_value("--truth", "CSV"), Flag::switch("--nanos")],
        },
    ],
};

/// Everything that stops the balancer.
#[derive(Debug, thiserror::Error)]
enum BalancerError {
    /// `CJ_FILTER` cannot be compiled.
    #[error("{0}")]
    Filter(#[from] filter::FilterError),
    /// `health`: the balancer does not beat.
    #[error("{0}")]
    Unhealthy(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Cli(#[from] UsageError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Signal(#[from] station::signals::SignalError),
    #[error("{0}")]
    Queue(#[from] shmq::QueueError),
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Resume(#[from] resume::ResumeError),
    #[error("cannot write {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error("{0}")]
    CorePlan(#[from] station::coreplan::CorePlanError),
    #[error("cannot pin the balancer to core {0} (CJ_BALANCER_CORE): sched_setaffinity refused it")]
    Pin(u32),
}

impl BalancerError {
    /// The exit code (station::cli's, shared by the three binaries).
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Cli(_) | Self::Usage(_) | Self::CorePlan(_) | Self::Pin(_) | Self::Filter(_) => {
                cli::EXIT_USAGE
            }
            Self::Resume(resume::ResumeError::Other { .. }) => cli::EXIT_USAGE,
            Self::Resume(resume::ResumeError::Queue(_)) => cli::EXIT_QUEUES,
            Self::Signal(_) | Self::Unhealthy(_) => cli::EXIT_FAILURE,
            Self::Queue(_) => cli::EXIT_QUEUES,
            Self::Source(_) | Self::Write { .. } => cli::EXIT_IO,
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match main_result(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            station::cj_error!("cj-balancer: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn main_result(args: &[String]) -> Result<(), BalancerError> {
    match CLI.parse(args)? {
        Parsed::Help => {
            print!("{USAGE}\n{}\n{}\n{}", cli::COMMON_OPTIONS_HELP, cli::HEALTH_HELP, cli::EXIT_CODES_HELP);
            Ok(())
        }
        Parsed::Version => {
            println!("cj-balancer {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Parsed::PrintConfig { config } => {
            print!("{}", cli::print_config(config.as_deref())?);
            Ok(())
        }
        Parsed::Run(inv) if inv.mode == "generate" => generate(&inv),
        Parsed::Run(inv) if inv.mode == "health" => {
            let line = cli::health(station::health::Role::Balancer, inv.config.as_deref())?
                .map_err(BalancerError::Unhealthy)?;
            println!("cj-balancer: {line}");
            Ok(())
        }
        Parsed::Run(inv) => run(inv.config.as_deref()),
    }
}

/// `generate SPEC FILE [--truth CSV] [--nanos]`.
fn generate(inv: &Invocation) -> Result<(), BalancerError> {
    let truth_path = inv.value("--truth").map(PathBuf::from);
    let nanos = inv.has("--nanos");
    let [spec_text, file] = inv.positionals.as_slice() else {
        return Err(BalancerError::Usage("usage: cj-balancer generate SPEC FILE [--truth CSV] [--nanos]".into()));
    };
    let spec: sim::SimSpec = spec_text
        .parse()
        .map_err(|e: String| BalancerError::Usage(format!("generate: bad SPEC {spec_text:?}: {e}")))?;
    let path = PathBuf::from(file);
    let truth = sim::write_pcap(&spec, &path, nanos)
        .map_err(|cause| BalancerError::Write { path: path.display().to_string(), cause })?;
    if let Some(tp) = truth_path {
        truth.write_csv(&tp).map_err(|cause| BalancerError::Write { path: tp.display().to_string(), cause })?;
    }
    station::cj_info!(
        "cj-balancer: wrote {} frames ({} flows' directions, {} non-IP) to {}",
        truth.total_frames,
        truth.rows.len(),
        truth.non_ip_frames,
        path.display()
    );
    Ok(())
}

/// How often a holding balancer looks at its queues' consumers.
const HOLD_POLL: Duration = Duration::from_millis(10);
/// How often a holding balancer repeats what it waits for.
const HOLD_REMIND: Duration = Duration::from_secs(10);
/// At most how many frames an offline source can push to one queue (None:
/// live, or unknown): a pcap/pcapng file holds at most one frame per 16 bytes
/// (a pcap record header; a pcapng packet block is longer), `sim:` its
/// `packets`.
/// Counts and dispatches one frame the source delivered (not when the
/// balancer's own filter, for an offline source, rejects it).
fn deliver(
    frame: &source::Frame<'_>,
    offline_filter: Option<&filter::Filter>,
    dispatcher: &mut Dispatcher,
    stats: &mut BalancerStats,
) {
    if offline_filter.is_some_and(|f| !f.matches(frame.data, frame.wire_len)) {
        return;
    }
    if dispatcher.dispatch(frame) {
        stats.received += 1;
        stats.received_bytes += u64::from(frame.wire_len);
    }
}

fn offline_frame_bound(spec: &SourceSpec) -> Option<u64> {
    match spec {
        SourceSpec::Pcap(path) => std::fs::metadata(path).ok().map(|m| m.len() / 16 + 1),
        SourceSpec::Sim(sim) => Some(sim.packets),
        _ => None,
    }
}

/// Holds a live capture until every packet queue has had a consumer attach
/// (`consumer_attaches` in its header; a queue left by an earlier detector
/// counts: its frames wait there for the restarted one). Frames that arrive
/// meanwhile are not captured at all, so none is dropped at a queue that no
/// worker reads yet. False when a signal came first.
fn hold_until_consumers_attach(
    sets: &[Vec<shmq::Producer>],
    stop: &AtomicBool,
    notifier: &mut station::notify::Notifier,
) -> bool {
    let started = Instant::now();
    let mut said: Option<Instant> = None;
    loop {
        let waiting: Vec<&shmq::Producer> =
            sets.iter().flatten().filter(|p| p.stats().consumer_attaches == 0).collect();
        let Some(first) = waiting.first() else {
            if said.is_some() {
                station::cj_info!(
                    "cj-balancer: every packet queue has its consumer after {:.1}s; capture starts",
                    started.elapsed().as_secs_f64()
                );
            }
            return true;
        };
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        if said.is_none_or(|t| t.elapsed() >= HOLD_REMIND) {
            let line = format!(
                "holding capture until cj-detector attaches to {} packet queue(s) (first: {})",
                waiting.len(),
                first.path().display()
            );
            station::cj_info!("cj-balancer: {line}");
            notifier.status(&line);
            said = Some(Instant::now());
        }
        notifier.alive();
        std::thread::sleep(HOLD_POLL);
    }
}

fn run(config_file: Option<&std::path::Path>) -> Result<(), BalancerError> {
    let config = StationConfig::load(config_file)?;
    shmq::files::set_group(config.group); // CJ_GROUP: group of the files this process creates
    let spec = config.source()?;
    if let Some(core) = config.balancer_core {
        use station::coreplan::{allowed_cpus, check_core, online_cpus};
        check_core(core, "CJ_BALANCER_CORE", &allowed_cpus(), &online_cpus())?;
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core as usize }) {
            return Err(BalancerError::Pin(core));
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    // No forced exit: the stop is short and bounded (no wait on a full queue),
    // and exiting before it ends would lose, uncounted, the frames the
    // AF_PACKET rings hold (their count goes with the sockets).
    station::signals::install(
        "cj-balancer",
        &stop,
        station::signals::Repeat::Ignore {
            why: "a forced exit would lose, uncounted, the frames its capture rings hold; SIGKILL forces it",
        },
    )?;

    // A live source is checked now, but captures only once the detector is attached (below).
    source::preflight(&spec, &config)?;
    let filter = filter::Filter::compile(&config.filter)?;
    let dir = config.cluster_dir();
    let queue_spec = QueueSpec { slot_size: config.slot_size, capacity: config.queue_slots };
    let bound = offline_frame_bound(&spec);
    let mut sets = Vec::new();
    // This balancer's claims on every packet queue's producer end, held while it runs:
    // a second balancer on the same cluster is refused (it would corrupt the queues).
    let mut _claims = Vec::new();
    for set in 0..config.queue_sets {
        let mut queues = Vec::new();
        for q in config.worker_queues() {
            let path = naming::packet_queue_path(&dir, set, q);
            let file = QueueFile::open_or_create(&path, queue_spec)?;
            _claims.push(file.lock_end(shmq::End::Producer)?);
            // The queue is made resident now, so that no page fault lands on the packet path:
            // live, all of it; offline, the slots the input can fill at most (a short capture
            // costs the pages it fills, not 16 MiB per queue; a long one the whole ring).
            queues.push(match bound {
                Some(frames) => file.into_producer_for(frames),
                None => file.into_producer(),
            });
        }
        sets.push(queues);
    }
    let mut notifier = station::notify::Notifier::from_env("cj-balancer").with_own_watchdog(config.watchdog);
    if spec.is_live() && !hold_until_consumers_attach(&sets, &stop, &mut notifier) {
        station::cj_warn!("cj-balancer: stopped by signal before any consumer attached; nothing was captured");
        return Ok(());
    }
    let mut source = source::open(&spec, &config, filter.as_ref())?;
    // The kernel (AF_PACKET) or PF_RING filters live sources; files and sim: frames are filtered here.
    let offline_filter = filter.as_ref().filter(|_| !spec.is_live());
    let wait_when_full = match config.on_full {
        OnFull::Wait => true,
        OnFull::Drop => false,
        OnFull::Auto => source.is_finite_offline(),
    };
    let wait = config.wait.strategy();
    let hash_mode_number = config.hash_mode.number();
    let (mut stats, continued) = BalancerStats::open(&naming::balancer_stats_path(&dir))?;
    // Before the stream is marked begun: a balancer that dies in between leaves a fresh start.
    let resumed = resume::prepare(
        &dir,
        &spec,
        &config,
        &sets,
        &config.worker_queues(),
        matches!(continued, stats::Continued::From { .. }),
    )?;
    stats.begin(config.queue_sets, config.corecount, hash_mode_number);
    match (&resumed, continued) {
        (resume::Resume::From { held, queue_dropped }, _) => {
            let holds: Vec<String> = held
                .iter()
                .enumerate()
                .flat_map(|(s, row)| {
                    config.worker_queues().into_iter().zip(row).map(move |(q, n)| format!("pkt-{s}-{q}: {n}"))
                })
                .collect();
            station::cj_info!(
                "cj-balancer: resuming the unfinished stream of {}: its queues hold {}; reading the source again \
                 from its start and sending each frame only to the queues that lack it",
                source.describe(),
                holds.join(", ")
            );
            source.unpaced_first(stats.received);
            stats.resume(*queue_dropped);
        }
        (resume::Resume::Nothing, stats::Continued::From { received }) => station::cj_info!(
            "cj-balancer: an earlier balancer of this cluster stopped without ending the stream: \
             continuing its counters (received {received})"
        ),
        (resume::Resume::Nothing, stats::Continued::Fresh) => {}
    }
    let mut dispatcher = Dispatcher::new(sets, config.worker_queues(), config.hash_mode, wait_when_full, wait, &stop);
    if !spec.is_live() {
        dispatcher.set_resumable();
    }
    if let resume::Resume::From { held, .. } = resumed {
        dispatcher.resume(held);
    }
    let started_line = format!(
        "{} -> {} queue set(s) x {} queue(s) in {} (hash mode {}, {} when full){}",
        source.describe(),
        config.queue_sets,
        config.corecount,
        dir.display(),
        hash_mode_number,
        if wait_when_full { "wait" } else { "drop" },
        filter.as_ref().map_or(String::new(), |f| format!(
            "; capture filter {:?} ({}): frames it rejects are never received",
            f.expr(),
            if spec.is_live() { "in the kernel or PF_RING" } else { "applied by the balancer" }
        ))
    );
    station::cj_info!("cj-balancer: {started_line}");
    notifier.ready(&started_line);

    let started = Instant::now();
    let mut idle = shmq::Waiter::new(WaitStrategy::Backoff { max_sleep: Duration::from_millis(1) });
    let mut last_log = Instant::now();
    let mut outcome = Ok(());
    let mut ended = false;
    while !stop.load(Ordering::Relaxed) {
        // Each pass polled the source and published to the queues: progress for the watchdog.
        notifier.alive();
        let polled = source.poll_batch(BATCH, &mut |frame| deliver(frame, offline_filter, &mut dispatcher, &mut stats));
        dispatcher.publish();
        let src = source.stats();
        stats.store(dispatcher.queue_dropped, src.capture_dropped, src.errors);
        match polled {
            Ok(Poll::Frames(_)) => idle.reset(),
            Ok(Poll::Idle) => idle.wait(),
            Ok(Poll::Ended) => {
                ended = true;
                break;
            }
            Err(e) => {
                outcome = Err(e);
                ended = true;
                break;
            }
        }
        if !config.log_interval.is_zero() && last_log.elapsed() >= config.log_interval {
            last_log = Instant::now();
            let line = stats.line(dispatcher.queue_dropped, src.capture_dropped, src.errors, &dispatcher.fills());
            station::cj_info!("{line}");
            notifier.status(&line);
        }
    }
    notifier.stopping(if ended { "end of stream: closing the queues" } else { "stopping: publishing what is queued" });
    if !ended {
        // What the source had taken in before the signal (an AF_PACKET ring's
        // blocks) goes to the queues too, and its last drops are counted. As
        // in the loop, each batch is published and then counted on the page
        // (with the heartbeat), so that a balancer killed meanwhile leaves
        // its page and its queues agreeing as a kill in the loop does.
        let src = source.stats();
        let mut in_batch = 0;
        source.finish(&mut |frame| {
            deliver(frame, offline_filter, &mut dispatcher, &mut stats);
            in_batch += 1;
            if in_batch == BATCH {
                in_batch = 0;
                dispatcher.publish();
                stats.store(dispatcher.queue_dropped, src.capture_dropped, src.errors);
            }
        });
        dispatcher.publish();
    }
    let src = source.stats();
    stats.store(dispatcher.queue_dropped, src.capture_dropped, src.errors);
    if ended {
        // Finite source done (or unreadable past this point): tell consumers.
        dispatcher.close();
        stats.mark_ended();
    } else {
        dispatcher.publish();
        stats.mark_stopped();
    }
    if ended && dispatcher.held_remaining() > 0 {
        station::cj_warn!(
            "cj-balancer: the source ended with {} frame(s) its queues held from the earlier balancer not met again: \
             the source is not the one the stream began with",
            dispatcher.held_remaining()
        );
    }
    // A framing the station does not read is counted in source_errors too (the
    // file was not read in full), but said by its own error line, not as damage.
    let refused_framing = u64::from(matches!(outcome, Err(source::SourceError::LinkType { .. })));
    if src.errors > refused_framing {
        station::cj_warn!(
            "cj-balancer: {} unreadable capture record(s) skipped and counted (source_errors): \
             the capture is truncated or damaged",
            src.errors - refused_framing
        );
    }
    station::cj_info!("{}", stats.line(dispatcher.queue_dropped, src.capture_dropped, src.errors, &dispatcher.fills()));
    let secs = started.elapsed().as_secs_f64();
    station::cj_info!(
        "cj-balancer: {} (received {} in {:.3}s, {}; dropped at queues {}; copied {} frame bytes in {} copies, \
         at most {} of a frame (CJ_SLOT_SIZE {}))",
        if ended { "end of stream, queues closed" } else { "stopped by signal, queues left open" },
        stats.received_total().saturating_sub(stats.received_at_start),
        secs,
        station::rate::format_rate(
            stats.received_total().saturating_sub(stats.received_at_start) as f64 / secs.max(1e-9)
        ),
        dispatcher.queue_dropped,
        dispatcher.copied.bytes,
        dispatcher.copied.copies,
        config.slot_size.saturating_sub(station::slot::SLOT_OVERHEAD),
        config.slot_size
    );
    outcome.map_err(BalancerError::from)
}
