//! The scheduler's notion of time, injectable so tests move it by hand.
//!
//! Invariants:
//! - `sleep_until(t)` returns only once `now() >= t`, and at once when `t` has passed.
//! - [`SystemClock`] re-reads the wall clock at least every [`MAX_SLEEP_SLICE_SECS`], so a
//!   clock step (NTP, a suspended laptop) delays a due time by at most that much.
//! - [`ManualClock`] never moves by itself: only [`ManualClock::set`] and
//!   [`ManualClock::advance`] move it, and they wake exactly the sleepers whose time has
//!   come. A sleeper whose time has not come is not woken, so tests can observe that nothing
//!   happens without waiting in real time.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};

/// Current time and waiting for a time; the scheduler reads time only through this.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// Completes once [`Clock::now`] has reached `deadline`.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()>;
}

/// Maximum single sleep of [`SystemClock`] before it reads the wall clock again.
pub const MAX_SLEEP_SLICE_SECS: u64 = 60;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let slice = std::time::Duration::from_secs(MAX_SLEEP_SLICE_SECS);
            loop {
                let Ok(left) = (deadline - Utc::now()).to_std() else {
                    return;
                };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(slice)).await;
            }
        })
    }
}

/// A clock that does not move until a test moves it.
pub struct ManualClock {
    state: Mutex<ManualState>,
    /// Bumped whenever a sleeper starts or stops waiting, for [`ManualClock::wait_for_sleeper`].
    sleepers_changed: watch::Sender<u64>,
}

struct ManualState {
    now: DateTime<Utc>,
    next_id: u64,
    sleepers: BTreeMap<u64, Sleeper>,
}

struct Sleeper {
    deadline: DateTime<Utc>,
    wake: oneshot::Sender<()>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            state: Mutex::new(ManualState {
                now: start,
                next_id: 0,
                sleepers: BTreeMap::new(),
            }),
            sleepers_changed: watch::channel(0).0,
        }
    }

    /// Moves the clock to `to` and wakes the sleepers whose deadline has come.
    ///
    /// # Panics
    /// When `to` is earlier than the current time: time never goes back.
    pub fn set(&self, to: DateTime<Utc>) {
        let mut state = self.state.lock().expect("clock lock is not poisoned");
        assert!(
            to >= state.now,
            "a manual clock cannot go back from {} to {to}",
            state.now
        );
        state.now = to;
        let due: Vec<u64> = state
            .sleepers
            .iter()
            .filter(|(_, sleeper)| sleeper.deadline <= to)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(sleeper) = state.sleepers.remove(&id) {
                // The receiver is gone only when the sleep was dropped.
                let _ = sleeper.wake.send(());
            }
        }
        drop(state);
        self.sleepers_changed.send_modify(|n| *n += 1);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::TimeDelta) {
        let to = self.now() + by;
        self.set(to);
    }

    /// Deadlines of everything currently sleeping on this clock, earliest first.
    pub fn deadlines(&self) -> Vec<DateTime<Utc>> {
        let state = self.state.lock().expect("clock lock is not poisoned");
        let mut deadlines: Vec<_> = state.sleepers.values().map(|s| s.deadline).collect();
        deadlines.sort();
        deadlines
    }

    /// Completes once something sleeps until exactly `deadline`. A test awaits this to know
    /// that the scheduler is waiting again before it asserts that nothing else happened.
    pub async fn wait_for_sleeper(&self, deadline: DateTime<Utc>) {
        let mut changed = self.sleepers_changed.subscribe();
        while !self.deadlines().contains(&deadline) {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Registers a sleeper, or returns `None` when its deadline has already come.
    fn register(&self, deadline: DateTime<Utc>) -> Option<(u64, oneshot::Receiver<()>)> {
        let mut state = self.state.lock().expect("clock lock is not poisoned");
        if deadline <= state.now {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        let (wake, woken) = oneshot::channel();
        state.sleepers.insert(id, Sleeper { deadline, wake });
        drop(state);
        self.sleepers_changed.send_modify(|n| *n += 1);
        Some((id, woken))
    }

    fn unregister(&self, id: u64) {
        let removed = self
            .state
            .lock()
            .expect("clock lock is not poisoned")
            .sleepers
            .remove(&id);
        if removed.is_some() {
            self.sleepers_changed.send_modify(|n| *n += 1);
        }
    }
}

/// Removes a sleeper from its clock when its sleep ends or is dropped.
struct SleeperGuard<'a> {
    clock: &'a ManualClock,
    id: u64,
}

impl Drop for SleeperGuard<'_> {
    fn drop(&mut self) {
        self.clock.unregister(self.id);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.state.lock().expect("clock lock is not poisoned").now
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some((id, woken)) = self.register(deadline) else {
                return;
            };
            let _guard = SleeperGuard { clock: self, id };
            // An error means the clock was dropped; nothing will ever wake this sleep.
            if woken.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn poll_once(future: &mut (impl Future<Output = ()> + Unpin)) -> Poll<()> {
        std::pin::Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn manual_sleep_ends_at_deadline() {
        let clock = ManualClock::new(at("2030-01-01T00:00:00Z"));
        let mut sleep = pin!(clock.sleep_until(at("2030-01-01T01:00:00Z")));
        assert!(poll_once(&mut sleep).is_pending());
        assert_eq!(clock.deadlines(), [at("2030-01-01T01:00:00Z")]);

        clock.advance(chrono::TimeDelta::minutes(59));
        assert!(poll_once(&mut sleep).is_pending());
        clock.advance(chrono::TimeDelta::minutes(1));
        assert!(poll_once(&mut sleep).is_ready());
        assert!(clock.deadlines().is_empty());
    }

    #[test]
    fn past_deadline_and_dropped_sleep_leave_no_sleeper() {
        let clock = ManualClock::new(at("2030-01-01T00:00:00Z"));
        let mut past = clock.sleep_until(at("2029-12-31T00:00:00Z"));
        assert!(poll_once(&mut past).is_ready());
        {
            let mut sleep = clock.sleep_until(at("2030-06-01T00:00:00Z"));
            assert!(poll_once(&mut sleep).is_pending());
            assert_eq!(clock.deadlines().len(), 1);
        }
        assert!(clock.deadlines().is_empty());
    }

    #[tokio::test]
    async fn system_sleep_past_deadline_returns() {
        let before = Utc::now() - chrono::TimeDelta::seconds(5);
        SystemClock.sleep_until(before).await;
        let soon = Utc::now() + chrono::TimeDelta::milliseconds(20);
        SystemClock.sleep_until(soon).await;
        assert!(Utc::now() >= soon);
    }
}
