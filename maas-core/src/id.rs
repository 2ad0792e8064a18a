//! Identifiers: sortable UUIDv7 ids for batches, host runs, jobs and events, made by an
//! [`IdGenerator`] from the [`Clock`] and a seeded [`SimRng`] (so simulations are
//! reproducible) and strictly increasing within one generator.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rng::SimRng;
use crate::time::Clock;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The id as a UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim())
                    .map($name)
                    .map_err(|_| IdParseError { kind: $prefix, input: s.to_string() })
            }
        }
    };
}

define_id!(
    /// The id of a batch.
    BatchId,
    "batch"
);
define_id!(
    /// The id of one host's run within a batch.
    HostRunId,
    "host run"
);
define_id!(
    /// The id of one job (step) of a host run.
    JobId,
    "job"
);

/// A string that is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid {kind} id (expected a UUID)")]
pub struct IdParseError {
    /// What kind of id was expected.
    pub kind: &'static str,
    /// The rejected input.
    pub input: String,
}

/// Makes UUIDv7 ids: 48 bits of milliseconds from the clock, a 12-bit counter that keeps
/// ids strictly increasing within one millisecond, and 62 random bits from the seeded RNG.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<IdState>>,
}

#[derive(Debug)]
struct IdState {
    rng: SimRng,
    last_ms: u64,
    counter: u16,
}

impl IdGenerator {
    /// A generator reading `clock`, with random bits from `seed` (from OS entropy in
    /// production: callback tokens derive from it; see [`IdGenerator::token`]).
    pub fn new(clock: Arc<dyn Clock>, seed: u64) -> Self {
        IdGenerator {
            clock,
            state: Arc::new(Mutex::new(IdState { rng: SimRng::seed_from_u64(seed), last_ms: 0, counter: 0 })),
        }
    }

    /// The next UUID; strictly greater than every earlier one from this generator.
    pub fn next_uuid(&self) -> Uuid {
        let now_ms = self.clock.now().as_millis().max(0) as u64;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms > st.last_ms {
            st.last_ms = now_ms;
            st.counter = 0;
        } else if st.counter >= 0x0FFF {
            st.last_ms += 1;
            st.counter = 0;
        } else {
            st.counter += 1;
        }
        let mut bytes = [0u8; 10];
        st.rng.fill_bytes(&mut bytes);
        bytes[0..2].copy_from_slice(&st.counter.to_be_bytes());
        uuid::Builder::from_unix_timestamp_millis(st.last_ms, &bytes).into_uuid()
    }

    /// A new batch id.
    pub fn batch(&self) -> BatchId {
        BatchId(self.next_uuid())
    }

    /// A new host run id.
    pub fn host_run(&self) -> HostRunId {
        HostRunId(self.next_uuid())
    }

    /// A new job id.
    pub fn job(&self) -> JobId {
        JobId(self.next_uuid())
    }

    /// 128 bits as hex, for per-job callback tokens. The token alone completes a waiting
    /// job, and its bits come from this generator's seeded RNG: in production the seed must
    /// come from the operating system's entropy (the shell's job; maas-core draws none),
    /// otherwise tokens are predictable. Simulations pass a fixed seed for replayability.
    pub fn token(&self) -> String {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        format!("{:016x}{:016x}", st.rng.next_u64(), st.rng.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{ManualClock, Timestamp};

    #[test]
    fn ids_are_v7_and_strictly_increasing_even_within_one_millisecond() {
        let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
        let ids = IdGenerator::new(Arc::new(clock.clone()), 42);
        let mut prev = ids.next_uuid();
        assert_eq!(prev.get_version_num(), 7);
        for i in 0..10_000 {
            if i % 1000 == 0 {
                clock.advance(std::time::Duration::from_millis(1));
            }
            let next = ids.next_uuid();
            assert!(next > prev, "{next} <= {prev}");
            prev = next;
        }
    }

    #[test]
    fn same_seed_and_clock_give_same_ids_and_parse_back() {
        let mk = || IdGenerator::new(Arc::new(ManualClock::new(Timestamp::from_millis(5))), 9);
        let (a, b) = (mk(), mk());
        let (x, y) = (a.batch(), b.batch());
        assert_eq!(x, y);
        assert_eq!(x.to_string().parse::<BatchId>().unwrap(), x);
        let err = "nope".parse::<JobId>().unwrap_err();
        assert_eq!(err.to_string(), "\"nope\" is not a valid job id (expected a UUID)");
    }
}
