//! Bounded distributions of durations, kept as HdrHistograms.
//!
//! Every histogram loopscope keeps has the same explicit bounds: values from [`LOWEST_NS`] to
//! [`HIGHEST_NS`] nanoseconds at [`SIGNIFICANT_DIGITS`] significant digits. A value above the
//! ceiling is clamped into the top bucket *and* counted as an outlier, and its true size is kept
//! in the exact maximum, so nothing is silently lost and memory never depends on the data.
//!
//! [`Dist`] is the stored form (scalars plus the histogram in HdrHistogram's standard V2 encoding,
//! which any HdrHistogram implementation reads; the recording compresses whole frames, which packs
//! many similar histograms far better than compressing each alone); [`DistAcc`] is the in-memory
//! form used to record and merge. The decoder accepts the V2 deflate variant too.

use std::io::Read;
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use serde::{Deserialize, Serialize};

/// Lowest discernible value of every loopscope histogram, in nanoseconds.
pub const LOWEST_NS: u64 = 1;
/// Highest trackable value, in nanoseconds (60 s). Larger values are clamped and counted as outliers.
pub const HIGHEST_NS: u64 = 60_000_000_000;
/// Significant decimal digits kept by every histogram (relative error under 1%).
pub const SIGNIFICANT_DIGITS: u8 = 2;

/// The most bytes a decoded histogram may take; more means a hostile or corrupt input.
const MAX_DECODED_BYTES: u64 = 1 << 20;
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;

/// Why an encoded histogram could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DistError {
    /// The bytes are not a V2 (deflate) HdrHistogram.
    #[error("not an HdrHistogram V2 encoding: {0}")]
    Encoding(String),
    /// A valid histogram, but with other bounds than loopscope's.
    #[error(
        "histogram bounds {low}..={high} at {digits} digits, expected {LOWEST_NS}..={HIGHEST_NS} at {SIGNIFICANT_DIGITS}"
    )]
    Bounds {
        /// Encoded lowest discernible value.
        low: u64,
        /// Encoded highest trackable value.
        high: u64,
        /// Encoded significant digits.
        digits: u32,
    },
    /// The histogram's total disagrees with the stored count.
    #[error("histogram holds {actual} values but the record says {expected}")]
    CountMismatch {
        /// Count stored beside the histogram.
        expected: u64,
        /// Count found in the histogram.
        actual: u64,
    },
}

/// A stored distribution of durations in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dist {
    /// Number of values recorded.
    pub count: u64,
    /// Exact sum of the values, in nanoseconds (values above the ceiling counted at full size).
    pub sum_ns: u64,
    /// Exact largest value, in nanoseconds, even when it was above the ceiling.
    pub max_ns: u64,
    /// Values above [`HIGHEST_NS`], clamped into the histogram's top bucket.
    pub outliers: u64,
    /// The histogram in HdrHistogram V2 encoding; empty when `count` is 0.
    pub hdr: Vec<u8>,
}

impl Dist {
    /// The non-zero buckets as (lowest value of the bucket in ns, count), without building a
    /// whole histogram: the cheap way to add up many small distributions.
    pub fn buckets(&self) -> Result<Vec<(u64, u64)>, DistError> {
        if self.count == 0 && self.hdr.is_empty() {
            return Ok(Vec::new());
        }
        let buckets = if read_u32(&self.hdr, 0) == Some(V2_COOKIE) {
            sparse_v2(&self.hdr)?
        } else {
            let h = decode_histogram(&self.hdr)?;
            h.iter_recorded().map(|v| (h.lowest_equivalent(v.value_iterated_to()), v.count_at_value())).collect()
        };
        let total = buckets.iter().try_fold(0u64, |t, (_, n)| t.checked_add(*n));
        if total != Some(self.count) {
            return Err(DistError::CountMismatch { expected: self.count, actual: total.unwrap_or(u64::MAX) });
        }
        Ok(buckets)
    }

    /// Decodes into an accumulator, checking bounds and counts.
    pub fn decode(&self) -> Result<DistAcc, DistError> {
        let mut acc = DistAcc::new();
        acc.add_dist(self)?;
        Ok(acc)
    }
}

