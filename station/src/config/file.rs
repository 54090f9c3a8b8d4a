//! The `--config` file reader: a conjure.conf-style file (and its includes)
//! into a layer of values whose origins are `FILE:LINE`.
//!
//! # The file format
//!
//! A `--config` file is the shell subset a start script can also source with
//! `sh`: blank lines, `#` comments (also after a value), `NAME=VALUE`
//! assignments (optionally after `export `, several per line allowed), values
//! unquoted, in `'single'` or `"double"` quotes, and includes:
//! `. FILE`, `source FILE` (FILE must exist, as in `sh`), and
//! `[ -f FILE ] && . FILE` (also `-r`, `-e`, and `test -f FILE && . FILE`),
//! which include FILE only when it exists. Relative include paths are relative
//! to the current directory, as in `sh`. Nothing is expanded: `$`, backquotes,
//! `$(...)`, pipes, redirections and other commands are errors naming the file
//! and line, and so is an unquoted `~` where sh would expand it to a home
//! directory (a word's start, after an assignment's `=`, after an unquoted
//! `:` in its value): `sh` and the station would read two different paths. The no-op commands `true` and `:` are accepted. Includes nest at most [`MAX_INCLUDE_DEPTH`] deep and a file that
//! includes itself (directly or not) is an error.
//!
//! Every file (the `--config` file and each include; also the app's
//! `CJ_STATION_CONFIG` and the detector's `CJ_DIVERT_RULES`) is opened with
//! `O_NONBLOCK`, `fstat`ed and read only when it is a regular file of at most
//! [`MAX_CONFIG_FILE_BYTES`] (1 MiB) of UTF-8, owned by root or this
//! process's effective user and writable by no one else ([`open_operator_file`]:
//! a file another user owns or may write would let that user configure a
//! station that runs as root); a symbolic link is followed only when root or
//! this process's user owns it. A FIFO, a device such as `/dev/zero`, a
//! directory, a larger file or a foreign one is a one-line error naming the
//! file and the fix, and reading never blocks or grows without bound. `[ -r
//! FILE ]` is tested with `access(2)`, never by opening FILE.
//!
//! Unknown `CJ_*` names in a file are errors (with a "did you mean" hint); other
//! unknown names are ignored, unless they look like a misspelt known name.
//! Unknown `CJ_*` names in the environment are ignored.
//!
//! # Guarantees
//!
//! A file is either read whole into `NAME -> (value, FILE:LINE)` (the last
//! assignment of each name wins) or refused with a one-line [`ConfigError`]
//! naming the file and line; nothing in it is run or expanded. An error quotes
//! at most [`EXCERPT_CHARS`] printable characters of a line ([`excerpt`]),
//! never a whole line, and a file refused by its owner or mode is not parsed
//! at all.
//!
//! # Not guaranteed
//!
//! Values are not checked here (see `validate.rs`). A file is read once, at
//! start, and a regular file on a hung network file system can still block
//! the read. The directories above a file are not checked: a file in a
//! directory another user may write can be replaced by that user between two
//! starts (keep configuration under `/etc` or `/var/lib/conjure`).

use std::path::{Path, PathBuf};

use super::variables::is_known;
use super::{ConfigError, Given, Layer, VARIABLES};

/// How deep `. FILE` includes may nest.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// Reads a conjure.conf-style file (and its includes) into a map of values
/// whose origins are `FILE:LINE`.
pub(super) fn read_conf_file(path: &Path) -> Result<Layer, ConfigError> {
    let mut out = Layer::new();
    let mut stack = Vec::new();
    let text = read_bounded(path).map_err(|e| {
        ConfigError::new("--config", &path.display().to_string(), "command line", format!("a readable file ({e})"))
    })?;
    read_conf_text(path, &text, &mut stack, &mut out)?;
    Ok(out)
}

