//! Zero-copy packet views, the canonical flow key and symmetric hashes.
//!
//! # What this crate guarantees
//!
//! - **No panics on any input.** [`summarize`] accepts any byte slice. Every
//!   view (`ethernet::Frame`, `vlan::Tag`, `ipv4::Packet`, `ipv6::Packet`,
//!   `tcp::Packet`, `udp::Packet`, `icmp::Packet`, ...) follows the smoltcp
//!   pattern: `new_unchecked` wraps a buffer, `check_len` verifies that every
//!   field accessor is in bounds, `new_checked` does both. After `check_len`
//!   returned `Ok`, no accessor of that view panics. Before it, accessors may
//!   panic on short buffers: use `new_checked` unless the length is known.
//!   As in smoltcp, accessors that return sub-slices (`payload`, `options`,
//!   `rest`) are defined on views over borrowed buffers (`View<&'a [u8]>`)
//!   and return `&'a [u8]`, so a parser can walk from header to header.
//! - **No unsafe, no allocation.** `#![forbid(unsafe_code)]`; nothing outside
//!   tests allocates, so the parsers can sit on the per-packet hot path.
//! - **One validated summary per packet.** [`summarize`] turns a whole
//!   Ethernet frame into a small `Copy` [`PacketSummary`]; everything
//!   downstream (flow table, balancer hash) sees only that.
//!   [`summarize_link`] does the same for Linux cooked (SLL, SLL2), raw IP
//!   and null/loop framings ([`link`]), with the same key and counts as the
//!   Ethernet form of the frame; [`summarize_wire`] counts a length taken
//!   from the frame (TSO, jumbograms) on the wire, not only as captured
//!   ([`summarize_wire_into`]: the same, written in the caller's place).
//! - **Direction-free flow keys.** [`FlowKey::from_summary`] gives the same key
//!   for both directions of a flow and says which direction the packet went.
//! - **Symmetric hashes.** [`zbalance_ip_hash`] (PF_RING ZC's built-in IP hash)
//!   and [`symmetric_5tuple_hash`] give the same value for both directions.
//!
//! - **Tunnels on request.** [`tunnel::summarize_decap`] gives the summary of
//!   the inner packet of a VXLAN, Geneve, GRE or IP-in-IP packet, with the
//!   outer endpoints, for the tunnels a [`tunnel::Decap`] (`CJ_DECAP`) names;
//!   [`summarize`] never decapsulates.
//!
//! What is not guaranteed: checksums are never verified (a capture tool counts
//! what is on the wire, corrupt or not), and other tunnels (GTP, MPLS in UDP
//! or GRE) are not decapsulated: their packets are keyed on the outer header.
//! (MPLS label stacks and PPPoE sessions on the link itself are no tunnels:
//! [`shim`] reads them to the IP packet, which is keyed as any.)
#![forbid(unsafe_code)]

mod error;
mod flow_key;
mod hash;
mod ports;
mod summary;

pub mod ethernet;
pub mod icmp;
pub mod ip_proto;
pub mod ipv4;
pub mod ipv6;
pub mod link;
pub mod null;
pub mod shim;
pub mod sll;
pub mod sll2;
pub mod tcp;
pub mod tunnel;
pub mod udp;
pub mod vlan;

pub use error::{Error, Result};
pub use flow_key::{Direction, FlowKey};
pub use hash::{symmetric_5tuple_hash, zbalance_ip_hash};
pub use ports::{carries_ports, transport_ports};
pub use summary::{
    ip_offset, summarize, summarize_link, summarize_wire, summarize_wire_into, Fragment, PacketSummary, L3,
};

/// Reads a big-endian `u16` at `at`. Callers guarantee `at + 2 <= b.len()`.
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian `u32` at `at`. Callers guarantee `at + 4 <= b.len()`.
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
