//! The queue of actions the driver drains. Bytes and recipient lists live in
//! two arenas that are reused once the queue is empty, so a steady stream of
//! messages allocates nothing.

use std::collections::VecDeque;
use std::ops::Range;

use super::action::{Action, CloseReason, ConnId};
use super::frame::{FrameHeader, OpCode};

#[derive(Debug)]
enum Queued {
    Send { to: ConnId, bytes: Range<usize> },
    Broadcast { to: Range<usize>, bytes: Range<usize> },
    Close { conn: ConnId, reason: CloseReason },
}

/// Actions waiting for the driver.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Queued>,
    bytes: Vec<u8>,
    conns: Vec<ConnId>,
    /// Bytes queued so far, counted once per recipient.
    queued: u64,
}

impl Outbox {
    /// The byte arena: append what to send, then call [`send`](Self::send) or
    /// [`broadcast`](Self::broadcast) with the length it had before.
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Appends a whole unmasked frame whose payload is the concatenation of `parts`.
    pub fn frame(&mut self, opcode: OpCode, parts: &[&[u8]]) -> usize {
        let start = self.bytes.len();
        let len = parts.iter().map(|p| p.len() as u64).sum();
        FrameHeader { fin: true, opcode, mask: None, len }.encode(&mut self.bytes);
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        start
    }

    /// Bytes queued for clients since the outbox was made.
    pub fn queued_bytes(&self) -> u64 {
        self.queued
    }

    /// Queues the bytes from `start` to the end of the arena for `to`.
    pub fn send(&mut self, to: ConnId, start: usize) {
        let end = self.bytes.len();
        if start == end {
            return;
        }
        self.queued += (end - start) as u64;
        // Back-to-back sends to one client become one write.
        if let Some(Queued::Send { to: last, bytes }) = self.queue.back_mut() {
            if *last == to && bytes.end == start {
                bytes.end = end;
                return;
            }
        }
        self.queue.push_back(Queued::Send { to, bytes: start..end });
    }

    /// Queues the bytes from `start` to the end of the arena for each of `to`;
    /// returns how many recipients there were.
    pub fn broadcast(&mut self, to: impl Iterator<Item = ConnId>, start: usize) -> usize {
        let first = self.conns.len();
        self.conns.extend(to);
        let count = self.conns.len() - first;
        match count {
            0 => self.bytes.truncate(start),
            1 => {
                // A single recipient is a send; it may merge with the one before.
                let to = self.conns.pop().expect("one recipient was just pushed");
                self.send(to, start);
            }
            _ => {
                self.queued += ((self.bytes.len() - start) * count) as u64;
                self.queue.push_back(Queued::Broadcast { to: first..self.conns.len(), bytes: start..self.bytes.len() })
            }
        }
        count
    }

    /// Queues the end of `conn`'s transport.
    pub fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.queue.push_back(Queued::Close { conn, reason });
    }

    /// The next action; `None` once drained, which also recycles the arenas.
    pub fn poll(&mut self) -> Option<Action<'_>> {
        let Some(next) = self.queue.pop_front() else {
            self.bytes.clear();
            self.conns.clear();
            return None;
        };
        Some(match next {
            Queued::Send { to, bytes } => Action::Send { to, bytes: &self.bytes[bytes] },
            Queued::Broadcast { to, bytes } => Action::Broadcast { to: &self.conns[to], bytes: &self.bytes[bytes] },
            Queued::Close { conn, reason } => Action::Close { conn, reason },
        })
    }
}
