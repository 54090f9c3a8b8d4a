//! Print files in pmacct's print-plugin formats, written atomically.
//!
//! Guarantees:
//! - `flows.csv` is what pmacct 1.7.7 writes with `print_output: csv` for the
//!   same aggregate: a header of the chosen primitives in pmacct's column order
//!   (VLAN, SRC_IP, DST_IP, SRC_PORT, DST_PORT, PROTOCOL) then `PACKETS,BYTES`,
//!   followed by extra columns `FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END`
//!   (the first and last packet of the row's records, seconds since the epoch
//!   with microseconds, as pmacct prints them with `timestamps_since_epoch`;
//!   `0.000000` when unknown). Addresses as glibc's
//!   `inet_ntop` prints them (IPv6 compressed per RFC 5952, `::a.b.c.d` and
//!   `::ffff:a.b.c.d` forms), ports and VLAN in decimal, the protocol by pmacct's
//!   name (see [`crate::protocols`]). BYTES = IP bytes.
//! - `flows.json` is JSON lines like pmacct's `print_output: json`: one object
//!   per row, keys in pmacct's order (`event_type`, `vlan`, `ip_src`, `ip_dst`,
//!   `port_src`, `port_dst`, `ip_proto` (always a string), `packets`, `bytes`)
//!   then `frame_bytes`, `flows`, `timestamp_start`, `timestamp_end`.
//! - Rows are sorted by BYTES descending, then by key: the same input gives
//!   byte-identical files.
//! - Every file is written to a temporary file of this process's own in the
//!   same directory (`.<name>.<pid>.<n>.tmp`, created exclusively, never
//!   through a symbolic link), fsynced and renamed over the target, so a reader
//!   never sees a partial file and nothing planted in a shared `--out`
//!   directory can redirect the write. Files get mode 0644.
//!
//! Not guaranteed: the output directory and its subdirectories are trusted as
//! paths (`--out` may be a symbolic link the operator chose); an output
//! directory writable by other users lets them replace the finished files.

use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::aggregate::{Aggregate, Counters, Key};
use crate::settings::{Formats, Primitive, Primitives};
use station::proto::proto_name;

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

/// Formats an address of a key as pmacct does (glibc `inet_ntop`).
pub fn format_addr(ip_version: u8, bytes: &[u8; 16]) -> String {
    match ip_version {
        4 => Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        6 => format_v6(bytes),
        _ => String::new(),
    }
}

/// glibc `inet_ntop6`: the longest run (first on ties) of two or more zero
/// words becomes `::`; `::a.b.c.d` and `::ffff:a.b.c.d` keep a dotted tail.
/// (Rust's `Ipv6Addr` `Display` differs for `::a.b.c.d`.)
fn format_v6(b: &[u8; 16]) -> String {
    let words: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]));
    // Longest run of zero words, the first one on ties.
    // (start, length) of zero runs.
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, w) in words.iter().enumerate() {
        if *w == 0 {
            let c = cur.map_or((i, 1), |(s, l)| (s, l + 1));
            cur = Some(c);
            if !matches!(best, Some((_, l)) if l >= c.1) {
                best = Some(c);
            }
        } else {
            cur = None;
        }
    }
    let best = best.filter(|(_, len)| *len >= 2);
    let mut s = String::with_capacity(46);
    for (i, w) in words.iter().enumerate() {
        if let Some((base, len)) = best {
            if i >= base && i < base + len {
                if i == base {
                    s.push(':');
                }
                continue;
            }
        }
        if i != 0 {
            s.push(':');
        }
        if i == 6 && best.is_some_and(|(base, len)| base == 0 && (len == 6 || (len == 5 && words[5] == 0xffff))) {
            let _ = write!(s, "{}", Ipv4Addr::new(b[12], b[13], b[14], b[15]));
            return s;
        }
        let _ = write!(s, "{w:x}");
    }
    if best.is_some_and(|(base, len)| base + len == 8) {
        s.push(':');
    }
    s
}

/// The CSV header for `primitives`.
pub fn csv_header(primitives: Primitives) -> String {
    let mut cols: Vec<&str> = primitives.iter().map(Primitive::csv_header).collect();
    cols.extend(["PACKETS", "BYTES", "FRAME_BYTES", "FLOWS", "TIMESTAMP_START", "TIMESTAMP_END"]);
    cols.join(",")
}

/// Every key column of the overflow row (CJ_APP_MAX_ROWS reached).
pub const OVERFLOW_FIELD: &str = "other";

