//! The driver: one thread, one mio poll loop, connections in a slab. It moves
//! bytes between sockets and the [`Relay`] core and does nothing else: every
//! protocol decision is the core's.
//!
//! Each loop turn reads every readable socket (up to a budget, so one client
//! cannot hold the loop), feeds the core, applies its actions to per-connection
//! output buffers, and then writes each buffer that changed at most once.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::proto::{Action, CloseReason, Config, ConnId, Listener, Relay};

/// Special tokens sit at the top of the range, where slab keys never reach.
const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const METRICS_LISTENER: Token = Token(usize::MAX - 3);

/// Bytes read from one socket per loop turn before the others get their turn.
const READ_BUDGET: usize = 256 * 1024;

/// How long to wait before accepting again after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// After the core closes a connection, how long the driver goes on writing
/// what is queued for it and reading what the client still sends. Closing a
/// socket with unread input sends a reset, which can destroy the response the
/// client has not read yet (a 400, a refused upgrade, the tail of a page).
const LINGER: Duration = Duration::from_secs(2);

/// An output buffer emptied after holding more than this is given back, so a
/// burst does not pin memory for the connection's lifetime.
const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where to serve `/metrics` and `/healthz` alone, apart from the public port.
    pub metrics_listen: Option<SocketAddr>,
    /// The core's configuration.
    pub relay: Config,
    /// After SIGTERM or SIGINT, how long to wait for clients to finish closing.
    pub drain_timeout: Duration,
    /// A client whose unwritten output passes this many bytes is disconnected.
    pub max_pending: usize,
}

struct Client {
    stream: TcpStream,
    conn: ConnId,
    out: Vec<u8>,
    written: usize,
    queued: bool,
    /// Passed `max_pending`: nothing more is queued, the core is told once.
    overflowed: bool,
    /// Closed by the core: the socket is finished off until this deadline.
    closing: Option<Instant>,
    /// Its write side is shut: everything queued was written.
    shut: bool,
}

/// The listening relay.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    signals: Signals,
    relay: Relay,
    clients: Slab<Client>,
    /// Core connection slot → client key.
    by_conn: Vec<usize>,
    /// Clients whose output changed this turn.
    to_flush: Vec<usize>,
    /// Clients that used their read budget and still have bytes waiting.
    to_read: Vec<usize>,
    /// Clients whose output passed `max_pending` while actions were applied.
    overflowed: Vec<ConnId>,
    /// Closed clients being finished off, by deadline (all share `LINGER`, so
    /// the order of closing is the order of deadlines).
    lingering: VecDeque<(Instant, usize)>,
    max_pending: usize,
    buf: Box<[u8]>,
    drain_timeout: Duration,
    drain_deadline: Option<Instant>,
    /// The time read at the top of this loop turn.
    now: Instant,
    /// When to try `accept` again after it failed for want of resources.
    accept_retry: Option<Instant>,
}

