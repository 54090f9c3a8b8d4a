//! Per-container aggregates: what each container sent and received, from the
//! attribution the detector put in every record (`FlowRecord::ctr`).
//!
//! Guarantees:
//! - A container is keyed by (name, id); its interfaces (host veths) and
//!   netns inodes are listed. "In" is traffic into the container, "out" out of it.
//! - Which ends count: when a record's capture point is a container's veth
//!   (an end attributed by `interface`), only that end counts: the other end's
//!   container, if any, sees the same frames on its own veth, where they are
//!   counted in its own records. Otherwise (capture on a bridge or a physical
//!   interface) every attributed end counts. So with every container veth
//!   captured (`CJ_IFACE=containers`), a container's PACKETS_IN/OUT and
//!   FRAME_BYTES_IN/OUT equal its host veths' kernel counters (tx/rx seen from
//!   the host side) for the frames the capture saw.
//! - Every kind of record counts: IP flows (with IP bytes and flows), non-IP
//!   frames (ARP...) and malformed frames, each also by protocol (`tcp`,
//!   `udp`, ... as pmacct names them, `arp`, `ethertype-0xXXXX`, `malformed`).
//! - In fan-out mode only the first queue's records count (every queue sees
//!   every packet), as for the main table.
//! - Optional per-container flow logs keep, for each container, the
//!   5-tuple rows of the IP flows it takes part in.

use std::collections::BTreeMap;

use serde::Serialize;
use station::proto::proto_name;
use station::record::{AttributedBy, ContainerRef, EndReason, FlowRecord, RecordKind};
use wire::ethernet::EtherType;

use crate::aggregate::Aggregate;
use crate::settings::Primitives;

/// Counters of one protocol of one container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProtoCounters {
    /// Frames into the container.
    pub packets_in: u64,
    /// Frames out of it.
    pub packets_out: u64,
    /// Frame bytes in.
    pub frame_bytes_in: u64,
    /// Frame bytes out.
    pub frame_bytes_out: u64,
}

/// One container's totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ContainerTotals {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// Host veths it was seen on.
    pub veths: Vec<String>,
    /// Netns inodes.
    pub netns: Vec<u64>,
    /// Frames into the container.
    pub packets_in: u64,
    /// Frames out of it.
    pub packets_out: u64,
    /// Frame bytes in.
    pub frame_bytes_in: u64,
    /// Frame bytes out.
    pub frame_bytes_out: u64,
    /// IP bytes in.
    pub ip_bytes_in: u64,
    /// IP bytes out.
    pub ip_bytes_out: u64,
    /// Directional IP flows (as the FLOWS column of flows.csv).
    pub flows: u64,
    /// Non-IP and malformed frames (in + out).
    pub non_ip_frames: u64,
    /// By protocol.
    pub by_protocol: BTreeMap<String, ProtoCounters>,
}

/// Every container's totals, and optional per-container flow tables.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Containers {
    rows: BTreeMap<(String, String), ContainerTotals>,
    logs: Option<BTreeMap<(String, String), Aggregate>>,
    /// Row limit of each flow log table (CJ_APP_MAX_ROWS).
    max_rows: usize,
}

fn protocol_of(r: &FlowRecord) -> String {
    match r.record_kind() {
        Some(RecordKind::Ip) => proto_name(r.proto).into_owned(),
        Some(RecordKind::NonIp) if r.ethertype == EtherType::ARP => "arp".to_owned(),
        Some(RecordKind::NonIp) => format!("ethertype-0x{:04x}", r.ethertype),
        _ => "malformed".to_owned(),
    }
}

impl Containers {
    /// Empty; `logs` keeps per-container flow tables.
    pub fn new(logs: bool) -> Self {
        Self { rows: BTreeMap::new(), logs: logs.then(BTreeMap::new), max_rows: usize::MAX }
    }

