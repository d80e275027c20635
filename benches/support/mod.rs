//! Shared by the bench targets: batch pools from the workload generator,
//! the SQLite baseline, and the on-disk cache of built stores.
#![allow(dead_code)] // each bench target uses a different part

pub mod sqlite;
pub mod stores;

use span_sessions::ResourceSpans;
use span_sessions::workload::{Workload, WorkloadConfig, encoded_bytes};

/// The spans of a realistic workload in batches of `batch` spans,
/// generated on demand and kept, so that every sample of a bench appends
/// the same spans (each into a fresh store).
pub struct BatchPool {
    source: Box<dyn Iterator<Item = Vec<ResourceSpans>>>,
    batches: Vec<Vec<ResourceSpans>>,
    pub batch: usize,
}

impl BatchPool {
    pub fn new(seed: u64, span_bytes: usize, batch: usize) -> Self {
        let cfg = WorkloadConfig::realistic(seed, usize::MAX, span_bytes);
        Self {
            source: Box::new(Workload::new(cfg).batches(batch)),
            batches: Vec::new(),
            batch,
        }
    }

    /// The first `n` batches.
    pub fn take(&mut self, n: usize) -> &[Vec<ResourceSpans>] {
        while self.batches.len() < n {
            let b = self.source.next().expect("the workload is endless");
            self.batches.push(b);
        }
        &self.batches[..n]
    }

    /// Encoded bytes of the first `n` batches.
    pub fn bytes(&mut self, n: usize) -> u64 {
        self.take(n).iter().map(|b| encoded_bytes(b)).sum()
    }

    /// Mean encoded bytes of a batch, over the first batches (at least
    /// 20,000 spans' worth).
    pub fn mean_batch_bytes(&mut self) -> u64 {
        let n = (20_000 / self.batch).max(20);
        self.bytes(n) / n as u64
    }
}

/// Number of spans in a batch.
pub fn span_count(batch: &[ResourceSpans]) -> usize {
    batch.iter().map(|rs| rs.spans.len()).sum()
}

/// Reads an environment variable as a number, with a default.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}
