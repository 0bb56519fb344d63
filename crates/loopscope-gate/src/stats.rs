//! The statistics of the gate: percentiles of histograms and a seeded block bootstrap.
//!
//! One side of a comparison (the baseline or the candidate) is a set of runs, each a sequence of
//! blocks: the histograms of one recording interval. Neighbouring polls are not independent (a
//! burst of slow polls lasts), but intervals are close to it, so the bootstrap resamples whole
//! intervals, not single polls; with several runs it first resamples runs, then intervals inside
//! each chosen run (a two-level bootstrap), so the spread between runs on a noisy machine is in
//! the interval too. The generator is seeded: the same inputs and seed give the same verdict.

/// A small deterministic generator (SplitMix64): the same seed gives the same resamples on every
/// build and platform, which a library generator does not promise across versions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (`n > 0`), by multiply-and-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// A statistic of a distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stat {
    /// The value at a quantile in (0, 1), e.g. 0.99 for p99.
    Quantile(f64),
    /// The largest value.
    Max,
}

impl Stat {
    /// Parses `p50`, `p90`, `p99`, `p99.9`, `p99.99` (any `pN` with 0 < N < 100) or `max`.
    pub fn parse(s: &str) -> Option<Stat> {
        if s == "max" {
            return Some(Stat::Max);
        }
        let pct: f64 = s.strip_prefix('p')?.parse().ok()?;
        (pct > 0.0 && pct < 100.0).then_some(Stat::Quantile(pct / 100.0))
    }

    /// The name as written in a policy (`p99.9`, `max`).
    pub fn name(self) -> String {
        match self {
            Stat::Max => "max".into(),
            Stat::Quantile(q) => format!("p{}", trim_float(q * 100.0)),
        }
    }
}

/// `99.9` rather than `99.90000000000001`.
fn trim_float(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The distinct bucket values (nanoseconds) of every histogram in a comparison, sorted; blocks
/// refer to values by their index here, so resampling adds small integer arrays.
#[derive(Clone, Debug, Default)]
pub struct Scale {
    values: Vec<u64>,
}

impl Scale {
    /// The scale of these values (in any order, with repeats).
    pub fn new(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        values.dedup();
        Scale { values }
    }

    /// Number of distinct values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the scale has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Index of a value that is on the scale.
    pub fn index(&self, value: u64) -> Option<u32> {
        self.values.binary_search(&value).ok().map(|i| i as u32)
    }

    /// The value at an index.
    pub fn value(&self, index: usize) -> u64 {
        self.values[index]
    }
}

/// One block: a histogram as (scale index, count) pairs.
pub type Block = Vec<(u32, u64)>;

/// One side of a comparison: runs of blocks.
#[derive(Clone, Debug, Default)]
pub struct Side {
    /// Per run, its blocks in order.
    pub runs: Vec<Vec<Block>>,
}

impl Side {
    /// Total count over every block.
    pub fn count(&self) -> u64 {
        self.runs.iter().flatten().flatten().map(|(_, c)| c).sum()
    }

    /// Number of blocks over every run.
    pub fn blocks(&self) -> usize {
        self.runs.iter().map(Vec::len).sum()
    }

    /// Whether resampling can vary anything: more than one run, or a run of more than one block.
    pub fn resamplable(&self) -> bool {
        self.runs.len() > 1 || self.runs.iter().any(|r| r.len() > 1)
    }

    /// Every block added up, as counts over the scale.
    pub fn pooled(&self, scale: &Scale) -> Vec<u64> {
        let mut counts = vec![0; scale.len()];
        for (i, c) in self.runs.iter().flatten().flatten() {
            counts[*i as usize] += c;
        }
        counts
    }

    /// One bootstrap resample into `counts` (cleared first): runs with replacement, then blocks
    /// with replacement inside each chosen run.
    fn resample(&self, rng: &mut Rng, counts: &mut [u64]) {
        counts.fill(0);
        for _ in 0..self.runs.len() {
            let run = &self.runs[rng.below(self.runs.len())];
            for _ in 0..run.len() {
                for (i, c) in &run[rng.below(run.len())] {
                    counts[*i as usize] += c;
                }
            }
        }
    }
}

/// A statistic of counts over a scale; `None` when there are no counts.
///
/// A quantile is the smallest value at or below which at least that share of the counts lie
/// (HdrHistogram's rule, so figures agree with `loopscope report`).
pub fn statistic(counts: &[u64], scale: &Scale, stat: Stat) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    match stat {
        Stat::Max => counts.iter().rposition(|c| *c > 0).map(|i| scale.value(i)),
        Stat::Quantile(q) => {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Some(scale.value(i));
                }
            }
            None
        }
    }
}

