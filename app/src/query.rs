//! `cj-app query`: ask the running app for its current aggregate, as
//! `pmacct -s` asks pmacctd, over a Unix socket in the cluster directory.
//!
//! The running app listens on `<cluster dir>/app.sock` (`app-<set>.sock` for
//! `CJ_QUEUE_SET` > 0) on a thread of its own (`cj-query`). The protocol is
//! one JSON line each way, then the app closes the connection:
//!
//! ```text
//! -> {"version":1,"top":10,"by":"bytes","addr":"10.0.0.1","port":443,"proto":"tcp","container":"web"}
//! <- {"version":1,"ok":true,"table":"main","columns":["src_host",...],"rows":[{"src_host":"10.0.0.1",...,
//!     "packets":3,"bytes":180,"frame_bytes":222,"flows":1}],"matched":{"rows":1,"packets":3,...},
//!     "table_rows":2,"rows_overflowed":0,"totals":{"records":...},"ended":false}
//! <- {"version":1,"ok":false,"error":"..."}
//! ```
//!
//! Every request field but `version` may be left out (`by` defaults to
//! `bytes`, no `top` means every row). Key columns are strings exactly as
//! `flows.csv` prints them; the counters are those of `flows.csv`.
//!
//! Guarantees:
//! - The answer is the app's table as it stands between two polls of the
//!   record queues (see [`crate::control`]): what `flows.csv` would hold if
//!   it were written at that moment. A query of a stopped pipeline (every
//!   record drained) equals the files the app then writes.
//! - `addr`, `port` and `proto` match either end of a row (src or dst);
//!   `container` matches either end's container in the main table when it is
//!   aggregated by `src_container`/`dst_container`, else that container's own
//!   table (`[containers] flow_logs = true`); a filter the table cannot
//!   answer (no host column for `addr`, ...) is an error saying what to
//!   configure, never an empty answer. The overflow row `other` matches no
//!   filter. `matched` sums every matching row, before `top`.
//! - The socket is created safely in the checked cluster directory
//!   ([`shmq::prepare_dir`]): with mode 0660 (the queue files' mode, so
//!   members of the station's group may query); anything else found under its
//!   name (a file, a link, a socket of another user) is refused with one
//!   line; a socket of our own user is removed only when nothing answers on
//!   it (a stale one of an app that died), and one that answers means another
//!   app runs there, which is refused. The app removes its socket when it
//!   ends, if it is still its own.
//! - A client must send its whole request within 5 s of being accepted,
//!   however it trickles, and may send at most 64 KiB; the answer must be
//!   taken within 30 s in all. Each connection is served on a thread of its
//!   own, at most 8 at once (more are closed at once, unread, and counted in
//!   `cj_app_connections_refused_total{endpoint="query"}`), so a slow or stuck
//!   client costs nothing but its own connection ([`crate::conn`]). The
//!   connection threads only read the request, hand it to the main loop
//!   ([`crate::control`]) and write its answer.
//!
//! - The client (`cj-app query`) trusts only an app of the station's user:
//!   the socket must be owned by, and the process answering on it
//!   (`SO_PEERCRED`) run as, root, the cluster directory's owner or the
//!   client's own user; anything else is refused with one line, so a member
//!   of the station's group cannot answer in the app's place (the directory
//!   is sticky, [`shmq::prepare_dir`], so it cannot remove the app's socket
//!   either). It reads at most 1 GiB of answer, and says so past that.
//!
//! Not guaranteed: an answer with every row of a table of a million rows is
//! large (hundreds of MB of JSON): use `top`. An app run as a user that is
//! neither root nor the cluster directory's owner answers only that user
//! and root.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use station::proto::proto_name;

use crate::aggregate::{Accounts, Aggregate, Counters, Key};
use crate::conn;
use crate::control::{Asker, ASK_TIMEOUT};
use crate::settings::{Primitive, Primitives, SettingsError};
use crate::sinks;

/// The protocol's version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Mode of the socket (as the queue files).
pub const SOCKET_MODE: u32 = 0o660;

/// Largest request line.
const MAX_REQUEST: u64 = 64 * 1024;

/// Time to write an answer, whole (a client reading slowly is cut off then).
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// The socket of the app reading queue set `set` in `cluster_dir`.
pub fn socket_path(cluster_dir: &Path, set: u32) -> PathBuf {
    if set == 0 {
        cluster_dir.join("app.sock")
    } else {
        cluster_dir.join(format!("app-{set}.sock"))
    }
}

