//! Reading the flow-divert pages (`CJ_TUN=yes`, README "Flow divert"): each
//! worker's per-rule page `divert-<q>` (`divert-<set>-<q>`) and the listing
//! `divert-rules` (`divert-rules-<set>`) that names the rules behind its
//! slots. Shared by `cj-app status`, `summary.json` and `/metrics`, so the
//! three show the same figures read the same way.
//!
//! Guarantees: reads only (`CounterPage::read`, a read-only mapping; the
//! listing opened without following a link, non-blocking, a regular file of
//! at most [`MAX_LISTING`] bytes); never creates or changes a file. A page or
//! listing that cannot be read is reported as such, never fatal.
//!
//! Not guaranteed: the pages are read one after the other while the workers
//! write them, so a sum over workers is not one instant; the listing names
//! the rules of the generation now in force, and a slot still counting flows
//! of an older generation (after a reload that reordered the rules) is shown
//! with today's rule text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use shmq::CounterPage;
use station::naming::{divert_slot_name, DIVERT_RULE_SLOTS, DIVERT_SLOT_COUNTERS};

/// Largest `divert-rules` listing read.
pub const MAX_LISTING: u64 = 2 << 20;

/// The six counters of one slot, in [`DIVERT_SLOT_COUNTERS`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SlotCounters {
    /// Frames of `mirror` flows copied to the tun device.
    pub mirrored_packets: u64,
    /// Their bytes.
    pub mirrored_bytes: u64,
    /// Frames of `divert` flows handed to the tun device instead of accounted.
    pub diverted_packets: u64,
    /// Their bytes.
    pub diverted_bytes: u64,
    /// Mirrored or diverted frames the tun device refused.
    pub tun_dropped_packets: u64,
    /// Their bytes.
    pub tun_dropped_bytes: u64,
}

impl SlotCounters {
    fn from_values(v: [u64; 6]) -> Self {
        SlotCounters {
            mirrored_packets: v[0],
            mirrored_bytes: v[1],
            diverted_packets: v[2],
            diverted_bytes: v[3],
            tun_dropped_packets: v[4],
            tun_dropped_bytes: v[5],
        }
    }

    /// The values in [`DIVERT_SLOT_COUNTERS`] order.
    pub fn values(&self) -> [u64; 6] {
        [
            self.mirrored_packets,
            self.mirrored_bytes,
            self.diverted_packets,
            self.diverted_bytes,
            self.tun_dropped_packets,
            self.tun_dropped_bytes,
        ]
    }

    /// Whether any counter is above 0.
    pub fn any(&self) -> bool {
        self.values().iter().any(|&v| v > 0)
    }

    fn add(&mut self, o: &SlotCounters) {
        let (a, b) = (self.values(), o.values());
        *self = SlotCounters::from_values(std::array::from_fn(|i| a[i].saturating_add(b[i])));
    }
}

/// `divert-<q>` as (0, q), `divert-<set>-<q>` as (set, q); anything else (the
/// listing `divert-rules`) is not a page.
pub fn page_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("divert-")?;
    let (set, q) = match rest.split_once('-') {
        Some((s, q)) => (s.parse().ok()?, q.parse().ok()?),
        None => (0, rest.parse().ok()?),
    };
    // Only the name the station gives that page (not `divert-0-3` or `divert-03` for `divert-3`).
    (station::naming::set_divert_page_path(Path::new(""), set, q).as_os_str() == name).then_some((set, q))
}

