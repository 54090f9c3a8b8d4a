//! The generator's truth in the shapes of the harness's flows.csv readers
//! ([`e2e::read_flows_csv`], [`e2e::read_flows_csv_counters`]), shared by the
//! tests that compare a run with `sim::truth` (included with `#[path]`). It is
//! here, not in the harness library, because the generator is a
//! dev-dependency of e2e: only test targets link it.
//!
//! Guaranteed: each truth row counts once, under the key the default
//! aggregate gives it (VLANs merged, the protocol by name).
//! Not guaranteed: anything about the pipeline; this is the truth side only.
#![allow(dead_code)]

use std::collections::BTreeMap;

use e2e::{RowCounters, RowKey};
use sim::Truth;

/// The generator's truth in the shape of [`e2e::read_flows_csv`] (VLANs merged, as the default aggregate has no VLAN).
pub fn truth_rows(truth: &Truth) -> BTreeMap<RowKey, (u64, u64)> {
    let mut rows = BTreeMap::new();
    for r in &truth.rows {
        let key = (r.src, r.dst, r.src_port, r.dst_port, station::proto::proto_name(r.proto).to_string());
        let slot = rows.entry(key).or_insert((0, 0));
        slot.0 += r.packets;
        slot.1 += r.ip_bytes;
    }
    rows
}

/// The generator's truth in the shape of [`e2e::read_flows_csv_counters`]:
/// each truth row is one direction of one flow (the model's clients are
/// distinct), so FLOWS is the number of truth rows merged into a key (VLANs
/// merged).
pub fn truth_rows_counters(truth: &Truth) -> BTreeMap<RowKey, RowCounters> {
    let mut rows = BTreeMap::new();
    for r in &truth.rows {
        let key = (r.src, r.dst, r.src_port, r.dst_port, station::proto::proto_name(r.proto).to_string());
        let slot: &mut RowCounters = rows.entry(key).or_default();
        slot.packets += r.packets;
        slot.bytes += r.ip_bytes;
        slot.frame_bytes += r.frame_bytes;
        slot.flows += 1;
    }
    rows
}
