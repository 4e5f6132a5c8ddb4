//! The driver: one mio poll loop per shard, each on its own thread with its
//! own core ([`Relay`](crate::Relay)), connections in a table by slot. A
//! connection is accepted by whichever shard the kernel hands it to and, once
//! its request names a room, moves with the bytes it sent to the shard that
//! serves that room ([`shard_of`](crate::shard_of)): a room is always whole on
//! one core, and shards share nothing per message. `--threads 1` is one shard,
//! one socket, one thread.

mod listen;
mod shard;

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Poll, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::token::Verifier;
use crate::{Budget, Config, ConfigError, Relay, Shard as Place, MAX_DURATION};
use shard::{Mailbox, Parts, Shard, WAKER};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where to serve `/metrics` and `/healthz` alone, apart from the public port.
    pub metrics_listen: Option<SocketAddr>,
    /// The core's configuration. Its `max_handshakes` is split evenly over
    /// the shards; `max_clients`, `max_rooms` and `max_clients_per_ip` hold
    /// for the process as a whole.
    pub relay: Config,
    /// After SIGTERM or SIGINT, how long to wait for clients to finish closing.
    pub drain_timeout: Duration,
    /// Shards: threads, each with its own poll loop and core.
    pub threads: usize,
    /// Checks a token on every upgrade; `None` lets everyone in.
    pub tokens: Option<Verifier>,
}

/// Why the server cannot start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is one the relay refuses.
    Config(ConfigError),
    /// A socket or the poller could not be set up.
    Io(io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid configuration: {e}"),
            Self::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// The listening relay: its shards, ready to run.
pub struct Server {
    shards: Vec<Shard>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
}

impl Server {
    /// Checks the configuration, binds the listeners, makes the shards and
    /// installs the SIGINT/SIGTERM handlers.
    pub fn bind(config: ServerConfig) -> Result<Self, StartError> {
        if config.drain_timeout.is_zero() || config.drain_timeout > MAX_DURATION {
            let e = ConfigError::DurationOutOfRange { name: "drain_timeout", value: config.drain_timeout };
            return Err(StartError::Config(e));
        }
        let count = config.threads;
        if count == 0 {
            return Err(StartError::Config(ConfigError::Zero("threads")));
        }
        let mut relay = config.relay;
        // Connections in their handshake arrive spread evenly over the shards'
        // sockets, so each takes its share of the cap.
        relay.capacity.max_handshakes = relay.capacity.max_handshakes.div_ceil(count);
        relay.admission = config.tokens.is_some();
        let budget = Budget::new();
        let relays = (0..count)
            .map(|index| Relay::sharded(relay.clone(), Place { index, count }, budget.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Config)?;
        let listeners = listen::bind(config.listen, count)?;
        let addr = listeners[0].local_addr()?;
        let mut metrics_listener = config.metrics_listen.map(TcpListener::bind).transpose()?;
        let metrics_addr = metrics_listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let mut signals = Some(Signals::new([SIGINT, SIGTERM])?);
        let polls = (0..count).map(|_| Poll::new()).collect::<io::Result<Vec<_>>>()?;
        let mut inboxes = Vec::with_capacity(count);
        let mut mailboxes = Vec::with_capacity(count);
        for poll in &polls {
            let (tx, rx) = mpsc::channel();
            inboxes.push(rx);
            mailboxes.push(Mailbox { tx, waker: Arc::new(Waker::new(poll.registry(), WAKER)?) });
        }
        let mailboxes: Arc<[Mailbox]> = mailboxes.into();
        let shards = (polls.into_iter().zip(listeners).zip(relays).zip(inboxes).enumerate())
            .map(|(index, (((poll, listener), relay), inbox))| {
                Shard::new(Parts {
                    index,
                    poll,
                    listener,
                    // The operator's port and the signals belong to the first shard.
                    metrics_listener: metrics_listener.take(),
                    signals: signals.take(),
                    relay,
                    mailboxes: mailboxes.clone(),
                    inbox,
                    drain_timeout: config.drain_timeout,
                    verifier: config.tokens.clone(),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { shards, addr, metrics_addr })
    }

    /// The address the listeners are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the separate metrics listener, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Serves until a signal asks it to stop and every shard's clients have
    /// drained. The first shard runs on the calling thread.
    pub fn run(self) -> io::Result<()> {
        let mut shards = self.shards.into_iter();
        let first = shards.next().expect("a server has at least one shard");
        let others = shards
            .enumerate()
            .map(|(i, shard)| std::thread::Builder::new().name(format!("shard-{}", i + 1)).spawn(move || shard.run()))
            .collect::<io::Result<Vec<_>>>()?;
        let mut result = first.run();
        for handle in others {
            let ended = handle.join().unwrap_or_else(|_| Err(io::Error::other("a shard panicked")));
            result = result.and(ended);
        }
        result
    }
}
