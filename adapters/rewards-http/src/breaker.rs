//! A consecutive-failure circuit breaker: Closed → Open → Half-open (one probe) → Closed.
//!
//! The state sits behind a short `std::sync::Mutex` that is only ever held for a few
//! field updates, never across an `.await`. Every method takes `now` explicitly so the
//! state machine can be driven by a synthetic clock in tests.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; consecutive failures are counted.
    Closed,
    /// Calls fail fast until the cooldown has passed.
    Open,
    /// The cooldown passed: one probe call is in flight or about to be let through.
    HalfOpen,
}

impl BreakerState {
    /// The value exported by the `rewards_breaker_state` gauge.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// What kind of call a [`Permit`] admitted; a probe alone may close an open breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    Probe,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

/// Told every state transition (the adapter sets its gauge and logs).
type OnChange = Box<dyn Fn(BreakerState) + Send + Sync>;

/// The breaker. Share it by reference (the adapter owns one).
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
    on_change: OnChange,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("threshold", &self.threshold)
            .field("cooldown", &self.cooldown)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The call was refused because the breaker is open (or a probe is already in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

/// Admission of one call. Report the outcome with [`Permit::success`] or
/// [`Permit::failure`]; a permit dropped unreported (the caller's future was cancelled)
/// counts as a failure if it was the probe, so a cancelled probe cannot wedge the
/// breaker in half-open forever.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    kind: Kind,
    reported: bool,
}

impl CircuitBreaker {
    /// A closed breaker opening after `threshold` consecutive failures (at least 1) and
    /// probing after `cooldown`. `on_change` is told every state transition.
    pub fn new(
        threshold: u32,
        cooldown: Duration,
        on_change: impl Fn(BreakerState) + Send + Sync + 'static,
    ) -> Self {
        on_change(BreakerState::Closed);
        Self {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                probe_in_flight: false,
            }),
            on_change: Box::new(on_change),
        }
    }

    /// The state as of `now` (an open breaker whose cooldown passed reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open if self.cooled_down(&inner, now) => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Asks to make a call at `now`.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        let mut inner = self.lock();
        let kind = match inner.state {
            BreakerState::Closed => Kind::Normal,
            BreakerState::Open if self.cooled_down(&inner, now) => {
                inner.state = BreakerState::HalfOpen;
                inner.probe_in_flight = true;
                (self.on_change)(BreakerState::HalfOpen);
                Kind::Probe
            }
            BreakerState::Open => return Err(Rejected),
            BreakerState::HalfOpen if !inner.probe_in_flight => {
                inner.probe_in_flight = true;
                Kind::Probe
            }
            BreakerState::HalfOpen => return Err(Rejected),
        };
        Ok(Permit { breaker: self, kind, reported: false })
    }

    fn cooled_down(&self, inner: &Inner, now: Instant) -> bool {
        inner.opened_at.is_none_or(|at| now.saturating_duration_since(at) >= self.cooldown)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the few plain fields half-updated
        // in a way that matters more than refusing all calls forever would.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, kind: Kind, ok: bool, now: Instant) {
        let mut inner = self.lock();
        let before = inner.state;
        match (kind, ok) {
            (Kind::Probe, true) => {
                inner.state = BreakerState::Closed;
                inner.consecutive_failures = 0;
                inner.opened_at = None;
                inner.probe_in_flight = false;
            }
            (Kind::Probe, false) => {
                inner.state = BreakerState::Open;
                inner.opened_at = Some(now);
                inner.probe_in_flight = false;
            }
            // Answers of calls admitted before the breaker opened say nothing about
            // the service's recovery: only the probe decides then.
            (Kind::Normal, _) if inner.state != BreakerState::Closed => {}
            (Kind::Normal, true) => inner.consecutive_failures = 0,
            (Kind::Normal, false) => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                if inner.consecutive_failures >= self.threshold {
                    inner.state = BreakerState::Open;
                    inner.opened_at = Some(now);
                }
            }
        }
        if inner.state != before {
            (self.on_change)(inner.state);
        }
    }
}

impl Permit<'_> {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.kind == Kind::Probe
    }

    /// The call succeeded (for the breaker: the service answered sanely).
    pub fn success(mut self, now: Instant) {
        self.reported = true;
        self.breaker.record(self.kind, true, now);
    }

    /// The call failed.
    pub fn failure(mut self, now: Instant) {
        self.reported = true;
        self.breaker.record(self.kind, false, now);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.kind == Kind::Probe {
            self.breaker.record(Kind::Probe, false, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(5);

    fn breaker(n: u32) -> CircuitBreaker {
        CircuitBreaker::new(n, COOL, |_| {})
    }

    fn fail(b: &CircuitBreaker, now: Instant) {
        b.try_acquire(now).expect("admitted").failure(now);
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = breaker(3);
        let t = Instant::now();
        fail(&b, t);
        fail(&b, t);
        assert_eq!(b.state(t), BreakerState::Closed);
        fail(&b, t);
        assert_eq!(b.state(t), BreakerState::Open);
        assert_eq!(b.try_acquire(t).err(), Some(Rejected));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = breaker(3);
        let t = Instant::now();
        fail(&b, t);
        fail(&b, t);
        b.try_acquire(t).expect("admitted").success(t);
        fail(&b, t);
        fail(&b, t);
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let b = breaker(1);
        let t = Instant::now();
        fail(&b, t);
        assert!(b.try_acquire(t + COOL - Duration::from_millis(1)).is_err());
        let later = t + COOL;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        let probe = b.try_acquire(later).expect("probe admitted");
        assert!(probe.is_probe());
        assert!(b.try_acquire(later).is_err());
        assert!(b.try_acquire(later + COOL * 10).is_err());
        probe.success(later);
        assert_eq!(b.state(later), BreakerState::Closed);
        assert!(!b.try_acquire(later).expect("closed").is_probe());
    }

    #[test]
    fn a_failed_probe_reopens_for_another_cooldown() {
        let b = breaker(2);
        let t = Instant::now();
        fail(&b, t);
        fail(&b, t);
        let t2 = t + COOL;
        b.try_acquire(t2).expect("probe").failure(t2);
        assert_eq!(b.state(t2), BreakerState::Open);
        assert!(b.try_acquire(t2 + COOL - Duration::from_millis(1)).is_err());
        assert!(b.try_acquire(t2 + COOL).expect("second probe").is_probe());
    }

    #[test]
    fn a_dropped_probe_counts_as_a_failure() {
        let b = breaker(1);
        let t = Instant::now();
        fail(&b, t);
        drop(b.try_acquire(t + COOL).expect("probe"));
        assert_eq!(b.state(t + COOL), BreakerState::Open);
    }

    #[test]
    fn late_answers_of_pre_open_calls_do_not_close_it() {
        let b = breaker(1);
        let t = Instant::now();
        let early = b.try_acquire(t).expect("admitted");
        fail(&b, t);
        early.success(t);
        assert_eq!(b.state(t), BreakerState::Open);
    }

    #[test]
    fn transitions_are_reported() {
        use std::sync::Arc;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let b = CircuitBreaker::new(1, COOL, move |s| sink.lock().expect("lock").push(s));
        let t = Instant::now();
        fail(&b, t);
        b.try_acquire(t + COOL).expect("probe").success(t + COOL);
        use BreakerState::*;
        assert_eq!(*seen.lock().expect("lock"), vec![Closed, Open, HalfOpen, Closed]);
    }
}