/// Bucket counts: only the non-empty buckets while there are few (a few bytes for the typical
/// distribution of one spawn site), a dense run of counts from the lowest bucket used to the
/// highest once there are many (a window's total, merged thousands of times, adds in place).
#[derive(Clone, Debug)]
enum Counts {
    /// (HdrHistogram counts index, count), by index, none zero.
    Sparse(Vec<(u32, u64)>),
    /// Counts of the buckets from index `base` on.
    Dense { base: u32, counts: Vec<u64> },
}

impl Default for Counts {
    fn default() -> Self {
        Counts::Sparse(Vec::new())
    }
}

/// Non-empty buckets beyond which counts are kept dense.
const SPARSE_MAX: usize = 48;

impl Counts {
    fn iter(&self) -> Box<dyn Iterator<Item = (u32, u64)> + '_> {
        match self {
            Counts::Sparse(v) => Box::new(v.iter().copied()),
            Counts::Dense { base, counts } => {
                Box::new(counts.iter().enumerate().filter(|(_, n)| **n > 0).map(move |(k, n)| (base + k as u32, *n)))
            }
        }
    }

    fn densify(&mut self) {
        if let Counts::Sparse(v) = self
            && v.len() > SPARSE_MAX
        {
            let (lo, hi) = (v[0].0, v[v.len() - 1].0);
            let mut counts = vec![0u64; (hi - lo + 1) as usize];
            for &(i, n) in v.iter() {
                counts[(i - lo) as usize] = n;
            }
            *self = Counts::Dense { base: lo, counts };
        }
    }

    fn add(&mut self, index: u32, n: u64) {
        match self {
            Counts::Sparse(v) => {
                match v.last_mut() {
                    Some((last, c)) if *last == index => *c = c.saturating_add(n),
                    Some((last, _)) if *last < index => v.push((index, n)),
                    None => v.push((index, n)),
                    _ => match v.binary_search_by_key(&index, |(i, _)| *i) {
                        Ok(at) => v[at].1 = v[at].1.saturating_add(n),
                        Err(at) => v.insert(at, (index, n)),
                    },
                }
                self.densify();
            }
            Counts::Dense { base, counts } => {
                Self::reserve(base, counts, index, index.max(*base));
                let at = (index - *base) as usize;
                counts[at] = counts[at].saturating_add(n);
            }
        }
    }

    /// Makes room in a dense run for the buckets `lo..=hi`.
    fn reserve(base: &mut u32, counts: &mut Vec<u64>, lo: u32, hi: u32) {
        if counts.is_empty() {
            *base = lo;
        }
        if lo < *base {
            counts.splice(0..0, std::iter::repeat_n(0, (*base - lo) as usize));
            *base = lo;
        }
        if (hi - *base) as usize >= counts.len() {
            counts.resize((hi - *base) as usize + 1, 0);
        }
    }

    /// Adds buckets given in increasing index order.
    fn merge(&mut self, other: &[(u32, u64)]) {
        let (Some(first), Some(last)) = (other.first(), other.last()) else { return };
        if let Counts::Sparse(v) = self {
            if v.len() + other.len() <= SPARSE_MAX {
                let mut pos = 0;
                for &(i, n) in other {
                    pos += v[pos..].partition_point(|(j, _)| *j < i);
                    match v.get_mut(pos) {
                        Some((j, c)) if *j == i => *c = c.saturating_add(n),
                        _ => v.insert(pos, (i, n)),
                    }
                    pos += 1;
                }
                return;
            }
            let mut counts = Vec::new();
            let mut base = 0;
            if let (Some(a), Some(b)) = (v.first(), v.last()) {
                Self::reserve(&mut base, &mut counts, a.0, b.0);
                for &(i, n) in v.iter() {
                    counts[(i - base) as usize] = n;
                }
            }
            *self = Counts::Dense { base, counts };
        }
        if let Counts::Dense { base, counts } = self {
            Self::reserve(base, counts, first.0, last.0);
            for &(i, n) in other {
                let c = &mut counts[(i - *base) as usize];
                *c = c.saturating_add(n);
            }
        }
    }
}

