//! The SQL server's memory limits: one for each query and one for all running queries
//! together, each named in the error of a query that would pass it.
//!
//! Every query gets a [`QueryPool`] of its own, which counts the bytes that query reserves
//! and takes the same bytes from the [`ServerPool`] shared by all queries. A reservation is
//! granted only when both limits allow it; a refused one changes neither count.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
    TrackConsumersPool,
};

/// The two limits, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Memory limit of one query.
    pub per_query_mib: usize,
    /// Memory limit of all running queries together.
    pub total_mib: usize,
}

/// The pool shared by every query of the server, at most `total_mib` MiB.
#[derive(Debug)]
pub struct ServerPool {
    inner: TrackConsumersPool<GreedyMemoryPool>,
    total_mib: usize,
}

impl ServerPool {
    /// Creates the pool; `total_mib` must be at least 1.
    pub fn new(total_mib: usize) -> Arc<Self> {
        let consumers = NonZeroUsize::new(3).expect("3 is not zero");
        Arc::new(Self {
            inner: TrackConsumersPool::new(GreedyMemoryPool::new(total_mib << 20), consumers),
            total_mib,
        })
    }
}

impl fmt::Display for ServerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQL server pool of {} MiB", self.total_mib)
    }
}

impl MemoryPool for ServerPool {
    fn name(&self) -> &str {
        "paperclip-sql"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.inner
            .try_grow(reservation, additional)
            .map_err(|error| {
                DataFusionError::ResourcesExhausted(format!(
                    "the running queries together need more memory than the SQL server's \
                     limit of {} MiB for all of them (--sql-memory-total-mib); run the query \
                     again when fewer queries run, or raise the limit. DataFusion: {error}",
                    self.total_mib
                ))
            })
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// The pool of one query: at most `per_query_mib` MiB, taken from the server's pool.
#[derive(Debug)]
pub struct QueryPool {
    server: Arc<ServerPool>,
    limit_mib: usize,
    used_bytes: AtomicUsize,
}

impl QueryPool {
    /// Creates the pool of a new query.
    pub fn new(server: Arc<ServerPool>, limit_mib: usize) -> Arc<Self> {
        Arc::new(Self {
            server,
            limit_mib,
            used_bytes: AtomicUsize::new(0),
        })
    }

    fn limit_bytes(&self) -> usize {
        self.limit_mib << 20
    }

    /// Counts `additional` bytes for this query if they fit under its limit.
    fn take(&self, additional: usize) -> Result<()> {
        self.used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(additional)
                    .filter(|&total| total <= self.limit_bytes())
            })
            .map(|_| ())
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "the query needs more memory than the SQL server's limit of {} MiB per \
                     query (--sql-memory-limit-mib): it holds {} MiB and asked for {} MiB \
                     more; narrow the query, or raise the limit",
                    self.limit_mib,
                    used >> 20,
                    additional.div_ceil(1 << 20)
                ))
            })
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQL query pool of {} MiB", self.limit_mib)
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "paperclip-sql-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.server.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.server.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used_bytes.fetch_add(additional, Ordering::AcqRel);
        self.server.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used_bytes.fetch_sub(shrink, Ordering::AcqRel);
        self.server.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.take(additional)?;
        self.server
            .try_grow(reservation, additional)
            .inspect_err(|_| {
                self.used_bytes.fetch_sub(additional, Ordering::AcqRel);
            })
    }

    fn reserved(&self) -> usize {
        self.used_bytes.load(Ordering::Acquire)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn reservation(pool: &Arc<QueryPool>, name: &str) -> MemoryReservation {
        let pool: Arc<dyn MemoryPool> = pool.clone();
        MemoryConsumer::new(name).register(&pool)
    }

    #[test]
    fn query_pool_enforces_own_limit() {
        let server = ServerPool::new(64);
        let query = QueryPool::new(server.clone(), 10);
        let sort = reservation(&query, "sort");

        sort.try_grow(8 * MIB).unwrap();
        let error = sort.try_grow(3 * MIB).unwrap_err().to_string();

        assert!(error.contains("limit of 10 MiB per query"), "{error}");
        assert!(error.contains("--sql-memory-limit-mib"), "{error}");
        assert!(error.contains("holds 8 MiB and asked for 3 MiB"), "{error}");
        assert_eq!(query.reserved(), 8 * MIB);
        assert_eq!(server.reserved(), 8 * MIB);
    }

    #[test]
    fn server_pool_enforces_total_limit() {
        let server = ServerPool::new(16);
        let first = QueryPool::new(server.clone(), 10);
        let second = QueryPool::new(server.clone(), 10);
        let a = reservation(&first, "a");
        let b = reservation(&second, "b");

        a.try_grow(9 * MIB).unwrap();
        let error = b.try_grow(9 * MIB).unwrap_err().to_string();

        assert!(error.contains("limit of 16 MiB for all of them"), "{error}");
        assert!(error.contains("--sql-memory-total-mib"), "{error}");
        // The refused bytes are counted nowhere.
        assert_eq!(second.reserved(), 0);
        assert_eq!(server.reserved(), 9 * MIB);

        b.try_grow(7 * MIB).unwrap();
        assert_eq!(server.reserved(), 16 * MIB);
    }

    #[test]
    fn freed_memory_returns_to_both() {
        let server = ServerPool::new(16);
        let query = QueryPool::new(server.clone(), 10);
        let hash = reservation(&query, "hash");

        hash.try_grow(10 * MIB).unwrap();
        hash.shrink(4 * MIB);
        assert_eq!((query.reserved(), server.reserved()), (6 * MIB, 6 * MIB));

        drop(hash);
        assert_eq!((query.reserved(), server.reserved()), (0, 0));
    }
}