/// The divert pages in `dir` as (set, queue, path), sorted; empty when the
/// directory cannot be read.
pub fn pages(dir: &Path) -> Vec<(u32, u32, PathBuf)> {
    let mut v: Vec<(u32, u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| page_name(&e.file_name().to_string_lossy()).map(|(s, q)| (s, q, e.path())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every slot of one page's counters (`rule1` .. `rule64`, `other`), in slot
/// order; a counter missing from the page is 0.
pub fn slots(page: &[(String, u64)]) -> Vec<(String, SlotCounters)> {
    let by_name: BTreeMap<&str, u64> = page.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    (0..=DIVERT_RULE_SLOTS)
        .map(|s| {
            let slot = divert_slot_name(s);
            let v = std::array::from_fn(|i| {
                by_name.get(format!("{slot}_{}", DIVERT_SLOT_COUNTERS[i]).as_str()).copied().unwrap_or(0)
            });
            (slot, SlotCounters::from_values(v))
        })
        .collect()
}

/// Reads a small text file in the shared directory: no link followed, never
/// blocking, a regular file of at most [`MAX_LISTING`] bytes.
///
/// # Errors
/// Why it cannot be read, as one phrase.
pub fn read_listing(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_LISTING {
        return Err(format!("not a regular file of at most {MAX_LISTING} bytes"));
    }
    let mut text = String::new();
    file.take(MAX_LISTING).read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// A rule named by the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedRule {
    /// Its line in the rules file.
    pub line: u64,
    /// The rule as written (`divert net 10.1.0.0/16 proto tcp`).
    pub rule: String,
}

/// The listing's header (`# generation G of FILE`) and rules by slot name,
/// from lines `rule<n> line <L> <rule>`; other lines are ignored.
pub fn parse_listing(text: &str) -> (Option<String>, BTreeMap<String, ListedRule>) {
    let mut header = None;
    let mut rules = BTreeMap::new();
    for l in text.lines() {
        if let Some(h) = l.strip_prefix("# ") {
            header.get_or_insert_with(|| h.trim().to_string());
            continue;
        }
        let mut parts = l.splitn(4, ' ');
        let (Some(slot), Some("line"), Some(n), Some(rule)) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Some(_), Ok(line)) = (slot.strip_prefix("rule"), n.parse::<u64>()) else { continue };
        rules.insert(slot.to_string(), ListedRule { line, rule: rule.trim().to_string() });
    }
    (header, rules)
}

/// One rule slot in `summary.json`'s `divert`, summed over the set's workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleSummary {
    /// `rule1` .. `rule64`, `other`.
    pub slot: String,
    /// The rule as the listing has it (`None`: not listed, as `other`).
    pub rule: Option<String>,
    /// Its line in the rules file (from the listing).
    pub line: Option<u64>,
    /// The counters, summed over the workers.
    #[serde(flatten)]
    pub counters: SlotCounters,
}

/// `summary.json`'s `divert`: the per-rule counters of one queue set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DivertSummary {
    /// The listing's file name.
    pub listing: String,
    /// The listing's header (`generation G of FILE`); `None` when it has none or cannot be read.
    pub rules_generation: Option<String>,
    /// The listing could not be read: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listing_error: Option<String>,
    /// The workers whose page was read (queue numbers).
    pub workers: Vec<u32>,
    /// Pages that could not be read (file names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// Every listed rule, and every other slot that counted something, in slot order.
    pub rules: Vec<RuleSummary>,
    /// The slots summed.
    pub total: SlotCounters,
}

