//! Stage 4: per-number exponential backoff.
//!
//! After `free` sends to a number, each further send must wait
//! `base × factor^k` (capped at `max`) after the previous forwarded one; the
//! level resets after `reset_after` without attempts. A send that would wait
//! no longer than `hold_up_to` is held and then sent instead of blocked.
//!
//! The slot is reserved in the same atomic step as the check, so a burst of
//! concurrent sends to one number cannot all pass; if a later stage blocks the
//! send, the reservation is undone.

use std::time::Duration;

use super::{Attempt, Policy, Reason, Stage, Step, Verdict};
use crate::base::clock::{ms, Millis};
use crate::config::{self, Action, Config};
use crate::store::{BackoffState, Store};

pub(crate) struct Backoff {
    free: u32,
    base: Millis,
    factor: f64,
    max: Millis,
    reset_after: Millis,
    hold_up_to: Option<Millis>,
    action: Action,
}

/// What `check` reserved, so it can be undone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    before: BackoffState,
    at: Millis,
}

enum Outcome {
    Ready,
    Hold(Millis),
    Wait(Millis),
}

impl Backoff {
    pub(crate) fn new(b: &config::Backoff, config: &Config) -> Self {
        Backoff {
            free: b.free,
            base: ms(b.base),
            factor: b.factor,
            max: ms(b.max),
            reset_after: ms(b.reset_after),
            hold_up_to: b.hold_up_to.map(ms),
            action: Policy::stage_action(config, config.actions.backoff),
        }
    }

    /// Wait required after the previous send when `sends` were made.
    /// The settings as a shared store's script needs them.
    pub(crate) fn params(&self) -> crate::store::redis_ops::BackoffParams {
        crate::store::redis_ops::BackoffParams {
            free: self.free,
            base: self.base,
            factor: self.factor,
            max: self.max,
            reset_after: self.reset_after,
            hold_up_to: self.hold_up_to,
            blocks: self.action.blocks(),
        }
    }

    fn wait(&self, sends: u32) -> Millis {
        let k = sends.saturating_sub(self.free);
        let w = self.base as f64 * self.factor.powi(k.min(1_000) as i32);
        if w.is_finite() && w < self.max as f64 {
            w as Millis
        } else {
            self.max
        }
    }

    fn judge(&self, s: &BackoffState, now: Millis) -> Outcome {
        if s.sends < self.free {
            return Outcome::Ready;
        }
        let ready_at = s.last_sent.saturating_add(self.wait(s.sends));
        if now >= ready_at {
            Outcome::Ready
        } else if self.hold_up_to.is_some_and(|h| ready_at - now <= h) {
            Outcome::Hold(ready_at - now)
        } else {
            Outcome::Wait(ready_at - now)
        }
    }

    fn expire(&self, s: &mut BackoffState, now: Millis) {
        if s.sends > 0 && now.saturating_sub(s.last_attempt) >= self.reset_after {
            *s = BackoffState::default();
        }
    }

    fn verdict(&self, a: &Attempt, s: &BackoffState, wait: Millis) -> Step {
        Step::Block(Verdict {
            stage: Stage::Backoff,
            rule: "backoff".into(),
            detail: Some(format!(
                "{}: {} sends, next allowed in {}",
                a.to.e164,
                s.sends,
                humantime::format_duration(Duration::from_secs(wait.div_ceil(1000)))
            )),
            reason: Reason::Backoff,
            action: self.action,
            blocked: None,
        })
    }

    /// Checks the attempt and, when it may go (or is only monitored),
    /// reserves its slot.
    pub(crate) fn check(
        &self,
        a: &Attempt,
        store: &dyn Store,
        now: Millis,
        trace: bool,
    ) -> (Step, Option<Duration>, Option<Reservation>) {
        let mut out = (Step::Pass(String::new()), None, None);
        store.backoff(&a.to.e164, now, &mut |s| {
            self.expire(s, now);
            let before = *s;
            s.last_attempt = now;
            let (at, step, hold) = match self.judge(&before, now) {
                Outcome::Ready => (
                    now,
                    pass!(trace, "{} earlier sends in this streak", before.sends),
                    None,
                ),
                Outcome::Hold(h) => (
                    now + h,
                    pass!(trace, "held for {h} ms, then sent"),
                    Some(Duration::from_millis(h)),
                ),
                Outcome::Wait(w) => {
                    let step = self.verdict(a, &before, w);
                    if self.action.blocks() {
                        out = (step, None, None);
                        return;
                    }
                    // Monitored: the send goes out now, so it counts.
                    (now, step, None)
                }
            };
            s.sends = s.sends.saturating_add(1);
            s.last_sent = at;
            out = (step, hold, Some(Reservation { before, at }));
        });
        out
    }

    /// The verdict without touching state (explain, after a block).
    pub(crate) fn peek(&self, a: &Attempt, store: &dyn Store, now: Millis) -> Step {
        let mut step = Step::Pass(String::new());
        store.backoff(&a.to.e164, now, &mut |s| {
            let mut s = *s;
            self.expire(&mut s, now);
            step = match self.judge(&s, now) {
                Outcome::Wait(w) => self.verdict(a, &s, w),
                _ => Step::Pass(format!("{} earlier sends in this streak", s.sends)),
            };
        });
        step
    }

    /// Gives back a reserved slot when a later stage blocked the send.
    pub(crate) fn undo(&self, a: &Attempt, store: &dyn Store, r: Reservation) {
        store.backoff(&a.to.e164, r.at, &mut |s| {
            if s.last_sent == r.at && s.sends == r.before.sends.saturating_add(1) {
                s.sends = r.before.sends;
                s.last_sent = r.before.last_sent;
            }
        });
    }
}
