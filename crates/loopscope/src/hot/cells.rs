//! The hot path's storage: lock-free, single-writer histograms.
//!
//! Each (thread, spawn site) pair owns a [`SiteCells`]. Only the thread that owns it writes to it,
//! with plain relaxed loads and stores (no read-modify-write instruction, no lock, no
//! allocation); the flusher thread reads the same atomics and keeps its own copy of the previous
//! counts, so an interval's figures are the difference of two snapshots. Counters are cumulative
//! and wrap; differences are taken with wrapping arithmetic, which is exact as long as fewer than
//! 2^32 values land in one bucket within one interval.
//!
//! Values are recorded in the clock's raw unit (TSC ticks for poll times, so the hot path never
//! multiplies) and scaled to nanoseconds by the flusher: a histogram knows its unit's length as
//! a multiplier, nanoseconds per 2^32 units, and its ceiling in that unit.
//!
//! The buckets are log-linear like HdrHistogram's, with 32 sub-buckets per power of two (bucket
//! width at most 1/32 of its values, so a bucket's midpoint is within ±1.6% of every value in it);
//! the flusher converts them into loopscope's standard HdrHistograms by recording each bucket's
//! midpoint. The resolution is a trade: 64 sub-buckets would halve the error and make recordings
//! about 40% larger (measured with the 50-site test in `tests/recorder.rs`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use loopscope_core::dist::{DistAcc, HIGHEST_NS};

const SUB_HALF_MAG: u32 = 5;
const SUB_HALF: usize = 1 << SUB_HALF_MAG;
const LZ_BASE: u32 = 64 - SUB_HALF_MAG - 1;

/// Bucket index of `v` (which must be at most `HIGHEST_NS`).
#[inline(always)]
fn index(v: u64) -> usize {
    let b = LZ_BASE - (v | (2 * SUB_HALF as u64 - 1)).leading_zeros();
    let sub = (v >> b) as usize;
    ((b as usize) << SUB_HALF_MAG) + sub
}

/// Nanoseconds in `raw` units of `scale` nanoseconds per 2^32 units.
#[inline]
pub(crate) fn scale_to_ns(raw: u64, scale: u64) -> u64 {
    ((u128::from(raw) * u128::from(scale)) >> 32).min(u128::from(u64::MAX)) as u64
}

/// Units of `scale` nanoseconds per 2^32 units in `ns` nanoseconds (rounded down).
pub(crate) fn ns_to_scale(ns: u64, scale: u64) -> u64 {
    ((u128::from(ns) << 32) / u128::from(scale.max(1))).min(u128::from(u64::MAX)) as u64
}

/// The scale of a histogram whose values are nanoseconds.
pub(crate) const NANOS: u64 = 1 << 32;

/// Midpoint of bucket `i`, the value it contributes to the standard histogram.
fn midpoint(i: usize) -> u64 {
    if i < 2 * SUB_HALF {
        return i as u64;
    }
    let b = (i >> SUB_HALF_MAG) - 1;
    let sub = ((i & (SUB_HALF - 1)) + SUB_HALF) as u64;
    (sub << b) + ((1u64 << b) >> 1)
}

/// One lock-free histogram with its exact scalars, in raw units.
pub(crate) struct HotHist {
    buckets: Box<[AtomicU32]>,
    sum: AtomicU64,
    max: AtomicU64,
    outliers: AtomicU64,
    /// The highest value kept in the buckets (`HIGHEST_NS` in raw units); larger ones are
    /// outliers.
    ceiling: u64,
    /// Nanoseconds per 2^32 raw units.
    scale: u64,
}

/// The flusher's copy of a [`HotHist`] at the previous snapshot.
pub(crate) struct Prev {
    buckets: Box<[u32]>,
    sum: u64,
    outliers: u64,
}

impl HotHist {
    /// A histogram of values in units of `scale` nanoseconds per 2^32 units.
    pub(crate) fn new(scale: u64) -> Self {
        let ceiling = ns_to_scale(HIGHEST_NS, scale);
        HotHist {
            buckets: (0..=index(ceiling)).map(|_| AtomicU32::new(0)).collect(),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
            outliers: AtomicU64::new(0),
            ceiling,
            scale,
        }
    }

    /// Records one value, in raw units. Only the owning thread may call this.
    #[inline(always)]
    pub(crate) fn record(&self, raw: u64) {
        let clamped = if raw > self.ceiling {
            self.outliers.store(self.outliers.load(Relaxed) + 1, Relaxed);
            self.ceiling
        } else {
            raw
        };
        if let Some(b) = self.buckets.get(index(clamped)) {
            b.store(b.load(Relaxed).wrapping_add(1), Relaxed);
        }
        self.sum.store(self.sum.load(Relaxed).wrapping_add(raw), Relaxed);
        if raw > self.max.load(Relaxed) {
            self.max.store(raw, Relaxed);
        }
    }

    /// Adds what was recorded since `prev` to every accumulator in `into` and updates `prev`.
    /// Returns the number of values.
    pub(crate) fn drain_into(&self, prev: &mut Prev, into: &mut [&mut DistAcc]) -> u64 {
        let mut count = 0u64;
        for (i, (cell, p)) in self.buckets.iter().zip(prev.buckets.iter_mut()).enumerate() {
            let now = cell.load(Relaxed);
            let d = now.wrapping_sub(*p);
            if d != 0 {
                *p = now;
                count += u64::from(d);
                let value = scale_to_ns(midpoint(i), self.scale);
                for acc in into.iter_mut() {
                    acc.record_bucket(value, u64::from(d));
                }
            }
        }
        if count == 0 {
            // A value that landed after its bucket was read is taken, scalars and all, next time.
            return 0;
        }
        let sum = self.sum.load(Relaxed);
        let outliers = self.outliers.load(Relaxed);
        // The owner may race this reset; the worst case moves one maximum into the next interval.
        let max = scale_to_ns(self.max.swap(0, Relaxed), self.scale);
        let dsum = scale_to_ns(sum.wrapping_sub(prev.sum), self.scale);
        let dout = outliers.wrapping_sub(prev.outliers);
        prev.sum = sum;
        prev.outliers = outliers;
        for acc in into.iter_mut() {
            acc.add_scalars(count, dsum, max, dout);
        }
        count
    }
}