    /// Bounds each per-container flow table to `max_rows` rows plus the overflow row.
    pub fn with_max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = max_rows;
        self
    }

    /// Number of containers seen.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no record was attributed.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a valid record.
    pub fn add(&mut self, r: &FlowRecord) {
        let ends = [&r.ctr[0], &r.ctr[1]];
        if !ends.iter().any(|c| c.is_some()) {
            return;
        }
        let on_veth = ends.iter().any(|c| c.attributed_by() == AttributedBy::Interface);
        let ip = r.record_kind() == Some(RecordKind::Ip);
        let closes = r.end() != Some(EndReason::ActiveTimeout);
        let proto = protocol_of(r);
        for (side, c) in ends.into_iter().enumerate() {
            if !c.is_some() || (on_veth && c.attributed_by() != AttributedBy::Interface) {
                continue;
            }
            let (out, inn) = (&r.dir[side], &r.dir[1 - side]);
            let t = self.entry(c);
            t.packets_out += out.packets;
            t.packets_in += inn.packets;
            t.frame_bytes_out += out.frame_bytes;
            t.frame_bytes_in += inn.frame_bytes;
            if ip {
                t.ip_bytes_out += out.ip_bytes;
                t.ip_bytes_in += inn.ip_bytes;
                if closes {
                    t.flows += u64::from(r.had_packets(side)) + u64::from(r.had_packets(1 - side));
                }
            } else {
                t.non_ip_frames += out.packets + inn.packets;
            }
            let p = t.by_protocol.entry(proto.clone()).or_default();
            p.packets_out += out.packets;
            p.packets_in += inn.packets;
            p.frame_bytes_out += out.frame_bytes;
            p.frame_bytes_in += inn.frame_bytes;
            if ip {
                let max_rows = self.max_rows;
                if let Some(logs) = self.logs.as_mut() {
                    logs.entry((c.name_str().to_owned(), c.id_str().to_owned()))
                        .or_insert_with(|| Aggregate::new(Primitives::default_set()).with_max_rows(max_rows))
                        .add_ip(r);
                }
            }
        }
    }

    fn entry(&mut self, c: &ContainerRef) -> &mut ContainerTotals {
        let key = (c.name_str().to_owned(), c.id_str().to_owned());
        let t = self.rows.entry(key).or_insert_with(|| ContainerTotals {
            name: c.name_str().to_owned(),
            id: c.id_str().to_owned(),
            ..Default::default()
        });
        let veth = c.veth_str();
        if !veth.is_empty() && !t.veths.iter().any(|v| v == veth) {
            t.veths.push(veth.to_owned());
            t.veths.sort();
        }
        if c.netns != 0 && !t.netns.contains(&c.netns) {
            t.netns.push(c.netns);
            t.netns.sort_unstable();
        }
        t
    }

    /// The containers sorted by name, then id.
    pub fn rows(&self) -> impl Iterator<Item = &ContainerTotals> {
        self.rows.values()
    }

    /// Forgets the flow tables' changed rows (a checkpoint saves these tables whole).
    pub fn clear_changes(&mut self) {
        if let Some(logs) = self.logs.as_mut() {
            logs.values_mut().for_each(Aggregate::clear_changes);
        }
    }

    /// Rows in the per-container flow tables (0 when not kept): a
    /// checkpoint frame carries them whole.
    pub fn log_rows(&self) -> usize {
        self.logs.as_ref().map_or(0, |l| l.values().map(Aggregate::len).sum())
    }

    /// The per-container flow tables, when kept.
    pub fn logs(&self) -> Option<&BTreeMap<(String, String), Aggregate>> {
        self.logs.as_ref()
    }
}

/// `containers.csv`: header and one row per container.
pub fn csv_text(c: &Containers) -> String {
    let mut s = String::from(
        "CONTAINER,ID,PACKETS_IN,PACKETS_OUT,FRAME_BYTES_IN,FRAME_BYTES_OUT,IP_BYTES_IN,IP_BYTES_OUT,FLOWS,\
         NON_IP_FRAMES,VETHS,NETNS,PROTOCOLS\n",
    );
    for t in c.rows() {
        let protos: Vec<String> =
            t.by_protocol.iter().map(|(p, v)| format!("{p}:{}/{}", v.packets_in, v.packets_out)).collect();
        let netns: Vec<String> = t.netns.iter().map(u64::to_string).collect();
        s += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            csv_cell(&t.name),
            csv_cell(&t.id),
            t.packets_in,
            t.packets_out,
            t.frame_bytes_in,
            t.frame_bytes_out,
            t.ip_bytes_in,
            t.ip_bytes_out,
            t.flows,
            t.non_ip_frames,
            csv_cell(&t.veths.join(";")),
            netns.join(";"),
            protos.join(";")
        );
    }
    s
}