/// The value of one primitive of a key, as pmacct prints it (`other` in the overflow row).
pub fn field(p: Primitive, k: &Key) -> String {
    if k.overflow {
        return OVERFLOW_FIELD.to_owned();
    }
    match p {
        Primitive::Vlan => k.vlan.to_string(),
        Primitive::SrcHost => format_addr(k.ip_version, &k.src),
        Primitive::DstHost => format_addr(k.ip_version, &k.dst),
        Primitive::SrcPort => k.src_port.to_string(),
        Primitive::DstPort => k.dst_port.to_string(),
        Primitive::Proto => proto_name(k.proto).into_owned(),
        Primitive::SrcContainer => station::record::text_of(&k.src_container).to_owned(),
        Primitive::DstContainer => station::record::text_of(&k.dst_container).to_owned(),
        Primitive::Tunnel => wire::tunnel::TunnelKind::from_u8(k.tunnel).map_or("", |t| t.name()).to_owned(),
        Primitive::OuterSrcHost => format_addr(k.outer_ip_version, &k.outer_src),
        Primitive::OuterDstHost => format_addr(k.outer_ip_version, &k.outer_dst),
        Primitive::TunnelId => k.tunnel_id.to_string(),
    }
}

/// One CSV row (without newline).
pub fn csv_row(primitives: Primitives, k: &Key, c: &Counters) -> String {
    let mut s = String::with_capacity(96);
    for p in primitives.iter() {
        s.push_str(&field(p, k));
        s.push(',');
    }
    let _ = write!(
        s,
        "{},{},{},{},{},{}",
        c.packets,
        c.ip_bytes,
        c.frame_bytes,
        c.flows,
        Stamp(c.first_ns),
        Stamp(c.last_ns)
    );
    s
}

/// A time in ns since the epoch as pmacct prints it with `timestamps_since_epoch`:
/// seconds and microseconds.
struct Stamp(u64);

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000_000, self.0 % 1_000_000_000 / 1000)
    }
}

/// One JSON line (without newline), pmacct's keys and separators.
pub fn json_row(primitives: Primitives, k: &Key, c: &Counters) -> String {
    let mut s = String::with_capacity(160);
    s.push_str("{\"event_type\": \"purge\"");
    for p in primitives.iter() {
        let v = field(p, k);
        match p {
            _ if k.overflow => {
                let _ = write!(s, ", \"{}\": {}", p.json_key(), serde_json::Value::String(v));
            }
            Primitive::SrcHost
            | Primitive::DstHost
            | Primitive::Proto
            | Primitive::SrcContainer
            | Primitive::DstContainer
            | Primitive::Tunnel
            | Primitive::OuterSrcHost
            | Primitive::OuterDstHost => {
                let _ = write!(s, ", \"{}\": {}", p.json_key(), serde_json::Value::String(v));
            }
            _ => {
                let _ = write!(s, ", \"{}\": {}", p.json_key(), v);
            }
        }
    }
    let _ = write!(
        s,
        ", \"packets\": {}, \"bytes\": {}, \"frame_bytes\": {}, \"flows\": {}, \"timestamp_start\": \"{}\", \"timestamp_end\": \"{}\"}}",
        c.packets,
        c.ip_bytes,
        c.frame_bytes,
        c.flows,
        Stamp(c.first_ns),
        Stamp(c.last_ns)
    );
    s
}

/// The whole CSV file.
pub fn csv_text(table: &Aggregate) -> String {
    let p = table.primitives();
    let mut out = csv_header(p);
    out.push('\n');
    for (k, c) in table.sorted_rows() {
        out.push_str(&csv_row(p, &k, &c));
        out.push('\n');
    }
    out
}

/// The whole JSON-lines file.
pub fn json_text(table: &Aggregate) -> String {
    let p = table.primitives();
    let mut out = String::new();
    for (k, c) in table.sorted_rows() {
        out.push_str(&json_row(p, &k, &c));
        out.push('\n');
    }
    out
}

/// Writes `containers.csv` / `containers.json` into `dir` as `formats` say,
/// and with flow logs on, `containers/<name>.csv|json` per container; returns
/// the paths written.
///
/// # Errors
/// As [`write_atomic`].
pub fn write_containers(
    dir: &Path,
    c: &crate::containers::Containers,
    formats: Formats,
) -> Result<Vec<PathBuf>, WriteError> {
    let mut written = Vec::new();
    if formats.csv {
        let p = dir.join("containers.csv");
        write_atomic(&p, crate::containers::csv_text(c).as_bytes())?;
        written.push(p);
    }
    if formats.json {
        let p = dir.join("containers.json");
        write_atomic(&p, crate::containers::json_text(c).as_bytes())?;
        written.push(p);
    }
    if let Some(logs) = c.logs() {
        for ((name, id), table) in logs {
            let base = dir.join("containers").join(crate::containers::log_file_name(name, id));
            if formats.csv {
                let p = base.with_extension("csv");
                write_atomic(&p, csv_text(table).as_bytes())?;
                written.push(p);
            }
            if formats.json {
                let p = base.with_extension("json");
                write_atomic(&p, json_text(table).as_bytes())?;
                written.push(p);
            }
        }
    }
    Ok(written)
}