impl Prev {
    /// A previous snapshot of nothing recorded in `h`.
    pub(crate) fn new(h: &HotHist) -> Self {
        Prev { buckets: vec![0; h.buckets.len()].into_boxed_slice(), sum: 0, outliers: 0 }
    }
}

/// What one thread records for one spawn site.
pub(crate) struct SiteCells {
    pub(crate) poll: HotHist,
    pub(crate) sched: HotHist,
    pub(crate) slow: AtomicU64,
}

impl SiteCells {
    /// Cells for poll times in units of `poll_scale` (the clock's raw unit) and scheduling
    /// latencies in nanoseconds.
    pub(crate) fn new(poll_scale: u64) -> Self {
        SiteCells { poll: HotHist::new(poll_scale), sched: HotHist::new(NANOS), slow: AtomicU64::new(0) }
    }

    /// Counts one slow poll. Only the owning thread may call this.
    #[inline(always)]
    pub(crate) fn count_slow(&self) {
        self.slow.store(self.slow.load(Relaxed) + 1, Relaxed);
    }
}

/// The flusher's previous snapshot of one [`SiteCells`].
pub(crate) struct PrevCells {
    pub(crate) poll: Prev,
    pub(crate) sched: Prev,
    pub(crate) slow: u64,
}

impl PrevCells {
    pub(crate) fn new(cells: &SiteCells) -> Self {
        PrevCells { poll: Prev::new(&cells.poll), sched: Prev::new(&cells.sched), slow: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_midpoints_inside() {
        let mut last = 0;
        for v in (0..1_000_000u64).chain([HIGHEST_NS - 1, HIGHEST_NS]) {
            let i = index(v);
            assert!(i == last || i == last + 1 || v >= HIGHEST_NS - 1, "gap at {v}");
            last = i;
        }
        assert_eq!(HotHist::new(NANOS).buckets.len(), index(HIGHEST_NS) + 1);
        for v in [0u64, 1, 127, 128, 129, 1_000, 35_000, 20_000_000, HIGHEST_NS] {
            let m = midpoint(index(v));
            assert_eq!(index(m), index(v), "midpoint of the bucket of {v}");
            assert!((m as f64 - v as f64).abs() <= v as f64 / 32.0 + 1.0);
        }
    }

    #[test]
    fn drain_gives_interval_deltas() {
        let cells = HotHist::new(NANOS);
        let mut prev = Prev::new(&cells);
        for v in [100, 200, 20_000_000] {
            cells.record(v);
        }
        cells.record(HIGHEST_NS * 2);
        let mut acc = DistAcc::new();
        assert_eq!(cells.drain_into(&mut prev, &mut [&mut acc]), 4);
        assert_eq!(acc.count(), 4);
        assert_eq!(acc.outliers(), 1);
        assert_eq!(acc.max().as_nanos() as u64, HIGHEST_NS * 2);
        let mut acc2 = DistAcc::new();
        assert_eq!(cells.drain_into(&mut prev, &mut [&mut acc2]), 0);
        cells.record(5);
        assert_eq!(cells.drain_into(&mut prev, &mut [&mut acc2]), 1);
        assert_eq!(acc2.sum().as_nanos(), 5);
    }

    #[test]
    fn raw_units_are_scaled_to_nanoseconds_when_drained() {
        // Three units per nanosecond, like a 3 GHz TSC.
        let scale = NANOS / 3;
        let cells = HotHist::new(scale);
        assert!(cells.buckets.len() > index(HIGHEST_NS), "room for three times as many units");
        let mut prev = Prev::new(&cells);
        let ns = [40u64, 1_000, 35_000, 20_000_000];
        for v in ns {
            cells.record(v * 3);
        }
        // Past the ceiling as a number, under it in nanoseconds (40 s); and past it (80 s).
        cells.record(HIGHEST_NS * 2);
        cells.record(HIGHEST_NS * 4);
        let mut acc = DistAcc::new();
        assert_eq!(cells.drain_into(&mut prev, &mut [&mut acc]), 6);
        assert_eq!(acc.outliers(), 1, "the ceiling is {HIGHEST_NS} ns, not units");
        let max = acc.max().as_nanos() as u64;
        // The scale is a whole number of nanoseconds per 2^32 units: exact to about 1e-9.
        assert!(max.abs_diff(HIGHEST_NS * 4 / 3) <= 100, "max {max}");
        let sum = acc.sum().as_nanos() as u64;
        let want = ns.iter().sum::<u64>() + HIGHEST_NS * 6 / 3;
        assert!(sum.abs_diff(want) <= 100, "sum {sum} want {want}");
        let p75 = acc.quantile(0.75).as_nanos() as f64;
        let want = (HIGHEST_NS * 2 / 3) as f64;
        assert!((p75 - want).abs() <= want / 32.0, "40 s kept in the buckets: {p75}");
        for (q, v) in [(0.1, 40.0), (0.25, 1_000.0), (0.45, 35_000.0), (0.6, 20_000_000.0)] {
            let got = acc.quantile(q).as_nanos() as f64;
            assert!((got - v).abs() <= v / 32.0 + 1.0, "q{q}: {got} vs {v}");
        }
    }
}