/// Which counter orders the rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// IP bytes (BYTES), descending.
    #[default]
    Bytes,
    /// Packets, descending.
    Packets,
}

/// A query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// At most this many rows (none or 0: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
    /// Order.
    #[serde(default)]
    pub by: By,
    /// Rows whose source or destination is this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    /// Rows whose source or destination port is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Rows of this protocol (pmacct's name, e.g. `tcp`, or a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Rows of this container (by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// One row: its key columns (by primitive name, as `flows.csv` prints them) and counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Key columns.
    #[serde(flatten)]
    pub key: BTreeMap<String, String>,
    /// PACKETS.
    pub packets: u64,
    /// BYTES (IP bytes).
    pub bytes: u64,
    /// FRAME_BYTES.
    pub frame_bytes: u64,
    /// FLOWS.
    pub flows: u64,
}

/// Sums over the matching rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matched {
    /// Matching rows (before `top`).
    pub rows: usize,
    /// Their packets.
    pub packets: u64,
    /// Their IP bytes.
    pub bytes: u64,
    /// Their frame bytes.
    pub frame_bytes: u64,
    /// Their flows.
    pub flows: u64,
}

/// The answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// False: `error` says why.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `main`, or `container NAME` (its flow log).
    #[serde(default)]
    pub table: String,
    /// Key columns, in `flows.csv` order (primitive names).
    #[serde(default)]
    pub columns: Vec<String>,
    /// The rows, ordered and cut to `top`.
    #[serde(default)]
    pub rows: Vec<Row>,
    /// Sums over every matching row.
    #[serde(default)]
    pub matched: Matched,
    /// Rows of the table asked.
    #[serde(default)]
    pub table_rows: usize,
    /// Record directions added to overflow rows, every table (each active-timeout part of a flow again).
    #[serde(default)]
    pub rows_overflowed: u64,
    /// The app's totals (summary.json's `totals`).
    #[serde(default)]
    pub totals: serde_json::Value,
    /// Every record queue has ended (the figures are final).
    #[serde(default)]
    pub ended: bool,
}

impl Response {
    fn error(message: String) -> Self {
        Response { version: PROTOCOL_VERSION, ok: false, error: Some(message), ..Response::default() }
    }
}

/// A filter as the key can test it.
struct Filter {
    addr: Option<(u8, [u8; 16])>,
    port: Option<u16>,
    proto: Option<String>,
    container: Option<String>,
}

impl Filter {
    fn any(&self) -> bool {
        self.addr.is_some() || self.port.is_some() || self.proto.is_some() || self.container.is_some()
    }

    fn matches(&self, p: Primitives, k: &Key) -> bool {
        if k.overflow {
            return !self.any();
        }
        if let Some((v, a)) = self.addr {
            let hit = k.ip_version == v
                && ((p.has(Primitive::SrcHost) && k.src == a) || (p.has(Primitive::DstHost) && k.dst == a));
            if !hit {
                return false;
            }
        }
        if let Some(port) = self.port {
            if !((p.has(Primitive::SrcPort) && k.src_port == port) || (p.has(Primitive::DstPort) && k.dst_port == port))
            {
                return false;
            }
        }
        if let Some(proto) = &self.proto {
            let number = proto.parse::<u8>().ok();
            if !(proto_name(k.proto).eq_ignore_ascii_case(proto) || number == Some(k.proto)) {
                return false;
            }
        }
        if let Some(name) = &self.container {
            let text = station::record::text_of;
            if !((p.has(Primitive::SrcContainer) && text(&k.src_container.bytes()) == name)
                || (p.has(Primitive::DstContainer) && text(&k.dst_container.bytes()) == name))
            {
                return false;
            }
        }
        true
    }
}

/// The record form of an address (as `Key` keeps it).
fn key_addr(a: IpAddr) -> (u8, [u8; 16]) {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (4, b)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    }
}

