//! The fuzz seed corpus (fuzz/corpus/summarize/golden_*) is the golden frames
//! plus a few truncations. `write_fuzz_corpus` regenerates it
//! (`cargo test -p wire --test corpus -- --ignored`); `fuzz_corpus_is_current`
//! checks the files on disk still match.
mod common;

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/summarize")
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for (name, frame) in common::frames::ALL {
        v.push((format!("golden_{name}"), frame.to_vec()));
    }
    let f = &common::frames::UDP_V6_HBH_DSTOPT;
    v.push(("golden_udp_v6_cut_in_hbh".into(), f[..58].to_vec()));
    let f = &common::frames::TCP_SYN_V4;
    v.push(("golden_tcp_syn_v4_snap38".into(), f[..38].to_vec()));
    v.push(("golden_runt_10".into(), f[..10].to_vec()));
    v
}

#[test]
#[ignore = "writes files; run to regenerate the fuzz seed corpus"]
fn write_fuzz_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn fuzz_corpus_is_current() {
    let dir = corpus_dir();
    if !dir.exists() {
        eprintln!("skipped: {} absent", dir.display());
        return;
    }
    for (name, bytes) in seeds() {
        let on_disk = std::fs::read(dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}; run write_fuzz_corpus"));
        assert_eq!(on_disk, bytes, "{name} is stale; run write_fuzz_corpus");
    }
}
