//! The clients and the loop that drives them: connect, upgrade, send on an
//! even open-loop schedule, read and time what comes back.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConnection;
use slab::Slab;
use ws_relay::client::{
    masked_frame, masked_frame_rsv1, upgrade_request, upgrade_request_offering, Deflater, Inflater,
};
use ws_relay::client::{FrameHeader, OpCode};

use crate::report::Step;
use crate::tls::{self, TlsClient};
use crate::wait::{Waiter, TIMER};

pub mod soak;
pub mod takeover;

/// Handshakes in flight at once while connecting, so the relay's accept
/// backlog never overflows into SYN retries.
const MAX_CONNECTING: usize = 256;

/// How long after the window closes late deliveries are still counted.
const GRACE: Duration = Duration::from_secs(2);

/// What a browser offers.
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// One load level.
pub struct Plan {
    /// Messages per second per client.
    pub rate: f64,
    /// Bytes per message.
    pub size: usize,
    /// Sending before the window opens.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
}

/// What a client does besides reading: soak runs mix in the misbehaving kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends on schedule, reads everything, checks order.
    Good,
    /// Joins and never reads again.
    Silent,
    /// Sends as fast as it can.
    Flooder,
    /// Sends bytes that are no WebSocket frame.
    Garbage,
    /// Sends half a frame and drops the connection.
    Resetter,
    /// Sends its upgrade request a byte at a time, slowly.
    Trickler,
    /// Streams large messages to one peer, the lagger.
    Streamer,
    /// Reads, but stays a fixed amount behind what it is sent.
    Lagger,
    /// Sends one large message, then idles.
    BigSender,
}

#[derive(PartialEq, Eq)]
enum State {
    Upgrading,
    Open,
    Closed,
}

struct Client {
    stream: TcpStream,
    /// Its TLS session with `--tls`: what it reads goes through it into
    /// `inbuf`, and `out` goes through it to the socket. Everything else
    /// about a client is the same either way.
    tls: Option<Box<ClientConnection>>,
    /// permessage-deflate, with `Fleet::with_deflate`.
    compression: Option<Box<Compression>>,
    state: State,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    /// Nothing in `out` from this offset on is written until released: a
    /// peer stalled in the middle of its handshake or of a frame.
    hold: Option<usize>,
    peers: usize,
    /// Churn: close as soon as `self` arrives.
    churner: bool,
    mask: u32,
    /// Room number, and the id the relay gave.
    room: usize,
    id: u64,
    /// Reports sent on this connection: the next one's sequence number.
    sent: u64,
    /// Soak: the next sequence number expected from each source id.
    expect: BTreeMap<u64, u64>,
    /// Soak: reports that arrived out of order or after a gap.
    disorder: u64,
    behaviour: Behaviour,
    /// Soak: when a misbehaving client next acts.
    next_act: Option<Instant>,
    /// Bytes it may still read; `None` reads whatever arrives.
    read_budget: Option<usize>,
    /// Bytes read so far.
    read_total: usize,
    /// `self`, `join` and `quit` notices received.
    notices: u64,
    /// When the last report arrived, and the longest wait between two.
    last_report_us: u64,
    longest_gap_us: u64,
}

/// A client's side of permessage-deflate, as a browser does it: its own
/// messages compressed with the context carried over, the relay's inflated.
struct Compression {
    deflater: Deflater,
    /// Once the 101 took the offer; until then, and without it, frames go plain.
    inflater: Option<Inflater>,
}

/// What the loop counts while a plan runs.
#[derive(Default)]
struct Tally {
    delivered: u64,
    delivered_total: u64,
    churned: u64,
    /// WebSocket bytes read and written (inside TLS, with `--tls`).
    wire_in: u64,
    wire_out: u64,
    /// Messages that arrived compressed.
    compressed: u64,
}

/// The clients of one run and their poll loop.
pub struct Fleet {
    poll: Poll,
    events: Events,
    waiter: Waiter,
    addr: SocketAddr,
    prefix: String,
    clients: Slab<Client>,
    epoch: Instant,
    buf: Vec<u8>,
    tally: Tally,
    latency: Histogram<u64>,
    dirty: Vec<usize>,
    token: Option<String>,
    tls: Option<TlsClient>,
    /// Clients offer permessage-deflate.
    deflate: bool,
    /// Reports carry a JSON body, as a game's would, rather than padding.
    json_reports: bool,
    /// A TLS failure was printed: the first says why, the rest would repeat it.
    tls_failure_said: bool,
    /// The first finished handshake's version and suite, for the report.
    tls_described: bool,
}