/// Answers `req` from the app's tables; `ended`: every record queue ended.
pub fn answer(acc: &Accounts, req: &Request, ended: bool) -> Response {
    if req.version != PROTOCOL_VERSION {
        return Response::error(format!(
            "protocol version {} asked, this cj-app speaks version {PROTOCOL_VERSION}: use the cj-app of the same build",
            req.version
        ));
    }
    let main = acc.main_table();
    let mp = main.primitives();
    let mut filter = Filter { addr: req.addr.map(key_addr), port: req.port, proto: req.proto.clone(), container: None };
    let (label, primitives, tables): (String, Primitives, Vec<&Aggregate>) = match &req.container {
        None => ("main".to_owned(), mp, vec![main]),
        Some(name) if mp.has(Primitive::SrcContainer) || mp.has(Primitive::DstContainer) => {
            filter.container = Some(name.clone());
            ("main".to_owned(), mp, vec![main])
        }
        Some(name) => match acc.containers().logs() {
            Some(logs) => {
                let tables: Vec<&Aggregate> = logs.iter().filter(|((n, _), _)| n == name).map(|(_, t)| t).collect();
                if tables.is_empty() {
                    let seen: Vec<&str> = logs.keys().map(|(n, _)| n.as_str()).collect();
                    return Response::error(format!(
                        "no container {name:?} in the app's per-container tables (containers with flows: {})",
                        if seen.is_empty() { "none yet".to_owned() } else { seen.join(", ") }
                    ));
                }
                (format!("container {name}"), Primitives::default_set(), tables)
            }
            None => {
                return Response::error(format!(
                    "--container {name:?}: this app keeps no per-container rows; aggregate by src_container,\
                     dst_container (--aggregate) or set [containers] flow_logs = true in its TOML"
                ))
            }
        },
    };
    let needs = [
        (filter.addr.is_some(), [Primitive::SrcHost, Primitive::DstHost], "--addr", "src_host or dst_host"),
        (filter.port.is_some(), [Primitive::SrcPort, Primitive::DstPort], "--port", "src_port or dst_port"),
        (filter.proto.is_some(), [Primitive::Proto, Primitive::Proto], "--proto", "proto"),
    ];
    for (asked, cols, flag, names) in needs {
        if asked && !cols.iter().any(|c| primitives.has(*c)) {
            return Response::error(format!(
                "{flag}: the {label} table is aggregated by {primitives}, without {names}; run the app with \
                 --aggregate including {names} to filter by it"
            ));
        }
    }

    // Matching rows: borrowed from the one table (its keys are unique), merged
    // by key only when a container has several tables. The answer runs on the
    // main loop, between two intakes: no copy of the table, and for `--top N`
    // only the N first are sorted (a selection puts them first in O(rows)).
    let merged: HashMap<Key, Counters>;
    let mut table_rows = 0;
    let mut rows: Vec<(&Key, &Counters)> = match tables.as_slice() {
        [one] => {
            table_rows = one.len();
            one.rows().filter(|(k, _)| filter.matches(primitives, k)).collect()
        }
        _ => {
            let mut found: HashMap<Key, Counters> = HashMap::new();
            for t in &tables {
                table_rows += t.len();
                for (k, c) in t.rows() {
                    if filter.matches(primitives, k) {
                        let e = found.entry(*k).or_default();
                        e.packets += c.packets;
                        e.ip_bytes += c.ip_bytes;
                        e.frame_bytes += c.frame_bytes;
                        e.flows += c.flows;
                    }
                }
            }
            merged = found;
            merged.iter().collect()
        }
    };
    let mut matched = Matched { rows: rows.len(), ..Matched::default() };
    for (_, c) in &rows {
        matched.packets += c.packets;
        matched.bytes += c.ip_bytes;
        matched.frame_bytes += c.frame_bytes;
        matched.flows += c.flows;
    }
    // Largest first, then by key: a total order (keys are unique), so the
    // selection and the sort give the rows a full sort would, in its order.
    let by = req.by;
    let order = |a: &(&Key, &Counters), b: &(&Key, &Counters)| {
        let (x, y) = match by {
            By::Bytes => (a.1.ip_bytes, b.1.ip_bytes),
            By::Packets => (a.1.packets, b.1.packets),
        };
        y.cmp(&x).then_with(|| a.0.cmp(b.0))
    };
    if let Some(top) = req.top.filter(|&n| n > 0 && n < rows.len()) {
        rows.select_nth_unstable_by(top - 1, order);
        rows.truncate(top);
    }
    rows.sort_unstable_by(order);
    let rows = rows
        .iter()
        .map(|(k, c)| Row {
            key: primitives.iter().map(|p| (p.name().to_owned(), sinks::field(p, k))).collect(),
            packets: c.packets,
            bytes: c.ip_bytes,
            frame_bytes: c.frame_bytes,
            flows: c.flows,
        })
        .collect();
    Response {
        version: PROTOCOL_VERSION,
        ok: true,
        error: None,
        table: label,
        columns: primitives.names().into_iter().map(str::to_owned).collect(),
        rows,
        matched,
        table_rows,
        rows_overflowed: acc.rows_overflowed(),
        totals: serde_json::to_value(acc.main_totals()).unwrap_or_default(),
        ended,
    }
}

