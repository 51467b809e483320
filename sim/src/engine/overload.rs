//! Early detection of a diverging replica (`[limits] overload_window_s`, `overload_min_queue`).
//!
//! An overloaded replica's queue grows linearly for ever; waiting for `max_queue` lets the run
//! spend its time on a queue nobody will read the results of. The watch cuts the replica's
//! simulated time into windows, each closed at the first arrival that finds it at least
//! `overload_window_ns` long and holding at least [`MIN_WINDOW_ARRIVALS`] arrivals (so a window
//! always has enough arrivals to measure a rate, whatever the rate). A window is *diverging* when,
//! over it, the replica was saturated (busy at least [`MIN_BUSY_PERCENT`] of the time), its queue
//! of unfinished requests grew, and arrivals exceeded completions by at least a quarter, counted
//! in requests or in output tokens (the work; the same measure as the stability rule's). The run
//! ends as overloaded once [`MIN_STREAK`] consecutive windows diverged and the queue holds at least
//! `overload_min_queue` requests.
//!
//! *Why tokens too:* a policy that serves short requests first (SRPT, SJF, the length
//! predictors) completes more requests per second than it could of the average mix, leaving the
//! long ones to grow the queue. SRPT on ShareGPT at 1.5× its capacity completed 228 requests per
//! window of 256 arrivals (1.12×: never caught by request counts, so 10⁶ requests ran to the
//! end while the queue grew to hundreds of thousands), but only about two thirds of the arriving
//! output tokens.
//!
//! A stable replica (arrival rate below what it serves) cannot pass this: over hundreds of
//! arrivals per window, arrivals exceeding completions by 25 % while the replica is busy all the
//! time, three windows in a row, is far outside the fluctuations of a stable queue; a burst ends
//! (arrivals stop or slow down) before the streak does; and the queue length floor keeps short
//! overloads, which a finite trace recovers from, running. Everything is measured in simulated
//! time, so the decision is deterministic.
//!
//! This check only saves time on gross overloads. A run it lets finish may still have been
//! overloaded (a queue under `overload_min_queue`, an excess under 25 %): that is judged after
//! the run, from its completions, by the stricter stability rule of
//! [`crate::metrics::stability`] (achieved ≥ 0.95 × offered, no queue growth at the end), which
//! `sweep.csv` reports and `capacity` requires.

use crate::vocab::time::{Ns, ns_to_s};

/// Arrivals a window needs before it can close.
pub const MIN_WINDOW_ARRIVALS: u64 = 256;
/// Consecutive diverging windows needed.
pub const MIN_STREAK: u32 = 3;
/// Busy share of a window for the replica to count as saturated.
pub const MIN_BUSY_PERCENT: u128 = 95;

/// A replica's counters at one instant (all monotone except `queue`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub time_ns: Ns,
    pub arrivals: u64,
    pub completions: u64,
    /// Output tokens of the arrivals and of the completions.
    pub arrived_tokens: u64,
    pub completed_tokens: u64,
    pub busy_ns: Ns,
    pub queue: usize,
}

/// The overload detector of one replica.
#[derive(Debug, Clone, Default)]
pub struct OverloadWatch {
    /// Start of the open window (`None` before the replica's first arrival).
    window: Option<Counters>,
    /// Start of the current run of diverging windows.
    streak_start: Counters,
    streak: u32,
}

