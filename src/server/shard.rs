//! One shard: a thread with its own mio poll loop and its own core
//! ([`Relay`]), serving whole rooms. It moves bytes between sockets and the
//! core and does nothing else: every protocol decision, and every byte
//! waiting to be written, is the core's. Shards share nothing on the message
//! path; they talk through mailboxes only to hand over a connection whose
//! room another shard serves, to gather `/metrics`, and to shut down.
//!
//! Each loop turn reads every readable socket (up to a budget, so one client
//! cannot hold the loop) and feeds the core; then it writes, once, to every
//! connection whose output changed or whose socket became writable again.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use rustls::{ServerConfig, ServerConnection};

use super::takeover::Handover;
use super::tls::{self, TlsFiles};
use crate::proto::http::{self, Status};
use crate::proto::state::{Reader, Writer};
use crate::token::Verifier;
use crate::{
    render_metrics, shard_of, Action, ApiReply, ApiRequest, CloseReason, ConnId, HandshakeError, ImportError, Listener,
    Relay, Snapshot, TlsFailure,
};

/// Special tokens sit at the top of the range, where slots never reach.
pub(super) const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const METRICS_LISTENER: Token = Token(usize::MAX - 3);
const TLS_LISTENER: Token = Token(usize::MAX - 4);

/// The listening sockets a shard accepts on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Port {
    /// The public port, plain.
    Public,
    /// The operator's port.
    Admin,
    /// The public port over TLS: the same service, which the core sees in plaintext.
    Tls,
}

/// Bytes read from one socket per loop turn before the others get their turn.
const READ_BUDGET: usize = 256 * 1024;

/// How long to wait before accepting again after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// After the core closes a connection, how long the driver goes on writing
/// what is queued for it and reading what the client still sends. Closing a
/// socket with unread input sends a reset, which can destroy the response the
/// client has not read yet (a 400, a refused upgrade, the tail of a page).
const LINGER: Duration = Duration::from_secs(2);

/// The most a closed client may still send while it lingers. Past it the
/// socket is closed at once: a client that goes on pushing after the relay
/// closed it (a flooder) gets no free ride through the relay.
const LINGER_DISCARD: usize = 64 * 1024;

/// After this long without reading or accepting anything, the shard is idle
/// and gives memory freed by departed clients back to the system.
const IDLE: Duration = Duration::from_secs(1);

/// What one shard asks of another. None of it is per message: a connection
/// changes hands once, `/metrics` is gathered once per scrape.
pub(super) enum Command {
    /// Serve this connection: its room is yours. `bytes` is all it sent.
    Adopt {
        from: ConnId,
        stream: TcpStream,
        listener: Listener,
        peer: Option<SocketAddr>,
        tls: Option<Box<ServerConnection>>,
        bytes: Vec<u8>,
    },
    /// Send shard `from` a snapshot of your counters for its scrape on `conn`.
    Snapshot { from: usize, conn: ConnId },
    /// Your snapshot for the scrape on `conn`.
    SnapshotReply { conn: ConnId, snapshot: Box<Snapshot> },
    /// Carry out this server API request for shard `from`'s call on `conn`.
    Api { from: usize, conn: ConnId, request: Box<ApiRequest> },
    /// What the request for the call on `conn` came to here.
    ApiReply { conn: ConnId, reply: ApiReply },
    /// Stop: close every client and exit once they are gone.
    Shutdown,
    /// A takeover begins: stop reading, accepting and writing, answer what
    /// other shards ask, and say so once no request waits for other shards.
    Freeze { done: Sender<Result<(), String>> },
    /// Every shard is frozen: export the core's state and the driver's, then
    /// wait, touching nothing, for a thaw or the process's end.
    Export { reply: Sender<Result<Exported, String>> },
    /// The takeover failed: serve on.
    Thaw,
    /// New TLS clients get this configuration (the certificate was reloaded).
    TlsConfig(Arc<ServerConfig>),
}

/// One shard's part of a takeover.
pub(super) struct Exported {
    pub(super) shard: usize,
    /// The core's state ([`Relay::export_state`]).
    pub(super) relay: Vec<u8>,
    /// The driver's: which descriptor is which socket, and what the driver
    /// knows of each (closing, lingering, half-closed).
    pub(super) driver: Vec<u8>,
    /// The descriptors, in the order `driver` numbers them; still this shard's.
    pub(super) fds: Vec<RawFd>,
    /// Sockets handed over.
    pub(super) clients: usize,
}

/// Where to send a shard a command, and how to wake it for it.
pub(super) struct Mailbox {
    pub(super) tx: Sender<Command>,
    pub(super) waker: Arc<Waker>,
}

