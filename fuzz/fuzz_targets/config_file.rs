//! Fuzz target: any byte string as a conjure.conf file, through the reader
//! that `--config` uses (`station::config::parse_conf_text`). Guarantees
//! checked: nothing panics, an error's message is one line, and every value
//! accepted carries a `FILE:LINE` origin within the text (or an included file).
//! Built by `make fuzz-build`-style `cargo fuzz build config_file`; not run in CI.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file reader refuses text that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    match station::config::parse_conf_text(Path::new("fuzz.conf"), text) {
        Ok(values) => {
            let lines = text.lines().count().max(1);
            for (name, _value, origin) in &values {
                assert!(station::config::VARIABLES.iter().any(|v| v.name == name), "unknown {name} accepted");
                let (file, line) = origin.rsplit_once(':').expect("FILE:LINE");
                let line: usize = line.parse().expect("a line number");
                assert!(line >= 1);
                if file == "fuzz.conf" {
                    assert!(line <= lines, "{origin} beyond {lines} lines");
                }
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "a message of several lines: {e}"),
    }
});
