//! cj-detector: plans the worker cores, starts one pinned worker per core,
//! prints per-core stats lines, and stops cleanly on SIGINT/SIGTERM or when
//! every packet queue has ended.
//!
//! Guarantees: a configuration or core-plan problem stops the program before
//! any thread starts, with one line on stderr prefixed `cj-detector: ` and exit
//! code 2; a queue or counter page that cannot be opened exits 3, any other
//! failure of a worker 1 (station::cli's codes); a clean stop exits 0 after every
//! worker flushed its flows (closing its record queue only at the end of the
//! input stream, not on a signal). The same signal again within 1 s is the
//! same stop (`timeout` sends it twice); a second one 1 s or more after the
//! first exits at once with code 130, without the flush (`station::signals`).
#![deny(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use detector::cli::{self, Command};
use detector::error::DetectorError;
use detector::stats::{self, WorkerSnapshot};
use detector::worker::{self, StartGate, WorkerSpec, WorkerSummary};
use station::config::StationConfig;
use station::coreplan;

/// How often the supervisor looks at the workers (it is woken at once when they end).
const SUPERVISE_TICK: Duration = Duration::from_millis(50);
/// Exit status of a detector that a second SIGINT/SIGTERM (1 s or more after
/// the first) ended before its flush: 128 + SIGINT, as a shell reports Ctrl-C.
const FORCED_EXIT: u8 = 130;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            station::cj_error!("cj-detector: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(args: &[String]) -> Result<(), DetectorError> {
    let config_file = match cli::parse(args)? {
        Command::Help => {
            print!(
                "{}\n{}\n{}\n{}",
                cli::USAGE,
                station::cli::COMMON_OPTIONS_HELP,
                station::cli::HEALTH_HELP,
                station::cli::EXIT_CODES_HELP
            );
            return Ok(());
        }
        Command::PrintConfig { config } => {
            print!("{}", station::cli::print_config(config.as_deref())?);
            return Ok(());
        }
        Command::Version => {
            println!("cj-detector {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::Health { config } => {
            let line = station::cli::health(station::health::Role::Detector, config.as_deref())?
                .map_err(DetectorError::Unhealthy)?;
            println!("cj-detector: {line}");
            return Ok(());
        }
        Command::Inventory { config } => {
            let cfg = StationConfig::load(config.as_deref())?;
            let text = detector::attribution::describe(&cfg);
            if text.is_empty() {
                // On stderr: stdout stays the lines a script reads (none).
                station::cj_info!(
                    "cj-detector: the inventory sees no container interface: no container runs, or this process \
                     cannot see the host's network namespaces (run it on the host, as root)"
                );
            }
            print!("{text}");
            return Ok(());
        }
        Command::Run { config } => config,
    };
    let cfg = StationConfig::load(config_file.as_deref())?;
    shmq::files::set_group(cfg.group); // CJ_GROUP: group of the files this process creates
    if cfg.corecount == 0 {
        return Err(DetectorError::NoWorkers);
    }
    let plan = coreplan::plan_cores(cfg.corebase, cfg.corecount, cfg.skip_core);
    let allowed = coreplan::allowed_cpus();
    coreplan::check_plan(&plan, &allowed, &coreplan::online_cpus())
        .map_err(|source| DetectorError::CorePlan { source, allowed: coreplan::format_cpu_list(&allowed) })?;

    let stop = Arc::new(AtomicBool::new(false));
    // The first signal asks for a clean stop (every flow flushed); the same
    // again within 1 s is that request (`timeout` sends it twice); one later
    // exits at once (code 130) without the flush.
    station::signals::install(
        "cj-detector",
        &stop,
        station::signals::Repeat::Exit {
            status: FORCED_EXIT,
            loses: "without flushing: the flows in the workers' tables are lost, and the app's identity names their \
                    packets (worker_crash_lost), as after a SIGKILL",
        },
    )?;

    // Flow divert (CJ_TUN=yes): the rules first, so a bad file stops us before any thread.
    let divert_rules = detector::divert::start(&cfg)?;
    let inventory = detector::attribution::start(&cfg);
    let specs: Vec<WorkerSpec> = plan
        .iter()
        .enumerate()
        .map(|(i, &core)| WorkerSpec { divert_rules: divert_rules.clone(), ..WorkerSpec::from_station(&cfg, i, core) })
        .collect();
    let gate = Arc::new(StartGate::new(specs.len()));
    let mut handles = Vec::with_capacity(specs.len());
    for spec in &specs {
        match worker::spawn_with_inventory(spec.clone(), Arc::clone(&gate), Arc::clone(&stop), inventory.clone()) {
            Ok(h) => handles.push((spec.queue, h)),
            Err(e) => {
                // The others are parked at the gate and have touched no packet:
                // exiting now leaves every queue as it was.
                station::cj_error!("cj-detector: {e}");
                std::process::exit(i32::from(e.exit_code()));
            }
        }
    }
    let mut notifier = station::notify::Notifier::from_env("cj-detector").with_own_watchdog(cfg.watchdog);
    let go = gate.open();
    if go {
        let cores: Vec<String> = specs.iter().map(|s| format!("{}->core {}", s.queue, s.core)).collect();
        let decap =
            if cfg.decap.is_off() { String::new() } else { format!("; decapsulating {} (CJ_DECAP)", cfg.decap) };
        let started = format!(
            "{} workers started (queue->core: {}), cluster dir {}{decap}",
            specs.len(),
            cores.join(", "),
            cfg.cluster_dir().display()
        );
        station::cj_info!("cj-detector: {started}");
        notifier.ready(&started);
    }
    // Main joins the workers the moment each ends, while a supervisor thread
    // prints the stats lines and feeds the watchdog; it is woken (unparked) as
    // soon as the last worker is joined, so the exit waits for no tick.
    let done = AtomicBool::new(false);
    let joined: Vec<_> = std::thread::scope(|scope| {
        let supervisor = go.then(|| {
            let (specs, done, notifier) = (&specs, &done, &mut notifier);
            std::thread::Builder::new()
                .name("cj-supervise".into())
                .spawn_scoped(scope, move || supervise(specs, done, cfg.log_interval, notifier))
        });
        let joined = handles.into_iter().map(|(queue, h)| (queue, h.join())).collect();
        done.store(true, Ordering::Release);
        match &supervisor {
            Some(Ok(s)) => s.thread().unpark(),
            Some(Err(e)) => station::cj_warn!("cj-detector: no stats lines or watchdog: cannot start a thread: {e}"),
            None => {}
        }
        joined
    });
    if go {
        notifier.stopping("workers flushing their flows");
    }

    let mut first_err = None;
    for (queue, joined) in joined {
        match joined {
            Ok(Ok(summary)) => report(&summary),
            Ok(Err(e)) => {
                // Stand-downs are a consequence, not the cause: report the cause.
                if first_err.is_none() || matches!(first_err, Some(DetectorError::Aborted { .. })) {
                    first_err = Some(e);
                }
            }
            Err(_) => {
                if first_err.is_none() || matches!(first_err, Some(DetectorError::Aborted { .. })) {
                    first_err = Some(DetectorError::WorkerPanic { queue });
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn report(s: &WorkerSummary) {
    let lost = if s.records_lost > 0 { format!(" ({} lost)", s.records_lost) } else { String::new() };
    let secs = s.packet_span.as_secs_f64();
    let rate = if secs > 0.0 {
        format!(" in {secs:.3}s ({})", station::rate::format_rate(s.packets as f64 / secs))
    } else {
        String::new()
    };
    // The flow state's bytes per peak flow are the worker's own line (worker.rs).
    station::cj_info!(
        "(Core {}) ended ({}): {} packets{rate}, {} records{lost}",
        s.queue,
        match s.cause {
            worker::EndCause::QueueEnded => "packet queue ended",
            worker::EndCause::Signal => "signal",
        },
        s.packets,
        s.records
    );
}

/// Until `done` (set by main once every worker is joined, with an unpark),
/// prints stats lines every `interval` (none when zero) and feeds the
/// watchdog while the workers make progress.
fn supervise(specs: &[WorkerSpec], done: &AtomicBool, interval: Duration, notifier: &mut station::notify::Notifier) {
    let watchdog = notifier.watchdog_interval();
    let mut progress = detector::progress::Progress::new(specs.len());
    let mut prev: Vec<(Instant, WorkerSnapshot)> = vec![(Instant::now(), WorkerSnapshot::default()); specs.len()];
    let mut queues: Vec<Option<(shmq::QueueFile, shmq::QueueFile)>> = Vec::new();
    let mut next = Instant::now() + interval;
    loop {
        std::thread::park_timeout(SUPERVISE_TICK);
        if done.load(Ordering::Acquire) {
            return;
        }
        // The watchdog is fed only while every worker drains its queue (or has nothing to do).
        if let Some(w) = watchdog {
            if progress.all_within(specs, w) {
                notifier.alive();
            }
        }
        if interval.is_zero() || Instant::now() < next {
            continue;
        }
        next += interval;
        if queues.is_empty() {
            queues = specs
                .iter()
                .map(|s| {
                    let p = shmq::QueueFile::open_existing(&s.packet_queue_path()).ok()?;
                    let r = shmq::QueueFile::open_existing(&s.record_queue_path()).ok()?;
                    Some((p, r))
                })
                .collect();
        }
        for (i, spec) in specs.iter().enumerate() {
            let Ok(named) = shmq::CounterPage::read(&spec.stats_path()) else {
                continue;
            };
            let cur = WorkerSnapshot::from_named(&named);
            let now = Instant::now();
            let (pkt, rec) = match &queues[i] {
                Some((p, r)) => (Some(p.stats()), Some(r.stats())),
                None => (None, None),
            };
            let (t, before) = prev[i];
            station::cj_info!("{}", stats::line(spec.queue, &cur, &before, now - t, pkt.as_ref(), rec.as_ref()));
            prev[i] = (now, cur);
        }
    }
}
