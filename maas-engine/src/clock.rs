//! [`SystemClock`]: the operating system's clock, the one place maas reads it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use maas_core::time::{Clock, Timestamp, duration_millis};

/// The operating system's wall clock, made monotonic (a step backwards reads as no change).
#[derive(Debug, Default)]
pub struct SystemClock {
    last: AtomicI64,
}

impl SystemClock {
    /// A new system clock.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one sanctioned read of the system clock.
    fn now(&self) -> Timestamp {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(duration_millis).unwrap_or(0);
        let prev = self.last.fetch_max(wall, Ordering::Relaxed);
        Timestamp::from_millis(prev.max(wall))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        // tokio's timer reads the monotonic clock itself; that read only ever delays.
        Box::pin(tokio::time::sleep(d))
    }
}
