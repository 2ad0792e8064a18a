//! Process-local activity counters of one [`Engine`](crate::Engine): what this instance's
//! workers claimed and completed, and what its singletons rescued and flagged. Shells
//! export them (maasd as Prometheus counters); maas-core keeps them as plain atomics so it
//! depends on no metrics library. They count since the engine was built and never go down.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The live counters (inside the engine).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    claims: AtomicU64,
    jobs_claimed: AtomicU64,
    jobs_completed: AtomicU64,
    completions_stale: AtomicU64,
    leases_retried: AtomicU64,
    leases_failed: AtomicU64,
    waits_expired: AtomicU64,
    stragglers_flagged: AtomicU64,
    audit_write_failures: AtomicU64,
    worker_store_errors: AtomicU64,
}

/// A reading of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// Claim calls that leased at least one job.
    pub claims: u64,
    /// Jobs leased by claims.
    pub jobs_claimed: u64,
    /// Job completions the store applied.
    pub jobs_completed: u64,
    /// Completions refused as stale (the lease had moved on).
    pub completions_stale: u64,
    /// Expired leases put back for another attempt by the rescuer.
    pub leases_retried: u64,
    /// Expired leases with no attempts left, failed by the rescuer.
    pub leases_failed: u64,
    /// Waiting jobs failed at their deadline by the rescuer.
    pub waits_expired: u64,
    /// Host runs flagged as stragglers.
    pub stragglers_flagged: u64,
    /// Audit entries of refused calls (or idempotent replays) the store failed to write
    /// (the caller still got its answer).
    pub audit_write_failures: u64,
    /// Store calls of this instance's workers that failed (each is retried after a
    /// backoff; a climbing count means the database is away).
    pub worker_store_errors: u64,
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn claimed(&self, jobs: usize) {
        if jobs > 0 {
            add(&self.claims, 1);
            add(&self.jobs_claimed, jobs);
        }
    }

    pub(crate) fn store_error(&self) {
        add(&self.worker_store_errors, 1);
    }

    pub(crate) fn audit_write_failed(&self) {
        add(&self.audit_write_failures, 1);
    }

    pub(crate) fn completed(&self, applied: usize, stale: usize) {
        add(&self.jobs_completed, applied);
        add(&self.completions_stale, stale);
    }

    pub(crate) fn rescued(&self, retried: usize, failed: usize, wait_expired: usize) {
        add(&self.leases_retried, retried);
        add(&self.leases_failed, failed);
        add(&self.waits_expired, wait_expired);
    }

    pub(crate) fn stragglers(&self, flagged: usize) {
        add(&self.stragglers_flagged, flagged);
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            claims: get(&self.claims),
            jobs_claimed: get(&self.jobs_claimed),
            jobs_completed: get(&self.jobs_completed),
            completions_stale: get(&self.completions_stale),
            leases_retried: get(&self.leases_retried),
            leases_failed: get(&self.leases_failed),
            waits_expired: get(&self.waits_expired),
            stragglers_flagged: get(&self.stragglers_flagged),
            audit_write_failures: get(&self.audit_write_failures),
            worker_store_errors: get(&self.worker_store_errors),
        }
    }
}
