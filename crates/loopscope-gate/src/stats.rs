//! The statistics of the gate: percentiles of histograms and a seeded block bootstrap.
//!
//! One side of a comparison (the baseline or the candidate) is a set of runs, each a sequence of
//! blocks: the histograms of one recording interval. Neighbouring polls are not independent (a
//! burst of slow polls lasts), but intervals are close to it, so the bootstrap resamples whole
//! intervals, not single polls; with several runs it first resamples runs, then intervals inside
//! each chosen run (a two-level bootstrap), so the spread between runs on a noisy machine is in
//! the interval too. The generator is seeded: the same inputs and seed give the same verdict.
//! Intervals are percentile intervals, or standard normal ones for levels whose tails the
//! resamples cannot resolve ([`interval_at`]).

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

/// How a confidence interval was taken from bootstrap replicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The percentile interval: the central share of the replicates (Efron & Tibshirani, *An
    /// Introduction to the Bootstrap*, 1993, ch. 13), when each tail holds at least
    /// [`TAIL_REPLICATES`] of them.
    Percentile,
    /// The standard normal interval: the point estimate ± z × the replicates' standard deviation
    /// (the bootstrap estimate of its standard error; Efron & Tibshirani 1993, ch. 12-13), for a
    /// level whose tails the replicates are too few to resolve.
    Normal,
}

/// Replicates a tail of a percentile interval must hold for its end to be more than the most
/// extreme replicate or two.
pub const TAIL_REPLICATES: f64 = 10.0;

/// Whether `n` replicates resolve both tails of an interval at `level`.
pub fn percentile_resolves(n: usize, level: f64) -> bool {
    (1.0 - level) / 2.0 * n as f64 >= TAIL_REPLICATES
}

/// The interval at `level` from replicates `xs` (sorted in place) of a statistic whose estimate
/// is `point`: the percentile interval when the replicates resolve its tails, the standard normal
/// interval otherwise. Many rules corrected for each other (Bonferroni) ask for levels such as
/// 1 - 0.05 / 200, whose percentile tails would need tens of thousands of resamples per rule, so
/// that the cost of a check would grow with the square of its rules; the normal interval needs
/// only the standard deviation, which the usual few thousand resamples estimate well.
/// `None` without replicates.
pub fn interval_at(xs: &mut [f64], point: f64, level: f64) -> Option<(f64, f64, Method)> {
    if percentile_resolves(xs.len(), level) {
        return interval(xs, level).map(|(lo, hi)| (lo, hi, Method::Percentile));
    }
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    let z = normal_quantile(1.0 - (1.0 - level) / 2.0);
    Some((point - z * sd, point + z * sd, Method::Normal))
}

/// The standard normal distribution's quantile function (its inverse CDF) at `p` in (0, 1).
///
/// Acklam's rational approximation (P. J. Acklam, "An algorithm for computing the inverse normal
/// cumulative distribution function", 2003): relative error below 1.15e-9 over the whole range,
/// far finer than an interval of bootstrap replicates needs.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    const LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p <= 0.0 {
        f64::NEG_INFINITY
    } else if p >= 1.0 {
        f64::INFINITY
    } else if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
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
    fn the_normal_quantile_matches_reference_values() {
        // Python's statistics.NormalDist().inv_cdf (Wichura's AS241).
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_053_6),
            (0.995, 2.575_829_303_548_9),
            (0.9999, 3.719_016_485_455_708_4),
            (0.999_999, 4.753_424_308_817_089),
            (1e-9, -5.997_807_015_007_686_5),
            (0.02, -2.053_748_910_631_822_5),
            (0.3, -0.524_400_512_708_040_7),
        ] {
            let got = normal_quantile(p);
            assert!((got - z).abs() <= 1e-8 * z.abs().max(1.0), "p {p}: {got} against {z}");
        }
    }

    #[test]
    fn levels_the_replicates_cannot_resolve_take_the_normal_interval() {
        let mut rng = Rng::new(5);
        // Replicates spread uniformly over [0, 1): standard deviation 1/sqrt(12).
        let mut xs: Vec<f64> = (0..2000).map(|_| rng.below(1_000_000) as f64 / 1e6).collect();
        let (lo, hi, m) = interval_at(&mut xs, 0.5, 0.95).unwrap();
        assert_eq!(m, Method::Percentile);
        assert!((lo - 0.025).abs() < 0.01 && (hi - 0.975).abs() < 0.01, "[{lo}, {hi}]");
        // 1 - 0.05 / 200: 0.000125 in each tail, a quarter of one replicate of 2000.
        let (lo, hi, m) = interval_at(&mut xs, 0.5, 1.0 - 0.05 / 200.0).unwrap();
        assert_eq!(m, Method::Normal);
        let half = normal_quantile(1.0 - 0.05 / 400.0) / 12f64.sqrt();
        assert!((lo - (0.5 - half)).abs() < 0.02 && (hi - (0.5 + half)).abs() < 0.02, "[{lo}, {hi}]");
        assert!(!percentile_resolves(2000, 1.0 - 0.05 / 200.0) && percentile_resolves(80_001, 1.0 - 0.05 / 200.0));
        assert_eq!(interval_at(&mut [], 0.0, 0.999_99), None);
    }

    #[test]
    fn percentile_intervals_interpolate() {
        let mut xs: Vec<f64> = (0..=100).map(f64::from).rev().collect();
        let (lo, hi) = interval(&mut xs, 0.9).unwrap();
        assert!((lo - 5.0).abs() < 1e-9 && (hi - 95.0).abs() < 1e-9, "[{lo}, {hi}]");
        assert_eq!(interval(&mut [], 0.9), None);
    }
}