impl Mailbox {
    /// Hands `command` over and wakes the shard. A shard that has already
    /// exited (a late handoff during shutdown) drops it.
    pub(super) fn send(&self, command: Command) {
        if self.tx.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// A socket the core holds a connection for, kept at the connection's slot
/// (`ConnId::index`), which is also its poll token: no lookup table between
/// the two.
struct Client {
    stream: TcpStream,
    conn: ConnId,
    /// The socket it came in on, and its peer: what a handoff carries along.
    listener: Listener,
    peer: Option<SocketAddr>,
    /// The peer shut its sending side, as epoll reported or a read of 0 showed:
    /// from then on a short read no longer means the socket is drained.
    read_closed: bool,
    /// The read of 0 happened: nothing more will arrive.
    eof: bool,
    /// In this turn's list of sockets to write to.
    flush_queued: bool,
    /// Closed by the core: what it still holds is written until this deadline.
    closing: Option<Instant>,
    /// Bytes read and thrown away since the core closed it.
    discarded: usize,
    /// Its TLS session, when it came in on the TLS port: what is read goes
    /// through it to the core, what the core has for it goes through it out.
    tls: Option<Box<ServerConnection>>,
}

/// A socket the core is done with and that has had all its bytes: its write
/// side is shut, and what the client still sends is read and discarded until
/// its EOF or the deadline, so closing it sends a FIN, not a reset.
struct Lingering {
    stream: TcpStream,
    deadline: Instant,
    discarded: usize,
}

/// What a takeover hands one shard's driver: its listeners, and its
/// sockets with what the old driver knew of each.
pub(super) struct Restored {
    clients: Vec<(ConnId, TcpStream, RestoredClient)>,
    lingering: Vec<(TcpStream, Instant, usize)>,
}

struct RestoredClient {
    listener: Listener,
    peer: Option<SocketAddr>,
    read_closed: bool,
    eof: bool,
    closing: Option<Instant>,
    discarded: usize,
}

impl Restored {
    /// Reads what [`Shard::export`] wrote for shard `shard`, taking its
    /// descriptors from `fds`, which it numbers from 0: the public listener,
    /// the operator's, and the rest.
    pub(super) fn parse(
        driver: &[u8],
        shard: usize,
        fds: &mut [Option<OwnedFd>],
        now: Instant,
    ) -> Result<([Option<TcpListener>; 3], Self), String> {
        let bad = |e: ImportError| format!("the driver's state of shard {shard}: {e}");
        let mut r = Reader::new(driver, now, shard as u16);
        let mut take = |i: usize| -> Result<OwnedFd, String> {
            fds.get_mut(i)
                .and_then(Option::take)
                .ok_or_else(|| format!("shard {shard}: descriptor {i} missing or used twice"))
        };
        // The public port, the operator's, and the TLS port, each if it was there.
        let mut listeners = [None, None, None];
        for listener in &mut listeners {
            if let Some(i) = r.opt(Reader::index).map_err(bad)? {
                *listener = Some(tcp_listener(take(i)?));
            }
        }
        let mut clients = Vec::new();
        for _ in 0..r.len().map_err(bad)? {
            let fd = take(r.index().map_err(bad)?)?;
            let conn = r.conn().map_err(bad)?;
            let listener = if r.bool().map_err(bad)? { Listener::Admin } else { Listener::Public };
            let peer = r.opt(Reader::addr).map_err(bad)?;
            let (read_closed, eof) = (r.bool().map_err(bad)?, r.bool().map_err(bad)?);
            let closing = r.opt(Reader::time).map_err(bad)?;
            let discarded = r.index().map_err(bad)?;
            let c = RestoredClient { listener, peer, read_closed, eof, closing, discarded };
            clients.push((conn, tcp_stream(fd), c));
        }
        let mut lingering = Vec::new();
        for _ in 0..r.len().map_err(bad)? {
            let fd = take(r.index().map_err(bad)?)?;
            let (deadline, discarded) = (r.time().map_err(bad)?, r.index().map_err(bad)?);
            lingering.push((tcp_stream(fd), deadline, discarded));
        }
        if !r.is_empty() {
            return Err(format!("the driver's state of shard {shard} has bytes after its end"));
        }
        Ok((listeners, Self { clients, lingering }))
    }
}

fn tcp_listener(fd: OwnedFd) -> TcpListener {
    TcpListener::from_std(std::net::TcpListener::from(fd))
}

fn tcp_stream(fd: OwnedFd) -> TcpStream {
    TcpStream::from_std(std::net::TcpStream::from(fd))
}

/// Where the poll tokens of lingering sockets start: far above any connection slot.
const LINGER_BASE: usize = usize::MAX / 2;

/// One shard's loop and everything it owns.
pub(super) struct Shard {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    /// The operator's port: the first shard's alone.
    metrics_listener: Option<TcpListener>,
    /// The public port over TLS, with the configuration new TLS clients get.
    tls_listener: Option<TcpListener>,
    tls_config: Option<Arc<ServerConfig>>,
    /// Where the certificate and key are read from again on SIGHUP.
    tls_files: Option<TlsFiles>,
    /// Plaintext out of a TLS session, on its way to the core.
    plain: Box<[u8]>,
    /// SIGINT and SIGTERM: the first shard's alone, which tells the others.
    signals: Option<Signals>,
    relay: Relay,
    /// Every shard's mailbox, this one's included.
    mailboxes: Arc<[Mailbox]>,
    inbox: Receiver<Command>,
    /// Scrapes and API calls waiting for other shards' answers.
    gathering: Vec<Gathering>,
    /// Checks the tokens of upgrades, when admission is on.
    verifier: Option<Verifier>,
    /// By connection slot.
    clients: Vec<Option<Client>>,
    lingering: Slab<Lingering>,
    /// Slots to write to this turn.
    to_flush: Vec<usize>,
    /// Slots that used their read budget and still have bytes waiting.
    to_read: Vec<usize>,
    /// The list being worked through while the next is gathered: swapped
    /// with `to_flush` or `to_read`, so neither allocates after warm-up.
    working: Vec<usize>,
    /// Deadlines of closing clients and lingering sockets, in order (all are
    /// `LINGER` from when they were set): a closing client by slot and
    /// connection, a lingering socket by key.
    deadlines: VecDeque<(Instant, Deadline)>,
    buf: Box<[u8]>,
    drain_timeout: Duration,
    drain_deadline: Option<Instant>,
    /// The time read at the top of this loop turn.
    now: Instant,
    /// When to try `accept` again after it failed for want of resources.
    accept_retry: Option<Instant>,
    /// When a socket was last read or accepted.
    last_busy: Instant,
    /// Clients left since memory was last given back.
    left_since_trim: bool,
    /// A takeover is under way: nothing is read, accepted or written.
    frozen: bool,
    /// Who waits to hear the shard is frozen, once no request waits for other shards.
    freeze_ack: Option<Sender<Result<(), String>>>,
    /// Starts takeovers on SIGUSR2: the first shard's alone.
    handover: Option<Handover>,
}

/// What a shard starts with.
pub(super) struct Parts {
    pub(super) index: usize,
    pub(super) poll: Poll,
    pub(super) listener: Option<TcpListener>,
    pub(super) metrics_listener: Option<TcpListener>,
    pub(super) tls_listener: Option<TcpListener>,
    pub(super) tls: Option<(Arc<ServerConfig>, TlsFiles)>,
    pub(super) signals: Option<Signals>,
    pub(super) relay: Relay,
    pub(super) mailboxes: Arc<[Mailbox]>,
    pub(super) inbox: Receiver<Command>,
    pub(super) drain_timeout: Duration,
    pub(super) verifier: Option<Verifier>,
    pub(super) handover: Option<Handover>,
}

/// A request on this shard that waits for other shards' answers.
struct Gathering {
    conn: ConnId,
    /// Answers still to come.
    missing: usize,
    what: Gathered,
}

enum Gathered {
    /// Every shard's snapshot, for `/metrics`.
    Metrics(Vec<Snapshot>),
    /// An API call and the replies so far.
    Api(Box<ApiRequest>, Vec<ApiReply>),
}

/// What a deadline in `Shard::deadlines` is for.
#[derive(Clone, Copy)]
enum Deadline {
    Closing(ConnId),
    Lingering(usize),
}

impl Shard {
    /// Registers the listeners and signals with the shard's poll.
    pub(super) fn new(parts: Parts) -> io::Result<Self> {
        let Parts {
            index,
            poll,
            mut listener,
            mut metrics_listener,
            mut tls_listener,
            tls,
            mut signals,
            relay,
            mailboxes,
            inbox,
            drain_timeout,
            verifier,
            handover,
        } = parts;
        for (l, token) in
            [(&mut listener, LISTENER), (&mut metrics_listener, METRICS_LISTENER), (&mut tls_listener, TLS_LISTENER)]
        {
            if let Some(l) = l {
                poll.registry().register(l, token, Interest::READABLE)?;
            }
        }
        let (tls_config, tls_files) = tls.map_or((None, None), |(config, files)| (Some(config), Some(files)));
        if let Some(s) = &mut signals {
            poll.registry().register(s, SIGNALS, Interest::READABLE)?;
        }
        let now = Instant::now();
        Ok(Self {
            index,
            poll,
            listener,
            metrics_listener,
            tls_listener,
            tls_config,
            tls_files,
            plain: vec![0; 64 * 1024].into_boxed_slice(),
            signals,
            relay,
            mailboxes,
            inbox,
            gathering: Vec::new(),
            verifier,
            clients: Vec::new(),
            lingering: Slab::new(),
            to_flush: Vec::new(),
            to_read: Vec::new(),
            working: Vec::new(),
            deadlines: VecDeque::new(),
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            drain_timeout,
            drain_deadline: None,
            now,
            accept_retry: None,
            last_busy: now,
            left_since_trim: false,
            frozen: false,
            freeze_ack: None,
            handover,
        })
    }

    /// Serves until it is told to stop and its clients have drained.
    pub(super) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            // Measured from the last turn's clock read: a wait ends late by at most that turn's work.
            let timeout = self.poll_timeout(self.now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // The one clock read of the turn: every input below carries this time.
            let now = Instant::now();
            self.now = now;
            for event in events.iter() {
                match event.token() {
                    WAKER => self.read_mailbox(now),
                    // Frozen for a takeover: the sockets' news waits, and is
                    // looked at again in full if the shard thaws.
                    _ if self.frozen => {}
                    LISTENER => self.accept(Port::Public, now),
                    METRICS_LISTENER => self.accept(Port::Admin, now),
                    TLS_LISTENER => self.accept(Port::Tls, now),
                    SIGNALS => self.signals(),
                    Token(t) if t >= LINGER_BASE => self.discard(t - LINGER_BASE),
                    Token(slot) => {
                        if let Some(Some(client)) = self.clients.get_mut(slot) {
                            client.read_closed |= event.is_read_closed();
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(slot, now);
                        }
                        if event.is_writable() {
                            self.mark_flush(slot);
                        }
                    }
                }
            }
            if self.frozen {
                continue;
            }
            if self.accept_retry.is_some_and(|at| now >= at) {
                self.accept(Port::Public, now);
                self.accept(Port::Admin, now);
                self.accept(Port::Tls, now);
            }
            std::mem::swap(&mut self.to_read, &mut self.working);
            for i in 0..self.working.len() {
                self.read(self.working[i], now);
            }
            self.working.clear();
            self.relay.handle_timeout(now);
            self.apply();
            self.flush(now);
            self.expire(now);
            self.trim_when_idle(now);
            // A second clock read, so `/metrics` shows how long turns take.
            self.relay.record_loop_turn(now.elapsed());
            if let Some(deadline) = self.drain_deadline {
                let open = self.clients.iter().flatten().count() + self.lingering.len();
                if open == 0 || now >= deadline {
                    let shard = self.index;
                    info!("shard {shard} shut down with {open} connections left; totals: {}", self.relay.stats());
                    return Ok(());
                }
            }
        }
    }

    /// SIGINT and SIGTERM shut every shard down (a second one exits at once);
    /// SIGUSR2 hands the relay to a new process.
    fn signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else { return };
        let pending: Vec<i32> = signals.pending().collect();
        for signal in pending {
            if signal == SIGHUP {
                self.reload_tls();
                continue;
            }
            if signal == SIGUSR2 {
                match (&self.handover, self.drain_deadline) {
                    (Some(handover), None) => handover.start(),
                    (Some(_), Some(_)) => warn!("SIGUSR2: shutting down already; no takeover"),
                    (None, _) => warn!("SIGUSR2: takeover is off for this server"),
                }
                continue;
            }
            if self.drain_deadline.is_some() {
                info!("second signal: exiting now; totals: {}", self.relay.stats());
                std::process::exit(0);
            }
            // Every shard, this one too, through its mailbox.
            for shard in 0..self.mailboxes.len() {
                self.send(shard, Command::Shutdown);
            }
        }
    }

