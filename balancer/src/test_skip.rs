//! The test suite's skip rule for this crate's own tests (`e2e::skip`,
//! which a binary crate's unit tests cannot use): under CI (`CI` set) the
//! test fails with the reason; elsewhere `SKIPPED: <test>: <reason>` on
//! stderr and the same line appended to the workspace's
//! `target/skipped-tests.txt`, which `make test` prints at the end. The
//! caller then returns.

/// Skips (or, under CI, fails) the running test for `reason`.
pub fn skip(reason: &str) {
    use std::io::Write as _;
    let test = format!("balancer::{}", std::thread::current().name().unwrap_or("?"));
    assert!(std::env::var_os("CI").is_none(), "{test}: under CI this test must run, but {reason}");
    let line = format!("{test}: {reason}");
    eprintln!("SKIPPED: {line}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/skipped-tests.txt");
    let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        f.write_all(format!("{line}\n").as_bytes())
    });
    if let Err(e) = written {
        eprintln!("cannot list the skip in {}: {e}", path.display());
    }
}
