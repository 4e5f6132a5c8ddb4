//! One simulated driver for the core, shared by the tests, the fuzz targets
//! and the benchmarks, so every rule of the driver's contract is exercised
//! against the real code once: connections without sockets, a clock that
//! moves only when told, each client's strict view of what it was sent, and
//! clients that stop reading so the core's output bound is what stops them.

use std::time::{Duration, Instant};

use crate::client::{masked_frame, upgrade_request, OpCode, Received, ServerParser};
use crate::proto::message::MessageDecoder;
use crate::{Action, Admission, CloseReason, Config, ConnId, Listener, MessageLimits, Relay, Verdict};

/// One connection as its client sees it.
#[derive(Debug)]
pub struct Peer {
    /// The connection.
    pub conn: ConnId,
    parser: ServerParser,
    /// What it received, parsed, oldest first; [`Sim::take`] empties it.
    pub inbox: Vec<Received>,
    /// Every byte it received.
    pub raw: Vec<u8>,
    /// Why the core closed it, once it did.
    pub closed: Option<CloseReason>,
    /// Bytes the core still had for it when it closed it: all it may write after.
    left_at_close: usize,
    /// Not reading: what the core queues for it stays pending.
    pub stalled: bool,
    /// Parse and keep what arrives (benchmarks turn this off).
    record: bool,
}

/// A relay, a clock, and its clients.
#[derive(Debug)]
pub struct Sim {
    /// The core under test.
    pub relay: Relay,
    /// When the simulation started.
    pub start: Instant,
    /// The simulated time.
    pub now: Instant,
    peers: Vec<Peer>,
    /// Connection slot → the newest peer on it.
    by_index: Vec<usize>,
    /// Whether new clients parse and keep what they receive.
    record: bool,
    /// Clients that do not read.
    stalled: usize,
    /// Upgrades waiting for a verdict ([`Action::Admit`]), oldest first: the
    /// test decides, with `relay.handle_admission` and then [`Sim::drain`].
    pub admissions: Vec<(ConnId, Admission)>,
}

impl Sim {
    /// A simulation of a relay with `config`, which must be valid.
    pub fn new(config: Config) -> Self {
        let now = Instant::now();
        let relay = Relay::new(config).expect("the harness runs valid configurations");
        Self {
            relay,
            start: now,
            now,
            peers: Vec::new(),
            by_index: Vec::new(),
            record: true,
            stalled: 0,
            admissions: Vec::new(),
        }
    }

    /// A relay with the default configuration.
    pub fn relay() -> Self {
        Self::new(Config::default())
    }

    /// Every client so far, in the order they connected.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// A new connection on `listener` that sends nothing yet.
    pub fn connect_on(&mut self, listener: Listener) -> ConnId {
        let conn = self.relay.handle_connect_on(listener, None, self.now);
        if self.by_index.len() <= conn.index() {
            self.by_index.resize(conn.index() + 1, usize::MAX);
        }
        self.by_index[conn.index()] = self.peers.len();
        self.peers.push(Peer {
            conn,
            parser: ServerParser::default(),
            inbox: Vec::new(),
            raw: Vec::new(),
            closed: None,
            left_at_close: 0,
            stalled: false,
            record: self.record,
        });
        self.drain();
        conn
    }

    /// A new connection on the public port that sends `bytes`.
    pub fn connect_raw(&mut self, bytes: &[u8]) -> ConnId {
        let conn = self.connect_on(Listener::Public);
        self.feed(conn, bytes);
        conn
    }

    /// Connects to `room`, checks the 101 and takes it out of the inbox.
    pub fn join(&mut self, room: &str) -> ConnId {
        let conn = self.connect_raw(&upgrade_request(room, "test"));
        let peer = self.peer_mut(conn);
        assert_eq!(peer.inbox.first(), Some(&Received::Http(101)), "upgrade refused");
        peer.inbox.remove(0);
        conn
    }

    /// `conn` sends `bytes`.
    pub fn feed(&mut self, conn: ConnId, bytes: &[u8]) {
        self.relay.handle_read(conn, bytes, self.now);
        self.drain();
    }

