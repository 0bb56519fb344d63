//! Whether a spawn site's tasks keep piling up: the alive count over a recording, kept in a
//! fixed number of time buckets, and a verdict that a noisy but steady count does not trip.
//!
//! A site whose tasks leak (spawned per request, never finished) has an alive count that keeps
//! growing; a busy but healthy site's count goes up and down around a level. The verdict compares
//! the first third of the run with the last: growth is flagged only when the values of the last
//! third (all but a third of its buckets at most: a program that shuts down drops its tasks at
//! the end) are above every value of the first, by at least [`MIN_GROWTH`] tasks and a tenth of
//! the first third's level. That is a rank test, indifferent to how the count is spread, and it
//! needs no model of the noise: a load that delays some finishes moves single values, not the
//! whole last third above the whole first. A ramp-up (clients connecting) that ends within the
//! first third is not growth either.

use std::time::Duration;

use serde::Serialize;

/// Buckets kept per series; when the run outgrows them, neighbours merge and the width doubles.
pub const BUCKETS: usize = 64;

/// Fewest buckets (intervals, in a short run) before a verdict: a run of a few intervals says
/// nothing about a trend.
pub const MIN_BUCKETS: usize = 6;

/// Smallest growth, in tasks, from the first third's highest to the last third's lowest.
pub const MIN_GROWTH: i64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    min: i64,
    max: i64,
    /// Sum and count of the values, for the means.
    sum: i64,
    n: i64,
    /// The latest value.
    last: i64,
}

/// One site's alive count over time, in at most [`BUCKETS`] buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliveSeries {
    start_ns: u64,
    width_ns: u64,
    /// `None`: no value landed there (the count did not change: the last one holds).
    buckets: Vec<Option<Bucket>>,
}

/// A flagged growth.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Growth {
    /// Tasks more per second, from the first third's mean to the last third's.
    pub per_second: f64,
    /// Highest alive count in the first third of the run.
    pub first_third_max: u64,
    /// Lowest alive count in the last third.
    pub last_third_min: u64,
    /// The span of time judged.
    #[serde(rename = "over_ns", with = "crate::units::duration_ns")]
    pub over: Duration,
}

impl AliveSeries {
    /// A series starting at `start_ns` whose buckets are at first `width_ns` wide (an interval).
    pub fn new(start_ns: u64, width_ns: u64) -> Self {
        AliveSeries { start_ns, width_ns: width_ns.max(1), buckets: Vec::new() }
    }

    /// The bucket `at_ns` falls in, merging buckets until it fits.
    fn index(&mut self, at_ns: u64) -> usize {
        loop {
            let i = (at_ns.saturating_sub(self.start_ns) / self.width_ns) as usize;
            if i < BUCKETS {
                return i;
            }
            self.halve();
        }
    }