    /// SIGHUP: the certificate and key again from their files, for every
    /// shard's new TLS clients; live ones keep the session they have. A file
    /// that cannot be used leaves the current certificate in place.
    fn reload_tls(&mut self) {
        let Some(files) = &self.tls_files else {
            info!("SIGHUP: no TLS certificate to reload");
            return;
        };
        match tls::load(files) {
            Ok(config) => {
                info!("SIGHUP: TLS certificate reloaded from {}", files.cert.display());
                for m in self.mailboxes.iter() {
                    m.send(Command::TlsConfig(config.clone()));
                }
            }
            Err(e) => error!("SIGHUP: keeping the current TLS certificate: {e}"),
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.to_read.is_empty() {
            return Some(Duration::ZERO);
        }
        let lingering = self.deadlines.front().map(|&(at, _)| at);
        let trim = self.left_since_trim.then(|| self.last_busy + IDLE);
        let next = [self.relay.poll_timeout(), self.drain_deadline, self.accept_retry, lingering, trim]
            .into_iter()
            .flatten()
            .min();
        // Round up so we never wake a hair early and spin once for nothing.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_micros(100))
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        info!("shard {} shutting down: closing {} connections", self.index, self.relay.connections());
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        // Nothing waits to be accepted on a closed listener.
        self.accept_retry = None;
        self.drain_deadline = Some(now + self.drain_timeout);
        self.relay.shutdown(now);
        self.apply();
    }

    fn accept(&mut self, port: Port, now: Instant) {
        loop {
            let listener = match port {
                Port::Public => &self.listener,
                Port::Admin => &self.metrics_listener,
                Port::Tls => &self.tls_listener,
            };
            let Some(listener) = listener else {
                return;
            };
            let (stream, addr) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors or memory: the waiting connection stays queued, and with
                    // edge-triggered events nothing would wake us for it, so retry on a timer.
                    // Clients already connected are served meanwhile.
                    if self.accept_retry.is_none() {
                        warn!("accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                    }
                    self.accept_retry = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            };
            self.last_busy = now;
            if self.accept_retry.take().is_some() {
                info!("accepting again");
            }
            if let Err(e) = stream.set_nodelay(true) {
                debug!("{addr}: TCP_NODELAY: {e}");
            }
            let tls = match (port, &self.tls_config) {
                (Port::Tls, Some(config)) => match ServerConnection::new(config.clone()) {
                    Ok(mut session) => {
                        session.set_buffer_limit(Some(tls::BUFFER_LIMIT));
                        Some(Box::new(session))
                    }
                    Err(e) => {
                        warn!("{addr}: TLS session: {e}");
                        continue;
                    }
                },
                _ => None,
            };
            let which = if port == Port::Admin { Listener::Admin } else { Listener::Public };
            let conn = self.relay.handle_connect_on(which, Some(addr), now);
            debug!("{conn} connected from {addr}{}", if tls.is_some() { " (TLS)" } else { "" });
            self.adopt(conn, stream, which, Some(addr), tls, now);
            self.apply();
        }
    }

    /// Registers `stream` as the socket of the core's connection `conn`.
    fn adopt(
        &mut self,
        conn: ConnId,
        mut stream: TcpStream,
        listener: Listener,
        peer: Option<SocketAddr>,
        tls: Option<Box<ServerConnection>>,
        now: Instant,
    ) {
        let slot = conn.index();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), interest) {
            warn!("{conn}: register failed: {e}");
            self.relay.handle_close(conn, now);
            return;
        }
        if self.clients.len() <= slot {
            self.clients.resize_with(slot + 1, || None);
        }
        let client = Client {
            stream,
            conn,
            listener,
            peer,
            read_closed: false,
            eof: false,
            flush_queued: false,
            closing: None,
            discarded: 0,
            tls,
        };
        let previous = self.clients[slot].replace(client);
        assert!(previous.is_none(), "the core reuses a slot only after the driver let its socket go");
    }