impl OverloadWatch {
    /// Called at each arrival to the replica (after the request joined its queue). Returns the
    /// error message when the replica is found overloaded.
    pub fn on_arrival(
        &mut self,
        replica: u32,
        now: Counters,
        window_ns: Ns,
        min_queue: usize,
    ) -> Option<String> {
        if window_ns == 0 {
            return None;
        }
        let Some(w) = self.window else {
            self.window = Some(now);
            return None;
        };
        let span = now.time_ns - w.time_ns;
        let arrivals = now.arrivals - w.arrivals;
        if span < window_ns || arrivals < MIN_WINDOW_ARRIVALS {
            return None;
        }
        self.window = Some(now);
        let completions = now.completions - w.completions;
        let busy = now.busy_ns.saturating_sub(w.busy_ns);
        let arrived_tokens = (now.arrived_tokens - w.arrived_tokens) as u128;
        let completed_tokens = (now.completed_tokens - w.completed_tokens) as u128;
        let diverging = busy as u128 * 100 >= span as u128 * MIN_BUSY_PERCENT
            && now.queue > w.queue
            && (arrivals * 4 >= completions * 5 || arrived_tokens * 4 >= completed_tokens * 5);
        if !diverging {
            self.streak = 0;
            return None;
        }
        if self.streak == 0 {
            self.streak_start = w;
        }
        self.streak += 1;
        if self.streak < MIN_STREAK || now.queue < min_queue {
            return None;
        }
        let s = self.streak_start;
        let secs = ns_to_s(now.time_ns - s.time_ns);
        let served = (now.completions - s.completions) as f64 / secs;
        let offered = (now.arrivals - s.arrivals) as f64 / secs;
        let served_tok = (now.completed_tokens - s.completed_tokens) as f64 / secs;
        let offered_tok = (now.arrived_tokens - s.arrived_tokens) as f64 / secs;
        Some(format!(
            "overloaded: replica {replica}'s queue grew from {} to {} unfinished requests over the last {secs:.1} s of simulated time (t={:.3}s to {:.3}s) while it was saturated (busy ≥ {MIN_BUSY_PERCENT}% of the time); it served {served:.3} req/s ({served_tok:.1} output tok/s) against arrivals of {offered:.3} req/s ({offered_tok:.1} output tok/s): lower the arrival rate (limits.overload_window_s and limits.overload_min_queue tune this check; overload_window_s = 0 turns it off)",
            s.queue,
            now.queue,
            ns_to_s(s.time_ns),
            ns_to_s(now.time_ns),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Ns = 1_000_000_000;

    /// Feed one arrival every `1/rate` s to a replica busy all the time that completes
    /// `served` req/s; returns the arrival count at which it is called overloaded. Arrivals and
    /// completions are 100 output tokens each.
    fn drive(rate: u64, served: u64, busy_percent: u64, arrivals: u64) -> Option<u64> {
        drive_work(rate, served, busy_percent, arrivals, 100)
    }

    /// [`drive`] with completions of `completed_size` output tokens each (arrivals: 100).
    fn drive_work(
        rate: u64,
        served: u64,
        busy_percent: u64,
        arrivals: u64,
        completed_size: u64,
    ) -> Option<u64> {
        let mut w = OverloadWatch::default();
        for i in 1..=arrivals {
            let t = i * S / rate;
            let completions = t as u128 * served as u128 / S as u128;
            let c = Counters {
                time_ns: t,
                arrivals: i,
                completions: completions as u64,
                arrived_tokens: i * 100,
                completed_tokens: completions as u64 * completed_size,
                busy_ns: t / 100 * busy_percent,
                queue: (i as i64 - completions as i64).max(0) as usize,
            };
            if w.on_arrival(0, c, S, 1000).is_some() {
                return Some(i);
            }
        }
        None
    }

    #[test]
    fn a_diverging_saturated_replica_is_called_overloaded_once_the_queue_is_long() {
        // 1000 req/s against 10 served: three 1 s windows, and the queue passes 1000 in the
        // second: called at the end of the third window.
        assert_eq!(drive(1000, 10, 100, 100_000), Some(3001));
    }

    #[test]
    fn stable_idle_or_marginal_replicas_are_not() {
        // Served as fast as it arrives.
        assert_eq!(drive(1000, 1000, 100, 100_000), None);
        // Arrivals only 20 % above completions.
        assert_eq!(drive(1200, 1000, 100, 100_000), None);
        // Not saturated.
        assert_eq!(drive(1000, 10, 90, 100_000), None);
        // Queue below the floor (3 req/s over 2 served, 300 s of arrivals: queue 300 < 1000).
        assert_eq!(drive(3, 2, 100, 900), None);
    }

    /// A replica that completes 1000 req/s of 1120 arriving (1.12×, under the request-count
    /// bound) but only short ones (60 of the arrivals' 100 tokens each: 60 % of the arriving
    /// work) diverges in work: called once the queue passes the floor (1000 after 8.33 s of 120
    /// req/s excess; the ninth 1 s window, which began at the first arrival, closes at arrival
    /// 9 × 1120 + 1). With completions of the arrivals' size it is a
    /// 1.12× excess in both measures: not called.
    #[test]
    fn a_replica_that_completes_only_short_requests_is_called_overloaded_by_its_work() {
        assert_eq!(drive_work(1120, 1000, 100, 100_000, 60), Some(9 * 1120 + 1));
        assert_eq!(drive_work(1120, 1000, 100, 100_000, 100), None);
        // 20 % more work arriving than completed: within the bound.
        assert_eq!(drive_work(1120, 1000, 100, 100_000, 94), None);
    }

    #[test]
    fn a_zero_window_turns_it_off() {
        let mut w = OverloadWatch::default();
        for i in 0..10_000u64 {
            let c = Counters {
                time_ns: i * S,
                arrivals: i,
                completions: 0,
                arrived_tokens: i,
                completed_tokens: 0,
                busy_ns: i * S,
                queue: i as usize,
            };
            assert!(w.on_arrival(0, c, 0, 1).is_none());
        }
    }
}
