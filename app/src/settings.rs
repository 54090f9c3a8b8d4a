//! The app's own settings: the TOML file named by `CJ_STATION_CONFIG`
//! (optional) and the command-line flags that override it.
//!
//! Guarantees: every field has a documented default, so an absent file or an
//! absent section means the defaults below; an unknown key, an unknown
//! aggregation primitive or an unknown output format is an error whose one-line
//! message names the offending value, where it came from, and what is valid.
//! Nothing here touches shared memory.
//!
//! ```toml
//! [output]
//! dir = "/var/lib/conjure/out"   # where flows.csv, flows.json, summary.json go (--out)
//! refresh_interval = 60          # seconds between rewrites; 0 = only at the end (--refresh)
//! formats = ["csv", "json"]      # which flow tables to write (summary.json always)
//! top = 10                       # rows of the top-N table printed at the end
//!
//! [aggregate]
//! primitives = ["src_host", "dst_host", "src_port", "dst_port", "proto"]   # (--aggregate)
//! # supported: src_host, dst_host, src_port, dst_port, proto, vlan, src_container, dst_container,
//! #            tunnel, outer_src_host, outer_dst_host, tunnel_id (added by themselves when CJ_DECAP is set)
//!
//! [containers]
//! flow_logs = false              # also write containers/<name>.csv|json: each container's 5-tuple rows
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use station::cli::{Cli, Flag, Mode, Parsed};

/// Default `[output] dir`.
pub const DEFAULT_OUT_DIR: &str = "/var/lib/conjure/out";
/// Default `[output] refresh_interval`, seconds.
pub const DEFAULT_REFRESH_SECS: u64 = 60;
/// Default `[output] top`.
pub const DEFAULT_TOP: usize = 10;
/// Default `[aggregate] primitives` (pmacct's classic 5-tuple).
pub const DEFAULT_PRIMITIVES: &[&str] = &["src_host", "dst_host", "src_port", "dst_port", "proto"];

/// One aggregation primitive, named as pmacct names it.
///
/// The declaration order is the column order of pmacct's print plugin
/// (VLAN, SRC_IP, DST_IP, SRC_PORT, DST_PORT, PROTOCOL), whatever order the
/// user lists them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Primitive {
    /// Outer VLAN id.
    Vlan,
    /// Source address of the direction.
    SrcHost,
    /// Destination address of the direction.
    DstHost,
    /// Source port of the direction.
    SrcPort,
    /// Destination port of the direction.
    DstPort,
    /// IP protocol.
    Proto,
    /// Name of the source's container (empty when none).
    SrcContainer,
    /// Name of the destination's container.
    DstContainer,
    /// Tunnel kind of a decapsulated flow (`CJ_DECAP`): `vxlan`, `gre`, ...; empty when none.
    Tunnel,
    /// Outer (tunnel) source address of the direction.
    OuterSrcHost,
    /// Outer (tunnel) destination address of the direction.
    OuterDstHost,
    /// VNI (VXLAN, Geneve) or GRE key; 0 when none.
    TunnelId,
}

