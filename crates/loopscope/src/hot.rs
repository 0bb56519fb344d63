//! The hot path's storage: lock-free, single-writer histograms.
//!
//! Each (thread, spawn site) pair owns a [`SiteCells`]. Only the thread that owns it writes to it,
//! with plain relaxed loads and stores (no read-modify-write instruction, no lock, no
//! allocation); the flusher thread reads the same atomics and keeps its own copy of the previous
//! counts, so an interval's figures are the difference of two snapshots. Counters are cumulative
//! and wrap; differences are taken with wrapping arithmetic, which is exact as long as fewer than
//! 2^32 values land in one bucket within one interval.
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

/// Number of buckets needed up to the ceiling.
pub(crate) const LEN: usize = {
    let v = HIGHEST_NS;
    let b = LZ_BASE - (v | (2 * SUB_HALF as u64 - 1)).leading_zeros();
    ((b as usize) << SUB_HALF_MAG) + (v >> b) as usize + 1
};

/// Midpoint of bucket `i`, the value it contributes to the standard histogram.
fn midpoint(i: usize) -> u64 {
    if i < 2 * SUB_HALF {
        return i as u64;
    }
    let b = (i >> SUB_HALF_MAG) - 1;
    let sub = ((i & (SUB_HALF - 1)) + SUB_HALF) as u64;
    (sub << b) + ((1u64 << b) >> 1)
}

/// One lock-free histogram with its exact scalars.
pub(crate) struct HotHist {
    buckets: Box<[AtomicU32]>,
    sum: AtomicU64,
    max: AtomicU64,
    outliers: AtomicU64,
}

/// The flusher's copy of a [`HotHist`] at the previous snapshot.
pub(crate) struct Prev {
    buckets: Box<[u32]>,
    sum: u64,
    outliers: u64,
}

impl HotHist {
    fn new() -> Self {
        HotHist {
            buckets: (0..LEN).map(|_| AtomicU32::new(0)).collect(),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
            outliers: AtomicU64::new(0),
        }
    }

    /// Records one value. Only the owning thread may call this.
    #[inline(always)]
    pub(crate) fn record(&self, ns: u64) {
        let clamped = if ns > HIGHEST_NS {
            self.outliers.store(self.outliers.load(Relaxed) + 1, Relaxed);
            HIGHEST_NS
        } else {
            ns
        };
        if let Some(b) = self.buckets.get(index(clamped)) {
            b.store(b.load(Relaxed).wrapping_add(1), Relaxed);
        }
        self.sum.store(self.sum.load(Relaxed).wrapping_add(ns), Relaxed);
        if ns > self.max.load(Relaxed) {
            self.max.store(ns, Relaxed);
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
                for acc in into.iter_mut() {
                    acc.record_bucket(midpoint(i), u64::from(d));
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
        let max = self.max.swap(0, Relaxed);
        let (dsum, dout) = (sum.wrapping_sub(prev.sum), outliers.wrapping_sub(prev.outliers));
        prev.sum = sum;
        prev.outliers = outliers;
        for acc in into.iter_mut() {
            acc.add_scalars(count, dsum, max, dout);
        }
        count
    }
}

impl Prev {
    fn new() -> Self {
        Prev { buckets: vec![0; LEN].into_boxed_slice(), sum: 0, outliers: 0 }
    }
}

/// What one thread records for one spawn site.
pub(crate) struct SiteCells {
    pub(crate) poll: HotHist,
    pub(crate) sched: HotHist,
    pub(crate) slow: AtomicU64,
}

impl SiteCells {
    pub(crate) fn new() -> Self {
        SiteCells { poll: HotHist::new(), sched: HotHist::new(), slow: AtomicU64::new(0) }
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
    pub(crate) fn new() -> Self {
        PrevCells { poll: Prev::new(), sched: Prev::new(), slow: 0 }
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
            assert!(i < LEN);
        }
        assert_eq!(index(HIGHEST_NS), LEN - 1);
        for v in [0u64, 1, 127, 128, 129, 1_000, 35_000, 20_000_000, HIGHEST_NS] {
            let m = midpoint(index(v));
            assert_eq!(index(m), index(v), "midpoint of the bucket of {v}");
            assert!((m as f64 - v as f64).abs() <= v as f64 / 32.0 + 1.0);
        }
    }

    #[test]
    fn drain_gives_interval_deltas() {
        let cells = HotHist::new();
        let mut prev = Prev::new();
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
}
