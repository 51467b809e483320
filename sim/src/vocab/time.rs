//! Simulated time: integer nanoseconds. Model outputs in seconds become nanoseconds by rounding
//! *up*, with a minimum of 1 ns, so that no iteration or transfer takes zero time.

/// Simulated time or duration in nanoseconds.
pub type Ns = u64;

pub const NS_PER_S: f64 = 1e9;

/// Duration in seconds → nanoseconds, rounded up, at least 1 ns. Non-finite or negative input
/// is the caller's bug and is reported as `None`.
pub fn duration_ns_ceil(seconds: f64) -> Option<Ns> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    let ns = (seconds * NS_PER_S).ceil();
    if ns >= u64::MAX as f64 {
        return None;
    }
    Some((ns as u64).max(1))
}

/// A point in time in seconds → nanoseconds, rounded to nearest (arrival stamps; 0 stays 0).
pub fn instant_ns_round(seconds: f64) -> Option<Ns> {
    if !seconds.is_finite() || seconds < 0.0 || seconds * NS_PER_S >= u64::MAX as f64 {
        return None;
    }
    Some((seconds * NS_PER_S).round() as u64)
}

pub fn ns_to_s(ns: Ns) -> f64 {
    ns as f64 / NS_PER_S
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_with_minimum_one() {
        assert_eq!(duration_ns_ceil(0.0), Some(1));
        assert_eq!(duration_ns_ceil(1e-12), Some(1));
        assert_eq!(duration_ns_ceil(0.1), Some(100_000_000));
        assert_eq!(duration_ns_ceil(1.0000000001), Some(1_000_000_001));
        assert_eq!(duration_ns_ceil(-1.0), None);
        assert_eq!(duration_ns_ceil(f64::NAN), None);
    }

    #[test]
    fn instants_round_to_nearest() {
        assert_eq!(instant_ns_round(0.0), Some(0));
        assert_eq!(instant_ns_round(1.5), Some(1_500_000_000));
        assert_eq!(instant_ns_round(f64::INFINITY), None);
    }
}
