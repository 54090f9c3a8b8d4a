//! The shared contract of the station's processes and the small pieces they
//! all need: the FlowRecord layout, packet slots, queue naming, protocol
//! names, conjure.conf loading and validation ([`config`]), the `sim:SPEC`
//! syntax that validation checks ([`simspec`]), the core plan, systemd
//! notification, rate formatting, the handling of SIGINT/SIGTERM ([`signals`]),
//! and the prefetch hint ([`prefetch`]) the
//! detector's and the app's tables use.
//!
//! The synthetic traffic generator and its ground truth are in the `sim`
//! crate, so `rand`, `rand_chacha` and `pcap-file` are not linked into every
//! binary.
#![deny(unsafe_code)]

pub mod naming;
pub mod record;
pub mod slot;

pub mod cli;
pub mod config;
pub mod coreplan;
pub mod health;
pub mod log;
pub mod notify;
pub mod prefetch;
pub mod proto;
pub mod rate;
pub mod signals;
pub mod simspec;