    /// Carries out what other shards asked.
    fn read_mailbox(&mut self, now: Instant) {
        while let Ok(command) = self.inbox.try_recv() {
            match command {
                Command::Adopt { from, stream, listener, peer, tls, bytes } => {
                    let conn = self.relay.handle_handoff(listener, peer, now);
                    // Ties the connection's two names together in the log.
                    debug!("{conn} is {from}, handed over");
                    let tls_pending = tls.as_ref().is_some_and(|t| t.wants_write());
                    self.adopt(conn, stream, listener, peer, tls, now);
                    if tls_pending {
                        self.mark_flush(conn.index());
                    }
                    // Bytes that came after these are still in the socket, and registering
                    // it reported them: they are read in this turn, after these.
                    self.relay.handle_read(conn, &bytes, now);
                    self.last_busy = now;
                }
                Command::Snapshot { from, conn } => {
                    let snapshot = self.relay.snapshot();
                    self.send(from, Command::SnapshotReply { conn, snapshot: Box::new(snapshot) });
                }
                Command::SnapshotReply { conn, snapshot } => {
                    if let Some(Gathered::Metrics(snapshots)) = self.gathered(conn) {
                        snapshots.push(*snapshot);
                    }
                    self.complete(conn);
                }
                Command::Api { from, conn, request } => {
                    let reply = self.relay.api(&request, now);
                    self.send(from, Command::ApiReply { conn, reply });
                }
                Command::ApiReply { conn, reply } => {
                    if let Some(Gathered::Api(_, replies)) = self.gathered(conn) {
                        replies.push(reply);
                    }
                    self.complete(conn);
                }
                Command::Shutdown => self.begin_shutdown(now),
                Command::Freeze { done } => {
                    if self.drain_deadline.is_some() {
                        let _ = done.send(Err("the relay is shutting down".into()));
                    } else {
                        self.frozen = true;
                        self.freeze_ack = Some(done);
                    }
                }
                Command::Export { reply } => {
                    let _ = reply.send(Ok(self.export(now)));
                    self.wait_for_thaw(now);
                }
                Command::Thaw => self.thaw(now),
                Command::TlsConfig(config) => self.tls_config = Some(config),
            }
            self.apply();
        }
        // Frozen once nothing waits for other shards: what is gathered is not part of the state.
        if self.gathering.is_empty() {
            if let Some(done) = self.freeze_ack.take() {
                let _ = done.send(Ok(()));
            }
        }
    }