/// Every way the query socket or client fails; each `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The cluster directory fails its checks.
    #[error("{0}")]
    Dir(shmq::QueueError),
    /// Something that is not our socket is where the socket goes.
    #[error("refusing {}: {what} where cj-app's query socket goes (owner uid {uid}, mode {mode:04o}); remove it when no cj-app runs", path.display())]
    Planted {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: String,
        /// Its owner.
        uid: u32,
        /// Its mode.
        mode: u32,
    },
    /// Another app answers on the socket.
    #[error("another cj-app answers queries on {}: stop it, or run this one with another CJ_CLUSTER_ID, CJ_SHM_DIR or CJ_QUEUE_SET", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// A system call on the socket failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What was done.
        op: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The client cannot reach the app.
    #[error("cannot reach cj-app at {}: {source}; is cj-app running with the same CJ_CLUSTER_ID, CJ_SHM_DIR and CJ_QUEUE_SET?", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The answer is not the protocol's.
    #[error("cj-app at {} answered something that is not a query answer ({reason}); use cj-app query of the same build", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The app refused the query.
    #[error("{0}")]
    Refused(String),
    /// What answers on the socket is not the station's.
    #[error("refusing {}: {what}, not the station's user (uid {station}) or root; a member of the station's group may have put it there: stop that, remove it as root and restart cj-app", path.display())]
    Untrusted {
        /// The socket.
        path: PathBuf,
        /// What was found.
        what: String,
        /// The station's user (the cluster directory's owner).
        station: u32,
    },
    /// The answer is longer than the client reads.
    #[error("cj-app at {} answered more than {} MiB; ask for fewer rows (--top N)", path.display(), MAX_ANSWER >> 20)]
    TooLarge {
        /// The socket.
        path: PathBuf,
    },
}

/// Longest answer the client reads.
const MAX_ANSWER: u64 = 1 << 30;

/// The app's listening socket; removed on drop if it is still this one.
#[derive(Debug)]
pub struct Socket {
    listener: UnixListener,
    path: PathBuf,
    ino: u64,
}

impl Socket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket() && m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates the query socket of set `set` in `cluster_dir` (see the module
/// doc for what is checked).
///
/// # Errors
/// The directory fails its checks, something else is under the socket's
/// name, another app answers there, or the socket cannot be created.
pub fn listen(cluster_dir: &Path, set: u32) -> Result<Socket, QueryError> {
    shmq::prepare_dir(cluster_dir).map_err(QueryError::Dir)?;
    let path = socket_path(cluster_dir, set);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(QueryError::Io { path, op: "stat", source }),
        Ok(meta) => {
            let me = nix::unistd::geteuid().as_raw();
            let t = meta.file_type();
            let what = if t.is_symlink() {
                Some("a symbolic link".to_owned())
            } else if !t.is_socket() {
                Some(if t.is_dir() { "a directory" } else { "a file that is not a socket" }.to_owned())
            } else if meta.uid() != me {
                Some(format!("a socket of uid {}, not this process's user (uid {me})", meta.uid()))
            } else {
                None
            };
            if let Some(what) = what {
                return Err(QueryError::Planted { path, what, uid: meta.uid(), mode: meta.mode() & 0o7777 });
            }
            // Our own socket: a live app answers, a stale one refuses the connection.
            if UnixStream::connect(&path).is_ok() {
                return Err(QueryError::InUse { path });
            }
            std::fs::remove_file(&path).map_err(|source| QueryError::Io {
                path: path.clone(),
                op: "remove",
                source,
            })?;
        }
    }
    let listener =
        UnixListener::bind(&path).map_err(|source| QueryError::Io { path: path.clone(), op: "bind", source })?;
    // bind(2) applied the umask; the socket is ours and new, in a directory only
    // the station's user and group can change.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(|source| QueryError::Io {
        path: path.clone(),
        op: "chmod",
        source,
    })?;
    let ino = std::fs::symlink_metadata(&path)
        .map_err(|source| QueryError::Io { path: path.clone(), op: "stat", source })?
        .ino();
    Ok(Socket { listener, path, ino })
}

