//! Worker pools: `workers` supervised [`Worker`] tasks for one site and pool. maas-core's
//! [`Supervisor`] decides (a worker task that panics or fails is replaced after
//! `restart_delay`, nothing is replaced once shutting down); this file spawns and joins.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::{Engine, Worker};
use maas_core::config::PoolConfig;
use maas_core::policy::{SlotDecision, Supervisor};

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
            let mut policy = Supervisor::new(cfg);
            let mut set = JoinSet::new();
            let mut slots = HashMap::new();
            let spawn = |set: &mut JoinSet<_>, cfg: &PoolConfig, id: String| {
                let w = Worker::new(engine.clone(), id, cfg.site.clone(), cfg.pool.clone(), cfg.worker.clone());
                set.spawn(w.run(rx.clone())).id()
            };
            for (slot, id) in policy.initial() {
                slots.insert(spawn(&mut set, policy.config(), id), slot);
            }
            while let Some(done) = set.join_next_with_id().await {
                let (task, why) = match done {
                    Ok((task, Ok(()))) => (task, None),
                    Ok((task, Err(e))) => (task, Some(format!("failed: {e}"))),
                    Err(e) => (e.id(), Some(panic_message(e))),
                };
                let Some(slot) = slots.remove(&task) else { continue };
                if *rx.borrow() {
                    policy.handle_shutdown();
                }
                let clock = engine.clock();
                if let SlotDecision::Replace { slot, worker_id, at } = policy.handle_stopped(slot, why, clock.now()) {
                    counter.fetch_add(1, Ordering::Relaxed);
                    clock.sleep(at.since(clock.now())).await;
                    if !*rx.borrow() {
                        slots.insert(spawn(&mut set, policy.config(), worker_id), slot);
                    }
                }
            }
            PoolReport { restarts: policy.restarts(), crashes: policy.crashes().to_vec() }
        });
        PoolHandle { shutdown: tx, supervisor, restarts }
    }
}
