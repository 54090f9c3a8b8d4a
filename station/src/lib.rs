//! Shared vocabulary of the station: the FlowRecord layout, packet slots, queue
//! naming, conjure.conf loading and validation, the core plan, and the
//! deterministic synthetic traffic model with its ground truth.
#![deny(unsafe_code)]

pub mod naming;
pub mod record;
pub mod slot;

pub mod cli;
pub mod config;
pub mod coreplan;
pub mod notify;
pub mod proto;
pub mod rate;
pub mod sim;
