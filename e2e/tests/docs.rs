//! The operator docs name every variable the station reads: README.md and
//! sysconfig/conjure.conf list each entry of `station::config::VARIABLES`.

use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn readme_and_conjure_conf_list_every_variable() {
    let readme = read("README.md");
    let conf = read("sysconfig/conjure.conf");
    let mut missing = Vec::new();
    for v in station::config::VARIABLES {
        if !readme.contains(&format!("`{}`", v.name)) {
            missing.push(format!("README.md lacks `{}`", v.name));
        }
        if !conf.lines().any(|l| l.trim_start().starts_with(&format!("{}=", v.name))) {
            missing.push(format!("sysconfig/conjure.conf lacks {}=", v.name));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
