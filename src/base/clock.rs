//! Time as the policy sees it.
//!
//! Every rule that depends on time reads it through a [`Clock`], so tests and
//! the demo can run a day of traffic in seconds with a [`ManualClock`]. Time is
//! wall-clock milliseconds since the Unix epoch: the same value stamps fake
//! resources, so it must never come from a monotonic source that cannot be
//! turned into a date.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// RFC 3339 with milliseconds, UTC: `2023-11-21T01:02:03.456Z`.
pub fn rfc3339(ms: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Millis;

    fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now())
    }
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        ManualClock(Arc::new(AtomicU64::new(start)))
    }

    /// Starts at the current wall-clock time, so fake resources carry real dates.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set(&self, to: Millis) {
        self.0.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn ms(d: Duration) -> Millis {
    d.as_millis().min(u64::MAX as u128) as Millis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let a = ManualClock::new(1_000);
        let b = a.clone();
        assert_eq!(a.now(), 1_000);
        b.advance(Duration::from_secs(2));
        assert_eq!(a.now(), 3_000);
        a.set(10);
        assert_eq!(b.now(), 10);
    }
}
