//! A handler's circuit breaker: a handler that keeps failing is suspended
//! for a while, so that it cannot starve the handlers beside it.
//!
//! Closed, the breaker counts failures that cost the process (timeouts,
//! traps, instances that cannot be created; not errors a handler returns)
//! in a sliding window; `failures` of them within `window` open it. Open, the
//! handler is not called: each of its changes fails at once, under its own
//! `on_error`, as "suspended". After `cooldown` one change is let through
//! (half-open): success closes the breaker, failure opens it for another
//! `cooldown`. Time is read only when a failure is counted or while the
//! breaker is open, never on the path of a healthy handler.

use std::collections::VecDeque;
use std::time::Instant;

use crate::config::BreakerPlan;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed,
    /// Calls are refused until the instant.
    Open(Instant),
    /// One trial call is in progress.
    HalfOpen,
}

/// Whether a change may be handed to the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Call it.
    Call,
    /// Call it as the trial after a cool-down.
    Trial,
    /// Suspended: do not call it.
    Suspended,
}

/// What a call's outcome did to the breaker, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// It opened (or reopened after a failed trial).
    Opened,
    /// A trial succeeded: it closed.
    Closed,
}

/// One handler's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerPlan,
    state: State,
    /// When the failures in the window happened, oldest first.
    recent: VecDeque<Instant>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerPlan) -> Breaker {
        Breaker {
            config,
            state: State::Closed,
            recent: VecDeque::new(),
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When a change could next be handed to the handler: any time if
    /// closed (`now`), at the end of the cool-down if open, not while a
    /// trial is in progress.
    pub fn callable_at(&self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Closed => Some(now),
            State::Open(until) => Some(until),
            State::HalfOpen => None,
        }
    }

    /// Ends an open breaker's cool-down now: the next change is a trial
    /// (a new version of the handler was swapped in).
    pub fn cool_down_now(&mut self, now: Instant) {
        if let State::Open(_) = self.state {
            self.state = State::Open(now);
        }
    }

    /// Opens the breaker with its cool-down over: the next change is a
    /// trial (the handler starts with changes held in a previous run).
    pub fn trial_first(&mut self, now: Instant) {
        self.state = State::Open(now);
    }

    /// Whether the next change may be handed to the handler, at `now()`.
    pub fn admit(&mut self, now: impl FnOnce() -> Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Call,
            State::HalfOpen => Admit::Suspended,
            State::Open(until) => {
                if now() >= until {
                    self.state = State::HalfOpen;
                    Admit::Trial
                } else {
                    Admit::Suspended
                }
            }
        }
    }

    /// The call admitted last ended, at `now`: with a timeout or trap
    /// (`costly`), or otherwise. An error the handler returned itself is
    /// not the breaker's business: it ends a trial as a success does, so
    /// the handler is not left suspended with no trial to come.
    pub fn ended(&mut self, costly: bool, now: impl FnOnce() -> Instant) -> Transition {
        if costly { self.failed(now()) } else { self.succeeded() }
    }

    /// Whether a change may not be handed to the handler now: open with
    /// its cool-down still running, or a trial in progress. A closed
    /// breaker reads no clock.
    pub fn refuses(&self, now: impl FnOnce() -> Instant) -> bool {
        match self.state {
            State::Closed => false,
            State::HalfOpen => true,
            State::Open(until) => now() < until,
        }
    }

    /// The call admitted last succeeded.
    pub fn succeeded(&mut self) -> Transition {
        match self.state {
            State::HalfOpen => {
                self.state = State::Closed;
                self.recent.clear();
                Transition::Closed
            }
            _ => Transition::None,
        }
    }

    /// The call admitted last failed, at `now`.
    pub fn failed(&mut self, now: Instant) -> Transition {
        match self.state {
            State::HalfOpen => {
                self.state = State::Open(now + self.config.cooldown);
                Transition::Opened
            }
            State::Open(_) => Transition::None,
            State::Closed => {
                if self.config.failures == 0 {
                    return Transition::None;
                }
                while self
                    .recent
                    .front()
                    .is_some_and(|&t| now.duration_since(t) > self.config.window)
                {
                    self.recent.pop_front();
                }
                self.recent.push_back(now);
                if self.recent.len() >= self.config.failures as usize {
                    self.recent.clear();
                    self.state = State::Open(now + self.config.cooldown);
                    Transition::Opened
                } else {
                    Transition::None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerPlan {
            failures: 3,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            hold_bytes: None,
            hold_in_file: false,
        })
    }

    #[test]
    fn a_trial_that_ends_in_the_handler_s_own_error_closes_it() {
        let t0 = Instant::now();
        let mut b = breaker();
        for i in 0..3 {
            b.ended(true, || t0 + Duration::from_millis(i));
        }
        assert!(b.refuses(|| t0 + Duration::from_secs(29)));
        assert!(!b.refuses(|| t0 + Duration::from_secs(31)));
        assert_eq!(b.admit(|| t0 + Duration::from_secs(31)), Admit::Trial);
        assert!(b.refuses(|| unreachable!("a trial in progress reads no clock")));
        assert_eq!(
            b.ended(false, || unreachable!("a success reads no clock")),
            Transition::Closed
        );
        assert!(!b.refuses(|| unreachable!("a closed breaker reads no clock")));
        assert_eq!(
            b.callable_at(t0),
            Some(t0),
            "not left waiting for a trial that never comes"
        );
    }

    #[test]
    fn failures_within_the_window_open_it_and_the_cooldown_lets_one_trial_through() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert_eq!(b.admit(|| unreachable!("a closed breaker reads no clock")), Admit::Call);
        assert_eq!(b.failed(t0), Transition::None);
        assert_eq!(b.failed(t0 + Duration::from_secs(1)), Transition::None);
        assert_eq!(b.failed(t0 + Duration::from_secs(2)), Transition::Opened);
        let opened = t0 + Duration::from_secs(2);
        assert_eq!(b.admit(|| opened + Duration::from_secs(29)), Admit::Suspended);
        assert_eq!(b.admit(|| opened + Duration::from_secs(30)), Admit::Trial);
        // Only one trial at a time.
        assert_eq!(b.admit(|| opened + Duration::from_secs(30)), Admit::Suspended);
        assert_eq!(b.succeeded(), Transition::Closed);
        assert_eq!(b.state(), State::Closed);
        // The window starts again: two more failures do not open it.
        assert_eq!(b.failed(opened + Duration::from_secs(31)), Transition::None);
        assert_eq!(b.failed(opened + Duration::from_secs(32)), Transition::None);
    }

    #[test]
    fn a_failed_trial_opens_it_for_another_cooldown() {
        let t0 = Instant::now();
        let mut b = breaker();
        for i in 0..3 {
            b.failed(t0 + Duration::from_millis(i));
        }
        let at = t0 + Duration::from_secs(40);
        assert_eq!(b.admit(|| at), Admit::Trial);
        assert_eq!(b.failed(at), Transition::Opened);
        assert_eq!(b.state(), State::Open(at + Duration::from_secs(30)));
        assert_eq!(b.admit(|| at + Duration::from_secs(1)), Admit::Suspended);
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_open_it() {
        let t0 = Instant::now();
        let mut b = breaker();
        for i in 0..100 {
            assert_eq!(b.failed(t0 + Duration::from_secs(6 * i)), Transition::None);
        }
        assert_eq!(b.state(), State::Closed);
        assert!(b.recent.len() <= 3, "the window is pruned");
    }

    #[test]
    fn a_cool_down_can_end_early_and_a_first_trial_can_be_asked_for() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert_eq!(b.callable_at(t0), Some(t0));
        b.cool_down_now(t0);
        assert_eq!(b.state(), State::Closed, "a closed breaker has no cool-down to end");
        for i in 0..3 {
            b.failed(t0 + Duration::from_millis(i));
        }
        let until = t0 + Duration::from_millis(2) + Duration::from_secs(30);
        assert_eq!(b.callable_at(t0), Some(until));
        let later = t0 + Duration::from_secs(1);
        b.cool_down_now(later);
        assert_eq!(b.admit(|| later), Admit::Trial);
        assert_eq!(b.callable_at(later), None, "a trial is in progress");
        b.succeeded();
        b.trial_first(later);
        assert_eq!(b.admit(|| later), Admit::Trial);
    }

    #[test]
    fn zero_failures_means_never() {
        let mut b = Breaker::new(BreakerPlan {
            failures: 0,
            ..BreakerPlan::default()
        });
        let t0 = Instant::now();
        for i in 0..1000 {
            assert_eq!(b.failed(t0 + Duration::from_millis(i)), Transition::None);
        }
        assert_eq!(b.admit(|| t0), Admit::Call);
        assert!(b.recent.is_empty());
    }
}