/// Serves queries on `socket` on a thread named `cj-query`, asking the main loop through `asker`.
///
/// # Errors
/// The listener cannot be shared with the thread, or the thread cannot start.
pub fn serve(socket: &Socket, asker: Asker) -> Result<(), QueryError> {
    let listener = socket.listener.try_clone().map_err(|source| QueryError::Io {
        path: socket.path.clone(),
        op: "dup",
        source,
    })?;
    let path = socket.path.clone();
    std::thread::Builder::new()
        .name("cj-query".into())
        .spawn(move || {
            conn::serve_each(conn::Endpoint::Query, listener.incoming(), move |stream| {
                // A client that goes away or runs out of time is its own problem.
                let _ = handle(stream, &asker);
            })
        })
        .map(|_| ())
        .map_err(|source| QueryError::Io { path, op: "start the query thread for", source })
}

/// Reads one request line (at most [`MAX_REQUEST`] bytes, all within
/// [`conn::REQUEST_DEADLINE`]), has the main loop answer it and writes the
/// answer (within [`ANSWER_DEADLINE`]).
fn handle(stream: UnixStream, asker: &Asker) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(conn::Timed::new(&stream, conn::REQUEST_DEADLINE).take(MAX_REQUEST)).read_line(&mut line)?;
    if line.trim().is_empty() {
        // A probe (another app checking for a live socket), or a client that gave up.
        return Ok(());
    }
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => asker.query(req).unwrap_or_else(|| {
            Response::error(format!(
                "the app did not answer within {}s (it may be writing a large table): ask again",
                ASK_TIMEOUT.as_secs()
            ))
        }),
        Err(e) => Response::error(format!("not a query request ({e}); use cj-app query of the same build")),
    };
    let mut text = serde_json::to_string(&response).unwrap_or_default();
    text.push('\n');
    let mut w = conn::Timed::new(&stream, ANSWER_DEADLINE);
    w.write_all(text.as_bytes())?;
    w.flush()
}

/// What `cj-app query` was asked on its command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryArgs {
    /// The request.
    pub request: Request,
    /// Print the answer's JSON line instead of a table.
    pub json: bool,
}

/// Reads the flags of `cj-app query` (station::cli has checked that each is a
/// flag of `query` and has its value).
///
/// # Errors
/// A malformed value; each one line naming the fix.
pub fn from_invocation(inv: &station::cli::Invocation) -> Result<QueryArgs, SettingsError> {
    let usage = |m: String| SettingsError::Usage(m);
    let mut q = QueryArgs { request: Request { version: PROTOCOL_VERSION, ..Request::default() }, json: false };
    for (flag, value) in &inv.flags {
        let value = value.clone().unwrap_or_default();
        let v = value.trim();
        match *flag {
            "--json" => q.json = true,
            "--top" => {
                q.request.top =
                    Some(v.parse().map_err(|_| {
                        usage(format!("--top {value:?}: expected a whole number of rows (0: every row)"))
                    })?)
            }
            "--by" => {
                q.request.by = match v {
                    "bytes" => By::Bytes,
                    "packets" => By::Packets,
                    _ => return Err(usage(format!("--by {value:?}: expected bytes or packets"))),
                }
            }
            "--addr" => {
                q.request.addr = Some(v.parse().map_err(|_| {
                    usage(format!(
                        "--addr {value:?}: expected an IPv4 or IPv6 address, such as 10.0.0.1 or 2001:db8::1"
                    ))
                })?)
            }
            "--port" => {
                q.request.port = Some(
                    v.parse()
                        .map_err(|_| usage(format!("--port {value:?}: expected a port number from 0 to 65535")))?,
                )
            }
            "--proto" if v.is_empty() => {
                return Err(usage("--proto \"\": expected a protocol name (tcp, udp, icmp, ...) or number".into()))
            }
            "--proto" => q.request.proto = Some(v.to_owned()),
            "--container" if value.is_empty() => {
                return Err(usage("--container \"\": expected a container name".into()))
            }
            "--container" => q.request.container = Some(value),
            _ => {}
        }
    }
    Ok(q)
}

