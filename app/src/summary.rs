//! The run's report: every file written at a refresh or at the end, and the
//! short summary printed on stdout at the end.
//!
//! Guarantees: each write produces the flow tables the settings ask for
//! (`<out>/flows.csv|json`, and in fan-out mode `<out>/queue-<q>/flows.csv|json`
//! per queue with the top-level files being the first queue's table) and
//! `<out>/summary.json` (totals, per-queue totals and intake counters, the
//! accounting identity with every term, `complete` with `incomplete_reason`,
//! the balancer's `source_errors`, `max_rows` and `rows_overflowed`, with flow
//! divert on the per-rule counters in `divert` (each rule of the
//! `divert-rules` listing and every other slot that counted, packets and bytes
//! mirrored, diverted and dropped at tun, summed over the workers), the files
//! written), all atomically.
//!
//! `complete` is true only when every record queue ended and was drained, the
//! capture source was read in full (`source_errors` = 0) and the flow tables
//! were written. Not guaranteed: when the final flow tables cannot be written
//! (a full disk), `summary.json` is still written, marked incomplete with the
//! reason, and lists only itself; the tables of the last successful refresh
//! stay in place.
//! The printed summary has the totals, the identity line, the top-N rows by
//! bytes in an aligned table, and the paths of the files.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::aggregate::{Accounts, Counters, Key, Totals};
use crate::identity::Identity;
use crate::intake::IntakeStats;
use crate::settings::Settings;
use crate::sinks::{self, WriteError};

/// Everything a report is made of.
#[derive(Debug)]
pub struct Report<'a> {
    /// Settings in force.
    pub settings: &'a Settings,
    /// The output directory (`settings.out_dir`), open since the start ([`check_out_dir`]).
    pub out: &'a sinks::OutDir,
    /// The tables and totals.
    pub accounts: &'a Accounts,
    /// Per-queue intake counters (intake order).
    pub intake: &'a [IntakeStats],
    /// The identity verdict.
    pub identity: &'a Identity,
    /// Every record queue ended and was drained, the source was read in full
    /// and every output was written: the run's figures are final.
    pub complete: bool,
    /// Why the run is not complete (`None` when it is).
    pub incomplete_reason: Option<String>,
    /// CJ_APP_MAX_ROWS.
    pub max_rows: u64,
    /// ZBALANCE_HASH_MODE as a word.
    pub hash_mode: &'static str,
    /// IPFIX export counters (`CJ_EXPORT`; None: off, and no `export` key).
    pub export: Option<crate::ipfix::ExportStats>,
    /// Flow divert's per-rule counters of the app's queue set, summed over
    /// the workers (None: no `divert-<q>` page, and no `divert` key).
    pub divert: Option<crate::divert_pages::DivertSummary>,
    /// CJ_FILTER (None: no filter, and no `capture_filter` key): frames it
    /// rejected were never received, so they are in no term.
    pub capture_filter: Option<String>,
    /// The main table's first rows by bytes (`top` in the settings), kept
    /// from the sort that wrote its files by [`Report::write_tables`]: the
    /// printed summary takes them rather than passing over every row again
    /// (10 ms at 2,000,000 rows). None: computed when printed.
    pub top_rows: Option<Vec<(Key, Counters)>>,
}

#[derive(Serialize)]
struct QueueSummary {
    queue: u32,
    totals: Totals,
    intake: IntakeStats,
    rows: Option<usize>,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    complete: bool,
    incomplete_reason: Option<&'a str>,
    source_errors: u64,
    hash_mode: &'static str,
    fan_out: bool,
    main_table: String,
    primitives: Vec<&'static str>,
    rows: usize,
    max_rows: u64,
    rows_overflowed: u64,
    totals: Totals,
    records_invalid: u64,
    records_gap: u64,
    records_missing: u64,
    queues: Vec<QueueSummary>,
    identity: &'a Identity,
    containers: Vec<&'a crate::containers::ContainerTotals>,
    #[serde(skip_serializing_if = "Option::is_none")]
    export: Option<crate::ipfix::ExportStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    divert: Option<&'a crate::divert_pages::DivertSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_filter: Option<&'a str>,
    files: Vec<PathBuf>,
}

