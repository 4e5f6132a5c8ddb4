//! Deadlines of every connection in one min-heap. Entries are never removed
//! early: a connection remembers the earliest entry it has, and entries that
//! no longer match are skipped when they surface.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::action::ConnId;

/// Pending deadlines, earliest first.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl TimerQueue {
    /// Adds a deadline for `conn`.
    pub(crate) fn push(&mut self, at: Instant, conn: ConnId) {
        self.heap.push(Reverse((at, conn)));
    }

    /// The earliest deadline, possibly stale.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Keeps only the entries `keep` approves, and gives back the rest's memory.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Instant, ConnId) -> bool) {
        self.heap.retain(|Reverse((at, conn))| keep(*at, *conn));
        self.heap.shrink_to_fit();
    }
}
