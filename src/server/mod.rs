//! The driver: one mio poll loop per shard, each on its own thread with its
//! own core ([`Relay`](crate::Relay)), connections in a table by slot. A
//! connection is accepted by whichever shard the kernel hands it to and, once
//! its request names a room, moves with the bytes it sent to the shard that
//! serves that room ([`shard_of`](crate::shard_of)): a room is always whole on
//! one core, and shards share nothing per message. `--threads 1` is one shard,
//! one socket, one thread.

mod listen;
mod shard;
mod takeover;
mod tls;

pub use takeover::Successor;
pub use tls::TlsFiles;

/// The link to the old process when this one was started to take over from
/// it (SIGUSR2): the descriptor its environment names.
pub fn takeover_link() -> Option<RawFd> {
    std::env::var(takeover::FD_VAR).ok()?.parse().ok()
}

/// Tells systemd the relay is ready (`Type=notify`), when it runs under it.
pub fn notify_ready() {
    takeover::notify_systemd();
}

use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpListener;
use mio::{Poll, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use crate::token::Verifier;
use crate::{Budget, Config, ConfigError, ProcessInfo, Relay, Shard as Place, MAX_DURATION};
use shard::{Mailbox, Parts, Restored, Shard, WAKER};
use takeover::Handover;

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
    /// Serve `wss://` with this certificate and key: on `listen` beside the
    /// plain port, or, with no address of its own, on `listen` in its place.
    pub tls: Option<TlsListen>,
    /// What SIGUSR2 starts to take the relay over; `None` turns takeovers off.
    pub successor: Option<Successor>,
}

/// Where and with what the relay serves TLS.
#[derive(Clone, Debug)]
pub struct TlsListen {
    /// Its own address (`--tls-listen`); `None` puts TLS on the public port.
    pub listen: Option<SocketAddr>,
    /// The certificate chain and key, read at start and on SIGHUP.
    pub files: TlsFiles,
}

