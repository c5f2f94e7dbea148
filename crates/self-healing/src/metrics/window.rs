//! One metric's window: the last `retentionSize` samples in a ring, and their statistics.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Statistics over a metric's window, as the seed's `getStats` returns them. Percentiles are
/// nearest-rank: `p95` is the smallest sample at least 95 % of the window is less than or equal to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The mean of the samples.
    pub avg: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// The median (nearest-rank).
    pub p50: f64,
    /// The 95th percentile (nearest-rank).
    pub p95: f64,
    /// The 99th percentile (nearest-rank).
    pub p99: f64,
    /// Samples in the window (at most `retentionSize`).
    pub count: usize,
    /// The most recent sample.
    pub last: f64,
}

/// A handle on one metric's window. Cheap to clone; recording through a handle skips the
/// collector's name lookup, for the hottest loops.
#[derive(Clone)]
pub struct Series {
    ring: Arc<Mutex<Ring>>,
}

struct Ring {
    values: Vec<f64>,
    next: usize,
    capacity: usize,
    /// Samples ever recorded, so a reader can tell whether a new one arrived.
    recorded: u64,
}

impl Series {
    pub(crate) fn new(capacity: usize) -> Self {
        Series {
            ring: Arc::new(Mutex::new(Ring {
                // Grows to `capacity` as samples arrive; never beyond.
                values: Vec::with_capacity(capacity.min(1024)),
                next: 0,
                capacity,
                recorded: 0,
            })),
        }
    }

    /// Adds a sample, evicting the oldest once the window is full. NaN is ignored.
    pub fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let mut ring = self.lock();
        let Ring {
            values,
            next,
            capacity,
            recorded,
        } = &mut *ring;
        *recorded += 1;
        if values.len() < *capacity {
            values.push(value);
        } else {
            values[*next] = value;
        }
        // A compare rather than `%`: a division costs more than the rest of this function.
        *next += 1;
        if *next == *capacity {
            *next = 0;
        }
    }

    /// Samples recorded since the series was created, including those since evicted.
    pub fn recorded(&self) -> u64 {
        self.lock().recorded
    }

    /// Samples in the window.
    pub fn len(&self) -> usize {
        self.lock().values.len()
    }

    /// True when the window holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most recent sample.
    pub fn last(&self) -> Option<f64> {
        self.lock().last()
    }

    /// The window's samples, oldest first.
    pub fn samples(&self) -> Vec<f64> {
        let ring = self.lock();
        if ring.values.len() < ring.capacity {
            return ring.values.clone();
        }
        let (newer, older) = ring.values.split_at(ring.next);
        older.iter().chain(newer).copied().collect()
    }

    /// Statistics over the window, `None` while it is empty.
    ///
    /// Computed under the window's lock straight from its samples: three passes (sums and
    /// bounds, counting, gathering), a few microseconds at retention 1000, during which
    /// recording waits. Copying the window out first cost more than that wait saved.
    pub fn stats(&self) -> Option<Stats> {
        let ring = self.lock();
        let last = ring.last()?;
        Some(stats_of(&ring.values, last))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ring {
    /// The most recent sample: the one before `next`, wrapping.
    fn last(&self) -> Option<f64> {
        let newest = (self.next + self.capacity - 1) % self.capacity;
        self.values.get(newest).copied()
    }
}

impl std::fmt::Debug for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Series").field("len", &self.len()).finish()
    }
}

/// Nearest-rank index of percentile `p` (0–1) among `n` sorted samples.
fn rank(p: f64, n: usize) -> usize {
    ((p * n as f64).ceil() as usize).clamp(1, n) - 1
}

/// Computes the statistics. The three percentiles come from one [`select_ranks`] rather than a
/// sort or comparison-based selections: counting into buckets has no data-dependent branch,
/// where a quickselect mispredicts about one comparison in two.
fn stats_of(values: &[f64], last: f64) -> Stats {
    let n = values.len();
    let (sum, min, max) = sum_and_bounds(values);
    // The bounds may hold either zero when both are there; widen the range to cover both.
    let lo = if min == 0.0 { -0.0 } else { min };
    let hi = if max == 0.0 { 0.0 } else { max };
    let ranks = [rank(0.50, n), rank(0.95, n), rank(0.99, n)];
    let mut found = [0; 3];
    select_ranks(values, (order_key(lo), order_key(hi)), &ranks, &mut found);
    Stats {
        avg: sum / n as f64,
        min,
        max,
        p50: from_order_key(found[0]),
        p95: from_order_key(found[1]),
        p99: from_order_key(found[2]),
        count: n,
        last,
    }
}