/// Bootstrap replicates of several statistics of one side: `out[k]` holds the replicates of
/// `stats[k]` (resamples without counts are left out).
pub fn replicates(side: &Side, scale: &Scale, stats: &[Stat], resamples: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::with_capacity(resamples); stats.len()];
    let mut counts = vec![0; scale.len()];
    for _ in 0..resamples {
        side.resample(rng, &mut counts);
        for (k, stat) in stats.iter().enumerate() {
            if let Some(v) = statistic(&counts, scale, *stat) {
                out[k].push(v as f64);
            }
        }
    }
    out
}

/// The central `level` share of sorted-in-place `xs` (a percentile interval); `None` if empty.
pub fn interval(xs: &mut [f64], level: f64) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    let at = |q: f64| {
        let pos = q * (xs.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        xs[lo] + (xs[hi] - xs[lo]) * (pos - lo as f64)
    };
    Some((at(tail), at(1.0 - tail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A side of `runs` runs of `blocks` blocks, each block `n` values drawn around `center`
    /// (uniform within ±`spread` of it), on a shared scale of integers.
    fn synthetic(rng: &mut Rng, runs: usize, blocks: usize, n: usize, center: u64, spread: u64) -> Vec<Vec<Vec<u64>>> {
        (0..runs)
            .map(|_| {
                (0..blocks)
                    .map(|_| (0..n).map(|_| center - spread + rng.below(2 * spread as usize + 1) as u64).collect())
                    .collect()
            })
            .collect()
    }

    fn to_side(raw: &[Vec<Vec<u64>>], scale: &Scale) -> Side {
        Side {
            runs: raw
                .iter()
                .map(|run| {
                    run.iter()
                        .map(|block| {
                            let mut counts = std::collections::BTreeMap::new();
                            for v in block {
                                *counts.entry(scale.index(*v).unwrap()).or_insert(0) += 1;
                            }
                            counts.into_iter().collect()
                        })
                        .collect()
                })
                .collect(),
        }
    }

    fn ratio_interval(base: &Side, cand: &Side, scale: &Scale, stat: Stat, seed: u64) -> (f64, f64) {
        let mut rng = Rng::new(seed);
        let b = replicates(base, scale, &[stat], 2000, &mut rng).remove(0);
        let c = replicates(cand, scale, &[stat], 2000, &mut rng).remove(0);
        let mut ratios: Vec<f64> = b.iter().zip(&c).map(|(b, c)| c / b).collect();
        interval(&mut ratios, 0.95).unwrap()
    }

    #[test]
    fn quantiles_follow_hdrhistogram_rule() {
        let scale = Scale::new((1..=100).collect());
        let counts = vec![1; 100];
        assert_eq!(statistic(&counts, &scale, Stat::Quantile(0.5)), Some(50));
        assert_eq!(statistic(&counts, &scale, Stat::Quantile(0.99)), Some(99));
        assert_eq!(statistic(&counts, &scale, Stat::Quantile(0.999)), Some(100));
        assert_eq!(statistic(&counts, &scale, Stat::Max), Some(100));
        assert_eq!(statistic(&vec![0; 100], &scale, Stat::Max), None);
    }

    #[test]
    fn stat_names_round_trip() {
        for s in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
            assert_eq!(Stat::parse(s).unwrap().name(), s);
        }
        for bad in ["p0", "p100", "q99", "p", "99", "pmax"] {
            assert_eq!(Stat::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_generator_is_reproducible_and_uniform_enough() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = Rng::new(7);
        assert_eq!(a, (0..5).map(|_| r.next_u64()).collect::<Vec<_>>());
        let mut hits = [0u32; 10];
        for _ in 0..100_000 {
            hits[r.below(10)] += 1;
        }
        assert!(hits.iter().all(|h| (9_000..11_000).contains(h)), "{hits:?}");
    }

    #[test]
    fn identical_sides_give_an_interval_around_one() {
        let mut rng = Rng::new(1);
        let raw = synthetic(&mut rng, 3, 20, 500, 1000, 200);
        let scale = Scale::new(raw.iter().flatten().flatten().copied().collect());
        let side = to_side(&raw, &scale);
        let (lo, hi) = ratio_interval(&side, &side, &scale, Stat::Quantile(0.99), 3);
        assert!(lo <= 1.0 && hi >= 1.0 && hi - lo < 0.05, "[{lo}, {hi}]");
    }

    #[test]
    fn a_known_shift_is_detected_and_measured() {
        let mut rng = Rng::new(2);
        let base = synthetic(&mut rng, 3, 20, 500, 1000, 200);
        // 20% slower: every value scaled by 1.2.
        let cand: Vec<Vec<Vec<u64>>> =
            base.iter().map(|r| r.iter().map(|b| b.iter().map(|v| v * 6 / 5).collect()).collect()).collect();
        let scale = Scale::new(base.iter().chain(&cand).flatten().flatten().copied().collect());
        let (b, c) = (to_side(&base, &scale), to_side(&cand, &scale));
        for stat in [Stat::Quantile(0.5), Stat::Quantile(0.99)] {
            let (lo, hi) = ratio_interval(&b, &c, &scale, stat, 5);
            assert!(lo > 1.15 && hi < 1.25 && lo <= 1.2 && hi >= 1.2, "{stat:?}: [{lo}, {hi}]");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let mut rng = Rng::new(3);
        let raw = synthetic(&mut rng, 2, 10, 100, 500, 100);
        let scale = Scale::new(raw.iter().flatten().flatten().copied().collect());
        let side = to_side(&raw, &scale);
        let a = ratio_interval(&side, &side, &scale, Stat::Quantile(0.9), 11);
        assert_eq!(a, ratio_interval(&side, &side, &scale, Stat::Quantile(0.9), 11));
        assert_ne!(a, ratio_interval(&side, &side, &scale, Stat::Quantile(0.9), 12));
    }

    #[test]
    fn noisy_runs_widen_the_interval() {
        // Same mean, but one run of the candidate is 30% slower than the others: the two-level
        // bootstrap must not claim certainty that the p50 moved by exactly the pooled amount.
        let mut rng = Rng::new(4);
        let base = synthetic(&mut rng, 3, 20, 200, 1000, 100);
        let mut cand = synthetic(&mut rng, 3, 20, 200, 1000, 100);
        for b in &mut cand[0] {
            for v in b.iter_mut() {
                *v = *v * 13 / 10;
            }
        }
        let scale = Scale::new(base.iter().chain(&cand).flatten().flatten().copied().collect());
        let (lo, hi) = ratio_interval(&to_side(&base, &scale), &to_side(&cand, &scale), &scale, Stat::Quantile(0.5), 9);
        assert!(hi - lo > 0.1, "a run-to-run spread must widen the interval: [{lo}, {hi}]");
    }

    #[test]
    fn percentile_intervals_interpolate() {
        let mut xs: Vec<f64> = (0..=100).map(f64::from).rev().collect();
        let (lo, hi) = interval(&mut xs, 0.9).unwrap();
        assert!((lo - 5.0).abs() < 1e-9 && (hi - 95.0).abs() < 1e-9, "[{lo}, {hi}]");
        assert_eq!(interval(&mut [], 0.9), None);
    }
}
