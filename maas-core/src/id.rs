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

/// Where callback tokens come from. A token alone completes a waiting job, so in
/// production it must be unpredictable: maas-engine's `OsTokens` draws it from the
/// operating system's CSPRNG. maas-core draws no entropy itself; without a source,
/// [`IdGenerator::token`] uses its seeded RNG, which is right only for simulations (they
/// replay by seed).
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A fresh token: 128 random bits as 32 lowercase hex digits.
    fn token(&self) -> String;
}

/// Makes UUIDv7 ids: 48 bits of milliseconds from the clock, a 12-bit counter that keeps
/// ids strictly increasing within one millisecond, and 62 random bits from the seeded RNG;
/// and callback tokens, from its [`TokenSource`] when it has one.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<IdState>>,
    tokens: Option<Arc<dyn TokenSource>>,
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
            tokens: None,
        }
    }

    /// The same generator, drawing callback tokens from `tokens` (production: the OS CSPRNG).
    pub fn with_tokens(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
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

    /// 128 bits as hex, for per-job callback tokens: from the [`TokenSource`] when one was
    /// given ([`IdGenerator::with_tokens`]), else from the seeded RNG (simulations only:
    /// such tokens are as predictable as the seed).
    pub fn token(&self) -> String {
        if let Some(source) = &self.tokens {
            return source.token();
        }
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

    #[derive(Debug)]
    struct Counting(std::sync::atomic::AtomicU64);

    impl TokenSource for Counting {
        fn token(&self) -> String {
            format!("{:032x}", self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
        }
    }

    #[test]
    fn tokens_come_from_the_token_source_when_there_is_one() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(5)));
        let seeded = IdGenerator::new(clock.clone(), 9);
        let same_seed = IdGenerator::new(clock.clone(), 9);
        assert_eq!(seeded.token(), same_seed.token(), "seeded tokens replay (simulations only)");
        let sourced = IdGenerator::new(clock, 9).with_tokens(Arc::new(Counting(Default::default())));
        assert_eq!(sourced.token(), format!("{:032x}", 0));
        assert_eq!(sourced.token(), format!("{:032x}", 1));
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
