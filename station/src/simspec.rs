//! `sim:SPEC`: what synthetic traffic `CJ_IFACE=sim:SPEC` asks for, parsed
//! and checked.
//!
//! The generator that makes the frames and its ground truth are in the `sim`
//! crate, which re-exports everything here. The spec stays in `station`
//! because loading the configuration checks `CJ_IFACE` into a typed
//! [`SourceSpec::Sim`](crate::config::SourceSpec::Sim), and parsing a spec
//! needs no random numbers: this is the smallest cut that keeps a bad spec a
//! configuration error at start (with the variable and its origin) while
//! `rand`, `rand_chacha` and `pcap-file` stay out of every binary but the
//! balancer. (Carrying the raw text in `SourceSpec::Sim` instead would move
//! that error to the balancer's source open and leave `sim:` unchecked by
//! the other binaries.)
//!
//! # The spec
//!
//! Comma-separated `key=value` pairs; every key is optional. Numbers accept the
//! suffixes `k`, `M`, `G` (powers of 1000).
//!
//! | key     | default              | meaning                                                             |
//! |---------|----------------------|---------------------------------------------------------------------|
//! | flows   | 1000                 | flows (1 to 16777216)                                               |
//! | packets | 100000               | frames in the whole stream (IP and non-IP)                          |
//! | sizes   | 64:40/576:30/1500:30 | frame sizes `SIZE:WEIGHT` joined by `/`; 64 to 1526 bytes, no FCS   |
//! | v6      | 20                   | percent of flows that are IPv6                                      |
//! | vlan    | 10                   | percent of flows with one 802.1Q tag                                |
//! | qinq    | 0                    | percent of flows with QinQ tags (0x88A8 outer, 0x8100 inner)        |
//! | frag    | 0                    | percent of IPv4 UDP datagrams sent as two fragments                 |
//! | nonip   | 0                    | percent of frames that are ARP requests (60 bytes)                  |
//! | seed    | 1                    | seed of every random choice                                         |
//! | rate    | 0                    | packets per second for timestamps (and pacing); 0: as fast as possible |
//!
//! # Guarantees
//!
//! A parsed [`SimSpec`] is inside these ranges: flows from 1 to
//! [`MAX_FLOWS`], sizes from [`MIN_FRAME_LEN`] to [`MAX_FRAME_LEN`] with
//! weights not all 0, percentages at most 100 and `vlan + qinq` at most 100.
//! `Display` writes every key in a form `FromStr` reads back to an equal spec.
//!
//! # Not guaranteed
//!
//! That the stream is small: `packets` and `rate` go up to `u64::MAX`.

use std::fmt;

/// Largest frame the model emits (1518 + two VLAN tags); a buffer of this
/// size always fits.
pub const MAX_FRAME_LEN: usize = 1526;
/// Smallest frame size a spec may ask for.
pub const MIN_FRAME_LEN: usize = 64;
/// Most flows a spec may ask for (distinct client addresses in 10.0.0.0/8).
pub const MAX_FLOWS: u32 = 1 << 24;

/// The keys of a spec, in the order `Display` writes them.
pub const SPEC_KEYS: &[&str] = &["flows", "packets", "sizes", "v6", "vlan", "qinq", "frag", "nonip", "seed", "rate"];

/// What `sim:SPEC` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSpec {
    /// Number of flows.
    pub flows: u32,
    /// Total frames.
    pub packets: u64,
    /// Frame sizes and weights.
    pub sizes: Vec<(u16, u32)>,
    /// Share of IPv6 flows, percent.
    pub v6_percent: u8,
    /// Share of 802.1Q-tagged flows, percent.
    pub vlan_percent: u8,
    /// Share of QinQ flows, percent.
    pub qinq_percent: u8,
    /// Share of fragmented packets, percent.
    pub frag_percent: u8,
    /// Share of non-IP frames, percent.
    pub nonip_percent: u8,
    /// Seed.
    pub seed: u64,
    /// Packets per second; 0 = as fast as possible.
    pub rate_pps: u64,
}

impl Default for SimSpec {
    /// The documented defaults.
    fn default() -> Self {
        Self {
            flows: 1000,
            packets: 100_000,
            sizes: vec![(64, 40), (576, 30), (1500, 30)],
            v6_percent: 20,
            vlan_percent: 10,
            qinq_percent: 0,
            frag_percent: 0,
            nonip_percent: 0,
            seed: 1,
            rate_pps: 0,
        }
    }
}

impl fmt::Display for SimSpec {
    /// Every key, in a form [`SimSpec::from_str`](std::str::FromStr) reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flows={},packets={},sizes=", self.flows, self.packets)?;
        for (i, (size, weight)) in self.sizes.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{size}:{weight}")?;
        }
        write!(
            f,
            ",v6={},vlan={},qinq={},frag={},nonip={},seed={},rate={}",
            self.v6_percent,
            self.vlan_percent,
            self.qinq_percent,
            self.frag_percent,
            self.nonip_percent,
            self.seed,
            self.rate_pps
        )
    }
}