/// The sum, smallest and largest, in four lanes: one running sum would wait on each addition's
/// latency, and four lanes let the compiler use vector instructions.
fn sum_and_bounds(values: &[f64]) -> (f64, f64, f64) {
    let mut sums = [0.0; 4];
    let mut mins = [f64::INFINITY; 4];
    let mut maxs = [f64::NEG_INFINITY; 4];
    let mut chunks = values.chunks_exact(4);
    // Plain comparisons rather than `f64::min`, whose NaN rule keeps it out of vector
    // registers; the window holds no NaN.
    let smaller = |a: f64, b: f64| if a < b { a } else { b };
    let larger = |a: f64, b: f64| if a > b { a } else { b };
    for chunk in &mut chunks {
        for i in 0..4 {
            sums[i] += chunk[i];
            mins[i] = smaller(chunk[i], mins[i]);
            maxs[i] = larger(chunk[i], maxs[i]);
        }
    }
    for &v in chunks.remainder() {
        sums[0] += v;
        mins[0] = smaller(v, mins[0]);
        maxs[0] = larger(v, maxs[0]);
    }
    let fold = |lanes: [f64; 4], f: &dyn Fn(f64, f64) -> f64| {
        f(f(lanes[0], lanes[1]), f(lanes[2], lanes[3]))
    };
    (
        fold(sums, &|a, b| a + b),
        fold(mins, &smaller),
        fold(maxs, &larger),
    )
}

/// Something [`select_ranks`] can order: the window's floats at the first level, their order
/// keys below it.
trait Keyed: Copy {
    fn key(self) -> u64;
}

impl Keyed for f64 {
    fn key(self) -> u64 {
        order_key(self)
    }
}

impl Keyed for u64 {
    fn key(self) -> u64 {
        self
    }
}

/// Buckets per level of [`select_ranks`], as a power of two: about one per 16 keys, so a
/// window spread over a few octaves lands a few dozen keys per bucket, and walking the counts
/// costs less than a pass over the keys. At least 256, so a level always narrows the range
/// 128-fold; at most 65536, so the counts stay in cache.
fn bucket_bits(keys: usize) -> u32 {
    (usize::BITS - keys.leading_zeros())
        .saturating_sub(4)
        .clamp(8, 16)
}

/// Below this many keys, [`select_ranks`] sorts instead of bucketing.
const SORT_BELOW: usize = 64;

/// Finds the keys of rank `ranks[i]` (0-based, in ascending order; `ranks` sorted) into
/// `found[i]`, given bounds on the keys: an adaptive radix select. The range is cut into
/// [`bucket_bits`] buckets; one counting pass tells which bucket holds each rank; only those
/// buckets' keys are gathered, and the search goes on inside them, each level narrowing the
/// range at least 128-fold. Small sets are sorted. Work is linear in the keys whatever their
/// distribution: at most ten levels cover 64 bits. (Float keys are far from uniform: zero and
/// one lie 2^62 apart, and a window holding both needs a second level to tell 3 from 5.)
fn select_ranks<T: Keyed>(items: &[T], (lo, hi): (u64, u64), ranks: &[usize], found: &mut [u64]) {
    if lo == hi {
        found.fill(lo);
        return;
    }
    if items.len() < SORT_BELOW {
        let mut sorted: Vec<u64> = items.iter().map(|&item| item.key()).collect();
        sorted.sort_unstable();
        for (slot, &r) in found.iter_mut().zip(ranks) {
            *slot = sorted[r];
        }
        return;
    }
    let bits = bucket_bits(items.len());
    let shift = (u64::BITS - (hi - lo).leading_zeros()).saturating_sub(bits);
    let bucket = |key: u64| ((key - lo) >> shift) as usize;
    let buckets = 1 << bits;

    // Two interleaved histograms, so runs of keys in one bucket do not wait on each other's
    // increments.
    let mut lanes = vec![0u32; 2 * buckets];
    let (even, odd) = lanes.split_at_mut(buckets);
    let mut pairs = items.chunks_exact(2);
    for pair in &mut pairs {
        even[bucket(pair[0].key())] += 1;
        odd[bucket(pair[1].key())] += 1;
    }
    for &item in pairs.remainder() {
        even[bucket(item.key())] += 1;
    }
    let count = |b: usize| (even[b] + odd[b]) as usize;

    // Which bucket holds each rank, and how many keys lie below it; ranks that share a bucket
    // share a target.
    struct Target {
        bucket: usize,
        below: usize,
        ranks: std::ops::Range<usize>,
    }
    let mut targets: Vec<Target> = Vec::with_capacity(ranks.len());
    let (mut b, mut below) = (0, 0);
    for (i, &r) in ranks.iter().enumerate() {
        while below + count(b) <= r {
            below += count(b);
            b += 1;
        }
        match targets.last_mut() {
            Some(t) if t.bucket == b => t.ranks.end = i + 1,
            _ => targets.push(Target {
                bucket: b,
                below,
                ranks: i..i + 1,
            }),
        }
    }

    // Gather the targets' keys. Most keys belong to no target, so the branch on that is well
    // predicted and the pass costs a lookup a key.
    debug_assert!(targets.len() < usize::from(u8::MAX));
    let mut target_of = vec![0u8; buckets];
    for (i, t) in targets.iter().enumerate() {
        target_of[t.bucket] = i as u8 + 1;
    }
    let mut inside: Vec<Vec<u64>> = targets
        .iter()
        .map(|t| Vec::with_capacity(count(t.bucket)))
        .collect();
    for &item in items {
        let key = item.key();
        let t = target_of[bucket(key)];
        if t != 0 {
            inside[usize::from(t) - 1].push(key);
        }
    }
    for (t, keys) in targets.iter().zip(&inside) {
        let ranks: Vec<usize> = ranks[t.ranks.clone()].iter().map(|r| r - t.below).collect();
        select_ranks(keys, key_range(keys), &ranks, &mut found[t.ranks.clone()]);
    }
}