/// Why a configuration file was not read ([`read_bounded`]); `Display` is one
/// clause naming the file, for the end of a [`ConfigError`].
#[derive(Debug, thiserror::Error)]
pub enum ConfFileError {
    /// `open(2)` failed.
    #[error("{path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `fstat(2)` or `read(2)` failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A FIFO, device, socket or directory.
    #[error("{path} is a {kind}, not a regular file: name a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// `FIFO`, `character device`, ...
        kind: &'static str,
    },
    /// Larger than [`MAX_CONFIG_FILE_BYTES`].
    #[error(
        "{path} is larger than {} ({MAX_CONFIG_FILE_BYTES} bytes): a configuration file is a few KiB",
        MAX_CONFIG_FILE_TEXT
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not UTF-8.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// Owned by a user other than root and this process's: never read.
    #[error(
        "{path} is owned by uid {uid}, neither root nor this process's user (uid {euid}), and a configuration file \
         is the operator's: chown root {path} (or to uid {euid}), or name a file root owns"
    )]
    Foreign {
        /// The file (the one a link leads to).
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// This process's effective user.
        euid: u32,
    },
    /// A symbolic link made by another user than root and this process's: not followed.
    #[error(
        "{path} is a symbolic link owned by uid {uid}, neither root nor this process's user (uid {euid}): \
         not followed; name the file itself, or remove the link"
    )]
    ForeignLink {
        /// The link.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// This process's effective user.
        euid: u32,
    },
    /// The file it opened is not the one it checked: the name was replaced
    /// between the look and the open.
    #[error(
        "{path} was replaced between its check and its open: refusing it (keep configuration files in a \
         directory only root can change)"
    )]
    Replaced {
        /// The file.
        path: PathBuf,
    },
    /// Writable by its group or by others: never read.
    #[error("{path} has mode {mode:04o}: other users than its owner may write it: chmod go-w {path}")]
    Writable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Largest configuration file (`--config` and each include) read, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;
const MAX_CONFIG_FILE_TEXT: &str = "1 MiB";

/// Opens a file the operator gives the station (a `--config` file and its
/// includes, `CJ_STATION_CONFIG`, `CJ_DIVERT_RULES`) and checks it on the
/// descriptor before a byte is read: opened with `O_NONBLOCK` (a FIFO never
/// blocks the open) and `fstat`ed; a regular file, owned by root or by this
/// process's effective user, and writable by no one else (no group or other
/// write bit). A symbolic link is followed only when root or this process's
/// user owns it (an operator's `ln -s` works; a link another user planted is
/// refused without being followed), and the file it leads to is what is
/// checked. A file that fails is never read, so nothing of it reaches a message.
///
/// Returns the open file and its metadata (from `fstat`).
///
/// # Errors
/// It cannot be opened or `fstat`ed, is not a regular file, is owned by
/// another user or is writable by group or others, or is a link another user owns.
pub fn open_operator_file(path: &Path) -> Result<(std::fs::File, std::fs::Metadata), ConfFileError> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
    let euid = nix::unistd::geteuid().as_raw();
    let trusted = |uid: u32| uid == 0 || uid == euid;
    // Every link on the way, not only the last name: another user's link to
    // /etc as a directory of the path led to /etc/shadow.
    for step in path.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if let Ok(link) = std::fs::symlink_metadata(step) {
            if link.file_type().is_symlink() && !trusted(link.uid()) {
                return Err(ConfFileError::ForeignLink { path: step.to_path_buf(), uid: link.uid(), euid });
            }
        }
    }
    // What the name is now; the open file must be that one: a regular file
    // swapped for a link (or another file) before the open is refused. (A
    // link of root's or this user's is followed to what it leads to now; one
    // that root put in a directory another user can change can still be
    // swapped: keep configuration files where only root can change them.)
    let looked = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino())),
        Ok(m) => Some((m.dev(), m.ino())),
        Err(_) => None,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            nix::fcntl::OFlag::O_NONBLOCK.bits()
                | nix::fcntl::OFlag::O_CLOEXEC.bits()
                | nix::fcntl::OFlag::O_NOCTTY.bits(),
        )
        .open(path)
        .map_err(|source| ConfFileError::Open { path: path.to_path_buf(), source })?;
    let meta = file.metadata().map_err(|source| ConfFileError::Read { path: path.to_path_buf(), source })?;
    if looked.is_some_and(|id| id != (meta.dev(), meta.ino())) {
        return Err(ConfFileError::Replaced { path: path.to_path_buf() });
    }
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(ConfFileError::NotRegular { path: path.to_path_buf(), kind });
    }
    if !trusted(meta.uid()) {
        return Err(ConfFileError::Foreign { path: path.to_path_buf(), uid: meta.uid(), euid });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(ConfFileError::Writable { path: path.to_path_buf(), mode: meta.mode() & 0o7777 });
    }
    Ok((file, meta))
}

