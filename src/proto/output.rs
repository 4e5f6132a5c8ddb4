//! Every connection's bytes waiting to be written, with the bound that makes
//! a client that stops reading a slow consumer. Bytes go in as the core
//! queues them and come out as the driver reports them written; the memory
//! held follows what is still to be written, however the two interleave.
//!
//! The outputs sit in a dense table of their own, indexed by connection slot,
//! apart from the rest of each connection's state: a broadcast to a room
//! touches these few bytes per recipient and nothing else.

use std::time::Instant;

use super::action::ConnId;
use super::frame::FrameHeader;
use super::state::{ImportError, Reader, Writer};

/// An output buffer emptied after holding more than this gives its memory
/// back, so a burst does not pin memory for the connection's lifetime.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Written bytes at the front are moved out once there are at least this
/// many and they are at least half the buffer: each byte is moved at most
/// once on average, and a client that reads but never quite catches up holds
/// no more than about twice its backlog.
const COMPACT_AFTER: usize = 4 * 1024;

/// Bytes queued for one connection, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Output {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    written: usize,
    /// For a connection whose output may move to another (a resumable
    /// session): where in `buf` whole frames start, one after another, once
    /// the HTTP response before them is out of the way. `None`: not tracked.
    frames: Option<usize>,
    /// The buffer has been emptied before. The first time it empties it
    /// gives its memory back: that batch is the upgrade's answer and its
    /// notices, and a client that then goes quiet (most of 10,000 idle
    /// connections) should hold nothing; one that plays allocates again once
    /// and keeps what it needs from then on.
    settled: bool,
}

impl Output {
    /// Bytes still to be written.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    /// How many bytes are still to be written.
    pub(crate) fn backlog(&self) -> usize {
        self.buf.len() - self.written
    }

    /// True if `len` more bytes keep the backlog within `limit`.
    pub(crate) fn fits(&self, len: usize, limit: usize) -> bool {
        self.backlog().saturating_add(len) <= limit
    }

    /// The buffer to append to; the caller has checked [`fits`](Self::fits)
    /// where the bound applies.
    pub(crate) fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Memory held, for `/metrics`.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The driver wrote `n` more bytes. More than are pending counts as all.
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        self.written = (self.written + n).min(self.buf.len());
        if self.written == self.buf.len() {
            self.written = 0;
            self.buf.clear();
            self.frames = self.frames.map(|_| 0);
            if self.buf.capacity() > KEEP_CAPACITY || !self.settled {
                self.buf = Vec::new();
            }
            self.settled = true;
        } else if self.written >= COMPACT_AFTER && self.written * 2 >= self.buf.len() {
            // Where frames are tracked, the cut falls on a frame's start, so they stay tracked.
            let cut = match self.frames {
                None => self.written,
                Some(start) if start > self.written => self.written,
                Some(start) => self.frame_holding(start, self.written),
            };
            self.buf.drain(..cut);
            self.written -= cut;
            self.frames = self.frames.map(|start| start.saturating_sub(cut));
            if self.buf.capacity() > KEEP_CAPACITY && self.buf.capacity() > 4 * self.buf.len() {
                self.buf.shrink_to(2 * self.buf.len());
            }
        }
    }

    /// Drops everything still queued and the memory with it.
    pub(crate) fn discard(&mut self) {
        *self = Self::default();
    }

    /// From now on, what is queued after the next `head` bytes is frames.
    pub(crate) fn track_frames(&mut self, head: usize) {
        self.frames = Some(self.buf.len() + head);
    }

    /// Where whole frames start in what is still to be written, when tracked.
    fn frames_in_pending(&self) -> Option<usize> {
        let start = self.frames?;
        Some(if start >= self.written {
            start - self.written
        } else {
            let holding = self.frame_holding(start, self.written);
            if holding < self.written {
                self.frame_end(holding) - self.written
            } else {
                0
            }
        })
    }

    /// Takes the whole frames not yet written, leaving the output empty: the
    /// rest of a frame the transport took only part of is dropped with it,
    /// since the client never saw all of it.
    pub(crate) fn take_frames(&mut self) -> Vec<u8> {
        let from = self.frames_in_pending().unwrap_or(0);
        let frames = self.pending()[from..].to_vec();
        let tracked = self.frames.is_some();
        self.discard();
        if tracked {
            self.frames = Some(0);
        }
        frames
    }

    /// The start of the frame that holds byte `at`, walking from `start`, a
    /// frame's start; `at` itself if a frame starts there.
    fn frame_holding(&self, mut start: usize, at: usize) -> usize {
        while start < at {
            let end = self.frame_end(start);
            if end > at {
                return start;
            }
            start = end;
        }
        start
    }

    /// Where the frame that starts at `start` ends (the end of the buffer if
    /// its header is not all there).
    fn frame_end(&self, start: usize) -> usize {
        match FrameHeader::parse(&self.buf[start..]) {
            Ok(Some((header, len))) => {
                start.saturating_add(len).saturating_add(header.len as usize).min(self.buf.len())
            }
            _ => self.buf.len(),
        }
    }
}

/// One slot of [`Outputs`].
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// The connection the slot holds, while it holds one.
    id: Option<ConnId>,
    /// Its bytes.
    pub(crate) output: Output,
    /// In the transmit queue since its output last changed.
    pub(crate) queued: bool,
    /// Passed its output bound: nothing more is queued, and it is cut off
    /// once the input at hand is handled.
    pub(crate) overflowed: bool,
    /// Finished: the slot is freed once its output is written.
    pub(crate) finished: bool,
    /// Parked: no transport; what is queued waits for the session's resume,
    /// and the driver is never given any of it.
    pub(crate) parked: bool,
    /// When something was last queued for it: a client the relay has sent
    /// nothing for a ping interval is pinged, so proxies see traffic both ways.
    pub(crate) last_queued: Option<Instant>,
    /// Which compression its messages take: the permessage-deflate window
    /// bits it agreed to (9 to 15), or 0 for plain frames. Kept beside the
    /// output so a broadcast reads nothing else per recipient.
    pub(crate) deflate: u8,
}