impl Report<'_> {
    fn main_table_text(&self) -> String {
        match self.accounts.queues().first() {
            Some(q) if self.accounts.fan_out() => {
                format!("queue {q} (fan-out: every queue sees every packet; each queue's table is in queue-<q>/)")
            }
            _ => "merged from every record queue".to_string(),
        }
    }

    fn intake_sum(&self) -> IntakeStats {
        let mut s = IntakeStats { ended: self.intake.iter().all(|i| i.ended), ..IntakeStats::default() };
        for i in self.intake {
            s.records += i.records;
            s.records_invalid += i.records_invalid;
            s.records_gap += i.records_gap;
            s.records_missing += i.records_missing;
        }
        s
    }

    /// Writes the flow tables (each atomically: a failed write leaves the
    /// previous file and no temporary file); returns the paths written.
    ///
    /// # Errors
    /// The first file that cannot be written.
    pub fn write_tables(&mut self) -> Result<Vec<PathBuf>, WriteError> {
        let out = self.out;
        let main = self.accounts.main_table();
        let mut files = sinks::write_table(out, main, self.settings.formats, (self.settings.top, &mut self.top_rows))?;
        files.extend(sinks::write_containers(out, self.accounts.containers(), self.settings.formats)?);
        for (q, table) in self.accounts.queue_tables() {
            // Opened (or made) relative to the output directory's descriptor, never through a link.
            let dir = sinks::subdir(out, &format!("queue-{q}"))?;
            files.extend(sinks::write_table(&dir, table, self.settings.formats, (0, &mut None))?);
        }
        Ok(files)
    }

    /// Writes `summary.json` listing `files` (the tables written) and itself;
    /// returns them all.
    ///
    /// # Errors
    /// `summary.json` cannot be written.
    pub fn write_summary(&self, mut files: Vec<PathBuf>) -> Result<Vec<PathBuf>, WriteError> {
        let summary_path = self.out.path().join("summary.json");
        files.push(summary_path);
        let tables = self.accounts.queue_tables();
        let queues = self
            .accounts
            .queues()
            .iter()
            .enumerate()
            .map(|(i, &queue)| QueueSummary {
                queue,
                totals: self.accounts.per_queue().get(i).copied().unwrap_or_default(),
                intake: self.intake.get(i).copied().unwrap_or_default(),
                rows: tables.get(i).map(|(_, t)| t.len()),
            })
            .collect();
        let sum = self.intake_sum();
        let json = SummaryJson {
            complete: self.complete,
            incomplete_reason: self.incomplete_reason.as_deref(),
            source_errors: self.identity.source_errors,
            hash_mode: self.hash_mode,
            fan_out: self.accounts.fan_out(),
            main_table: self.main_table_text(),
            primitives: self.settings.primitives.names(),
            rows: self.accounts.main_table().len(),
            max_rows: self.max_rows,
            rows_overflowed: self.accounts.rows_overflowed(),
            totals: self.accounts.main_totals(),
            records_invalid: sum.records_invalid,
            records_gap: sum.records_gap,
            records_missing: sum.records_missing,
            queues,
            identity: self.identity,
            containers: self.accounts.containers().rows().collect(),
            export: self.export,
            divert: self.divert.as_ref(),
            capture_filter: self.capture_filter.as_deref(),
            files: files.clone(),
        };
        let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
        text.push('\n');
        sinks::write_atomic(self.out, "summary.json", text.as_bytes())?;
        Ok(files)
    }

    /// The summary printed at the end.
    pub fn text(&self, files: &[PathBuf]) -> String {
        let t = self.accounts.main_totals();
        let all = self.accounts.totals();
        let sum = self.intake_sum();
        let mut s = format!(
            "cj-app: {} records ({} IP, {} non-IP, {} malformed) from {} record queue(s){}\n",
            all.records,
            all.ip_records,
            all.non_ip_records,
            all.malformed_records,
            self.accounts.queues().len(),
            if self.intake.iter().all(|i| i.ended) { ", all ended" } else { ", stopped before every queue ended" }
        );
        s += &format!(
            "flows: {} flows, {} packets, {} bytes (IP), {} frame bytes; {} non-IP frames, {} malformed frames{}\n",
            t.flows,
            t.packets,
            t.bytes,
            t.frame_bytes,
            t.non_ip_frames,
            t.malformed_frames,
            if self.accounts.fan_out() { "  [first queue]" } else { "" }
        );
        if self.accounts.fan_out() {
            s += &format!(
                "fan-out (ZBALANCE_HASH_MODE=2): every worker sees every packet; flows.csv/flows.json are {}\n",
                self.main_table_text()
            );
        }
        if let Some(reason) = &self.incomplete_reason {
            s += &format!("incomplete: {reason}\n");
        }
        let overflowed = self.accounts.rows_overflowed();
        if overflowed > 0 {
            s += &format!(
                "warning: a table reached CJ_APP_MAX_ROWS={}: {overflowed} flow directions were added to the row \
                 `other` (totals are exact; raise CJ_APP_MAX_ROWS for more rows)\n",
                self.max_rows
            );
        }
        if sum.records_invalid + sum.records_gap > 0 {
            s += &format!(
                "warning: {} invalid records skipped; {} record sequence gaps ({} records missing)\n",
                sum.records_invalid, sum.records_gap, sum.records_missing
            );
        }
        s += &self.identity.line;
        s.push('\n');
        s += &self.container_lines();
        s += &self.top_table();
        if !files.is_empty() {
            s += "files:\n";
            for f in files {
                s += &format!("  {}\n", f.display());
            }
        }
        s
    }

    /// One line per container: `container NAME (ID): in P packets / B frame bytes, out ...`.
    fn container_lines(&self) -> String {
        let c = self.accounts.containers();
        if c.is_empty() {
            return String::new();
        }
        let mut s = format!("{} container(s):\n", c.len());
        for t in c.rows() {
            s += &format!(
                "  container {} ({}): in {} packets / {} frame bytes, out {} packets / {} frame bytes, \
                 {} flows, {} non-IP frames [{}]\n",
                t.name,
                t.id,
                t.packets_in,
                t.frame_bytes_in,
                t.packets_out,
                t.frame_bytes_out,
                t.flows,
                t.non_ip_frames,
                t.veths.join(",")
            );
        }
        s
    }

    fn top_table(&self) -> String {
        let top = self.settings.top;
        let table = self.accounts.main_table();
        if top == 0 || table.is_empty() {
            return String::new();
        }
        let p = table.primitives();
        let rows = match &self.top_rows {
            Some(kept) => kept.iter().map(|(k, c)| (k, c)).collect(),
            None => table.top(top),
        };
        let mut header: Vec<String> = p.iter().map(|x| x.csv_header().to_string()).collect();
        header.extend(["PACKETS", "BYTES", "FRAME_BYTES", "FLOWS"].map(String::from));
        let numeric: Vec<bool> = p.iter().map(|x| !x.is_text()).chain([true; 4]).collect();
        let mut lines = vec![header];
        for (k, c) in &rows {
            let mut cells: Vec<String> = p.iter().map(|x| sinks::field(x, k)).collect();
            cells.extend([c.packets, c.ip_bytes, c.frame_bytes, c.flows].map(|v| v.to_string()));
            lines.push(cells);
        }
        let widths: Vec<usize> =
            (0..lines[0].len()).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
        let mut s = format!("top {} of {} rows by bytes:\n", rows.len(), table.len());
        for (li, l) in lines.iter().enumerate() {
            let cells: Vec<String> = l
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if numeric[i] && li > 0 {
                        format!("{c:>w$}", w = widths[i])
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect();
            s += "  ";
            s += cells.join("  ").trim_end();
            s.push('\n');
        }
        s
    }
}

