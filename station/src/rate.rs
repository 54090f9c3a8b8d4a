//! Rates and fills as every component's stats line prints them.
//!
//! Guarantees: one format for the balancer, the detector and the app, so
//! lines from the three read alike (`12 pps`, `12.3 kpps`, `2.50 Mpps`).

/// A packet rate: `12 pps`, `12.3 kpps`, `2.50 Mpps`.
pub fn format_rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} Mpps", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} kpps", pps / 1e3)
    } else {
        format!("{pps:.0} pps")
    }
}

/// `used` of `capacity` in percent (0 for an empty capacity).
pub fn percent(used: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        0.0
    } else {
        100.0 * used as f64 / capacity as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_percents() {
        assert_eq!(format_rate(12.0), "12 pps");
        assert_eq!(format_rate(12_345.0), "12.3 kpps");
        assert_eq!(format_rate(2_500_000.0), "2.50 Mpps");
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(1, 0), 0.0);
    }
}
