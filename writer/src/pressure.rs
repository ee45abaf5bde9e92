//! Indexing pressure: a bound on the bytes of write requests in flight on this writer.
//! Past it, new writes are rejected at once (429, the client retries) instead of queueing
//! until the process runs out of memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The budget shared by all write requests of a process.
#[derive(Debug)]
pub struct IndexingPressure {
    limit: usize,
    in_flight: AtomicUsize,
}

/// Bytes held by one request; released on drop.
#[derive(Debug)]
pub struct PressureGuard {
    pressure: Arc<IndexingPressure>,
    bytes: usize,
}

/// Why a write was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub in_flight: usize,
    pub requested: usize,
    pub limit: usize,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rejected execution of coordinating operation [coordinating_and_primary_bytes={}, replica_bytes=0, all_bytes={}, coordinating_operation_bytes={}, max_coordinating_and_primary_bytes={}]",
            self.in_flight, self.in_flight, self.requested, self.limit
        )
    }
}

impl IndexingPressure {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(IndexingPressure {
            limit,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// 10% of the machine's memory, between 64 MiB and 1 GiB (OpenSearch's default is 10%
    /// of the heap).
    pub fn default_limit() -> usize {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<usize>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(4 << 30);
        (total / 10).clamp(64 << 20, 1 << 30)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or rejects when the budget would be exceeded. A single request
    /// larger than the whole budget is admitted only when nothing else is in flight.
    pub fn try_acquire(self: &Arc<Self>, bytes: usize) -> Result<PressureGuard, Rejected> {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current > 0 && current + bytes > self.limit {
                return Err(Rejected {
                    in_flight: current,
                    requested: bytes,
                    limit: self.limit,
                });
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(PressureGuard {
                        pressure: self.clone(),
                        bytes,
                    })
                }
                Err(actual) => current = actual,
            }
        }
    }
}

impl Drop for PressureGuard {
    fn drop(&mut self) {
        self.pressure
            .in_flight
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_until_the_limit_then_rejects() {
        let p = IndexingPressure::new(100);
        let a = p.try_acquire(60).unwrap();
        assert!(p.try_acquire(50).is_err());
        let b = p.try_acquire(40).unwrap();
        assert_eq!(p.in_flight(), 100);
        drop(a);
        drop(b);
        assert_eq!(p.in_flight(), 0);
        // An oversized request alone is admitted (it is bounded by max_content_length).
        let big = p.try_acquire(500).unwrap();
        assert!(p.try_acquire(1).is_err());
        drop(big);
    }
}
