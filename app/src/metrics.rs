//! `CJ_METRICS_ADDR`: the station's counters as Prometheus metrics, served by
//! cj-app over HTTP (`GET /metrics`) on a thread of its own (`cj-metrics`).
//!
//! Every scrape reads the same sources `cj-app status` reads (the queue
//! headers with `QueueFile::read_stats`, the stats pages with
//! `CounterPage::read`, read-only, never attaching), and asks the app's main
//! loop for what only the app knows (the identity terms, its own totals, the
//! per-container counters) through [`crate::control`]. Nothing is cached: a
//! scrape shows the pipeline as it is at that moment.
//!
//! The text is encoded by `prometheus-client` (the Prometheus project's own
//! Rust client, `prometheus/client_rust`), in the Prometheus text format
//! 0.0.4 (`prometheus_client::encoding::prometheus_text`): it does the
//! escaping of label values (container names are arbitrary text), the
//! `_total` suffix of counters and the `# HELP`/`# TYPE` lines, which are
//! exactly what a hand-written encoder gets wrong. The values are not kept in
//! its metric types (they live in shared memory, written by other processes):
//! a `Collector` encodes each scrape's [`Snapshot`] as constant samples.
//!
//! Families (counters end in `_total`; labels in braces):
//! - `cj_packet_queue_{enqueued,dequeued,dropped}_total{set,queue}`,
//!   `cj_packet_queue_fill{set,queue}`, `cj_packet_queue_capacity{set,queue}`,
//!   `cj_packet_queue_closed{set,queue}`; the same for `cj_record_queue_*`;
//! - `cj_balancer_received_frames_total`, `cj_balancer_received_bytes_total`,
//!   `cj_balancer_capture_dropped_frames_total`,
//!   `cj_balancer_queue_dropped_frames_total`, `cj_balancer_source_errors_total`,
//!   `cj_balancer_ended`, `cj_balancer_running`, `cj_balancer_heartbeat_age_seconds`;
//! - `cj_worker_packets_total{set,worker}`, `cj_worker_bytes_total`,
//!   `cj_worker_frames_by_kind_total{kind=ipv4|ipv6|non_ip|malformed}`,
//!   `cj_worker_fragments_total`, `cj_worker_truncated_frames_total`,
//!   `cj_worker_flows_active`, `cj_worker_flows_created_total`,
//!   `cj_worker_flows_expired_total`, `cj_worker_flows_evicted_total`,
//!   `cj_worker_records_total`, `cj_worker_records_lost_total`,
//!   `cj_worker_record_packets_total`, `cj_worker_lost_packets_total`,
//!   `cj_worker_ended`, `cj_worker_running`, `cj_worker_heartbeat_age_seconds`;
//! - `cj_identity_frames_total{queue,term}` (term: every counting term of
//!   `summary.json`'s `identity.terms`, `received` and `accounted` included;
//!   queue: `all`, or each queue in fan-out mode),
//!   `cj_identity_difference_frames{queue}`, `cj_identity_capture_dropped_frames_total`,
//!   `cj_identity_status{status=holds|broken|in_progress|unchecked}` (1 for the current one);
//! - `cj_app_records_total`, `cj_app_flows_total`, `cj_app_packets_total`,
//!   `cj_app_bytes_total` (IP bytes), `cj_app_frame_bytes_total`,
//!   `cj_app_non_ip_frames_total`, `cj_app_malformed_frames_total`,
//!   `cj_app_records_invalid_total`, `cj_app_records_missing_total`, `cj_app_rows`,
//!   `cj_app_rows_overflowed_total`; with `CJ_EXPORT`: `cj_app_export_records_total`,
//!   `cj_app_export_records_sent_total`, `cj_app_export_records_dropped_total`,
//!   `cj_app_export_records_dropped_behind_total`,
//!   `cj_app_export_messages_total`, `cj_app_export_send_errors_total`,
//!   `cj_app_export_intake_held_seconds_total`, `cj_app_export_rate`;
//! - `cj_container_packets_total{container,id,direction=in|out}`,
//!   `cj_container_bytes_total` (frame bytes), `cj_container_ip_bytes_total`,
//!   `cj_container_flows_total{container,id}`,
//!   `cj_container_protocol_packets_total{container,id,direction,protocol}`,
//!   `cj_container_protocol_bytes_total` (frame bytes);
//! - with flow divert on (`CJ_TUN=yes`): `cj_worker_{mirrored,diverted,tun_dropped}_{packets,bytes}_total{set,worker}`,
//!   `cj_worker_divert_rules_generation`, `cj_worker_divert_verdicts_evicted_total`;
//! - tunnel decapsulation (`CJ_DECAP`; 0 when off):
//!   `cj_worker_{tunnel_packets,tunnel_undecoded,tunnel_endpoints_not_kept}_total{set,worker}`,
//!   `cj_worker_tunnel_endpoints`;
//!   per rule slot (`rule1`..`rule64`, `other`) from the pages `divert-<q>`:
//!   `cj_divert_rule_{mirrored,diverted,tun_dropped}_{packets,bytes}_total{set,worker,rule}`
//!   for each slot the listing `divert-rules` names or that counted something, and
//!   `cj_divert_rule_info{set,rule,line,text}` (1 per listed rule);
//! - `cj_metrics_unreadable_files`: files of the cluster directory this scrape
//!   could not read or did not trust (owned by neither the station's user nor
//!   root); each is missing from the families above.
//! - `cj_app_connections_refused_total{endpoint=metrics|query}`: connections
//!   of `/metrics` or the query socket closed unserved, over the 8 at once.
//!
//! Guarantees:
//! - Off unless `CJ_METRICS_ADDR` is set. `PORT`, `127.0.0.1:PORT`, `[::1]:PORT`
//!   and `localhost:PORT` listen on loopback only; any other address is
//!   refused at start (one line naming the fix) unless written
//!   `public:ADDR:PORT`, since `/metrics` has no authentication. Port 0 picks a
//!   free port; the start line says which.
//! - The scrape thread never touches the flow tables or the queues' rings:
//!   the main loop answers its question between two polls of the record
//!   queues, so a scrape costs the intake one small copy (identity terms and
//!   container totals), and a slow or stuck client costs nothing but its own
//!   connection: each connection is served on a thread of its own, at most 8
//!   at once (more are closed at once and counted in
//!   `cj_app_connections_refused_total{endpoint="metrics"}`), and a client
//!   has 5 s in all to send its request head, however it trickles, and 10 s
//!   in all to take the answer ([`crate::conn`]).
//! - A counter's value is the page's or header's own: no deltas, no resets
//!   by the exporter (a restarted balancer continues its counters, see DESIGN).
//! - Each series comes once per scrape, from the file of the station's own
//!   name (`rec-3`, never a copy planted as `rec-0-3` or `rec-03`), and only
//!   from a file owned by the station's user (cj-app's) or root: a member of
//!   the station's group, who may create files in the cluster directory,
//!   cannot add a series or change a value (a foreign file is counted in
//!   `cj_metrics_unreadable_files`). A repeated (family, labels) is dropped.
//!
//! Not guaranteed: one scrape is not one instant (the pages are read one
//! after the other while the pipeline runs); the app's families are absent
//! from a scrape when the main loop does not answer within
//! [`crate::control::ASK_TIMEOUT`] (it is writing a very large table);
//! counters of a page a newer build added are not exported until this list
//! knows them.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::status::{classify, Entry};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shmq::{CounterPage, QueueFile, QueueStats};
use station::config::{ConfigError, StationConfig};