/// Why the server cannot start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is one the relay refuses.
    Config(ConfigError),
    /// A socket or the poller could not be set up.
    Io(io::Error),
    /// Taking over from the old process failed; it serves on.
    Takeover(String),
    /// The TLS certificate or key cannot be used.
    Tls(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid configuration: {e}"),
            Self::Io(e) => e.fmt(f),
            Self::Takeover(e) => write!(f, "takeover: {e}"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Checks the configuration and makes each shard's core.
fn relays(config: &ServerConfig) -> Result<Vec<Relay>, StartError> {
    if config.drain_timeout.is_zero() || config.drain_timeout > MAX_DURATION {
        let e = ConfigError::DurationOutOfRange { name: "drain_timeout", value: config.drain_timeout };
        return Err(StartError::Config(e));
    }
    let count = config.threads;
    if count == 0 {
        return Err(StartError::Config(ConfigError::Zero("threads")));
    }
    let mut relay = config.relay.clone();
    // Connections in their handshake arrive spread evenly over the shards'
    // sockets, so each takes its share of the cap.
    relay.capacity.max_handshakes = relay.capacity.max_handshakes.div_ceil(count);
    relay.admission = config.tokens.is_some();
    let budget = Budget::new();
    (0..count)
        .map(|index| Relay::sharded(relay.clone(), Place { index, count }, budget.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError::Config)
}

/// Seconds since the Unix epoch now: the process's start time for `/metrics`.
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

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
    tls_addr: Option<SocketAddr>,
    takeovers: u64,
}

/// One shard's sockets and core, before its loop is made.
struct Seat {
    listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    tls_listener: Option<TcpListener>,
    relay: Relay,
    restored: Option<Restored>,
}

impl Server {
    /// Checks the configuration, binds the listeners, makes the shards and
    /// installs the signal handlers.
    pub fn bind(config: ServerConfig) -> Result<Self, StartError> {
        let relays = relays(&config)?;
        let count = relays.len();
        let (plain, tls) = match &config.tls {
            None => (Some(config.listen), None),
            Some(TlsListen { listen: Some(addr), .. }) => (Some(config.listen), Some(*addr)),
            Some(TlsListen { listen: None, .. }) => (None, Some(config.listen)),
        };
        let bind = |addr: Option<SocketAddr>| -> io::Result<Vec<Option<TcpListener>>> {
            match addr {
                Some(addr) => Ok(listen::bind(addr, count)?.into_iter().map(Some).collect()),
                None => Ok((0..count).map(|_| None).collect()),
            }
        };
        let (listeners, tls_listeners) = (bind(plain)?, bind(tls)?);
        let mut metrics_listener = config.metrics_listen.map(TcpListener::bind).transpose()?;
        let seats = (relays.into_iter().zip(listeners).zip(tls_listeners))
            // The operator's port belongs to the first shard.
            .map(|((relay, listener), tls_listener)| Seat {
                listener,
                metrics_listener: metrics_listener.take(),
                tls_listener,
                relay,
                restored: None,
            })
            .collect();
        Self::assemble(&config, seats, 0)
    }

    /// Takes over from the relay process that started this one (SIGUSR2) and
    /// passed the link's descriptor `fd`: its listeners, its connections and
    /// every shard's state. The configuration must have as many shards as
    /// the old process. When this returns `Ok` the old process has let go and
    /// exits; on any error it serves on.
    pub fn take_over(config: ServerConfig, fd: RawFd) -> Result<Self, StartError> {
        let inherited = takeover::receive(fd).map_err(StartError::Takeover)?;
        let shards: Vec<(&[u8], &[u8], usize)> = (inherited.shards.iter())
            .map(|(core, driver, fds)| (&inherited.state[core.clone()], &inherited.state[driver.clone()], *fds))
            .collect();
        match Self::adopt(&config, inherited.fds, &shards, inherited.takeovers) {
            Ok(server) => {
                inherited.link.commit().map_err(StartError::Takeover)?;
                Ok(server)
            }
            Err(e) => {
                inherited.link.refuse(&e.to_string());
                Err(e)
            }
        }
    }

    fn adopt(
        config: &ServerConfig,
        fds: Vec<OwnedFd>,
        shards: &[(&[u8], &[u8], usize)],
        takeovers: u64,
    ) -> Result<Self, StartError> {
        let relays = relays(config)?;
        if relays.len() != shards.len() {
            let e = format!(
                "{} shards handed over, {} configured: run with --threads {}",
                shards.len(),
                relays.len(),
                shards.len()
            );
            return Err(StartError::Takeover(e));
        }
        let now = Instant::now();
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        let mut offset = 0;
        let mut seats = Vec::with_capacity(relays.len());
        for (index, (mut relay, (core, driver, count))) in relays.into_iter().zip(shards).enumerate() {
            relay.import_state(core, now).map_err(|e| StartError::Takeover(format!("shard {index}: {e}")))?;
            let mine = fds
                .get_mut(offset..offset + count)
                .ok_or_else(|| StartError::Takeover("descriptors missing".into()))?;
            offset += count;
            let ([listener, metrics_listener, tls_listener], restored) =
                Restored::parse(driver, index, mine, now).map_err(StartError::Takeover)?;
            if tls_listener.is_some() != config.tls.is_some() {
                return Err(StartError::Takeover("the old process and this one differ on TLS".into()));
            }
            seats.push(Seat { listener, metrics_listener, tls_listener, relay, restored: Some(restored) });
        }
        Self::assemble(config, seats, takeovers + 1)
    }

    fn assemble(config: &ServerConfig, seats: Vec<Seat>, takeovers: u64) -> Result<Self, StartError> {
        let count = seats.len();
        let local = |l: &Option<TcpListener>| l.as_ref().map(TcpListener::local_addr).transpose();
        let tls_addr = local(&seats[0].tls_listener)?;
        let addr = local(&seats[0].listener)?.or(tls_addr).ok_or_else(|| io::Error::other("no public port"))?;
        let metrics_addr = local(&seats[0].metrics_listener)?;
        let tls = match &config.tls {
            Some(t) => Some((tls::load(&t.files).map_err(StartError::Tls)?, t.files.clone())),
            None => None,
        };
        let mut signals = Some(Signals::new([SIGINT, SIGTERM, SIGUSR2, SIGHUP])?);
        let polls = (0..count).map(|_| Poll::new()).collect::<io::Result<Vec<_>>>()?;
        let mut inboxes = Vec::with_capacity(count);
        let mut mailboxes = Vec::with_capacity(count);
        for poll in &polls {
            let (tx, rx) = mpsc::channel();
            inboxes.push(rx);
            mailboxes.push(Mailbox { tx, waker: Arc::new(Waker::new(poll.registry(), WAKER)?) });
        }
        let mailboxes: Arc<[Mailbox]> = mailboxes.into();
        let mut handover = config.successor.clone().map(|s| Handover::new(s, mailboxes.clone(), takeovers));
        let process = ProcessInfo { start_time: unix_now(), takeovers };
        let now = Instant::now();
        let mut shards = Vec::with_capacity(count);
        for (index, ((poll, mut seat), inbox)) in polls.into_iter().zip(seats).zip(inboxes).enumerate() {
            seat.relay.set_process_info(process);
            let mut shard = Shard::new(Parts {
                index,
                poll,
                listener: seat.listener,
                metrics_listener: seat.metrics_listener,
                tls_listener: seat.tls_listener,
                tls: tls.clone(),
                // The signals, and with them takeovers, belong to the first shard.
                signals: signals.take(),
                relay: seat.relay,
                mailboxes: mailboxes.clone(),
                inbox,
                drain_timeout: config.drain_timeout,
                verifier: config.tokens.clone(),
                handover: handover.take(),
            })?;
            if let Some(restored) = seat.restored {
                shard.restore(restored, now)?;
            }
            shards.push(shard);
        }
        Ok(Self { shards, addr, metrics_addr, tls_addr, takeovers })
    }

    /// How many takeovers brought the relay to this process.
    pub fn takeovers(&self) -> u64 {
        self.takeovers
    }

    /// The address the listeners are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address TLS is served on, if it is.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
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