impl Primitive {
    /// Whether the primitive's value is text (an address, a protocol or
    /// container name, a tunnel kind), which pmacct prints as a JSON string and
    /// the printed summary aligns left; else a number.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            Primitive::SrcHost
                | Primitive::DstHost
                | Primitive::Proto
                | Primitive::SrcContainer
                | Primitive::DstContainer
                | Primitive::Tunnel
                | Primitive::OuterSrcHost
                | Primitive::OuterDstHost
        )
    }

    /// Every primitive, in the order the help and error messages list them.
    pub const LISTED: [Primitive; 12] = [
        Primitive::SrcHost,
        Primitive::DstHost,
        Primitive::SrcPort,
        Primitive::DstPort,
        Primitive::Proto,
        Primitive::Vlan,
        Primitive::SrcContainer,
        Primitive::DstContainer,
        Primitive::Tunnel,
        Primitive::OuterSrcHost,
        Primitive::OuterDstHost,
        Primitive::TunnelId,
    ];

    /// The tunnel primitives, which `CJ_DECAP` adds to every table.
    pub const TUNNEL: [Primitive; 4] =
        [Primitive::Tunnel, Primitive::OuterSrcHost, Primitive::OuterDstHost, Primitive::TunnelId];

    /// Every primitive in output column order (pmacct's).
    /// (pmacct has no container primitives: they come last, then the tunnel ones.)
    pub const COLUMN_ORDER: [Primitive; 12] = [
        Primitive::Vlan,
        Primitive::SrcHost,
        Primitive::DstHost,
        Primitive::SrcPort,
        Primitive::DstPort,
        Primitive::Proto,
        Primitive::SrcContainer,
        Primitive::DstContainer,
        Primitive::Tunnel,
        Primitive::OuterSrcHost,
        Primitive::OuterDstHost,
        Primitive::TunnelId,
    ];

    /// The configuration name (`src_host`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Vlan => "vlan",
            Primitive::SrcHost => "src_host",
            Primitive::DstHost => "dst_host",
            Primitive::SrcPort => "src_port",
            Primitive::DstPort => "dst_port",
            Primitive::Proto => "proto",
            Primitive::SrcContainer => "src_container",
            Primitive::DstContainer => "dst_container",
            Primitive::Tunnel => "tunnel",
            Primitive::OuterSrcHost => "outer_src_host",
            Primitive::OuterDstHost => "outer_dst_host",
            Primitive::TunnelId => "tunnel_id",
        }
    }

    /// The CSV header pmacct prints for it.
    pub fn csv_header(self) -> &'static str {
        match self {
            Primitive::Vlan => "VLAN",
            Primitive::SrcHost => "SRC_IP",
            Primitive::DstHost => "DST_IP",
            Primitive::SrcPort => "SRC_PORT",
            Primitive::DstPort => "DST_PORT",
            Primitive::Proto => "PROTOCOL",
            Primitive::SrcContainer => "SRC_CONTAINER",
            Primitive::DstContainer => "DST_CONTAINER",
            Primitive::Tunnel => "TUNNEL",
            Primitive::OuterSrcHost => "OUTER_SRC_IP",
            Primitive::OuterDstHost => "OUTER_DST_IP",
            Primitive::TunnelId => "TUNNEL_ID",
        }
    }

    /// The JSON key pmacct's print plugin uses for it.
    pub fn json_key(self) -> &'static str {
        match self {
            Primitive::Vlan => "vlan",
            Primitive::SrcHost => "ip_src",
            Primitive::DstHost => "ip_dst",
            Primitive::SrcPort => "port_src",
            Primitive::DstPort => "port_dst",
            Primitive::Proto => "ip_proto",
            Primitive::SrcContainer => "container_src",
            Primitive::DstContainer => "container_dst",
            Primitive::Tunnel => "tunnel",
            Primitive::OuterSrcHost => "outer_ip_src",
            Primitive::OuterDstHost => "outer_ip_dst",
            Primitive::TunnelId => "tunnel_id",
        }
    }

    /// Parses a configuration name.
    pub fn parse(s: &str) -> Option<Primitive> {
        Primitive::LISTED.into_iter().find(|p| p.name() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The valid primitive names, comma-separated, for messages.
pub fn valid_primitives() -> String {
    Primitive::LISTED.map(Primitive::name).join(", ")
}

/// A set of primitives; iterates in output column order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Primitives(u16);

impl Primitives {
    /// The default set (src_host, dst_host, src_port, dst_port, proto).
    pub fn default_set() -> Self {
        Self::parse_list(DEFAULT_PRIMITIVES.iter().copied(), "default").expect("defaults are valid")
    }

    /// Parses names; `origin` says where they came from for the error message.
    ///
    /// # Errors
    /// The first unknown name.
    pub fn parse_list<'a>(names: impl IntoIterator<Item = &'a str>, origin: &str) -> Result<Self, SettingsError> {
        let mut set = Primitives(0);
        for name in names {
            let name = name.trim();
            match Primitive::parse(name) {
                Some(p) => set.0 |= p.bit(),
                None => {
                    return Err(SettingsError::UnknownPrimitive { name: name.to_string(), origin: origin.to_string() })
                }
            }
        }
        Ok(set)
    }

    /// The set with the tunnel primitives ([`Primitive::TUNNEL`]) added: what
    /// the app aggregates by when `CJ_DECAP` is set.
    pub fn with_tunnel(self) -> Self {
        Primitives(Primitive::TUNNEL.iter().fold(self.0, |set, p| set | p.bit()))
    }

    /// Whether `p` is in the set.
    pub fn has(self, p: Primitive) -> bool {
        self.0 & p.bit() != 0
    }

    /// The primitives in output column order.
    pub fn iter(self) -> impl Iterator<Item = Primitive> {
        Primitive::COLUMN_ORDER.into_iter().filter(move |p| self.has(*p))
    }

    /// The names in column order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Primitive::name).collect()
    }
}

