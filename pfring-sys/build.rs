//! Finds PF_RING's headers and user library, generates the bindings, links
//! `libpfring` dynamically. Does nothing without the `ffi` feature.
//!
//! Search order: `PF_RING_DIR` (its `include/` and `lib/`), then `/usr/local`,
//! then `/usr`. When `PF_RING_DIR` is set only it is searched, so a wrong value
//! is reported instead of silently falling back to another install.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PF_RING_DIR");
    #[cfg(feature = "ffi")]
    ffi::main();
}

#[cfg(feature = "ffi")]
mod ffi {
    use std::path::{Path, PathBuf};

    const FIX: &str = "install PF_RING with scripts/install_pfring.sh, or set PF_RING_DIR to a prefix holding include/pfring.h and lib/libpfring.so";

    /// Stops the build with one line: what is missing, then the fix.
    fn fail(what: &str) -> ! {
        stop(&format!("pfring-sys: {what}; {FIX}"))
    }

    /// Stops the build with `line` as Cargo's only error message.
    fn stop(line: &str) -> ! {
        println!("cargo::error={line}");
        std::process::exit(0);
    }

    /// The library directories a prefix may use.
    fn lib_dirs(prefix: &Path) -> Vec<PathBuf> {
        let mut dirs = vec![prefix.join("lib")];
        if let Ok(arch) = std::env::var("CARGO_CFG_TARGET_ARCH") {
            dirs.push(prefix.join("lib").join(format!("{arch}-linux-gnu")));
        }
        dirs.push(prefix.join("lib64"));
        dirs
    }

    struct Install {
        include: PathBuf,
        lib: PathBuf,
    }

    /// Looks for pfring.h, pfring_zc.h and libpfring.so under `prefix`.
    fn probe(prefix: &Path) -> Result<Install, String> {
        let include = prefix.join("include");
        for h in ["pfring.h", "pfring_zc.h"] {
            if !include.join(h).is_file() {
                return Err(format!("{} not found", include.join(h).display()));
            }
        }
        let lib = lib_dirs(prefix)
            .into_iter()
            .find(|d| d.join("libpfring.so").exists())
            .ok_or_else(|| format!("libpfring.so not found in {}/lib", prefix.display()))?;
        Ok(Install { include, lib })
    }

    pub fn main() {
        let install = match std::env::var_os("PF_RING_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => probe(Path::new(&dir)).unwrap_or_else(|e| fail(&format!("PF_RING_DIR={}: {e}", dir.to_string_lossy()))),
            None => ["/usr/local", "/usr"]
                .iter()
                .find_map(|p| probe(Path::new(p)).ok())
                .unwrap_or_else(|| fail("PF_RING user library not found (no pfring.h, pfring_zc.h and libpfring.so under /usr/local or /usr)")),
        };
        // pfring.h includes <linux/pf_ring.h>, which the kernel module's package installs.
        let kernel_header = [install.include.join("linux/pf_ring.h"), PathBuf::from("/usr/include/linux/pf_ring.h")];
        if !kernel_header.iter().any(|p| p.is_file()) {
            fail(&format!(
                "linux/pf_ring.h not found in {} or /usr/include (it comes with the PF_RING kernel module package)",
                install.include.display()
            ));
        }
        // libpfring leaves libpcap's symbols (pcap_open_offline, bpf_filter, ...)
        // undefined: the application links a libpcap.
        let pcap_dirs: Vec<PathBuf> = std::iter::once(install.lib.clone())
            .chain(["/usr/local", "/usr"].iter().flat_map(|p| lib_dirs(Path::new(p))))
            .collect();
        let Some(pcap_dir) = pcap_dirs.iter().find(|d| d.join("libpcap.so").exists()) else {
            stop("pfring-sys: libpcap.so not found (libpfring leaves pcap_* undefined); apt-get install libpcap-dev")
        };

        println!("cargo:rustc-link-search=native={}", install.lib.display());
        if pcap_dir != &install.lib {
            println!("cargo:rustc-link-search=native={}", pcap_dir.display());
        }
        println!("cargo:rustc-link-lib=dylib=pfring");
        // rustc links with --as-needed: lib.rs binds pcap_lib_version so that a
        // program using this crate references libpcap itself and keeps it.
        println!("cargo:rustc-link-lib=dylib=pcap");
        // What libpfring was linked with (its configure's SYSLIBS); on glibc >= 2.34
        // these live in libc itself and the names are kept for older systems.
        for l in ["pthread", "rt", "dl", "m"] {
            println!("cargo:rustc-link-lib=dylib={l}");
        }
        // For dependents (DEP_PFRING_INCLUDE / DEP_PFRING_LIB).
        println!("cargo:include={}", install.include.display());
        println!("cargo:lib={}", install.lib.display());
        println!("cargo:rerun-if-changed={}", install.include.join("pfring.h").display());
        println!("cargo:rerun-if-changed={}", install.include.join("pfring_zc.h").display());

        let bindings = bindgen::Builder::default()
            .header_contents("wrapper.h", "#include <pfring.h>\n#include <pfring_zc.h>\n")
            .clang_arg(format!("-I{}", install.include.display()))
            .allowlist_function("pfring_open")
            .allowlist_function("pfring_close")
            .allowlist_function("pfring_enable_ring")
            .allowlist_function("pfring_recv")
            .allowlist_function("pfring_stats")
            .allowlist_function("pfring_version")
            .allowlist_function("pfring_version_noring")
            .allowlist_function("pfring_set_application_name")
            .allowlist_function("pfring_set_socket_mode")
            .allowlist_function("pfring_set_bpf_filter")
            .allowlist_function("pfring_set_direction")
            .allowlist_function("pfring_breakloop")
            .allowlist_function("pfring_zc_version")
            .allowlist_function("pfring_zc_check_license")
            .allowlist_function("pfring_zc_check_device_license_by_name")
            .allowlist_type("pfring")
            .allowlist_type("pfring_stat")
            .allowlist_type("pfring_pkthdr")
            .allowlist_type("pfring_zc_queue")
            .allowlist_type("pfring_zc_cluster")
            .allowlist_type("socket_mode")
            .allowlist_type("packet_direction")
            .allowlist_var("PF_RING_(PROMISC|TIMESTAMP|HW_TIMESTAMP|LONG_HEADER|DO_NOT_PARSE|ZC_SYMMETRIC_RSS)")
            .allowlist_var("PF_RING_ERROR_.*")
            .allowlist_var("RING_VERSION(_NUM)?")
            .allowlist_var("RING_FLOWSLOT_VERSION")
            .allowlist_var("MAX_CAPLEN")
            .opaque_type("pfring")
            .opaque_type("__pfring")
            .opaque_type("pfring_zc_queue")
            .opaque_type("pfring_zc_cluster")
            .rustified_enum("socket_mode")
            .rustified_enum("packet_direction")
            .layout_tests(true)
            .generate()
            .unwrap_or_else(|e| {
                fail(&format!("bindgen cannot read pfring.h/pfring_zc.h in {} ({e})", install.include.display()))
            });
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        bindings.write_to_file(out.join("bindings.rs")).expect("cannot write bindings.rs into OUT_DIR");
    }
}