/// Asks the app of `cfg`'s cluster and queue set; returns what to print.
///
/// # Errors
/// No app answers, the answer is not the protocol's, or the app refused the query.
pub fn client(cluster_dir: &Path, set: u32, args: &QueryArgs) -> Result<String, QueryError> {
    let path = socket_path(cluster_dir, set);
    let io = |op: &'static str| {
        let path = path.clone();
        move |source| QueryError::Io { path, op, source }
    };
    let trust =
        crate::status::Trust::of(cluster_dir).map_err(|source| QueryError::Connect { path: path.clone(), source })?;
    let (station, trusted) = (trust.station, |uid: u32| trust.trusts(uid));
    let untrusted = |what: String| QueryError::Untrusted { path: path.clone(), what, station };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if !m.file_type().is_socket() => return Err(untrusted("not a socket".to_owned())),
        Ok(m) if !trusted(m.uid()) => return Err(untrusted(format!("a socket owned by uid {}", m.uid()))),
        _ => {}
    }
    let stream = UnixStream::connect(&path).map_err(|source| QueryError::Connect { path: path.clone(), source })?;
    // Whoever made the name, the process answering must run as the station's user.
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| io("read the peer credentials of")(e.into()))?;
    if !trusted(peer.uid()) {
        return Err(untrusted(format!("answered by pid {} of uid {}", peer.pid(), peer.uid())));
    }
    stream.set_read_timeout(Some(ASK_TIMEOUT + Duration::from_secs(20))).map_err(io("set a timeout on"))?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).map_err(io("set a timeout on"))?;
    let mut line = serde_json::to_string(&args.request).unwrap_or_default();
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io("send the query to"))?;
    let answer = read_answer(&stream, MAX_ANSWER).map_err(|e| match e {
        Some(source) => QueryError::Io { path: path.clone(), op: "read the answer from", source },
        None => QueryError::TooLarge { path: path.clone() },
    })?;
    let response: Response = serde_json::from_str(answer.trim())
        .map_err(|e| QueryError::Protocol { path: path.clone(), reason: e.to_string() })?;
    if !response.ok {
        return Err(QueryError::Refused(response.error.unwrap_or_else(|| "the app refused the query".to_owned())));
    }
    if args.json {
        let mut s = answer.trim().to_owned();
        s.push('\n');
        return Ok(s);
    }
    Ok(table_text(&response, args.request.by))
}

/// Reads the whole answer, at most `max` bytes (`Err(None)`: more came).
fn read_answer(stream: impl Read, max: u64) -> Result<String, Option<std::io::Error>> {
    let mut answer = String::new();
    stream.take(max + 1).read_to_string(&mut answer).map_err(Some)?;
    if answer.len() as u64 > max {
        return Err(None);
    }
    Ok(answer)
}

