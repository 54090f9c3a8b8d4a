//! `CJ_FILTER`: a capture filter in tcpdump syntax.
//!
//! Guarantees:
//! - The expression is compiled once, at start, by libpcap itself
//!   (`pcap_compile`, optimised, for Ethernet frames), loaded at run time
//!   ([`sys`]): what tcpdump accepts is accepted, with the same meaning. A
//!   missing libpcap or an expression it refuses is a one-line error naming
//!   the fix, before any queue is created.
//! - AF_PACKET (`IF`, `IF1,IF2`, `containers`): the program is attached in
//!   the kernel (`SO_ATTACH_FILTER`) to every ring's socket before it is
//!   bound, so a rejected frame never reaches a ring.
//! - PF_RING: the expression goes to PF_RING's own filter
//!   (`pfring_set_bpf_filter`).
//! - `pcap:` and `sim:`: the balancer applies the same program to each frame
//!   before counting it (libpcap's `pcap_offline_filter`).
//! - Either way a rejected frame is never received: it is in no counter and
//!   outside the identity; the start line and `summary.json` (`capture_filter`)
//!   name the filter.
//!
//! Not guaranteed: VLAN tags. As with tcpdump on Linux, a live interface with
//! VLAN offload (`rxvlan`, most NICs and veth) hands the kernel filter frames
//! without their tag, so `udp` matches tagged UDP there, while in a capture
//! file the tag is in the frame and `vlan and udp` is needed.

pub mod sys;

pub use sys::Insn;

/// DLT_EN10MB: the frames every source hands on are Ethernet frames.
const DLT_EN10MB: i32 = 1;

/// A compiled `CJ_FILTER`.
#[derive(Debug)]
pub struct Filter {
    expr: String,
    insns: Vec<Insn>,
    lib: sys::Libpcap,
}

/// A filter that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("CJ_FILTER={expr:?}: {reason}")]
pub struct FilterError {
    /// The expression.
    pub expr: String,
    /// Why (libpcap's message, or a missing libpcap).
    pub reason: String,
}

impl Filter {
    /// The filter of `expr`, or `None` when it is empty.
    ///
    /// # Errors
    /// libpcap is missing, or refuses the expression.
    pub fn compile(expr: &str) -> Result<Option<Self>, FilterError> {
        let expr = expr.trim();
        if expr.is_empty() {
            return Ok(None);
        }
        let err = |reason: String| FilterError { expr: expr.to_owned(), reason };
        let lib = sys::Libpcap::load().map_err(err)?;
        let insns = lib
            .compile(expr, DLT_EN10MB)
            .map_err(|m| err(format!("{m} (tcpdump syntax, as `tcpdump -d` would take it)")))?;
        if insns.len() > usize::from(u16::MAX) {
            return Err(err(format!("{} instructions, more than the kernel takes (65535)", insns.len())));
        }
        Ok(Some(Self { expr: expr.to_owned(), insns, lib }))
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The program, for the kernel.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Whether the frame passes (for sources the kernel does not filter).
    pub fn matches(&self, data: &[u8], wire_len: u32) -> bool {
        self.lib.matches(&self.insns, data, wire_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(proto: u8) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[22] = 64;
        f[23] = proto;
        f
    }

    /// libpcap is a run-time dependency (dlopen): without it these tests
    /// are skipped (and fail under CI, which installs it).
    fn libpcap_here() -> bool {
        match sys::Libpcap::load() {
            Ok(_) => true,
            Err(e) => {
                e2e::skip(&e);
                false
            }
        }
    }

    #[test]
    fn a_filter_compiled_by_libpcap_passes_what_tcpdump_would() {
        if !libpcap_here() {
            return;
        }
        let Some(f) = Filter::compile("udp").expect("libpcap compiles udp") else { panic!("not empty") };
        assert!(!f.insns().is_empty());
        assert!(f.matches(&frame(17), 42), "a UDP frame");
        assert!(!f.matches(&frame(6), 42), "a TCP frame");
        assert!(Filter::compile("  ").unwrap().is_none());
    }

    #[test]
    fn an_expression_libpcap_refuses_is_one_line_naming_it() {
        if !libpcap_here() {
            return;
        }
        let e = Filter::compile("udp and bogus_keyword").unwrap_err().to_string();
        assert!(e.starts_with("CJ_FILTER=\"udp and bogus_keyword\": "), "{e}");
        // libpcap's own refusal (pcap_compile's message), not a load error.
        assert!(e.contains("tcpdump syntax"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