impl std::str::FromStr for SimSpec {
    type Err = String;
    /// Parses `key=value,...` (see the module docs); an empty string gives the
    /// defaults. The error reads as what was expected, e.g.
    /// `flows to be a whole number from 1 to 16777216, not "abc"`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut spec = Self::default();
        let mut seen: Vec<&str> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!("key=value pairs separated by commas, not {item:?}"));
            };
            let (key, value) = (key.trim(), value.trim());
            let Some(&key) = SPEC_KEYS.iter().find(|k| **k == key) else {
                return Err(format!("a key among {}; {key:?} is not one", SPEC_KEYS.join(", ")));
            };
            if seen.contains(&key) {
                return Err(format!("each key at most once; {key} is given twice"));
            }
            seen.push(key);
            let num = |lo: u64, hi: u64| -> Result<u64, String> {
                parse_count(value).filter(|n| (lo..=hi).contains(n)).ok_or_else(|| {
                    format!("{key} to be a whole number from {lo} to {hi} (k, M, G allowed), not {value:?}")
                })
            };
            let percent = || -> Result<u8, String> {
                value
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("{key} to be a percentage from 0 to 100, not {value:?}"))
            };
            match key {
                "flows" => spec.flows = num(1, u64::from(MAX_FLOWS))? as u32,
                "packets" => spec.packets = num(0, u64::MAX)?,
                "sizes" => spec.sizes = parse_sizes(value)?,
                "v6" => spec.v6_percent = percent()?,
                "vlan" => spec.vlan_percent = percent()?,
                "qinq" => spec.qinq_percent = percent()?,
                "frag" => spec.frag_percent = percent()?,
                "nonip" => spec.nonip_percent = percent()?,
                "seed" => spec.seed = num(0, u64::MAX)?,
                _ => spec.rate_pps = num(0, u64::MAX)?,
            }
        }
        let tagged = u16::from(spec.vlan_percent) + u16::from(spec.qinq_percent);
        if tagged > 100 {
            return Err(format!("vlan + qinq to be at most 100 percent, not {tagged}"));
        }
        Ok(spec)
    }
}

/// A whole number with an optional `k`, `M` or `G` suffix.
fn parse_count(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1_000),
        b'M' => (&s[..s.len() - 1], 1_000_000),
        b'G' => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_sizes(v: &str) -> Result<Vec<(u16, u32)>, String> {
    let bad = || {
        format!(
            "sizes to be SIZE:WEIGHT entries joined by '/', sizes from {MIN_FRAME_LEN} to {MAX_FRAME_LEN} bytes and \
             weights not all 0, not {v:?}"
        )
    };
    let mut out = Vec::new();
    for entry in v.split('/') {
        let (size, weight) = match entry.split_once(':') {
            Some((s, w)) => (s.trim(), w.trim()),
            None => (entry.trim(), "1"),
        };
        let size: u16 = size.parse().map_err(|_| bad())?;
        let weight: u32 = weight.parse().map_err(|_| bad())?;
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&usize::from(size)) {
            return Err(bad());
        }
        out.push((size, weight));
    }
    if out.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn spec(s: &str) -> SimSpec {
        SimSpec::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_round_trip() {
        let d = SimSpec::default();
        assert_eq!(spec(""), d);
        assert_eq!(
            d.to_string(),
            "flows=1000,packets=100000,sizes=64:40/576:30/1500:30,v6=20,vlan=10,qinq=0,frag=0,nonip=0,seed=1,rate=0"
        );
        for s in [
            "flows=3,packets=7,sizes=64:1/1526:2,v6=100,vlan=50,qinq=50,frag=30,nonip=5,seed=99,rate=1000",
            "flows=16777216,packets=0,sizes=100:0/200:1,v6=0,vlan=0,qinq=0,frag=0,nonip=0,seed=18446744073709551615,rate=0",
        ] {
            let p = spec(s);
            assert_eq!(p.to_string(), s);
            assert_eq!(spec(&p.to_string()), p);
        }
        let p = spec(" packets=2M , flows=10k,sizes=128 ");
        assert_eq!((p.packets, p.flows, p.sizes.clone()), (2_000_000, 10_000, vec![(128, 1)]));
        assert_eq!(spec(&p.to_string()), p);
    }

    #[test]
    fn spec_errors() {
        let e = |s: &str| SimSpec::from_str(s).unwrap_err();
        assert_eq!(
            e("bogus=1"),
            r#"a key among flows, packets, sizes, v6, vlan, qinq, frag, nonip, seed, rate; "bogus" is not one"#
        );
        assert_eq!(e("flows"), r#"key=value pairs separated by commas, not "flows""#);
        assert_eq!(e("flows=0"), r#"flows to be a whole number from 1 to 16777216 (k, M, G allowed), not "0""#);
        assert_eq!(e("flows=abc"), r#"flows to be a whole number from 1 to 16777216 (k, M, G allowed), not "abc""#);
        assert_eq!(e("v6=101"), r#"v6 to be a percentage from 0 to 100, not "101""#);
        assert_eq!(e("vlan=60,qinq=50"), "vlan + qinq to be at most 100 percent, not 110");
        assert_eq!(e("seed=1,seed=2"), "each key at most once; seed is given twice");
        for bad in ["32:1", "1527:1", "64:x", "64:0", "", "64:1/"] {
            assert!(e(&format!("sizes={bad}")).starts_with("sizes to be SIZE:WEIGHT"), "{bad}");
        }
        assert!(SimSpec::from_str("sizes=64/1526").is_ok());
    }
}
