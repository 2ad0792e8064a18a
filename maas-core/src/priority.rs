//! Priority with aging, as a virtual-deadline queue key.
//!
//! A job's queue key is `enqueued_at - class_offset(priority)` (milliseconds); workers
//! claim the smallest key first, with a plain index on `(state, site, kind, key)`.
//!
//! **The bound.** Let job `a` of class `A` be enqueued at `t`. Every job `b` of class `B`
//! enqueued after `t + offset(B) - offset(A)` has a larger key than `a`, so `a` is claimed
//! before it. In words: a lower-class job waits at most the difference of the class offsets
//! behind higher-class work — it is never starved — and within one class the order is
//! strictly first-come first-served (ties broken by job id, which is time-sortable).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::{Timestamp, duration_millis};

/// How urgent a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PriorityClass {
    /// Background work, e.g. newly racked hosts ("organic growth").
    Low,
    /// The default.
    #[default]
    Normal,
    /// A user waiting for their host back.
    High,
    /// Incident response.
    Urgent,
}

impl PriorityClass {
    /// Every class, lowest first.
    pub const ALL: [PriorityClass; 4] =
        [PriorityClass::Low, PriorityClass::Normal, PriorityClass::High, PriorityClass::Urgent];

    /// The snake_case name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            PriorityClass::Low => "low",
            PriorityClass::Normal => "normal",
            PriorityClass::High => "high",
            PriorityClass::Urgent => "urgent",
        }
    }

    /// Parses [`PriorityClass::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for PriorityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The head start each class gets. Offsets must not decrease with the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityPolicy {
    /// Offset of [`PriorityClass::Low`].
    pub low: Duration,
    /// Offset of [`PriorityClass::Normal`].
    pub normal: Duration,
    /// Offset of [`PriorityClass::High`].
    pub high: Duration,
    /// Offset of [`PriorityClass::Urgent`].
    pub urgent: Duration,
}

impl Default for PriorityPolicy {
    /// Low 0, normal 15 min, high 1 h, urgent 4 h: a low job waits at most 4 h behind
    /// urgent work and 1 h behind high.
    fn default() -> Self {
        PriorityPolicy {
            low: Duration::ZERO,
            normal: Duration::from_secs(15 * 60),
            high: Duration::from_secs(3600),
            urgent: Duration::from_secs(4 * 3600),
        }
    }
}

/// A [`PriorityPolicy`] whose offsets decrease with the class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("priority offsets must not decrease from low to urgent (got {0:?})")]
pub struct PriorityPolicyError(pub PriorityPolicy);

impl PriorityPolicy {
    /// Checks that offsets do not decrease with the class.
    pub fn validate(&self) -> Result<(), PriorityPolicyError> {
        let o = [self.low, self.normal, self.high, self.urgent];
        if o.windows(2).all(|w| w[0] <= w[1]) { Ok(()) } else { Err(PriorityPolicyError(*self)) }
    }

    /// The head start of `class`.
    pub fn offset(&self, class: PriorityClass) -> Duration {
        match class {
            PriorityClass::Low => self.low,
            PriorityClass::Normal => self.normal,
            PriorityClass::High => self.high,
            PriorityClass::Urgent => self.urgent,
        }
    }

    /// The queue key of a job of `class` enqueued at `enqueued_at`: smaller runs first.
    pub fn queue_key(&self, enqueued_at: Timestamp, class: PriorityClass) -> i64 {
        enqueued_at.as_millis().saturating_sub(duration_millis(self.offset(class)))
    }

    /// The longest a job of class `waiting` can be held back by jobs of class `ahead`
    /// enqueued at the same moment or later: the difference of offsets (zero when
    /// `waiting` is the higher class).
    pub fn max_wait_behind(&self, waiting: PriorityClass, ahead: PriorityClass) -> Duration {
        self.offset(ahead).saturating_sub(self.offset(waiting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_policy_is_valid_and_orders_classes() {
        let p = PriorityPolicy::default();
        p.validate().unwrap();
        let t = Timestamp::from_millis(10_000_000);
        let keys: Vec<i64> = PriorityClass::ALL.iter().map(|c| p.queue_key(t, *c)).collect();
        assert!(keys.windows(2).all(|w| w[0] > w[1]), "{keys:?}");
        let bad = PriorityPolicy { high: Duration::ZERO, ..p };
        assert!(bad.validate().is_err());
        assert_eq!(p.max_wait_behind(PriorityClass::Low, PriorityClass::Urgent), Duration::from_secs(4 * 3600));
        assert_eq!(p.max_wait_behind(PriorityClass::Urgent, PriorityClass::Low), Duration::ZERO);
    }

    proptest! {
        /// The aging bound: a job is served before every job of another class that was
        /// enqueued later than its own time plus the offset difference.
        #[test]
        fn aging_bound_holds(t in 0i64..1_000_000_000, dt in 0i64..100_000_000, a in 0usize..4, b in 0usize..4) {
            let p = PriorityPolicy::default();
            let (ca, cb) = (PriorityClass::ALL[a], PriorityClass::ALL[b]);
            let ta = Timestamp::from_millis(t);
            let bound = duration_millis(p.offset(cb)) - duration_millis(p.offset(ca));
            let tb = Timestamp::from_millis(t + bound.max(0) + 1 + dt);
            prop_assert!(p.queue_key(ta, ca) < p.queue_key(tb, cb));
        }

        /// Within a class, earlier enqueue means smaller key (strict FIFO).
        #[test]
        fn fifo_within_a_class(t in 0i64..1_000_000_000, dt in 1i64..1_000_000, c in 0usize..4) {
            let p = PriorityPolicy::default();
            let class = PriorityClass::ALL[c];
            prop_assert!(p.queue_key(Timestamp::from_millis(t), class) < p.queue_key(Timestamp::from_millis(t + dt), class));
        }
    }
}
