//! Where the tables hand finished records.
//!
//! Guarantees: a table calls [`RecordSink::emit`] exactly once per record it
//! ends, with every field filled except `seq`, which the sink assigns (the
//! worker numbers records in the order it emits them). A sink never drops a
//! record silently: it either queues it or counts it as lost.

use station::record::FlowRecord;

/// Receives the records the tables end.
pub trait RecordSink {
    /// Takes one finished record.
    fn emit(&mut self, rec: FlowRecord);
}

/// A sink that keeps every record in memory (tests and benchmarks).
impl RecordSink for Vec<FlowRecord> {
    fn emit(&mut self, rec: FlowRecord) {
        self.push(rec);
    }
}

/// A sink that only counts records and their packets (benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingSink {
    /// Records received.
    pub records: u64,
    /// Packets in them.
    pub packets: u64,
}

impl RecordSink for CountingSink {
    fn emit(&mut self, rec: FlowRecord) {
        self.records += 1;
        self.packets += rec.packets();
    }
}
