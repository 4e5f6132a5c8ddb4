//! [`Relay`]: every connection, every room, and the routing between them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;
use sha2::{Digest, Sha256};
use slab::Slab;

use super::action::{Action, CloseReason, ConnId};
use super::admission::{self, Admission, Verdict, MAX_SUBJECT};
use super::api::{self, ApiReply, ApiRequest, To, Who};
use super::budget::Budget;
use super::config::{Config, ConfigError, Listener, Mode};
use super::conn::{Conn, Pending, Phase};
use super::deflate::{self, Agreed, Compressors};
use super::envelope::{self, Target};
use super::error::{HandshakeError, ProtocolError, RelayError};
use super::frame::{encode_compressed_frame, encode_frame, FrameHeader, OpCode};
use super::handshake::{ApiCall, Request, RequestReader};
use super::http::{self, Resource};
use super::message::{Message, MessageDecoder};
use super::metrics::{self, Gauges, ProcessInfo, Snapshot, TurnHistogram};
use super::output::{Outputs, Slot};
use super::proxy::Proxied;
use super::rate::RateLimiter;
use super::room::{Rooms, Seat};
use super::shard::{shard_of, Shard};
use super::state::{ImportError, Reader, Writer, MAGIC as STATE_MAGIC, STATE_VERSION};
use super::stats::{Stats, TlsFailure};
use super::timer::TimerQueue;

/// The whole relay as a state machine: bytes and time in, bytes and actions
/// out. It reads no clock, opens no socket and draws no random number: the
/// same inputs give the same outputs, which is what makes it testable without
/// sockets and embeddable in any event loop.
///
/// # The driver's contract
///
/// A driver owns the sockets and the clock, and follows these rules; the mio
/// server in this crate and `examples/tokio_embed.rs` are two such drivers.
///
/// 1. **Time.** Read the clock once per wake-up and pass that `Instant` to
///    every call made for it.
/// 2. **Input.** Tell the core what happened: a new connection
///    ([`handle_connect`](Self::handle_connect), or
///    [`handle_connect_on`](Self::handle_connect_on) for the operator's
///    port), bytes read ([`handle_read`](Self::handle_read)), the peer's end
///    of stream ([`handle_eof`](Self::handle_eof): what is queued for it is
///    still written), a transport that failed or was reset
///    ([`handle_close`](Self::handle_close): nothing more can be written),
///    and deadlines reached ([`handle_timeout`](Self::handle_timeout)).
///    A [`ConnId`] the core no longer knows is ignored, so a driver need not
///    track which of its ids are stale.
/// 3. **Actions.** After input, drain [`poll_action`](Self::poll_action)
///    until it returns `None`. [`Action::Close`] ends a connection for the
///    core: stop feeding it (reading and discarding is fine), write what it
///    still has pending, then shut the socket down. Every connection gets
///    exactly one `Close`.
/// 4. **Output.** The core owns every connection's outgoing bytes, up to the
///    bound [`Config::max_pending`]: a client whose backlog would pass it is
///    a slow consumer, leaves its room and is closed; its peers never wait
///    for it, and the driver needs no buffer of its own.
///    [`poll_transmit`](Self::poll_transmit) names each connection whose
///    output changed; write [`pending`](Self::pending) to it and report what
///    the socket took with [`handle_written`](Self::handle_written) (or let
///    [`write_to`](Self::write_to) do both). When a socket takes less than
///    all, write again once it is writable: [`pending`](Self::pending) still
///    holds the rest. Writing after all input of a wake-up coalesces every
///    message for a client into one write.
/// 5. **Sleep** until [`poll_timeout`](Self::poll_timeout) at the latest,
///    then call [`handle_timeout`](Self::handle_timeout).
#[derive(Debug)]
pub struct Relay {
    config: Config,
    /// Which of the process's cores this is.
    shard: Shard,
    /// The caps it shares with the other shards.
    budget: Budget,
    conns: Slab<Conn>,
    /// Every connection's bytes to write, by slot.
    outputs: Outputs,
    next_generation: u32,
    rooms: Rooms,
    timers: TimerQueue,
    actions: VecDeque<Action>,
    /// Connections whose output changed since the driver last took them,
    /// from `transmit_next` on.
    transmit: Vec<ConnId>,
    transmit_next: usize,
    /// Connections that passed their output bound during the input at hand.
    overflowed: Vec<ConnId>,
    /// One frame being built, for one recipient or many: a broadcast is
    /// encoded once and the same bytes go to every recipient.
    scratch: Vec<u8>,
    /// A frame of the relay's own (a notice, a ping, a close), built while
    /// `scratch` may hold the message being handled.
    notice: Vec<u8>,
    /// The recipients of a frame.
    recipients: Vec<ConnId>,
    /// permessage-deflate's compressors, one per window size in use.
    compressors: Compressors,
    /// The message at hand compressed for each window size, as recipients ask for it.
    variants: Variants,
    stats: Stats,
    turns: TurnHistogram,
    process: ProcessInfo,
    shutting_down: bool,
    /// Upgraded connections not yet finished, counted against `max_clients`.
    open: usize,
    /// Connections still in their handshake, counted against `max_handshakes`.
    pending: usize,
    /// Connections in the order they arrived, oldest first, for pushing out the
    /// oldest handshake. Entries that have since left the handshake are skipped.
    arrivals: VecDeque<ConnId>,
    /// Resumable sessions, open or parked, by the SHA-256 of their key: a
    /// lookup by digest reveals nothing of a key through its timing.
    sessions: BTreeMap<[u8; 32], ConnId>,
    /// Sessions parked, counted against `max_parked`.
    parked: usize,
    /// The latest time the driver passed in: when what is queued now is queued.
    now: Option<Instant>,
}

/// What one decoded message asks of the relay, worked out while the decoder
/// still lends the message; the frame to send, if any, is in `scratch`.
enum Step {
    /// The connection is finished or gone: the rest of the input is discarded.
    Gone,
    /// The input ran out in the middle of a message.
    NeedMore,
    /// Nothing to do: a pong, or anything but a close frame while closing.
    Nothing,
    /// The frame is a pong for the sender.
    Pong,
    /// The frame is the message echoed to its sender; `compressed` if it
    /// arrived compressed, and so goes back compressed.
    Echo { compressed: bool },
    /// The frame is the message from `from`, for `target` in its room.
    Route { from: Seat, target: Target },
    /// The message breaks the relay's format or flood control: close it.
    Reject(RelayError),
    /// The bytes break RFC 6455: fail the connection.
    Fail(ProtocolError),
    /// The client's close frame, to be answered.
    ClientClose(Option<u16>),
    /// The connection is over, for this reason.
    Finish(CloseReason),
}

/// One message as the recipients that agreed to permessage-deflate get it:
/// compressed once per window size (9 to 15 bits), when the first such
/// recipient comes up, and the same bytes for every other.
#[derive(Debug, Default)]
struct Variants {
    /// The compressed frame for each window size, at `bits - 8`.
    frames: [Vec<u8>; 8],
    state: [Variant; 8],
    /// The compressed payload, before its frame header.
    deflated: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Variant {
    /// Not compressed for this window yet.
    #[default]
    NotYet,
    /// In `frames`.
    Compressed,
    /// Sent plain: under the threshold, or no smaller compressed.
    Plain,
}

/// What happens to output still queued when a connection finishes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leftover {
    /// It is written: the peer can still read.
    Flush,
    /// It is dropped: the transport is gone, or the peer does not read.
    Discard,
}

/// Whether a queued frame counts against the output bound.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// It does: a client past the bound is a slow consumer.
    Applies,
    /// It does not: the answer to a request, the first thing a connection is
    /// sent, which the configuration guarantees fits.
    Exempt,
}

