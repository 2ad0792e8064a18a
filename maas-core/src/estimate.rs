//! Percentiles and completion estimates, as pure functions over durations.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::Sku;
use crate::plan::{PlannedStep, StepKind};
use crate::ports::store::StepSample;

/// Nearest-rank percentiles of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Sample size.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

/// The nearest-rank `q` quantile (0 < q <= 1) of an ascending slice.
pub fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Percentiles of `d` (`None` when empty).
pub fn percentiles(mut d: Vec<Duration>) -> Option<Percentiles> {
    d.sort_unstable();
    Some(Percentiles {
        count: d.len(),
        p50: quantile(&d, 0.50)?,
        p90: quantile(&d, 0.90)?,
        p95: quantile(&d, 0.95)?,
        p99: quantile(&d, 0.99)?,
        max: *d.last()?,
    })
}

/// Whether a step that has run for `elapsed` is a straggler against its peers' finished
/// durations: slower than `factor` x their p95, with at least `min_peers` of them.
pub fn is_straggler(elapsed: Duration, peers: &mut [Duration], factor: f64, min_peers: usize) -> bool {
    if peers.len() < min_peers.max(1) {
        return false;
    }
    peers.sort_unstable();
    quantile(peers, 0.95).is_some_and(|p95| elapsed.as_secs_f64() > factor * p95.as_secs_f64().max(0.001))
}

/// Expected step durations learned from history: the median per (SKU, step), falling back
/// to the median per step, then to a built-in default.
#[derive(Debug, Clone, Default)]
pub struct StepModel {
    by_sku: HashMap<(Sku, StepKind), Duration>,
    by_step: HashMap<StepKind, Duration>,
    samples: usize,
}

/// Built-in guess for a step with no history: a quarter of a waiting step's deadline
/// (capped at 30 minutes), 30 seconds for BMC steps.
pub fn default_step_duration(step: &PlannedStep) -> Duration {
    match step.params.wait() {
        Some(wait) => (wait / 4).min(Duration::from_secs(1800)),
        None => Duration::from_secs(30),
    }
}

impl StepModel {
    /// Learns from samples (of one action).
    pub fn from_samples<'a>(samples: impl Iterator<Item = &'a StepSample>) -> Self {
        let mut by_sku: HashMap<(Sku, StepKind), Vec<Duration>> = HashMap::new();
        let mut by_step: HashMap<StepKind, Vec<Duration>> = HashMap::new();
        let mut n = 0;
        for s in samples {
            let d = s.finished_at.since(s.started_at);
            by_sku.entry((s.sku.clone(), s.kind)).or_default().push(d);
            by_step.entry(s.kind).or_default().push(d);
            n += 1;
        }
        let median = |mut v: Vec<Duration>| {
            v.sort_unstable();
            quantile(&v, 0.5).unwrap_or_default()
        };
        StepModel {
            by_sku: by_sku.into_iter().map(|(k, v)| (k, median(v))).collect(),
            by_step: by_step.into_iter().map(|(k, v)| (k, median(v))).collect(),
            samples: n,
        }
    }

    /// How many samples it learned from.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The expected duration of `step` on `sku`.
    pub fn expected(&self, sku: &Sku, step: &PlannedStep) -> Duration {
        self.by_sku
            .get(&(sku.clone(), step.kind))
            .or_else(|| self.by_step.get(&step.kind))
            .copied()
            .unwrap_or_else(|| default_step_duration(step))
    }

    /// Expected time left for a host on `sku` at chain position `position`, having spent
    /// `in_step` on that step already.
    pub fn remaining(&self, plan: &[PlannedStep], sku: &Sku, position: usize, in_step: Duration) -> Duration {
        let mut steps = plan.iter().skip(position);
        let Some(current) = steps.next() else { return Duration::ZERO };
        let first = self.expected(sku, current).saturating_sub(in_step);
        steps.fold(first, |acc, s| acc + self.expected(sku, s))
    }
}

/// How long until every host is done: running hosts need `running` more each; queued hosts
/// need `queued` each (in order) and start as slots free up, `slots` at a time.
pub fn makespan(running: &[Duration], queued: &[Duration], slots: usize) -> Duration {
    let slots = slots.max(1);
    let mut free: BinaryHeap<Reverse<Duration>> = running.iter().copied().map(Reverse).collect();
    while free.len() < slots {
        free.push(Reverse(Duration::ZERO));
    }
    let mut end = running.iter().copied().max().unwrap_or_default();
    for q in queued {
        let Some(Reverse(t)) = free.pop() else { break };
        let done = t + *q;
        end = end.max(done);
        free.push(Reverse(done));
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let p = percentiles((1..=100).map(s).collect()).unwrap();
        assert_eq!((p.count, p.p50, p.p90, p.p95, p.p99, p.max), (100, s(50), s(90), s(95), s(99), s(100)));
        assert_eq!(percentiles(vec![s(7)]).unwrap().p99, s(7));
        assert!(percentiles(Vec::new()).is_none());
    }

    #[test]
    fn stragglers_need_enough_peers_and_a_clear_margin() {
        let mut peers: Vec<Duration> = (1..=10).map(|_| s(100)).collect();
        assert!(!is_straggler(s(299), &mut peers, 3.0, 5));
        assert!(is_straggler(s(301), &mut peers, 3.0, 5));
        assert!(!is_straggler(s(10_000), &mut peers[..4], 3.0, 5));
    }

    #[test]
    fn makespan_fills_slots_in_waves() {
        // Two slots, nothing running, four 10 s hosts: two waves.
        assert_eq!(makespan(&[], &[s(10); 4], 2), s(20));
        // One host running with 25 s left and one free slot: queued hosts use the free one.
        assert_eq!(makespan(&[s(25)], &[s(10), s(10)], 2), s(25));
        assert_eq!(makespan(&[s(25)], &[s(10), s(10), s(10)], 2), s(30));
        assert_eq!(makespan(&[], &[], 5), Duration::ZERO);
    }
}