fn key_range(keys: &[u64]) -> (u64, u64) {
    keys.iter()
        .fold((u64::MAX, 0), |(lo, hi), &k| (lo.min(k), hi.max(k)))
}

/// A `u64` that orders as `f64::total_cmp` orders the float.
fn order_key(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn from_order_key(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(samples: &[f64]) -> Stats {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let at = |p: f64| sorted[((p * n as f64).ceil() as usize).max(1) - 1];
        Stats {
            avg: samples.iter().sum::<f64>() / n as f64,
            min: sorted[0],
            max: sorted[n - 1],
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            count: n,
            last: *samples.last().unwrap(),
        }
    }

    proptest! {
        // A fixed seed keeps the suite deterministic; change it to explore other cases.
        #![proptest_config(ProptestConfig {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_0001),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn stats_match_a_sorted_reference(
            samples in prop::collection::vec(-1e9f64..1e9, 1..3000),
            retention in 1usize..1500,
        ) {
            let series = Series::new(retention);
            for &s in &samples {
                series.record(s);
            }
            let window = &samples[samples.len().saturating_sub(retention)..];
            let got = series.stats().unwrap();
            let want = reference(window);
            prop_assert_eq!(got.count, want.count);
            prop_assert_eq!((got.min, got.max, got.last), (want.min, want.max, want.last));
            prop_assert_eq!((got.p50, got.p95, got.p99), (want.p50, want.p95, want.p99));
            prop_assert!((got.avg - want.avg).abs() <= 1e-6 * want.avg.abs().max(1.0));
            prop_assert_eq!(series.samples(), window.to_vec());
        }
    }

    #[test]
    fn select_ranks_matches_a_sort_on_awkward_windows() {
        let mut rng = fastrand::Rng::with_seed(7);
        let windows: Vec<(&str, Vec<f64>)> = vec![
            ("all equal", vec![3.5; 5000]),
            ("two values", (0..5000).map(|i| f64::from(i % 2)).collect()),
            (
                "a cluster and one far outlier",
                (0..5000)
                    .map(|i| {
                        if i == 17 {
                            1e300
                        } else {
                            1.0 + rng.f64() * 1e-9
                        }
                    })
                    .collect(),
            ),
            (
                "signed zeros, infinities and tiny values",
                (0..3000)
                    .map(|i| match i % 6 {
                        0 => -0.0,
                        1 => 0.0,
                        2 => f64::INFINITY,
                        3 => f64::NEG_INFINITY,
                        4 => f64::MIN_POSITIVE * rng.f64(),
                        _ => -rng.f64(),
                    })
                    .collect(),
            ),
            (
                "powers of two",
                (0..4000).map(|i| 2f64.powi(i % 200 - 100)).collect(),
            ),
            (
                "just over the sort cut-off",
                (0..65).map(f64::from).collect(),
            ),
        ];
        for (name, window) in windows {
            let keys: Vec<u64> = window.iter().map(|&v| order_key(v)).collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            let ranks: Vec<usize> = [0.0, 0.01, 0.5, 0.95, 0.99, 1.0]
                .iter()
                .map(|&p| rank(p, keys.len()))
                .collect();
            let mut found = vec![0; ranks.len()];
            select_ranks(&window, key_range(&keys), &ranks, &mut found);
            let want: Vec<u64> = ranks.iter().map(|&r| sorted[r]).collect();
            assert_eq!(found, want, "{name}");
        }
    }

    #[test]
    fn order_keys_order_as_total_cmp() {
        let values = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -0.0,
            0.0,
            1e-300,
            1.0,
            2.5,
            1e300,
            f64::INFINITY,
        ];
        for pair in values.windows(2) {
            assert!(order_key(pair[0]) < order_key(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(from_order_key(order_key(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn the_window_never_grows_past_retention() {
        let series = Series::new(1000);
        for i in 0..1_000_000 {
            series.record(i as f64);
        }
        let ring = series.lock();
        assert_eq!(ring.values.len(), 1000);
        assert!(
            ring.values.capacity() <= 2048,
            "capacity {}",
            ring.values.capacity()
        );
        drop(ring);
        let stats = series.stats().unwrap();
        assert_eq!(
            (stats.min, stats.max, stats.count),
            (999_000.0, 999_999.0, 1000)
        );
    }

    #[test]
    fn seed_example_shape() {
        let series = Series::new(10);
        assert!(series.stats().is_none());
        for v in [800.0, 1400.0, 2500.0, 1200.0] {
            series.record(v);
        }
        series.record(f64::NAN);
        let stats = series.stats().unwrap();
        assert_eq!(stats.count, 4);
        assert_eq!((stats.min, stats.max, stats.p50), (800.0, 2500.0, 1200.0));
        assert_eq!(stats.avg, 1475.0);
        assert_eq!(stats.last, 1200.0);
    }
}