impl Server {
    /// Binds the listener and installs the SIGINT/SIGTERM handlers.
    pub fn bind(config: ServerConfig) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let mut l = TcpListener::bind(addr)?;
                poll.registry().register(&mut l, METRICS_LISTENER, Interest::READABLE)?;
                Some(l)
            }
            None => None,
        };
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Self {
            poll,
            listener: Some(listener),
            metrics_listener,
            signals,
            relay: Relay::new(config.relay),
            clients: Slab::new(),
            by_conn: Vec::new(),
            to_flush: Vec::new(),
            to_read: Vec::new(),
            overflowed: Vec::new(),
            lingering: VecDeque::new(),
            max_pending: config.max_pending,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            drain_timeout: config.drain_timeout,
            drain_deadline: None,
            now: Instant::now(),
            accept_retry: None,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "listener closed")),
        }
    }

    /// The address of the separate metrics listener, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until a signal asks it to stop and the clients have drained.
    pub fn run(mut self) -> io::Result<()> {
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
                    LISTENER => self.accept(Listener::Public, now),
                    METRICS_LISTENER => self.accept(Listener::Metrics, now),
                    SIGNALS => {
                        if self.signals.pending().next().is_some() {
                            if self.drain_deadline.is_some() {
                                info!("second signal: exiting now; totals: {:?}", self.relay.stats());
                                return Ok(());
                            }
                            self.begin_shutdown(now);
                        }
                    }
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key, event.is_read_closed(), now);
                        }
                        if event.is_writable() {
                            self.mark_flush(key);
                        }
                    }
                }
            }
            if self.accept_retry.is_some_and(|at| now >= at) {
                self.accept(Listener::Public, now);
                self.accept(Listener::Metrics, now);
            }
            for key in std::mem::take(&mut self.to_read) {
                self.read(key, false, now);
            }
            self.relay.handle_timeout(now);
            self.apply();
            self.flush(now);
            self.expire_lingering(now);
            // A second clock read, so `/metrics` shows how long turns take.
            self.relay.driver_metrics_mut().turns.record(now.elapsed());
            if let Some(deadline) = self.drain_deadline {
                if self.clients.is_empty() || now >= deadline {
                    info!("shut down with {} connections left; totals: {:?}", self.clients.len(), self.relay.stats());
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.to_read.is_empty() {
            return Some(Duration::ZERO);
        }
        let lingering = self.lingering.front().map(|&(at, _)| at);
        let next =
            [self.relay.poll_timeout(), self.drain_deadline, self.accept_retry, lingering].into_iter().flatten().min();
        // Round up so we never wake a hair early and spin once for nothing.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_micros(100))
    }

    fn begin_shutdown(&mut self, now: Instant) {
        info!("shutting down: closing {} connections", self.clients.len());
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        // Nothing waits to be accepted on a closed listener.
        self.accept_retry = None;
        self.drain_deadline = Some(now + self.drain_timeout);
        self.relay.shutdown(now);
        self.apply();
    }

    fn accept(&mut self, which: Listener, now: Instant) {
        loop {
            let listener = match which {
                Listener::Public => &self.listener,
                Listener::Metrics => &self.metrics_listener,
            };
            let Some(listener) = listener else {
                return;
            };
            let (mut stream, addr) = match listener.accept() {
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
            if self.accept_retry.take().is_some() {
                info!("accepting again");
            }
            if let Err(e) = stream.set_nodelay(true) {
                debug!("{addr}: TCP_NODELAY: {e}");
            }
            let entry = self.clients.vacant_entry();
            let key = entry.key();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self.poll.registry().register(&mut stream, Token(key), interest) {
                warn!("{addr}: register failed: {e}");
                continue;
            }
            let conn = self.relay.handle_connect_on(which, now);
            entry.insert(Client {
                stream,
                conn,
                out: Vec::new(),
                written: 0,
                queued: false,
                overflowed: false,
                closing: None,
                shut: false,
            });
            if self.by_conn.len() <= conn.index() {
                self.by_conn.resize(conn.index() + 1, usize::MAX);
            }
            self.by_conn[conn.index()] = key;
            debug!("{conn} connected from {addr}");
            self.apply();
        }
    }

    /// Reads until the socket is drained or the budget is spent.
    fn read(&mut self, key: usize, read_closed: bool, now: Instant) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(client) = self.clients.get_mut(key) else { return };
            let (conn, closing) = (client.conn, client.closing.is_some());
            match client.stream.read(&mut self.buf) {
                Ok(0) if closing => return self.remove(key),
                Ok(0) => {
                    self.relay.handle_close(conn, now);
                    return self.apply();
                }
                Ok(n) => {
                    // A closed client's input is read only to be discarded.
                    if !closing {
                        self.relay.handle_read(conn, &self.buf[..n], now);
                        self.apply();
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.to_read.push(key);
                        return;
                    }
                    // A short read from a stream socket means it is drained (epoll(7)),
                    // unless the peer also shut its side, which only a 0 read reports.
                    if n < self.buf.len() && !read_closed {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if closing => return self.remove(key),
                Err(e) => {
                    debug!("{conn} read error: {e}");
                    self.relay.handle_close(conn, now);
                    return self.apply();
                }
            }
        }
    }

    /// Drains the core's actions into output buffers. A client whose buffer
    /// passes the bound is reported to the core, which ends it; its peers'
    /// messages are never held back for it.
    fn apply(&mut self) {
        loop {
            self.apply_actions();
            if self.overflowed.is_empty() {
                return;
            }
            let now = self.now;
            for conn in std::mem::take(&mut self.overflowed) {
                self.relay.handle_slow_consumer(conn, now);
            }
        }
    }

    fn apply_actions(&mut self) {
        let mut out = Outputs {
            clients: &mut self.clients,
            by_conn: &self.by_conn,
            to_flush: &mut self.to_flush,
            overflowed: &mut self.overflowed,
            max_pending: self.max_pending,
            dropped: 0,
        };
        while let Some(action) = self.relay.poll_action() {
            match action {
                Action::Send { to, bytes } => out.queue(to, bytes),
                Action::Broadcast { to, bytes } => {
                    for &conn in to {
                        out.queue(conn, bytes);
                    }
                }
                Action::Close { conn, reason } => {
                    let Some(key) = client_key(out.clients, out.by_conn, conn) else { continue };
                    if reason == CloseReason::SlowConsumer {
                        // It is not reading: nothing queued for it would get through.
                        close_socket(&self.poll, out.clients.remove(key));
                        continue;
                    }
                    let deadline = self.now + LINGER;
                    let client = &mut out.clients[key];
                    client.closing = Some(deadline);
                    self.lingering.push_back((deadline, key));
                    if client.mark_queued() {
                        out.to_flush.push(key);
                    }
                }
            }
        }
        let dropped = out.dropped;
        self.relay.driver_metrics_mut().dropped_slow_consumer += dropped;
    }

    /// One write per client whose output changed this turn.
    fn flush(&mut self, now: Instant) {
        loop {
            let mut failed = Vec::new();
            let mut gone = Vec::new();
            for key in self.to_flush.drain(..) {
                let Some(client) = self.clients.get_mut(key) else { continue };
                client.queued = false;
                match client.write_out() {
                    Err(_) if client.closing.is_some() => gone.push(key),
                    Err(e) => {
                        debug!("{} write error: {e}", client.conn);
                        failed.push(client.conn);
                    }
                    // All written: the FIN follows the last byte, and reads go on until the client's.
                    Ok(()) if client.closing.is_some() && client.out.is_empty() && !client.shut => {
                        client.shut = true;
                        let _ = client.stream.shutdown(Shutdown::Write);
                    }
                    Ok(()) => {}
                }
            }
            for key in gone {
                self.remove(key);
            }
            if failed.is_empty() {
                return;
            }
            // The peers of a dead client hear its quit in this same turn.
            for conn in failed {
                self.relay.handle_close(conn, now);
            }
            self.apply();
        }
    }

    /// Drops closed clients that did not finish in time.
    fn expire_lingering(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.lingering.front() {
            if at > now {
                return;
            }
            self.lingering.pop_front();
            // The key may have been freed and reused since; only its own deadline counts.
            if self.clients.get(key).is_some_and(|c| c.closing == Some(at)) {
                self.remove(key);
            }
        }
    }

    /// Closes a client's socket.
    fn remove(&mut self, key: usize) {
        if let Some(client) = self.clients.try_remove(key) {
            close_socket(&self.poll, client);
        }
    }

    fn mark_flush(&mut self, key: usize) {
        if self.clients.get_mut(key).is_some_and(Client::mark_queued) {
            self.to_flush.push(key);
        }
    }
}

impl Client {
    /// Marks it for this turn's flush; true the first time, when the caller
    /// must add it to the flush list.
    fn mark_queued(&mut self) -> bool {
        !std::mem::replace(&mut self.queued, true)
    }

    /// Writes what is pending in one call; a short write waits for the next
    /// writable event.
    fn write_out(&mut self) -> io::Result<()> {
        if self.written == self.out.len() {
            return Ok(());
        }
        match self.stream.write(&self.out[self.written..]) {
            Ok(n) => {
                self.written += n;
                if self.written == self.out.len() {
                    self.written = 0;
                    self.out.clear();
                    if self.out.capacity() > KEEP_OUT_CAPACITY {
                        self.out = Vec::new();
                    }
                }
                Ok(())
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn close_socket(poll: &Poll, mut client: Client) {
    let _ = poll.registry().deregister(&mut client.stream);
}

fn client_key(clients: &Slab<Client>, by_conn: &[usize], conn: ConnId) -> Option<usize> {
    let key = *by_conn.get(conn.index())?;
    clients.get(key).filter(|c| c.conn == conn).map(|_| key)
}

/// The driver's side of the output buffers, borrowed apart from the core so
/// actions can be applied while the core lends them.
struct Outputs<'a> {
    clients: &'a mut Slab<Client>,
    by_conn: &'a [usize],
    to_flush: &'a mut Vec<usize>,
    overflowed: &'a mut Vec<ConnId>,
    max_pending: usize,
    /// Messages not queued because their recipient passed `max_pending`.
    dropped: u64,
}

impl Outputs<'_> {
    fn queue(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(key) = client_key(self.clients, self.by_conn, conn) else { return };
        let client = &mut self.clients[key];
        if client.overflowed || client.out.len() - client.written + bytes.len() > self.max_pending {
            if !client.overflowed {
                client.overflowed = true;
                self.overflowed.push(conn);
            }
            self.dropped += 1;
            return;
        }
        client.out.extend_from_slice(bytes);
        if client.mark_queued() {
            self.to_flush.push(key);
        }
    }
}
