//! A tenant's emit rate: the payload and key bytes its handlers may emit
//! per second, together (`[tenants.NAME] emit_mb_per_s`).
//!
//! A token bucket that holds at most one second's worth and refills as
//! time passes. An emit that would take more than is left gets `quota`, as
//! the per-event limits give it, and the handler's `on_error` applies to
//! the event: a tenant that emits too fast loses its own events to its own
//! policy, never the other tenants' throughput.

use std::sync::Mutex;
use std::time::Instant;

/// The bytes one tenant may still emit now.
#[derive(Debug)]
pub struct EmitRate {
    per_second: u64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    left: f64,
    at: Instant,
}

impl EmitRate {
    /// `per_second` bytes per second, a full second's worth at the start.
    pub fn new(per_second: u64) -> EmitRate {
        EmitRate {
            per_second,
            bucket: Mutex::new(Bucket {
                left: per_second as f64,
                at: Instant::now(),
            }),
        }
    }

    /// The rate, in bytes per second.
    pub fn per_second(&self) -> u64 {
        self.per_second
    }

    /// Takes `bytes` if that many are left at `now`; otherwise takes
    /// nothing and says no.
    pub fn take(&self, bytes: usize, now: Instant) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.left = (b.left + elapsed * self.per_second as f64).min(self.per_second as f64);
        b.at = b.at.max(now);
        if b.left >= bytes as f64 {
            b.left -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_second_s_worth_then_what_time_refills() {
        let r = EmitRate::new(1000);
        let t0 = Instant::now();
        assert!(r.take(600, t0));
        assert!(r.take(400, t0));
        assert!(!r.take(1, t0), "the second's worth is used up");
        assert!(!r.take(200, t0 + Duration::from_millis(100)), "100 ms refill 100 bytes");
        assert!(r.take(100, t0 + Duration::from_millis(100)));
        // Idle for a minute: still one second's worth, not sixty.
        let later = t0 + Duration::from_secs(60);
        assert!(r.take(1000, later));
        assert!(!r.take(1, later));
        assert!(
            !r.take(1001, later + Duration::from_secs(5)),
            "never more than the bucket"
        );
    }
}
