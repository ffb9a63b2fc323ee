//! The clock seam: where "now" comes from for code whose behaviour depends on elapsed time
//! (a live stream's viewer silent for 60 s is gone). Production uses the system clock; tests
//! hand in a clock they can move forward, so expiry is tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

/// A source of the current time: the system clock, optionally shifted by an offset that a
/// test moves forward with [`Clock::advance`].
#[derive(Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time (0 in production).
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) forward by `by`. For tests.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("offset_ms", &self.offset_ms.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset() {
        let c = Clock::system();
        let d = c.clone();
        let before = d.now();
        c.advance(Duration::seconds(61));
        assert!(d.now() - before >= Duration::seconds(61));
    }
}