    /// After the export: nothing may change what was exported, so the shard
    /// blocks until the takeover fails (or the process ends under it).
    fn wait_for_thaw(&mut self, now: Instant) {
        while let Ok(command) = self.inbox.recv() {
            if matches!(command, Command::Thaw) {
                return self.thaw(now);
            }
            // Every shard is frozen: nothing else is sent now.
            warn!("shard {}: a command during a takeover, dropped", self.index);
        }
    }

    /// The takeover failed: every socket is read and written again, since
    /// the events that came meanwhile were not acted on, and accepting resumes.
    fn thaw(&mut self, now: Instant) {
        if !std::mem::take(&mut self.frozen) {
            return;
        }
        self.freeze_ack = None;
        for slot in 0..self.clients.len() {
            if self.clients[slot].is_some() {
                self.to_read.push(slot);
                self.mark_flush(slot);
            }
        }
        let keys: Vec<usize> = self.lingering.iter().map(|(k, _)| k).collect();
        keys.into_iter().for_each(|k| self.discard(k));
        self.accept(Port::Public, now);
        self.accept(Port::Admin, now);
        self.accept(Port::Tls, now);
        self.signals();
        info!("shard {}: serving again", self.index);
    }

    /// This shard's part of a takeover: the core's state, and the driver's —
    /// the listeners, each client's socket with what the driver knows of it,
    /// the lingering sockets — with the descriptors in the order it numbers them.
    fn export(&mut self, now: Instant) -> Exported {
        // A TLS session cannot leave this process (rustls exports no live
        // session), so TLS clients end here as if their line dropped: a
        // resumable session keeps its seat for its client to take back from
        // the new process.
        for slot in 0..self.clients.len() {
            if self.clients[slot].as_ref().is_some_and(|c| c.tls.is_some()) {
                if let Some(conn) = self.remove(slot) {
                    self.relay.handle_close(conn, now);
                }
            }
        }
        self.apply();
        let mut fds = Vec::new();
        let mut w = Writer::with_capacity(now, 0);
        let mut fd = |raw: RawFd| {
            fds.push(raw);
            fds.len() - 1
        };
        for listener in [&self.listener, &self.metrics_listener, &self.tls_listener] {
            w.opt(listener.as_ref().map(|l| fd(l.as_raw_fd())), Writer::len);
        }
        let clients: Vec<&Client> = self.clients.iter().flatten().collect();
        w.len(clients.len());
        for c in &clients {
            w.len(fd(c.stream.as_raw_fd()));
            w.conn(c.conn);
            w.u8(u8::from(c.listener == Listener::Admin));
            w.opt(c.peer, Writer::addr);
            w.bool(c.read_closed);
            w.bool(c.eof);
            w.opt(c.closing, Writer::time);
            w.len(c.discarded);
        }
        w.len(self.lingering.len());
        for (_, l) in &self.lingering {
            w.len(fd(l.stream.as_raw_fd()));
            w.time(l.deadline);
            w.len(l.discarded);
        }
        let count = clients.len() + self.lingering.len();
        Exported { shard: self.index, relay: self.relay.export_state(now), driver: w.out, fds, clients: count }
    }

