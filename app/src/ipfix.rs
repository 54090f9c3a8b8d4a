//! `CJ_EXPORT`: every flow record the app takes off the record queues, sent
//! as IPFIX (RFC 7011, `ipfix://HOST:PORT`) or NetFlow v9 (RFC 3954,
//! `netflow9://HOST:PORT`) over UDP to one or more collectors (`nfcapd`,
//! `nfacctd`, any IPFIX or NetFlow v9 collector).
//!
//! NetFlow v9 carries the same templates and data records: its header is
//! RFC 3954's (version 9, the count of records in the packet, sysUptime as
//! milliseconds since the exporter started, UNIX seconds, a sequence number
//! that counts export packets, the source id `CJ_CLUSTER_ID`), its template
//! FlowSet id is 0, and the elements keep their IANA numbers (the v9 field
//! types 1..=80 are the same numbers; flowStartMilliseconds(152) and
//! flowEndMilliseconds(153) are IPFIX numbers that nfdump and pmacct also
//! read in v9, so times stay absolute instead of relative to a sysUptime
//! that a days-old capture would overflow; flowEndReason(136) goes out too,
//! but nfdump 1.7 does not read it in v9, only in IPFIX).
//!
//! Each [`FlowRecord`] of kind IP becomes up to two IPFIX data records, one per
//! direction that has packets, the sending side as source (side a→b from
//! `dir[0]`, b→a from `dir[1]`). Counts are deltas: an interim record (end
//! reason 2, active timeout, emitted every `CJ_REFRESH`) carries what the flow
//! counted since its previous record, so a collector's sum over the data
//! records of a 5-tuple equals the station's totals (and `flows.csv`).
//!
//! Templates (fixed, set id 2): 256 for IPv4, 257 for IPv6, with the IANA
//! elements, in this order: sourceIPv4Address(8) / sourceIPv6Address(27),
//! destinationIPv4Address(12) / destinationIPv6Address(28),
//! sourceTransportPort(7), destinationTransportPort(11), protocolIdentifier(4),
//! packetDeltaCount(2, 8 bytes), octetDeltaCount(1, 8 bytes: IP bytes, as
//! flows.csv's BYTES), flowStartMilliseconds(152), flowEndMilliseconds(153)
//! (the record's first and last packet), tcpControlBits(6, 2 bytes),
//! vlanId(58, the outer VLAN), ingressInterface(10, 4 bytes: the capture
//! source's index, as `sources` in the cluster directory lists them),
//! flowEndReason(136), sourceMacAddress(56), destinationMacAddress(80),
//! interfaceName(82, 16 bytes).
//! 82 bytes per IPv4 data record, 106 per IPv6 one.
//!
//! Container attribution goes out as the standard interface name element, not
//! as enterprise-specific ones: interfaceName(82) carries the host-side veth
//! of the sending end's container (NUL-padded, all zero when the sender is in
//! no container), which `cj-detector --inventory` and `containers.csv` map to
//! the container's name and id. No enterprise number is declared (the
//! project has none, and nfdump and pmacct would drop such elements).
//! ingressInterface is the capture source's index.
//!
//! Why by hand: on docs.rs, `ipfix` (0.1.1, nom 2) and `ipfix-parser` only
//! parse; `rustflow_export` is an application's exporter built on its own
//! parser crate and anyhow; `flowscope` and `netring` carry IPFIX encoders
//! inside large packet-capture crates that change version every few weeks.
//! The encoder needed here is two fixed templates and big-endian fields
//! (about a hundred lines, tested below against hand-decoded bytes), smaller
//! than any of those dependencies.
//!
//! Pacing (`CJ_EXPORT_RATE=R`: at most R data records a second to each
//! collector, 100..=1000000; 0 or empty: unpaced, the default). Records, not
//! messages: a collector's capacity is quoted in flows a second, the station
//! counts records (`records_exported`, the stats line), and a message holds
//! 12 to 16 of them depending on the IPv4/IPv6 mix, so a rate of messages
//! would tell the operator less. A flow direction with packets is one data
//! record: a flow seen both ways is two.
//!
//! Behind (`CJ_EXPORT_BEHIND`, paced only): `wait` (the default) holds the
//! intake back, so the export is whole and a long burst slows the station
//! (below); with `drop` the export never limits it: the app takes records
//! at full speed (its tables and files stay exact) and a data record that
//! finds the export holding its bound is not exported, counted per
//! collector in `records_dropped_behind` (a counter of its own:
//! `records_dropped` means a send failed or a collector refused, this means
//! the collector was never sent the record, by design). The newest records
//! are the ones dropped (those held go out in order at R), so a collector
//! sees at most R a second of the stream, with gaps, never reordered.
//!
//! How: a token bucket in the exporter, driven by the main loop's
//! [`Exporter::tick`], not a sender thread. The main loop owns the exporter
//! as it owns the tables; a thread would add a channel and its bound, a
//! second owner of the sequence numbers and a handshake before every
//! checkpoint for what the loop learns here from [`Exporter::all_sent`]. A
//! sealed message waits in a queue until the bucket holds as many tokens as
//! it has records; the bucket earns R a second and holds at most
//! [`BURST_TIME`] of them (at least a full message), so after the loop was
//! busy (a refresh writing the files) the export catches up with at most
//! 10 ms worth at once: R is a ceiling, not a promise. While the loop waits
//! for the export it sleeps at most 5 ms at a time and serves queries,
//! `/metrics`, the heartbeat and the watchdog between the sleeps.
//!
//! Guarantees:
//! - Off when `CJ_EXPORT` is empty. A value that is not a comma-separated list
//!   of `ipfix://HOST:PORT` (HOST a name, an IPv4 address or `[IPv6]`, PORT
//!   1..=65535), a name that does not resolve, or a socket that cannot be
//!   opened is refused at start with one line naming the fix (exit 2).
//! - Templates go to each collector at start, before every
//!   [`TEMPLATE_EVERY`]th (16th) data message and at least every
//!   [`TEMPLATE_INTERVAL`] (10 s), and again before the next data after a
//!   send to it failed (a collector that was down, and whose closed port
//!   answered with ICMP, learns them at once). A collector restarted between
//!   two sends (or behind a firewall that drops ICMP) misses, at most, the
//!   data messages sent before the next templates: 16 messages, or 10 s of
//!   a slow export; those are counted exported (UDP says nothing of them).
//! - Every message is at most [`MAX_MESSAGE`] bytes (under a 1500-byte path
//!   MTU with IPv6 and UDP headers). Pending data records are sealed into a
//!   message once it is full, when the oldest has waited [`FLUSH_INTERVAL`],
//!   before each checkpoint and at the end of the run; unpaced, a sealed
//!   message is sent at once.
//! - Paced: a collector gets at most R data records in any second plus one
//!   burst ([`BURST_TIME`] at R, at least a full message), in the order they
//!   were read. The records held, sealed and being filled, are at most
//!   `max(R / 10, 64, 2 x exported queues)` ([`HELD_TIME`], [`MIN_HELD`]),
//!   each costing at most 144 bytes with its share of the message (a
//!   message of one IPv6 record; 85 to 110 in full messages, kept at their
//!   length): at most 14.4 MB at a million a second, 14.4 KB at 1,000. The
//!   main loop takes records only while the export has room for them
//!   ([`Exporter::intake_room`]; `CJ_EXPORT_BEHIND=wait`, the default, for
//!   this whole paragraph), so pacing drops nothing: the rest
//!   waits in the record queues, whose backpressure reaches the detector (it
//!   waits) and, once the packet queues are full, the balancer (an offline
//!   source waits; a live one drops, counted in `queue_dropped` and the
//!   identity). `intake_held_ms` counts the time the app held records back.
//!   Templates are not paced (one message per collector per 16 data
//!   messages, at least every 10 s, and after a failed send).
//! - Paced with `CJ_EXPORT_BEHIND=drop`: the export never limits the
//!   intake and holds at most the same bound; the intake waits only for a
//!   checkpoint, and only once a record queue has three quarters of its
//!   slots held (below). Every
//!   data record built is sent, counted in `records_dropped` (a failed
//!   send), counted in `records_dropped_behind` (not sent: the export held
//!   its bound, or a checkpoint waited, below), or still held: with C
//!   collectors, C x `records` = `records_exported` + `records_dropped` +
//!   `records_dropped_behind` + C x held. Dropping behind warns at most once a
//!   minute.
//! - IPFIX: the header's sequence number is the number of data records sent
//!   before the message in this observation domain (RFC 7011 section 3.1).
//!   NetFlow v9: it counts the export packets (templates included) sent to
//!   that collector before this one, and the header's count is the records
//!   in the packet (RFC 3954 section 5.1). The observation domain / source id
//!   is `CJ_CLUSTER_ID`; export time is wall clock.
//! - Sockets are non-blocking and connected: a send that fails (would block,
//!   no route) drops that message, counts its data records in
//!   `records_dropped` and warns at most once a minute per collector; it
//!   never stops or slows the app. A refusal (ECONNREFUSED) is the ICMP port
//!   unreachable of an earlier message, reported on a later send that did
//!   not go out: the last data message sent to that collector is counted
//!   lost (moved from `records_exported` to `records_dropped`), and the
//!   message in hand is sent again after the templates (the collector may
//!   have restarted). `summary.json` (`export`) and the stats line show the
//!   counts.
//! - Every set is padded to 4 bytes (RFC 3954 section 5.3; RFC 7011 section
//!   3.3.1 allows it).
//! - The app sends its pending records before each checkpoint, so a record a
//!   checkpoint counts has been sent: after a crash the restarted app goes on
//!   after it (a record sent and not yet checkpointed is sent again: at least
//!   once). Paced, the checkpoint waits until the export has sent what it
//!   holds (at most its bound at R: 0.1 s, or 64 / R s at low rates), taking
//!   no records meanwhile; and while records are held the app checkpoints at
//!   least once a second, so a detector stopping behind a full record queue
//!   sees room well within its patience (5 s). With `CJ_EXPORT_BEHIND=drop`
//!   the checkpoint waits the same way for what the export holds, but the
//!   app keeps taking records meanwhile: into its tables, their export
//!   counted dropped behind (the checkpoint counts them, so they may not
//!   wait in the export); only once a record queue has three quarters of
//!   its slots held (they are released by the save) does the app wait for
//!   the checkpoint, counted in `intake_held_ms` (`main.rs`). So a record a
//!   checkpoint counts was sent or counted, and the export stays at least
//!   once across a crash. The counters are in the checkpoint
//!   ([`SavedExport`]): an app started again from it continues them, so
//!   what a stopped or killed app counted dropped behind stays counted (a
//!   record read after the checkpoint is built and counted again, as it is
//!   exported again). The app checkpoints as when unpaced (no
//!   once-a-second checkpoint: the intake keeps up).
//! - At the end of the run (every queue ended, or a stop after draining what
//!   the record queues hold) the records still held go out at R before the
//!   final files, which count them, are written; the main loop's services
//!   go on meanwhile. With `CJ_EXPORT_BEHIND=drop` the record queues are
//!   drained at full speed and what is held is at most the bound: a stop
//!   takes at most the bound over R (0.1 s; 64 / R s at low rates) longer
//!   than an unpaced one. A second SIGINT/SIGTERM, 1 s or more after the
//!   first, exits at once (status 1, `main.rs`), without the files: the last
//!   checkpoint stands (a repeat within 1 s is the same stop request).
//! - In fan-out mode (`ZBALANCE_HASH_MODE=2`, every queue sees every packet)
//!   only the first queue's records are exported, as for the container table.
//!
//! Not guaranteed: delivery. UDP has no acknowledgement: a collector whose
//! receive buffer overflows loses messages without the app knowing (the
//! sequence numbers let the collector see the gap). Unpaced, a flow table
//! ending at once (the end of a capture, a flush) goes out as fast as the
//! socket takes it: give the collector a receive buffer for it (`nfcapd
//! -B`) or pace the export. Paced at a rate the collector does not keep up
//! with, or with a collector descheduled longer than its buffer holds at R,
//! it still loses. How long a paced stop takes: what is left to send, over
//! R (README, "IPFIX and NetFlow v9 export"); a stop timeout shorter than
//! that kills the app before its files are written. With
//! `CJ_EXPORT_BEHIND=drop`, which records reach the collector: a burst's
//! first ones, and R a second of what follows; while a checkpoint waits for
//! the held ones (at most the bound over R: 0.1 s, 64 / R s at low rates),
//! records taken are dropped even if the rate would have had room for them
//! later. Whether the intake waits: a record queue that gets a quarter of
//! its slots within such a wait (with the default 65,536 slots, 16,384
//! records in 0.1 s) holds the detector back until the save. While a collector is
//! down, a refusal may stand for several lost messages: `records_dropped`
//! is then a lower bound. Non-IP and malformed records are not exported (no
//! IPFIX template here fits them); their frames stay in `flows.csv`'s totals
//! and `summary.json`.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use station::config::{ConfigError, ExportBehind, StationConfig};
use station::record::{FlowRecord, RecordKind};