/// Every connection's output, by slot.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    slots: Vec<Slot>,
}

impl Outputs {
    /// Starts `conn`'s output, empty.
    pub(crate) fn open(&mut self, conn: ConnId) {
        if self.slots.len() <= conn.index() {
            self.slots.resize_with(conn.index() + 1, Slot::default);
        }
        self.slots[conn.index()] = Slot { id: Some(conn), ..Slot::default() };
    }

    /// `conn`'s output, while `conn` holds its slot.
    pub(crate) fn get(&self, conn: ConnId) -> Option<&Slot> {
        self.slots.get(conn.index()).filter(|s| s.id == Some(conn))
    }

    /// `conn`'s output, while `conn` holds its slot.
    pub(crate) fn get_mut(&mut self, conn: ConnId) -> Option<&mut Slot> {
        self.slots.get_mut(conn.index()).filter(|s| s.id == Some(conn))
    }

    /// Writes `conn`'s unwritten bytes, where whole frames start in them
    /// (when tracked), and whether it passed its bound.
    pub(crate) fn save(&self, conn: ConnId, w: &mut Writer) {
        let slot = self.get(conn);
        w.bytes(slot.map_or(&[], |s| s.output.pending()));
        w.opt(slot.and_then(|s| s.output.frames_in_pending()), Writer::len);
        w.bool(slot.is_some_and(|s| s.overflowed));
        w.opt(slot.and_then(|s| s.last_queued), Writer::time);
    }

    /// Starts `conn`'s output with what [`save`](Self::save) wrote; `finished`
    /// for a connection the core is done with, `parked` for a parked session.
    pub(crate) fn load(
        &mut self,
        conn: ConnId,
        finished: bool,
        parked: bool,
        r: &mut Reader<'_>,
    ) -> Result<(), ImportError> {
        let pending = r.bytes()?;
        let frames = r.opt(Reader::index)?;
        let overflowed = r.bool()?;
        let last_queued = r.opt(Reader::time)?;
        if frames.is_some_and(|f| f > pending.len()) {
            return Err(ImportError::Corrupt("frames that start past the output"));
        }
        self.open(conn);
        let slot = &mut self.slots[conn.index()];
        slot.output.frames = frames;
        slot.output.buf().extend_from_slice(pending);
        slot.overflowed = overflowed;
        slot.finished = finished;
        slot.parked = parked;
        slot.last_queued = last_queued;
        Ok(())
    }

    /// Frees `conn`'s slot and whatever it still held.
    pub(crate) fn close(&mut self, conn: ConnId) {
        if let Some(slot) = self.get_mut(conn) {
            *slot = Slot::default();
        }
    }

    /// Every live slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.id.is_some())
    }

    /// Gives back the memory of slots past the last live one.
    pub(crate) fn shrink_to_fit(&mut self) {
        let used = self.slots.iter().rposition(|s| s.id.is_some()).map_or(0, |i| i + 1);
        self.slots.truncate(used);
        self.slots.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that takes a little less than is queued each time never
    /// empties the buffer: memory must follow the backlog, not the total.
    #[test]
    fn memory_follows_the_backlog_when_the_reader_never_catches_up() {
        let mut out = Output::default();
        let message = [7u8; 1000];
        let mut most = 0;
        for i in 0..100_000 {
            out.buf().extend_from_slice(&message);
            let backlog = out.backlog();
            // Lags by about 20 KB, reading in pieces.
            let n = if backlog > 20_000 { 1000 + i % 7 } else { 500 };
            out.consume(n.min(backlog - 1));
            most = most.max(out.capacity());
        }
        assert!(out.backlog() > 19_000, "it never caught up: {}", out.backlog());
        assert!(most < 256 * 1024, "{most} bytes held for a backlog of about 20 KB");
    }

    #[test]
    fn pending_bytes_keep_their_order_across_compaction() {
        let mut out = Output::default();
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for i in 0..20_000u32 {
            let bytes = i.to_le_bytes();
            out.buf().extend_from_slice(&bytes);
            sent.extend_from_slice(&bytes);
            let n = (i as usize * 31) % 11;
            let n = n.min(out.backlog());
            got.extend_from_slice(&out.pending()[..n]);
            out.consume(n);
        }
        got.extend_from_slice(out.pending());
        assert_eq!(got, sent);
    }

    #[test]
    fn a_burst_gives_its_memory_back_once_written() {
        let mut out = Output::default();
        out.buf().extend_from_slice(&[0; 1 << 20]);
        out.consume(1 << 20);
        assert_eq!(out.capacity(), 0);
        assert!(out.fits(10, 10) && !out.fits(11, 10));
    }

    #[test]
    fn the_first_batch_gives_its_memory_back_and_later_ones_keep_theirs() {
        let mut out = Output::default();
        // The 101, `self` and a room's join list.
        out.buf().extend_from_slice(&[1; 300]);
        out.consume(300);
        assert_eq!(out.capacity(), 0, "a client that goes quiet holds nothing");
        out.buf().extend_from_slice(&[2; 200]);
        out.consume(200);
        let kept = out.capacity();
        assert!(kept >= 200);
        out.buf().extend_from_slice(&[3; 200]);
        out.consume(200);
        out.buf().extend_from_slice(&[4; 200]);
        assert_eq!(out.capacity(), kept, "a client that plays reuses its buffer");
    }
}
