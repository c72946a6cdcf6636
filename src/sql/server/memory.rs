//! The SQL server's memory limit: DataFusion's greedy pool, with an error that names the
//! limit and the setting that raises it.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
    TrackConsumersPool,
};

/// A memory pool shared by every query of the server, at most `limit_mib` MiB.
#[derive(Debug)]
pub struct LimitedPool {
    inner: TrackConsumersPool<GreedyMemoryPool>,
    limit_mib: usize,
}

impl LimitedPool {
    /// Creates the pool; `limit_mib` must be at least 1.
    pub fn new(limit_mib: usize) -> Arc<Self> {
        let consumers = NonZeroUsize::new(3).expect("3 is not zero");
        Arc::new(Self {
            inner: TrackConsumersPool::new(GreedyMemoryPool::new(limit_mib << 20), consumers),
            limit_mib,
        })
    }
}

impl fmt::Display for LimitedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQL server pool of {} MiB", self.limit_mib)
    }
}

impl MemoryPool for LimitedPool {
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
                    "the query needs more memory than the SQL server's limit of {} MiB for all \
                 running queries (--sql-memory-limit-mib); narrow the query, or raise the \
                 limit. DataFusion: {error}",
                    self.limit_mib
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