/// The word for a hash mode.
pub fn hash_mode_name(m: station::config::HashMode) -> &'static str {
    match m {
        station::config::HashMode::RoundRobin => "round-robin",
        station::config::HashMode::IpHash => "ip-hash",
        station::config::HashMode::FanOut => "fan-out",
    }
}

/// Why `--out` cannot be used; `Display` is one line naming the directory and the fix.
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    /// The path exists and is not a directory.
    #[error("--out {path}: not a directory: name a directory (it is created when absent)")]
    NotADirectory {
        /// As given.
        path: PathBuf,
    },
    /// The directory (or a parent) cannot be created.
    #[error("--out {path}: cannot create the directory ({source}): name a directory the app can create")]
    Create {
        /// As given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The directory exists but no file can be created in it.
    #[error("--out {path}: the directory is not writable by cj-app{detail}: name a directory the app can write")]
    NotWritable {
        /// As given.
        path: PathBuf,
        /// ` (reason)` when the OS error says more than "not writable".
        detail: String,
    },
    /// The directory, or one on the way to it, could be changed by another
    /// user (`shmq::files::DirFd::open_trusted`'s line says which and the fix).
    #[error("--out {path}: {source}")]
    Unsafe {
        /// As given.
        path: PathBuf,
        /// The refusal.
        source: shmq::QueueError,
    },
}