impl PartialEq for Counts {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Counts {}

/// A distribution being recorded or merged in memory.
///
/// Only the buckets that hold values are kept, so a distribution costs memory in proportion to
/// how spread its values are (a few dozen buckets for most spawn sites), never the ~30 KB of a
/// whole HdrHistogram with loopscope's bounds: a reader or recorder holding one per spawn site
/// and worker stays small. It behaves as an HdrHistogram with loopscope's bounds (same buckets,
/// same quantiles) and encodes to the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DistAcc {
    count: u64,
    sum_ns: u64,
    max_ns: u64,
    outliers: u64,
    buckets: Counts,
}

/// A new empty histogram with loopscope's bounds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS).expect("constant histogram bounds are valid")
}

impl DistAcc {
    /// An empty distribution.
    pub fn new() -> Self {
        DistAcc::default()
    }

    /// Records one value.
    pub fn record(&mut self, value: Duration) {
        self.record_n_ns(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX), 1);
    }

    /// Records `n` occurrences of `value_ns` nanoseconds.
    pub fn record_n_ns(&mut self, value_ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.count += n;
        self.sum_ns = self.sum_ns.saturating_add(value_ns.saturating_mul(n));
        self.max_ns = self.max_ns.max(value_ns);
        if value_ns > HIGHEST_NS {
            self.outliers += n;
        }
        self.add_to_bucket(value_ns, n);
    }

    fn add_to_bucket(&mut self, value_ns: u64, n: u64) {
        self.buckets.add(bucket_index(value_ns.clamp(LOWEST_NS, HIGHEST_NS)) as u32, n);
    }

    /// Adds pre-aggregated values: `n` values that went into one bucket whose lowest value is
    /// `bucket_value_ns`, used by the recorder when it converts its own lock-free buckets.
    pub fn record_bucket(&mut self, bucket_value_ns: u64, n: u64) {
        if n > 0 {
            self.add_to_bucket(bucket_value_ns, n);
        }
    }

    /// Sets the exact scalars that accompany buckets added with [`DistAcc::record_bucket`].
    pub fn add_scalars(&mut self, count: u64, sum_ns: u64, max_ns: u64, outliers: u64) {
        self.count += count;
        self.sum_ns = self.sum_ns.saturating_add(sum_ns);
        self.max_ns = self.max_ns.max(max_ns);
        self.outliers += outliers;
    }

    /// Merges another distribution into this one.
    pub fn add(&mut self, other: &DistAcc) {
        self.add_scalars(other.count, other.sum_ns, other.max_ns, other.outliers);
        let theirs: Vec<(u32, u64)> = other.buckets.iter().collect();
        self.buckets.merge(&theirs);
    }

    /// Merges a stored distribution whose buckets were decoded already (`d.buckets()`), so that a
    /// reader adding one stored distribution to several accumulators decodes it once.
    pub fn add_decoded(&mut self, d: &Dist, buckets: &[(u64, u64)]) {
        self.add_scalars(d.count, d.sum_ns, d.max_ns, d.outliers);
        let indexed: Vec<(u32, u64)> =
            buckets.iter().filter(|(_, n)| *n > 0).map(|&(v, n)| (bucket_index(v) as u32, n)).collect();
        self.buckets.merge(&indexed);
    }

    /// Merges a stored distribution into this one.
    pub fn add_dist(&mut self, d: &Dist) -> Result<(), DistError> {
        if d.count == 0 && d.hdr.is_empty() {
            return Ok(());
        }
        // The non-zero buckets only: no whole histogram is built for each stored one.
        let buckets = d.buckets()?;
        self.add_scalars(d.count, d.sum_ns, d.max_ns, d.outliers);
        let indexed: Vec<(u32, u64)> =
            buckets.into_iter().filter(|(_, n)| *n > 0).map(|(v, n)| (bucket_index(v) as u32, n)).collect();
        self.buckets.merge(&indexed);
        Ok(())
    }

    /// Encodes into the stored form (HdrHistogram V2: the same bytes as `hdrhistogram`'s own
    /// serializer writes for the same histogram).
    pub fn to_dist(&self) -> Dist {
        let hdr = if self.count > 0 { encode_v2(self.buckets.iter()) } else { Vec::new() };
        Dist { count: self.count, sum_ns: self.sum_ns, max_ns: self.max_ns, outliers: self.outliers, hdr }
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact sum of all values.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// Exact maximum.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// Values that were above the ceiling.
    pub fn outliers(&self) -> u64 {
        self.outliers
    }

    /// The non-empty buckets as (lowest value of the bucket in ns, count), in increasing order.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets.iter().map(|(i, n)| (value_from_index(u64::from(i)), n))
    }

    /// The values as a whole HdrHistogram (clamped to the ceiling), for tools that take one.
    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for (v, n) in self.buckets() {
            h.saturating_record_n(v, n);
        }
        h
    }

    /// The value at quantile `q` (0.0..=1.0), never above the exact maximum: the highest value
    /// of the bucket where the cumulative count reaches `q` of the values, as HdrHistogram gives it.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let q = q.min(1.0);
        let total: u64 = self.buckets.iter().map(|(_, n)| n).sum();
        let target = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        let mut value = 0;
        for (i, n) in self.buckets.iter() {
            seen += n;
            value = value_from_index(u64::from(i));
            if seen >= target {
                break;
            }
        }
        let value = if q == 0.0 { value } else { highest_equivalent(value) };
        Duration::from_nanos(value.min(self.max_ns))
    }

    /// Number of values strictly above `threshold` (bucket resolution).
    pub fn count_above(&self, threshold: Duration) -> u64 {
        let t = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
        self.buckets().filter(|(v, _)| highest_equivalent(*v) > t).map(|(_, n)| n).sum()
    }

    /// Number of values in the buckets from the one holding `low` to the one holding `high`.
    pub fn count_between(&self, low: u64, high: u64) -> u64 {
        let lo = bucket_index(low.clamp(LOWEST_NS, HIGHEST_NS)) as u32;
        let hi = bucket_index(high.clamp(LOWEST_NS, HIGHEST_NS)) as u32;
        self.buckets.iter().filter(|(i, _)| (lo..=hi).contains(i)).map(|(_, n)| n).sum()
    }

    /// The standard percentile summary (one pass over the buckets for every percentile).
    pub fn summary(&self) -> Summary {
        let qs = [0.50, 0.90, 0.99, 0.999];
        let mut at = [Duration::ZERO; 4];
        if self.count > 0 {
            let total: u64 = self.buckets.iter().map(|(_, n)| n).sum();
            let targets = qs.map(|q: f64| ((q * total as f64).ceil() as u64).max(1));
            let (mut seen, mut next) = (0u64, 0usize);
            for (i, n) in self.buckets.iter() {
                seen += n;
                while next < targets.len() && seen >= targets[next] {
                    let v = highest_equivalent(value_from_index(u64::from(i)));
                    at[next] = Duration::from_nanos(v.min(self.max_ns));
                    next += 1;
                }
                if next == targets.len() {
                    break;
                }
            }
        }
        Summary {
            count: self.count,
            mean: Duration::from_nanos(self.sum_ns.checked_div(self.count).unwrap_or(0)),
            p50: at[0],
            p90: at[1],
            p99: at[2],
            p999: at[3],
            max: self.max(),
        }
    }
}

