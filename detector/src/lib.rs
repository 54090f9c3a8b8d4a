//! cj-detector's library: the per-worker accounting (flow table, non-IP table,
//! flow clock), the worker threads that run it on the shared-memory queues,
//! and the pieces of the binary (command line, errors, stats lines).
//!
//! Guarantees: no unsafe code (its prefetch hint is `station::prefetch`); each worker owns its state (nothing shared,
//! nothing locked on the hot path); every frame a worker reads ends in exactly
//! one record or in a named loss counter (see [`accounting`] and [`worker`]).
#![deny(unsafe_code)]

pub mod accounting;
pub mod attribution;
pub mod cli;
pub mod clock;
pub mod divert;
pub mod error;
pub mod flow_slab;
pub mod flow_table;
pub mod fragments;
pub mod lru_slab;
pub mod nonip_table;
pub mod progress;
pub mod record_sink;
pub mod stats;
pub mod tun;
pub mod tunnels;
pub mod worker;
