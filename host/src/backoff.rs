//! Capped exponential backoff, shared by reconnecting to the server and by
//! retrying a sink.

use std::time::Duration;

/// Delays that double from a first one up to a cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max` (at least `first`).
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            first,
            max: max.max(first),
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Starts over at the first delay.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let got: Vec<u64> = (0..10).map(|_| b.delay().as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.delay(), Duration::from_millis(100));
        assert_eq!(b.delay(), Duration::from_millis(200));
    }
}
