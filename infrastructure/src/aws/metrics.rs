//! Per-adapter request counters, so benchmarks and tests can assert request budgets ("a checkout
//! is exactly one TransactWriteItems plus the loads of its streams"; "a load costs a constant
//! number of requests once a snapshot exists"). Every SDK call attempt counts, retries included.

use std::sync::atomic::{AtomicU64, Ordering};

/// The DynamoDB operations the adapters issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    TransactWriteItems,
    Query,
    GetItem,
    BatchGetItem,
    BatchWriteItem,
    Scan,
}

/// Live counters; cheap to bump from any task.
#[derive(Debug, Default)]
pub struct RequestCounters {
    transact_write_items: AtomicU64,
    query: AtomicU64,
    get_item: AtomicU64,
    batch_get_item: AtomicU64,
    batch_write_item: AtomicU64,
    scan: AtomicU64,
}

/// A point-in-time copy of [`RequestCounters`]; subtract two to get the cost of what ran between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub transact_write_items: u64,
    pub query: u64,
    pub get_item: u64,
    pub batch_get_item: u64,
    pub batch_write_item: u64,
    pub scan: u64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.transact_write_items
            + self.query
            + self.get_item
            + self.batch_get_item
            + self.batch_write_item
            + self.scan
    }

    /// Requests that only read.
    pub fn reads(&self) -> u64 {
        self.query + self.get_item + self.batch_get_item + self.scan
    }

    /// Requests that write.
    pub fn writes(&self) -> u64 {
        self.total() - self.reads()
    }
}

impl std::ops::Sub for RequestCounts {
    type Output = RequestCounts;

    fn sub(self, rhs: RequestCounts) -> RequestCounts {
        RequestCounts {
            transact_write_items: self
                .transact_write_items
                .saturating_sub(rhs.transact_write_items),
            query: self.query.saturating_sub(rhs.query),
            get_item: self.get_item.saturating_sub(rhs.get_item),
            batch_get_item: self.batch_get_item.saturating_sub(rhs.batch_get_item),
            batch_write_item: self.batch_write_item.saturating_sub(rhs.batch_write_item),
            scan: self.scan.saturating_sub(rhs.scan),
        }
    }
}

impl RequestCounters {
    pub(crate) fn record(&self, op: Op) {
        let counter = match op {
            Op::TransactWriteItems => &self.transact_write_items,
            Op::Query => &self.query,
            Op::GetItem => &self.get_item,
            Op::BatchGetItem => &self.batch_get_item,
            Op::BatchWriteItem => &self.batch_write_item,
            Op::Scan => &self.scan,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            transact_write_items: get(&self.transact_write_items),
            query: get(&self.query),
            get_item: get(&self.get_item),
            batch_get_item: get(&self.batch_get_item),
            batch_write_item: get(&self.batch_write_item),
            scan: get(&self.scan),
        }
    }
}