/// HdrHistogram's V2 encoding of sparse buckets: the header, then zig-zag LEB128 counts from index
/// 0 to the last non-empty one, a run of more than one empty bucket written as its negated length.
fn encode_v2(buckets: impl Iterator<Item = (u32, u64)>) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut put = |v: i64| {
        let mut x = ((v << 1) ^ (v >> 63)) as u64;
        for i in 0..9 {
            if i == 8 {
                payload.push(x as u8);
                return;
            }
            let more = x >> 7 != 0;
            payload.push((x as u8 & 0x7f) | if more { 0x80 } else { 0 });
            x >>= 7;
            if !more {
                return;
            }
        }
    };
    let mut next = 0u32;
    let mut any = false;
    for (i, n) in buckets {
        any = true;
        match i - next {
            0 => {}
            1 => put(0),
            gap => put(-i64::from(gap)),
        }
        put(i64::try_from(n).unwrap_or(i64::MAX));
        next = i + 1;
    }
    if !any {
        put(0);
    }
    let mut out = Vec::with_capacity(40 + payload.len());
    out.extend_from_slice(&V2_COOKIE.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&u32::from(SIGNIFICANT_DIGITS).to_be_bytes());
    out.extend_from_slice(&LOWEST_NS.to_be_bytes());
    out.extend_from_slice(&HIGHEST_NS.to_be_bytes());
    out.extend_from_slice(&1f64.to_bits().to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Percentiles of a distribution, as reports show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub count: u64,
    /// Mean (exact).
    #[serde(rename = "mean_ns", with = "crate::units::duration_ns")]
    pub mean: Duration,
    /// Median.
    #[serde(rename = "p50_ns", with = "crate::units::duration_ns")]
    pub p50: Duration,
    /// 90th percentile.
    #[serde(rename = "p90_ns", with = "crate::units::duration_ns")]
    pub p90: Duration,
    /// 99th percentile.
    #[serde(rename = "p99_ns", with = "crate::units::duration_ns")]
    pub p99: Duration,
    /// 99.9th percentile.
    #[serde(rename = "p999_ns", with = "crate::units::duration_ns")]
    pub p999: Duration,
    /// Exact maximum.
    #[serde(rename = "max_ns", with = "crate::units::duration_ns")]
    pub max: Duration,
}