/// The variable.
const VAR: &str = "CJ_EXPORT";
/// The scheme of an IPFIX destination.
const SCHEME: &str = "ipfix://";
/// The scheme of a NetFlow v9 destination.
const SCHEME_V9: &str = "netflow9://";
/// IPFIX version number (RFC 7011 section 3.1).
pub const VERSION: u16 = 10;
/// NetFlow version number (RFC 3954 section 5.1).
pub const VERSION_V9: u16 = 9;
/// Set id of a template set.
pub const TEMPLATE_SET_ID: u16 = 2;
/// FlowSet id of a NetFlow v9 template FlowSet.
pub const TEMPLATE_SET_ID_V9: u16 = 0;
/// Template of IPv4 data records.
pub const TEMPLATE_V4: u16 = 256;
/// Template of IPv6 data records.
pub const TEMPLATE_V6: u16 = 257;
/// Largest message sent.
pub const MAX_MESSAGE: usize = 1400;
/// Templates are sent again at least this often.
pub const TEMPLATE_INTERVAL: Duration = Duration::from_secs(10);
/// ... and before every this many data messages to a collector (softflowd's
/// default, 16): a collector restarted between two sends (no ICMP comes back,
/// so no send fails) decodes nothing until it has the templates again, and
/// this bounds what it misses at a busy export to 16 messages, not
/// [`TEMPLATE_INTERVAL`] of them. The cost: one template message (about 100
/// bytes) per 16 data messages of up to [`MAX_MESSAGE`] bytes.
pub const TEMPLATE_EVERY: u32 = 16;
/// Pending data records wait at most this long.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Paced: the data records held (sealed messages waiting for their turn and
/// the message being filled) are at most this much time at the rate (and at
/// least [`MIN_HELD`] and two per exported queue): the wait of a checkpoint for
/// them to go out.
pub const HELD_TIME: Duration = Duration::from_millis(100);
/// Paced: the least number of data records held (four full IPv4 messages).
pub const MIN_HELD: usize = 64;
/// Paced: the largest burst, as time at the rate (at least one full message):
/// after the main loop was busy (a refresh writing the files), the export
/// does not catch up with more than this at once.
pub const BURST_TIME: Duration = Duration::from_millis(10);
/// Most data records one message holds (IPv4 ones).
pub const MAX_MESSAGE_RECORDS: usize = (MAX_MESSAGE - HEADER_LEN_V9 - SET_HEADER_LEN - 3) / RECORD_LEN_V4;
/// Warnings about one collector come at most this often.
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// IPFIX message header length.
const HEADER_LEN: usize = 16;
/// NetFlow v9 packet header length.
const HEADER_LEN_V9: usize = 20;

/// The export protocol of one collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// IPFIX (RFC 7011).
    Ipfix,
    /// NetFlow version 9 (RFC 3954).
    NetflowV9,
}

impl Protocol {
    fn header_len(self) -> usize {
        match self {
            Protocol::Ipfix => HEADER_LEN,
            Protocol::NetflowV9 => HEADER_LEN_V9,
        }
    }
}

/// What a message header carries besides its body.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// Seconds since the epoch.
    pub export_time: u32,
    /// IPFIX: data records sent before this message; v9: export packets sent before this one.
    pub seq: u32,
    /// Observation domain (IPFIX) or source id (v9).
    pub domain: u32,
    /// v9 only: milliseconds since the exporter started.
    pub uptime_ms: u32,
    /// v9 only: records (template or data) in the body.
    pub count: u16,
}

/// `body` (sets or FlowSets) behind `protocol`'s header.
pub fn frame(protocol: Protocol, body: &[u8], h: Header) -> Vec<u8> {
    let mut m = Vec::with_capacity(protocol.header_len() + body.len());
    match protocol {
        Protocol::Ipfix => {
            let len = (HEADER_LEN + body.len()) as u16;
            m.extend_from_slice(&VERSION.to_be_bytes());
            m.extend_from_slice(&len.to_be_bytes());
            m.extend_from_slice(&h.export_time.to_be_bytes());
            m.extend_from_slice(&h.seq.to_be_bytes());
            m.extend_from_slice(&h.domain.to_be_bytes());
        }
        Protocol::NetflowV9 => {
            m.extend_from_slice(&VERSION_V9.to_be_bytes());
            m.extend_from_slice(&h.count.to_be_bytes());
            m.extend_from_slice(&h.uptime_ms.to_be_bytes());
            m.extend_from_slice(&h.export_time.to_be_bytes());
            m.extend_from_slice(&h.seq.to_be_bytes());
            m.extend_from_slice(&h.domain.to_be_bytes());
        }
    }
    m.extend_from_slice(body);
    m
}
/// Set header length.
const SET_HEADER_LEN: usize = 4;

/// (element id, length) of the IPv4 template's fields, in order.
const FIELDS_V4: [(u16, u16); 16] = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (2, 8),
    (1, 8),
    (152, 8),
    (153, 8),
    (6, 2),
    (58, 2),
    (10, 4),
    (136, 1),
    (56, 6),
    (80, 6),
    (82, 16),
];

/// The IPv6 template's fields: the IPv4 ones with IPv6 addresses.
const FIELDS_V6: [(u16, u16); 16] = {
    let mut f = FIELDS_V4;
    f[0] = (27, 16);
    f[1] = (28, 16);
    f
};