/// Opens `dir` at start as the output directory the app writes everything
/// into ([`sinks::OutDir`]), creating it when absent (with its parents,
/// mode [`sinks::out_dir_mode`] whatever the umask), so a bad `--out` fails
/// before any record is consumed.
///
/// The rule (`shmq::files::DirFd::open_trusted`): the directory is owned by
/// cj-app's user or root and writable by its group or others only when
/// sticky (as `/tmp`: then nobody else can rename or remove what the app
/// makes there, its checkpoint included), and a symbolic link on the way
/// (`--out` itself too) is followed only when owned by cj-app's user or
/// root. Why: cj-app runs as root, and a link another user made (as `--out`
/// in a shared directory, or on the way) would send root's writes, and
/// `remove_stale_temps`' removals, into any directory; a link of root's own
/// is the operator's choice (`/var/run`), so it is followed. The directories
/// above are not judged otherwise: after this, nothing depends on the path
/// (every file is made relative to the descriptor), and at this moment
/// another user who owns one of them can only lead the walk to a link of
/// their own (refused) or to a directory of theirs (refused) or of root's
/// within their own tree. So `sudo cj-app --out ~/out` still works.
///
/// # Errors
/// The path is not a directory, cannot be created, fails the rule, or no file
/// can be created in it (`/proc`, a read-only mount, missing permission).
pub fn check_out_dir(dir: &Path) -> Result<sinks::OutDir, OutDirError> {
    let path = dir.to_path_buf();
    if path.as_os_str().is_empty() {
        return Err(OutDirError::NotADirectory { path });
    }
    let out =
        shmq::files::DirFd::open_trusted(dir, Some(sinks::out_dir_mode()), &sinks::OUT_PURPOSE).map_err(
            |e| match e {
                shmq::QueueError::Unsafe { .. } => OutDirError::Unsafe { path: path.clone(), source: e },
                shmq::QueueError::Io { cause, .. } => match cause.raw_os_error() {
                    Some(nix::libc::ENOTDIR | nix::libc::EEXIST) => OutDirError::NotADirectory { path: path.clone() },
                    _ => OutDirError::Create { path: path.clone(), source: cause },
                },
                other => OutDirError::Create { path: path.clone(), source: std::io::Error::other(other.to_string()) },
            },
        )?;
    // What a killed cj-app left mid-write (its temporary copies) goes first,
    // listed and removed in the directory just checked.
    let stale = out.remove_stale_temps();
    if stale > 0 {
        station::cj_info!("cj-app: removed {stale} temporary file(s) a killed process left in {}", dir.display());
    }
    // A temporary file of this process's own (a random name, created
    // exclusively relative to the descriptor, another name tried when one is
    // taken), removed at once: a file or link planted in a shared directory
    // is never written through, and names planted ahead cannot stop the start.
    shmq::files::AtomicFile::create_in(&out, ".cj-app.probe", 0o600).map(drop).map_err(|e| {
        // procfs and sysfs answer ENOENT for a new name: that is "not writable" here.
        let detail = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => String::new(),
            _ => format!(" ({e})"),
        };
        OutDirError::NotWritable { path, detail }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::ip_record;
    use crate::identity::Terms;
    use crate::settings::Primitives;
    use station::record::EndReason;

    #[test]
    fn an_output_directory_that_cannot_be_written_says_so() {
        let d = tempfile::tempdir().unwrap();
        check_out_dir(&d.path().join("a/b")).unwrap();
        assert!(d.path().join("a/b").is_dir());
        let e = check_out_dir(Path::new("")).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let file = d.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = check_out_dir(&file).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("--out {}: not a directory: name a directory (it is created when absent)", file.display())
        );
        let e = check_out_dir(&file.join("sub")).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = check_out_dir(Path::new("/proc")).unwrap_err().to_string();
        assert_eq!(e, "--out /proc: the directory is not writable by cj-app: name a directory the app can write");
    }

    #[test]
    fn names_planted_under_the_probes_earlier_name_do_not_stop_the_start() {
        let d = tempfile::tempdir().unwrap();
        // The probe's name of earlier versions, for this pid, as a directory (unremovable by remove_file).
        std::fs::create_dir(d.path().join(format!(".cj-app.{}.probe", std::process::id()))).unwrap();
        check_out_dir(d.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "the probe leaves nothing: {left:?}");
    }

    #[test]
    fn an_output_directory_made_by_the_app_has_its_mode_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
        let made = check_out_dir(&d.path().join("a/b"));
        nix::sys::stat::umask(old);
        made.unwrap();
        for p in [d.path().join("a"), d.path().join("a/b")] {
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o755, "{}", p.display());
        }
    }

    #[test]
    fn an_output_directory_others_may_write_without_the_sticky_bit_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_out_dir(&out).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "--out {}: refusing {}: output directory writable by",
                out.display(),
                out.display()
            )),
            "{e}"
        );
        assert!(e.contains("without the sticky bit") && e.contains("chmod go-w"), "{e}");
        // Sticky, as /tmp: others cannot rename what the app makes there.
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_out_dir(&out).unwrap();
    }

    #[test]
    fn an_output_directory_under_another_users_directory_is_accepted_and_a_link_of_theirs_is_not() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // As `sudo cj-app --out ~/out`: the home directory is the user's.
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(65534), None).unwrap();
        check_out_dir(&home.join("out")).unwrap();
        // A link the user made there is not followed.
        let link = home.join("link");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        nix::unistd::fchownat(
            None,
            &link,
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let e = check_out_dir(&link.join("sub")).unwrap_err().to_string();
        assert!(e.contains("a symbolic link owned by uid 65534"), "{e}");
        assert!(!d.path().join("sub").exists(), "nothing made through the link");
    }

    #[test]
    fn summary_text_has_totals_identity_and_aligned_top() {
        let out = tempfile::tempdir().unwrap();
        let settings = Settings { top: 2, out_dir: out.path().to_path_buf(), ..Settings::default() };
        let mut acc = Accounts::new(Primitives::default_set(), &[0], false);
        acc.add(0, &ip_record([10, 0, 0, 1], 1234, [10, 0, 0, 2], 80, 6, (3, 180), (2, 1500), EndReason::EndOfFlow));
        acc.add(0, &ip_record([10, 0, 0, 3], 5, [10, 0, 0, 4], 53, 17, (1, 60), (0, 0), EndReason::IdleTimeout));
        let id = Identity {
            status: "unchecked",
            line: "identity can't be checked: test".into(),
            reason: Some("test".into()),
            set: 0,
            terms: Terms::default(),
            per_queue: vec![],
            capture_dropped: 0,
            balancer_ended: false,
            balancer_stopped: false,
            stopped_in_order: false,
            records_missing: 0,
            records_lost: 0,
            source_errors: 0,
        };
        let intake = [IntakeStats { records: 2, ended: true, ..Default::default() }];
        let dir = sinks::OutDir::open(out.path()).unwrap();
        let mut r = Report {
            settings: &settings,
            out: &dir,
            accounts: &acc,
            intake: &intake,
            identity: &id,
            complete: true,
            incomplete_reason: None,
            max_rows: 1_000_000,
            hash_mode: "ip-hash",
            export: None,
            divert: None,
            capture_filter: None,
            top_rows: None,
        };
        let text = r.text(&[PathBuf::from("/o/flows.csv")]);
        assert!(
            text.contains("cj-app: 2 records (2 IP, 0 non-IP, 0 malformed) from 1 record queue(s), all ended"),
            "{text}"
        );
        assert!(text.contains("flows: 3 flows, 6 packets, 1740 bytes (IP)"), "{text}");
        assert!(text.contains("identity can't be checked: test"));
        assert!(text.contains("top 2 of 3 rows by bytes:"), "{text}");
        assert!(
            text.contains("  SRC_IP    DST_IP    SRC_PORT  DST_PORT  PROTOCOL  PACKETS  BYTES  FRAME_BYTES  FLOWS\n"),
            "{text}"
        );
        assert!(
            text.contains("  10.0.0.2  10.0.0.1        80      1234  tcp             2   1500         1528      1\n"),
            "{text}"
        );
        assert!(text.contains("  /o/flows.csv\n"));
        // Written, the files' sort keeps the top rows: they print as the pass over every row did.
        r.write_tables().unwrap();
        assert_eq!(r.top_rows.as_ref().map(Vec::len), Some(2));
        assert_eq!(r.text(&[PathBuf::from("/o/flows.csv")]), text);
    }

    #[test]
    fn summary_json_has_the_per_rule_divert_figures_only_when_divert_pages_exist() {
        let out = tempfile::tempdir().unwrap();
        let cluster = tempfile::tempdir().unwrap();
        let settings = Settings { out_dir: out.path().to_path_buf(), ..Settings::default() };
        let acc = Accounts::new(Primitives::default_set(), &[0], false);
        let id = Identity {
            status: "unchecked",
            line: String::new(),
            reason: None,
            set: 0,
            terms: Terms::default(),
            per_queue: vec![],
            capture_dropped: 0,
            balancer_ended: false,
            balancer_stopped: false,
            stopped_in_order: false,
            records_missing: 0,
            records_lost: 0,
            source_errors: 0,
        };
        let dir = sinks::OutDir::open(out.path()).unwrap();
        let report = |divert| Report {
            settings: &settings,
            out: &dir,
            accounts: &acc,
            intake: &[],
            identity: &id,
            complete: true,
            incomplete_reason: None,
            max_rows: 10,
            hash_mode: "ip-hash",
            export: None,
            divert,
            capture_filter: None,
            top_rows: None,
        };
        let read = || -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap()).unwrap()
        };
        report(crate::divert_pages::summary(cluster.path(), 0)).write_summary(Vec::new()).unwrap();
        assert!(read().get("divert").is_none(), "no divert page, no divert key");

        crate::divert_pages::tests::page(cluster.path(), "divert-0", &[(0, 2, 3), (0, 3, 180)]);
        crate::divert_pages::tests::page(cluster.path(), "divert-1", &[(0, 2, 2), (0, 3, 120), (1, 0, 1), (1, 1, 60)]);
        std::fs::write(
            cluster.path().join("divert-rules"),
            "# generation 1 of /r\nrule1 line 2 divert port 53\nrule2 line 3 mirror proto icmp\n",
        )
        .unwrap();
        report(crate::divert_pages::summary(cluster.path(), 0)).write_summary(Vec::new()).unwrap();
        let json = read();
        let d = &json["divert"];
        assert_eq!(d["listing"], "divert-rules", "{d:#}");
        assert_eq!(d["rules_generation"], "generation 1 of /r", "{d:#}");
        assert_eq!(d["workers"], serde_json::json!([0, 1]), "{d:#}");
        let r1 = &d["rules"][0];
        assert_eq!(
            (r1["slot"].as_str(), r1["rule"].as_str(), r1["line"].as_u64()),
            (Some("rule1"), Some("divert port 53"), Some(2))
        );
        assert_eq!((r1["diverted_packets"].as_u64(), r1["diverted_bytes"].as_u64()), (Some(5), Some(300)), "{d:#}");
        assert_eq!((r1["mirrored_packets"].as_u64(), r1["tun_dropped_packets"].as_u64()), (Some(0), Some(0)), "{d:#}");
        let r2 = &d["rules"][1];
        assert_eq!(
            (r2["slot"].as_str(), r2["mirrored_packets"].as_u64(), r2["mirrored_bytes"].as_u64()),
            (Some("rule2"), Some(1), Some(60))
        );
        assert_eq!(d["rules"].as_array().map(Vec::len), Some(2), "{d:#}");
        assert_eq!(d["total"]["diverted_packets"], 5, "{d:#}");
    }
}