/// Decodes a V2 or V2-deflate HdrHistogram, refusing encodings that are oversized or that use other
/// bounds than loopscope's (so hostile input cannot make the decoder allocate without limit).
pub fn decode_histogram(bytes: &[u8]) -> Result<Histogram<u64>, DistError> {
    let bad = |what: &str| DistError::Encoding(what.to_string());
    let cookie = read_u32(bytes, 0).ok_or_else(|| bad("shorter than its cookie"))?;
    let plain: Vec<u8> = match cookie {
        V2_COOKIE => bytes.to_vec(),
        V2_DEFLATE_COOKIE => {
            let len = read_u32(bytes, 4).ok_or_else(|| bad("missing compressed length"))? as usize;
            let body = bytes.get(8..8 + len).ok_or_else(|| bad("compressed length beyond the data"))?;
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(body)
                .take(MAX_DECODED_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| DistError::Encoding(format!("deflate: {e}")))?;
            if out.len() as u64 > MAX_DECODED_BYTES {
                return Err(bad("decompresses to more than 1 MiB"));
            }
            out
        }
        _ => return Err(bad("unknown cookie")),
    };
    if read_u32(&plain, 0) != Some(V2_COOKIE) {
        return Err(bad("inner cookie is not V2"));
    }
    let payload_len = read_u32(&plain, 4).ok_or_else(|| bad("missing payload length"))? as usize;
    let digits = read_u32(&plain, 12).ok_or_else(|| bad("missing digits"))?;
    let low = read_u64(&plain, 16).ok_or_else(|| bad("missing lowest value"))?;
    let high = read_u64(&plain, 24).ok_or_else(|| bad("missing highest value"))?;
    if low != LOWEST_NS || high != HIGHEST_NS || digits != u32::from(SIGNIFICANT_DIGITS) {
        return Err(DistError::Bounds { low, high, digits });
    }
    if plain.len() < 40 + payload_len {
        return Err(bad("payload length beyond the data"));
    }
    Deserializer::new().deserialize(&mut &plain[..]).map_err(|e| DistError::Encoding(format!("{e:?}")))
}

/// Bucket layout of loopscope's histograms (lowest 1 ns, 2 significant digits): each bucket
/// after the first holds 128 sub-buckets (256 slots, the lower half shared with the previous
/// bucket), as HdrHistogram lays them out.
const SUB_BUCKET_HALF_MAGNITUDE: u32 = 7;
const SUB_BUCKET_HALF: u64 = 1 << SUB_BUCKET_HALF_MAGNITUDE;