const fn record_len(fields: &[(u16, u16)]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < fields.len() {
        n += fields[i].1 as usize;
        i += 1;
    }
    n
}

/// Bytes of one IPv4 data record.
pub const RECORD_LEN_V4: usize = record_len(&FIELDS_V4);
/// Bytes of one IPv6 data record.
pub const RECORD_LEN_V6: usize = record_len(&FIELDS_V6);

const _: () = assert!(RECORD_LEN_V4 == 82 && RECORD_LEN_V6 == 106);

/// One direction of a flow record, as one IPFIX data record carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirRecord {
    /// IPv6 (template 257) or IPv4 (256, addresses in the first 4 bytes).
    pub v6: bool,
    /// Sending side's address.
    pub src: [u8; 16],
    /// Receiving side's address.
    pub dst: [u8; 16],
    /// Sending side's port.
    pub src_port: u16,
    /// Receiving side's port.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Packets (delta).
    pub packets: u64,
    /// IP bytes (delta).
    pub octets: u64,
    /// First packet of the record, ms since the epoch.
    pub start_ms: u64,
    /// Last packet of the record, ms since the epoch.
    pub end_ms: u64,
    /// TCP flags ORed over this direction.
    pub tcp_flags: u8,
    /// Outer VLAN.
    pub vlan: u16,
    /// Capture source index.
    pub ingress: u32,
    /// flowEndReason.
    pub end_reason: u8,
    /// Sending side's MAC.
    pub src_mac: [u8; 6],
    /// Receiving side's MAC.
    pub dst_mac: [u8; 6],
    /// interfaceName: the host-side veth of the sending end's container
    /// (NUL-padded; all zero when the sender is in no container).
    pub src_veth: [u8; 16],
}

impl DirRecord {
    /// The directions of `r` that have packets (none for non-IP records).
    pub fn of(r: &FlowRecord) -> impl Iterator<Item = DirRecord> + '_ {
        let ip = r.record_kind() == Some(RecordKind::Ip) && matches!(r.ip_version, 4 | 6);
        (0..2).filter(move |&d| ip && r.dir[d].packets > 0).map(move |d| {
            let (src, dst, sp, dp, sm, dm) = if d == 0 {
                (r.addr_a, r.addr_b, r.port_a, r.port_b, r.mac_a, r.mac_b)
            } else {
                (r.addr_b, r.addr_a, r.port_b, r.port_a, r.mac_b, r.mac_a)
            };
            let sender = &r.ctr[d];
            let src_veth = if sender.is_some() { sender.veth } else { [0; 16] };
            DirRecord {
                v6: r.ip_version == 6,
                src,
                dst,
                src_port: sp,
                dst_port: dp,
                proto: r.proto,
                packets: r.dir[d].packets,
                octets: r.dir[d].ip_bytes,
                start_ms: r.first_ns / 1_000_000,
                end_ms: r.last_ns / 1_000_000,
                tcp_flags: r.dir[d].tcp_flags,
                vlan: r.vlan & 0x0fff,
                ingress: u32::from(r.source),
                end_reason: r.end_reason,
                src_mac: sm,
                dst_mac: dm,
                src_veth,
            }
        })
    }

    /// Its template.
    pub fn template(&self) -> u16 {
        if self.v6 {
            TEMPLATE_V6
        } else {
            TEMPLATE_V4
        }
    }

    /// Its encoded length.
    pub fn len(&self) -> usize {
        if self.v6 {
            RECORD_LEN_V6
        } else {
            RECORD_LEN_V4
        }
    }

    /// Appends the data record's bytes (the template's field order).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let alen = if self.v6 { 16 } else { 4 };
        out.extend_from_slice(&self.src[..alen]);
        out.extend_from_slice(&self.dst[..alen]);
        out.extend_from_slice(&self.src_port.to_be_bytes());
        out.extend_from_slice(&self.dst_port.to_be_bytes());
        out.push(self.proto);
        out.extend_from_slice(&self.packets.to_be_bytes());
        out.extend_from_slice(&self.octets.to_be_bytes());
        out.extend_from_slice(&self.start_ms.to_be_bytes());
        out.extend_from_slice(&self.end_ms.to_be_bytes());
        out.extend_from_slice(&u16::from(self.tcp_flags).to_be_bytes());
        out.extend_from_slice(&self.vlan.to_be_bytes());
        out.extend_from_slice(&self.ingress.to_be_bytes());
        out.push(self.end_reason);
        out.extend_from_slice(&self.src_mac);
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_veth);
    }
}

/// The body of a template message: one template set with both templates
/// (set id 2 for IPFIX, FlowSet id 0 for NetFlow v9). Two records.
pub fn template_body(protocol: Protocol) -> Vec<u8> {
    let mut m = Vec::new();
    let set_len = SET_HEADER_LEN + 2 * (4 + 4 * FIELDS_V4.len());
    let id = match protocol {
        Protocol::Ipfix => TEMPLATE_SET_ID,
        Protocol::NetflowV9 => TEMPLATE_SET_ID_V9,
    };
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&(set_len as u16).to_be_bytes());
    for (id, fields) in [(TEMPLATE_V4, &FIELDS_V4), (TEMPLATE_V6, &FIELDS_V6)] {
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for &(ie, len) in fields {
            m.extend_from_slice(&ie.to_be_bytes());
            m.extend_from_slice(&len.to_be_bytes());
        }
    }
    m
}

/// An IPFIX message holding both templates.
#[cfg(test)]
fn template_message(export_time: u32, seq: u32, domain: u32) -> Vec<u8> {
    let h = Header { export_time, seq, domain, uptime_ms: 0, count: 2 };
    frame(Protocol::Ipfix, &template_body(Protocol::Ipfix), h)
}

/// The body of a data message being filled: data sets (a new set whenever
/// the template changes), sized so that either protocol's header fits in
/// [`MAX_MESSAGE`] with it.
#[derive(Debug)]
pub struct DataMessage {
    buf: Vec<u8>,
    /// Offset and template of the open set.
    open: Option<(usize, u16)>,
    records: u32,
}

impl Default for DataMessage {
    fn default() -> Self {
        DataMessage { buf: Vec::with_capacity(MAX_MESSAGE), open: None, records: 0 }
    }
}

impl DataMessage {
    /// Data records in it.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Adds `d`; `false` (and nothing added) when the message would exceed
    /// [`MAX_MESSAGE`].
    pub fn push(&mut self, d: &DirRecord) -> bool {
        let new_set = self.open.is_none_or(|(_, t)| t != d.template());
        // With the padding the set may take when it is closed (at most 3 bytes; a
        // new set closes the open one, whose padding is then counted too).
        let need = d.len() + if new_set { SET_HEADER_LEN + 3 } else { 0 } + 3;
        if HEADER_LEN_V9.max(HEADER_LEN) + self.buf.len() + need > MAX_MESSAGE {
            return false;
        }
        if new_set {
            self.close_set();
            self.open = Some((self.buf.len(), d.template()));
            self.buf.extend_from_slice(&d.template().to_be_bytes());
            self.buf.extend_from_slice(&[0, 0]);
        }
        d.encode(&mut self.buf);
        self.records += 1;
        true
    }

    fn close_set(&mut self) {
        if let Some((at, _)) = self.open.take() {
            // Padded to 4 bytes (RFC 3954 section 5.3 asks for it; RFC 7011
            // section 3.3.1 allows it: 1 to 3 bytes, shorter than any record).
            self.buf.resize(at + (self.buf.len() - at).next_multiple_of(4), 0);
            let len = (self.buf.len() - at) as u16;
            self.buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// The finished body (sets closed); the message is then empty again.
    pub fn take(&mut self) -> Vec<u8> {
        self.close_set();
        std::mem::take(self).buf
    }
}

/// Export counters and settings (summed over the collectors), for
/// `summary.json` and the stats line (the counters flattened into it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportStats {
    /// The counters, which a checkpoint keeps.
    #[serde(flatten)]
    pub counters: SavedExport,
    /// `CJ_EXPORT_RATE`: data records per second to each collector (0: unpaced).
    pub rate: u32,
    /// `CJ_EXPORT_BEHIND`: `wait` or `drop` (what a paced export does when
    /// it holds as many records as it may).
    pub behind: &'static str,
}

/// The export's counters, summed over the collectors; a checkpoint keeps them
/// (checkpoint.rs), so that a restarted app continues them as it continues
/// its totals: a record a checkpoint counts whose export was dropped behind
/// is never exported by the next app, and must stay counted in the run's
/// `records_dropped_behind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedExport {
    /// Data records built (one per direction with packets).
    pub records: u64,
    /// Data records sent, per collector (a record sent to two counts twice).
    pub records_exported: u64,
    /// Data records in messages whose send failed, per collector.
    pub records_dropped: u64,
    /// Data records not exported because the paced export held as many as it
    /// may (`CJ_EXPORT_BEHIND=drop`), per collector (one not exported to two
    /// collectors counts twice): never built into a message, never sent.
    pub records_dropped_behind: u64,
    /// Messages sent (templates included).
    pub messages: u64,
    /// Failed sends.
    pub send_errors: u64,
    /// Milliseconds the app took no records because the paced export held
    /// as many as it may, or a checkpoint waited for it to send them (the
    /// record queues held the rest back).
    pub intake_held_ms: u64,
}