    /// The alive count at `at_ns`, when it changed (values come in time order; between two, the
    /// count is the earlier one).
    pub fn push(&mut self, at_ns: u64, alive: i64) {
        let i = self.index(at_ns);
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, None);
        }
        let b = self.buckets[i].get_or_insert(Bucket { min: alive, max: alive, sum: 0, n: 0, last: alive });
        b.min = b.min.min(alive);
        b.max = b.max.max(alive);
        b.sum += alive;
        b.n += 1;
        b.last = alive;
    }

    /// Merges neighbouring buckets: twice as wide, half as many.
    fn halve(&mut self) {
        let merged = self
            .buckets
            .chunks(2)
            .map(|pair| {
                pair.iter().flatten().copied().reduce(|a, b| Bucket {
                    min: a.min.min(b.min),
                    max: a.max.max(b.max),
                    sum: a.sum + b.sum,
                    n: a.n + b.n,
                    last: b.last,
                })
            })
            .collect();
        self.buckets = merged;
        self.width_ns = self.width_ns.saturating_mul(2);
    }

    /// The buckets up to the one `end_ns` falls in, an empty one holding the value before it.
    fn filled(&self, end_ns: u64) -> Vec<Bucket> {
        let end = ((end_ns.saturating_sub(self.start_ns) / self.width_ns) as usize)
            .clamp(self.buckets.len().max(1) - 1, BUCKETS - 1);
        let mut out = Vec::with_capacity(end + 1);
        let mut held: Option<i64> = None;
        for i in 0..=end {
            match self.buckets.get(i).copied().flatten() {
                Some(b) => {
                    // The value before the bucket's first held until then.
                    let b = match held {
                        Some(h) => Bucket { min: b.min.min(h), max: b.max.max(h), ..b },
                        None => b,
                    };
                    out.push(b);
                    held = Some(b.last);
                }
                None => {
                    if let Some(h) = held {
                        out.push(Bucket { min: h, max: h, sum: h, n: 1, last: h });
                    }
                }
            }
        }
        out
    }

    /// Whether the count grew over the run that ended at `end_ns` (see the module's
    /// documentation).
    pub fn growth(&self, end_ns: u64) -> Option<Growth> {
        let filled = self.filled(end_ns);
        if filled.len() < MIN_BUCKETS {
            return None;
        }
        let third = filled.len() / 3;
        let (first, last) = (&filled[..third], &filled[filled.len() - third..]);
        let first_max = first.iter().map(|b| b.max).max()?;
        // The last third's buckets wholly above the first third: all of them but a few (the
        // program shutting down drops its tasks in its last moments).
        let above: Vec<Bucket> = last.iter().filter(|b| b.min > first_max).copied().collect();
        if above.len() < 2 || above.len() * 3 < third * 2 {
            return None;
        }
        let last_min = above.iter().map(|b| b.min).min()?;
        let grew = last_min - first_max;
        if grew < MIN_GROWTH || grew * 10 < first_max {
            return None;
        }
        let last = &above[..];
        let mean = |bs: &[Bucket]| bs.iter().map(|b| b.sum as f64 / b.n.max(1) as f64).sum::<f64>() / bs.len() as f64;
        // The thirds' centres are (len - third) buckets apart.
        let apart = (filled.len() - third) as f64 * self.width_ns as f64 / 1e9;
        Some(Growth {
            per_second: (mean(last) - mean(first)) / apart.max(1e-9),
            first_third_max: first_max.max(0) as u64,
            last_third_min: last_min.max(0) as u64,
            over: Duration::from_nanos(self.width_ns.saturating_mul(filled.len() as u64)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// The growth verdict of one value per second.
    fn growth(values: impl IntoIterator<Item = i64>) -> Option<Growth> {
        let mut s = AliveSeries::new(0, S);
        let mut end = 0;
        for (i, v) in values.into_iter().enumerate() {
            end = i as u64 * S;
            s.push(end, v);
        }
        s.growth(end)
    }

    #[test]
    fn a_leak_is_flagged_with_its_rate() {
        // 200 tasks a second that never finish, over ten seconds.
        let g = growth((0..10).map(|i| 500 + 200 * i)).expect("a leak");
        assert!((g.per_second - 200.0).abs() < 1.0, "{g:?}");
        assert!(g.last_third_min > g.first_third_max);
        // Also when the program ends by dropping them all.
        let g = growth((0..12).map(|i| 500 + 200 * i).chain([0])).expect("a leak, then shutdown");
        assert!(g.per_second > 150.0, "{g:?}");
    }

    #[test]
    fn a_steady_noisy_count_is_not_growth() {
        // Up and down around 1,000 by ±30%, and a ramp-up in the first seconds.
        let noisy = [100, 600, 1000, 1300, 700, 1200, 900, 1250, 800, 1100, 950, 1290, 720, 1010, 880];
        assert_eq!(growth(noisy), None);
        // Constant.
        assert_eq!(growth([40; 30]), None);
        // A few tasks more at the end than the start, within the noise floor.
        assert_eq!(growth([10, 11, 12, 12, 13, 14, 14, 15, 14]), None);
    }

    #[test]
    fn too_short_a_run_says_nothing() {
        assert_eq!(growth([0, 100, 200, 300, 400]), None);
    }

    #[test]
    fn a_long_run_stays_within_its_buckets() {
        let mut s = AliveSeries::new(0, S);
        for i in 0..10_000u64 {
            s.push(i * S, 1_000 + (i % 7) as i64);
        }
        assert!(s.buckets.len() <= BUCKETS);
        assert_eq!(s.growth(9_999 * S), None);
        // And a leak over it is still seen.
        let mut s = AliveSeries::new(0, S);
        for i in 0..10_000u64 {
            s.push(i * S, i as i64 * 3);
        }
        let g = s.growth(9_999 * S).unwrap();
        assert!((g.per_second - 3.0).abs() < 0.2, "{g:?}");
    }

    #[test]
    fn unchanged_stretches_hold_the_last_value() {
        // Values only when the count changed. Up to 300 in three seconds, then flat for eight:
        // not a leak.
        let mut s = AliveSeries::new(0, S);
        for (t, v) in [(0, 0), (1, 100), (2, 200), (3, 300)] {
            s.push(t * S, v);
        }
        assert_eq!(s.growth(11 * S), None);
        // Up by 100 every other second: the seconds between hold the last value, and it grows.
        let mut s = AliveSeries::new(0, S);
        for t in (0..12).step_by(2) {
            s.push(t * S, t as i64 * 50);
        }
        let g = s.growth(11 * S).unwrap();
        assert!((g.per_second - 50.0).abs() < 10.0, "{g:?}");
    }
}