    /// Takes up the sockets a takeover handed over, as [`export`](Self::export)
    /// wrote them, after the core imported its state.
    pub(super) fn restore(&mut self, restored: Restored, now: Instant) -> io::Result<()> {
        for (conn, stream, c) in restored.clients {
            self.adopt(conn, stream, c.listener, c.peer, None, now);
            let Some(Some(client)) = self.clients.get_mut(conn.index()) else {
                return Err(io::Error::other(format!("{conn}: could not register its socket")));
            };
            client.read_closed = c.read_closed;
            client.eof = c.eof;
            client.closing = c.closing;
            client.discarded = c.discarded;
            if let Some(at) = c.closing {
                self.deadlines.push_back((at, Deadline::Closing(conn)));
            }
            self.to_read.push(conn.index());
            self.mark_flush(conn.index());
        }
        for (mut stream, deadline, discarded) in restored.lingering {
            let entry = self.lingering.vacant_entry();
            let key = entry.key();
            self.poll.registry().register(&mut stream, Token(LINGER_BASE + key), Interest::READABLE)?;
            entry.insert(Lingering { stream, deadline, discarded });
            self.deadlines.push_back((deadline, Deadline::Lingering(key)));
        }
        // Expiry walks the deadlines in order.
        self.deadlines.make_contiguous().sort_by_key(|&(at, _)| at);
        Ok(())
    }

    /// The answers gathered so far for the request on `conn`, one more of
    /// which has just come.
    fn gathered(&mut self, conn: ConnId) -> Option<&mut Gathered> {
        let g = self.gathering.iter_mut().find(|g| g.conn == conn)?;
        g.missing -= 1;
        Some(&mut g.what)
    }

    /// Answers the request on `conn` once every answer it waits for has come.
    fn complete(&mut self, conn: ConnId) {
        let Some(at) = self.gathering.iter().position(|g| g.conn == conn && g.missing == 0) else { return };
        let Gathering { what, .. } = self.gathering.swap_remove(at);
        match what {
            Gathered::Metrics(mut snapshots) => {
                snapshots.sort_by_key(Snapshot::shard);
                let mut page = Vec::with_capacity(8192);
                render_metrics(&snapshots, &mut page);
                self.relay.handle_metrics(conn, &page);
            }
            Gathered::Api(request, replies) => {
                let limit = match *request {
                    ApiRequest::Rooms { limit, .. } => limit,
                    _ => 0,
                };
                let reply = ApiReply::merge(replies, limit);
                self.relay.handle_api(conn, &request, &reply);
            }
        }
    }

    /// Hands `command` to shard `shard` and wakes it.
    fn send(&self, shard: usize, command: Command) {
        self.mailboxes[shard].send(command);
    }