/// Length of the counts array of loopscope's histograms: the buckets up to the one that holds
/// [`HIGHEST_NS`] (HdrHistogram's layout).
const COUNTS_LEN: u64 = {
    let mut buckets = 1u64;
    let mut smallest_untrackable = SUB_BUCKET_HALF * 2;
    while smallest_untrackable <= HIGHEST_NS {
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    (buckets + 1) * SUB_BUCKET_HALF
};

/// The highest value counted in the same bucket as `value` (what HdrHistogram reports for a
/// quantile that falls in that bucket).
pub fn highest_equivalent(value: u64) -> u64 {
    let shift = (63 - value.max(1).leading_zeros()).saturating_sub(SUB_BUCKET_HALF_MAGNITUDE);
    (value >> shift << shift) + (1u64 << shift) - 1
}

/// Index of the bucket that counts `value` in loopscope's histograms (dense from 0; values up to
/// the highest trackable one have indices below 5,000).
pub fn bucket_index(value: u64) -> usize {
    let shift = (63 - value.max(1).leading_zeros()).saturating_sub(SUB_BUCKET_HALF_MAGNITUDE);
    ((u64::from(shift) << SUB_BUCKET_HALF_MAGNITUDE) + (value >> shift)) as usize
}

/// The lowest value counted in the bucket at `index` (the inverse of [`bucket_index`]).
pub fn bucket_value(index: usize) -> u64 {
    value_from_index(index as u64)
}

/// The lowest value counted at index `i` of the counts array.
fn value_from_index(i: u64) -> u64 {
    let bucket = (i >> SUB_BUCKET_HALF_MAGNITUDE).checked_sub(1);
    let sub = (i & (SUB_BUCKET_HALF - 1)) + SUB_BUCKET_HALF;
    match bucket {
        None => sub - SUB_BUCKET_HALF,
        Some(b) => sub << b,
    }
}

/// The non-zero buckets of a V2-encoded histogram (as written by [`DistAcc::to_dist`]), as
/// (lowest value of the bucket, count), with the same checks as [`decode_histogram`].
fn sparse_v2(plain: &[u8]) -> Result<Vec<(u64, u64)>, DistError> {
    let bad = |what: &str| DistError::Encoding(what.to_string());
    let payload_len = read_u32(plain, 4).ok_or_else(|| bad("missing payload length"))? as usize;
    let digits = read_u32(plain, 12).ok_or_else(|| bad("missing digits"))?;
    let low = read_u64(plain, 16).ok_or_else(|| bad("missing lowest value"))?;
    let high = read_u64(plain, 24).ok_or_else(|| bad("missing highest value"))?;
    if low != LOWEST_NS || high != HIGHEST_NS || digits != u32::from(SIGNIFICANT_DIGITS) {
        return Err(DistError::Bounds { low, high, digits });
    }
    let payload = plain.get(40..40 + payload_len).ok_or_else(|| bad("payload length beyond the data"))?;
    let mut out = Vec::new();
    let (mut index, mut pos) = (0u64, 0usize);
    while pos < payload.len() {
        let (raw, used) = read_varint(&payload[pos..]).ok_or_else(|| bad("truncated count"))?;
        pos += used;
        let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        if v < 0 {
            index = index.checked_add(v.unsigned_abs()).ok_or_else(|| bad("zero run overflows"))?;
            continue;
        }
        if v > 0 {
            if index >= COUNTS_LEN {
                return Err(bad("a count beyond the highest trackable value"));
            }
            out.push((value_from_index(index), v as u64));
        }
        index = index.checked_add(1).ok_or_else(|| bad("zero run overflows"))?;
    }
    Ok(out)
}

/// HdrHistogram's LEB128 variant: up to 8 bytes of 7 bits, a 9th of 8 bits.
fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().take(9).enumerate() {
        if i == 8 {
            return Some((v | (u64::from(*byte) << 56), 9));
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_are_clamped_counted_and_max_kept() {
        let mut d = DistAcc::new();
        d.record(Duration::from_millis(5));
        d.record(Duration::from_secs(120));
        assert_eq!(d.count(), 2);
        assert_eq!(d.outliers(), 1);
        assert_eq!(d.max(), Duration::from_secs(120));
        assert!(d.quantile(1.0) >= Duration::from_secs(59));
        assert_eq!(d.to_histogram().len(), 2);
    }

    #[test]
    fn the_sparse_accumulator_behaves_and_encodes_as_hdrhistogram() {
        use hdrhistogram::serialization::{Serializer, V2Serializer};
        let mut d = DistAcc::new();
        let mut h = new_histogram();
        let mut x = 7u64;
        for i in 0..20_000u64 {
            // Values spread over the whole range, out of order, some repeated.
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = (x >> 20) % (HIGHEST_NS / (1 + i % 1000)) + 1;
            d.record_n_ns(v, 1 + i % 3);
            h.record_n(v, 1 + i % 3).unwrap();
        }
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(d.quantile(q).as_nanos() as u64, h.value_at_quantile(q).min(d.max_ns), "q {q}");
        }
        let s = d.summary();
        assert_eq!(
            (s.p50, s.p90, s.p99, s.p999),
            (d.quantile(0.5), d.quantile(0.9), d.quantile(0.99), d.quantile(0.999))
        );
        assert_eq!(d.count_between(0, 1_000_000), h.count_between(0, 1_000_000));
        let above: u64 =
            h.iter_recorded().filter(|v| v.value_iterated_to() > 3_000_000).map(|v| v.count_at_value()).sum();
        assert_eq!(d.count_above(Duration::from_millis(3)), above);
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&h, &mut bytes).unwrap();
        assert_eq!(d.to_dist().hdr, bytes, "the same encoding as hdrhistogram's");
        assert_eq!(d.to_histogram(), h);
        // Merging two halves gives the whole.
        let (mut a, mut b) = (DistAcc::new(), DistAcc::new());
        for (k, (v, n)) in d.buckets().enumerate() {
            if k % 2 == 0 { a.record_bucket(v, n) } else { b.record_bucket(v, n) }
        }
        a.add(&b);
        assert_eq!(a.buckets().collect::<Vec<_>>(), d.buckets().collect::<Vec<_>>());
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut d = DistAcc::new();
        for i in 1..10_000u64 {
            d.record_n_ns(i * 37, 1 + i % 3);
        }
        let back = d.to_dist().decode().unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn the_sparse_decoder_agrees_with_hdrhistogram_everywhere() {
        // Values across the whole range, including every bucket boundary region and the ceiling.
        let mut d = DistAcc::new();
        let mut x = 1u64;
        while x < HIGHEST_NS {
            for v in [x.saturating_sub(1).max(1), x, x + 1, x + x / 3] {
                d.record_n_ns(v, 1 + v % 7);
            }
            x = x * 3 / 2 + 1;
        }
        d.record_n_ns(HIGHEST_NS, 2);
        d.record_n_ns(HIGHEST_NS * 3, 1);
        let stored = d.to_dist();
        let slow = decode_histogram(&stored.hdr).unwrap();
        let mut fast = DistAcc::new();
        fast.add_dist(&stored).unwrap();
        assert_eq!(fast.to_histogram(), slow);
        assert_eq!(fast, d);
    }

    #[test]
    fn bucket_indices_round_trip() {
        let h = new_histogram();
        for v in [1u64, 2, 127, 128, 255, 256, 257, 511, 512, 1_000, 30_303_030, 59_999_999_999] {
            let i = bucket_index(v);
            assert_eq!(bucket_value(i), h.lowest_equivalent(v), "{v}");
            assert_eq!(bucket_index(bucket_value(i)), i);
            assert_eq!(bucket_index(h.highest_equivalent(v)), i, "{v}");
        }
        assert!(bucket_index(HIGHEST_NS) < 5_000);
    }

    #[test]
    fn the_counts_length_matches_hdrhistogram_and_overflows_are_errors() {
        assert_eq!(COUNTS_LEN as usize, new_histogram().distinct_values());
        // A zero run of 2^63, another of 2^63 - 1, then a count: the index would wrap.
        let zigzag = |v: i64| ((v << 1) ^ (v >> 63)) as u64;
        let mut payload = Vec::new();
        for v in [i64::MIN + 1, i64::MIN + 2, 0, 5] {
            let mut x = zigzag(v);
            for i in 0..9 {
                if i == 8 {
                    payload.push(x as u8);
                    break;
                }
                let more = x >> 7 != 0;
                payload.push((x as u8 & 0x7f) | if more { 0x80 } else { 0 });
                x >>= 7;
                if !more {
                    break;
                }
            }
        }
        let mut hdr = d_header(payload.len());
        hdr.extend_from_slice(&payload);
        assert!(sparse_v2(&hdr).is_err());
        // A count one past the last bucket.
        let mut hdr2 = d_header(0);
        let mut p = Vec::new();
        let mut x = zigzag(-(COUNTS_LEN as i64));
        while x >= 0x80 {
            p.push((x as u8 & 0x7f) | 0x80);
            x >>= 7;
        }
        p.push(x as u8);
        p.push(zigzag(1) as u8);
        hdr2[4..8].copy_from_slice(&(p.len() as u32).to_be_bytes());
        hdr2.extend_from_slice(&p);
        assert!(sparse_v2(&hdr2).is_err());
    }

    /// A V2 header with loopscope's bounds and a payload of `len` bytes.
    fn d_header(len: usize) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&V2_COOKIE.to_be_bytes());
        h.extend_from_slice(&(len as u32).to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        h.extend_from_slice(&u32::from(SIGNIFICANT_DIGITS).to_be_bytes());
        h.extend_from_slice(&LOWEST_NS.to_be_bytes());
        h.extend_from_slice(&HIGHEST_NS.to_be_bytes());
        h.extend_from_slice(&1f64.to_bits().to_be_bytes());
        h
    }

    #[test]
    fn highest_equivalent_values_match_hdrhistogram() {
        let h = new_histogram();
        for v in [1, 2, 127, 128, 255, 256, 257, 1_000, 30_303_030, 59_999_999_999] {
            assert_eq!(highest_equivalent(v), h.highest_equivalent(v), "{v}");
        }
    }

    #[test]
    fn a_damaged_encoding_leaves_the_accumulator_untouched() {
        let mut src = DistAcc::new();
        for i in 1..500u64 {
            src.record_n_ns(i * 1_013, i);
        }
        let good = src.to_dist();
        let mut acc = DistAcc::new();
        acc.record_n_ns(77, 1);
        let before = acc.clone();
        for cut in 0..good.hdr.len() {
            let mut bad = good.clone();
            bad.hdr.truncate(cut);
            assert!(acc.add_dist(&bad).is_err(), "cut at {cut}");
            assert_eq!(acc, before, "cut at {cut}");
        }
        for at in 40..good.hdr.len() {
            let mut bad = good.clone();
            bad.hdr[at] ^= 0xff;
            // Any outcome but a panic; on error nothing was added.
            if acc.clone().add_dist(&bad).is_err() {
                let mut a = acc.clone();
                let _ = a.add_dist(&bad);
                assert_eq!(a, before);
            }
        }
    }

    #[test]
    fn hostile_encodings_are_refused() {
        use hdrhistogram::serialization::Serializer;
        assert!(decode_histogram(b"").is_err());
        assert!(decode_histogram(b"garbage bytes here").is_err());
        let mut other = Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, 5).unwrap();
        other.record(3).unwrap();
        let mut enc = Vec::new();
        hdrhistogram::serialization::V2DeflateSerializer::new().serialize(&other, &mut enc).unwrap();
        assert!(matches!(decode_histogram(&enc), Err(DistError::Bounds { .. })));
        // A valid encoding with a count that disagrees is refused too.
        let mut d = DistAcc::new().to_dist();
        let mut acc = DistAcc::new();
        acc.record_n_ns(10, 3);
        d.hdr = acc.to_dist().hdr;
        d.count = 4;
        assert!(matches!(d.decode(), Err(DistError::CountMismatch { .. })));
    }
}
