//! Precopy policies: when a live save stops iterating and suspends the guest.
//!
//! [`XenDefault`] is libxc's own rule. [`DowntimeTarget`] estimates the link's page rate and
//! the guest's dirty rate from the last pass and stops as soon as the predicted stop-and-copy
//! fits the target; when the guest dirties faster than the link can carry, it says so and
//! stops after a bounded number of passes rather than iterating forever.

use crate::domain::{PrecopyDecision, PrecopyStats};
use std::time::Duration;

/// libxc's default: stop below 50 dirty pages or after 5 iterations.
#[derive(Debug, Clone, Copy, Default)]
pub struct XenDefault;

impl XenDefault {
    /// Xen's decision after a pass with these figures.
    pub fn decide(&mut self, s: PrecopyStats) -> PrecopyDecision {
        crate::save::default_policy(s)
    }
}

/// How a downtime-target policy ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DowntimeVerdict {
    /// The predicted stop-and-copy fits the target.
    pub met: bool,
    /// The stop-and-copy time predicted when precopy stopped.
    pub predicted: Duration,
    /// The downtime asked for.
    pub target: Duration,
    /// The pass precopy stopped after.
    pub iteration: u32,
    /// Why, in words.
    pub reason: String,
}

/// Stops when the predicted downtime fits `target`.
#[derive(Debug, Clone)]
pub struct DowntimeTarget {
    /// The downtime to reach.
    pub target: Duration,
    /// Passes after which it gives up on the target.
    pub max_iterations: u32,
    /// The outcome, once decided.
    pub verdict: Option<DowntimeVerdict>,
    /// Page rate of the link (pages/s) and dirty rate of the guest (pages/s) last seen.
    pub page_rate: f64,
    /// Dirty rate of the guest (pages/s) last seen.
    pub dirty_rate: f64,
}

impl DowntimeTarget {
    /// A policy for `target`, giving up after 30 passes.
    pub fn new(target: Duration) -> Self {
        DowntimeTarget {
            target,
            max_iterations: 30,
            verdict: None,
            page_rate: 0.0,
            dirty_rate: 0.0,
        }
    }

    /// The decision after a pass with these figures; sets [`DowntimeTarget::verdict`] when it stops.
    pub fn decide(&mut self, s: PrecopyStats) -> PrecopyDecision {
        if s.dirty_count < 0 || s.last_pass_pages == 0 || s.last_pass_time.is_zero() {
            return PrecopyDecision::Continue;
        }
        let secs = s.last_pass_time.as_secs_f64();
        self.page_rate = s.last_pass_pages as f64 / secs;
        self.dirty_rate = s.dirty_count as f64 / secs;
        let predicted = Duration::from_secs_f64(s.dirty_count as f64 / self.page_rate);
        let stop = |met: bool, reason: String, this: &mut Self| {
            this.verdict = Some(DowntimeVerdict {
                met,
                predicted,
                target: this.target,
                iteration: s.iteration,
                reason,
            });
            PrecopyDecision::StopAndCopy
        };
        if predicted <= self.target {
            return stop(
                true,
                format!(
                    "{} dirty pages at {:.0} pages/s: {:.1} ms of downtime fits the {:.1} ms target",
                    s.dirty_count,
                    self.page_rate,
                    predicted.as_secs_f64() * 1e3,
                    self.target.as_secs_f64() * 1e3
                ),
                self,
            );
        }
        // Converging needs the guest to dirty slower than the link sends.
        if self.dirty_rate >= self.page_rate && s.iteration >= 2 {
            return stop(
                false,
                format!(
                    "cannot meet the {:.1} ms target: the guest dirties {:.0} pages/s, the link sends {:.0} pages/s; stopping with {:.1} ms predicted",
                    self.target.as_secs_f64() * 1e3,
                    self.dirty_rate,
                    self.page_rate,
                    predicted.as_secs_f64() * 1e3
                ),
                self,
            );
        }
        if s.iteration >= self.max_iterations {
            return stop(
                false,
                format!(
                    "cannot meet the {:.1} ms target after {} passes; stopping with {:.1} ms predicted",
                    self.target.as_secs_f64() * 1e3,
                    s.iteration,
                    predicted.as_secs_f64() * 1e3
                ),
                self,
            );
        }
        PrecopyDecision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(iteration: u32, dirty: i64, pages: u64, ms: u64) -> PrecopyStats {
        PrecopyStats {
            iteration,
            total_written: 0,
            dirty_count: dirty,
            last_pass_pages: pages,
            last_pass_bytes: pages * 4104,
            last_pass_time: Duration::from_millis(ms),
        }
    }

    #[test]
    fn meets_a_reachable_target() {
        let mut p = DowntimeTarget::new(Duration::from_millis(10));
        // 100000 pages/s; 5000 dirty → 50 ms: go on. 500 dirty → 5 ms: stop.
        assert_eq!(
            p.decide(stats(1, 5000, 100_000, 1000)),
            PrecopyDecision::Continue
        );
        assert_eq!(
            p.decide(stats(2, 500, 5000, 50)),
            PrecopyDecision::StopAndCopy
        );
        assert!(p.verdict.as_ref().unwrap().met);
    }

    #[test]
    fn says_when_it_cannot() {
        let mut p = DowntimeTarget::new(Duration::from_millis(1));
        // The guest dirties as much as the link sends.
        assert_eq!(
            p.decide(stats(1, 100_000, 100_000, 1000)),
            PrecopyDecision::Continue
        );
        assert_eq!(
            p.decide(stats(2, 100_000, 100_000, 1000)),
            PrecopyDecision::StopAndCopy
        );
        let v = p.verdict.unwrap();
        assert!(!v.met);
        assert!(v.reason.contains("cannot meet"));
    }

    #[test]
    fn unknown_dirty_count_continues() {
        let mut p = DowntimeTarget::new(Duration::from_millis(1));
        assert_eq!(p.decide(stats(3, -1, 10, 10)), PrecopyDecision::Continue);
    }
}