impl SavedExport {
    /// Adds `other`'s counts to these.
    fn add(&mut self, other: &SavedExport) {
        self.records += other.records;
        self.records_exported += other.records_exported;
        self.records_dropped += other.records_dropped;
        self.records_dropped_behind += other.records_dropped_behind;
        self.messages += other.messages;
        self.send_errors += other.send_errors;
        self.intake_held_ms += other.intake_held_ms;
    }
}

/// One collector.
#[derive(Debug)]
struct Collector {
    url: String,
    protocol: Protocol,
    /// NetFlow v9: export packets sent to it so far (its sequence number).
    packets: u32,
    socket: UdpSocket,
    /// When templates are due (now after a failed send).
    templates_at: Instant,
    /// Data messages sent to it since its last templates ([`TEMPLATE_EVERY`]).
    since_templates: u32,
    /// Data records of the last data message sent to it (counted exported
    /// until a refusal says it was lost).
    last_sent: u32,
    last_warning: Option<Instant>,
}

impl Collector {
    fn warn(&mut self, now: Instant, what: &str, e: &io::Error) {
        if self.last_warning.is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL) {
            self.last_warning = Some(now);
            station::cj_warn!(
                "cj-app: warning: flow export to {}: {what}: {e}; its records are counted in export.records_dropped \
                 (check that the collector listens there; this warning repeats at most once a minute)",
                self.url
            );
        }
    }
}

/// The exporter: owned by the main loop, fed every record it takes.
#[derive(Debug)]
pub struct Exporter {
    collectors: Vec<Collector>,
    domain: u32,
    fan_out: bool,
    /// sysUptime's zero (NetFlow v9).
    started: Instant,
    pending: DataMessage,
    pending_since: Option<Instant>,
    /// Data records sent so far in this observation domain (mod 2^32).
    seq: u32,
    stats: ExportStats,
    /// `CJ_EXPORT_RATE` (None: unpaced, a sealed message goes out at once).
    pace: Option<Pace>,
    /// When the export last warned that it dropped records for being behind.
    last_behind_warning: Option<Instant>,
}

/// A paced export's token bucket and the sealed messages waiting for it.
/// Tokens are counted in billionths of a data record, so that a rate times
/// nanoseconds is exact.
#[derive(Debug)]
struct Pace {
    /// Data records per second.
    rate: u32,
    /// Billionths of data records that may go out now.
    tokens: u64,
    /// Most tokens ([`BURST_TIME`] at the rate, at least a full message).
    burst: u64,
    /// When the tokens were counted.
    at: Instant,
    /// Sealed message bodies and their data records, oldest first.
    queue: VecDeque<(Vec<u8>, u32)>,
    /// Data records in `queue`.
    queued: usize,
    /// Most data records held, queued and pending together (see [`HELD_TIME`]).
    bound: usize,
    /// `CJ_EXPORT_BEHIND=drop`: a data record that finds `bound` held is not
    /// exported (counted in `records_dropped_behind`) instead of the intake
    /// waiting for room.
    drop: bool,
}

/// Billionths of a data record in one.
const NANO: u64 = 1_000_000_000;

impl Pace {
    /// The pace of `rate` data records a second, for an intake of `queues`
    /// exported queues, its bucket full at `now`.
    fn new(rate: u32, queues: usize, now: Instant) -> Pace {
        let per_ms = |d: Duration| u64::from(rate) * d.as_millis() as u64 / 1000;
        let burst = per_ms(BURST_TIME).max(MAX_MESSAGE_RECORDS as u64) * NANO;
        let bound = (per_ms(HELD_TIME) as usize).max(MIN_HELD).max(2 * queues);
        Pace { rate, tokens: burst, burst, at: now, queue: VecDeque::new(), queued: 0, bound, drop: false }
    }

    /// The tokens at `now` (those earned since they were counted added).
    fn tokens_at(&self, now: Instant) -> u64 {
        // Capped before multiplying: a bucket fills within BURST_TIME, or a message's time.
        let ns = now.saturating_duration_since(self.at).min(Duration::from_secs(1)).as_nanos() as u64;
        (self.tokens + u64::from(self.rate) * ns).min(self.burst)
    }

    /// Sealed messages whose turn has come by `now`, oldest first, taken off the queue.
    fn due(&mut self, now: Instant) -> Vec<(Vec<u8>, u32)> {
        self.tokens = self.tokens_at(now);
        self.at = now;
        let mut due = Vec::new();
        while let Some(&(_, n)) = self.queue.front() {
            let cost = u64::from(n) * NANO;
            if cost > self.tokens {
                break;
            }
            self.tokens -= cost;
            self.queued -= n as usize;
            due.extend(self.queue.pop_front());
        }
        due
    }

    /// How long from `now` until the oldest sealed message may go (`None`: none is sealed).
    fn next_in(&self, now: Instant) -> Option<Duration> {
        let &(_, n) = self.queue.front()?;
        let missing = (u64::from(n) * NANO).saturating_sub(self.tokens_at(now));
        Some(Duration::from_nanos(missing.div_ceil(u64::from(self.rate))))
    }
}

/// The collectors of `CJ_EXPORT`; empty when off.
///
/// # Errors
/// A value that is not `ipfix://HOST:PORT` or `netflow9://HOST:PORT`
/// (several separated by commas), or a HOST that does not resolve.
pub fn destinations(cfg: &StationConfig) -> Result<Vec<(String, SocketAddr, Protocol)>, ConfigError> {
    parse(&cfg.export, cfg.origin(VAR))
}

fn parse(raw: &str, origin: &str) -> Result<Vec<(String, SocketAddr, Protocol)>, ConfigError> {
    let value = raw.trim();
    let err = |expected: String| ConfigError::new(VAR, value, origin, expected);
    const FORM: &str = "ipfix://HOST:PORT or netflow9://HOST:PORT, several separated by commas (HOST a name, an \
                        IPv4 address or [IPv6], PORT 1..=65535), or empty for no export";
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (rest, protocol) = match (item.strip_prefix(SCHEME), item.strip_prefix(SCHEME_V9)) {
            (Some(rest), _) => (rest, Protocol::Ipfix),
            (_, Some(rest)) => (rest, Protocol::NetflowV9),
            _ => return Err(err(format!("{FORM}; {item:?} starts with neither {SCHEME} nor {SCHEME_V9}"))),
        };
        let port_ok = rest.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_some_and(|p| p != 0);
        if !port_ok {
            return Err(err(format!("{FORM}; {item:?} has no port 1..=65535")));
        }
        let addr = rest
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| err(format!("{FORM}; {rest:?} does not resolve to an address")))?;
        out.push((item.to_owned(), addr, protocol));
    }
    Ok(out)
}

impl Exporter {
    /// The exporter of `cfg`'s `CJ_EXPORT`, with its templates sent; `None` when off.
    ///
    /// # Errors
    /// A bad `CJ_EXPORT` (see [`destinations`]) or a UDP socket that cannot be
    /// opened (named as a configuration error: the destination is unusable here).
    pub fn from_config(cfg: &StationConfig, fan_out: bool) -> Result<Option<Exporter>, ConfigError> {
        let dests = destinations(cfg)?;
        if dests.is_empty() {
            return Ok(None);
        }
        let mut collectors = Vec::new();
        for (url, addr, protocol) in dests {
            let socket = open(addr).map_err(|e| {
                ConfigError::new(
                    VAR,
                    &cfg.export,
                    cfg.origin(VAR),
                    format!("a destination this host can send UDP to; {url}: {e}"),
                )
            })?;
            collectors.push(Collector {
                url,
                protocol,
                packets: 0,
                socket,
                templates_at: Instant::now(),
                since_templates: 0,
                last_sent: 0,
                last_warning: None,
            });
        }
        let mut e = Exporter {
            collectors,
            domain: cfg.cluster_id,
            fan_out,
            started: Instant::now(),
            pending: DataMessage::default(),
            pending_since: None,
            seq: 0,
            stats: ExportStats {
                rate: cfg.export_rate.unwrap_or(0),
                behind: cfg.export_behind.name(),
                ..ExportStats::default()
            },
            pace: None,
            last_behind_warning: None,
        };
        if let Some(rate) = cfg.export_rate {
            // Fan-out: only the first queue's records are exported.
            let queues = if fan_out { 1 } else { cfg.worker_queues().len() };
            let mut pace = Pace::new(rate, queues, Instant::now());
            pace.drop = cfg.export_behind == ExportBehind::Drop;
            e.pace = Some(pace);
        }
        e.tick(Instant::now());
        Ok(Some(e))
    }

    /// The collectors, for the start line.
    pub fn describe(&self) -> String {
        let urls: Vec<&str> = self.collectors.iter().map(|c| c.url.as_str()).collect();
        let pace = self.pace.as_ref().map_or_else(
            || ", unpaced".to_owned(),
            |p| {
                let behind = if p.drop { "; behind, the rest is not exported (counted)" } else { "" };
                format!(", paced at {} data records/s, holding at most {}{behind}", p.rate, p.bound)
            },
        );
        format!("exporting flows to {} (observation domain / source id {}{pace})", urls.join(", "), self.domain)
    }

