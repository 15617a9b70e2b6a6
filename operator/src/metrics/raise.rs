//! Counters that mirror absolute totals kept elsewhere (the relay's index): raised to the total,
//! never lowered, as a Prometheus counter only goes up.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{PoolLabels, PoolValueLabels};

/// Raises a counter to an absolute total kept elsewhere (the relay's index); never lowers it.
pub(crate) fn raise_to(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// [`raise_to`] for a counter of seconds.
pub(crate) fn raise_to_f64(counter: &Counter<f64, std::sync::atomic::AtomicU64>, total: f64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// Raises the pool's series of `family` to `totals`, the n-th value's series to the n-th total.
pub(crate) fn raise_each<L: PoolValueLabels, const N: usize>(
    family: &Family<L, Counter>,
    pool: &PoolLabels,
    values: [&'static str; N],
    totals: [u64; N],
) {
    for (value, total) in values.into_iter().zip(totals) {
        raise_to(&family.get_or_create(&L::of(pool, value)), total);
    }
}