impl Fleet {
    /// A fleet that will connect to `addr`, rooms named `prefix<n>`.
    pub fn new(addr: SocketAddr, prefix: String) -> io::Result<Self> {
        let poll = Poll::new()?;
        Ok(Self {
            waiter: Waiter::new(&poll)?,
            poll,
            events: Events::with_capacity(4096),
            addr,
            prefix,
            clients: Slab::new(),
            epoch: Instant::now(),
            buf: vec![0; 256 * 1024],
            tally: Tally::default(),
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            dirty: Vec::new(),
            token: None,
            tls: None,
            deflate: false,
            json_reports: false,
            tls_failure_said: false,
            tls_described: false,
        })
    }

    /// Every client from now on connects over TLS with `tls`.
    pub fn with_tls(mut self, tls: TlsClient) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Every client from now on offers permessage-deflate as browsers do,
    /// compresses what it sends once the relay agrees, and inflates what
    /// arrives compressed.
    pub fn with_deflate(mut self) -> Self {
        self.deflate = true;
        self
    }

    /// Reports from now on carry a game's JSON state after their sequence
    /// number and time, so that compression sees what a game would send.
    pub fn with_json_reports(mut self) -> Self {
        self.json_reports = true;
        self
    }

    /// Whether every open client's upgrade agreed to permessage-deflate.
    pub fn all_compressing(&self) -> bool {
        self.clients.iter().all(|(_, c)| c.compression.as_ref().is_some_and(|z| z.inflater.is_some()))
    }

    /// Every upgrade from now on offers `token` the way ws-relay.js does, in
    /// `Sec-WebSocket-Protocol`, so the relay checks one on each.
    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    /// Clients with an open WebSocket.
    pub fn open(&self) -> usize {
        self.clients.iter().filter(|(_, c)| c.state == State::Open).count()
    }

    fn connect(&mut self, room: usize, churner: bool) -> Result<usize, String> {
        self.connect_as(room, churner, Behaviour::Good, true)
    }

    fn connect_as(&mut self, room: usize, churner: bool, behaviour: Behaviour, upgrade: bool) -> Result<usize, String> {
        let stream = std::net::TcpStream::connect(self.addr).map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = TcpStream::from_std(stream);
        let tls = match &self.tls {
            Some(t) => Some(Box::new(t.session()?)),
            None => None,
        };
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        let (target, host) = (format!("{}{room}", self.prefix), self.addr.to_string());
        let mut request = match self.deflate {
            true => upgrade_request_offering(&target, &host, DEFLATE_OFFER),
            false => upgrade_request(&target, &host),
        };
        if let Some(token) = &self.token {
            request.truncate(request.len() - 2);
            request.extend_from_slice(
                format!("Sec-WebSocket-Protocol: ws-relay, ws-relay.token.{token}\r\n\r\n").as_bytes(),
            );
        }
        let out = if upgrade { request } else { Vec::new() };
        let compression =
            self.deflate.then(|| Box::new(Compression { deflater: Deflater::new(15, true), inflater: None }));
        entry.insert(Client {
            stream,
            tls,
            compression,
            state: State::Upgrading,
            inbuf: Vec::new(),
            out,
            written: 0,
            hold: None,
            peers: 0,
            churner,
            mask: key as u32,
            room,
            id: 0,
            sent: 0,
            expect: BTreeMap::new(),
            disorder: 0,
            behaviour,
            next_act: None,
            read_budget: None,
            read_total: 0,
            notices: 0,
            last_report_us: 0,
            longest_gap_us: 0,
        });
        self.dirty.push(key);
        Ok(key)
    }