/// Reads a configuration file safely: opened and checked by
/// [`open_operator_file`] (a regular file of root or this process's user
/// that no one else may write), read to at most [`MAX_CONFIG_FILE_BYTES`]
/// (a file that grows meanwhile is refused too).
///
/// # Errors
/// The file is refused by [`open_operator_file`], cannot be read, is too
/// large or is not UTF-8.
pub fn read_bounded(path: &Path) -> Result<String, ConfFileError> {
    use std::io::Read as _;
    let (file, meta) = open_operator_file(path)?;
    if meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(ConfFileError::TooLarge { path: path.to_path_buf() });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ConfFileError::Read { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfFileError::TooLarge { path: path.to_path_buf() });
    }
    String::from_utf8(bytes).map_err(|_| ConfFileError::NotText { path: path.to_path_buf() })
}

/// Longest piece of a file's line that an error message quotes, in characters.
pub const EXCERPT_CHARS: usize = 32;

/// A short, printable piece of `text` (a line or word of a file) for an error
/// message, unquoted: at most [`EXCERPT_CHARS`] characters, each control or
/// non-ASCII character shown as `?`, and `...` after a cut. A message never
/// quotes a whole line of a file it could not read as its own.
pub fn excerpt(text: &str) -> String {
    let mut out: String =
        text.chars().take(EXCERPT_CHARS).map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect();
    if text.chars().nth(EXCERPT_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// Parses the text of a configuration file named `name` (includes are read
/// from the file system, relative to the current directory) and returns the
/// variables it sets, as `(NAME, VALUE, FILE:LINE)` of the last assignment
/// of each, sorted by name.
/// For tools and the fuzz target; [`StationConfig::load_from`](super::StationConfig::load_from) is the loader.
///
/// # Errors
/// As a `--config` file: the first line that is not accepted.
pub fn parse_conf_text(name: &Path, text: &str) -> Result<Vec<(String, String, String)>, ConfigError> {
    let mut out = Layer::new();
    read_conf_text(name, text, &mut Vec::new(), &mut out)?;
    let mut v: Vec<(String, String, String)> = out.into_iter().map(|(k, g)| (k, g.value, g.origin)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn read_conf_text(path: &Path, text: &str, stack: &mut Vec<PathBuf>, out: &mut Layer) -> Result<(), ConfigError> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    stack.push(canonical);
    let name = path.display().to_string();
    for (i, line) in text.lines().enumerate() {
        let origin = format!("{name}:{}", i + 1);
        read_line(line.strip_suffix('\r').unwrap_or(line), &origin, stack, out)?;
    }
    stack.pop();
    Ok(())
}

const LINE_EXPECTED: &str =
    "NAME=VALUE, a # comment, \". FILE\" or \"[ -f FILE ] && . FILE\" (nothing is expanded or run)";

fn read_line(line: &str, origin: &str, stack: &mut Vec<PathBuf>, out: &mut Layer) -> Result<(), ConfigError> {
    let words = match tokenize(line) {
        Ok(w) => w,
        Err(reason) => return Err(line_error(line, origin, reason)),
    };
    let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    match texts.as_slice() {
        // `true` and `:` do nothing (conjure.conf ends with one for `set -e` scripts).
        [] | ["true"] | [":"] => Ok(()),
        [".", file] | ["source", file] => {
            let p = Path::new(file);
            if !p.exists() {
                return Err(ConfigError::new(
                    "",
                    &excerpt(line.trim()),
                    origin,
                    "an include of an existing file (as in sh)",
                ));
            }
            include(p, line, origin, stack, out)
        }
        ["[", test, f1, "]", "&&", dot, f2] | ["test", test, f1, "&&", dot, f2]
            if matches!(*test, "-f" | "-r" | "-e") && matches!(*dot, "." | "source") =>
        {
            if f1 != f2 {
                return Err(ConfigError::new(
                    "",
                    &excerpt(line.trim()),
                    origin,
                    "\"[ -f FILE ] && . FILE\" testing the file it includes",
                ));
            }
            let p = Path::new(f1);
            let present = match *test {
                "-f" => p.is_file(),
                // access(2), not open(2): opening a FIFO to test it would block.
                "-r" => nix::unistd::access(p, nix::unistd::AccessFlags::R_OK).is_ok(),
                _ => p.exists(),
            };
            if present {
                include(p, line, origin, stack, out)
            } else {
                Ok(())
            }
        }
        _ => {
            let assigns = match words.first() {
                Some(w) if w.text == "export" && w.assign.is_none() => &words[1..],
                _ => &words[..],
            };
            if assigns.is_empty() || assigns.iter().any(|w| w.assign.is_none()) {
                return Err(ConfigError::new("", &excerpt(line.trim()), origin, LINE_EXPECTED));
            }
            for w in assigns {
                let eq = w.assign.unwrap_or(0);
                let (key, value) = (&w.text[..eq], &w.text[eq + 1..]);
                assign(key, value, origin, out)?;
            }
            Ok(())
        }
    }
}

fn include(p: &Path, line: &str, origin: &str, stack: &mut Vec<PathBuf>, out: &mut Layer) -> Result<(), ConfigError> {
    let canonical = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    if stack.contains(&canonical) {
        return Err(ConfigError::new(
            "",
            &excerpt(line.trim()),
            origin,
            "an include that does not loop back to an including file",
        ));
    }
    if stack.len() >= MAX_INCLUDE_DEPTH {
        return Err(ConfigError::new(
            "",
            &excerpt(line.trim()),
            origin,
            format!("includes nested at most {MAX_INCLUDE_DEPTH} deep"),
        ));
    }
    let text = read_bounded(p).map_err(|e| {
        ConfigError::new("", &excerpt(line.trim()), origin, format!("an include of a readable regular file ({e})"))
    })?;
    read_conf_text(p, &text, stack, out)
}

fn assign(key: &str, value: &str, origin: &str, out: &mut Layer) -> Result<(), ConfigError> {
    if is_known(key) {
        out.insert(key.to_owned(), Given::new(value, origin));
        return Ok(());
    }
    let hint = did_you_mean(key);
    if key.starts_with("CJ_") || hint.is_some() {
        let expected = match hint {
            Some(h) => format!("a variable the station knows; did you mean {h}?"),
            None => "a variable the station knows (see sysconfig/conjure.conf)".to_owned(),
        };
        return Err(ConfigError::new(key, &excerpt(value), origin, expected));
    }
    Ok(())
}

/// The known name closest to `key`, when it is close (a typo).
fn did_you_mean(key: &str) -> Option<&'static str> {
    VARIABLES.iter().map(|v| (edit_distance(key, v.name), v.name)).filter(|(d, _)| *d <= 2).min().map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A line that is not an assignment, include or comment; names the variable
/// when the line starts like an assignment.
fn line_error(line: &str, origin: &str, reason: &str) -> ConfigError {
    let t = line.trim_start();
    let t = t.strip_prefix("export ").map_or(t, str::trim_start);
    if let Some((key, value)) = t.split_once('=') {
        if is_name(key) {
            return ConfigError::new(key, &excerpt(value.trim_end()), origin, format!("a literal value ({reason})"));
        }
    }
    ConfigError::new("", &excerpt(line.trim()), origin, format!("{LINE_EXPECTED}; {reason}"))
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

/// A shell word after quote removal.
#[derive(Debug)]
struct Word {
    text: String,
    /// Index of the `=` when the word is an assignment `NAME=...` (NAME unquoted).
    assign: Option<usize>,
}

/// Splits a line into words the way `sh` would, refusing anything that `sh`
/// would expand or run.
fn tokenize(line: &str) -> Result<Vec<Word>, &'static str> {
    const EXPANSION: &str = "$ and backquotes are not expanded here";
    // sh expands an unquoted ~ at a word's start, after an assignment's = and
    // after an unquoted : in its value; here it would stay a literal ~.
    const TILDE: &str =
        "a ~ that sh would expand to a home directory is not expanded here: write the whole path, or quote the ~";
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        if first == '#' {
            break;
        }
        if first == '&' {
            chars.next();
            if chars.next() == Some('&') {
                words.push(Word { text: "&&".into(), assign: None });
                continue;
            }
            return Err("a background & is not allowed");
        }
        let mut text = String::new();
        // Whether everything so far in this word was unquoted (for NAME=).
        let mut plain = true;
        let mut assign = None;
        // Where sh would expand an unquoted ~ (the byte length of `text` there).
        let mut tilde_at = Some(0);
        while let Some(&c) = chars.peek() {
            match c {
                ' ' | '\t' | '&' => break,
                '\'' => {
                    chars.next();
                    plain = false;
                    loop {
                        match chars.next() {
                            Some('\'') => break,
                            Some(ch) => text.push(ch),
                            None => return Err("a closing single quote"),
                        }
                    }
                }
                '"' => {
                    chars.next();
                    plain = false;
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(ch @ ('$' | '`' | '"' | '\\')) => text.push(ch),
                                Some(ch) => {
                                    text.push('\\');
                                    text.push(ch);
                                }
                                None => return Err("a closing double quote"),
                            },
                            Some('$' | '`') => return Err(EXPANSION),
                            Some(ch) => text.push(ch),
                            None => return Err("a closing double quote"),
                        }
                    }
                }
                '\\' => {
                    chars.next();
                    plain = false;
                    match chars.next() {
                        Some(ch) => text.push(ch),
                        None => return Err("no line continuation"),
                    }
                }
                '$' | '`' => return Err(EXPANSION),
                ';' | '|' | '<' | '>' | '(' | ')' => return Err("one assignment or include per line: no ; | < > ( )"),
                '=' if plain && assign.is_none() => {
                    chars.next();
                    if is_name(&text) {
                        assign = Some(text.len());
                        tilde_at = Some(text.len() + 1);
                    }
                    plain = false;
                    text.push('=');
                }
                '~' if tilde_at == Some(text.len()) => return Err(TILDE),
                _ => {
                    chars.next();
                    text.push(c);
                    if c == ':' && assign.is_some() {
                        tilde_at = Some(text.len());
                    }
                }
            }
        }
        words.push(Word { text, assign });
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::StationConfig;
    use super::*;

    #[test]
    fn a_configuration_file_others_may_write_is_refused_unread() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.conf");
        std::fs::write(&f, "CJ_CORECOUNT=2\n").unwrap();
        for mode in [0o600, 0o644, 0o640, 0o400] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_bounded(&f).unwrap(), "CJ_CORECOUNT=2\n", "mode {mode:o}");
        }
        for mode in [0o666, 0o664, 0o646, 0o620, 0o602] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_bounded(&f).unwrap_err().to_string();
            assert!(e.contains("chmod go-w") && !e.contains("CJ_CORECOUNT"), "mode {mode:o}: {e}");
        }
    }

    #[test]
    fn a_configuration_file_or_link_of_another_user_is_refused_unread() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            return; // chown to another user needs root
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.conf");
        std::fs::write(&f, "CJ_CORECOUNT=2\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        // root's link to root's file: followed.
        let link = d.path().join("link.conf");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(read_bounded(&link).is_ok());
        // Another user's link to root's file: not followed.
        std::os::unix::fs::lchown(&link, Some(1), Some(1)).unwrap();
        let e = read_bounded(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link owned by uid 1") && !e.contains("CJ_CORECOUNT"), "{e}");
        // Another user's link as a directory on the way (to a directory of root's): not followed.
        let root_dir = d.path().join("etc");
        std::fs::create_dir(&root_dir).unwrap();
        std::fs::write(root_dir.join("secret"), "root:SECRET\n").unwrap();
        let via = d.path().join("via");
        std::os::unix::fs::symlink(&root_dir, &via).unwrap();
        std::os::unix::fs::lchown(&via, Some(1), Some(1)).unwrap();
        let e = read_bounded(&via.join("secret")).unwrap_err().to_string();
        assert!(e.contains("symbolic link owned by uid 1") && !e.contains("SECRET"), "{e}");
        // Another user's file: not read.
        std::os::unix::fs::chown(&f, Some(1), Some(1)).unwrap();
        let e = read_bounded(&f).unwrap_err().to_string();
        assert!(e.contains("owned by uid 1") && e.contains("chown root"), "{e}");
    }

    #[test]
    fn an_excerpt_is_short_and_printable() {
        assert_eq!(excerpt("hello world"), "hello world");
        assert_eq!(excerpt("a\tb\u{1b}[31mc\u{e9}"), "a?b?[31mc?");
        let long = "root:$6$SECRETHASH$abcdefghijklmnopqrstuvwxyz0123456789:19000:0:99999:7:::";
        let e = excerpt(long);
        assert_eq!(e.len(), EXCERPT_CHARS + 3);
        assert!(e.ends_with("...") && !e.contains("0123456789"), "{e}");
        let err = parse_conf_text(Path::new("f"), long).unwrap_err().to_string();
        assert!(!err.contains("0123456789") && err.contains("..."), "{err}");
    }

    #[test]
    fn file_values_carry_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "c.conf",
            "# comment\n\nCJ_CORECOUNT=2\nexport CJ_COREBASE=\"3\"   # trailing comment\n  CJ_CLUSTER_ID='12'\nCJ_SHM_DIR=/tmp/x#notacomment\n",
        );
        let c = StationConfig::load_from(&[], Some(&p)).unwrap();
        assert_eq!((c.corecount, c.corebase, c.cluster_id), (2, 3, 12));
        assert_eq!(c.shm_dir, PathBuf::from("/tmp/x#notacomment"));
        assert_eq!(c.origin("CJ_CORECOUNT"), format!("{}:3", p.display()));
        assert_eq!(c.origin("CJ_COREBASE"), format!("{}:4", p.display()));
        assert_eq!(c.origin("CJ_CLUSTER_ID"), format!("{}:5", p.display()));

        let p = write(d.path(), "bad.conf", "\nCJ_CORECOUNT=four\n");
        let e = StationConfig::load_from(&[], Some(&p)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(r#"CJ_CORECOUNT="four" ({}:2): expected a whole number from 1 to 1024"#, p.display())
        );
    }

    #[test]
    fn quotes_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "q.conf",
            "CJ_IFACE='sim:flows=10,packets=20'\nCJ_STATION_CONFIG=\"/etc/a b.toml\"\nCJ_IP4_ADDR=\"a\\\"b\" CJ_IP6_ADDR=x'y'z\nCJ_SHM_DIR=\n",
        );
        let e = StationConfig::load_from(&[], Some(&p)).unwrap_err();
        // CJ_SHM_DIR= (empty) is not an absolute path.
        assert_eq!(e.to_string(), format!(r#"CJ_SHM_DIR="" ({}:4): expected an absolute directory path"#, p.display()));
        let p = write(
            d.path(),
            "q2.conf",
            "CJ_IFACE='sim:flows=10,packets=20'\nCJ_STATION_CONFIG=\"/etc/a b.toml\"\nCJ_IP4_ADDR=\"a\\\"b\" CJ_IP6_ADDR=x'y'z\n",
        );
        let c = StationConfig::load_from(&[], Some(&p)).unwrap();
        assert_eq!(c.iface, "sim:flows=10,packets=20");
        assert_eq!(c.station_config, Some(PathBuf::from("/etc/a b.toml")));
        assert_eq!(c.origin("CJ_IP6_ADDR"), format!("{}:3", p.display()));
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let cases: &[(&str, &str)] = &[
            (
                "CJ_IFACE=$(hostname)\n",
                r#"CJ_IFACE="$(hostname)" ({F}:1): expected a literal value ($ and backquotes are not expanded here)"#,
            ),
            (
                "CJ_IFACE=\"$IF\"\n",
                r#"CJ_IFACE="\"$IF\"" ({F}:1): expected a literal value ($ and backquotes are not expanded here)"#,
            ),
            (
                "\nhello world\n",
                r#"{F}:2: "hello world": expected NAME=VALUE, a # comment, ". FILE" or "[ -f FILE ] && . FILE" (nothing is expanded or run)"#,
            ),
            (
                "CJ_CORECOUNT = 2\n",
                r#"{F}:1: "CJ_CORECOUNT = 2": expected NAME=VALUE, a # comment, ". FILE" or "[ -f FILE ] && . FILE" (nothing is expanded or run)"#,
            ),
            (
                "CJ_CORECOUNT=2; CJ_COREBASE=1\n",
                r#"CJ_CORECOUNT="2; CJ_COREBASE=1" ({F}:1): expected a literal value (one assignment or include per line: no ; | < > ( ))"#,
            ),
            ("CJ_IFACE='eth0\n", r#"CJ_IFACE="'eth0" ({F}:1): expected a literal value (a closing single quote)"#),
            (
                "CJ_COREBSE=2\n",
                r#"CJ_COREBSE="2" ({F}:1): expected a variable the station knows; did you mean CJ_COREBASE?"#,
            ),
            (
                "CJ_FROBNICATE=2\n",
                r#"CJ_FROBNICATE="2" ({F}:1): expected a variable the station knows (see sysconfig/conjure.conf)"#,
            ),
            (
                "N_QUEUE_SET=2\n",
                r#"N_QUEUE_SET="2" ({F}:1): expected a variable the station knows; did you mean N_QUEUE_SETS?"#,
            ),
            (
                "CJ_SHM_DIR=~/queues\n",
                r#"CJ_SHM_DIR="~/queues" ({F}:1): expected a literal value (a ~ that sh would expand to a home directory is not expanded here: write the whole path, or quote the ~)"#,
            ),
            (
                "CJ_STATION_CONFIG=/etc/a:~/b\n",
                r#"CJ_STATION_CONFIG="/etc/a:~/b" ({F}:1): expected a literal value (a ~ that sh would expand to a home directory is not expanded here: write the whole path, or quote the ~)"#,
            ),
            (
                ". ~/more.conf\n",
                r#"{F}:1: ". ~/more.conf": expected NAME=VALUE, a # comment, ". FILE" or "[ -f FILE ] && . FILE" (nothing is expanded or run); a ~ that sh would expand to a home directory is not expanded here: write the whole path, or quote the ~"#,
            ),
            (
                "CJ_CORECOUNT=2 make\n",
                r#"{F}:1: "CJ_CORECOUNT=2 make": expected NAME=VALUE, a # comment, ". FILE" or "[ -f FILE ] && . FILE" (nothing is expanded or run)"#,
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let p = write(d.path(), &format!("s{i}.conf"), text);
            let got = StationConfig::load_from(&[], Some(&p)).unwrap_err().to_string();
            assert_eq!(got, want.replace("{F}", &p.display().to_string()), "case {i}");
        }
    }

    #[test]
    fn a_tilde_sh_would_not_expand_is_a_literal_as_in_sh() {
        let d = tempfile::tempdir().unwrap();
        // Quoted, or inside a word: sh keeps the ~ too.
        let p = write(d.path(), "t.conf", "CJ_SHM_DIR='~'/q\nCJ_STATION_CONFIG=/etc/a~b\n");
        let e = StationConfig::load_from(&[], Some(&p)).unwrap_err().to_string();
        assert!(e.starts_with(r#"CJ_SHM_DIR="~/q""#), "the quoted ~ is kept, and the path is then not absolute: {e}");
        let p = write(d.path(), "u.conf", "CJ_SHM_DIR=/run/a~b\n");
        assert_eq!(StationConfig::load_from(&[], Some(&p)).unwrap().shm_dir, PathBuf::from("/run/a~b"));
    }

    #[test]
    fn unknown_non_station_names_in_a_file_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "o.conf", "LD_LIBRARY_PATH=/usr/local/lib\nexport GOPATH=/go\n");
        assert_eq!(StationConfig::load_from(&[], Some(&p)).unwrap().corecount, 1);
    }

    #[test]
    fn includes_guarded_and_plain() {
        let d = tempfile::tempdir().unwrap();
        let over = write(d.path(), "over.conf", "CJ_CORECOUNT=7\n");
        let missing = d.path().join("missing.conf");
        let main = write(
            d.path(),
            "main.conf",
            &format!(
                "CJ_CORECOUNT=1\nCJ_COREBASE=2\n[ -f {} ] && . {}\n[ -r {} ] && . {}\ntest -e '{}' && source \"{}\"\n",
                over.display(),
                over.display(),
                missing.display(),
                missing.display(),
                missing.display(),
                missing.display()
            ),
        );
        let c = StationConfig::load_from(&[], Some(&main)).unwrap();
        assert_eq!(c.corecount, 7);
        assert_eq!(c.origin("CJ_CORECOUNT"), format!("{}:1", over.display()));
        assert_eq!(c.origin("CJ_COREBASE"), format!("{}:2", main.display()));

        let plain = write(d.path(), "plain.conf", &format!(". {}\nsource {}\n", over.display(), over.display()));
        assert_eq!(StationConfig::load_from(&[], Some(&plain)).unwrap().corecount, 7);

        // An unguarded include of a missing file fails, as in sh.
        let bad = write(d.path(), "bad.conf", &format!("\n. {}\n", missing.display()));
        let e = StationConfig::load_from(&[], Some(&bad)).unwrap_err();
        assert_eq!(e.origin, format!("{}:2", bad.display()));
        assert!(e.expected.contains("existing file"), "{e}");

        // The guard must test the file it includes.
        let odd = write(d.path(), "odd.conf", &format!("[ -f {} ] && . {}\n", over.display(), missing.display()));
        assert!(StationConfig::load_from(&[], Some(&odd)).unwrap_err().expected.contains("testing the file"));
    }

    #[test]
    fn include_loops_and_depth_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.conf");
        let b = d.path().join("b.conf");
        write(d.path(), "a.conf", &format!("CJ_CORECOUNT=2\n. {}\n", b.display()));
        write(d.path(), "b.conf", &format!("[ -f {} ] && . {}\n", a.display(), a.display()));
        let e = StationConfig::load_from(&[], Some(&a)).unwrap_err();
        assert_eq!(e.origin, format!("{}:1", b.display()));
        assert!(e.expected.contains("loop"), "{e}");

        // A chain deeper than the limit.
        for i in 0..=MAX_INCLUDE_DEPTH {
            let next = d.path().join(format!("d{}.conf", i + 1));
            write(d.path(), &format!("d{i}.conf"), &format!("[ -f {} ] && . {}\n", next.display(), next.display()));
        }
        let e = StationConfig::load_from(&[], Some(&d.path().join("d0.conf"))).unwrap_err();
        assert!(e.expected.contains("nested at most"), "{e}");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let e = StationConfig::load_from(&[], Some(Path::new("/nonexistent/conjure.conf"))).unwrap_err();
        assert_eq!(e.var, "--config");
        assert_eq!(e.origin, "command line");
        assert!(e
            .to_string()
            .starts_with(r#"--config="/nonexistent/conjure.conf" (command line): expected a readable file"#));
    }

    #[test]
    fn a_config_file_that_is_not_a_regular_file_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, kind) in
            [(fifo.as_path(), "FIFO"), (Path::new("/dev/zero"), "character device"), (d.path(), "directory")]
        {
            let e = StationConfig::load_from(&[], Some(path)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    r#"--config={:?} (command line): expected a readable file ({} is a {kind}, not a regular file: name a regular file)"#,
                    path.display().to_string(),
                    path.display()
                )
            );
        }
        // An include of one, unguarded or guarded by -e / -r (a -f guard skips it, as in sh).
        for line in [format!(". {}", fifo.display()), format!("[ -r {0} ] && . {0}", fifo.display())] {
            let p = write(d.path(), "inc.conf", &format!("CJ_CORECOUNT=2\n{line}\n"));
            let e = StationConfig::load_from(&[], Some(&p)).unwrap_err();
            assert_eq!(e.origin, format!("{}:2", p.display()));
            assert!(e.to_string().contains(&format!("{} is a FIFO, not a regular file", fifo.display())), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
        let p = write(d.path(), "guarded.conf", &format!("CJ_CORECOUNT=2\n[ -f {0} ] && . {0}\n", fifo.display()));
        assert_eq!(StationConfig::load_from(&[], Some(&p)).unwrap().corecount, 2);
        let p = write(d.path(), "zero.conf", "[ -e /dev/zero ] && . /dev/zero\n");
        assert!(StationConfig::load_from(&[], Some(&p))
            .unwrap_err()
            .to_string()
            .contains("/dev/zero is a character device"));
    }

    #[test]
    fn a_config_file_larger_than_one_mebibyte_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let big = write(d.path(), "big.conf", &"# padding\n".repeat((MAX_CONFIG_FILE_BYTES / 10 + 1) as usize));
        let e = StationConfig::load_from(&[], Some(&big)).unwrap_err().to_string();
        assert!(e.contains(&format!("{} is larger than 1 MiB (1048576 bytes)", big.display())), "{e}");
        let p = write(d.path(), "inc.conf", &format!(". {}\n", big.display()));
        let e = StationConfig::load_from(&[], Some(&p)).unwrap_err();
        assert_eq!(e.origin, format!("{}:1", p.display()));
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        // Exactly the limit is read.
        let mut text = "# padding\n".repeat((MAX_CONFIG_FILE_BYTES / 10) as usize);
        text.push_str(&"#".repeat((MAX_CONFIG_FILE_BYTES as usize) - text.len() - 1));
        text.push('\n');
        let edge = write(d.path(), "edge.conf", &text);
        assert_eq!(std::fs::metadata(&edge).unwrap().len(), MAX_CONFIG_FILE_BYTES);
        assert!(StationConfig::load_from(&[], Some(&edge)).is_ok());
        let bin = d.path().join("bin.conf");
        std::fs::write(&bin, [0xff, 0xfe, b'\n']).unwrap();
        assert!(StationConfig::load_from(&[], Some(&bin)).unwrap_err().to_string().contains("is not UTF-8 text"));
    }

    #[test]
    fn parse_conf_text_gives_the_last_assignment_with_its_line() {
        let v =
            parse_conf_text(Path::new("t.conf"), "CJ_CORECOUNT=2\nCJ_CORECOUNT=3\nCJ_COREBASE=1\nOTHER=x\n").unwrap();
        assert_eq!(
            v,
            [
                ("CJ_COREBASE".to_owned(), "1".to_owned(), "t.conf:3".to_owned()),
                ("CJ_CORECOUNT".to_owned(), "3".to_owned(), "t.conf:2".to_owned())
            ]
        );
        assert!(parse_conf_text(Path::new("t.conf"), "x y\n").is_err());
    }

    #[test]
    fn tokenizer_is_shell_like() {
        let w = tokenize(r#"export A="x y" B='$z' C=a\ b # c"#).unwrap();
        let t: Vec<&str> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(t, ["export", "A=x y", "B=$z", "C=a b"]);
        assert!(w[1].assign.is_some() && w[0].assign.is_none());
        // A quoted name is not an assignment in sh.
        assert!(tokenize(r#""A"=1"#).unwrap()[0].assign.is_none());
        assert!(tokenize("A=`x`").is_err());
        assert!(tokenize("a & b").is_err());
    }
}
