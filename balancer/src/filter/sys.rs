//! libpcap's filter compiler and matcher, loaded at run time (`dlopen`), so
//! that the balancer needs libpcap only when `CJ_FILTER` is set and builds
//! without its headers. Every call into the library is here, each behind a
//! safe function with its contract.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

/// One classic BPF instruction, as libpcap writes them and as the kernel's
/// `struct sock_filter` reads them (same layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// `struct bpf_program`.
#[repr(C)]
struct Program {
    bf_len: c_uint,
    bf_insns: *mut Insn,
}

/// `struct pcap_pkthdr`.
#[repr(C)]
struct PktHdr {
    ts: libc::timeval,
    caplen: u32,
    len: u32,
}

type OpenDead = unsafe extern "C" fn(c_int, c_int) -> *mut c_void;
type Compile = unsafe extern "C" fn(*mut c_void, *mut Program, *const c_char, c_int, u32) -> c_int;
type FreeCode = unsafe extern "C" fn(*mut Program);
type GetErr = unsafe extern "C" fn(*mut c_void) -> *mut c_char;
type Close = unsafe extern "C" fn(*mut c_void);
type OfflineFilter = unsafe extern "C" fn(*const Program, *const PktHdr, *const u8) -> c_int;

/// The names libpcap's shared object goes by (Debian's `libpcap0.8` first).
const LIBRARY_NAMES: &[&str] = &["libpcap.so.0.8", "libpcap.so.1", "libpcap.so"];

/// `PCAP_NETMASK_UNKNOWN`.
const NETMASK_UNKNOWN: u32 = 0xffff_ffff;

/// The loaded library and the functions the filter uses.
#[derive(Debug)]
pub struct Libpcap {
    _lib: libloading::Library,
    open_dead: OpenDead,
    compile: Compile,
    free_code: FreeCode,
    get_err: GetErr,
    close: Close,
    offline_filter: OfflineFilter,
}

/// The function `name` of `lib`, typed `T`.
///
/// # Safety
/// `T` must be the C signature of `name` in libpcap, and the pointer used only
/// while `lib` is loaded.
unsafe fn function<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, String> {
    let symbol = format!("{name}\0");
    // SAFETY: the caller guarantees `T` is the symbol's type and the lifetime.
    unsafe { lib.get::<T>(symbol.as_bytes()) }.map(|s| *s).map_err(|e| format!("libpcap lacks {name} ({e})"))
}

impl Libpcap {
    /// Loads libpcap.
    ///
    /// # Errors
    /// No libpcap shared object, or one without the functions needed.
    pub fn load() -> Result<Self, String> {
        let mut last = String::new();
        for name in LIBRARY_NAMES {
            // SAFETY: loading libpcap runs its initialisers, which have no
            // preconditions; the library stays loaded as long as `Libpcap`.
            let lib = match unsafe { libloading::Library::new(name) } {
                Ok(lib) => lib,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            // SAFETY: the type is libpcap's C signature of the function
            // (pcap/pcap.h); the pointer lives in the same struct as `lib`, so it
            // is used only while the library is loaded. Likewise below.
            let open_dead = unsafe { function(&lib, "pcap_open_dead") }?;
            // SAFETY: as above.
            let compile = unsafe { function(&lib, "pcap_compile") }?;
            // SAFETY: as above.
            let free_code = unsafe { function(&lib, "pcap_freecode") }?;
            // SAFETY: as above.
            let get_err = unsafe { function(&lib, "pcap_geterr") }?;
            // SAFETY: as above.
            let close = unsafe { function(&lib, "pcap_close") }?;
            // SAFETY: as above.
            let offline_filter = unsafe { function(&lib, "pcap_offline_filter") }?;
            return Ok(Self { open_dead, compile, free_code, get_err, close, offline_filter, _lib: lib });
        }
        Err(format!("libpcap is not installed ({last}): apt-get install libpcap0.8"))
    }

    /// Compiles `expr` (tcpdump syntax) for frames of `linktype` (a DLT) into
    /// optimised classic BPF.
    ///
    /// # Errors
    /// libpcap's one-line message for an expression it refuses.
    pub fn compile(&self, expr: &str, linktype: c_int) -> Result<Vec<Insn>, String> {
        let text = CString::new(expr).map_err(|_| "the expression contains a NUL byte".to_owned())?;
        // SAFETY: pcap_open_dead takes a link type and a snap length and returns
        // a handle or NULL; no other precondition.
        let handle = unsafe { (self.open_dead)(linktype, 65535) };
        if handle.is_null() {
            return Err("pcap_open_dead failed (out of memory)".into());
        }
        let mut program = Program { bf_len: 0, bf_insns: std::ptr::null_mut() };
        // SAFETY: `handle` is live, `program` is a valid out-parameter and
        // `text` a NUL-terminated string that outlives the call.
        let rc = unsafe { (self.compile)(handle, &mut program, text.as_ptr(), 1, NETMASK_UNKNOWN) };
        let result = if rc != 0 {
            // SAFETY: `handle` is live; pcap_geterr has no other precondition.
            let text = unsafe { (self.get_err)(handle) };
            // SAFETY: after a failed pcap_compile the handle's message is a
            // NUL-terminated string, valid until the handle is closed (it is
            // copied out before that).
            let msg = unsafe { CStr::from_ptr(text) };
            Err(msg.to_string_lossy().into_owned())
        } else {
            // SAFETY: a successful pcap_compile filled `program` with `bf_len`
            // instructions at `bf_insns`, valid until pcap_freecode.
            let insns = unsafe { std::slice::from_raw_parts(program.bf_insns, program.bf_len as usize) }.to_vec();
            // SAFETY: `program` was filled by pcap_compile and is freed once.
            unsafe { (self.free_code)(&mut program) };
            Ok(insns)
        };
        // SAFETY: `handle` came from pcap_open_dead and is closed once.
        unsafe { (self.close)(handle) };
        result
    }

    /// Whether `program` accepts the frame `data` (captured bytes) of `wire_len` bytes on the wire.
    pub fn matches(&self, program: &[Insn], data: &[u8], wire_len: u32) -> bool {
        let prog = Program { bf_len: program.len() as c_uint, bf_insns: program.as_ptr().cast_mut() };
        let hdr = PktHdr { ts: libc::timeval { tv_sec: 0, tv_usec: 0 }, caplen: data.len() as u32, len: wire_len };
        // SAFETY: pcap_offline_filter only reads: `prog` points at
        // `program.len()` instructions borrowed for the call, `hdr.caplen` is
        // the length of `data`, which it reads at most that far; libpcap's
        // interpreter bounds every load by caplen.
        unsafe { (self.offline_filter)(&prog, &hdr, data.as_ptr()) != 0 }
    }
}