/// The per-rule summary of set `set` in `dir`, summed over its workers;
/// `None` when the set has no divert page (flow divert off).
pub fn summary(dir: &Path, set: u32) -> Option<DivertSummary> {
    let pages: Vec<(u32, PathBuf)> = pages(dir).into_iter().filter(|p| p.0 == set).map(|p| (p.1, p.2)).collect();
    if pages.is_empty() {
        return None;
    }
    let listing_path = station::naming::set_divert_rules_path(dir, set);
    let listing = listing_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (header, listed, listing_error) = match read_listing(&listing_path) {
        Ok(text) => {
            let (h, r) = parse_listing(&text);
            (h, r, None)
        }
        Err(e) => (None, BTreeMap::new(), Some(e)),
    };
    let mut sums = vec![SlotCounters::default(); DIVERT_RULE_SLOTS + 1];
    let (mut workers, mut unreadable) = (Vec::new(), Vec::new());
    for (q, path) in &pages {
        match CounterPage::read(path) {
            Ok(page) => {
                workers.push(*q);
                for (i, (_, c)) in slots(&page).iter().enumerate() {
                    sums[i].add(c);
                }
            }
            Err(_) => unreadable.push(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
        }
    }
    let mut total = SlotCounters::default();
    let mut rules = Vec::new();
    for (i, c) in sums.iter().enumerate() {
        total.add(c);
        let slot = divert_slot_name(i);
        let l = listed.get(&slot);
        if l.is_some() || c.any() {
            rules.push(RuleSummary { slot, rule: l.map(|l| l.rule.clone()), line: l.map(|l| l.line), counters: *c });
        }
    }
    Some(DivertSummary { listing, rules_generation: header, listing_error, workers, unreadable, rules, total })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A divert page `name` in `dir` with `(slot index, counter index, value)` set.
    pub(crate) fn page(dir: &Path, name: &str, set: &[(usize, usize, u64)]) {
        let names = station::naming::divert_rule_counters();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let p = CounterPage::open_or_create(&dir.join(name), &names).unwrap();
        for &(s, c, v) in set {
            p.set(s * DIVERT_SLOT_COUNTERS.len() + c, v);
        }
    }

    #[test]
    fn page_names_carry_set_and_queue_and_the_listing_is_not_a_page() {
        assert_eq!(page_name("divert-3"), Some((0, 3)));
        assert_eq!(page_name("divert-1-3"), Some((1, 3)));
        assert_eq!(page_name("divert-rules"), None);
        assert_eq!(page_name("divert-rules-1"), None);
        assert_eq!(page_name("stats-worker-1"), None);
        assert_eq!(page_name("divert-0-3"), None);
        assert_eq!(page_name("divert-03"), None);
    }

    #[test]
    fn the_listing_names_each_slot_with_its_line_and_rule() {
        let (h, r) = parse_listing("# generation 2 of /etc/r\nrule1 line 2 divert net 10.1.0.0/16 proto tcp\nrule2 line 5 mirror port 53\nnoise\n");
        assert_eq!(h.as_deref(), Some("generation 2 of /etc/r"));
        assert_eq!(r["rule1"], ListedRule { line: 2, rule: "divert net 10.1.0.0/16 proto tcp".into() });
        assert_eq!(r["rule2"], ListedRule { line: 5, rule: "mirror port 53".into() });
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn the_summary_sums_each_rule_over_the_workers_of_its_set_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(summary(dir.path(), 0), None, "no page: no divert object");
        page(dir.path(), "divert-0", &[(0, 2, 5), (0, 3, 500), (64, 0, 1), (64, 1, 60)]);
        page(dir.path(), "divert-1", &[(0, 2, 2), (0, 3, 200), (0, 4, 1), (0, 5, 100)]);
        page(dir.path(), "divert-1-0", &[(0, 2, 1000)]);
        std::fs::write(
            dir.path().join("divert-rules"),
            "# generation 1 of /r\nrule1 line 1 divert port 53\nrule2 line 2 mirror proto icmp\n",
        )
        .unwrap();
        let s = summary(dir.path(), 0).unwrap();
        assert_eq!(s.workers, vec![0, 1]);
        assert_eq!(s.rules_generation.as_deref(), Some("generation 1 of /r"));
        let slots: Vec<(&str, Option<&str>)> = s.rules.iter().map(|r| (r.slot.as_str(), r.rule.as_deref())).collect();
        assert_eq!(
            slots,
            vec![("rule1", Some("divert port 53")), ("rule2", Some("mirror proto icmp")), ("other", None)]
        );
        assert_eq!(
            s.rules[0].counters,
            SlotCounters {
                diverted_packets: 7,
                diverted_bytes: 700,
                tun_dropped_packets: 1,
                tun_dropped_bytes: 100,
                ..Default::default()
            }
        );
        assert!(!s.rules[1].counters.any());
        assert_eq!((s.rules[2].counters.mirrored_packets, s.rules[2].counters.mirrored_bytes), (1, 60));
        assert_eq!((s.total.diverted_packets, s.total.mirrored_packets), (7, 1));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rules"][0]["diverted_packets"], 7, "{json:#}");
        assert_eq!(json["rules"][0]["line"], 1, "{json:#}");
        // Set 1 has no listing: said so, and its slots that counted are shown.
        let s1 = summary(dir.path(), 1).unwrap();
        assert_eq!(s1.listing, "divert-rules-1");
        assert!(s1.listing_error.is_some());
        assert_eq!(s1.rules.len(), 1);
        assert_eq!(s1.rules[0].counters.diverted_packets, 1000);
    }
}