    /// `conn` sends a text message.
    pub fn send(&mut self, conn: ConnId, text: &str) {
        self.feed(conn, &frame(OpCode::Text, text.as_bytes()));
    }

    /// The verdict on `conn`'s upgrade, which waits for one.
    pub fn admit(&mut self, conn: ConnId, verdict: Verdict) {
        self.admissions.retain(|(c, _)| *c != conn);
        self.relay.handle_admission(conn, verdict, self.now);
        self.drain();
    }

    /// `conn`'s client ends its stream (FIN), and may still read.
    pub fn eof(&mut self, conn: ConnId) {
        self.relay.handle_eof(conn, self.now);
        self.drain();
    }

    /// Moves every connection to a new relay with the same configuration, as
    /// a takeover does: the old one exports its state, the new one imports
    /// it at the same moment, and the harness drives the new one from then on.
    /// Upgrades waiting for a verdict are asked about again.
    pub fn handover(&mut self) {
        let state = self.relay.export_state(self.now);
        let mut next = Relay::new(self.relay.config().clone()).expect("the harness runs valid configurations");
        next.import_state(&state, self.now).unwrap_or_else(|e| panic!("a relay's own state is refused: {e}"));
        assert!(next.export_state(self.now) == state, "a state imported and exported again changed");
        self.relay = next;
        self.admissions.clear();
        self.drain();
    }

    /// `conn`'s transport fails.
    pub fn drop_transport(&mut self, conn: ConnId) {
        self.relay.handle_close(conn, self.now);
        self.drain();
    }

