//! Flood control as a generic cell rate algorithm: one deadline per budget,
//! integer time, no timers. A client may run ahead of its rate by the burst,
//! never further.

use std::time::{Duration, Instant};

use super::config::FloodLimits;
use super::state::{ImportError, Reader, Writer};

/// One connection's two budgets: messages and bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RateLimiter {
    messages: Option<Instant>,
    bytes: Option<Instant>,
}

impl RateLimiter {
    /// Charges one message of `len` payload bytes at `now`; false when either
    /// budget is overdrawn.
    pub(crate) fn allow(&mut self, limits: &FloodLimits, len: usize, now: Instant) -> bool {
        let per_message = per_unit(1, u64::from(limits.messages_per_second));
        let message_slack = per_message * limits.message_burst;
        let per_bytes = per_unit(len as u64, limits.bytes_per_second);
        let byte_slack = per_unit(limits.byte_burst, limits.bytes_per_second);
        charge(&mut self.messages, per_message, message_slack, now)
            & charge(&mut self.bytes, per_bytes, byte_slack, now)
    }
}

impl RateLimiter {
    pub(crate) fn save(&self, w: &mut Writer) {
        w.opt(self.messages, Writer::time);
        w.opt(self.bytes, Writer::time);
    }

    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        Ok(Self { messages: r.opt(Reader::time)?, bytes: r.opt(Reader::time)? })
    }
}

/// The time `units` take at `rate` per second.
fn per_unit(units: u64, rate: u64) -> Duration {
    let nanos = u128::from(units) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Moves the theoretical arrival time on by `cost`; allowed while it stays
/// within `slack` (the whole burst) of now.
fn charge(tat: &mut Option<Instant>, cost: Duration, slack: Duration, now: Instant) -> bool {
    // A cost past what an Instant can hold is over any budget.
    let Some(next) = tat.map_or(now, |t| t.max(now)).checked_add(cost) else { return false };
    *tat = Some(next);
    next.saturating_duration_since(now) <= slack
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FloodLimits =
        FloodLimits { messages_per_second: 100, message_burst: 10, bytes_per_second: 10_000, byte_burst: 5_000 };

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::default();
        // The burst goes through at once...
        for i in 0..10 {
            assert!(r.allow(&LIMITS, 1, t0), "message {i}");
        }
        // ...the next does not, until the rate has paid for it.
        assert!(!r.allow(&LIMITS, 1, t0));
        let mut r = RateLimiter::default();
        for i in 0..1000 {
            assert!(r.allow(&LIMITS, 1, t0 + Duration::from_millis(10 * i)), "at the sustained rate forever");
        }
    }

    #[test]
    fn bytes_have_their_own_budget() {
        let t0 = Instant::now();
        let mut r = RateLimiter::default();
        assert!(r.allow(&LIMITS, 5_000, t0));
        assert!(!r.allow(&LIMITS, 1_000, t0));
        let mut r = RateLimiter::default();
        assert!(r.allow(&LIMITS, 5_000, t0));
        assert!(r.allow(&LIMITS, 1_000, t0 + Duration::from_millis(600)));
    }
}