impl Relay {
    /// A relay with no connections, if `config` is one it can run with.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::sharded(config, Shard::ALONE, Budget::new())
    }

    /// One of `shard.count` relays that share a process's rooms: it serves
    /// the rooms [`shard_of`](crate::shard_of) gives it and hands every other
    /// upgrade to its shard ([`Action::Handoff`]). `budget` is shared by all
    /// of them, so `max_clients`, `max_rooms` and `max_clients_per_ip` hold
    /// for the process.
    pub fn sharded(config: Config, shard: Shard, budget: Budget) -> Result<Self, ConfigError> {
        config.validate()?;
        if shard.index >= shard.count || shard.count > usize::from(u16::MAX) {
            return Err(ConfigError::BadShard { index: shard.index, count: shard.count });
        }
        Ok(Self {
            config,
            shard,
            budget,
            conns: Slab::new(),
            outputs: Outputs::default(),
            next_generation: 0,
            rooms: Rooms::default(),
            timers: TimerQueue::default(),
            actions: VecDeque::new(),
            transmit: Vec::new(),
            transmit_next: 0,
            overflowed: Vec::new(),
            scratch: Vec::new(),
            notice: Vec::new(),
            recipients: Vec::new(),
            compressors: Compressors::default(),
            variants: Variants::default(),
            stats: Stats::default(),
            turns: TurnHistogram::default(),
            process: ProcessInfo::default(),
            shutting_down: false,
            open: 0,
            pending: 0,
            arrivals: VecDeque::new(),
            sessions: BTreeMap::new(),
            parked: 0,
            now: None,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Running totals: messages, deliveries, closes by reason, refusals by status.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Connections the core holds: in any phase, or finished with output
    /// still to be written.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Rooms that have clients.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// The ids in the room named `name`, in join order.
    pub fn members(&self, name: &[u8]) -> Vec<u64> {
        self.rooms.by_name(name).map_or_else(Vec::new, |r| r.members().iter().map(|m| m.id).collect())
    }

    /// The room name and id of `conn`, while it is in a room.
    pub fn member(&self, conn: ConnId) -> Option<(&[u8], u64)> {
        let seat = self.get(conn)?.seat()?;
        Some((&self.rooms.get(seat.room)?.name, seat.id))
    }

    /// True once [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Appends every counter and gauge in the Prometheus text format: the body
    /// of `/metrics`, for drivers that expose it some other way.
    pub fn render_metrics(&self, out: &mut Vec<u8>) {
        metrics::render(&[self.snapshot()], out);
    }

    /// This core's counters and gauges now, for a page that covers several
    /// ([`render_metrics`](crate::render_metrics)).
    pub fn snapshot(&self) -> Snapshot {
        let mut gauges = Gauges {
            connections: self.conns.len(),
            handshakes: self.pending,
            clients: self.open,
            rooms: self.rooms.len(),
            parked: self.parked,
            ..Gauges::default()
        };
        for (_, c) in &self.conns {
            gauges.input_buffers += c.decoder.capacity();
            gauges.deflate_buffers += c.decoder.inflate_memory();
            if c.deflate.is_some() && matches!(c.phase, Phase::Open { .. } | Phase::Closing { .. }) {
                gauges.deflate_clients += 1;
            }
        }
        gauges.deflate_buffers += self.compressors.memory()
            + self.variants.frames.iter().map(Vec::capacity).sum::<usize>()
            + self.variants.deflated.capacity();
        for slot in self.outputs.iter() {
            gauges.output_buffers += slot.output.capacity();
            gauges.pending += slot.output.backlog();
        }
        let (stats, turns) = (self.stats.clone(), self.turns.clone());
        Snapshot { shard: self.shard.index, stats, gauges, turns, process: self.process }
    }

    /// A new transport connection on the public port; the client's first bytes
    /// are its HTTP request.
    pub fn handle_connect(&mut self, now: Instant) -> ConnId {
        self.handle_connect_on(Listener::Public, None, now)
    }

    /// A new transport connection on `listener`, from `peer` if the driver
    /// knows it (for logs and `max_clients_per_ip`; a PROXY protocol header
    /// overrides it).
    pub fn handle_connect_on(&mut self, listener: Listener, peer: Option<SocketAddr>, now: Instant) -> ConnId {
        self.stats.connections += 1;
        self.open_conn(listener, peer, now)
    }

    /// A connection another shard accepted and handed over
    /// ([`Action::Handoff`]). Then feed it the bytes that came with it, with
    /// [`handle_read`](Self::handle_read): they are handled as if this core
    /// had read them itself. Unlike [`handle_connect_on`](Self::handle_connect_on)
    /// it does not count as a connection accepted: the shard that accepted it did.
    pub fn handle_handoff(&mut self, listener: Listener, peer: Option<SocketAddr>, now: Instant) -> ConnId {
        self.open_conn(listener, peer, now)
    }

    fn open_conn(&mut self, listener: Listener, peer: Option<SocketAddr>, now: Instant) -> ConnId {
        self.now = Some(now);
        let entry = self.conns.vacant_entry();
        // Slab keys are dense; a driver holding four billion connections is out of scope.
        let index = entry.key() as u32;
        let id = ConnId { shard: self.shard.index as u16, index, generation: self.next_generation };
        self.next_generation = self.next_generation.wrapping_add(1);
        let deadline = now.checked_add(self.config.handshake_timeout);
        entry.insert(Conn {
            id,
            listener,
            phase: Phase::Handshake {
                // The load balancer fronts the public port; operators reach theirs directly.
                reader: RequestReader::new(
                    self.config.handshake,
                    self.config.proxy_protocol && listener == Listener::Public,
                    (listener == Listener::Admin && self.config.api_key.is_some()).then_some(self.config.max_api_body),
                ),
                deadline,
            },
            decoder: MessageDecoder::new(self.config.message),
            peer,
            counted_ip: None,
            admitted: false,
            last_read: now,
            scheduled: None,
            rate: RateLimiter::default(),
            session: None,
            deflate: None,
        });
        self.outputs.open(id);
        self.schedule(id, deadline);
        self.pending += 1;
        self.arrivals.push_back(id);
        self.push_out_handshakes();
        id
    }

    /// Bytes read from `conn`'s transport.
    pub fn handle_read(&mut self, conn: ConnId, bytes: &[u8], now: Instant) {
        self.now = Some(now);
        let Some(c) = self.conns.get_mut(conn.index()).filter(|c| c.id == conn) else { return };
        if matches!(c.phase, Phase::Done | Phase::Parked { .. }) {
            return;
        }
        c.last_read = now;
        self.stats.bytes_received += bytes.len() as u64;
        if let Phase::Admitting { early, .. } = &mut c.phase {
            // Kept for when the verdict comes, within what could be queued for it the other way.
            if early.len() + bytes.len() > self.config.max_pending {
                self.refuse(conn, HandshakeError::TooEarly);
            } else {
                early.extend_from_slice(bytes);
            }
        } else if let Phase::Handshake { reader, .. } = &mut c.phase {
            if reader.is_complete() {
                // Answered, or waiting for the driver's answer: a client has no more to say.
                return;
            }
            match reader.feed(bytes) {
                Ok(None) => {}
                Ok(Some((request, used))) => {
                    if self.complete_handshake(conn, request, &bytes[used..], now) {
                        self.read_frames(conn, &bytes[used..], now);
                    }
                }
                Err(e) => self.refuse(conn, e),
            }
        } else {
            self.read_frames(conn, bytes, now);
        }
        if let Some(c) = self.get_mut(conn) {
            c.decoder.trim();
        }
        self.cut_slow_consumers();
    }

    /// `conn`'s peer ended its stream (EOF): it sends nothing more, but may
    /// still read. A connection that did not close cleanly first leaves its
    /// room as if its transport had closed; what is queued for it stays
    /// queued, to be written before the socket closes.
    pub fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        self.now = Some(now);
        if let Some(reason) = self.get(conn).and_then(ending_reason) {
            if !self.park(conn, reason, now) {
                self.finish(conn, reason, Leftover::Flush);
            }
            self.cut_slow_consumers();
        }
    }

    /// `conn`'s transport failed: reset, or an error reading or writing it.
    /// Nothing more can be written; what was queued is dropped.
    pub fn handle_close(&mut self, conn: ConnId, now: Instant) {
        self.now = Some(now);
        let Some(c) = self.get(conn) else { return };
        let parked = matches!(c.phase, Phase::Parked { .. });
        match ending_reason(c) {
            Some(reason) if self.park(conn, reason, now) => {}
            Some(reason) => self.finish(conn, reason, Leftover::Discard),
            // A parked session has no transport to fail.
            None if parked => {}
            // Finished already, with output the driver can no longer write.
            None => self.release(conn),
        }
        self.cut_slow_consumers();
    }

    /// The driver wrote the first `n` bytes of [`pending`](Self::pending) to
    /// `conn`'s transport.
    pub fn handle_written(&mut self, conn: ConnId, n: usize) {
        let Some(slot) = self.outputs.get_mut(conn).filter(|slot| !slot.parked) else { return };
        if consume(slot, n, &mut self.stats) {
            self.release(conn);
        }
    }

    /// Time has reached `now`: fire every deadline due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        while let Some((at, conn)) = self.timers.pop_due(now) {
            let Some(c) = self.get_mut(conn) else { continue };
            if c.scheduled != Some(at) {
                continue;
            }
            c.scheduled = None;
            self.on_timer(conn, now);
        }
        self.cut_slow_consumers();
    }

    /// Counts a TLS connection that failed before its request, which only a
    /// driver that terminates TLS can see (the core gets plaintext alone).
    pub fn record_tls_failure(&mut self, failure: TlsFailure) {
        self.stats.count_tls_failure(failure);
    }

    /// What the process knows of itself, shown on `/metrics`: its start time
    /// and how many takeovers brought it here.
    pub fn set_process_info(&mut self, info: ProcessInfo) {
        self.process = info;
    }

    /// What [`set_process_info`](Self::set_process_info) last set.
    pub fn process_info(&self) -> ProcessInfo {
        self.process
    }

    /// How long one turn of the driver's event loop took, from its wake-up
    /// to its last write, for the `/metrics` histogram.
    pub fn record_loop_turn(&mut self, turn: Duration) {
        self.turns.record(turn);
    }

    /// Stops the relay: refuses handshakes in progress with 503 and sends every
    /// client close 1001. Connections then end as their close handshakes do.
    pub fn shutdown(&mut self, now: Instant) {
        self.now = Some(now);
        self.shutting_down = true;
        // Every room is dissolving at once: nobody needs to hear who quits.
        for _ in 0..self.rooms.len() {
            self.budget.give_room();
        }
        self.rooms.clear();
        let conns: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for conn in conns {
            let Some(c) = self.get_mut(conn) else { continue };
            match &mut c.phase {
                Phase::Handshake { .. } | Phase::Admitting { .. } => self.refuse(conn, HandshakeError::ShuttingDown),
                Phase::Open { seat, .. } => {
                    *seat = None;
                    self.forget_session(conn);
                    self.start_close(conn, 1001, "server shutting down", CloseReason::Shutdown, now);
                }
                // Its transport is gone already; so is its room.
                Phase::Parked { .. } => self.end_parked(conn, CloseReason::Shutdown),
                Phase::Closing { .. } | Phase::Done => {}
            }
        }
        self.cut_slow_consumers();
    }

    /// The relay's whole state as bytes ([format](crate::STATE_VERSION)):
    /// every room, member and connection, with deadlines as the time left
    /// after `now`. Another relay, in this process or a new one, picks it up
    /// with [`import_state`](Self::import_state) and carries on byte for byte
    /// where this one is; meanwhile this one is unchanged, and serves on if
    /// the other never confirms.
    ///
    /// Export between inputs, with the actions drained: an action not yet
    /// taken is not part of the state. The driver hands over what it holds
    /// itself — each connection's transport, and which connections it is
    /// closing (those whose [`Action::Close`] it had).
    pub fn export_state(&self, now: Instant) -> Vec<u8> {
        let output: usize = self.outputs.iter().map(|slot| slot.output.backlog()).sum();
        let rooms: usize = self.rooms.iter().map(|r| r.name.len() + 48 * r.members().len()).sum();
        let mut w = Writer::with_capacity(now, 1024 + 256 * self.conns.len() + output + rooms);
        w.out.extend_from_slice(STATE_MAGIC);
        w.u16(STATE_VERSION);
        // `sharded` keeps the count within 16 bits.
        w.u16(self.shard.index as u16);
        w.u16(self.shard.count as u16);
        w.u32(self.next_generation);
        w.bool(self.shutting_down);
        self.stats.save(&mut w);
        self.turns.save(&mut w);
        self.rooms.save(&mut w);
        w.len(self.conns.len());
        for (_, c) in &self.conns {
            c.save(&mut w);
            self.outputs.save(c.id, &mut w);
        }
        let handshakes: Vec<ConnId> = (self.arrivals.iter().copied())
            .filter(|&conn| matches!(self.get(conn).map(|c| &c.phase), Some(Phase::Handshake { .. })))
            .collect();
        w.len(handshakes.len());
        handshakes.into_iter().for_each(|conn| w.conn(conn));
        w.out
    }

    /// Takes over the state another relay exported with
    /// [`export_state`](Self::export_state): this relay must be new (no
    /// connection yet), be the same shard of as many, and have its own
    /// configuration, which applies from now on. Deadlines keep the time
    /// they had left. On error nothing has changed.
    ///
    /// Then drain [`poll_action`](Self::poll_action) as after any input:
    /// an upgrade that was waiting for its admission verdict is asked about
    /// again ([`Action::Admit`]), since the exporting driver's answer will
    /// not come; a request that was waiting for other shards' answers (a
    /// scrape or an API call gathered across shards) is answered 503, since
    /// they are not part of the state. Every connection with bytes to write
    /// is named by [`poll_transmit`](Self::poll_transmit).
    pub fn import_state(&mut self, state: &[u8], now: Instant) -> Result<(), ImportError> {
        if !self.conns.is_empty() || self.rooms.len() > 0 {
            return Err(ImportError::NotEmpty);
        }
        let corrupt = ImportError::Corrupt;
        let mut r = Reader::new(state, now, self.shard.index as u16);
        if r.take(STATE_MAGIC.len()).ok() != Some(&STATE_MAGIC[..]) {
            return Err(ImportError::NotAState);
        }
        match r.u16()? {
            STATE_VERSION => {}
            other => return Err(ImportError::UnknownVersion(other)),
        }
        let exported = (usize::from(r.u16()?), usize::from(r.u16()?));
        if exported != (self.shard.index, self.shard.count) {
            return Err(ImportError::ShardMismatch { exported, here: (self.shard.index, self.shard.count) });
        }
        let next_generation = r.u32()?;
        let shutting_down = r.bool()?;
        let stats = Stats::load(&mut r)?;
        let turns = TurnHistogram::load(&mut r)?;
        let caps = self.config.capacity;
        let rooms = Rooms::load(&mut r, caps.max_rooms)?;
        // No slot is ever far past what the caps let a relay hold at once.
        let max_slot = caps.max_clients.saturating_add(caps.max_handshakes).saturating_mul(4).saturating_add(1024);
        let count = r.len()?;
        let mut conns = Vec::with_capacity(count);
        let mut outputs = Outputs::default();
        let mut slots = BTreeSet::new();
        for _ in 0..count {
            let c = Conn::load(&mut r, &self.config)?;
            if c.id.index() >= max_slot || !slots.insert(c.id.index()) {
                return Err(corrupt("a connection slot past the caps, or taken twice"));
            }
            let done = matches!(c.phase, Phase::Done);
            outputs.load(c.id, done, matches!(c.phase, Phase::Parked { .. }), &mut r)?;
            if done && outputs.get(c.id).is_some_and(|s| s.output.backlog() == 0) {
                return Err(corrupt("a finished connection with nothing left to write"));
            }
            conns.push((c.id.index(), c));
        }
        let conns: Slab<Conn> = conns.into_iter().collect();
        let find = |conn: ConnId| conns.get(conn.index()).filter(|c| c.id == conn);
        let n = r.len()?;
        let mut arrivals = VecDeque::with_capacity(n);
        for _ in 0..n {
            let conn = r.conn()?;
            if !matches!(find(conn).map(|c| &c.phase), Some(Phase::Handshake { .. })) {
                return Err(corrupt("an arrival that is not in its handshake"));
            }
            arrivals.push_back(conn);
        }
        if !r.is_empty() {
            return Err(corrupt("bytes after the state"));
        }
        // Every member sits in an open connection that sits in its room, and back.
        let mut seated = 0;
        for (key, room) in rooms.slots() {
            for m in room.members() {
                let seat = find(m.conn).and_then(Conn::seat);
                if seat != Some(Seat { room: key, id: m.id }) {
                    return Err(corrupt("a member whose connection is not in its room"));
                }
                seated += 1;
            }
        }
        if conns.iter().filter(|(_, c)| c.seat().is_some()).count() != seated {
            return Err(corrupt("a connection seated in a room that does not list it"));
        }
        let mut digests = BTreeSet::new();
        for (_, c) in &conns {
            if let Some(digest) = c.session {
                if c.seat().is_none() || !digests.insert(digest) {
                    return Err(corrupt("a session without a seat, or two with one key"));
                }
            }
        }

        self.conns = conns;
        self.outputs = outputs;
        self.rooms = rooms;
        self.next_generation = next_generation;
        self.shutting_down = shutting_down;
        self.stats = stats;
        self.turns = turns;
        self.arrivals = arrivals;
        for _ in 0..self.rooms.len() {
            self.budget.take_room(usize::MAX);
        }
        let mut waiting = Vec::new();
        for (_, c) in &self.conns {
            if c.admitted {
                self.open += 1;
                self.budget.take_client(usize::MAX);
                c.counted_ip.inspect(|&ip| {
                    self.budget.take_address(ip, usize::MAX);
                });
            }
            match &c.phase {
                Phase::Handshake { reader, .. } => {
                    self.pending += 1;
                    if reader.is_complete() {
                        waiting.push(c.id);
                    }
                }
                Phase::Admitting { upgrade, .. } => {
                    self.pending += 1;
                    self.actions.push_back(Action::Admit { conn: c.id, admission: admission_of(upgrade, c.peer) });
                }
                Phase::Parked { .. } => self.parked += 1,
                Phase::Open { .. } | Phase::Closing { .. } | Phase::Done => {}
            }
            if let Some(digest) = c.session {
                self.sessions.insert(digest, c.id);
            }
            if let (Some(agreed), Some(slot)) = (c.deflate, self.outputs.get_mut(c.id)) {
                slot.deflate = agreed.class();
            }
            if let Some(at) = c.scheduled {
                self.timers.push(at, c.id);
            }
            if let Some(slot) = self.outputs.get_mut(c.id).filter(|s| s.output.backlog() > 0) {
                slot.queued = true;
                self.transmit.push(c.id);
            }
        }
        for conn in waiting {
            self.refuse(conn, HandshakeError::ShuttingDown);
        }
        Ok(())
    }

    /// Gives back memory held for connections, rooms and queues that are
    /// gone. A driver calls it when it goes idle after many clients left.
    pub fn shrink_to_fit(&mut self) {
        let conns = &self.conns;
        self.timers.retain(|at, conn| conns.get(conn.index()).is_some_and(|c| c.id == conn && c.scheduled == Some(at)));
        self.conns.shrink_to_fit();
        self.outputs.shrink_to_fit();
        self.rooms.shrink_to_fit();
        self.actions.shrink_to_fit();
        self.transmit.shrink_to_fit();
        self.arrivals.retain(|&conn| conns_alive(&self.conns, conn));
        self.arrivals.shrink_to_fit();
        for buf in [&mut self.scratch, &mut self.notice] {
            buf.clear();
            buf.shrink_to_fit();
        }
        self.recipients = Vec::new();
        self.overflowed = Vec::new();
        self.variants = Variants::default();
        self.compressors = Compressors::default();
    }

    /// The next thing for the driver to do besides writing.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next connection whose output changed since the driver last took
    /// it, and that has bytes to write.
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        while let Some(&conn) = self.transmit.get(self.transmit_next) {
            self.transmit_next += 1;
            let Some(slot) = self.outputs.get_mut(conn) else { continue };
            slot.queued = false;
            if slot.output.backlog() > 0 && !slot.parked {
                return Some(conn);
            }
        }
        self.transmit.clear();
        self.transmit_next = 0;
        None
    }

    /// The bytes waiting to be written to `conn`, oldest first; empty for a
    /// connection the core no longer knows.
    pub fn pending(&self, conn: ConnId) -> &[u8] {
        // A parked session's bytes wait for its next connection, not this one's socket.
        self.outputs.get(conn).filter(|slot| !slot.parked).map_or(&[], |slot| slot.output.pending())
    }

    /// Writes what is pending for `conn` with one call to `w.write`, and
    /// counts what it took as written. The core does no I/O of its own: `w`
    /// is the driver's socket (or a TLS layer in front of it).
    pub fn write_to<W: io::Write + ?Sized>(&mut self, conn: ConnId, w: &mut W) -> io::Result<usize> {
        let Some(slot) = self.outputs.get_mut(conn) else { return Ok(0) };
        if slot.output.backlog() == 0 || slot.parked {
            return Ok(0);
        }
        let n = w.write(slot.output.pending())?;
        if consume(slot, n, &mut self.stats) {
            self.release(conn);
        }
        Ok(n)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next. It
    /// may be earlier than needed (a deadline that has since moved); calling
    /// then is harmless.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn get(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(conn.index()).filter(|c| c.id == conn)
    }

    fn get_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(conn.index()).filter(|c| c.id == conn)
    }

    fn schedule(&mut self, conn: ConnId, at: Option<Instant>) {
        let Some(at) = at else { return };
        let Some(c) = self.get_mut(conn) else { return };
        if c.scheduled.is_none_or(|s| at < s) {
            c.scheduled = Some(at);
            self.timers.push(at, conn);
        }
    }

    /// Keeps handshakes in progress within `max_handshakes` by refusing the
    /// oldest, and forgets arrivals that are no longer in their handshake.
    fn push_out_handshakes(&mut self) {
        while let Some(&oldest) = self.arrivals.front() {
            let waiting = matches!(self.get(oldest).map(|c| &c.phase), Some(Phase::Handshake { .. }));
            if waiting && self.pending <= self.config.capacity.max_handshakes {
                return;
            }
            self.arrivals.pop_front();
            if waiting {
                self.refuse(oldest, HandshakeError::TooManyHandshakes);
            }
        }
    }

    /// Queues `bytes` for `conn`. With the bound applying, a client whose
    /// backlog would pass it gets nothing more and is cut off once the input
    /// at hand is handled. False if nothing was queued.
    fn push(&mut self, conn: ConnId, bytes: &[u8], bound: Bound) -> bool {
        let limit = self.config.max_pending;
        let Some(slot) = self.outputs.get_mut(conn) else { return false };
        if slot.overflowed {
            self.stats.dropped_slow_consumer += 1;
            return false;
        }
        if bound == Bound::Applies && !slot.output.fits(bytes.len(), limit) {
            slot.overflowed = true;
            self.overflowed.push(conn);
            self.stats.dropped_slow_consumer += 1;
            return false;
        }
        slot.output.buf().extend_from_slice(bytes);
        slot.last_queued = self.now;
        if !mem::replace(&mut slot.queued, true) {
            self.transmit.push(conn);
        }
        true
    }

    /// Queues one frame of the relay's own for `conn`.
    fn push_frame(&mut self, conn: ConnId, opcode: OpCode, parts: &[&[u8]]) -> bool {
        let mut frame = mem::take(&mut self.notice);
        frame.clear();
        encode_frame(&mut frame, opcode, parts);
        let queued = self.push(conn, &frame, Bound::Applies);
        self.notice = frame;
        queued
    }

    /// Queues a close frame with `code` and `reason` for `conn`.
    fn push_close(&mut self, conn: ConnId, code: u16, reason: &str) {
        self.push_frame(conn, OpCode::Close, &[&code.to_be_bytes(), reason.as_bytes()]);
    }

    /// Queues `frame`, a whole data frame, for every connection in
    /// `recipients`; returns how many took it. A recipient that agreed to
    /// permessage-deflate gets it compressed for its window, compressed once
    /// for all who share that window; everyone else gets the same plain bytes.
    fn broadcast(&mut self, frame: &[u8], recipients: &[ConnId]) -> u64 {
        let mut variants = mem::take(&mut self.variants);
        variants.state = [Variant::NotYet; 8];
        let mut took = 0;
        for &to in recipients {
            let class = self.outputs.get(to).map_or(0, |slot| slot.deflate);
            let bytes = if class == 0 { frame } else { self.variant(&mut variants, class, frame) };
            took += u64::from(self.push(to, bytes, Bound::Applies));
        }
        self.variants = variants;
        took
    }

    /// Queues one of the relay's notices (`join`, `quit`), a few bytes that
    /// compression would not shrink, for every connection in `recipients`,
    /// plain; returns how many took it.
    fn notify(&mut self, frame: &[u8], recipients: &[ConnId]) -> u64 {
        recipients.iter().map(|&to| u64::from(self.push(to, frame, Bound::Applies))).sum()
    }

    /// `frame` for recipients of window size `class`: compressed the first
    /// time one comes up, the same bytes after; plain if it is under the
    /// threshold or compressing does not make it smaller.
    fn variant<'v>(&mut self, variants: &'v mut Variants, class: u8, frame: &'v [u8]) -> &'v [u8] {
        let at = usize::from(class - 8);
        match variants.state[at] {
            Variant::Compressed => return &variants.frames[at],
            Variant::Plain => return frame,
            Variant::NotYet => {}
        }
        let min = self.config.deflate.map_or(usize::MAX, |d| d.min_size);
        variants.state[at] = Variant::Plain;
        // The relay's own frames: whole, unmasked, with a header that parses.
        let Ok(Some((header, len))) = FrameHeader::parse(frame) else { return frame };
        let payload = &frame[len..];
        if payload.len() < min || header.rsv1 || header.opcode.is_control() {
            return frame;
        }
        if !self.compress(variants, class, header.opcode, payload, false) {
            return frame;
        }
        variants.state[at] = Variant::Compressed;
        &variants.frames[at]
    }

    /// Compresses `payload` for window size `class` into that size's frame
    /// in `variants`, a whole frame of `opcode`, and counts it. False, with
    /// no frame written, if compressing would not make it smaller, unless
    /// `always`.
    fn compress(&mut self, variants: &mut Variants, class: u8, opcode: OpCode, payload: &[u8], always: bool) -> bool {
        self.stats.compressions += 1;
        if !self.compressors.compress(class, payload, &mut variants.deflated, always) {
            return false;
        }
        self.stats.compressed_in += payload.len() as u64;
        self.stats.compressed_out += variants.deflated.len() as u64;
        let out = &mut variants.frames[usize::from(class - 8)];
        out.clear();
        encode_compressed_frame(out, opcode, &variants.deflated);
        true
    }

    /// Echo mode: `frame` back to `conn`, whose message arrived compressed,
    /// compressed whatever its size. A conformance suite's client may take
    /// an uncompressed answer to a compressed message amiss (kosoku 0.1.0's
    /// cases 12 and 13 do, though RFC 7692 allows it), so echo mode mirrors
    /// the client's choice. Returns 1 if it was queued.
    fn echo_compressed(&mut self, conn: ConnId, frame: &[u8]) -> u64 {
        let class = self.outputs.get(conn).map_or(0, |slot| slot.deflate);
        let Ok(Some((header, len))) = FrameHeader::parse(frame) else { return 0 };
        let mut variants = mem::take(&mut self.variants);
        // It arrived compressed, so its connection agreed to a window (class > 0).
        let bytes = if class > 0 && self.compress(&mut variants, class, header.opcode, &frame[len..], true) {
            &variants.frames[usize::from(class - 8)][..]
        } else {
            frame
        };
        let took = u64::from(self.push(conn, bytes, Bound::Applies));
        self.variants = variants;
        took
    }

    /// `conn`'s upgrade agreed to permessage-deflate with `agreed`: RSV1
    /// from it means compressed, and what goes to it is compressed.
    fn agree_deflate(&mut self, conn: ConnId, agreed: Option<Agreed>) {
        let Some(agreed) = agreed else { return };
        if let Some(c) = self.get_mut(conn) {
            c.deflate = Some(agreed);
            c.decoder.set_deflate(agreed);
        }
        if let Some(slot) = self.outputs.get_mut(conn) {
            slot.deflate = agreed.class();
        }
    }

    /// Cuts off every client that passed its output bound during the input
    /// just handled. Each leaves its room, which may cut off more.
    fn cut_slow_consumers(&mut self) {
        while !self.overflowed.is_empty() {
            for conn in mem::take(&mut self.overflowed) {
                self.finish(conn, CloseReason::SlowConsumer, Leftover::Discard);
            }
        }
    }

    /// Answers a complete request. True if the connection goes on here as a
    /// WebSocket, so what followed the request (`rest`) is frames.
    fn complete_handshake(&mut self, conn: ConnId, request: Request, rest: &[u8], now: Instant) -> bool {
        let c = self.get_mut(conn).expect("a request completes on a live connection");
        let listener = c.listener;
        let Phase::Handshake { reader, .. } = &c.phase else { unreachable!("only a handshake completes a request") };
        if let Some(Proxied::From(addr)) = reader.proxied() {
            debug!("{conn} is {addr} (PROXY protocol)");
            c.peer = Some(addr);
        }
        let upgrade = match request {
            Request::Get(resource) => {
                self.serve(conn, listener, resource);
                return false;
            }
            Request::Api(call) => {
                self.call_api(conn, &call, now);
                return false;
            }
            Request::Upgrade(_) if listener == Listener::Admin => {
                self.refuse(conn, HandshakeError::NotFound);
                return false;
            }
            _ if self.shutting_down => {
                self.refuse(conn, HandshakeError::ShuttingDown);
                return false;
            }
            Request::Upgrade(upgrade) => upgrade,
        };
        // With admission on, a token may ride in the query; it never names the room.
        let (room, query_token) = match self.config.admission {
            true => admission::take_query_token(&upgrade.target),
            false => (upgrade.target, None),
        };
        if self.config.mode == Mode::Relay && !self.serves(&room) {
            self.hand_off(conn, shard_of(&room, self.shard.count), rest);
            return false;
        }
        if upgrade.origin.as_ref().is_some_and(|origin| !self.origin_allowed(origin)) {
            self.refuse(conn, HandshakeError::ForbiddenOrigin);
            return false;
        }
        let deflate = match (self.config.deflate, upgrade.deflate) {
            (None, _) => None,
            (Some(_), Ok(agreed)) => agreed,
            // RFC 6455 §4.2.1: a handshake whose headers are not as §4.2.1 and
            // §9.1 describe them is answered 400. (A well-formed offer the
            // relay cannot take is declined instead, RFC 7692 §7.)
            (Some(_), Err(_)) => {
                self.refuse(conn, HandshakeError::BadExtensions);
                return false;
            }
        };
        let session = upgrade.session.as_deref().map(|key| <[u8; 32]>::from(Sha256::digest(key)));
        let mut pending = Pending {
            room,
            accept: upgrade.accept,
            ws_relay: upgrade.ws_relay,
            token: None,
            origin: None,
            session,
            deflate,
        };
        if !self.config.admission {
            return self.open_upgrade(conn, pending, None, now);
        }
        pending.token = upgrade.token.or(query_token);
        pending.origin = upgrade.origin;
        let c = self.get_mut(conn).expect("a request completes on a live connection");
        let Phase::Handshake { deadline, .. } = c.phase else { unreachable!("only a handshake completes a request") };
        let admission = admission_of(&pending, c.peer);
        c.phase = Phase::Admitting { upgrade: Box::new(pending), deadline, early: rest.to_vec() };
        self.actions.push_back(Action::Admit { conn, admission });
        false
    }

    /// Completes an upgrade the client may make: the caps, the 101, the room.
    /// True if the connection is then open.
    fn open_upgrade(&mut self, conn: ConnId, mut pending: Pending, subject: Option<Box<str>>, now: Instant) -> bool {
        if let Some(digest) = pending.session.filter(|_| self.resumable()) {
            if let Some(&seat_holder) = self.sessions.get(&digest) {
                let same_room = self.member(seat_holder).is_some_and(|(room, _)| room == pending.room.as_slice());
                if same_room {
                    return self.resume(conn, seat_holder, digest, pending, subject, now);
                }
                // A key is bound to its room: elsewhere it is a fresh join, and says nothing.
                pending.session = None;
            }
        } else {
            pending.session = None;
        }
        if let Err(full) = self.admit(conn, &pending.room) {
            self.refuse(conn, full);
            return false;
        }
        self.stats.upgrades += 1;
        self.open += 1;
        self.pending -= 1;
        let mut answer = mem::take(&mut self.scratch);
        answer.clear();
        http::accept_response(&pending.accept, pending.ws_relay, pending.deflate.as_ref(), &mut answer);
        self.agree_deflate(conn, pending.deflate);
        if let Some(digest) = pending.session {
            // Its output may move to the connection that resumes it: frames are tracked.
            if let Some(slot) = self.outputs.get_mut(conn) {
                slot.output.track_frames(answer.len());
            }
            self.sessions.insert(digest, conn);
            if let Some(c) = self.get_mut(conn) {
                c.session = Some(digest);
            }
        }
        let seat = match self.config.mode {
            Mode::Echo => {
                self.push(conn, &answer, Bound::Exempt);
                None
            }
            Mode::Relay => Some(self.join(conn, &pending.room, subject, &mut answer)),
        };
        self.scratch = answer;
        let c = self.get_mut(conn).expect("joining a room does not end the connection");
        c.phase = Phase::Open { seat, ping_sent: None };
        self.schedule(conn, now.checked_add(self.config.ping_interval));
        true
    }

    /// The driver's verdict on `conn`'s upgrade ([`Action::Admit`]). A verdict
    /// for a connection that is no longer waiting (it left, or the handshake
    /// timeout fired) is ignored.
    pub fn handle_admission(&mut self, conn: ConnId, verdict: Verdict, now: Instant) {
        self.now = Some(now);
        let Some(Conn { phase: Phase::Admitting { upgrade, early, .. }, .. }) = self.get_mut(conn) else { return };
        let (pending, early) = (mem::take(&mut **upgrade), mem::take(early));
        match verdict {
            Verdict::Accept { subject } => {
                self.stats.admitted += 1;
                let subject = subject.map(|s| cut(s, MAX_SUBJECT).into_boxed_str());
                if self.open_upgrade(conn, pending, subject, now) {
                    self.read_frames(conn, &early, now);
                }
            }
            Verdict::Refuse(refusal) => {
                self.stats.count_admission_refusal(refusal);
                self.pending -= 1;
                // A browser cannot read an HTTP status: the refusal is a close code after the 101.
                let mut answer = mem::take(&mut self.scratch);
                answer.clear();
                http::accept_response(&pending.accept, pending.ws_relay, pending.deflate.as_ref(), &mut answer);
                self.agree_deflate(conn, pending.deflate);
                self.push(conn, &answer, Bound::Exempt);
                self.scratch = answer;
                let deadline = now.checked_add(self.config.close_timeout);
                let reason = CloseReason::Refused(refusal);
                let c = self.get_mut(conn).expect("a connection waiting for its verdict is live");
                c.phase = Phase::Closing { deadline, reason };
                debug!("{conn} closing: {reason}");
                self.push_close(conn, refusal.close_code(), refusal.reason());
                self.schedule(conn, deadline);
                // Its own close frame may be among what it sent meanwhile.
                self.read_frames(conn, &early, now);
            }
        }
        if let Some(c) = self.get_mut(conn) {
            c.decoder.trim();
        }
        self.cut_slow_consumers();
    }

    /// A server API call on the operator's port: refused, carried out, or
    /// (when this is one of several shards) handed to the driver.
    fn call_api(&mut self, conn: ConnId, call: &ApiCall, now: Instant) {
        let key = self.config.api_key.as_ref().expect("the reader reads API calls only when the API is on");
        self.stats.api_calls += 1;
        match api::parse(call, &key.0) {
            Err(e) => {
                let mut out = mem::take(&mut self.scratch);
                out.clear();
                api::refuse(&e, &mut out);
                self.push(conn, &out, Bound::Exempt);
                self.scratch = out;
                self.finish(conn, CloseReason::HttpServed, Leftover::Flush);
            }
            Ok(request) if self.shard.count > 1 => self.actions.push_back(Action::Api { conn, request }),
            Ok(request) => {
                let reply = self.api(&request, now);
                self.handle_api(conn, &request, &reply);
            }
        }
    }

    /// Carries out a server API request on this core, in order with the
    /// messages around it, and says what it did. A driver of several shards
    /// calls it on the shard(s) an [`Action::Api`] names, then drains that
    /// core as after any input.
    pub fn api(&mut self, request: &ApiRequest, now: Instant) -> ApiReply {
        self.now = Some(now);
        let reply = match request {
            ApiRequest::Publish { room, to, data, binary } => self.publish(room, *to, data, *binary),
            ApiRequest::Rooms { prefix, limit } => ApiReply::Rooms(
                self.rooms.with_prefix(prefix).take(*limit).map(|r| (r.name.to_vec(), r.members().len())).collect(),
            ),
            ApiRequest::Presence { room } => match self.rooms.by_name(room) {
                Some(r) => ApiReply::Presence(
                    r.members().iter().map(|m| (m.id, m.subject.as_deref().map(String::from))).collect(),
                ),
                None => ApiReply::NoSuchRoom,
            },
            ApiRequest::Disconnect { who, reason } => {
                let conns: Vec<ConnId> = match who {
                    Who::Member { room, id } => match self.rooms.by_name(room) {
                        Some(r) => r.find(*id).map(|m| m.conn).into_iter().collect(),
                        None => return ApiReply::NoSuchRoom,
                    },
                    Who::Subject(subject) => (self.rooms.iter())
                        .flat_map(|r| r.members().iter())
                        .filter(|m| m.subject.as_deref() == Some(subject.as_str()))
                        .map(|m| m.conn)
                        .collect(),
                };
                for &c in &conns {
                    self.start_close(c, 4000, reason, CloseReason::Disconnected, now);
                }
                ApiReply::Disconnected(conns.len() as u64)
            }
        };
        self.cut_slow_consumers();
        reply
    }

    /// Answers `conn`'s server API call with what `request` came to.
    pub fn handle_api(&mut self, conn: ConnId, request: &ApiRequest, reply: &ApiReply) {
        if !matches!(self.get(conn).map(|c| &c.phase), Some(Phase::Handshake { .. })) {
            return;
        }
        let (status, body) = api::answer(request, reply);
        let mut out = mem::take(&mut self.scratch);
        out.clear();
        api::respond(status, &body, &mut out);
        self.push(conn, &out, Bound::Exempt);
        self.scratch = out;
        self.finish(conn, CloseReason::HttpServed, Leftover::Flush);
    }

    /// `0 <data>` to `to` in `room`: the server speaking, as no client can.
    fn publish(&mut self, room: &[u8], to: To, data: &[u8], binary: bool) -> ApiReply {
        let Some(r) = self.rooms.by_name(room) else { return ApiReply::NoSuchRoom };
        let mut recipients = mem::take(&mut self.recipients);
        recipients.clear();
        match to {
            To::All => recipients.extend(r.members().iter().map(|m| m.conn)),
            To::Id(id) => recipients.extend(r.find(id).map(|m| m.conn)),
        }
        let mut frame = mem::take(&mut self.notice);
        frame.clear();
        encode_frame(&mut frame, if binary { OpCode::Binary } else { OpCode::Text }, &[b"0 ", data]);
        let told = self.broadcast(&frame, &recipients);
        self.stats.deliveries += told;
        self.notice = frame;
        self.recipients = recipients;
        ApiReply::Published(told)
    }

    /// True if this shard serves the room named `target`.
    fn serves(&self, target: &[u8]) -> bool {
        self.shard.count == 1 || shard_of(target, self.shard.count) == self.shard.index
    }

    /// Forgets `conn` and asks the driver to move it, with every byte it sent
    /// so far, to the shard that serves its room.
    fn hand_off(&mut self, conn: ConnId, shard: usize, rest: &[u8]) {
        let c = self.conns.remove(conn.index());
        self.outputs.close(conn);
        self.pending -= 1;
        let Phase::Handshake { reader, .. } = c.phase else { unreachable!("only a handshake is handed off") };
        let mut bytes = Vec::with_capacity(reader.request_bytes().len() + rest.len());
        bytes.extend_from_slice(reader.request_bytes());
        bytes.extend_from_slice(rest);
        self.stats.handoffs += 1;
        debug!("{conn} handed to shard {shard}");
        self.actions.push_back(Action::Handoff { conn, shard, bytes });
    }

    /// Answers a plain `GET` or `HEAD` and closes the connection.
    fn serve(&mut self, conn: ConnId, listener: Listener, resource: Resource) {
        if !http::served(&resource, listener, &self.config) {
            return self.refuse(conn, HandshakeError::NotFound);
        }
        let head_only = self.is_head(conn);
        let mut out = mem::take(&mut self.scratch);
        out.clear();
        match resource {
            Resource::Health => http::text_response(http::Status::Ok, "ok", head_only, &mut out),
            Resource::Metrics if self.shard.count > 1 => {
                self.scratch = out;
                self.actions.push_back(Action::Metrics { conn });
                return;
            }
            Resource::Metrics => {
                let mut body = Vec::with_capacity(4096);
                self.render_metrics(&mut body);
                http::file_response(METRICS_TYPE, &body, head_only, &mut out);
            }
            Resource::Page(page) => http::file_response(page.content_type, page.body, head_only, &mut out),
        }
        self.push(conn, &out, Bound::Exempt);
        self.scratch = out;
        self.finish(conn, CloseReason::HttpServed, Leftover::Flush);
    }

    /// The answer to an [`Action::Metrics`]: the page the driver rendered
    /// (with [`render_metrics`](crate::render_metrics)) for `conn`, which the
    /// core sends (without the body to a `HEAD`) before closing it.
    pub fn handle_metrics(&mut self, conn: ConnId, page: &[u8]) {
        if !matches!(self.get(conn).map(|c| &c.phase), Some(Phase::Handshake { .. })) {
            return;
        }
        let mut out = mem::take(&mut self.scratch);
        out.clear();
        http::file_response(METRICS_TYPE, page, self.is_head(conn), &mut out);
        self.push(conn, &out, Bound::Exempt);
        self.scratch = out;
        self.finish(conn, CloseReason::HttpServed, Leftover::Flush);
    }

    /// True if `conn`'s request line names `HEAD`, whose answers carry no body.
    fn is_head(&self, conn: ConnId) -> bool {
        self.get(conn).is_some_and(|c| matches!(&c.phase, Phase::Handshake { reader, .. } if reader.is_head()))
    }

    /// A browser page from another site may not open a socket here (cross-site
    /// WebSocket hijacking); clients that send no Origin are not browsers.
    fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.config.allowed_origins.as_ref().is_none_or(|list| list.iter().any(|o| o.as_bytes() == origin))
    }

    /// Takes `conn`'s place in the caps, or says which cap it would pass.
    /// What it takes is given back when it closes ([`finish`](Self::finish))
    /// and, for a room, when the room empties.
    fn admit(&mut self, conn: ConnId, target: &[u8]) -> Result<(), HandshakeError> {
        let limits = self.config.capacity;
        let room = match self.config.mode {
            Mode::Relay => Some(self.rooms.by_name(target).map(|r| r.members().len())),
            Mode::Echo => None,
        };
        if room.flatten().is_some_and(|members| members >= limits.max_room_clients) {
            return Err(HandshakeError::RoomFull);
        }
        if !self.budget.take_client(limits.max_clients) {
            return Err(HandshakeError::ServerFull);
        }
        let ip = self.get(conn).and_then(|c| c.peer).map(|a| a.ip());
        let counted_ip = match (limits.max_clients_per_ip, ip) {
            (Some(max), Some(ip)) if !self.budget.take_address(ip, max) => {
                self.budget.give_client();
                return Err(HandshakeError::TooManyFromAddress);
            }
            (Some(_), ip) => ip,
            (None, _) => None,
        };
        if room == Some(None) && !self.budget.take_room(limits.max_rooms) {
            self.budget.give_client();
            counted_ip.inspect(|&ip| self.budget.give_address(ip));
            return Err(HandshakeError::TooManyRooms);
        }
        let c = self.get_mut(conn).expect("a connection being admitted is live");
        c.counted_ip = counted_ip;
        c.admitted = true;
        Ok(())
    }

    /// Adds `conn` to the room: it hears `self` and who is there, in one write
    /// with the 101 response already in `answer`; the others hear `join`.
    fn join(&mut self, conn: ConnId, room_name: &[u8], subject: Option<Box<str>>, answer: &mut Vec<u8>) -> Seat {
        let seat = self.rooms.join(room_name, conn, subject);
        let mut digits = [0; 20];
        let me = envelope::format_id(seat.id, &mut digits);
        encode_frame(answer, OpCode::Text, &[me, b" self"]);
        let mut others = mem::take(&mut self.recipients);
        others.clear();
        let members = self.rooms.get(seat.room).expect("the room was just joined").members();
        for m in members.iter().filter(|m| m.conn != conn) {
            let mut buf = [0; 20];
            encode_frame(answer, OpCode::Text, &[envelope::format_id(m.id, &mut buf), b" join"]);
            others.push(m.conn);
        }
        self.push(conn, answer, Bound::Exempt);
        answer.clear();
        encode_frame(answer, OpCode::Text, &[me, b" join"]);
        let told = self.notify(answer, &others);
        self.stats.deliveries += 1 + others.len() as u64 + told;
        self.recipients = others;
        debug!("{conn} joined room={:?} id={}", String::from_utf8_lossy(room_name), seat.id);
        seat
    }

    /// Takes `conn` out of its room, telling the others it quit.
    fn leave(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.get_mut(conn) else { return };
        let Phase::Open { seat, .. } = &mut c.phase else { return };
        let Some(seat) = seat.take() else { return };
        self.forget_session(conn);
        self.vacate(conn, seat, reason);
    }

    /// Ends `conn`'s session: its key no longer resumes anything.
    fn forget_session(&mut self, conn: ConnId) {
        let Some(digest) = self.get_mut(conn).and_then(|c| c.session.take()) else { return };
        if self.sessions.get(&digest) == Some(&conn) {
            self.sessions.remove(&digest);
        }
    }

    /// Gives up `seat`, telling the rest of its room that `conn` quit.
    fn vacate(&mut self, conn: ConnId, seat: Seat, reason: impl std::fmt::Display) {
        // A shutdown dissolves every room at once, and nobody hears who quits.
        let Some(r) = self.rooms.get(seat.room) else { return };
        debug!("{conn} left room={:?} id={}: {reason}", String::from_utf8_lossy(&r.name), seat.id);
        if self.rooms.leave(seat) {
            self.budget.give_room();
            return;
        }
        let room = self.rooms.get(seat.room).expect("a room that did not empty lives on");
        let mut others = mem::take(&mut self.recipients);
        others.clear();
        others.extend(room.members().iter().map(|m| m.conn));
        let mut frame = mem::take(&mut self.notice);
        frame.clear();
        let mut digits = [0; 20];
        encode_frame(&mut frame, OpCode::Text, &[envelope::format_id(seat.id, &mut digits), b" quit"]);
        self.stats.deliveries += self.notify(&frame, &others);
        self.notice = frame;
        self.recipients = others;
    }

    fn read_frames(&mut self, conn: ConnId, mut bytes: &[u8], now: Instant) {
        let mut frame = mem::take(&mut self.scratch);
        while !bytes.is_empty() {
            frame.clear();
            let (used, step) = self.next_message(conn, bytes, now, &mut frame);
            bytes = &bytes[used..];
            match step {
                Step::Gone | Step::NeedMore => break,
                Step::Nothing => {}
                Step::Pong => {
                    self.push(conn, &frame, Bound::Applies);
                }
                Step::Echo { compressed: false } => self.stats.deliveries += self.broadcast(&frame, &[conn]),
                Step::Echo { compressed: true } => self.stats.deliveries += self.echo_compressed(conn, &frame),
                Step::Route { from, target } => self.route(from, target, &frame),
                // The rest of the input is still decoded, in the closing phase:
                // it holds the client's close frame, or more to be charged to its budget.
                Step::Reject(e) => self.start_close(conn, e.close_code(), &e.to_string(), CloseReason::Relay(e), now),
                Step::Fail(e) => {
                    self.fail(conn, e);
                    break;
                }
                Step::ClientClose(code) => {
                    let code = code.map(u16::to_be_bytes);
                    self.push_frame(conn, OpCode::Close, &[code.as_ref().map_or(&[][..], |c| &c[..])]);
                    self.finish(conn, CloseReason::ClientClose, Leftover::Flush);
                    break;
                }
                Step::Finish(reason) => {
                    self.finish(conn, reason, Leftover::Flush);
                    break;
                }
            }
        }
        self.scratch = frame;
    }

    /// Decodes the next message from `bytes` and works out what it asks for,
    /// building the frame to send, if any, in `frame`.
    fn next_message(&mut self, conn: ConnId, bytes: &[u8], now: Instant, frame: &mut Vec<u8>) -> (usize, Step) {
        let Some(c) = self.conns.get_mut(conn.index()).filter(|c| c.id == conn) else { return (0, Step::Gone) };
        let (closing, seat) = match c.phase {
            Phase::Open { seat, .. } => (None, seat),
            Phase::Closing { reason, .. } => (Some(reason), None),
            Phase::Handshake { .. } | Phase::Admitting { .. } | Phase::Done | Phase::Parked { .. } => {
                return (0, Step::Gone)
            }
        };
        let (used, message) = match c.decoder.decode(bytes) {
            Ok((used, Some(message))) => (used, message),
            Ok((used, None)) => return (used, Step::NeedMore),
            Err(e) => return (bytes.len(), Step::Fail(e)),
        };
        // Flood control charges every message but close frames, while closing
        // too: a client closed for flooding cannot go on pushing bytes through
        // the relay while it says goodbye.
        let cost = match message {
            Message::Text(m) | Message::Binary(m) | Message::Ping(m) | Message::Pong(m) => Some(m.len()),
            Message::Close(_) => None,
        };
        if let (Some(limits), Some(len)) = (&self.config.flood, cost) {
            if !c.rate.allow(limits, len, now) {
                return (used, closing.map_or(Step::Reject(RelayError::RateLimited), Step::Finish));
            }
        }
        let mut step = match (message, closing) {
            // The handshake the relay started is complete; the close keeps its cause.
            (Message::Close(_), Some(reason)) => Step::Finish(reason),
            (_, Some(_)) | (Message::Pong(_), None) => Step::Nothing,
            (Message::Close(code), None) => Step::ClientClose(code.map(|(code, _)| code)),
            (Message::Ping(payload), None) => {
                encode_frame(frame, OpCode::Pong, &[payload]);
                Step::Pong
            }
            (message @ (Message::Text(m) | Message::Binary(m)), None) => {
                let opcode = if matches!(message, Message::Text(_)) { OpCode::Text } else { OpCode::Binary };
                self.stats.messages_received += 1;
                match (self.config.mode, seat) {
                    (Mode::Echo, _) => {
                        encode_frame(frame, opcode, &[m]);
                        Step::Echo { compressed: false }
                    }
                    (Mode::Relay, Some(from)) => match match opcode {
                        OpCode::Binary => envelope::parse_binary(m),
                        _ => envelope::parse(m),
                    } {
                        Ok((target, rest)) => {
                            let mut digits = [0; 20];
                            encode_frame(frame, opcode, &[envelope::format_id(from.id, &mut digits), b" ", rest]);
                            Step::Route { from, target }
                        }
                        Err(e) => Step::Reject(e),
                    },
                    // Shutting down: rooms are dissolved and nothing more is relayed.
                    (Mode::Relay, None) => Step::Nothing,
                }
            }
        };
        if c.decoder.take_inflated() {
            self.stats.inflated += 1;
            if let Step::Echo { compressed } = &mut step {
                *compressed = true;
            }
        }
        (used, step)
    }

    /// Delivers `frame` (`<from> <rest>`) to `target` in `from`'s room.
    fn route(&mut self, from: Seat, target: Target, frame: &[u8]) {
        let room = self.rooms.get(from.room).expect("a member's room lives while it is in it");
        let mut to = mem::take(&mut self.recipients);
        to.clear();
        match target {
            Target::All => to.extend(room.members().iter().filter(|m| m.id != from.id).map(|m| m.conn)),
            Target::Id(id) => match room.find(id) {
                Some(m) => to.push(m.conn),
                None => self.stats.undeliverable += 1,
            },
            Target::Nobody => self.stats.undeliverable += 1,
        }
        self.stats.deliveries += self.broadcast(frame, &to);
        self.recipients = to;
    }

    fn on_timer(&mut self, conn: ConnId, now: Instant) {
        let (ping_interval, ping_timeout) = (self.config.ping_interval, self.config.ping_timeout);
        let last_queued = self.outputs.get(conn).and_then(|slot| slot.last_queued);
        let Some(c) = self.get_mut(conn) else { return };
        let last_read = c.last_read;
        // Quiet either way for a ping interval: a proxy in front times out an
        // idle direction as readily as an idle connection.
        let quiet_since = last_queued.map_or(last_read, |queued| queued.min(last_read));
        let reached = |at: Option<Instant>| at.is_some_and(|at| now >= at);
        match &mut c.phase {
            Phase::Handshake { deadline, .. } | Phase::Admitting { deadline, .. } if reached(*deadline) => {
                self.refuse(conn, HandshakeError::Timeout);
            }
            Phase::Closing { deadline, reason } if reached(*deadline) => {
                let reason = *reason;
                self.finish(conn, reason, Leftover::Flush);
            }
            Phase::Handshake { deadline, .. } | Phase::Admitting { deadline, .. } | Phase::Closing { deadline, .. } => {
                let at = *deadline;
                self.schedule(conn, at);
            }
            Phase::Done => {}
            Phase::Parked { deadline, .. } if reached(*deadline) => {
                self.stats.sessions_expired += 1;
                self.end_parked(conn, "its session was not resumed in time");
            }
            Phase::Parked { deadline, .. } => {
                let at = *deadline;
                self.schedule(conn, at);
            }
            Phase::Open { ping_sent, .. } => {
                if ping_sent.is_some_and(|sent| last_read > sent) {
                    *ping_sent = None;
                }
                match *ping_sent {
                    // A session's seat waits for its client; nobody reads a close frame on a dead line.
                    Some(sent) if reached(sent.checked_add(ping_timeout)) => {
                        if !self.park(conn, CloseReason::KeepaliveTimeout, now) {
                            self.push_close(conn, 1011, "keepalive timeout");
                            self.finish(conn, CloseReason::KeepaliveTimeout, Leftover::Flush);
                        }
                    }
                    Some(sent) => self.schedule(conn, sent.checked_add(ping_timeout)),
                    None if reached(quiet_since.checked_add(ping_interval)) => {
                        *ping_sent = Some(now);
                        self.push_frame(conn, OpCode::Ping, &[b"keepalive"]);
                        self.schedule(conn, now.checked_add(ping_timeout));
                    }
                    None => self.schedule(conn, quiet_since.checked_add(ping_interval)),
                }
            }
        }
    }

    /// Answers a refused request with its status and closes the connection.
    fn refuse(&mut self, conn: ConnId, e: HandshakeError) {
        self.stats.count_refusal(e.status());
        if e.is_answered() {
            let mut out = mem::take(&mut self.scratch);
            out.clear();
            http::text_response(e.status(), &e.to_string(), self.is_head(conn), &mut out);
            self.push(conn, &out, Bound::Exempt);
            self.scratch = out;
        }
        self.finish(conn, CloseReason::Handshake(e), Leftover::Flush);
    }

    /// Fails the connection (RFC 6455 §7.1.7): a close frame with the error's
    /// code, then the transport closes without waiting for an answer.
    fn fail(&mut self, conn: ConnId, e: ProtocolError) {
        if let Some(Phase::Open { .. }) = self.get(conn).map(|c| &c.phase) {
            self.push_close(conn, e.close_code(), &e.to_string());
        }
        self.finish(conn, CloseReason::Protocol(e), Leftover::Flush);
    }

    /// Starts the close handshake: the client leaves its room now and has
    /// until the close timeout to answer with its own close frame.
    fn start_close(&mut self, conn: ConnId, code: u16, text: &str, reason: CloseReason, now: Instant) {
        if matches!(self.get(conn).map(|c| &c.phase), Some(Phase::Parked { .. })) {
            // No transport to say it on: the seat simply goes.
            return self.end_parked(conn, reason);
        }
        self.leave(conn, reason);
        let deadline = now.checked_add(self.config.close_timeout);
        let Some(c) = self.get_mut(conn).filter(|c| matches!(c.phase, Phase::Open { .. })) else { return };
        c.phase = Phase::Closing { deadline, reason };
        debug!("{conn} closing: {reason}");
        self.push_close(conn, code, text);
        self.schedule(conn, deadline);
    }

    /// Ends `conn` for the core and tells the driver. Its output is kept
    /// until written (or dropped), and the slot is freed with it.
    fn finish(&mut self, conn: ConnId, reason: CloseReason, leftover: Leftover) {
        if matches!(self.get(conn).map(|c| &c.phase), Some(Phase::Parked { .. })) {
            // Its transport ended, and was counted, when it was parked.
            return self.end_parked(conn, reason);
        }
        self.leave(conn, reason);
        let Some(c) = self.conns.get_mut(conn.index()).filter(|c| c.id == conn) else { return };
        match c.phase {
            Phase::Handshake { .. } | Phase::Admitting { .. } => self.pending -= 1,
            Phase::Open { .. } | Phase::Closing { .. } => {}
            Phase::Done | Phase::Parked { .. } => return,
        }
        if mem::take(&mut c.admitted) {
            self.open -= 1;
            self.budget.give_client();
            if let Some(ip) = c.counted_ip.take() {
                self.budget.give_address(ip);
            }
        }
        c.phase = Phase::Done;
        // Frees what a message in progress held.
        c.decoder = MessageDecoder::new(self.config.message);
        let slot = self.outputs.get_mut(conn).expect("a live connection has its output");
        slot.finished = true;
        if leftover == Leftover::Discard || reason == CloseReason::SlowConsumer {
            slot.output.discard();
        }
        let drained = slot.output.backlog() == 0;
        self.stats.count_close(reason);
        debug!("{conn} closed: {reason}");
        self.actions.push_back(Action::Close { conn, reason });
        if drained {
            self.release(conn);
        }
    }

    /// True if an upgrade's session key can be parked and resumed.
    fn resumable(&self) -> bool {
        !self.config.resume_window.is_zero() && self.config.mode == Mode::Relay && !self.shutting_down
    }

    /// `conn`'s transport ended without a close frame: if it holds a resumable
    /// session, its seat waits for a connection with its key, and what its
    /// room sends it is kept. The driver gets its `Close`, and nothing to write.
    fn park(&mut self, conn: ConnId, reason: CloseReason, now: Instant) -> bool {
        if !self.resumable() || self.parked >= self.config.max_parked {
            return false;
        }
        let (window, limits) = (self.config.resume_window, self.config.message);
        let Some(c) = self.get_mut(conn) else { return false };
        let (Phase::Open { seat: Some(seat), .. }, Some(_)) = (&c.phase, c.session) else { return false };
        let deadline = now.checked_add(window);
        c.phase = Phase::Parked { seat: *seat, deadline };
        c.decoder = MessageDecoder::new(limits);
        self.parked += 1;
        let slot = self.outputs.get_mut(conn).expect("a live connection has its output");
        // What the transport took part of is lost with it; whole frames wait.
        let frames = slot.output.take_frames();
        slot.output.buf().extend_from_slice(&frames);
        slot.parked = true;
        self.stats.count_close(reason);
        debug!("{conn} parked ({reason}): its seat waits {window:?} for its session");
        self.actions.push_back(Action::Close { conn, reason });
        self.schedule(conn, deadline);
        true
    }

    /// A parked session ends: its seat goes, its room hears it quit.
    fn end_parked(&mut self, conn: ConnId, reason: impl std::fmt::Display) {
        let Some(c) = self.get_mut(conn) else { return };
        let Phase::Parked { seat, .. } = c.phase else { return };
        c.phase = Phase::Done;
        let admitted = mem::take(&mut c.admitted);
        let counted_ip = c.counted_ip.take();
        self.parked -= 1;
        self.forget_session(conn);
        self.vacate(conn, seat, reason);
        if admitted {
            self.open -= 1;
            self.budget.give_client();
            counted_ip.inspect(|&ip| self.budget.give_address(ip));
        }
        self.release(conn);
    }

    /// `conn`'s upgrade offers the key of the session `old` holds in the same
    /// room: `conn` takes the seat, hears `<id> resume` and every whole frame
    /// kept for the seat, and nobody else hears anything. A half-dead `old`
    /// the relay had not noticed is closed with 4001.
    fn resume(
        &mut self,
        conn: ConnId,
        old: ConnId,
        digest: [u8; 32],
        pending: Pending,
        subject: Option<Box<str>>,
        now: Instant,
    ) -> bool {
        let Some(o) = self.get_mut(old) else { return false };
        let Some(seat) = o.seat() else { return false };
        let was_parked = matches!(o.phase, Phase::Parked { .. });
        // The seat's place in the caps moves with it.
        let (admitted, old_ip) = (mem::take(&mut o.admitted), o.counted_ip.take());
        o.session = None;
        let new_ip = self.get(conn).and_then(|c| c.peer).map(|a| a.ip());
        let counted_ip = match (old_ip, new_ip) {
            (Some(old_ip), Some(ip)) => {
                self.budget.give_address(old_ip);
                self.budget.take_address(ip, usize::MAX);
                Some(ip)
            }
            (old_ip, _) => old_ip,
        };
        let (mut kept, old_class) =
            self.outputs.get_mut(old).map(|slot| (slot.output.take_frames(), slot.deflate)).unwrap_or_default();
        if old_class != pending.deflate.map_or(0, |a| a.class()) {
            // Compressed for a window this connection did not agree to.
            kept = deflate::plain_frames(&kept);
        }
        self.rooms.rebind(seat, conn, subject);
        self.sessions.insert(digest, conn);
        if was_parked {
            self.parked -= 1;
            if let Some(o) = self.get_mut(old) {
                o.phase = Phase::Done;
            }
            self.release(old);
        } else if let Some(o) = self.get_mut(old) {
            o.phase = Phase::Open { seat: None, ping_sent: None };
            self.start_close(old, 4001, "replaced", CloseReason::Replaced, now);
        }
        let c = self.get_mut(conn).expect("a connection resuming is live");
        c.admitted = admitted;
        c.counted_ip = counted_ip;
        c.session = Some(digest);
        c.phase = Phase::Open { seat: Some(seat), ping_sent: None };
        self.pending -= 1;
        self.stats.upgrades += 1;
        self.stats.resumes += 1;
        self.stats.deliveries += 1;
        let mut answer = mem::take(&mut self.scratch);
        answer.clear();
        http::accept_response(&pending.accept, pending.ws_relay, pending.deflate.as_ref(), &mut answer);
        self.agree_deflate(conn, pending.deflate);
        if let Some(slot) = self.outputs.get_mut(conn) {
            slot.output.track_frames(answer.len());
        }
        let mut digits = [0; 20];
        encode_frame(&mut answer, OpCode::Text, &[envelope::format_id(seat.id, &mut digits), b" resume"]);
        answer.extend_from_slice(&kept);
        self.push(conn, &answer, Bound::Exempt);
        self.scratch = answer;
        debug!("{conn} resumed the seat of {old}: id {}, {} bytes kept", seat.id, kept.len());
        self.schedule(conn, now.checked_add(self.config.ping_interval));
        true
    }

    /// Forgets a finished connection.
    fn release(&mut self, conn: ConnId) {
        if self.get(conn).is_some() {
            self.conns.remove(conn.index());
            self.outputs.close(conn);
        }
    }
}