    /// Counters so far.
    pub fn stats(&self) -> ExportStats {
        self.stats
    }

    /// The counters a checkpoint keeps. Saved only once every record read
    /// was sent or counted (`main.rs`), so none is held.
    pub fn saved(&self) -> SavedExport {
        self.stats.counters
    }

    /// Continues the counters of the checkpoint the app continues (added to
    /// this run's so far: the templates sent at start).
    pub fn continue_from(&mut self, saved: &SavedExport) {
        self.stats.counters.add(saved);
    }

    /// Adds the record `r` of intake queue `qi`. A message that fills is
    /// sealed ([`Exporter::seal`]). Paced with `CJ_EXPORT_BEHIND=drop`, a
    /// data record that finds the export holding its bound is not exported:
    /// counted in `records_dropped_behind` for every collector.
    pub fn add(&mut self, qi: usize, r: &FlowRecord) {
        if self.fan_out && qi != 0 {
            return;
        }
        for d in DirRecord::of(r) {
            self.stats.counters.records += 1;
            if self.pace.as_ref().is_some_and(|p| p.drop && self.unsent() >= p.bound) {
                self.count_behind(1);
                continue;
            }
            if !self.pending.push(&d) {
                self.seal();
                // An empty message always has room for one record.
                let _ = self.pending.push(&d);
            }
            self.pending_since.get_or_insert_with(Instant::now);
        }
    }

    /// Sends templates that are due, seals pending records that waited
    /// [`FLUSH_INTERVAL`], and, paced, sends the sealed messages the rate
    /// allows by now.
    pub fn tick(&mut self, now: Instant) {
        if self.pending_since.is_some_and(|t| now.duration_since(t) >= FLUSH_INTERVAL) {
            self.seal();
        }
        for i in 0..self.collectors.len() {
            if now >= self.collectors[i].templates_at {
                self.send_templates(i, now);
            }
        }
        let Some(p) = self.pace.as_mut() else { return };
        for (body, n) in p.due(now) {
            self.send_data(&body, n);
        }
    }

    /// Ends the message being filled: unpaced, it is sent now; paced, it
    /// waits its turn behind the sealed ones ([`Exporter::tick`] sends it).
    /// Called when a message is full, after [`FLUSH_INTERVAL`], before each
    /// checkpoint and at the end of the run.
    pub fn seal(&mut self) {
        self.pending_since = None;
        let n = self.pending.records();
        if n == 0 {
            return;
        }
        let mut body = self.pending.take();
        match self.pace.as_mut() {
            None => self.send_data(&body, n),
            Some(p) => {
                // Held at its length, not MAX_MESSAGE (the bound's bytes: module doc).
                body.shrink_to_fit();
                p.queued += n as usize;
                p.queue.push_back((body, n));
            }
        }
    }

    /// Takes the record `r` of intake queue `qi` without exporting it: its data
    /// records are counted built and dropped behind, for every collector.
    /// For the records the app takes while a checkpoint waits for the export
    /// to send what it holds, with `CJ_EXPORT_BEHIND=drop` (the checkpoint
    /// counts them, so they may not wait in the export).
    pub fn add_dropped_behind(&mut self, qi: usize, r: &FlowRecord) {
        if self.fan_out && qi != 0 {
            return;
        }
        let n = DirRecord::of(r).count() as u64;
        self.stats.counters.records += n;
        self.count_behind(n);
    }

    /// Counts `n` data records not exported to any collector for being
    /// behind, and warns at most once a minute.
    fn count_behind(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.stats.counters.records_dropped_behind += n * self.collectors.len() as u64;
        let now = Instant::now();
        if self.last_behind_warning.is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL) {
            self.last_behind_warning = Some(now);
            station::cj_warn!(
                "cj-app: warning: flow export behind CJ_EXPORT_RATE={}: {} data record(s) not exported so far to \
                 each of {} collector(s) (CJ_EXPORT_BEHIND=drop; counted in export.records_dropped_behind, once \
                 per collector); raise CJ_EXPORT_RATE if the collectors take more (this warning repeats at most \
                 once a minute)",
                self.stats.rate,
                self.stats.counters.records_dropped_behind / (self.collectors.len().max(1) as u64),
                self.collectors.len()
            );
        }
    }

    /// Paced with `CJ_EXPORT_BEHIND=drop`: the export never holds the intake
    /// back; what does not fit is dropped, counted.
    pub fn drops_behind(&self) -> bool {
        self.pace.as_ref().is_some_and(|p| p.drop)
    }

    /// Paced with `CJ_EXPORT_BEHIND=wait`: the intake goes at the export's pace.
    pub fn holds_intake(&self) -> bool {
        self.pace.as_ref().is_some_and(|p| !p.drop)
    }

    /// Whether every data record added has been sent (or counted dropped):
    /// none pending, none waiting for the pace. Always true after
    /// [`Exporter::seal`] when unpaced.
    pub fn all_sent(&self) -> bool {
        self.pending.records() == 0 && self.pace.as_ref().is_none_or(|p| p.queue.is_empty())
    }

    /// Data records added and not yet sent (pending and, paced, sealed).
    pub fn unsent(&self) -> usize {
        self.pending.records() as usize + self.pace.as_ref().map_or(0, |p| p.queued)
    }

    /// How many records (flow records, each up to two data records) each of
    /// `queues` intake queues may hand on now without the paced export
    /// holding more than its bound; `None`: no limit (unpaced, or
    /// `CJ_EXPORT_BEHIND=drop`, where what does not fit is not exported).
    pub fn intake_room(&self, queues: usize) -> Option<usize> {
        let p = self.pace.as_ref().filter(|p| !p.drop)?;
        let room = p.bound.saturating_sub(self.unsent());
        Some(room / (2 * if self.fan_out { 1 } else { queues.max(1) }))
    }

    /// Paced: how long until the oldest sealed message may go (zero when it
    /// may now); `None` when unpaced or none is sealed.
    pub fn next_send_in(&self, now: Instant) -> Option<Duration> {
        self.pace.as_ref()?.next_in(now)
    }

    /// The paced rate, data records per second (None: unpaced).
    pub fn rate(&self) -> Option<u32> {
        self.pace.as_ref().map(|p| p.rate)
    }

    /// Counts time the app took no records because of the paced export.
    pub fn count_intake_held(&mut self, d: Duration) {
        self.stats.counters.intake_held_ms += d.as_millis() as u64;
    }

    /// Sends the sealed message `body` of `n` data records to every collector.
    fn send_data(&mut self, body: &[u8], n: u32) {
        let now = Instant::now();
        for i in 0..self.collectors.len() {
            let c = &self.collectors[i];
            if now >= c.templates_at || c.since_templates >= TEMPLATE_EVERY {
                self.send_templates(i, now);
            }
            let mut sent = self.send(i, body, n as u16, now);
            if sent.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused) {
                // The refusal is the ICMP port unreachable of an earlier message
                // (the socket reports it once, on this send, which did not go
                // out): the collector was down, and may be back. Templates
                // first, then this message again.
                self.refused(i);
                self.send_templates(i, now);
                sent = self.send(i, body, n as u16, now);
            }
            let c = &mut self.collectors[i];
            match sent {
                Ok(_) => {
                    self.stats.counters.messages += 1;
                    self.stats.counters.records_exported += u64::from(n);
                    c.last_sent = n;
                    c.since_templates += 1;
                }
                Err(e) => {
                    self.stats.counters.send_errors += 1;
                    self.stats.counters.records_dropped += u64::from(n);
                    c.templates_at = now;
                    c.warn(now, "sending data", &e);
                }
            }
        }
        self.seq = self.seq.wrapping_add(n);
    }

    /// Counts a refusal of collector `i` (ECONNREFUSED: an earlier message met
    /// a closed port): the last data message sent to it is taken as the one
    /// lost, its records moved from exported to dropped. One refusal may stand
    /// for several messages, so this is a lower bound of what was lost.
    fn refused(&mut self, i: usize) {
        let lost = u64::from(std::mem::take(&mut self.collectors[i].last_sent));
        self.stats.counters.send_errors += 1;
        self.stats.counters.records_exported -= lost;
        self.stats.counters.records_dropped += lost;
    }

    /// Sends a message of `body` (`count` records) to collector `i` (its v9
    /// sequence number moves on whether or not the send goes out).
    fn send(&mut self, i: usize, body: &[u8], count: u16, now: Instant) -> io::Result<usize> {
        let mut h = self.header(now, count);
        let c = &mut self.collectors[i];
        if c.protocol == Protocol::NetflowV9 {
            h.seq = c.packets;
            c.packets = c.packets.wrapping_add(1);
        }
        c.socket.send(&frame(c.protocol, body, h))
    }

    /// A header for a message of `count` records sent now (the v9 sequence is the collector's).
    fn header(&self, now: Instant, count: u16) -> Header {
        Header {
            export_time: export_time(),
            seq: self.seq,
            domain: self.domain,
            uptime_ms: now.duration_since(self.started).as_millis() as u32,
            count,
        }
    }

    fn send_templates(&mut self, i: usize, now: Instant) {
        let body = template_body(self.collectors[i].protocol);
        let mut sent = self.send(i, &body, 2, now);
        if sent.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused) {
            // An earlier message's refusal, reported on this send, which did not go out (see `send_data`).
            self.refused(i);
            sent = self.send(i, &body, 2, now);
        }
        let c = &mut self.collectors[i];
        match sent {
            Ok(_) => {
                self.stats.counters.messages += 1;
                c.templates_at = now + TEMPLATE_INTERVAL;
                c.since_templates = 0;
            }
            Err(e) => {
                self.stats.counters.send_errors += 1;
                // Tried again at the first tick or send a second from now.
                c.templates_at = now + TEMPLATE_INTERVAL.min(FLUSH_INTERVAL);
                c.warn(now, "sending templates", &e);
            }
        }
    }
}