    /// Reads until the socket is drained or the budget is spent.
    fn read(&mut self, slot: usize, now: Instant) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(Some(client)) = self.clients.get_mut(slot) else { return };
            if client.eof {
                return;
            }
            self.last_busy = now;
            let (conn, closing) = (client.conn, client.closing.is_some());
            let n = match client.stream.read(&mut self.buf) {
                Ok(0) => {
                    client.eof = true;
                    client.read_closed = true;
                    if !closing {
                        // The core keeps what is queued for it: a half-closed client still reads.
                        self.relay.handle_eof(conn, now);
                        self.apply();
                    }
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{conn} read error: {e}");
                    self.remove(slot);
                    self.relay.handle_close(conn, now);
                    return self.apply();
                }
            };
            if closing {
                // A closed client's input is read only to be discarded, and only so much.
                client.discarded += n;
                if client.discarded > LINGER_DISCARD {
                    self.remove(slot);
                    self.relay.handle_close(conn, now);
                    return self.apply();
                }
            } else if client.tls.is_some() {
                if !self.feed_tls(slot, n, now) {
                    return;
                }
            } else {
                self.relay.handle_read(conn, &self.buf[..n], now);
                self.apply();
            }
            budget = budget.saturating_sub(n);
            if budget == 0 {
                self.to_read.push(slot);
                return;
            }
            // A short read from a stream socket means it is drained (epoll(7)),
            // unless the peer also shut its side, which only a 0 read reports.
            let read_closed = matches!(self.clients.get(slot), Some(Some(c)) if c.read_closed);
            if n < self.buf.len() && !read_closed {
                return;
            }
        }
    }

    /// Hands the `n` bytes read into `buf` from the TLS client at `slot` to
    /// its session and the plaintext that comes out to the core. False if
    /// the client is gone (a TLS error, or plain HTTP on the TLS port).
    fn feed_tls(&mut self, slot: usize, n: usize, now: Instant) -> bool {
        let buf = std::mem::take(&mut self.buf);
        let mut input = &buf[..n];
        let mut alive = true;
        while alive && !input.is_empty() {
            let Some(Some(client)) = self.clients.get_mut(slot) else { break };
            let conn = client.conn;
            let tls = client.tls.as_mut().expect("only a TLS client is fed to TLS");
            if tls.is_handshaking() && tls::looks_like_http(input) {
                // Someone typed http:// for https://: a plain answer they can read beats an alert.
                let mut answer = Vec::new();
                http::text_response(
                    Status::BadRequest,
                    "this port speaks TLS: use https:// or wss://",
                    false,
                    &mut answer,
                );
                let _ = client.stream.write(&answer);
                self.relay.record_tls_failure(TlsFailure::PlainHttp);
                alive = false;
                break;
            }
            if let Err(e) = tls.read_tls(&mut input) {
                debug!("{conn} TLS read: {e}");
                alive = false;
                break;
            }
            let state = match tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    debug!("{conn} TLS: {e}");
                    if tls.is_handshaking() {
                        self.relay.record_tls_failure(TlsFailure::Handshake);
                    }
                    // The alert that says why, if the socket takes it.
                    let _ = tls.write_tls(&mut client.stream);
                    alive = false;
                    break;
                }
            };
            let mut plain = state.plaintext_bytes_to_read();
            while plain > 0 {
                let Some(Some(client)) = self.clients.get_mut(slot) else { break };
                let tls = client.tls.as_mut().expect("a TLS client");
                let k = match tls.reader().read(&mut self.plain) {
                    Ok(k) if k > 0 => k,
                    _ => break,
                };
                plain -= k.min(plain);
                self.relay.handle_read(conn, &self.plain[..k], now);
                self.apply();
            }
            if state.peer_has_closed() {
                // close_notify: the client's end of stream, as a FIN is on a plain socket.
                if let Some(Some(client)) = self.clients.get_mut(slot) {
                    client.eof = true;
                    client.read_closed = true;
                }
                self.relay.handle_eof(conn, now);
                self.apply();
                break;
            }
        }
        self.buf = buf;
        if !alive {
            if let Some(conn) = self.remove(slot) {
                self.relay.handle_close(conn, now);
                self.apply();
            }
            return false;
        }
        // The handshake's next flight, or records the core's bytes became.
        if matches!(self.clients.get(slot), Some(Some(c)) if c.tls.as_ref().is_some_and(|t| t.wants_write())) {
            self.mark_flush(slot);
        }
        matches!(self.clients.get(slot), Some(Some(c)) if !c.eof)
    }

    /// Reads and throws away what a lingering socket's client still sends,
    /// dropping the socket at its EOF or once it has sent too much.
    fn discard(&mut self, key: usize) {
        loop {
            let Some(l) = self.lingering.get_mut(key) else { return };
            match l.stream.read(&mut self.buf) {
                Ok(n) if n > 0 && l.discarded + n <= LINGER_DISCARD => l.discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EOF (the client is done too), an error, or a client pushing on regardless.
                _ => return self.drop_lingering(key),
            }
        }
    }

    /// Carries out the core's actions.
    fn apply(&mut self) {
        while let Some(action) = self.relay.poll_action() {
            match action {
                Action::Handoff { conn, shard, bytes } => {
                    let Some(mut client) = self.slot_of(conn).and_then(|slot| self.clients[slot].take()) else {
                        continue;
                    };
                    let _ = self.poll.registry().deregister(&mut client.stream);
                    let Client { stream, listener, peer, tls, .. } = client;
                    self.send(shard, Command::Adopt { from: conn, stream, listener, peer, tls, bytes });
                }
                Action::Metrics { conn } => {
                    let missing = self.mailboxes.len() - 1;
                    let what = Gathered::Metrics(vec![self.relay.snapshot()]);
                    self.gathering.push(Gathering { conn, missing, what });
                    for shard in (0..self.mailboxes.len()).filter(|&s| s != self.index) {
                        self.send(shard, Command::Snapshot { from: self.index, conn });
                    }
                }
                Action::Admit { conn, admission } => {
                    let verifier = self.verifier.as_ref().expect("admission is on only with a verifier");
                    // The wall clock, for the tokens' exp and nbf: read once per upgrade, never per message.
                    let verdict = verifier.verdict(&admission, SystemTime::now());
                    self.relay.handle_admission(conn, verdict, self.now);
                }
                Action::Api { conn, request } => {
                    // A room's shard carries out what concerns the room, in order with its
                    // messages; what concerns every room goes to every shard.
                    let count = self.mailboxes.len();
                    let shards: Vec<usize> = match request.room() {
                        Some(room) => vec![shard_of(room, count)],
                        None => (0..count).collect(),
                    };
                    let what = Gathered::Api(Box::new(request.clone()), Vec::new());
                    self.gathering.push(Gathering { conn, missing: shards.len(), what });
                    for shard in shards {
                        let request = Box::new(request.clone());
                        self.send(shard, Command::Api { from: self.index, conn, request });
                    }
                }
                Action::Close { conn, reason } => {
                    let Some(slot) = self.slot_of(conn) else { continue };
                    let handshaking =
                        self.clients[slot].as_ref().and_then(|c| c.tls.as_ref()).is_some_and(|t| t.is_handshaking());
                    if handshaking && reason == CloseReason::Handshake(HandshakeError::Timeout) {
                        self.relay.record_tls_failure(TlsFailure::Timeout);
                    }
                    if reason == CloseReason::SlowConsumer {
                        // It is not reading: nothing queued for it would get through.
                        self.remove(slot);
                        continue;
                    }
                    if self.relay.pending(conn).is_empty() {
                        // Nothing left to write, and the core has let the slot go already.
                        self.finish_off(slot, self.now);
                        continue;
                    }
                    let deadline = self.now + LINGER;
                    if let Some(Some(client)) = self.clients.get_mut(slot) {
                        client.closing = Some(deadline);
                    }
                    self.deadlines.push_back((deadline, Deadline::Closing(conn)));
                    // To write what is left, then shut the write side.
                    self.mark_flush(slot);
                }
            }
        }
    }

    /// One write per client whose socket became writable again or whose
    /// output changed this turn.
    fn flush(&mut self, now: Instant) {
        let mut failed = Vec::new();
        loop {
            std::mem::swap(&mut self.to_flush, &mut self.working);
            for i in 0..self.working.len() {
                let slot = self.working[i];
                if let Some(Some(client)) = self.clients.get_mut(slot) {
                    client.flush_queued = false;
                    self.write(slot, now, &mut failed);
                }
            }
            self.working.clear();
            while let Some(conn) = self.relay.poll_transmit() {
                self.write(conn.index(), now, &mut failed);
            }
            if failed.is_empty() {
                return;
            }
            // The peers of a dead client hear its quit in this same turn.
            for slot in failed.drain(..) {
                if let Some(conn) = self.remove(slot) {
                    self.relay.handle_close(conn, now);
                }
            }
            self.apply();
        }
    }

    /// Writes what the core holds for the client at `slot`, in one call.
    #[inline]
    fn write(&mut self, slot: usize, now: Instant, failed: &mut Vec<usize>) {
        let Some(Some(client)) = self.clients.get_mut(slot) else { return };
        let written = match &mut client.tls {
            None => self.relay.write_to(client.conn, &mut client.stream).map(|_| ()),
            Some(tls) => write_tls(&mut self.relay, client.conn, tls, &mut client.stream),
        };
        match written {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => {
                debug!("{} write error: {e}", client.conn);
                return failed.push(slot);
            }
        }
        let tls_done = client.tls.as_ref().is_none_or(|t| !t.wants_write());
        if client.closing.is_some() && self.relay.pending(client.conn).is_empty() && tls_done {
            self.finish_off(slot, now);
        }
    }

    /// A closed client has had all its bytes: the FIN follows the last one,
    /// and its socket lingers until the client's own FIN.
    fn finish_off(&mut self, slot: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(slot).and_then(Option::take) else { return };
        let Client { mut stream, eof, discarded, tls, .. } = client;
        if let Some(mut tls) = tls {
            // close_notify, so the client knows the stream ended here and was not cut.
            tls.send_close_notify();
            let _ = tls.write_tls(&mut stream);
        }
        let _ = stream.shutdown(Shutdown::Write);
        self.left_since_trim = true;
        if eof {
            let _ = self.poll.registry().deregister(&mut stream);
            return;
        }
        let entry = self.lingering.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE;
        if self.poll.registry().reregister(&mut stream, Token(LINGER_BASE + key), interest).is_err() {
            let _ = self.poll.registry().deregister(&mut stream);
            return;
        }
        let deadline = now + LINGER;
        entry.insert(Lingering { stream, deadline, discarded });
        self.deadlines.push_back((deadline, Deadline::Lingering(key)));
        // What arrived before it moved is read now; later bytes bring an event.
        self.discard(key);
    }

    /// Drops closed clients and lingering sockets whose time is up.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, what)) = self.deadlines.front() {
            if at > now {
                return;
            }
            self.deadlines.pop_front();
            match what {
                // Only its own deadline counts: the slot or key may have been reused since.
                Deadline::Closing(conn) => {
                    let Some(slot) = self.slot_of(conn) else { continue };
                    if matches!(&self.clients[slot], Some(c) if c.closing == Some(at)) {
                        self.remove(slot);
                        // Whatever it did not read is dropped with it.
                        self.relay.handle_close(conn, now);
                        self.apply();
                    }
                }
                Deadline::Lingering(key) => {
                    if self.lingering.get(key).is_some_and(|l| l.deadline == at) {
                        self.drop_lingering(key);
                    }
                }
            }
        }
    }

    /// Once the relay has been idle for a while after clients left, gives
    /// the memory they used back to the system: the allocator would
    /// otherwise keep it for reuse, and RSS would stay at its high-water mark.
    fn trim_when_idle(&mut self, now: Instant) {
        if !self.left_since_trim || now < self.last_busy + IDLE {
            return;
        }
        self.left_since_trim = false;
        self.relay.shrink_to_fit();
        let used = self.clients.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        self.clients.truncate(used);
        self.clients.shrink_to_fit();
        self.lingering.shrink_to_fit();
        self.deadlines.shrink_to_fit();
        release_free_memory();
    }

    /// Closes a client's socket; returns its connection.
    fn remove(&mut self, slot: usize) -> Option<ConnId> {
        let mut client = self.clients.get_mut(slot)?.take()?;
        let _ = self.poll.registry().deregister(&mut client.stream);
        self.left_since_trim = true;
        Some(client.conn)
    }

    fn drop_lingering(&mut self, key: usize) {
        if let Some(mut l) = self.lingering.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut l.stream);
        }
    }

    fn mark_flush(&mut self, slot: usize) {
        if let Some(Some(client)) = self.clients.get_mut(slot) {
            if !std::mem::replace(&mut client.flush_queued, true) {
                self.to_flush.push(slot);
            }
        }
    }

    /// The slot of `conn`'s socket, while the socket is `conn`'s.
    fn slot_of(&self, conn: ConnId) -> Option<usize> {
        matches!(self.clients.get(conn.index()), Some(Some(c)) if c.conn == conn).then_some(conn.index())
    }
}

/// Moves what the core holds for `conn` into its TLS session, as much as the
/// session's bounded buffer takes (the rest stays in the core, under its
/// output bound), and the session's records to the socket, until either
/// runs dry or the socket is full.
fn write_tls(relay: &mut Relay, conn: ConnId, tls: &mut ServerConnection, stream: &mut TcpStream) -> io::Result<()> {
    loop {
        // Nothing taken when the session's buffer is still full from a
        // write that blocked: it drains below, and the loop goes on. Leaving
        // then would strand what the core holds, for the socket took all it
        // was given and has no writable edge to come.
        let took = relay.write_to(conn, &mut tls.writer())?;
        let mut sent = 0;
        while tls.wants_write() {
            sent += tls.write_tls(stream)?;
        }
        if relay.pending(conn).is_empty() || (took == 0 && sent == 0) {
            return Ok(());
        }
    }
}

/// Returns the allocator's free pages to the system (glibc keeps them).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