/// Counts `n` bytes of `slot` written; true when that was the last of a
/// finished connection, which can then be released.
#[inline]
fn consume(slot: &mut Slot, n: usize, stats: &mut Stats) -> bool {
    let n = n.min(slot.output.backlog());
    slot.output.consume(n);
    stats.bytes_sent += n as u64;
    slot.finished && slot.output.backlog() == 0
}

fn conns_alive(conns: &Slab<Conn>, conn: ConnId) -> bool {
    conns.get(conn.index()).is_some_and(|c| c.id == conn)
}

/// What the driver is asked to decide about `pending`, from `peer`.
fn admission_of(pending: &Pending, peer: Option<SocketAddr>) -> Admission {
    Admission { room: pending.room.clone(), token: pending.token.clone(), origin: pending.origin.clone(), peer }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        s.truncate(end);
    }
    s
}

/// The content type of `/metrics`: Prometheus' text format, version 0.0.4.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why `c` ends if its transport does now; `None` if it already ended.
fn ending_reason(c: &Conn) -> Option<CloseReason> {
    match c.phase {
        // A client dropping the line after the relay's close frame ends for the relay's reason.
        Phase::Closing { reason, .. } => Some(reason),
        Phase::Handshake { .. } | Phase::Admitting { .. } | Phase::Open { .. } => Some(CloseReason::TransportClosed),
        Phase::Done | Phase::Parked { .. } => None,
    }
}