/// The answer as an aligned table, then the sums and totals.
pub fn table_text(r: &Response, by: By) -> String {
    let header = |c: &str| Primitive::parse(c).map_or_else(|| c.to_uppercase(), |p| p.csv_header().to_owned());
    let mut lines: Vec<Vec<String>> = vec![r
        .columns
        .iter()
        .map(|c| header(c))
        .chain(["PACKETS", "BYTES", "FRAME_BYTES", "FLOWS"].map(String::from))
        .collect()];
    for row in &r.rows {
        lines.push(
            r.columns
                .iter()
                .map(|c| row.key.get(c).cloned().unwrap_or_default())
                .chain([row.packets, row.bytes, row.frame_bytes, row.flows].map(|n| n.to_string()))
                .collect(),
        );
    }
    let n = lines[0].len();
    let widths: Vec<usize> = (0..n).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (li, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if li > 0 && i >= r.columns.len() {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    let m = &r.matched;
    let _ = writeln!(
        out,
        "{} of {} matching row(s), by {}; matching: {} packets, {} bytes (IP), {} frame bytes, {} flows",
        r.rows.len(),
        m.rows,
        match by {
            By::Bytes => "bytes",
            By::Packets => "packets",
        },
        m.packets,
        m.bytes,
        m.frame_bytes,
        m.flows
    );
    let t = |k: &str| r.totals.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let _ = writeln!(
        out,
        "table {}: {} row(s), {} direction(s) in `other`; app totals: {} records, {} flows, {} packets, {} bytes \
         (IP), {} non-IP frames, {} malformed frames; {}",
        r.table,
        r.table_rows,
        r.rows_overflowed,
        t("records"),
        t("flows"),
        t("packets"),
        t("bytes"),
        t("non_ip_frames"),
        t("malformed_frames"),
        if r.ended { "every record queue ended" } else { "still running" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::ip_record;
    use station::record::EndReason;

    fn accounts() -> Accounts {
        let mut acc = Accounts::new(Primitives::default_set(), &[0], false);
        acc.add(0, &ip_record([10, 0, 0, 1], 1234, [10, 0, 0, 2], 80, 6, (3, 180), (2, 1500), EndReason::EndOfFlow));
        acc.add(0, &ip_record([10, 0, 0, 3], 53, [10, 0, 0, 1], 5353, 17, (9, 90), (0, 0), EndReason::IdleTimeout));
        acc
    }

    fn ask(req: Request) -> Response {
        answer(&accounts(), &Request { version: 1, ..req }, false)
    }

    #[test]
    fn a_query_without_filters_returns_every_row_by_bytes_with_totals() {
        let r = ask(Request::default());
        assert!(r.ok, "{r:?}");
        assert_eq!(r.columns, ["src_host", "dst_host", "src_port", "dst_port", "proto"]);
        assert_eq!(r.rows.len(), 3);
        assert_eq!(r.rows[0].key["src_host"], "10.0.0.2");
        assert_eq!(r.rows[0].key["proto"], "tcp");
        assert_eq!((r.rows[0].packets, r.rows[0].bytes), (2, 1500));
        assert_eq!(r.matched, Matched { rows: 3, packets: 14, bytes: 1770, frame_bytes: 1770 + 14 * 14, flows: 3 });
        assert_eq!(r.totals["packets"], 14);
        // Round trip through the wire form.
        let back: Response = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn filters_match_either_end_and_top_cuts_after_the_sums() {
        let by_addr = ask(Request { addr: Some("10.0.0.3".parse().unwrap()), ..Request::default() });
        assert_eq!(by_addr.rows.len(), 1);
        assert_eq!(by_addr.rows[0].key["src_port"], "53");
        let by_port = ask(Request { port: Some(80), ..Request::default() });
        assert_eq!(by_port.matched.rows, 2);
        let by_proto = ask(Request { proto: Some("UDP".into()), ..Request::default() });
        assert_eq!(by_proto.matched.packets, 9);
        assert_eq!(ask(Request { proto: Some("17".into()), ..Request::default() }).matched.packets, 9);
        let top = ask(Request { top: Some(1), by: By::Packets, ..Request::default() });
        assert_eq!(top.rows.len(), 1);
        assert_eq!(top.rows[0].packets, 9);
        assert_eq!(top.matched.rows, 3);
        let text = table_text(&top, By::Packets);
        assert!(text.starts_with("SRC_IP    DST_IP    SRC_PORT  DST_PORT  PROTOCOL  PACKETS  BYTES"), "{text}");
        assert!(text.contains("1 of 3 matching row(s), by packets"), "{text}");
    }

    #[test]
    fn top_n_is_the_first_n_rows_of_the_full_answer_whatever_n_and_ties() {
        // 300 flows whose bytes and packets repeat (ties broken by the key).
        let mut acc = Accounts::new(Primitives::default_set(), &[0], false);
        for i in 0..300u16 {
            let (pk, by) = (u64::from(i % 7) + 1, u64::from(i % 11) * 100 + 60);
            let host = [10, 0, (i / 200) as u8, (i % 200) as u8];
            acc.add(0, &ip_record(host, 1000 + i, [10, 9, 9, 9], 443, 6, (pk, by), (0, 0), EndReason::EndOfFlow));
        }
        for by in [By::Bytes, By::Packets] {
            let all = answer(&acc, &Request { version: 1, by, ..Request::default() }, false);
            assert_eq!(all.rows.len(), 300);
            // The full answer is in order: larger first, then the key.
            let value = |r: &Row| if by == By::Bytes { r.bytes } else { r.packets };
            assert!(all.rows.windows(2).all(|w| value(&w[0]) >= value(&w[1])), "sorted by {by:?}");
            for n in [1, 2, 7, 50, 299, 300, 301] {
                let top = answer(&acc, &Request { version: 1, by, top: Some(n), ..Request::default() }, false);
                assert_eq!(top.rows, all.rows[..n.min(300)], "--top {n} by {by:?}");
                assert_eq!(top.matched, all.matched);
            }
        }
    }

    #[test]
    fn a_filter_the_table_cannot_answer_is_an_error_naming_the_fix() {
        let mut acc = Accounts::new(Primitives::parse_list(["proto"], "t").unwrap(), &[0], false);
        acc.add(0, &ip_record([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, 6, (1, 40), (0, 0), EndReason::EndOfFlow));
        let r =
            answer(&acc, &Request { version: 1, addr: Some("10.0.0.1".parse().unwrap()), ..Request::default() }, false);
        assert_eq!(
            r.error.as_deref(),
            Some(
                "--addr: the main table is aggregated by proto, without src_host or dst_host; run the app with \
                 --aggregate including src_host or dst_host to filter by it"
            )
        );
        let r = answer(&acc, &Request { version: 1, container: Some("web".into()), ..Request::default() }, false);
        assert!(r.error.unwrap().contains("set [containers] flow_logs = true"));
        let r = answer(&acc, &Request { version: 2, ..Request::default() }, false);
        assert!(!r.ok);
    }

    #[test]
    fn the_socket_is_created_0660_and_a_planted_file_or_live_app_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("conjure-1");
        let s = listen(&dir, 0).unwrap();
        let meta = std::fs::symlink_metadata(s.path()).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, SOCKET_MODE);
        // A second app on the same socket: refused (the first still listens).
        let e = listen(&dir, 0).unwrap_err().to_string();
        assert!(e.starts_with("another cj-app answers queries on "), "{e}");
        drop(s);
        assert!(!socket_path(&dir, 0).exists(), "removed at the end");
        // A stale socket of ours (nothing listens) is replaced.
        drop(UnixListener::bind(socket_path(&dir, 0)).unwrap());
        let s = listen(&dir, 0).unwrap();
        drop(s);
        // A planted file or link is refused, and left alone.
        std::fs::write(socket_path(&dir, 0), "x").unwrap();
        let e = listen(&dir, 0).unwrap_err().to_string();
        assert!(e.contains("a file that is not a socket where cj-app's query socket goes"), "{e}");
        std::fs::remove_file(socket_path(&dir, 0)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", socket_path(&dir, 3)).unwrap();
        let e = listen(&dir, 3).unwrap_err().to_string();
        assert!(e.contains("app-3.sock: a symbolic link"), "{e}");
        assert!(Path::new("/etc/passwd").exists());
    }

    #[test]
    fn a_trickling_query_client_does_not_stall_other_clients() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("conjure-1");
        let s = listen(&dir, 0).unwrap();
        let (_control, asker) = crate::control::Control::new();
        serve(&s, asker).unwrap();
        let path = s.path().to_path_buf();
        let p = path.clone();
        let slow = std::thread::spawn(move || {
            let mut c = UnixStream::connect(&p).unwrap();
            for _ in 0..40 {
                if c.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(400));
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let t0 = std::time::Instant::now();
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(b"not json\n").unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        let waited = t0.elapsed();
        let slow_still_connected = !slow.is_finished();
        slow.join().unwrap();
        assert!(answer.contains("not a query request"), "{answer:?}");
        // Answered in milliseconds, while the trickling client is still connected (it is cut off at 5 s).
        assert!(slow_still_connected, "answered only after the trickling client was gone ({waited:?})");
        assert!(waited < Duration::from_secs(6), "a query waited {waited:?} behind a client trickling its request");
    }

    #[test]
    fn a_trickling_query_client_is_cut_off_at_the_request_deadline_though_it_keeps_sending() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("conjure-1");
        let s = listen(&dir, 0).unwrap();
        let (_control, asker) = crate::control::Control::new();
        serve(&s, asker).unwrap();
        conn::tests::assert_cut_off_while_trickling(UnixStream::connect(s.path()).unwrap(), b" ");
    }

    #[test]
    fn the_client_refuses_a_socket_of_another_user_and_an_answer_too_large() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("conjure-1");
        let s = listen(&dir, 0).unwrap();
        let (_control, asker) = crate::control::Control::new();
        serve(&s, asker).unwrap();
        let args = QueryArgs { request: Request { version: PROTOCOL_VERSION, ..Request::default() }, json: true };
        if nix::unistd::geteuid().is_root() {
            // As a member of the station's group would leave it: a socket of its own under app.sock.
            std::os::unix::fs::chown(s.path(), Some(65534), None).unwrap();
            let e = client(&dir, 0, &args).unwrap_err().to_string();
            assert!(e.starts_with(&format!("refusing {}: a socket owned by uid 65534, ", s.path().display())), "{e}");
            assert!(e.ends_with("remove it as root and restart cj-app"), "{e}");
        } else {
            eprintln!("not root: the foreign-owner part needs chown");
        }
        assert_eq!(read_answer(&b"12345"[..], 5).unwrap(), "12345");
        assert!(matches!(read_answer(&b"123456"[..], 5), Err(None)));
    }
}
