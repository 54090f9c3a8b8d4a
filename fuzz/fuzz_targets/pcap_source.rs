//! Fuzz target: any byte string as a `pcap:FILE` capture, read by the
//! balancer's own pcap/pcapng source (`balancer/src/source/pcap.rs`, with the
//! rest of `balancer/src/source/` compiled in through `#[path]`: the balancer
//! is a binary-only crate, so its source module is included here rather than
//! linked). The input is written to a temporary file and polled to its end as
//! `cj-balancer` would. Guarantees checked: nothing panics, every error is one
//! line (never a parser's debug dump), each poll's count matches the frames
//! delivered, and the stream ends or fails within as many polls as the input
//! has bytes (a capture file is never idle and never loops).
//! Build with `cargo fuzz build pcap_source` (or `cargo build --bin
//! pcap_source` in fuzz/); not run in CI. Run: `cargo fuzz run pcap_source`.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../balancer/src/source/mod.rs"]
mod source;

// CJ_FILTER, which source/ names (crate::filter).
#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../balancer/src/filter/mod.rs"]
mod filter;

use source::pcap::PcapSource;
use source::{Poll, Source};

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("temporary file");
    file.write_all(data).expect("write input");
    file.flush().expect("flush input");
    let mut src = match PcapSource::open(file.path()) {
        Ok(src) => src,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "a message of several lines: {e}");
            return;
        }
    };
    // Every frame takes at least one byte of the input, and every poll that
    // delivers nothing ends the stream: more polls than bytes is a hang.
    for _ in 0..=data.len() + 1 {
        let mut frames = 0usize;
        let polled = src.poll_batch(64, &mut |f| {
            frames += 1;
            assert!(f.data.len() <= data.len(), "a frame larger than the file");
        });
        match polled {
            Ok(Poll::Frames(n)) => assert_eq!(n, frames, "the count of frames delivered"),
            Ok(Poll::Ended) => return,
            Ok(Poll::Idle) => panic!("a capture file is never idle"),
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains('\n'), "a message of several lines: {text}");
                assert!(!text.contains("NomError") && !text.contains("Verify"), "a parser's debug output: {text}");
                return;
            }
        }
    }
    panic!("the source neither ended nor failed after {} polls", data.len() + 2);
});
