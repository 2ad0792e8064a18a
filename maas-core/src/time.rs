//! Time: the [`Timestamp`] type and the [`Clock`] seam — the only door through which the
//! current time enters maas-core.
//!
//! Everything in the core takes `now` as an argument or reads it from a `Clock` it was
//! given, so the whole engine can run on a [`ManualClock`] in a deterministic simulation.
//! maas-core never reads the operating system's clock: the runtime (maas-engine's
//! `SystemClock`) does, and a tidy test and `clippy.toml` keep it that way.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time: milliseconds since the Unix epoch, UTC.
///
/// Millisecond resolution is what every backend stores losslessly (SQLite integers,
/// PostgreSQL `timestamptz`, MySQL `DATETIME(3)`), so round trips never drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// This time minus `d` (saturating).
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// The time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// Parses an RFC 3339 timestamp such as `2026-11-21T10:00:00Z`.
    pub fn parse_rfc3339(s: &str) -> Result<Self, chrono::ParseError> {
        chrono::DateTime::parse_from_rfc3339(s).map(|t| Timestamp(t.timestamp_millis()))
    }

    /// This time as a chrono UTC date-time (for shells and database boundaries).
    pub fn to_chrono(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }
}

/// Whole milliseconds in `d`, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => write!(f, "{}", t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 timestamp {s:?}: {e}")))
    }
}

/// The source of the current time.
///
/// # Contract
/// - `now` is cheap, never blocks and never fails.
/// - Successive calls on one clock never go backwards.
/// - Nothing in maas-core obtains the time any other way.
/// - `sleep(d)` resolves once `now()` has moved on by at least `d` — or at once on a
///   simulation clock, where time moves only between steps. Callers therefore bound their
///   waiting loops by a count as well as by time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Waits for `d` of this clock's time.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// A clock that moves only when told to: for tests and the deterministic simulator.
/// Clones share the same time.
///
/// `sleep` waits until the clock has been advanced far enough; a clock made with
/// [`ManualClock::simulated`] returns from `sleep` at once instead (the simulator moves
/// time between steps, never inside one).
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    /// Sleepers to wake when the clock moves (runtime-agnostic: plain wakers).
    sleepers: Arc<Mutex<Vec<Waker>>>,
    instant_sleep: Arc<AtomicBool>,
}

impl ManualClock {
    /// A manual clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock { now: Arc::new(AtomicI64::new(start.0)), ..Default::default() }
    }

    /// A manual clock reading `start` whose `sleep` returns at once.
    pub fn simulated(start: Timestamp) -> Self {
        let c = ManualClock::new(start);
        c.instant_sleep.store(true, Ordering::SeqCst);
        c
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.fetch_add(duration_millis(d), Ordering::SeqCst);
        self.wake_sleepers();
    }

    /// Sets the clock to `t` if `t` is later than the current reading.
    pub fn advance_to(&self, t: Timestamp) {
        self.now.fetch_max(t.0, Ordering::SeqCst);
        self.wake_sleepers();
    }

    fn wake_sleepers(&self) {
        let woken = std::mem::take(&mut *self.sleepers.lock().unwrap_or_else(|p| p.into_inner()));
        woken.into_iter().for_each(Waker::wake);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(ManualSleep { clock: self.clone(), until: self.now().plus(d) })
    }
}

/// A [`ManualClock`] sleep: ready once the clock reads `until` (at once when simulated).
struct ManualSleep {
    clock: ManualClock,
    until: Timestamp,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.clock.instant_sleep.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        // Register before reading the time, so an advance in between is not missed.
        self.clock.sleepers.lock().unwrap_or_else(|p| p.into_inner()).push(cx.waker().clone());
        if self.clock.now() >= self.until { Poll::Ready(()) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_keeps_milliseconds() {
        let t = Timestamp::parse_rfc3339("2026-11-21T10:00:00.123Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T10:00:00.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn manual_clock_moves_only_forward_when_told() {
        let c = ManualClock::new(Timestamp::from_millis(1_000));
        assert_eq!(c.now().as_millis(), 1_000);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now().as_millis(), 3_000);
        c.advance_to(Timestamp::from_millis(2_000));
        assert_eq!(c.now().as_millis(), 3_000);
        let shared = c.clone();
        shared.advance(Duration::from_millis(1));
        assert_eq!(c.now().as_millis(), 3_001);
    }

    #[test]
    fn manual_sleep_waits_for_the_clock_and_simulated_sleep_does_not() {
        use futures::FutureExt;
        let c = ManualClock::new(Timestamp::from_millis(0));
        let mut sleeper = c.sleep(Duration::from_secs(10));
        assert!((&mut sleeper).now_or_never().is_none());
        c.advance(Duration::from_secs(5));
        assert!((&mut sleeper).now_or_never().is_none());
        c.advance(Duration::from_secs(5));
        assert!(sleeper.now_or_never().is_some());
        assert!(ManualClock::simulated(Timestamp::EPOCH).sleep(Duration::from_secs(3600)).now_or_never().is_some());
    }

    #[test]
    fn advancing_wakes_a_pending_sleeper() {
        let c = ManualClock::new(Timestamp::EPOCH);
        let mover = c.clone();
        let t = std::thread::spawn(move || futures::executor::block_on(c.sleep(Duration::from_secs(1))));
        while !t.is_finished() {
            mover.advance(Duration::from_millis(100));
            std::thread::yield_now();
        }
        t.join().unwrap();
    }

    #[test]
    fn since_saturates_at_zero() {
        let a = Timestamp::from_millis(5);
        assert_eq!(a.since(Timestamp::from_millis(10)), Duration::ZERO);
        assert_eq!(a.plus(Duration::from_millis(5)).since(a), Duration::from_millis(5));
    }
}
