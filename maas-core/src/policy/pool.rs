//! Worker-pool supervision, sans-IO: which worker slots exist, what a stopped worker's
//! slot gets (a replacement after `restart_delay`, or nothing while shutting down), and
//! the worker ids. maas-engine's `WorkerPool` spawns and joins the tasks; this decides.

use std::collections::BTreeMap;

use crate::config::PoolConfig;
use crate::time::Timestamp;

/// What to do about a slot whose worker stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotDecision {
    /// Start a new worker with this id in the slot at `at`.
    Replace {
        /// The slot.
        slot: usize,
        /// The replacement's worker id.
        worker_id: String,
        /// Not before.
        at: Timestamp,
    },
    /// Leave the slot empty (the pool is shutting down).
    Retire,
}

/// One pool's supervision state.
#[derive(Debug, Clone)]
pub struct Supervisor {
    cfg: PoolConfig,
    generation: BTreeMap<usize, u64>,
    shutting_down: bool,
    restarts: u64,
    crashes: Vec<String>,
}

impl Supervisor {
    /// A supervisor for `cfg`.
    pub fn new(cfg: PoolConfig) -> Self {
        Supervisor { cfg, generation: BTreeMap::new(), shutting_down: false, restarts: 0, crashes: Vec::new() }
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// The worker id of `slot` in its `generation`: unique per instance, site, pool, slot
    /// and restart.
    pub fn worker_id(&self, slot: usize, generation: u64) -> String {
        format!("{}/{}/{}/{slot}.{generation}", self.cfg.instance, self.cfg.site, self.cfg.pool)
    }

    /// The workers to start with: one per slot, `(slot, worker id)`.
    pub fn initial(&mut self) -> Vec<(usize, String)> {
        (0..self.cfg.workers)
            .map(|slot| {
                self.generation.insert(slot, 0);
                (slot, self.worker_id(slot, 0))
            })
            .collect()
    }

    /// The pool was asked to shut down: no slot is refilled any more.
    pub fn handle_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// The worker in `slot` stopped at `now` (`why`: `None` when it returned normally). A
    /// worker that stops without being asked to is replaced after `restart_delay`.
    pub fn handle_stopped(&mut self, slot: usize, why: Option<String>, now: Timestamp) -> SlotDecision {
        if self.shutting_down {
            return SlotDecision::Retire;
        }
        let generation = self.generation.entry(slot).or_insert(0);
        *generation += 1;
        let generation = *generation;
        self.restarts += 1;
        self.crashes.push(format!("worker slot {slot}: {}", why.unwrap_or_else(|| "exited".into())));
        SlotDecision::Replace {
            slot,
            worker_id: self.worker_id(slot, generation),
            at: now.plus(self.cfg.restart_delay),
        }
    }

    /// Workers replaced so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Why each replaced worker stopped.
    pub fn crashes(&self) -> &[String] {
        &self.crashes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkerConfig;
    use crate::names::{Pool, Site};
    use std::time::Duration;

    fn cfg() -> PoolConfig {
        PoolConfig {
            site: Site::new("dc1").unwrap(),
            pool: Pool::new("web").unwrap(),
            workers: 2,
            worker: WorkerConfig::default(),
            restart_delay: Duration::from_secs(1),
            instance: "i1".into(),
        }
    }

    #[test]
    fn a_crashed_worker_is_replaced_with_a_new_generation_after_the_delay() {
        let mut s = Supervisor::new(cfg());
        assert_eq!(s.initial(), vec![(0, "i1/dc1/web/0.0".into()), (1, "i1/dc1/web/1.0".into())]);
        let d = s.handle_stopped(1, Some("panicked: boom".into()), Timestamp::from_millis(10));
        let want =
            SlotDecision::Replace { slot: 1, worker_id: "i1/dc1/web/1.1".into(), at: Timestamp::from_millis(1010) };
        assert_eq!(d, want);
        assert_eq!(s.restarts(), 1);
        assert_eq!(s.crashes(), ["worker slot 1: panicked: boom"]);
    }

    #[test]
    fn nothing_is_replaced_once_shutting_down() {
        let mut s = Supervisor::new(cfg());
        s.initial();
        s.handle_shutdown();
        assert_eq!(s.handle_stopped(0, None, Timestamp::EPOCH), SlotDecision::Retire);
        assert_eq!(s.restarts(), 0);
    }
}