/// A CSV cell: quoted when it holds a comma, quote or newline.
fn csv_cell(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// `containers.json`: JSON lines, one object per container.
pub fn json_text(c: &Containers) -> String {
    let mut s = String::new();
    for t in c.rows() {
        s += &serde_json::to_string(t).unwrap_or_default();
        s.push('\n');
    }
    s
}

/// A file name for a container's flow log: the name, with anything but
/// `[A-Za-z0-9._-]` replaced by `_`, and the id when it differs.
pub fn log_file_name(name: &str, id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
    };
    if name == id || id.is_empty() {
        clean(name)
    } else {
        format!("{}-{}", clean(name), clean(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::ip_record;
    use station::record::{fixed_text, DirCounters};

    fn ctr(name: &str, by: AttributedBy) -> ContainerRef {
        ContainerRef {
            netns: 4026530000 + name.len() as u64,
            nsid: 1,
            by: by as u8,
            id: fixed_text(name),
            name: fixed_text(name),
            veth: fixed_text(&format!("v-{name}")),
            ..Default::default()
        }
    }

    #[test]
    fn veth_captures_count_only_the_capturing_end() {
        let mut c = Containers::new(true);
        // a -> b seen on a's veth (a by interface, b by MAC), and on b's veth.
        let mut on_a = ip_record([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, 17, (3, 300), (2, 200), EndReason::IdleTimeout);
        on_a.ctr = [ctr("a", AttributedBy::Interface), ctr("b", AttributedBy::Mac)];
        let mut on_b = on_a;
        on_b.ctr = [ctr("a", AttributedBy::Mac), ctr("b", AttributedBy::Interface)];
        c.add(&on_a);
        c.add(&on_b);
        let rows: Vec<&ContainerTotals> = c.rows().collect();
        assert_eq!(rows.len(), 2);
        let (a, b) = (rows[0], rows[1]);
        assert_eq!((a.name.as_str(), a.packets_out, a.packets_in), ("a", 3, 2));
        assert_eq!((b.name.as_str(), b.packets_out, b.packets_in), ("b", 2, 3));
        assert_eq!(a.frame_bytes_out, 300 + 14 * 3);
        assert_eq!((a.ip_bytes_out, a.ip_bytes_in, a.flows), (300, 200, 2));
        assert_eq!(a.by_protocol["udp"].packets_out, 3);
        assert_eq!(a.veths, vec!["v-a".to_owned()]);
        assert_eq!(c.logs().unwrap().len(), 2);
    }

    #[test]
    fn bridge_captures_count_both_ends_and_arp() {
        let mut c = Containers::new(false);
        let mut r = ip_record([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, 6, (1, 60), (1, 40), EndReason::EndOfFlow);
        r.ctr = [ctr("a", AttributedBy::Mac), ctr("b", AttributedBy::Ip)];
        c.add(&r);
        let arp = FlowRecord {
            kind: RecordKind::NonIp as u8,
            ethertype: 0x0806,
            dir: [DirCounters { packets: 1, frame_bytes: 42, ..Default::default() }, DirCounters::default()],
            end_reason: EndReason::IdleTimeout as u8,
            ctr: [ctr("a", AttributedBy::Mac), ContainerRef::default()],
            ..Default::default()
        };
        c.add(&arp);
        let text = csv_text(&c);
        assert!(text.starts_with("CONTAINER,ID,PACKETS_IN,PACKETS_OUT,FRAME_BYTES_IN,FRAME_BYTES_OUT,"), "{text}");
        assert!(text.contains("\na,a,1,2,54,116,40,60,2,1,v-a,"), "{text}");
        assert!(text.contains("arp:0/1;tcp:1/1"), "{text}");
        assert!(text.contains("\nb,b,1,1,74,54,60,40,2,0,v-b,"), "{text}");
        let json = json_text(&c);
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["name"], "a");
        assert_eq!(first["by_protocol"]["arp"]["packets_out"], 1);
        assert_eq!(log_file_name("web/1", "abc"), "web_1-abc");
    }

    #[test]
    fn a_veth_name_with_a_comma_keeps_the_containers_csv_row_at_its_13_cells() {
        let mut c = Containers::new(false);
        let mut r = ip_record([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, 17, (1, 100), (1, 100), EndReason::IdleTimeout);
        r.ctr[0] = ContainerRef { veth: fixed_text("veth,1"), ..ctr("web", AttributedBy::Interface) };
        c.add(&r);
        let text = csv_text(&c);
        let row = text.lines().nth(1).expect("a row");
        let (mut cells, mut quoted) = (1, false);
        for ch in row.chars() {
            match ch {
                '"' => quoted = !quoted,
                ',' if !quoted => cells += 1,
                _ => {}
            }
        }
        assert_eq!(cells, 13, "{row}");
        assert!(row.contains("\"veth,1\""), "{row}");
    }
}