use crate::aggregate::Totals;
use crate::conn;
use crate::containers::ContainerTotals;
use crate::control::Asker;
use crate::divert_pages::{self, ListedRule};
use crate::identity::Identity;

/// The variable.
const VAR: &str = "CJ_METRICS_ADDR";

/// What a `public:` address is written with.
const PUBLIC: &str = "public:";

/// Where `/metrics` is served, from `CJ_METRICS_ADDR`; `None` when empty (off).
///
/// # Errors
/// A value that is not a port or an address with a port, or a non-loopback
/// address not written `public:ADDR:PORT`.
pub fn listen_addr(cfg: &StationConfig) -> Result<Option<SocketAddr>, ConfigError> {
    parse_addr(&cfg.metrics_addr, cfg.origin(VAR))
}

fn parse_addr(raw: &str, origin: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let value = raw.trim();
    let err = |expected: String| ConfigError::new(VAR, value, origin, expected);
    const FORMS: &str = "PORT, 127.0.0.1:PORT, [::1]:PORT, localhost:PORT or public:ADDR:PORT (port 0..=65535), \
                         or empty for no metrics endpoint";
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = value.strip_prefix(PUBLIC) {
        return rest.parse::<SocketAddr>().map(Some).map_err(|_| err(format!("{FORMS}; {rest:?} is not ADDR:PORT")));
    }
    if let Ok(port) = value.parse::<u16>() {
        return Ok(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
    }
    if let Some(port) = value.strip_prefix("localhost:") {
        let port = port.parse::<u16>().map_err(|_| err(FORMS.to_owned()))?;
        return Ok(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
    }
    let addr = value.parse::<SocketAddr>().map_err(|_| err(FORMS.to_owned()))?;
    if !addr.ip().is_loopback() {
        return Err(err(format!(
            "a loopback address; {} is not, and /metrics has no authentication: write {PUBLIC}{addr} to serve \
             it to the network",
            addr.ip()
        )));
    }
    Ok(Some(addr))
}

/// The endpoint cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `bind(2)` failed.
    #[error("cannot listen on {addr} (CJ_METRICS_ADDR) for /metrics: {source}; choose another port, or stop what listens there")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The thread cannot be started.
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// A running endpoint.
#[derive(Debug)]
pub struct Endpoint {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
}

/// Binds `addr` and serves `/metrics` for the cluster directory `dir` on a
/// thread named `cj-metrics`, asking the main loop through `asker`.
///
/// # Errors
/// The address cannot be bound, or the thread cannot start.
pub fn start(addr: SocketAddr, dir: PathBuf, asker: Asker) -> Result<Endpoint, MetricsError> {
    let listener = TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
    std::thread::Builder::new()
        .name("cj-metrics".into())
        .spawn(move || {
            conn::serve_each(conn::Endpoint::Metrics, listener.incoming(), move |stream| {
                // A client that goes away or runs out of time is its own problem.
                let _ = handle(stream, &dir, &asker);
            })
        })
        .map_err(MetricsError::Thread)?;
    Ok(Endpoint { addr: bound })
}

/// Longest request head read.
const MAX_HEAD: usize = 8192;

/// Time to write an answer, whole.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// Reads the request head (at most [`MAX_HEAD`] bytes, all within
/// [`conn::REQUEST_DEADLINE`]) and answers it (within [`ANSWER_DEADLINE`]).
fn handle(stream: TcpStream, dir: &Path, asker: &Asker) -> std::io::Result<()> {
    let mut request = conn::Timed::new(&stream, conn::REQUEST_DEADLINE);
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let answer = |status: &str, content_type: &str, body: &str| {
        respond(&mut conn::Timed::new(&stream, ANSWER_DEADLINE), status, content_type, body)
    };
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = request.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return answer("431 Request Header Fields Too Large", "text/plain", "request head too large\n");
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => {
            let body = scrape(dir, asker);
            answer("200 OK", prometheus_client::encoding::prometheus_text::CONTENT_TYPE, &body)
        }
        (_, "/metrics") => answer("405 Method Not Allowed", "text/plain", "only GET /metrics\n"),
        _ => answer("404 Not Found", "text/plain", "cj-app serves GET /metrics only\n"),
    }
}

fn respond(stream: &mut impl Write, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// What only the app knows, copied out of its main loop for one scrape.
#[derive(Clone, Debug)]
pub struct AppView {
    /// The identity as the app would report it now.
    pub identity: Identity,
    /// Totals of the main table's records.
    pub totals: Totals,
    /// Rows of the main table.
    pub rows: usize,
    /// Record directions added to overflow rows, every table (each active-timeout part of a flow again).
    pub rows_overflowed: u64,
    /// Invalid records skipped, all queues.
    pub records_invalid: u64,
    /// Records missing from the sequences, all queues.
    pub records_missing: u64,
    /// Per-container totals.
    pub containers: Vec<ContainerTotals>,
    /// The IPFIX / NetFlow v9 export's counters (`CJ_EXPORT`), when on.
    pub export: Option<crate::ipfix::ExportStats>,
}

/// One scrape: reads the cluster directory, asks the app, encodes.
fn scrape(dir: &Path, asker: &Asker) -> String {
    let app = asker.metrics();
    let snapshot = Snapshot::read(dir, app.as_ref(), station::naming::heartbeat_ms());
    snapshot.encode()
}

/// Whether a family counts up or is a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A sample's value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
}

/// One family: name without `_total` (the encoder adds it to counters), help, samples.
#[derive(Clone, Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

/// Every family of one scrape, in the order first met.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    families: Vec<Family>,
    /// (family, labels) of every sample so far: a second one is dropped.
    seen: std::collections::HashSet<(&'static str, Vec<(&'static str, String)>)>,
}

