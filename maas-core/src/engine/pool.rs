//! Worker pools: `workers` supervised [`Worker`] tasks for one site and pool. A worker
//! task that panics or fails is replaced (after `restart_delay`), so the pool keeps its
//! configured size; shutdown lets running jobs finish or hands them back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{Engine, Worker, WorkerConfig};
use crate::names::{Pool, Site};

/// One pool of workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// Its site.
    pub site: Site,
    /// Its pool ("cluster type"); the kinds it takes are read from the store.
    pub pool: Pool,
    /// How many workers it keeps running.
    pub workers: usize,
    /// Each worker's pacing.
    pub worker: WorkerConfig,
    /// Wait before replacing a crashed worker.
    pub restart_delay: Duration,
    /// This process's name, prefixed to worker ids (unique per instance).
    pub instance: String,
}

/// What a pool went through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolReport {
    /// Workers replaced after a crash.
    pub restarts: u64,
    /// Why each replaced worker stopped.
    pub crashes: Vec<String>,
}

/// Starts pools.
#[derive(Debug, Clone, Copy)]
pub struct WorkerPool;

/// A running pool.
#[derive(Debug)]
pub struct PoolHandle {
    shutdown: watch::Sender<bool>,
    supervisor: JoinHandle<PoolReport>,
    restarts: Arc<AtomicU64>,
}

impl PoolHandle {
    /// Workers replaced so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Stops claiming, lets running jobs finish (up to each worker's grace), hands the rest
    /// back, and returns once every worker has stopped.
    pub async fn shutdown(self) -> PoolReport {
        let _ = self.shutdown.send(true);
        self.supervisor.await.unwrap_or_else(|e| PoolReport { restarts: 0, crashes: vec![format!("supervisor: {e}")] })
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .map_or_else(|| "panicked".to_string(), |m| format!("panicked: {m}")),
        Err(e) => format!("aborted: {e}"),
    }
}

impl WorkerPool {
    /// Starts a supervised pool on the current tokio runtime.
    pub fn start(engine: &Engine, cfg: PoolConfig) -> PoolHandle {
        let (tx, rx) = watch::channel(false);
        let restarts = Arc::new(AtomicU64::new(0));
        let counter = restarts.clone();
        let engine = engine.clone();
        let supervisor = tokio::spawn(async move {
            let mut set = JoinSet::new();
            let mut slots = HashMap::new();
            let mut generation = 0u64;
            let spawn = |set: &mut JoinSet<_>, slot: usize, generation: u64| {
                let id = format!("{}/{}/{}/{slot}.{generation}", cfg.instance, cfg.site, cfg.pool);
                let w = Worker::new(engine.clone(), id, cfg.site.clone(), cfg.pool.clone(), cfg.worker.clone());
                set.spawn(w.run(rx.clone())).id()
            };
            for slot in 0..cfg.workers {
                slots.insert(spawn(&mut set, slot, generation), slot);
            }
            let mut report = PoolReport::default();
            while let Some(done) = set.join_next_with_id().await {
                let (task, why) = match done {
                    Ok((task, Ok(()))) => (task, None),
                    Ok((task, Err(e))) => (task, Some(format!("failed: {e}"))),
                    Err(e) => (e.id(), Some(panic_message(e))),
                };
                let Some(slot) = slots.remove(&task) else { continue };
                if *rx.borrow() {
                    continue;
                }
                // A worker stopped without being asked to: replace it.
                generation += 1;
                report.restarts += 1;
                counter.fetch_add(1, Ordering::Relaxed);
                report.crashes.push(format!("worker slot {slot}: {}", why.unwrap_or_else(|| "exited".into())));
                engine.clock().sleep(cfg.restart_delay).await;
                if !*rx.borrow() {
                    slots.insert(spawn(&mut set, slot, generation), slot);
                }
            }
            report
        });
        PoolHandle { shutdown: tx, supervisor, restarts }
    }
}