impl fmt::Display for Primitives {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// Which flow tables to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formats {
    /// `flows.csv`
    pub csv: bool,
    /// `flows.json` (JSON lines)
    pub json: bool,
}

/// The resolved settings the app runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Interval between rewrites; `None` = only at the end.
    pub refresh: Option<Duration>,
    /// Neither `--refresh` nor `[output] refresh_interval` was given: the
    /// app writes every `CJ_REFRESH` (the detector's export interval), so its
    /// files are current to within one interval.
    pub refresh_from_station: bool,
    /// Flow tables to write.
    pub formats: Formats,
    /// Rows of the printed top-N table.
    pub top: usize,
    /// Aggregation primitives.
    pub primitives: Primitives,
    /// Write per-container flow logs (`[containers] flow_logs`).
    pub container_logs: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            out_dir: PathBuf::from(DEFAULT_OUT_DIR),
            refresh: Some(Duration::from_secs(DEFAULT_REFRESH_SECS)),
            refresh_from_station: true,
            formats: Formats { csv: true, json: true },
            top: DEFAULT_TOP,
            primitives: Primitives::default_set(),
            container_logs: false,
        }
    }
}

/// A settings error; its `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The TOML file cannot be read.
    #[error("cannot read {path} (CJ_STATION_CONFIG): {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The TOML file does not parse or has an unknown key.
    #[error("{path}{line}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// `:<line>` when known, else empty.
        line: String,
        /// toml's message, on one line.
        message: String,
    },
    /// An unknown aggregation primitive.
    #[error("unknown aggregation primitive {name:?} in {origin}; valid primitives: {}", valid_primitives())]
    UnknownPrimitive {
        /// As given.
        name: String,
        /// `--aggregate` or `<file> [aggregate] primitives`.
        origin: String,
    },
    /// An unknown output format.
    #[error("unknown output format {name:?} in {origin}; valid formats: csv, json")]
    UnknownFormat {
        /// As given.
        name: String,
        /// Where.
        origin: String,
    },
    /// A command-line problem.
    #[error("{0}")]
    Usage(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileSettings {
    output: OutputSection,
    aggregate: AggregateSection,
    containers: ContainersSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ContainersSection {
    flow_logs: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OutputSection {
    dir: PathBuf,
    refresh_interval: Option<u64>,
    formats: Vec<String>,
    top: usize,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            dir: PathBuf::from(DEFAULT_OUT_DIR),
            refresh_interval: None,
            formats: vec!["csv".into(), "json".into()],
            top: DEFAULT_TOP,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AggregateSection {
    primitives: Vec<String>,
}

impl Default for AggregateSection {
    fn default() -> Self {
        AggregateSection { primitives: DEFAULT_PRIMITIVES.iter().map(|s| s.to_string()).collect() }
    }
}

/// The command line: the run mode, `status` and `query` (station::cli parses it).
pub const CLI: Cli = Cli {
    program: "cj-app",
    modes: &[
        Mode {
            name: "",
            positionals: &[],
            flags: &[
                Flag::with_value("--out", "DIR"),
                Flag::with_value("--aggregate", "LIST"),
                Flag::with_value("--refresh", "SECS"),
            ],
        },
        Mode { name: "status", positionals: &[], flags: &[] },
        station::cli::HEALTH_MODE,
        Mode {
            name: "query",
            positionals: &[],
            flags: &[
                Flag::with_value("--top", "N"),
                Flag::with_value("--by", "WHAT"),
                Flag::with_value("--addr", "IP"),
                Flag::with_value("--port", "N"),
                Flag::with_value("--proto", "NAME"),
                Flag::with_value("--container", "NAME"),
                Flag::switch("--json"),
            ],
        },
    ],
};

/// What `cj-app` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Drain, aggregate and write.
    Run(RunArgs),
    /// Show the pipeline from the queue headers.
    Status,
    /// Whether the app beats (`cj-app health`).
    Health,
    /// Ask the running app for its current aggregate (`cj-app query`).
    Query(crate::query::QueryArgs),
    /// Print the resolved configuration (`--print-config`).
    PrintConfig,
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// The flags of the run mode (each overrides the TOML).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// `--out DIR`
    pub out: Option<PathBuf>,
    /// `--aggregate LIST`
    pub aggregate: Option<String>,
    /// `--refresh SECS`
    pub refresh: Option<u64>,
}

/// Usage text for `--help`.
pub const USAGE: &str = "\
cj-app: drains the detector's record queues, merges and aggregates flows pmacct-style, writes print files

usage:
  cj-app [--config FILE] [--out DIR] [--aggregate LIST] [--refresh SECS]
  cj-app status [--config FILE]
  cj-app health [--config FILE]
  cj-app query [--config FILE] [--top N] [--by bytes|packets] [--addr IP] [--port N]
               [--proto NAME] [--container NAME] [--json]
  cj-app --print-config [--config FILE]
  cj-app --help | --version

options:
  --out DIR         output directory (TOML [output] dir; default /var/lib/conjure/out)
  --aggregate LIST  comma-separated primitives (TOML [aggregate] primitives;
                    default src_host,dst_host,src_port,dst_port,proto;
                    valid: src_host, dst_host, src_port, dst_port, proto, vlan,
                    src_container, dst_container)
  --refresh SECS    rewrite the files every SECS seconds, 0 = only at the end
                    (TOML [output] refresh_interval; default 60)

query options (ask the running app over <cluster dir>/app.sock, as pmacct -s asks pmacctd):
  --top N           at most N rows (default: every row)
  --by WHAT         order by bytes (default) or packets
  --addr IP         rows whose source or destination is IP
  --port N          rows whose source or destination port is N
  --proto NAME      rows of this protocol (tcp, udp, icmp, ... or a number)
  --container NAME  rows of this container (needs src_container/dst_container in the
                    aggregate, or [containers] flow_logs = true)
  --json            print the app's JSON answer instead of a table

The app reads CJ_STATION_CONFIG (a TOML file: [output] dir, refresh_interval, formats, top;
[aggregate] primitives; [containers] flow_logs) when set; the flags override it. It stops when every record queue has ended, or on
SIGINT/SIGTERM after draining what is queued; either way it writes the files and a summary.
The same signal again within 1 s is the same stop (`timeout` sends it twice); a second
signal 1 s or more after the first exits at once (status 1) without writing the files.
";

/// Parses the command line (without the program name): the command and the
/// `--config` file (read once, here).
///
/// # Errors
/// A usage error (station::cli's: an unknown argument, a missing value, a
/// stray positional), or a `--refresh` or query value that is malformed.
pub fn parse_command(args: &[String]) -> Result<(Command, Option<PathBuf>), SettingsError> {
    let inv = match CLI.parse(args).map_err(|e| SettingsError::Usage(e.to_string()))? {
        Parsed::Help => return Ok((Command::Help, None)),
        Parsed::Version => return Ok((Command::Version, None)),
        Parsed::PrintConfig { config } => return Ok((Command::PrintConfig, config)),
        Parsed::Run(inv) => inv,
    };
    let command = match inv.mode {
        "status" => Command::Status,
        "health" => Command::Health,
        "query" => Command::Query(crate::query::from_invocation(&inv)?),
        _ => {
            let refresh = match inv.value("--refresh") {
                Some(v) => Some(v.trim().parse().map_err(|_| {
                    SettingsError::Usage(format!(
                        "--refresh {v:?}: expected a whole number of seconds (0: write only at the end)"
                    ))
                })?),
                None => None,
            };
            Command::Run(RunArgs {
                out: inv.value("--out").map(PathBuf::from),
                aggregate: inv.value("--aggregate").map(str::to_owned),
                refresh,
            })
        }
    };
    Ok((command, inv.config))
}

fn file_settings(path: &Path) -> Result<FileSettings, SettingsError> {
    // Bounded, regular files only: a FIFO or /dev/zero named here never blocks or fills memory.
    let text = station::config::read_bounded(path)
        .map_err(|e| SettingsError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    parse_toml(&text, path)
}

fn parse_toml(text: &str, path: &Path) -> Result<FileSettings, SettingsError> {
    toml::from_str::<FileSettings>(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!(":{}", text[..s.start.min(text.len())].matches('\n').count() + 1))
            .unwrap_or_default();
        let message = e.message().trim().replace('\n', "; ");
        SettingsError::Toml { path: path.to_path_buf(), line, message }
    })
}

/// Resolves the settings: defaults < the TOML file (if any) < the flags.
///
/// # Errors
/// An unreadable or invalid file, an unknown primitive or format.
pub fn resolve(toml_path: Option<&Path>, args: &RunArgs) -> Result<Settings, SettingsError> {
    let file = match toml_path {
        Some(p) => file_settings(p)?,
        None => FileSettings::default(),
    };
    resolve_from(file, toml_path, args)
}

fn resolve_from(file: FileSettings, toml_path: Option<&Path>, args: &RunArgs) -> Result<Settings, SettingsError> {
    let where_ = |section: &str| match toml_path {
        Some(p) => format!("{} {section}", p.display()),
        None => format!("default {section}"),
    };
    let mut formats = Formats { csv: false, json: false };
    for f in &file.output.formats {
        match f.trim() {
            "csv" => formats.csv = true,
            "json" => formats.json = true,
            other => {
                return Err(SettingsError::UnknownFormat {
                    name: other.to_string(),
                    origin: where_("[output] formats"),
                })
            }
        }
    }
    let primitives = match &args.aggregate {
        Some(list) => Primitives::parse_list(list.split(',').filter(|s| !s.trim().is_empty()), "--aggregate")?,
        None => Primitives::parse_list(
            file.aggregate.primitives.iter().map(String::as_str),
            &where_("[aggregate] primitives"),
        )?,
    };
    let given = args.refresh.or(file.output.refresh_interval);
    let refresh_secs = given.unwrap_or(DEFAULT_REFRESH_SECS);
    let out_dir = match &args.out {
        Some(out) if out.as_os_str().is_empty() => {
            return Err(SettingsError::Usage(
                "--out \"\": expected an output directory; an empty path would write into the current \
                 directory (say --out . for that)"
                    .into(),
            ))
        }
        Some(out) => out.clone(),
        None if file.output.dir.as_os_str().is_empty() => {
            return Err(SettingsError::Usage(format!(
                "{} = \"\": expected an output directory (say \".\" for the current directory)",
                where_("[output] dir")
            )))
        }
        None => file.output.dir,
    };
    Ok(Settings {
        out_dir,
        refresh: (refresh_secs > 0).then(|| Duration::from_secs(refresh_secs)),
        refresh_from_station: given.is_none(),
        formats,
        top: file.output.top,
        primitives,
        container_logs: file.containers.flow_logs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn from_toml(text: &str) -> Result<Settings, SettingsError> {
        let path = Path::new("/etc/app.toml");
        resolve_from(parse_toml(text, path)?, Some(path), &RunArgs::default())
    }

    #[test]
    fn container_flow_logs_and_primitives() {
        let s = from_toml(
            "[containers]\nflow_logs = true\n[aggregate]\nprimitives = [\"dst_container\", \"proto\", \"src_container\"]\n",
        )
        .unwrap();
        assert!(s.container_logs);
        assert_eq!(s.primitives.to_string(), "proto,src_container,dst_container");
        assert!(!from_toml("").unwrap().container_logs);
        assert!(from_toml("[containers]\nlogs = 1\n").is_err());
    }

    #[test]
    fn defaults_without_file() {
        let s = resolve(None, &RunArgs::default()).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.out_dir, PathBuf::from("/var/lib/conjure/out"));
        assert_eq!(s.refresh, Some(Duration::from_secs(60)));
        assert_eq!(s.top, 10);
        assert_eq!(s.primitives.to_string(), "src_host,dst_host,src_port,dst_port,proto");
    }

    #[test]
    fn empty_file_means_defaults_and_sections_merge() {
        assert_eq!(from_toml("").unwrap(), Settings::default());
        let s = from_toml("[output]\ntop = 3\nrefresh_interval = 0\nformats = [\"csv\"]\n").unwrap();
        assert_eq!(s.top, 3);
        assert_eq!(s.refresh, None);
        assert_eq!(s.formats, Formats { csv: true, json: false });
        assert_eq!(s.out_dir, PathBuf::from(DEFAULT_OUT_DIR));
    }

    #[test]
    fn decap_adds_the_tunnel_columns_after_the_others() {
        let p = Primitives::default_set().with_tunnel();
        assert_eq!(
            p.to_string(),
            "src_host,dst_host,src_port,dst_port,proto,tunnel,outer_src_host,outer_dst_host,tunnel_id"
        );
        assert_eq!(p.with_tunnel(), p);
        assert!(!Primitives::default_set().has(Primitive::Tunnel));
    }

    #[test]
    fn primitives_are_columns_in_pmacct_order() {
        let s = from_toml("[aggregate]\nprimitives = [\"proto\", \"vlan\", \"dst_port\", \"src_host\"]\n").unwrap();
        assert_eq!(s.primitives.to_string(), "vlan,src_host,dst_port,proto");
    }

    #[test]
    fn unknown_primitive_in_file_names_it_and_lists_valid_ones() {
        let e = from_toml("[aggregate]\nprimitives = [\"src_host\", \"src_mac\"]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown aggregation primitive \"src_mac\" in /etc/app.toml [aggregate] primitives; \
             valid primitives: src_host, dst_host, src_port, dst_port, proto, vlan, src_container, dst_container, \
             tunnel, outer_src_host, outer_dst_host, tunnel_id"
        );
    }

    #[test]
    fn unknown_primitive_on_command_line() {
        let run = RunArgs { aggregate: Some("src_host,peer_as".into()), ..Default::default() };
        let e = resolve(None, &run).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown aggregation primitive \"peer_as\" in --aggregate; \
             valid primitives: src_host, dst_host, src_port, dst_port, proto, vlan, src_container, dst_container, \
             tunnel, outer_src_host, outer_dst_host, tunnel_id"
        );
    }

    #[test]
    fn unknown_key_is_one_line_with_file_and_line() {
        let e = from_toml("[output]\ntop = 3\ncolour = \"red\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.starts_with("/etc/app.toml:3: unknown field `colour`"), "{msg}");
    }

    #[test]
    fn unknown_format() {
        let e = from_toml("[output]\nformats = [\"xml\"]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown output format \"xml\" in /etc/app.toml [output] formats; valid formats: csv, json"
        );
    }

    #[test]
    fn unreadable_file() {
        let e = resolve(Some(Path::new("/nonexistent/app.toml")), &RunArgs::default()).unwrap_err();
        assert!(e.to_string().starts_with("cannot read /nonexistent/app.toml (CJ_STATION_CONFIG): "), "{e}");
    }

    #[test]
    fn flags_override_file() {
        let path = Path::new("/etc/app.toml");
        let file = parse_toml("[output]\ndir = \"/a\"\nrefresh_interval = 5\n", path).unwrap();
        let run = RunArgs { out: Some("/b".into()), aggregate: Some("proto".into()), refresh: Some(0) };
        let s = resolve_from(file, Some(path), &run).unwrap();
        assert_eq!(s.out_dir, PathBuf::from("/b"));
        assert_eq!(s.refresh, None);
        assert_eq!(s.primitives.to_string(), "proto");
    }

    #[test]
    fn an_empty_output_directory_is_refused() {
        let run = RunArgs { out: Some(PathBuf::new()), ..Default::default() };
        let e = resolve(None, &run).unwrap_err().to_string();
        assert!(e.starts_with("--out \"\": expected an output directory"), "{e}");
        let e = from_toml("[output]\ndir = \"\"\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/app.toml [output] dir = \"\": expected an output directory (say \".\" for the current directory)"
        );
    }

    #[test]
    fn a_fifo_as_the_settings_file_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("app.toml");
        std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        let e = resolve(Some(&fifo), &RunArgs::default()).unwrap_err().to_string();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
    }

    #[test]
    fn command_line_parsing() {
        let cmd = |a: &[&str]| parse_command(&args(a)).map(|(c, _)| c);
        assert_eq!(cmd(&[]).unwrap(), Command::Run(RunArgs::default()));
        assert_eq!(cmd(&["--help"]).unwrap(), Command::Help);
        assert_eq!(cmd(&["--version"]).unwrap(), Command::Version);
        assert_eq!(parse_command(&args(&["status", "--config", "/x"])).unwrap(), (Command::Status, Some("/x".into())));
        assert_eq!(parse_command(&args(&["--print-config"])).unwrap(), (Command::PrintConfig, None));
        assert_eq!(
            parse_command(&args(&["--out=/o", "--refresh", "5", "--aggregate", "proto", "--config=/c"])).unwrap(),
            (
                Command::Run(RunArgs { out: Some("/o".into()), aggregate: Some("proto".into()), refresh: Some(5) }),
                Some("/c".into())
            )
        );
        assert_eq!(cmd(&["--frobnicate"]).unwrap_err().to_string(), "unknown argument \"--frobnicate\" (try --help)");
        assert_eq!(cmd(&["--out"]).unwrap_err().to_string(), "--out needs a DIR (try --help)");
        assert_eq!(
            cmd(&["--refresh", "soon"]).unwrap_err().to_string(),
            "--refresh \"soon\": expected a whole number of seconds (0: write only at the end)"
        );
        assert_eq!(
            cmd(&["status", "--out", "/o"]).unwrap_err().to_string(),
            "unknown argument \"--out\" of cj-app status (try --help)"
        );
        assert_eq!(
            cmd(&["status", "now"]).unwrap_err().to_string(),
            "unexpected argument \"now\" of cj-app status (try --help)"
        );
        assert_eq!(
            cmd(&["query", "--by", "rows"]).unwrap_err().to_string(),
            "--by \"rows\": expected bytes or packets"
        );
        assert_eq!(cmd(&["query", "--json", "--top=3"]).unwrap(), {
            let mut q = crate::query::from_invocation(&station::cli::Invocation::default()).unwrap();
            q.json = true;
            q.request.top = Some(3);
            Command::Query(q)
        });
    }
}