/// A non-blocking UDP socket connected to `addr`.
fn open(addr: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = UdpSocket::bind(local)?;
    s.connect(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Seconds since the epoch, as the header's export time.
fn export_time() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use station::record::{EndReason, FLAG_SEEN_A, FLAG_SEEN_B};

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }
    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn be64(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// A decoded data record: (template, src, dst, sport, dport, proto, packets, octets).
    type Decoded = (u16, Vec<u8>, Vec<u8>, u16, u16, u8, u64, u64);

    /// Decodes a data message with the fixed templates; checks the set and message lengths.
    fn decode(m: &[u8]) -> (u32, Vec<Decoded>) {
        assert_eq!(be16(m, 0), 10);
        assert_eq!(be16(m, 2) as usize, m.len());
        let mut out = Vec::new();
        let mut at = HEADER_LEN;
        while at < m.len() {
            let (id, len) = (be16(m, at), be16(m, at + 2) as usize);
            let rl = if id == TEMPLATE_V6 { RECORD_LEN_V6 } else { RECORD_LEN_V4 };
            let al = if id == TEMPLATE_V6 { 16 } else { 4 };
            // As a collector reads a set: whole records, then 0 to 3 bytes of zero padding.
            assert_eq!(len % 4, 0, "a set is padded to 4 bytes");
            let padding = (len - SET_HEADER_LEN) % rl;
            assert!(padding < 4 && m[at + len - padding..at + len].iter().all(|&b| b == 0), "set length");
            let mut r = at + SET_HEADER_LEN;
            while r + rl <= at + len {
                let p = r + 2 * al;
                out.push((
                    id,
                    m[r..r + al].to_vec(),
                    m[r + al..r + 2 * al].to_vec(),
                    be16(m, p),
                    be16(m, p + 2),
                    m[p + 4],
                    be64(m, p + 5),
                    be64(m, p + 13),
                ));
                r += rl;
            }
            at += len;
        }
        (be32(m, 8), out)
    }

    fn record(v6: bool, a_pkts: u64, b_pkts: u64) -> FlowRecord {
        let mut r = FlowRecord {
            kind: RecordKind::Ip as u8,
            ip_version: if v6 { 6 } else { 4 },
            proto: 6,
            port_a: 40000,
            port_b: 443,
            first_ns: 1_700_000_000_123_456_789,
            last_ns: 1_700_000_001_000_000_000,
            end_reason: EndReason::IdleTimeout as u8,
            mac_a: [2, 0, 0, 0, 0, 1],
            mac_b: [2, 0, 0, 0, 0, 2],
            vlan: 7,
            source: 3,
            ..Default::default()
        };
        r.addr_a[..4].copy_from_slice(&[10, 0, 0, 1]);
        r.addr_b[..4].copy_from_slice(&[10, 0, 0, 2]);
        if v6 {
            r.addr_a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            r.addr_b = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        }
        r.dir[0] = station::record::DirCounters { packets: a_pkts, ip_bytes: a_pkts * 100, ..Default::default() };
        r.dir[1] = station::record::DirCounters { packets: b_pkts, ip_bytes: b_pkts * 1000, ..Default::default() };
        r
    }

    #[test]
    fn the_template_message_has_the_rfc_7011_layout_byte_for_byte() {
        let m = template_message(0x6553_f100, 5, 9);
        assert_eq!(m.len(), 16 + 4 + 2 * (4 + 16 * 4));
        assert_eq!(&m[..16], &[0, 10, 0, 156, 0x65, 0x53, 0xf1, 0, 0, 0, 0, 5, 0, 0, 0, 9]);
        // Template set (id 2, length 140), template 256 with 16 fields, first sourceIPv4Address/4.
        assert_eq!(&m[16..28], &[0, 2, 0, 140, 1, 0, 0, 16, 0, 8, 0, 4]);
        // Template 257 starts after 256's 68 bytes with sourceIPv6Address/16, destinationIPv6Address/16.
        assert_eq!(&m[88..100], &[1, 1, 0, 16, 0, 27, 0, 16, 0, 28, 0, 16]);
        // The last fields: destinationMacAddress(80)/6, interfaceName(82)/16.
        assert_eq!(&m[m.len() - 8..], &[0, 80, 0, 6, 0, 82, 0, 16]);
    }

    #[test]
    fn the_netflow_v9_template_packet_has_the_rfc_3954_layout_byte_for_byte() {
        let h = Header { export_time: 0x6553_f100, seq: 5, domain: 9, uptime_ms: 1234, count: 2 };
        let m = frame(Protocol::NetflowV9, &template_body(Protocol::NetflowV9), h);
        assert_eq!(m.len(), 20 + 4 + 2 * (4 + 16 * 4));
        // Version 9, count 2, sysUptime, UNIX seconds, sequence, source id.
        assert_eq!(&m[..20], &[0, 9, 0, 2, 0, 0, 4, 210, 0x65, 0x53, 0xf1, 0, 0, 0, 0, 5, 0, 0, 0, 9]);
        // Template FlowSet (id 0, length 140), template 256 with 16 fields; the rest as IPFIX's.
        assert_eq!(&m[20..32], &[0, 0, 0, 140, 1, 0, 0, 16, 0, 8, 0, 4]);
        assert_eq!(&m[24..], &template_message(0, 0, 0)[20..]);
    }

    #[test]
    fn a_record_becomes_one_data_record_per_direction_with_packets_sender_first() {
        let r = record(false, 3, 2);
        let ds: Vec<_> = DirRecord::of(&r).collect();
        assert_eq!(ds.len(), 2);
        assert_eq!((&ds[0].src[..4], ds[0].src_port, ds[0].packets, ds[0].octets), (&[10, 0, 0, 1][..], 40000, 3, 300));
        assert_eq!((&ds[1].src[..4], ds[1].src_port, ds[1].packets, ds[1].octets), (&[10, 0, 0, 2][..], 443, 2, 2000));
        assert_eq!((ds[1].src_mac, ds[1].dst_mac), (r.mac_b, r.mac_a));
        assert_eq!(
            (ds[0].start_ms, ds[0].end_ms, ds[0].ingress, ds[0].vlan),
            (1_700_000_000_123, 1_700_000_001_000, 3, 7)
        );
        // One-way: one data record; a last record with no packet: none; non-IP: none.
        assert_eq!(DirRecord::of(&record(false, 0, 4)).count(), 1);
        let mut empty = record(false, 0, 0);
        empty.flags = FLAG_SEEN_A | FLAG_SEEN_B;
        assert_eq!(DirRecord::of(&empty).count(), 0);
        let mut arp = record(false, 1, 1);
        arp.kind = RecordKind::NonIp as u8;
        assert_eq!(DirRecord::of(&arp).count(), 0);
    }

    #[test]
    fn the_sending_ends_container_veth_goes_out_as_interface_name() {
        let mut r = record(false, 2, 1);
        r.ctr[1].by = station::record::AttributedBy::Interface as u8;
        r.ctr[1].veth[..9].copy_from_slice(b"veth12abc");
        let ds: Vec<_> = DirRecord::of(&r).collect();
        assert_eq!(ds[0].src_veth, [0; 16], "side a is in no container");
        assert_eq!(&ds[1].src_veth[..10], b"veth12abc\0");
    }

    #[test]
    fn a_data_record_encodes_every_field_in_template_order() {
        let d = DirRecord::of(&record(false, 3, 0)).next().unwrap();
        let mut b = Vec::new();
        d.encode(&mut b);
        assert_eq!(b.len(), RECORD_LEN_V4);
        assert_eq!(&b[..13], &[10, 0, 0, 1, 10, 0, 0, 2, 0x9c, 0x40, 1, 0xbb, 6]);
        assert_eq!(be64(&b, 13), 3);
        assert_eq!(be64(&b, 21), 300);
        assert_eq!(be64(&b, 29), 1_700_000_000_123);
        assert_eq!(be64(&b, 37), 1_700_000_001_000);
        assert_eq!((be16(&b, 45), be16(&b, 47), be32(&b, 49), b[53]), (0, 7, 3, 1));
        assert_eq!(&b[54..66], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        // No container on the sending side: an empty interfaceName.
        assert_eq!(&b[66..], &[0; 16]);
        let d6 = DirRecord::of(&record(true, 1, 0)).next().unwrap();
        let mut b6 = Vec::new();
        d6.encode(&mut b6);
        assert_eq!(b6.len(), RECORD_LEN_V6);
    }

    #[test]
    fn messages_stay_under_1400_bytes_and_open_a_set_per_template_change() {
        let mut m = DataMessage::default();
        let v4 = DirRecord::of(&record(false, 1, 0)).next().unwrap();
        let v6 = DirRecord::of(&record(true, 1, 0)).next().unwrap();
        let mut n = 0;
        while m.push(if n % 3 == 0 { &v6 } else { &v4 }) {
            n += 1;
        }
        let h = Header { export_time: 0, seq: 0, domain: 0, uptime_ms: 0, count: n as u16 };
        let body = m.take();
        let bytes = frame(Protocol::Ipfix, &body, h);
        let v9 = frame(Protocol::NetflowV9, &body, h);
        assert!(v9.len() <= MAX_MESSAGE && v9.len() > MAX_MESSAGE - RECORD_LEN_V6 - SET_HEADER_LEN);
        assert_eq!(v9.len(), bytes.len() + 4);
        let (_, recs) = decode(&bytes);
        assert_eq!(recs.len(), n);
        assert_eq!(m.records(), 0, "take empties the message");
        let mut full = DataMessage::default();
        let mut k = 0;
        while full.push(&v4) {
            k += 1;
        }
        assert_eq!(k, MAX_MESSAGE_RECORDS, "IPv4 records in a full message");
    }

    /// An exporter of IPFIX to `addr` only, observation domain 4, templates not yet sent.
    fn ipfix_exporter_to(addr: SocketAddr) -> Exporter {
        Exporter {
            collectors: vec![Collector {
                url: format!("ipfix://{addr}"),
                protocol: Protocol::Ipfix,
                packets: 0,
                socket: open(addr).unwrap(),
                templates_at: Instant::now(),
                since_templates: 0,
                last_sent: 0,
                last_warning: None,
            }],
            domain: 4,
            fan_out: false,
            started: Instant::now(),
            pending: DataMessage::default(),
            pending_since: None,
            seq: 0,
            stats: ExportStats::default(),
            pace: None,
            last_behind_warning: None,
        }
    }

    #[test]
    fn a_collector_receives_templates_then_delta_records_whose_sums_are_the_totals() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut e = ipfix_exporter_to(rx.local_addr().unwrap());
        e.tick(Instant::now());
        // An interim part and the flow's end: 3+2 then 4+1 packets; 100 more v4 flows fill a few messages.
        let mut interim = record(false, 3, 2);
        interim.end_reason = EndReason::ActiveTimeout as u8;
        e.add(0, &interim);
        e.add(0, &record(false, 4, 1));
        for i in 0..100u16 {
            let mut r = record(i % 2 == 0, 1, 1);
            r.port_a = 1000 + i;
            e.add(0, &r);
        }
        e.seal();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(be16(&buf, 16), TEMPLATE_SET_ID, "templates come first");
        assert_eq!(be32(&buf, 12), 4, "observation domain");
        let mut got = Vec::new();
        let mut seqs = Vec::new();
        while got.len() < 204 {
            let n2 = rx.recv(&mut buf).unwrap();
            assert!(n2 <= MAX_MESSAGE);
            let (seq, recs) = decode(&buf[..n2]);
            seqs.push((seq, recs.len() as u32));
            got.extend(recs);
        }
        let _ = n;
        // Sequence numbers count the data records sent before each message.
        let mut want = 0;
        for (seq, k) in seqs {
            assert_eq!(seq, want);
            want += k;
        }
        let fwd: (u64, u64) = got.iter().filter(|r| r.3 == 40000).fold((0, 0), |(p, o), r| (p + r.6, o + r.7));
        let rev: (u64, u64) = got.iter().filter(|r| r.4 == 40000).fold((0, 0), |(p, o), r| (p + r.6, o + r.7));
        assert_eq!(fwd, (7, 700));
        assert_eq!(rev, (3, 3000));
        let s = e.stats();
        assert_eq!((s.counters.records, s.counters.records_exported, s.counters.records_dropped), (204, 204, 0));
    }

    #[test]
    fn templates_go_again_before_every_sixteenth_data_message_so_a_restarted_collector_decodes_soon() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut e = ipfix_exporter_to(rx.local_addr().unwrap());
        e.tick(Instant::now());
        // Forty full data messages, well within TEMPLATE_INTERVAL.
        for i in 0..40 * MAX_MESSAGE_RECORDS {
            let mut r = record(false, 1, 1);
            r.port_a = i as u16;
            e.add(0, &r);
        }
        e.seal();
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        let mut kinds = Vec::new();
        while rx.recv(&mut buf).is_ok() {
            kinds.push(be16(&buf, 16) == TEMPLATE_SET_ID);
        }
        assert_eq!(kinds.iter().filter(|t| !**t).count(), 80, "forty messages of each direction's records");
        assert!(kinds[0], "templates first");
        // No run of more data messages than TEMPLATE_EVERY without templates.
        let longest = kinds.split(|t| *t).map(<[bool]>::len).max().unwrap_or(0);
        assert!(longest <= TEMPLATE_EVERY as usize, "{longest} data messages in a row without templates");
        assert!(kinds.iter().filter(|t| **t).count() >= 5, "templates again along the way");
    }

    /// Data records in the data messages `rx` holds now (templates skipped).
    fn received(rx: &UdpSocket) -> Vec<Decoded> {
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while let Ok(n) = rx.recv(&mut buf) {
            if be16(&buf, 16) != TEMPLATE_SET_ID {
                got.extend(decode(&buf[..n]).1);
            }
        }
        got
    }

    #[test]
    fn a_paced_export_sends_what_the_rate_allows_and_in_the_end_every_record() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        let mut e = ipfix_exporter_to(rx.local_addr().unwrap());
        // 1,000 a second: a burst of one full message (16 records; 10 ms would be 10), at most 100 held.
        e.pace = Some(Pace::new(1000, 1, t0));
        e.tick(t0);
        assert_eq!(e.intake_room(1), Some(50), "100 data records: 50 records of two directions");
        for i in 0..100u16 {
            let mut r = record(false, 1, 0);
            r.port_a = 1000 + i;
            e.add(0, &r);
        }
        assert_eq!((e.intake_room(1), e.unsent()), (Some(0), 100), "the bound is reached");
        e.seal(); // the last 4 wait their turn too
        assert_eq!(e.stats().counters.records_exported, 0, "nothing is sent before a tick");
        e.tick(t0);
        assert_eq!(e.stats().counters.records_exported, 16, "the full bucket: one message");
        assert_eq!(e.next_send_in(t0), Some(Duration::from_millis(16)));
        e.tick(t0 + Duration::from_millis(15));
        assert_eq!(e.stats().counters.records_exported, 16, "15 ms earn 15 records: not a message of 16");
        assert_eq!(e.next_send_in(t0 + Duration::from_millis(15)), Some(Duration::from_millis(1)));
        e.tick(t0 + Duration::from_millis(16));
        assert_eq!(e.stats().counters.records_exported, 32);
        // A second with no tick earns one burst, not a second's worth.
        let mut t = t0 + Duration::from_millis(1016);
        e.tick(t);
        assert_eq!((e.stats().counters.records_exported, e.unsent(), e.intake_room(1)), (48, 52, Some(24)));
        let mut ticks = 0;
        while !e.all_sent() {
            t += Duration::from_millis(16);
            e.tick(t);
            ticks += 1;
        }
        assert_eq!(ticks, 4, "three more full messages, then the last 4 records");
        assert_eq!(e.next_send_in(t), None);
        let s = e.stats();
        assert_eq!((s.counters.records, s.counters.records_exported, s.counters.records_dropped), (100, 100, 0));
        let got = received(&rx);
        assert_eq!(got.len(), 100, "the collector has every record");
        let mut ports: Vec<u16> = got.iter().map(|r| r.3).collect();
        ports.dedup();
        assert_eq!(ports, (1000..1100).collect::<Vec<_>>(), "once each, in order");
    }

    #[test]
    fn a_paced_export_holds_a_tenth_of_a_second_at_its_rate_and_at_least_two_per_queue() {
        let t = Instant::now();
        assert_eq!(Pace::new(100, 1, t).bound, MIN_HELD);
        assert_eq!(Pace::new(1000, 8, t).bound, 100);
        assert_eq!(Pace::new(1000, 200, t).bound, 400);
        assert_eq!(Pace::new(1_000_000, 1, t).bound, 100_000);
        // The burst: 10 ms at the rate, at least one full message.
        assert_eq!(Pace::new(100, 1, t).burst, MAX_MESSAGE_RECORDS as u64 * NANO);
        assert_eq!(Pace::new(1_000_000, 1, t).burst, 10_000 * NANO);
        // An unpaced exporter has no bound, and a sealed message is sent at once.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut e = ipfix_exporter_to(rx.local_addr().unwrap());
        e.add(0, &record(false, 1, 1));
        assert_eq!((e.intake_room(1), e.rate(), e.all_sent()), (None, None, false));
        e.seal();
        assert!(e.all_sent());
        assert_eq!(e.stats().counters.records_exported, 2);
    }

    /// [`ipfix_exporter_to`] with a second IPFIX collector at `also`.
    fn ipfix_exporter_to_both(addr: SocketAddr, also: SocketAddr) -> Exporter {
        let mut e = ipfix_exporter_to(addr);
        e.collectors.push(Collector {
            url: format!("ipfix://{also}"),
            protocol: Protocol::Ipfix,
            packets: 0,
            socket: open(also).unwrap(),
            templates_at: Instant::now(),
            since_templates: 0,
            last_sent: 0,
            last_warning: None,
        });
        e
    }

    /// Two test sockets and an export to both paced at 1,000 a second (it holds
    /// at most 100) with `CJ_EXPORT_BEHIND=drop`, started at the instant returned.
    fn dropping_behind_to_both() -> (UdpSocket, UdpSocket, Instant, Exporter) {
        let (rx1, rx2) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        let t0 = Instant::now();
        let mut e = ipfix_exporter_to_both(rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
        let mut pace = Pace::new(1000, 1, t0);
        pace.drop = true;
        e.pace = Some(pace);
        (rx1, rx2, t0, e)
    }

    #[test]
    fn a_paced_export_that_drops_behind_sends_what_it_holds_and_counts_the_rest_for_every_collector() {
        let (rx1, rx2, t0, mut e) = dropping_behind_to_both();
        e.tick(t0);
        assert_eq!(e.intake_room(1), None, "the intake is never held back");
        assert!(e.drops_behind() && !e.holds_intake());
        // 300 one-direction records at once: the first 100 are held, the other 200 are not exported.
        for i in 0..300u16 {
            let mut r = record(false, 1, 0);
            r.port_a = 1000 + i;
            e.add(0, &r);
        }
        let s = e.stats();
        assert_eq!(
            (s.counters.records, e.unsent(), s.counters.records_dropped_behind),
            (300, 100, 400),
            "200 each for two collectors"
        );
        // Taken while a checkpoint waits: built, not exported, counted for both collectors.
        e.add_dropped_behind(0, &record(false, 3, 2));
        assert_eq!(
            (e.stats().counters.records, e.stats().counters.records_dropped_behind, e.unsent()),
            (302, 404, 100)
        );
        e.seal();
        let mut t = t0;
        while !e.all_sent() {
            t += Duration::from_millis(16);
            e.tick(t);
        }
        let s = e.stats();
        assert_eq!(
            (s.counters.records_exported, s.counters.records_dropped, s.counters.records_dropped_behind),
            (200, 0, 404)
        );
        assert_eq!(
            s.counters.records * 2,
            s.counters.records_exported + s.counters.records_dropped + s.counters.records_dropped_behind
        );
        for rx in [&rx1, &rx2] {
            let ports: Vec<u16> = received(rx).iter().map(|r| r.3).collect();
            assert_eq!(ports, (1000..1100).collect::<Vec<_>>(), "the first 100, once each, in order");
        }
        // With room again a record is held, not dropped.
        e.add(0, &record(false, 1, 1));
        assert_eq!((e.unsent(), e.stats().counters.records_dropped_behind), (2, 404));
    }

    #[test]
    fn a_restarted_export_continues_the_counters_its_checkpoint_kept() {
        let (rx1, rx2, t0, mut e) = dropping_behind_to_both();
        for _ in 0..150 {
            e.add(0, &record(false, 1, 0));
        }
        e.seal();
        let mut t = t0;
        while !e.all_sent() {
            t += Duration::from_millis(16);
            e.tick(t);
        }
        let saved = e.saved();
        assert_eq!((saved.records, saved.records_exported, saved.records_dropped_behind), (150, 200, 100));
        // The next app: its own templates, then what it builds, on top of the saved counters.
        let mut next = ipfix_exporter_to_both(rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
        next.tick(Instant::now());
        let own = next.stats().counters.messages;
        next.continue_from(&saved);
        next.add(0, &record(false, 1, 0));
        next.seal();
        let s = next.stats();
        assert_eq!(
            (s.counters.records, s.counters.records_exported, s.counters.records_dropped_behind),
            (151, 202, 100)
        );
        assert_eq!(s.counters.messages, saved.messages + own + 2);
        assert_eq!(
            2 * s.counters.records,
            s.counters.records_exported + s.counters.records_dropped + s.counters.records_dropped_behind
        );
    }

    #[test]
    fn a_paced_export_that_waits_when_behind_never_drops_what_it_is_given() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        let mut e = ipfix_exporter_to(rx.local_addr().unwrap());
        e.pace = Some(Pace::new(1000, 1, t0));
        assert!(e.holds_intake() && !e.drops_behind());
        assert_eq!(e.intake_room(1), Some(50));
        // The intake keeps within the room; what it is given beyond it is held all the same.
        for _ in 0..300 {
            e.add(0, &record(false, 1, 0));
        }
        assert_eq!((e.unsent(), e.stats().counters.records_dropped_behind, e.intake_room(1)), (300, 0, Some(0)));
    }

    #[test]
    fn the_setting_reaches_the_exporter_waiting_by_default() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let export = format!("ipfix://{}", rx.local_addr().unwrap());
        let exporter = |behind: Option<&str>| {
            let mut vars = vec![("CJ_EXPORT".to_owned(), export.clone()), ("CJ_EXPORT_RATE".into(), "1000".into())];
            vars.extend(behind.map(|b| ("CJ_EXPORT_BEHIND".to_owned(), b.to_owned())));
            let cfg = StationConfig::load_from(&vars, None).unwrap();
            Exporter::from_config(&cfg, false).unwrap().unwrap()
        };
        let e = exporter(None);
        assert!(e.holds_intake() && !e.drops_behind(), "{}", e.describe());
        assert_eq!(e.stats().behind, "wait");
        let e = exporter(Some("drop"));
        assert!(e.drops_behind() && !e.holds_intake());
        assert_eq!((e.stats().behind, e.intake_room(4)), ("drop", None));
        assert!(e.describe().contains("the rest is not exported (counted)"), "{}", e.describe());
    }

    #[test]
    fn a_send_that_fails_is_counted_and_never_fatal() {
        // A port nothing listens on: the connected socket sees ECONNREFUSED on a later send.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = StationConfig::load_from(&[("CJ_EXPORT".into(), format!("ipfix://127.0.0.1:{port}"))], None);
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let mut e = Exporter::from_config(&cfg, false).unwrap().unwrap();
        for _ in 0..5 {
            e.add(0, &record(false, 1, 1));
            e.seal();
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = e.stats();
        assert_eq!(s.counters.records, 10);
        assert!(s.counters.records_dropped > 0 && s.counters.send_errors > 0, "{s:?}");
        assert_eq!(s.counters.records_exported + s.counters.records_dropped, 10);
    }

    #[test]
    fn a_collector_back_after_a_refusal_gets_the_templates_and_the_message_in_hand() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = rx.local_addr().unwrap();
        let mut e = ipfix_exporter_to(addr);
        e.tick(Instant::now());
        drop(rx); // the collector goes down
        e.add(0, &record(false, 1, 0));
        e.seal(); // into a closed port: the ICMP port unreachable comes back to the socket
                  // Until the kernel holds the refusal (poll says POLLERR without taking it; up to 5 s).
        let mut fds = [PollFd::new(e.collectors[0].socket.as_fd(), PollFlags::empty())];
        let ready = poll(&mut fds, PollTimeout::from(5000u16)).unwrap();
        assert!(ready == 1 && fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLERR)));
        let rx = UdpSocket::bind(addr).unwrap(); // the collector is back
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        e.add(0, &record(false, 2, 0));
        e.seal();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).expect("a message");
        assert_eq!(be16(&buf[..n], 16), TEMPLATE_SET_ID, "templates first: {:?}", e.stats());
        let n = rx.recv(&mut buf).expect("the message in hand");
        let (_, recs) = decode(&buf[..n]);
        assert_eq!(recs.iter().map(|r| r.6).collect::<Vec<_>>(), vec![2], "the second record, not lost");
        let s = e.stats();
        assert_eq!(
            (s.counters.records, s.counters.records_exported, s.counters.records_dropped),
            (2, 1, 1),
            "the first counted lost: {s:?}"
        );
    }

    #[test]
    fn bad_export_values_are_refused_with_the_accepted_forms() {
        assert!(parse("", "environment").unwrap().is_empty());
        let two = parse("ipfix://127.0.0.1:4739, ipfix://[::1]:9995", "environment").unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].1, "[::1]:9995".parse().unwrap());
        let mixed = parse("netflow9://127.0.0.1:2055,ipfix://127.0.0.1:4739", "environment").unwrap();
        assert_eq!((mixed[0].2, mixed[1].2), (Protocol::NetflowV9, Protocol::Ipfix));
        let e = parse("netflow://127.0.0.1:2055", "environment").unwrap_err().to_string();
        assert!(
            e.starts_with(
                "CJ_EXPORT=\"netflow://127.0.0.1:2055\" (environment): expected ipfix://HOST:PORT or \
                 netflow9://HOST:PORT"
            ),
            "{e}"
        );
        assert!(e.contains("starts with neither ipfix:// nor netflow9://"), "{e}");
        let e = parse("ipfix://127.0.0.1", "environment").unwrap_err().to_string();
        assert!(e.contains("has no port"), "{e}");
        let e = parse("ipfix://127.0.0.1:0", "environment").unwrap_err().to_string();
        assert!(e.contains("has no port 1..=65535"), "{e}");
    }
}
