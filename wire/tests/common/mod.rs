//! Shared test support.
#[rustfmt::skip]
pub mod frames;
