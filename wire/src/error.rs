//! The parsing error: a `Copy` value that carries no data and never allocates.
//!
//! Views return it from `check_len` / `new_checked`. It says only whether the
//! buffer was too short for the header ([`Error::Truncated`]) or the header's
//! own length fields contradict each other ([`Error::Malformed`]).
use core::fmt;

/// Why a view could not be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header (or the length the header claims).
    Truncated,
    /// A length field is impossible (e.g. IPv4 IHL < 5, total length < IHL*4).
    Malformed,
}

/// `core::result::Result` with this crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("buffer shorter than the header"),
            Error::Malformed => f.write_str("header length fields are inconsistent"),
        }
    }
}

impl std::error::Error for Error {}
