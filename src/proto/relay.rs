//! [`Relay`]: every connection, every room, and the routing between them.

use std::collections::VecDeque;
use std::time::Instant;

use log::debug;
use slab::Slab;

use super::action::{Action, CloseReason, ConnId};
use super::config::{Config, Listener, Mode};
use super::conn::{Conn, Phase};
use super::envelope::{self, Target};
use super::error::{HandshakeError, ProtocolError, RelayError};
use super::frame::OpCode;
use super::handshake::{self, Request, RequestReader, Resource};
use super::message::{Message, MessageDecoder};
use super::metrics::{self, DriverMetrics, Gauges};
use super::outbox::Outbox;
use super::rate::RateLimiter;
use super::room::Rooms;
use super::stats::Stats;
use super::timer::TimerQueue;

/// The whole relay as a state machine: bytes and time in, actions out.
///
/// Feed it with the `handle_*` methods, each given the current time; after
/// each, drain [`poll_action`](Self::poll_action) until it returns `None`, then
/// wake up by [`poll_timeout`](Self::poll_timeout) at the latest and call
/// [`handle_timeout`](Self::handle_timeout).
#[derive(Debug)]
pub struct Relay {
    config: Config,
    conns: Slab<Conn>,
    next_generation: u32,
    rooms: Rooms,
    timers: TimerQueue,
    outbox: Outbox,
    stats: Stats,
    driver_metrics: DriverMetrics,
    shutting_down: bool,
    /// Upgraded connections not yet finished, counted against `max_clients`.
    open: usize,
    /// Connections still in their handshake, counted against `max_handshakes`.
    pending: usize,
    /// Connections in the order they arrived, oldest first, for pushing out the
    /// oldest handshake. Entries that have since left the handshake are skipped.
    arrivals: VecDeque<ConnId>,
}

/// What a message asks of the connection that sent it, worked out while the
/// decoder still borrows the connection.
enum Next {
    Continue,
    Reject(RelayError),
    ClientClose(Option<u16>),
    Finish(CloseReason),
}

impl Relay {
    /// A relay with no connections.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            conns: Slab::new(),
            next_generation: 0,
            rooms: Rooms::default(),
            timers: TimerQueue::default(),
            outbox: Outbox::default(),
            stats: Stats::default(),
            driver_metrics: DriverMetrics::default(),
            shutting_down: false,
            open: 0,
            pending: 0,
            arrivals: VecDeque::new(),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Running totals: messages, deliveries, closes by reason, refusals by status.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Where a driver reports what only it can measure (loop-turn durations,
    /// messages it dropped), so `/metrics` shows them.
    pub fn driver_metrics_mut(&mut self) -> &mut DriverMetrics {
        &mut self.driver_metrics
    }

    /// Appends every counter and gauge in the Prometheus text format: the body
    /// of `/metrics`, for drivers that expose it some other way.
    pub fn render_metrics(&self, out: &mut Vec<u8>) {
        let gauges = Gauges {
            connections: self.conns.len(),
            handshakes: self.pending,
            clients: self.open,
            rooms: self.rooms.len(),
            bytes_sent: self.outbox.queued_bytes(),
        };
        metrics::render(&self.stats, gauges, &self.driver_metrics, out);
    }

    /// Connections the core knows, in any phase.
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
        let c = self.get(conn)?;
        let Phase::Open { member: Some((room, id)), .. } = c.phase else { return None };
        Some((&self.rooms.get(room)?.name, id))
    }

    /// True once [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// A new transport connection on the public port; the client's first bytes
    /// are its HTTP request.
    pub fn handle_connect(&mut self, now: Instant) -> ConnId {
        self.handle_connect_on(Listener::Public, now)
    }