    /// Time passes.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.relay.handle_timeout(self.now);
        self.drain();
    }

    /// `conn`'s client stops reading, or reads again (and takes what waited).
    pub fn stall(&mut self, conn: ConnId, stalled: bool) {
        let was = std::mem::replace(&mut self.peer_mut(conn).stalled, stalled);
        self.stalled = self.stalled + usize::from(stalled) - usize::from(was);
        if !stalled {
            self.write(conn);
        }
    }

    /// `conn`'s stalled client reads at most `n` of the bytes waiting for it.
    pub fn read_some(&mut self, conn: ConnId, n: usize) {
        let at = self.by_index[conn.index()];
        let pending = self.relay.pending(conn);
        let n = n.min(pending.len());
        let peer = &mut self.peers[at];
        if peer.record {
            peer.raw.extend_from_slice(&pending[..n]);
            peer.parser
                .feed(&pending[..n], &mut peer.inbox)
                .unwrap_or_else(|e| panic!("{conn} got invalid bytes: {e:?}"));
        }
        self.relay.handle_written(conn, n);
    }

    /// Parse and keep what every client receives from now on, or only let it
    /// be written: benchmarks measure the core, not the harness.
    pub fn record(&mut self, record: bool) {
        self.record = record;
        self.peers.iter_mut().for_each(|p| p.record = record);
    }

    /// Drains the core as a driver must after input: every action, then every
    /// connection with output, written in full unless its client stalls.
    pub fn drain(&mut self) {
        while let Some(action) = self.relay.poll_action() {
            match action {
                Action::Close { conn, reason } => {
                    let left = self.relay.pending(conn).len();
                    let peer = self.peer_mut(conn);
                    assert!(peer.closed.is_none(), "{conn} closed twice");
                    peer.closed = Some(reason);
                    peer.left_at_close = left;
                }
                Action::Metrics { conn } => {
                    // One core is the whole process here.
                    let mut page = Vec::new();
                    crate::render_metrics(&[self.relay.snapshot()], &mut page);
                    self.relay.handle_metrics(conn, &page);
                }
                Action::Admit { conn, admission } => self.admissions.push((conn, admission)),
                Action::Handoff { conn, .. } | Action::Api { conn, .. } => {
                    panic!("{conn} is handed to another shard by a relay that is its only shard")
                }
            }
        }
        if !self.record && self.stalled == 0 {
            // Nobody looks and everybody reads: write, as a driver does, and keep nothing.
            while let Some(conn) = self.relay.poll_transmit() {
                let _ = self.relay.write_to(conn, &mut std::io::sink());
            }
            return;
        }
        while let Some(conn) = self.relay.poll_transmit() {
            self.write(conn);
        }
    }

    /// Writes what is pending for `conn`, unless its client stalls.
    fn write(&mut self, conn: ConnId) {
        let at = self.by_index[conn.index()];
        let peer = &mut self.peers[at];
        if peer.stalled {
            return;
        }
        let bytes = self.relay.pending(conn);
        if peer.closed.is_some() {
            assert!(bytes.len() <= peer.left_at_close, "{conn} was sent bytes after its Close");
            peer.left_at_close -= bytes.len();
        }
        if peer.record {
            peer.raw.extend_from_slice(bytes);
            peer.parser.feed(bytes, &mut peer.inbox).unwrap_or_else(|e| panic!("{conn} got invalid bytes: {e:?}"));
        }
        let n = bytes.len();
        self.relay.handle_written(conn, n);
    }

    /// The client on `conn`.
    pub fn peer(&self, conn: ConnId) -> &Peer {
        match self.by_index.get(conn.index()).and_then(|&i| self.peers.get(i)) {
            Some(p) if p.conn == conn => p,
            // The slot was reused since: look for the older connection.
            _ => self.peers.iter().find(|p| p.conn == conn).expect("a connection of this simulation"),
        }
    }

    fn peer_mut(&mut self, conn: ConnId) -> &mut Peer {
        let at = match self.by_index.get(conn.index()) {
            Some(&i) if self.peers.get(i).is_some_and(|p| p.conn == conn) => i,
            _ => self.peers.iter().position(|p| p.conn == conn).expect("a connection of this simulation"),
        };
        &mut self.peers[at]
    }

    /// Takes what `conn` received since the last call.
    pub fn take(&mut self, conn: ConnId) -> Vec<Received> {
        std::mem::take(&mut self.peer_mut(conn).inbox)
    }

    /// Takes what `conn` received since the last call, all of it text.
    pub fn texts(&mut self, conn: ConnId) -> Vec<String> {
        self.take(conn)
            .into_iter()
            .map(|r| match r {
                Received::Text(t) => t,
                other => panic!("expected text, got {other:?}"),
            })
            .collect()
    }

    /// Every byte `conn` received.
    pub fn raw(&self, conn: ConnId) -> &[u8] {
        &self.peer(conn).raw
    }

    /// Why the core closed `conn`, if it did.
    pub fn closed(&self, conn: ConnId) -> Option<CloseReason> {
        self.peer(conn).closed
    }

    /// How many messages reached `conn` compressed (permessage-deflate).
    pub fn compressed(&self, conn: ConnId) -> u64 {
        self.peer(conn).parser.compressed()
    }
}

/// A masked client frame, with a fixed mask.
pub fn frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    masked_frame(&mut out, true, opcode, payload, [0x37, 0xFA, 0x21, 0x3D]);
    out
}

/// A masked client close frame with `code`.
pub fn close_frame(code: u16) -> Vec<u8> {
    frame(OpCode::Close, &code.to_be_bytes())
}

/// The code of the first close frame in `received`.
pub fn close_code(received: &[Received]) -> Option<u16> {
    received.iter().find_map(|r| match r {
        Received::Close(Some((code, _))) => Some(*code),
        _ => None,
    })
}

/// The core's frame and message decoder on its own, for benchmarks.
#[derive(Debug)]
pub struct Decoder(MessageDecoder);

impl Decoder {
    /// A decoder with these limits.
    pub fn new(limits: MessageLimits) -> Self {
        Self(MessageDecoder::new(limits))
    }

    /// Decodes from the front of `bytes`: how many were used, and whether they completed a message.
    pub fn decode(&mut self, bytes: &[u8]) -> (usize, bool) {
        match self.0.decode(bytes) {
            Ok((used, message)) => (used, message.is_some()),
            Err(e) => panic!("the benchmark's frames are valid: {e}"),
        }
    }
}
