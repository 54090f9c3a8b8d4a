//! Log lines with a severity journald understands: the three binaries write
//! every stderr line through [`crate::cj_error!`], [`crate::cj_warn!`] or
//! [`crate::cj_info!`].
//!
//! Guarantees:
//! - Under systemd, when stderr is the journal's stream (`JOURNAL_STREAM`
//!   names stderr's device and inode, as systemd.exec(5) sets it), every line
//!   starts with its sd-daemon(3) priority prefix: `<3>` errors (the line
//!   before a non-zero exit, or output that could not be written), `<4>` warnings (something needs attention:
//!   drops, a full queue, an interface down, a collector that refuses), `<6>`
//!   information (start lines, periodic stats, summaries). journald strips the
//!   prefix and stores the priority, so `journalctl -p warning -u 'conjure-*'`
//!   shows only warnings and errors.
//! - Elsewhere (a terminal, a file, Docker's log drivers) no prefix is written:
//!   the line is as before, warnings carry `warning:` after the program name,
//!   errors are the last line before a non-zero exit.
//! - The decision is made once per process, from the environment and an
//!   `fstat` of stderr; it costs nothing per line after that.
//!
//! Not guaranteed: a message of several lines gets its prefix on the first line
//! only (journald gives the others the unit's default level); the binaries
//! write one line per message.

use std::sync::OnceLock;

/// The severity of a line (syslog numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// `<3>`: the process stops with a non-zero exit.
    Error = 3,
    /// `<4>`: needs attention.
    Warning = 4,
    /// `<6>`: information.
    Info = 6,
}

/// The prefix for a line of `level`: `<N>` under journald, else empty.
pub fn prefix(level: Level) -> &'static str {
    if !under_journal() {
        return "";
    }
    match level {
        Level::Error => "<3>",
        Level::Warning => "<4>",
        Level::Info => "<6>",
    }
}

/// Whether stderr is the journal stream `JOURNAL_STREAM` names (`DEV:INODE`).
fn under_journal() -> bool {
    static UNDER: OnceLock<bool> = OnceLock::new();
    *UNDER.get_or_init(|| {
        let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
        let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else { return false };
        let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
        nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&std::io::stderr()))
            .is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
    })
}

/// `eprintln!` with the error priority ([`Level::Error`]).
#[macro_export]
macro_rules! cj_error {
    ($($arg:tt)*) => {
        eprintln!("{}{}", $crate::log::prefix($crate::log::Level::Error), format_args!($($arg)*))
    };
}

/// `eprintln!` with the warning priority ([`Level::Warning`]).
#[macro_export]
macro_rules! cj_warn {
    ($($arg:tt)*) => {
        eprintln!("{}{}", $crate::log::prefix($crate::log::Level::Warning), format_args!($($arg)*))
    };
}

/// `eprintln!` with the informational priority ([`Level::Info`]).
#[macro_export]
macro_rules! cj_info {
    ($($arg:tt)*) => {
        eprintln!("{}{}", $crate::log::prefix($crate::log::Level::Info), format_args!($($arg)*))
    };
}