/// Whether the file at `path` (not followed) belongs to the station: owned by
/// this process's user (cj-app runs as the station's user) or by root. A
/// member of the station's group can create files in the cluster directory,
/// but not under another user's name, and (the directory being sticky,
/// `shmq::prepare_dir`) cannot replace the station's files after this check.
fn station_owned(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| shmq::files::owned_by_us_or_root(&m))
}

/// Worker page counters: (page name, family, help, kind, extra label).
/// (page counter, family, help, kind, extra label).
type WorkerFamily = (&'static str, &'static str, &'static str, Kind, Option<(&'static str, &'static str)>);

const WORKER_FAMILIES: &[WorkerFamily] = &[
    ("packets", "cj_worker_packets", "Frames the worker read from its packet queue.", Kind::Counter, None),
    ("bytes", "cj_worker_bytes", "Wire bytes of the frames the worker read.", Kind::Counter, None),
    ("ipv4", "cj_worker_frames_by_kind", "Frames by layer-3 kind.", Kind::Counter, Some(("kind", "ipv4"))),
    ("ipv6", "cj_worker_frames_by_kind", "Frames by layer-3 kind.", Kind::Counter, Some(("kind", "ipv6"))),
    ("non_ip", "cj_worker_frames_by_kind", "Frames by layer-3 kind.", Kind::Counter, Some(("kind", "non_ip"))),
    ("malformed", "cj_worker_frames_by_kind", "Frames by layer-3 kind.", Kind::Counter, Some(("kind", "malformed"))),
    (
        "fragments",
        "cj_worker_fragments",
        "Later IP fragments (counted in their datagram's flow when its first fragment was seen).",
        Kind::Counter,
        None,
    ),
    ("truncated", "cj_worker_truncated_frames", "Frames cut to the slot size.", Kind::Counter, None),
    ("flows_active", "cj_worker_flows_active", "Flows in the worker's table now.", Kind::Gauge, None),
    ("flows_new", "cj_worker_flows_created", "Flows created.", Kind::Counter, None),
    ("flows_expired", "cj_worker_flows_expired", "Flows ended by a timeout or TCP close.", Kind::Counter, None),
    (
        "flows_evicted",
        "cj_worker_flows_evicted",
        "Flows evicted because the table was full (end reason 5).",
        Kind::Counter,
        None,
    ),
    ("records", "cj_worker_records", "Flow records published to the record queue.", Kind::Counter, None),
    (
        "records_lost",
        "cj_worker_records_lost",
        "Records that could not be queued before shutdown gave up.",
        Kind::Counter,
        None,
    ),
    ("record_packets", "cj_worker_record_packets", "Packets carried by published records.", Kind::Counter, None),
    ("lost_packets", "cj_worker_lost_packets", "Packets carried by lost records.", Kind::Counter, None),
    ("ended", "cj_worker_ended", "1 once the worker flushed and ended.", Kind::Gauge, None),
    (
        "mirrored_packets",
        "cj_worker_mirrored_packets",
        "Frames of mirror flows copied to the worker's tun device (CJ_TUN).",
        Kind::Counter,
        None,
    ),
    ("mirrored_bytes", "cj_worker_mirrored_bytes", "Bytes of the mirrored frames.", Kind::Counter, None),
    (
        "diverted_packets",
        "cj_worker_diverted_packets",
        "Frames of divert flows handed to the tun device instead of accounted (an identity term).",
        Kind::Counter,
        None,
    ),
    ("diverted_bytes", "cj_worker_diverted_bytes", "Bytes of the diverted frames.", Kind::Counter, None),
    (
        "tun_dropped_packets",
        "cj_worker_tun_dropped_packets",
        "Mirrored or diverted frames the tun device refused (a full queue; the worker never waits).",
        Kind::Counter,
        None,
    ),
    ("tun_dropped_bytes", "cj_worker_tun_dropped_bytes", "Bytes of the refused frames.", Kind::Counter, None),
    (
        "divert_rules_generation",
        "cj_worker_divert_rules_generation",
        "Generation of the divert rules the worker uses.",
        Kind::Gauge,
        None,
    ),
    (
        "divert_verdicts_evicted",
        "cj_worker_divert_verdicts_evicted",
        "Divert verdicts of active flows that did not fit the verdict table (decided again).",
        Kind::Counter,
        None,
    ),
    (
        "tunnel_packets",
        "cj_worker_tunnel_packets",
        "Tunnel packets counted as their inner flow (CJ_DECAP).",
        Kind::Counter,
        None,
    ),
    (
        "tunnel_undecoded",
        "cj_worker_tunnel_undecoded",
        "Packets of an enabled tunnel counted as their outer flow: the inside was not usable IP (CJ_DECAP).",
        Kind::Counter,
        None,
    ),
    ("tunnel_endpoints", "cj_worker_tunnel_endpoints", "Outer endpoint pairs the worker keeps.", Kind::Gauge, None),
    (
        "tunnel_endpoints_not_kept",
        "cj_worker_tunnel_endpoints_not_kept",
        "Decapsulated packets counted without their outer addresses: the endpoint table was full.",
        Kind::Counter,
        None,
    ),
];

/// A divert page's slot counters (in `station::naming::DIVERT_SLOT_COUNTERS`
/// order) as families labelled `{set,worker,rule}`: (family, help).
const DIVERT_RULE_FAMILIES: [(&str, &str); 6] = [
    ("cj_divert_rule_mirrored_packets", "Frames of the rule's mirror flows copied to the worker's tun device."),
    ("cj_divert_rule_mirrored_bytes", "Bytes of the rule's mirrored frames."),
    (
        "cj_divert_rule_diverted_packets",
        "Frames of the rule's divert flows handed to the tun device instead of accounted.",
    ),
    ("cj_divert_rule_diverted_bytes", "Bytes of the rule's diverted frames."),
    ("cj_divert_rule_tun_dropped_packets", "The rule's mirrored or diverted frames the tun device refused."),
    ("cj_divert_rule_tun_dropped_bytes", "Bytes of the rule's refused frames."),
];

/// Balancer page counters: (page name, family, help, kind).
const BALANCER_FAMILIES: &[(&str, &str, &str, Kind)] = &[
    ("received", "cj_balancer_received_frames", "Frames the balancer took from its source.", Kind::Counter),
    ("received_bytes", "cj_balancer_received_bytes", "Wire bytes of the frames received.", Kind::Counter),
    (
        "capture_dropped",
        "cj_balancer_capture_dropped_frames",
        "Frames the capture layer lost before the balancer saw them (not received).",
        Kind::Counter,
    ),
    (
        "queue_dropped",
        "cj_balancer_queue_dropped_frames",
        "Frame copies dropped at full packet queues, every set.",
        Kind::Counter,
    ),
    ("source_errors", "cj_balancer_source_errors", "Unreadable capture records, counted and skipped.", Kind::Counter),
    ("ended", "cj_balancer_ended", "0 running, 1 the source ended, 2 stopped by a signal.", Kind::Gauge),
];

impl Snapshot {
    /// Adds one sample unless its family already has one with these labels
    /// (each series once per scrape, whatever the directory holds).
    fn sample(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: Vec<(&'static str, String)>,
        v: Value,
    ) {
        if self.seen.insert((name, labels.clone())) {
            self.family(name, help, kind).samples.push((labels, v));
        }
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> &mut Family {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family { name, help, kind, samples: Vec::new() });
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: Vec<(&'static str, String)>,
        v: u64,
    ) {
        self.sample(name, help, kind, labels, Value::Int(v));
    }

    fn push_f(&mut self, name: &'static str, help: &'static str, labels: Vec<(&'static str, String)>, v: f64) {
        self.sample(name, help, Kind::Gauge, labels, Value::Float(v));
    }

    /// Reads every queue header and stats page under `dir` and adds `app`'s
    /// families; `now_ms` is [`station::naming::heartbeat_ms`] now.
    pub fn read(dir: &Path, app: Option<&AppView>, now_ms: u64) -> Snapshot {
        let mut s = Snapshot::default();
        let mut entries: Vec<(Entry, PathBuf)> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| classify(&e.file_name().to_string_lossy()).map(|k| (k, e.path())))
                    .collect()
            })
            .unwrap_or_default();
        entries.sort();
        let mut unreadable = 0u64;
        for (entry, path) in &entries {
            if !matches!(entry, Entry::Divert(..) | Entry::App(_)) && !station_owned(path) {
                unreadable += 1;
                continue;
            }
            match *entry {
                Entry::Packet(set, q) | Entry::Record(set, q) => match QueueFile::read_stats(path) {
                    Ok((_, stats)) => s.add_queue(matches!(entry, Entry::Packet(..)), set, q, &stats),
                    Err(_) => unreadable += 1,
                },
                Entry::Balancer => match CounterPage::read(path) {
                    Ok(page) => s.add_balancer(&page, now_ms),
                    Err(_) => unreadable += 1,
                },
                Entry::Worker(set, q) => match CounterPage::read(path) {
                    Ok(page) => s.add_worker(set, q, &page, now_ms),
                    Err(_) => unreadable += 1,
                },
                // Per-rule divert pages: read with the listing by `add_divert` below.
                Entry::Divert(..) | Entry::App(_) => {}
            }
        }
        unreadable += s.add_divert(dir);
        if let Some(app) = app {
            s.add_app(app);
        }
        s.push(
            "cj_metrics_unreadable_files",
            "Files of the cluster directory this scrape could not read (cj-app status says why) or that are owned \
             by neither the station's user nor root.",
            Kind::Gauge,
            Vec::new(),
            unreadable,
        );
        for endpoint in [conn::Endpoint::Metrics, conn::Endpoint::Query] {
            s.push(
                "cj_app_connections_refused",
                "Connections of /metrics or the query socket closed unserved: the endpoint was serving its 8 at once.",
                Kind::Counter,
                vec![("endpoint", endpoint.name().to_owned())],
                conn::refused(endpoint),
            );
        }
        s
    }

    fn add_queue(&mut self, packet: bool, set: u32, q: u32, st: &QueueStats) {
        let labels = || vec![("set", set.to_string()), ("queue", q.to_string())];
        macro_rules! fam {
            ($p:literal, $r:literal) => {
                if packet {
                    $p
                } else {
                    $r
                }
            };
        }
        self.push(
            fam!("cj_packet_queue_enqueued", "cj_record_queue_enqueued"),
            "Messages published into the queue (queue header).",
            Kind::Counter,
            labels(),
            st.enqueued,
        );
        self.push(
            fam!("cj_packet_queue_dequeued", "cj_record_queue_dequeued"),
            "Messages released by the queue's consumer.",
            Kind::Counter,
            labels(),
            st.dequeued,
        );
        self.push(
            fam!("cj_packet_queue_dropped", "cj_record_queue_dropped"),
            "Messages the producer dropped because the queue was full.",
            Kind::Counter,
            labels(),
            st.dropped,
        );
        self.push(
            fam!("cj_packet_queue_fill", "cj_record_queue_fill"),
            "Messages published and not yet released.",
            Kind::Gauge,
            labels(),
            st.in_flight(),
        );
        self.push(
            fam!("cj_packet_queue_capacity", "cj_record_queue_capacity"),
            "Slots of the queue.",
            Kind::Gauge,
            labels(),
            st.capacity,
        );
        self.push(
            fam!("cj_packet_queue_closed", "cj_record_queue_closed"),
            "1 once the producer marked the end of the stream.",
            Kind::Gauge,
            labels(),
            u64::from(st.closed),
        );
    }

    fn liveness(
        &mut self,
        prefix_running: &'static str,
        prefix_age: &'static str,
        labels: Vec<(&'static str, String)>,
        page: &[(String, u64)],
        now_ms: u64,
    ) {
        let beat = page.iter().find(|(k, _)| k == "heartbeat_ms").map_or(0, |(_, v)| *v);
        let age = station::health::beat_age_ms(beat, now_ms);
        let running = station::health::liveness(page, now_ms).is_running();
        self.push(
            prefix_running,
            "1 while the process beats (heartbeat younger than 3 s) and has not marked its end, as cj-app status judges it.",
            Kind::Gauge,
            labels.clone(),
            u64::from(running),
        );
        if let Some(age) = age {
            self.push_f(prefix_age, "Seconds since the process's last heartbeat.", labels, age as f64 / 1000.0);
        }
    }

    fn add_balancer(&mut self, page: &[(String, u64)], now_ms: u64) {
        for (key, v) in page {
            if let Some(&(_, name, help, kind)) = BALANCER_FAMILIES.iter().find(|f| f.0 == key) {
                self.push(name, help, kind, Vec::new(), *v);
            }
        }
        self.liveness("cj_balancer_running", "cj_balancer_heartbeat_age_seconds", Vec::new(), page, now_ms);
    }

    fn add_worker(&mut self, set: u32, q: u32, page: &[(String, u64)], now_ms: u64) {
        let labels = || vec![("set", set.to_string()), ("worker", q.to_string())];
        for (key, v) in page {
            if let Some(&(_, name, help, kind, extra)) = WORKER_FAMILIES.iter().find(|f| f.0 == key) {
                let mut l = labels();
                if let Some((k, val)) = extra {
                    l.push((k, val.to_owned()));
                }
                self.push(name, help, kind, l, *v);
            }
        }
        self.liveness("cj_worker_running", "cj_worker_heartbeat_age_seconds", labels(), page, now_ms);
    }

    /// The per-rule divert pages (`crate::divert_pages`): each worker's slots
    /// that its set's listing names or that counted something, and one
    /// `cj_divert_rule_info` per listed rule; returns the files it could not read.
    fn add_divert(&mut self, dir: &Path) -> u64 {
        let mut unreadable = 0;
        let mut listings: std::collections::BTreeMap<u32, std::collections::BTreeMap<String, ListedRule>> =
            std::collections::BTreeMap::new();
        for (set, q, path) in divert_pages::pages(dir) {
            let listed = listings.entry(set).or_insert_with(|| {
                let listing = station::naming::set_divert_rules_path(dir, set);
                match divert_pages::read_listing(&listing) {
                    Ok(text) if station_owned(&listing) => divert_pages::parse_listing(&text).1,
                    _ => {
                        unreadable += 1;
                        Default::default()
                    }
                }
            });
            let page = match CounterPage::read(&path) {
                Ok(page) if station_owned(&path) => page,
                _ => {
                    unreadable += 1;
                    continue;
                }
            };
            for (slot, c) in divert_pages::slots(&page) {
                if !listed.contains_key(&slot) && !c.any() {
                    continue;
                }
                let labels = vec![("set", set.to_string()), ("worker", q.to_string()), ("rule", slot)];
                for ((name, help), v) in DIVERT_RULE_FAMILIES.iter().zip(c.values()) {
                    self.push(name, help, Kind::Counter, labels.clone(), v);
                }
            }
        }
        for (set, listed) in listings {
            for (slot, r) in listed {
                self.push(
                    "cj_divert_rule_info",
                    "1 for each rule of the divert-rules listing: its slot, line and text.",
                    Kind::Gauge,
                    vec![("set", set.to_string()), ("rule", slot), ("line", r.line.to_string()), ("text", r.rule)],
                    1,
                );
            }
        }
        unreadable
    }

    fn add_app(&mut self, app: &AppView) {
        let id = &app.identity;
        let terms: Vec<&crate::identity::Terms> =
            if id.per_queue.is_empty() { vec![&id.terms] } else { id.per_queue.iter().collect() };
        for t in terms {
            let queue = t.queue.filter(|_| !id.per_queue.is_empty()).map_or("all".to_owned(), |q| q.to_string());
            // Every counting term the identity has (serialised, so a term added there is exported here too).
            let fields = serde_json::to_value(t).unwrap_or_default();
            for (term, v) in fields.as_object().into_iter().flatten() {
                let Some(v) = v.as_u64().filter(|_| term != "queue" && term != "difference") else { continue };
                self.push(
                    "cj_identity_frames",
                    "Terms of the accounting identity: received = the sum of the others (= accounted), as summary.json \
                     lists them.",
                    Kind::Counter,
                    vec![("queue", queue.clone()), ("term", term.clone())],
                    v,
                );
            }
            self.push_f(
                "cj_identity_difference_frames",
                "received - accounted: 0 when the identity holds; in flight while the pipeline runs.",
                vec![("queue", queue)],
                t.difference as f64,
            );
        }
        self.push(
            "cj_identity_capture_dropped_frames",
            "Frames lost in the capture layer (outside the identity: never received).",
            Kind::Counter,
            Vec::new(),
            id.capture_dropped,
        );
        for status in ["holds", "broken", "in_progress", "unchecked"] {
            self.push(
                "cj_identity_status",
                "The identity's verdict now: 1 for the current status.",
                Kind::Gauge,
                vec![("status", status.to_owned())],
                u64::from(id.status == status),
            );
        }
        let t = &app.totals;
        for (name, help, v) in [
            ("cj_app_records", "Valid flow records the app read (main table's queues).", t.records),
            ("cj_app_flows", "Directional flows (the FLOWS column summed).", t.flows),
            ("cj_app_packets", "Packets in IP flow records.", t.packets),
            ("cj_app_bytes", "IP bytes in IP flow records (pmacct's BYTES).", t.bytes),
            ("cj_app_frame_bytes", "Frame bytes in IP flow records.", t.frame_bytes),
            ("cj_app_non_ip_frames", "Frames in non-IP records.", t.non_ip_frames),
            ("cj_app_malformed_frames", "Frames in malformed-IP records.", t.malformed_frames),
            ("cj_app_records_invalid", "Records skipped as invalid.", app.records_invalid),
            ("cj_app_records_missing", "Records missing from the record sequences.", app.records_missing),
            (
                "cj_app_rows_overflowed",
                "Record directions added to an overflow row `other` (CJ_APP_MAX_ROWS reached), every table: each \
                 record counts, so a flow cut by the active timeout counts once per part.",
                app.rows_overflowed,
            ),
        ] {
            self.push(name, help, Kind::Counter, Vec::new(), v);
        }
        self.push("cj_app_rows", "Rows of the main aggregate table.", Kind::Gauge, Vec::new(), app.rows as u64);
        if let Some(e) = &app.export {
            for (name, help, v) in [
                (
                    "cj_app_export_records",
                    "Data records the export built (one per direction with packets).",
                    e.counters.records,
                ),
                (
                    "cj_app_export_records_sent",
                    "Data records sent, per collector (a record sent to two collectors counts twice).",
                    e.counters.records_exported,
                ),
                (
                    "cj_app_export_records_dropped",
                    "Data records in messages whose send failed, per collector (a lower bound: one refusal the \
                     kernel reports may stand for several messages).",
                    e.counters.records_dropped,
                ),
                (
                    "cj_app_export_records_dropped_behind",
                    "Data records not exported because the paced export held as many as it may \
                     (CJ_EXPORT_BEHIND=drop), per collector; not sent, unlike records_dropped.",
                    e.counters.records_dropped_behind,
                ),
                ("cj_app_export_messages", "Export messages sent, templates included.", e.counters.messages),
                ("cj_app_export_send_errors", "Export sends that failed.", e.counters.send_errors),
            ] {
                self.push(name, help, Kind::Counter, Vec::new(), v);
            }
            self.push(
                "cj_app_export_intake_held_seconds",
                "Whole seconds the app took no records because the paced export held as many as it may (CJ_EXPORT_RATE).",
                Kind::Counter,
                Vec::new(),
                e.counters.intake_held_ms / 1000,
            );
            self.push(
                "cj_app_export_rate",
                "CJ_EXPORT_RATE: data records per second to each collector (0: unpaced).",
                Kind::Gauge,
                Vec::new(),
                u64::from(e.rate),
            );
        }
        for c in &app.containers {
            let base = || vec![("container", c.name.clone()), ("id", c.id.clone())];
            let dir = |d: &str| {
                let mut l = base();
                l.push(("direction", d.to_owned()));
                l
            };
            for (d, packets, bytes, ip_bytes) in [
                ("in", c.packets_in, c.frame_bytes_in, c.ip_bytes_in),
                ("out", c.packets_out, c.frame_bytes_out, c.ip_bytes_out),
            ] {
                self.push(
                    "cj_container_packets",
                    "Frames into (in) and out of (out) the container.",
                    Kind::Counter,
                    dir(d),
                    packets,
                );
                self.push(
                    "cj_container_bytes",
                    "Frame bytes into and out of the container (as the host veth's kernel counters).",
                    Kind::Counter,
                    dir(d),
                    bytes,
                );
                self.push(
                    "cj_container_ip_bytes",
                    "IP bytes into and out of the container.",
                    Kind::Counter,
                    dir(d),
                    ip_bytes,
                );
            }
            self.push("cj_container_flows", "Directional IP flows of the container.", Kind::Counter, base(), c.flows);
            for (proto, p) in &c.by_protocol {
                for (d, packets, bytes) in
                    [("in", p.packets_in, p.frame_bytes_in), ("out", p.packets_out, p.frame_bytes_out)]
                {
                    let mut l = dir(d);
                    l.push(("protocol", proto.clone()));
                    self.push(
                        "cj_container_protocol_packets",
                        "Frames into and out of the container by protocol.",
                        Kind::Counter,
                        l.clone(),
                        packets,
                    );
                    self.push(
                        "cj_container_protocol_bytes",
                        "Frame bytes into and out of the container by protocol.",
                        Kind::Counter,
                        l,
                        bytes,
                    );
                }
            }
        }
    }

    /// The Prometheus text format (0.0.4), by `prometheus-client`.
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
            // Writing into a String cannot fail; say so rather than serve half a page.
            out.clear();
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let kind = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, kind)?;
            for (labels, value) in &f.samples {
                let mut m = metric.encode_family(labels)?;
                match (f.kind, *value) {
                    (Kind::Counter, Value::Int(v)) => m.encode_counter::<NoLabelSet, u64, u64>(&v, None)?,
                    (Kind::Counter, Value::Float(v)) => m.encode_counter::<NoLabelSet, f64, f64>(&v, None)?,
                    (Kind::Gauge, Value::Int(v)) => m.encode_gauge(&v)?,
                    (Kind::Gauge, Value::Float(v)) => m.encode_gauge(&v)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(v: &str) -> Result<Option<SocketAddr>, String> {
        parse_addr(v, "environment").map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_address_means_no_endpoint_and_a_port_means_loopback() {
        assert_eq!(addr(""), Ok(None));
        assert_eq!(addr("  "), Ok(None));
        assert_eq!(addr("9464"), Ok(Some("127.0.0.1:9464".parse().unwrap())));
        assert_eq!(addr("localhost:0"), Ok(Some("127.0.0.1:0".parse().unwrap())));
        assert_eq!(addr("[::1]:9464"), Ok(Some("[::1]:9464".parse().unwrap())));
        assert_eq!(addr("127.0.0.2:1"), Ok(Some("127.0.0.2:1".parse().unwrap())));
    }

    #[test]
    fn a_non_loopback_address_is_refused_unless_written_public() {
        assert_eq!(
            addr("0.0.0.0:9464").unwrap_err(),
            "CJ_METRICS_ADDR=\"0.0.0.0:9464\" (environment): expected a loopback address; 0.0.0.0 is not, and \
             /metrics has no authentication: write public:0.0.0.0:9464 to serve it to the network"
        );
        assert_eq!(addr("public:0.0.0.0:9464"), Ok(Some("0.0.0.0:9464".parse().unwrap())));
        assert_eq!(addr("public:[::]:9464"), Ok(Some("[::]:9464".parse().unwrap())));
        let e = addr("public:somewhere").unwrap_err();
        assert!(e.ends_with("; \"somewhere\" is not ADDR:PORT"), "{e}");
        let e = addr("eth0:9464").unwrap_err();
        assert!(e.starts_with("CJ_METRICS_ADDR=\"eth0:9464\" (environment): expected PORT, 127.0.0.1:PORT"), "{e}");
        assert!(addr("70000").is_err());
    }

    fn view() -> AppView {
        let identity = Identity {
            status: "holds",
            line: String::new(),
            reason: None,
            set: 0,
            terms: crate::identity::Terms {
                queue: None,
                received: 10,
                accounted_in_flows: 7,
                non_ip: 2,
                malformed: 1,
                queue_dropped: 0,
                records_lost_packets: 0,
                accounted: 10,
                difference: 0,
                ..Default::default()
            },
            per_queue: Vec::new(),
            capture_dropped: 3,
            balancer_ended: true,
            balancer_stopped: false,
            stopped_in_order: false,
            records_missing: 0,
            records_lost: 0,
            source_errors: 0,
        };
        let mut c = ContainerTotals {
            name: "web \"1\"\n".into(),
            id: "abc".into(),
            packets_in: 4,
            packets_out: 5,
            frame_bytes_in: 400,
            frame_bytes_out: 500,
            ..Default::default()
        };
        c.by_protocol.insert(
            "tcp".into(),
            crate::containers::ProtoCounters {
                packets_in: 4,
                packets_out: 5,
                frame_bytes_in: 400,
                frame_bytes_out: 500,
            },
        );
        AppView {
            identity,
            totals: Totals { records: 3, packets: 7, ..Default::default() },
            rows: 2,
            rows_overflowed: 0,
            records_invalid: 0,
            records_missing: 0,
            containers: vec![c],
            export: Some(crate::ipfix::ExportStats {
                counters: crate::ipfix::SavedExport {
                    records: 12,
                    records_exported: 24,
                    records_dropped: 3,
                    records_dropped_behind: 5,
                    ..Default::default()
                },
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_text_follows_the_exposition_format_with_total_suffixes_and_escaped_labels() {
        let text = Snapshot::read(Path::new("/nonexistent"), Some(&view()), 0).encode();
        assert!(text.contains("# TYPE cj_identity_frames_total counter\n"), "{text}");
        assert!(text.contains("cj_identity_frames_total{queue=\"all\",term=\"received\"} 10\n"), "{text}");
        assert!(text.contains("cj_identity_status{status=\"holds\"} 1\n"), "{text}");
        assert!(text.contains("cj_identity_status{status=\"broken\"} 0\n"), "{text}");
        assert!(text.contains("# TYPE cj_app_rows gauge\ncj_app_rows 2\n"), "{text}");
        assert!(text.contains("cj_app_export_records_sent_total 24\n"), "{text}");
        assert!(text.contains("cj_app_export_records_dropped_total 3\n"), "{text}");
        assert!(text.contains("cj_app_export_records_dropped_behind_total 5\n"), "{text}");
        assert!(
            text.contains("cj_container_packets_total{container=\"web \\\"1\\\"\\n\",id=\"abc\",direction=\"in\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("protocol=\"tcp\"} 500\n"), "{text}");
        assert!(text.contains("cj_metrics_unreadable_files 0\n"), "{text}");
        // Every family's TYPE line comes once, before its samples.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut unique = types.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(types.len(), unique.len(), "{text}");
    }

    #[test]
    fn a_process_that_marked_its_end_is_not_running_however_fresh_its_last_beat() {
        let page = |ended: u64| vec![("ended".to_owned(), ended), ("heartbeat_ms".to_owned(), 10_000)];
        for (ended, running) in [(0, 1), (1, 0), (2, 0)] {
            let mut s = Snapshot::read(Path::new("/nonexistent"), None, 0);
            s.add_balancer(&page(ended), 10_100);
            s.add_worker(0, 0, &page(ended), 10_100);
            let text = s.encode();
            assert!(text.contains(&format!("cj_balancer_running {running}\n")), "ended={ended}: {text}");
            assert!(text.contains(&format!("cj_worker_running{{set=\"0\",worker=\"0\"}} {running}\n")), "{text}");
        }
    }

    #[test]
    fn per_rule_divert_pages_become_families_by_set_worker_and_rule() {
        let dir = tempfile::tempdir().unwrap();
        crate::divert_pages::tests::page(dir.path(), "divert-0", &[(0, 0, 3), (0, 1, 300), (64, 2, 1)]);
        crate::divert_pages::tests::page(dir.path(), "divert-1", &[(1, 2, 4), (1, 3, 400), (1, 4, 2), (1, 5, 200)]);
        std::fs::write(
            dir.path().join("divert-rules"),
            "# generation 1 of /r\nrule1 line 1 mirror port 53\nrule2 line 3 divert container \"web\"\n",
        )
        .unwrap();
        let text = Snapshot::read(dir.path(), None, 0).encode();
        for want in [
            "# TYPE cj_divert_rule_mirrored_packets_total counter\n",
            "cj_divert_rule_mirrored_packets_total{set=\"0\",worker=\"0\",rule=\"rule1\"} 3\n",
            "cj_divert_rule_mirrored_bytes_total{set=\"0\",worker=\"0\",rule=\"rule1\"} 300\n",
            "cj_divert_rule_diverted_packets_total{set=\"0\",worker=\"0\",rule=\"other\"} 1\n",
            "cj_divert_rule_diverted_packets_total{set=\"0\",worker=\"0\",rule=\"rule2\"} 0\n",
            "cj_divert_rule_diverted_packets_total{set=\"0\",worker=\"1\",rule=\"rule2\"} 4\n",
            "cj_divert_rule_diverted_bytes_total{set=\"0\",worker=\"1\",rule=\"rule2\"} 400\n",
            "cj_divert_rule_tun_dropped_packets_total{set=\"0\",worker=\"1\",rule=\"rule2\"} 2\n",
            "cj_divert_rule_tun_dropped_bytes_total{set=\"0\",worker=\"1\",rule=\"rule2\"} 200\n",
            "cj_divert_rule_info{set=\"0\",rule=\"rule2\",line=\"3\",text=\"divert container \\\"web\\\"\"} 1\n",
            "cj_metrics_unreadable_files 0\n",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        // Slots neither listed nor counting are left out.
        assert!(!text.contains("rule=\"rule3\""), "{text}");
        assert!(!text.contains("worker=\"1\",rule=\"other\""), "{text}");
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut unique = types.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(types.len(), unique.len(), "{text}");
        // A page without its listing: the counting slots, and the listing counted unreadable.
        std::fs::remove_file(dir.path().join("divert-rules")).unwrap();
        let text = Snapshot::read(dir.path(), None, 0).encode();
        assert!(text.contains("cj_metrics_unreadable_files 1\n"), "{text}");
        assert!(!text.contains("worker=\"0\",rule=\"rule2\""), "{text}");
        assert!(!text.contains("cj_divert_rule_info"), "{text}");
    }

    #[test]
    fn a_trickling_client_does_not_stall_other_clients() {
        let dir = tempfile::tempdir().unwrap();
        let (_control, asker) = crate::control::Control::new();
        let ep = start("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf(), asker).unwrap();
        let addr = ep.addr;
        let slow = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            for b in b"GET /other HTTP/1.1\r\nX: abcdefghij" {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(400));
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let t0 = std::time::Instant::now();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(b"GET /other HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        let waited = t0.elapsed();
        let slow_still_sending = !slow.is_finished();
        slow.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
        // Answered in milliseconds beside the trickling client (which would take 14 s).
        assert!(slow_still_sending, "answered only after the trickling client ended ({waited:?})");
        assert!(waited < Duration::from_secs(6), "a well-behaved client waited {waited:?} behind a trickling one");
    }

    #[test]
    fn a_trickling_client_is_cut_off_at_the_request_deadline_though_it_keeps_sending() {
        let dir = tempfile::tempdir().unwrap();
        let (_control, asker) = crate::control::Control::new();
        let ep = start("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf(), asker).unwrap();
        conn::tests::assert_cut_off_while_trickling(TcpStream::connect(ep.addr).unwrap(), b"x");
    }

    #[test]
    fn planted_copies_under_other_names_add_no_series_and_foreign_files_are_counted_unreadable() {
        use station::naming::{set_record_queue_path, set_worker_stats_path, RECORD_SLOT_SIZE, WORKER_COUNTERS};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let page = CounterPage::open_or_create(&set_worker_stats_path(d, 0, 0), WORKER_COUNTERS).unwrap();
        page.set(WORKER_COUNTERS.iter().position(|&n| n == "packets").unwrap(), 7);
        let spec = shmq::QueueSpec { slot_size: RECORD_SLOT_SIZE, capacity: 16 };
        drop(QueueFile::open_or_create(&set_record_queue_path(d, 0, 0), spec).unwrap());
        crate::divert_pages::tests::page(d, "divert-0", &[(0, 0, 3)]);
        std::fs::write(d.join("divert-rules"), "# generation 1 of /r\nrule1 line 1 mirror port 53\n").unwrap();
        // What a member of the station's group can do in the cluster directory: copy a file under another name.
        for (from, to) in [
            ("stats-worker-0", "stats-worker-0-0"),
            ("stats-worker-0", "stats-worker-00"),
            ("rec-0", "rec-0-0"),
            ("rec-0", "rec-+0"),
            ("divert-0", "divert-0-0"),
        ] {
            std::fs::copy(d.join(from), d.join(to)).unwrap();
        }
        let text = Snapshot::read(d, None, 0).encode();
        for once in [
            "cj_worker_packets_total{set=\"0\",worker=\"0\"} 7\n",
            "cj_record_queue_capacity{set=\"0\",queue=\"0\"} 16\n",
            "cj_divert_rule_mirrored_packets_total{set=\"0\",worker=\"0\",rule=\"rule1\"} 3\n",
        ] {
            assert_eq!(text.matches(once).count(), 1, "{once}\n{text}");
        }
        assert!(text.contains("cj_metrics_unreadable_files 0\n"), "{text}");
        // A page of a user that is neither the station's nor root: not read, counted.
        if nix::unistd::geteuid().is_root() {
            let foreign = set_worker_stats_path(d, 0, 1);
            let page = CounterPage::open_or_create(&foreign, WORKER_COUNTERS).unwrap();
            page.set(WORKER_COUNTERS.iter().position(|&n| n == "packets").unwrap(), 9);
            std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
            let text = Snapshot::read(d, None, 0).encode();
            assert!(!text.contains("worker=\"1\""), "{text}");
            assert!(text.contains("cj_metrics_unreadable_files 1\n"), "{text}");
        } else {
            eprintln!("not root: the foreign-owner part needs chown");
        }
        // However the samples come, a series is there once.
        let mut s = Snapshot::default();
        s.push("cj_x", "x", Kind::Gauge, vec![("a", "1".into())], 1);
        s.push("cj_x", "x", Kind::Gauge, vec![("a", "1".into())], 2);
        assert_eq!(s.encode().matches("cj_x{").count(), 1);
    }
}