    /// Connects `rooms` × `per_room` clients and waits until every one has
    /// its id and has heard every peer join.
    pub fn join_rooms(&mut self, rooms: usize, per_room: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let first = self.clients.len();
        for room in 0..rooms {
            for _ in 0..per_room {
                while self.clients.iter().filter(|(_, c)| c.state == State::Upgrading).count() >= MAX_CONNECTING {
                    self.turn(Some(Duration::from_millis(50)), None)?;
                    if Instant::now() > deadline {
                        return Err("timed out connecting".into());
                    }
                }
                self.connect(room, false)?;
            }
        }
        let want = rooms * per_room;
        loop {
            let ready = self
                .clients
                .iter()
                .skip(first)
                .filter(|(_, c)| c.state == State::Open && c.peers + 1 == per_room)
                .count();
            if ready == want {
                return Ok(());
            }
            if self.clients.iter().any(|(_, c)| c.state == State::Closed) {
                return Err("the relay closed a client while the rooms formed".into());
            }
            if Instant::now() > deadline {
                return Err(format!("only {ready} of {want} clients ready after 120 s"));
            }
            self.turn(Some(Duration::from_millis(50)), None)?;
        }
    }

    /// Keeps the connections served (pings answered, input drained) for `d`.
    pub fn settle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if self.turn(Some(left), None).is_err() {
                return;
            }
        }
    }

    /// Runs one plan: every open client sends to `*` on an even schedule.
    pub fn run(&mut self, plan: &Plan) -> Result<Step, String> {
        let senders: Vec<usize> = self.clients.iter().filter(|(_, c)| c.state == State::Open).map(|(k, _)| k).collect();
        if senders.is_empty() {
            return Err("no open clients".into());
        }
        let per_room: usize =
            self.clients.iter().filter(|(_, c)| c.state == State::Open).map(|(_, c)| c.peers).max().unwrap_or(0) + 1;
        self.tally = Tally::default();
        self.latency.reset();
        let start = Instant::now();
        let window_start = start + plan.warmup;
        let window_end = window_start + plan.duration;
        let interval = Duration::from_secs_f64(1.0 / (plan.rate * senders.len() as f64));
        let window = (self.micros(window_start), self.micros(window_end));
        let mut k: u64 = 0;
        let mut sent_in_window: u64 = 0;
        loop {
            let now = Instant::now();
            let mut next = start + interval.mul_f64(k as f64);
            while next <= now && next < window_end {
                let key = senders[(k % senders.len() as u64) as usize];
                let at = self.micros(next);
                self.send_report(key, at, plan.size);
                if next >= window_start {
                    sent_in_window += 1;
                }
                k += 1;
                next = start + interval.mul_f64(k as f64);
            }
            let expected = sent_in_window * (per_room as u64 - 1);
            if now >= window_end && (self.tally.delivered >= expected || now >= window_end + GRACE) {
                let seconds = plan.duration.as_secs_f64();
                let delivered = self.tally.delivered.min(expected);
                return Ok(Step {
                    rate: plan.rate,
                    clients: senders.len(),
                    sent: sent_in_window,
                    expected,
                    delivered,
                    delivered_total: self.tally.delivered_total,
                    loss: if expected == 0 { 0.0 } else { 1.0 - delivered as f64 / expected as f64 },
                    latency: self.latency.clone(),
                    seconds,
                    relay_cpu_s: None,
                    proxy_cpu_s: None,
                    tool_cpu_s: None,
                    wall_s: start.elapsed().as_secs_f64(),
                    sent_total: k,
                    wire_in: self.tally.wire_in,
                    wire_out: self.tally.wire_out,
                    compressed: self.tally.compressed,
                });
            }
            let wake = if next < window_end { next } else { window_end + GRACE };
            self.turn(Some(wake.saturating_duration_since(now)), Some(window))?;
        }
    }

    /// Churn: `concurrency` clients at a time connect to room 0, wait for
    /// `self` and close; returns the cycles completed in `d`.
    pub fn churn(&mut self, concurrency: usize, d: Duration) -> Result<u64, String> {
        self.tally = Tally::default();
        for _ in 0..concurrency {
            self.connect(0, true)?;
        }
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let before = self.tally.churned;
            self.turn(Some(left), None)?;
            for _ in before..self.tally.churned {
                self.connect(0, true)?;
            }
        }
        Ok(self.tally.churned)
    }

    /// Connect: `connections` clients one after another, each to one of
    /// `rooms` rooms, timed from the start of its TCP connect to the end of
    /// the relay's 101 response; each closes before the next starts, so the
    /// relay is idle but for it. Returns the times in microseconds.
    pub fn connect_latency(&self, connections: usize, rooms: usize) -> Result<Histogram<u64>, String> {
        let mut times = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        for i in 0..connections {
            let request = upgrade_request(&format!("{}{}", self.prefix, i % rooms.max(1)), &self.addr.to_string());
            let started = Instant::now();
            let stream = std::net::TcpStream::connect(self.addr).map_err(|e| format!("connect {}: {e}", self.addr))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            // Over TLS the time includes the handshake, as a browser's would.
            let took = match &self.tls {
                None => upgrade_once(stream, &request, started)?,
                Some(t) => upgrade_once(rustls::StreamOwned::new(t.session()?, stream), &request, started)?,
            };
            let _ = times.record((took.as_micros() as u64).max(1));
        }
        Ok(times)
    }

    fn micros(&self, t: Instant) -> u64 {
        t.duration_since(self.epoch).as_micros() as u64
    }

    fn send_report(&mut self, key: usize, at_us: u64, size: usize) {
        self.send(key, "*", at_us, size);
    }

    /// A report to one id, rather than to the room.
    fn send_to(&mut self, key: usize, id: u64, at_us: u64, size: usize) {
        self.send(key, &id.to_string(), at_us, size);
    }

    fn send(&mut self, key: usize, target: &str, at_us: u64, size: usize) {
        let Some(c) = self.clients.get_mut(key) else { return };
        if c.state != State::Open {
            return;
        }
        let seq = c.sent;
        c.sent += 1;
        let mut msg = format!("{target} report {seq} {at_us} ").into_bytes();
        if self.json_reports {
            game_state(&mut msg, seq, size);
        } else {
            msg.resize(size.max(msg.len() + 1), b'x');
        }
        c.mask = c.mask.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        match c.compression.as_mut().filter(|z| z.inflater.is_some()) {
            Some(z) => {
                let deflated = z.deflater.compress(&msg);
                masked_frame_rsv1(&mut c.out, true, true, OpCode::Text, &deflated, c.mask.to_le_bytes());
            }
            None => masked_frame(&mut c.out, true, OpCode::Text, &msg, c.mask.to_le_bytes()),
        }
        self.dirty.push(key);
    }

    /// Holds back the last `bytes` of what `key` has queued, and all it
    /// queues later, until [`release`](Self::release).
    fn hold_back(&mut self, key: usize, bytes: usize) {
        let c = &mut self.clients[key];
        c.hold = Some(c.out.len() - bytes);
    }

    /// Writes what [`hold_back`](Self::hold_back) held.
    fn release(&mut self, key: usize) {
        self.clients[key].hold = None;
        self.dirty.push(key);
    }

    /// One poll, its reads, and one write per client with output.
    fn turn(&mut self, timeout: Option<Duration>, window: Option<(u64, u64)>) -> Result<(), String> {
        self.flush();
        match self.waiter.poll(&mut self.poll, &mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let ready: Vec<(usize, bool)> =
            self.events.iter().filter(|e| e.token() != TIMER).map(|e| (e.token().0, e.is_writable())).collect();
        for (key, writable) in ready {
            self.read(key, window);
            if writable {
                self.dirty.push(key);
            }
        }
        self.flush();
        Ok(())
    }

    fn read(&mut self, key: usize, window: Option<(u64, u64)>) {
        loop {
            let Some(c) = self.clients.get_mut(key) else { return };
            if c.behaviour == Behaviour::Silent || c.read_budget == Some(0) {
                return;
            }
            let want = c.read_budget.unwrap_or(usize::MAX).min(self.buf.len());
            match c.stream.read(&mut self.buf[..want]) {
                Ok(0) => return self.close(key),
                Ok(n) => {
                    let now_us = self.epoch.elapsed().as_micros() as u64;
                    let before = c.inbuf.len();
                    match &mut c.tls {
                        None => c.inbuf.extend_from_slice(&self.buf[..n]),
                        Some(session) => {
                            if let Err(e) = tls::receive(session, &self.buf[..n], &mut c.inbuf) {
                                if c.behaviour == Behaviour::Good
                                    && !std::mem::replace(&mut self.tls_failure_said, true)
                                {
                                    let why = self.tls.as_ref().map_or_else(|| e.to_string(), |t| t.explain(&e));
                                    eprintln!("TLS: {why}");
                                }
                                // The alert that says why, if the socket takes it.
                                let _ = session.write_tls(&mut c.stream);
                                return self.close(key);
                            }
                            if session.wants_write() {
                                // The handshake's next flight, or a key update's answer.
                                self.dirty.push(key);
                            }
                            if !session.is_handshaking() && !std::mem::replace(&mut self.tls_described, true) {
                                eprintln!("TLS: {}", tls::describe(session));
                            }
                        }
                    }
                    self.tally.wire_in += (c.inbuf.len() - before) as u64;
                    c.read_total += n;
                    if let Some(budget) = &mut c.read_budget {
                        *budget -= n;
                    }
                    if !self.parse(key, now_us, window) {
                        return self.close(key);
                    }
                    if n < want {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(key),
            }
        }
    }

    /// Handles every complete frame in the client's buffer; false when the
    /// connection is over.
    fn parse(&mut self, key: usize, now_us: u64, window: Option<(u64, u64)>) -> bool {
        let c = &mut self.clients[key];
        let mut at = 0;
        if c.state == State::Upgrading {
            let Some(end) = c.inbuf.windows(4).position(|w| w == b"\r\n\r\n") else { return true };
            if !c.inbuf.starts_with(b"HTTP/1.1 101") {
                if c.behaviour == Behaviour::Good {
                    eprintln!("upgrade refused: {}", String::from_utf8_lossy(&c.inbuf[..end]));
                }
                return false;
            }
            if let Some(z) = &mut c.compression {
                let head = String::from_utf8_lossy(&c.inbuf[..end]).to_ascii_lowercase();
                if let Some(at) = head.find("\r\nsec-websocket-extensions: permessage-deflate") {
                    let line = head[at + 2..].lines().next().unwrap_or_default();
                    z.inflater = Some(Inflater::new(line.contains("server_no_context_takeover")));
                }
            }
            at = end + 4;
            c.state = State::Open;
        }
        let mut alive = true;
        while let Ok(Some((header, len))) = FrameHeader::parse(&c.inbuf[at..]) {
            let size = header.len as usize;
            if c.inbuf.len() < at + len + size {
                break;
            }
            let mut payload = &c.inbuf[at + len..at + len + size];
            let inflated;
            if header.rsv1 {
                // The relay sends every message in one frame, so a frame is a message.
                let Some(inflater) = c.compression.as_mut().and_then(|z| z.inflater.as_mut()) else { return false };
                inflated = match inflater.inflate(payload) {
                    Ok(message) => message,
                    Err(e) => {
                        eprintln!("a compressed message that does not inflate: {e}");
                        return false;
                    }
                };
                self.tally.compressed += 1;
                payload = &inflated;
            }
            match header.opcode {
                OpCode::Text | OpCode::Binary => {
                    let space = payload.iter().position(|&b| b == b' ');
                    let rest = space.map_or(&b""[..], |i| &payload[i + 1..]);
                    let source: u64 = space
                        .and_then(|i| std::str::from_utf8(&payload[..i]).ok())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if matches!(rest, b"self" | b"join" | b"quit") {
                        c.notices += 1;
                    }
                    match rest {
                        b"self" if c.churner => {
                            self.tally.churned += 1;
                            alive = false;
                        }
                        b"self" => c.id = source,
                        b"join" => c.peers += 1,
                        b"quit" => c.peers = c.peers.saturating_sub(1),
                        _ => {
                            if let Some(seq) = report_seq(rest) {
                                let next = c.expect.entry(source).or_insert(0);
                                if seq != *next {
                                    c.disorder += 1;
                                }
                                *next = seq + 1;
                                if c.last_report_us > 0 {
                                    c.longest_gap_us = c.longest_gap_us.max(now_us - c.last_report_us);
                                }
                                c.last_report_us = now_us;
                            }
                            self.tally.delivered_total += 1;
                            if let (Some(sent), Some((from, to))) = (report_time(rest), window) {
                                if (from..to).contains(&sent) {
                                    self.tally.delivered += 1;
                                    let _ = self.latency.record(now_us.saturating_sub(sent).max(1));
                                }
                            }
                        }
                    }
                }
                OpCode::Ping => {
                    let ping = payload.to_vec();
                    masked_frame(&mut c.out, true, OpCode::Pong, &ping, [1, 2, 3, 4]);
                    self.dirty.push(key);
                }
                OpCode::Close => alive = false,
                _ => {}
            }
            at += len + size;
            if !alive {
                break;
            }
        }
        c.inbuf.drain(..at);
        alive
    }

    fn close(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else { return };
        if c.churner {
            let mut c = self.clients.remove(key);
            let mut bye = Vec::new();
            masked_frame(&mut bye, true, OpCode::Close, &1000u16.to_be_bytes(), [0; 4]);
            match &mut c.tls {
                None => {
                    let _ = c.stream.write(&bye);
                }
                Some(session) => {
                    // The close frame and close_notify in one write, as best it can.
                    let _ = session.writer().write_all(&bye);
                    session.send_close_notify();
                    let _ = session.write_tls(&mut c.stream);
                }
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
            return;
        }
        c.state = State::Closed;
        let _ = self.poll.registry().deregister(&mut c.stream);
    }

    fn flush(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(c) = self.clients.get_mut(key) else { continue };
            let end = c.hold.unwrap_or(c.out.len());
            if c.state == State::Closed {
                continue;
            }
            let pending = &c.out[c.written.min(end)..end];
            let sent = match &mut c.tls {
                // Called with nothing new too: the handshake's next flight.
                Some(session) => tls::send(session, pending, &mut c.stream),
                None if pending.is_empty() => continue,
                None => c.stream.write(pending),
            };
            match sent {
                Ok(n) => {
                    self.tally.wire_out += n as u64;
                    c.written += n;
                    if c.written == c.out.len() {
                        c.out.clear();
                        c.written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => c.state = State::Closed,
            }
        }
    }
}

/// Sends the upgrade `request` on a blocking `stream` and reads the answer's
/// head; the time from `started` to its end, then a close frame.
fn upgrade_once(mut stream: impl Read + Write, request: &[u8], started: Instant) -> Result<Duration, String> {
    let mut buf = [0u8; 4096];
    stream.write_all(request).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the relay closed a connection before its 101".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let took = started.elapsed();
    if !head.starts_with(b"HTTP/1.1 101 ") {
        return Err(format!("upgrade refused: {}", String::from_utf8_lossy(&head)));
    }
    let mut bye = Vec::new();
    masked_frame(&mut bye, true, OpCode::Close, &1000u16.to_be_bytes(), [0; 4]);
    let _ = stream.write_all(&bye);
    let _ = stream.flush();
    Ok(took)
}

/// Appends a game's state as JSON to a report's head, to `size` bytes in
/// all: a ship's position, speed and the like, changing from report to report
/// as a game's do.
fn game_state(msg: &mut Vec<u8>, seq: u64, size: usize) {
    let x = (seq * 37 % 1024) as f64 / 2.0;
    let y = (seq * 53 % 768) as f64 / 2.0;
    let heading = (seq % 628) as f64 / 100.0;
    let state = format!(
        "{{\"x\":{x},\"y\":{y},\"vx\":-1.5,\"vy\":0.25,\"heading\":{heading:.4},\"hp\":87,\
         \"state\":\"flying\",\"thrust\":{},\"shield\":false,\"pad\":\"",
        seq % 2 == 0
    );
    msg.extend_from_slice(state.as_bytes());
    msg.resize(size.max(msg.len() + 2) - 2, b'-');
    msg.extend_from_slice(b"\"}");
}

/// The sequence number in a `report <seq> <micros> ...` message.
fn report_seq(rest: &[u8]) -> Option<u64> {
    let mut parts = rest.split(|&b| b == b' ');
    (parts.next()? == b"report").then_some(())?;
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

/// The scheduled send time in a `report <seq> <micros> ...` message.
fn report_time(rest: &[u8]) -> Option<u64> {
    let mut parts = rest.split(|&b| b == b' ');
    (parts.next()? == b"report").then_some(())?;
    parts.next()?;
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}