    /// A new transport connection on `listener`.
    pub fn handle_connect_on(&mut self, listener: Listener, now: Instant) -> ConnId {
        let entry = self.conns.vacant_entry();
        // Slab keys are dense; a driver holding four billion connections is out of scope.
        let id = ConnId { index: entry.key() as u32, generation: self.next_generation };
        self.next_generation = self.next_generation.wrapping_add(1);
        let deadline = now + self.config.handshake_timeout;
        entry.insert(Conn {
            id,
            listener,
            phase: Phase::Handshake { reader: RequestReader::new(self.config.handshake), deadline },
            last_read: now,
            scheduled: None,
            rate: RateLimiter::default(),
        });
        self.stats.connections += 1;
        self.schedule(id, deadline);
        self.pending += 1;
        self.arrivals.push_back(id);
        self.push_out_handshakes();
        id
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

    /// Bytes read from `conn`'s transport.
    pub fn handle_read(&mut self, conn: ConnId, mut bytes: &[u8], now: Instant) {
        let Some(c) = self.conns.get_mut(conn.index()).filter(|c| c.id == conn) else { return };
        c.last_read = now;
        self.stats.bytes_received += bytes.len() as u64;
        if let Phase::Handshake { reader, .. } = &mut c.phase {
            match reader.feed(bytes) {
                Ok(None) => return,
                Ok(Some((request, used))) => {
                    bytes = &bytes[used..];
                    self.complete_handshake(conn, request, now);
                }
                Err(e) => return self.refuse(conn, e),
            }
        }
        self.read_frames(conn, bytes, now);
    }

    /// `conn`'s transport ended: EOF, reset, or an error reading or writing it.
    pub fn handle_close(&mut self, conn: ConnId, _now: Instant) {
        let Some(c) = self.get_mut(conn) else { return };
        // A client dropping the line after the relay's close frame ends for the relay's reason.
        let reason = match c.phase {
            Phase::Closing { reason, .. } => reason,
            _ => CloseReason::TransportClosed,
        };
        self.finish(conn, reason);
    }

    /// `conn` is not reading: the driver's output buffer for it passed its
    /// bound. The client leaves its room (the others hear `quit`) and its
    /// transport is closed without further writes; nobody else waits for it.
    pub fn handle_slow_consumer(&mut self, conn: ConnId, _now: Instant) {
        if self.get_mut(conn).is_some() {
            self.finish(conn, CloseReason::SlowConsumer);
        }
    }

    /// Time has reached `now`: fire every deadline due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, conn)) = self.timers.pop_due(now) {
            let Some(c) = self.get_mut(conn) else { continue };
            if c.scheduled != Some(at) {
                continue;
            }
            c.scheduled = None;
            self.on_timer(conn, now);
        }
    }

    /// Stops the relay: refuses handshakes in progress with 503 and sends every
    /// client close 1001. Connections then end as their close handshakes do.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        // Every room is dissolving at once: nobody needs to hear who quits.
        self.rooms.clear();
        let conns: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for conn in conns {
            match &mut self.conns[conn.index()].phase {
                Phase::Handshake { .. } => self.refuse(conn, HandshakeError::ShuttingDown),
                Phase::Open { member, .. } => {
                    *member = None;
                    self.start_close(conn, 1001, "server shutting down", CloseReason::Shutdown, now);
                }
                Phase::Closing { .. } => {}
            }
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action<'_>> {
        self.outbox.poll()
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

    fn schedule(&mut self, conn: ConnId, at: Instant) {
        let Some(c) = self.get_mut(conn) else { return };
        if c.scheduled.is_none_or(|s| at < s) {
            c.scheduled = Some(at);
            self.timers.push(at, conn);
        }
    }

    fn complete_handshake(&mut self, conn: ConnId, request: Request, now: Instant) {
        let listener = self.conns[conn.index()].listener;
        let (target, accept) = match request {
            Request::Get(resource) => return self.serve(conn, listener, resource),
            Request::Upgrade { .. } if listener == Listener::Metrics => {
                return self.refuse(conn, HandshakeError::NotFound);
            }
            _ if self.shutting_down => return self.refuse(conn, HandshakeError::ShuttingDown),
            Request::Upgrade { origin: Some(origin), .. } if !self.origin_allowed(&origin) => {
                return self.refuse(conn, HandshakeError::ForbiddenOrigin);
            }
            Request::Upgrade { target, accept, .. } => (target, accept),
        };
        if let Some(full) = self.capacity_for(&target) {
            return self.refuse(conn, full);
        }
        self.stats.upgrades += 1;
        self.open += 1;
        self.pending -= 1;
        let start = self.outbox.bytes().len();
        handshake::accept_response(&accept, self.outbox.bytes());
        let member = match self.config.mode {
            Mode::Echo => None,
            Mode::Relay => Some(self.join(conn, &target, start)),
        };
        if member.is_none() {
            self.outbox.send(conn, start);
        }
        let c = &mut self.conns[conn.index()];
        c.phase = Phase::Open { decoder: MessageDecoder::new(self.config.message), member, ping_sent: None };
        self.schedule(conn, now + self.config.ping_interval);
    }

    /// Answers a plain `GET` or `HEAD` and closes the connection.
    fn serve(&mut self, conn: ConnId, listener: Listener, resource: Resource) {
        let public = listener == Listener::Public;
        match resource {
            Resource::Health => self.respond(conn, |out| handshake::plain_response(200, "ok", out)),
            Resource::Metrics if !public || self.config.serve_metrics => {
                let mut body = Vec::with_capacity(4096);
                self.render_metrics(&mut body);
                let content_type = "text/plain; version=0.0.4; charset=utf-8";
                self.respond(conn, |out| handshake::ok_response(content_type, &body, out));
            }
            Resource::Page(page) if public && self.config.serve_pages => {
                self.respond(conn, |out| handshake::ok_response(page.content_type, page.body, out));
            }
            Resource::Metrics | Resource::Page(_) => return self.refuse(conn, HandshakeError::NotFound),
        }
        self.finish(conn, CloseReason::HttpServed);
    }

    /// Queues the HTTP response `write` makes for `conn`, without its body
    /// when the request was a `HEAD`.
    fn respond(&mut self, conn: ConnId, write: impl FnOnce(&mut Vec<u8>)) {
        let head_only =
            self.get(conn).is_some_and(|c| matches!(&c.phase, Phase::Handshake { reader, .. } if reader.is_head()));
        let start = self.outbox.bytes().len();
        write(self.outbox.bytes());
        if head_only {
            handshake::strip_body(self.outbox.bytes(), start);
        }
        self.outbox.send(conn, start);
    }

    /// A browser page from another site may not open a socket here (cross-site
    /// WebSocket hijacking); clients that send no Origin are not browsers.
    fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.config.allowed_origins.as_ref().is_none_or(|list| list.iter().any(|o| o.as_bytes() == origin))
    }

    /// Why an upgrade into room `target` would pass a configured cap, if it would.
    fn capacity_for(&self, target: &[u8]) -> Option<HandshakeError> {
        let limits = &self.config.capacity;
        if self.open >= limits.max_clients {
            return Some(HandshakeError::ServerFull);
        }
        if self.config.mode == Mode::Echo {
            return None;
        }
        match self.rooms.by_name(target) {
            Some(room) if room.members().len() >= limits.max_room_clients => Some(HandshakeError::RoomFull),
            None if self.rooms.len() >= limits.max_rooms => Some(HandshakeError::TooManyRooms),
            _ => None,
        }
    }

    /// Adds `conn` to the room: it hears `self` and who is there, in one write
    /// with the 101 response that starts at `start`; the others hear `join`.
    fn join(&mut self, conn: ConnId, room_name: &[u8], start: usize) -> (usize, u64) {
        let (room, id) = self.rooms.join(room_name, conn);
        let mut digits = [0; 20];
        let me = envelope::format_id(id, &mut digits);
        self.outbox.frame(OpCode::Text, &[me, b" self"]);
        let members = self.rooms.get(room).map_or(&[][..], |r| r.members());
        let mut peers = 0;
        for m in members.iter().filter(|m| m.conn != conn) {
            let mut buf = [0; 20];
            self.outbox.frame(OpCode::Text, &[envelope::format_id(m.id, &mut buf), b" join"]);
            peers += 1;
        }
        self.outbox.send(conn, start);
        let notice = self.outbox.frame(OpCode::Text, &[me, b" join"]);
        let others = members.iter().filter(|m| m.conn != conn).map(|m| m.conn);
        let told = self.outbox.broadcast(others, notice);
        self.stats.deliveries += 1 + peers + told as u64;
        debug!("{conn} joined room={:?} id={id}", String::from_utf8_lossy(room_name));
        (room, id)
    }

    /// Takes `conn` out of its room, telling the others it quit.
    fn leave(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.get_mut(conn) else { return };
        let Phase::Open { member: member @ Some(_), .. } = &mut c.phase else { return };
        let Some((room, id)) = member.take() else { return };
        if let Some(r) = self.rooms.get(room) {
            debug!("{conn} left room={:?} id={id}: {reason}", String::from_utf8_lossy(&r.name));
        }
        self.rooms.leave(room, id);
        let Some(r) = self.rooms.get(room) else { return };
        let mut digits = [0; 20];
        let start = self.outbox.frame(OpCode::Text, &[envelope::format_id(id, &mut digits), b" quit"]);
        let told = self.outbox.broadcast(r.members().iter().map(|m| m.conn), start);
        self.stats.deliveries += told as u64;
    }

    fn read_frames(&mut self, conn: ConnId, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            let Some(Conn { phase, rate, .. }) = self.conns.get_mut(conn.index()).filter(|c| c.id == conn) else {
                return;
            };
            let (decoder, member, closing) = match phase {
                Phase::Open { decoder, member, .. } => (decoder, *member, None),
                Phase::Closing { decoder, reason, .. } => (decoder, None, Some(*reason)),
                Phase::Handshake { .. } => return,
            };
            let (used, message) = match decoder.decode(bytes) {
                Ok(m) => m,
                Err(e) => return self.fail(conn, e),
            };
            bytes = &bytes[used..];
            let Some(message) = message else { return };
            let cost = match message {
                Message::Text(m) | Message::Binary(m) | Message::Ping(m) | Message::Pong(m) => Some(m.len()),
                // A close frame is always honoured.
                Message::Close(_) => None,
            };
            let flooding = match (self.config.flood, cost) {
                (Some(limits), Some(len)) if closing.is_none() => !rate.allow(&limits, len, now),
                _ => false,
            };
            let next = match message {
                _ if flooding => Next::Reject(RelayError::RateLimited),
                // The handshake the relay started is complete; the close keeps its cause.
                Message::Close(_) if closing.is_some() => Next::Finish(closing.unwrap_or(CloseReason::ClientClose)),
                _ if closing.is_some() => Next::Continue,
                Message::Text(m) | Message::Binary(m) => {
                    let opcode = if matches!(message, Message::Text(_)) { OpCode::Text } else { OpCode::Binary };
                    self.stats.messages_received += 1;
                    match member {
                        None => {
                            let start = self.outbox.frame(opcode, &[m]);
                            self.outbox.send(conn, start);
                            self.stats.deliveries += 1;
                            Next::Continue
                        }
                        Some((room, id)) => {
                            match route(&self.rooms, &mut self.outbox, &mut self.stats, room, id, opcode, m) {
                                Ok(()) => Next::Continue,
                                Err(e) => Next::Reject(e),
                            }
                        }
                    }
                }
                Message::Ping(payload) => {
                    let start = self.outbox.frame(OpCode::Pong, &[payload]);
                    self.outbox.send(conn, start);
                    Next::Continue
                }
                Message::Pong(_) => Next::Continue,
                Message::Close(code) => Next::ClientClose(code.map(|(c, _)| c)),
            };
            match next {
                Next::Continue => {}
                Next::Reject(e) => {
                    let text = e.to_string();
                    return self.start_close(conn, e.close_code(), &text, CloseReason::Relay(e), now);
                }
                Next::ClientClose(code) => {
                    let start = match code {
                        Some(code) => self.outbox.frame(OpCode::Close, &[&code.to_be_bytes()]),
                        None => self.outbox.frame(OpCode::Close, &[]),
                    };
                    self.outbox.send(conn, start);
                    return self.finish(conn, CloseReason::ClientClose);
                }
                Next::Finish(reason) => return self.finish(conn, reason),
            }
        }
    }

    fn on_timer(&mut self, conn: ConnId, now: Instant) {
        let (ping_interval, ping_timeout) = (self.config.ping_interval, self.config.ping_timeout);
        let Some(c) = self.get_mut(conn) else { return };
        let last_read = c.last_read;
        match &mut c.phase {
            Phase::Handshake { deadline, .. } if now >= *deadline => self.refuse(conn, HandshakeError::Timeout),
            Phase::Closing { deadline, reason, .. } if now >= *deadline => {
                let reason = *reason;
                self.finish(conn, reason);
            }
            Phase::Handshake { deadline, .. } | Phase::Closing { deadline, .. } => {
                let at = *deadline;
                self.schedule(conn, at);
            }
            Phase::Open { ping_sent, .. } => {
                if ping_sent.is_some_and(|sent| last_read > sent) {
                    *ping_sent = None;
                }
                let at = match *ping_sent {
                    Some(sent) if now >= sent + ping_timeout => {
                        let start = self.outbox.frame(OpCode::Close, &[&1011u16.to_be_bytes(), b"keepalive timeout"]);
                        self.outbox.send(conn, start);
                        return self.finish(conn, CloseReason::KeepaliveTimeout);
                    }
                    Some(sent) => sent + ping_timeout,
                    None if now >= last_read + ping_interval => {
                        *ping_sent = Some(now);
                        let start = self.outbox.frame(OpCode::Ping, &[b"keepalive"]);
                        self.outbox.send(conn, start);
                        now + ping_timeout
                    }
                    None => last_read + ping_interval,
                };
                self.schedule(conn, at);
            }
        }
    }

    /// Answers a refused request with its status and closes the connection.
    fn refuse(&mut self, conn: ConnId, e: HandshakeError) {
        *self.stats.refused.entry(e.http_status()).or_default() += 1;
        self.respond(conn, |out| handshake::error_response(e, out));
        self.finish(conn, CloseReason::Handshake(e));
    }

    /// Fails the connection (RFC 6455 §7.1.7): a close frame with the error's
    /// code, then the transport closes without waiting for an answer.
    fn fail(&mut self, conn: ConnId, e: ProtocolError) {
        if let Some(Phase::Open { .. }) = self.get_mut(conn).map(|c| &c.phase) {
            let start = self.outbox.frame(OpCode::Close, &[&e.close_code().to_be_bytes(), e.to_string().as_bytes()]);
            self.outbox.send(conn, start);
        }
        self.finish(conn, CloseReason::Protocol(e));
    }

    /// Starts the close handshake: the client leaves its room now and has
    /// until the close timeout to answer with its own close frame.
    fn start_close(&mut self, conn: ConnId, code: u16, text: &str, reason: CloseReason, now: Instant) {
        self.leave(conn, reason);
        let deadline = now + self.config.close_timeout;
        let placeholder = Phase::Handshake { reader: RequestReader::new(self.config.handshake), deadline };
        let Some(c) = self.get_mut(conn).filter(|c| matches!(c.phase, Phase::Open { .. })) else { return };
        // The decoder moves into Closing; the placeholder is never observed.
        let Phase::Open { decoder, .. } = std::mem::replace(&mut c.phase, placeholder) else { return };
        c.phase = Phase::Closing { decoder, deadline, reason };
        debug!("{conn} closing: {reason}");
        let start = self.outbox.frame(OpCode::Close, &[&code.to_be_bytes(), text.as_bytes()]);
        self.outbox.send(conn, start);
        self.schedule(conn, deadline);
    }

    /// Forgets `conn` and tells the driver to close its transport.
    fn finish(&mut self, conn: ConnId, reason: CloseReason) {
        self.leave(conn, reason);
        if self.get_mut(conn).is_none() {
            return;
        }
        let conn_state = self.conns.remove(conn.index());
        match conn_state.phase {
            Phase::Handshake { .. } => self.pending -= 1,
            _ => self.open -= 1,
        }
        self.stats.closes.add(reason);
        debug!("{conn} closed: {reason}");
        self.outbox.close(conn, reason);
    }
}

/// Delivers message `msg` from member `from` of `room` as `<from> <rest>`.
fn route(
    rooms: &Rooms,
    outbox: &mut Outbox,
    stats: &mut Stats,
    room: usize,
    from: u64,
    opcode: OpCode,
    msg: &[u8],
) -> Result<(), RelayError> {
    let (target, rest) = envelope::parse(msg)?;
    let Some(room) = rooms.get(room) else { return Ok(()) };
    let mut digits = [0; 20];
    let source = envelope::format_id(from, &mut digits);
    match target {
        Target::All => {
            let start = outbox.frame(opcode, &[source, b" ", rest]);
            let told = outbox.broadcast(room.members().iter().filter(|m| m.id != from).map(|m| m.conn), start);
            stats.deliveries += told as u64;
        }
        Target::Id(id) => match room.find(id) {
            Some(m) => {
                let start = outbox.frame(opcode, &[source, b" ", rest]);
                outbox.send(m.conn, start);
                stats.deliveries += 1;
            }
            None => stats.undeliverable += 1,
        },
        Target::Nobody => stats.undeliverable += 1,
    }
    Ok(())
}