/// Mode of every file the app writes.
pub const OUT_FILE_MODE: u32 = 0o644;

/// Writes `contents` to `path` atomically, safe in a directory others can
/// write: a temporary file of this process's own (`.<name>.<pid>.<n>.tmp`,
/// created with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0644), written, fsynced
/// and renamed over `path` ([`shmq::files::write_atomic`]). A file or symbolic
/// link planted under any temporary name is refused, never written through; a
/// link planted as `path` itself is replaced, its target untouched; on any
/// error the temporary file is removed.
///
/// # Errors
/// The directory cannot be created, or the file cannot be created, written,
/// synced or renamed.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), WriteError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| WriteError { path: dir.to_path_buf(), source })?;
    shmq::files::write_atomic(path, contents, OUT_FILE_MODE)
        .map_err(|source| WriteError { path: path.to_path_buf(), source })
}

/// Writes `flows.csv` / `flows.json` of `table` into `dir` as `formats` say;
/// returns the paths written.
///
/// # Errors
/// As [`write_atomic`].
pub fn write_table(dir: &Path, table: &Aggregate, formats: Formats) -> Result<Vec<PathBuf>, WriteError> {
    let mut written = Vec::new();
    if formats.csv {
        let p = dir.join("flows.csv");
        write_atomic(&p, csv_text(table).as_bytes())?;
        written.push(p);
    }
    if formats.json {
        let p = dir.join("flows.json");
        write_atomic(&p, json_text(table).as_bytes())?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::{ip_record, v4};
    use station::record::EndReason;
    use std::net::Ipv6Addr;

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn ipv6_like_glibc_inet_ntop() {
        // Expected strings from glibc's inet_ntop (python socket.inet_ntop) and pmacctd's CSV.
        for (input, want) in [
            ("2001:db8::1", "2001:db8::1"),
            ("2001:db8:0:0:1::2", "2001:db8::1:0:0:2"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("::0.1.0.0", "::0.1.0.0"),
            ("::ffff:0:1.2.3.4", "::ffff:0:102:304"),
            ("::1", "::1"),
            ("::", "::"),
            ("1::", "1::"),
            ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("0:0:0:0:0:1:0:0", "::1:0:0"),
            ("1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"),
            ("fe80::1", "fe80::1"),
            ("ff02::1", "ff02::1"),
            ("2001:db8::ab:cd", "2001:db8::ab:cd"),
        ] {
            assert_eq!(format_addr(6, &v6(input)), want, "{input}");
        }
        assert_eq!(format_addr(4, &v4([192, 168, 1, 10])), "192.168.1.10");
    }

    #[test]
    fn csv_matches_pmacct_rows() {
        // Rows pmacctd 1.7.7 wrote for the same packets (print_output: csv),
        // plus our FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END columns.
        let mut t = Aggregate::new(Primitives::default_set());
        let mut tcp = ip_record([10, 0, 0, 1], 1234, [10, 0, 0, 2], 80, 6, (1, 40), (1, 140), EndReason::EndOfFlow);
        (tcp.first_ns, tcp.last_ns) = (1_733_440_000_123_456_789, 1_733_440_001_000_000_999);
        t.add_ip(&tcp);
        t.add_ip(&ip_record([192, 168, 1, 10], 0, [8, 8, 8, 8], 0, 1, (1, 84), (0, 0), EndReason::IdleTimeout));
        t.add_ip(&ip_record([10, 1, 1, 1], 0, [10, 2, 2, 2], 0, 47, (1, 44), (0, 0), EndReason::IdleTimeout));
        let mut v6rec = ip_record([0; 4], 0, [0; 4], 0, 58, (1, 64), (0, 0), EndReason::IdleTimeout);
        v6rec.ip_version = 6;
        v6rec.addr_a = v6("fe80::1");
        v6rec.addr_b = v6("ff02::1");
        t.add_ip(&v6rec);
        let mut odd = ip_record([10, 0, 0, 5], 0, [10, 0, 0, 6], 0, 200, (1, 30), (0, 0), EndReason::IdleTimeout);
        odd.vlan = 3;
        t.add_ip(&odd);
        assert_eq!(
            csv_text(&t),
            "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END\n\
             10.0.0.2,10.0.0.1,80,1234,tcp,1,140,154,1,1733440000.123456,1733440001.000000\n\
             192.168.1.10,8.8.8.8,0,0,icmp,1,84,98,1,0.000000,0.000000\n\
             fe80::1,ff02::1,0,0,ipv6-icmp,1,64,78,1,0.000000,0.000000\n\
             10.1.1.1,10.2.2.2,0,0,gre,1,44,58,1,0.000000,0.000000\n\
             10.0.0.1,10.0.0.2,1234,80,tcp,1,40,54,1,1733440000.123456,1733440001.000000\n\
             10.0.0.5,10.0.0.6,0,0,200,1,30,44,1,0.000000,0.000000\n"
        );
        let with_vlan = Primitives::parse_list(["proto", "vlan", "dst_port", "src_host"], "t").unwrap();
        assert_eq!(
            csv_header(with_vlan),
            "VLAN,SRC_IP,DST_PORT,PROTOCOL,PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END"
        );
    }

    #[test]
    fn json_lines_match_pmacct_keys() {
        let p = Primitives::parse_list(["src_host", "dst_host", "src_port", "dst_port", "proto", "vlan"], "t").unwrap();
        let mut t = Aggregate::new(p);
        let mut r = ip_record([10, 0, 0, 5], 7, [10, 0, 0, 6], 9, 200, (2, 60), (0, 0), EndReason::IdleTimeout);
        r.vlan = 7;
        t.add_ip(&r);
        assert_eq!(
            json_text(&t),
            "{\"event_type\": \"purge\", \"vlan\": 7, \"ip_src\": \"10.0.0.5\", \"ip_dst\": \"10.0.0.6\", \
             \"port_src\": 7, \"port_dst\": 9, \"ip_proto\": \"200\", \"packets\": 2, \"bytes\": 60, \
             \"frame_bytes\": 88, \"flows\": 1, \"timestamp_start\": \"0.000000\", \"timestamp_end\": \"0.000000\"}\n"
        );
        let line = json_text(&t);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["ip_proto"], "200");
    }

    #[test]
    fn decapsulated_records_give_each_direction_its_outer_source_and_destination() {
        let mut r = ip_record([10, 1, 0, 1], 40000, [10, 1, 0, 2], 80, 6, (3, 240), (2, 980), EndReason::EndOfFlow);
        r.tunnel_kind = 1;
        r.tunnel_ip_version = 4;
        r.tunnel_addr_a = v4([192, 168, 10, 1]);
        r.tunnel_addr_b = v4([192, 168, 10, 2]);
        r.tunnel_id = 100;
        r.tunnel_flags = station::record::TUNNEL_HAS_ID;
        let plain = ip_record([10, 9, 0, 1], 1, [10, 9, 0, 2], 2, 17, (1, 30), (0, 0), EndReason::IdleTimeout);
        let mut t = Aggregate::new(Primitives::default_set().with_tunnel());
        t.add_ip(&r);
        t.add_ip(&plain);
        assert_eq!(
            csv_text(&t),
            "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,TUNNEL,OUTER_SRC_IP,OUTER_DST_IP,TUNNEL_ID,\
             PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END\n\
             10.1.0.2,10.1.0.1,80,40000,tcp,vxlan,192.168.10.2,192.168.10.1,100,2,980,1008,1,0.000000,0.000000\n\
             10.1.0.1,10.1.0.2,40000,80,tcp,vxlan,192.168.10.1,192.168.10.2,100,3,240,282,1,0.000000,0.000000\n\
             10.9.0.1,10.9.0.2,1,2,udp,,,,0,1,30,44,1,0.000000,0.000000\n"
        );
        let first: serde_json::Value = serde_json::from_str(json_text(&t).lines().next().unwrap()).unwrap();
        assert_eq!(
            (&first["tunnel"], &first["outer_ip_src"], &first["tunnel_id"]),
            (&"vxlan".into(), &"192.168.10.2".into(), &100.into())
        );
        // Without the tunnel primitives the columns and keys are as before.
        assert!(!csv_text(&Aggregate::new(Primitives::default_set())).contains("TUNNEL"));
    }

    #[test]
    fn atomic_write_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/flows.csv");
        write_atomic(&p, b"x\n").unwrap();
        write_atomic(&p, b"y\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "y\n");
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["flows.csv"]);
    }

    #[test]
    fn a_planted_temporary_link_in_the_output_directory_does_not_redirect_the_write() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        // The fixed temporary name of earlier versions, and the target itself.
        symlink(&victim, dir.path().join(".summary.json.tmp")).unwrap();
        symlink(&victim, dir.path().join("summary.json")).unwrap();
        let p = dir.path().join("summary.json");
        write_atomic(&p, b"{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_file(), "the link was replaced by a file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{}\n");
    }
}
