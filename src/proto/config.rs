//! What the core is told at start: its mode, limits and timeouts, and the
//! checks that make a configuration one the relay can keep its promises with.

use std::fmt;
use std::time::Duration;

use super::deflate::MAX_RESPONSE as MAX_EXTENSIONS_RESPONSE;
use super::http::MAX_ACCEPT_RESPONSE;

/// What an upgraded connection does with its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// The ws-relay protocol: rooms, ids, `<target> <rest>` routing.
    Relay,
    /// Every message is sent back to its sender, for conformance suites.
    Echo,
}

/// Which listening socket a connection came in on, which decides what it may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Listener {
    /// The public port: upgrades, `/healthz`, and the pages and `/metrics` if enabled.
    Public,
    /// The operator's port: `/metrics`, `/healthz` and the server API.
    Admin,
}

/// Limits on the upgrade request head, checked as bytes arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Largest request head in bytes, request line and headers included.
    pub max_head: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest request target (the room name) in bytes.
    pub max_target: usize,
}

/// Limits on incoming messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest message, summed over its fragments, in bytes.
    pub max_message: usize,
    /// Most frames one message may be split into.
    pub max_fragments: usize,
}

/// How much one client may send: two generic cell rate budgets, one counting
/// messages (control frames included) and one counting payload bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimits {
    /// Sustained messages per second.
    pub messages_per_second: u32,
    /// Messages a client may send at once.
    pub message_burst: u32,
    /// Sustained payload bytes per second.
    pub bytes_per_second: u64,
    /// Payload bytes a client may send at once.
    pub byte_burst: u64,
}

/// permessage-deflate (RFC 7692), offered to clients that ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deflate {
    /// Messages with fewer payload bytes than this go out uncompressed:
    /// compressing them saves too little to pay for itself.
    pub min_size: usize,
}

impl Deflate {
    /// Messages from 128 bytes on are compressed.
    pub const DEFAULT: Deflate = Deflate { min_size: 128 };
}

impl Default for Deflate {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Caps past which an upgrade is refused with 503.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Upgraded clients in all rooms together.
    pub max_clients: usize,
    /// Clients in one room.
    pub max_room_clients: usize,
    /// Rooms with clients.
    pub max_rooms: usize,
    /// Connections still sending their HTTP request. A new connection past
    /// it pushes out the oldest (503): clients that complete their request in
    /// a round trip get through while slow ones cannot pile up.
    pub max_handshakes: usize,
    /// Upgraded clients from one address (the PROXY protocol's source when a
    /// proxy is in front); `None` for no cap.
    pub max_clients_per_ip: Option<usize>,
}

/// The core's configuration. [`Config::DEFAULT`] is what the binary runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Relay or echo.
    pub mode: Mode,
    /// Limits on the upgrade request.
    pub handshake: HandshakeLimits,
    /// Limits on incoming messages.
    pub message: MessageLimits,
    /// Caps on clients and rooms.
    pub capacity: Capacity,
    /// Per-client flood control; `None` turns it off.
    pub flood: Option<FloodLimits>,
    /// permessage-deflate for the clients that offer it; `None` (the
    /// default) declines every offer, as latency comes first.
    pub deflate: Option<Deflate>,
    /// When set, a browser upgrade (one with an `Origin` header) is refused
    /// with 403 unless its origin, e.g. `https://game.example`, is listed.
    pub allowed_origins: Option<Vec<String>>,
    /// Serve the demo game at `/` and `ws-relay.js` on the public port.
    pub serve_pages: bool,
    /// Serve `/metrics` on the public port; off when a separate metrics port is used.
    pub serve_metrics: bool,
    /// Every connection to the public port starts with a PROXY protocol
    /// header (version 1 or 2) naming the client's address, as a load
    /// balancer in front sends it; a connection without a valid one is
    /// refused (400). Never trusted when off.
    pub proxy_protocol: bool,
    /// The driver decides who may enter a room: each upgrade waits for its
    /// verdict ([`Action::Admit`](crate::Action::Admit)), and a `token` query
    /// parameter no longer names the room.
    pub admission: bool,
    /// The key the server API on the operator's port requires
    /// (`Authorization: Bearer <key>`); `None` turns the API off.
    pub api_key: Option<Secret>,
    /// The largest request body the server API reads.
    pub max_api_body: usize,
    /// A connection that has not completed its upgrade by then is closed (408).
    pub handshake_timeout: Duration,
    /// A client silent this long is pinged.
    pub ping_interval: Duration,
    /// A pinged client silent this much longer is closed (1011).
    pub ping_timeout: Duration,
    /// After the relay sends a close frame, how long it waits for the client's.
    pub close_timeout: Duration,
    /// The most bytes that may wait to be written to one client. Past it the
    /// client is a slow consumer: it leaves its room and its connection is
    /// dropped, so its peers never wait for it. The answer to its request
    /// (the 101 with `self` and the join list, or an HTTP response) is the
    /// one thing always queued whole.
    pub max_pending: usize,
    /// How long a client that opted in to resumable sessions keeps its seat
    /// after its transport ends without a close frame; zero turns sessions off.
    pub resume_window: Duration,
    /// The most sessions waiting to be resumed at once; past it a client whose
    /// transport ends leaves its room as without a session.
    pub max_parked: usize,
}

impl Config {
    /// The defaults, which the binary's flags start from.
    pub const DEFAULT: Config = Config {
        mode: Mode::Relay,
        handshake: HandshakeLimits { max_head: 8 * 1024, max_headers: 64, max_target: 1024 },
        message: MessageLimits { max_message: 64 * 1024, max_fragments: 1024 },
        allowed_origins: None,
        serve_pages: true,
        serve_metrics: true,
        proxy_protocol: false,
        admission: false,
        api_key: None,
        max_api_body: 64 * 1024,
        flood: Some(FloodLimits::DEFAULT),
        deflate: None,
        capacity: Capacity {
            max_clients: 100_000,
            max_room_clients: 1024,
            max_rooms: 100_000,
            max_handshakes: 1024,
            max_clients_per_ip: None,
        },
        handshake_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(30),
        ping_timeout: Duration::from_secs(30),
        close_timeout: Duration::from_secs(5),
        max_pending: 1024 * 1024,
        resume_window: Duration::from_secs(10),
        max_parked: 10_000,
    };

    /// Checks that the relay can keep its promises with this configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            ("handshake_timeout", self.handshake_timeout),
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("close_timeout", self.close_timeout),
        ];
        for (name, value) in durations {
            check_duration(name, value)?;
        }
        if !self.resume_window.is_zero() {
            check_duration("resume_window", self.resume_window)?;
        }
        let needed = self.min_pending();
        if self.max_pending < needed {
            let head = self.max_answer_head();
            return Err(ConfigError::OutputBoundTooSmall { max_pending: self.max_pending, needed, head });
        }
        let counts = [
            ("max_handshakes", self.capacity.max_handshakes),
            ("max_fragments", self.message.max_fragments),
            ("max_headers", self.handshake.max_headers),
            ("max_clients_per_ip", self.capacity.max_clients_per_ip.unwrap_or(1)),
        ];
        match counts.into_iter().find(|&(_, n)| n == 0) {
            Some((name, _)) => Err(ConfigError::Zero(name)),
            None => Ok(()),
        }
    }

    /// The smallest `max_pending` that holds a newcomer's answer in a full
    /// room (the 101, `self`, and a `<id> join` frame of at most 27 bytes for
    /// every peer; in echo mode the 101 alone; with deflate its
    /// `Sec-WebSocket-Extensions` line too) plus one largest message with its
    /// frame header and the sender's `<id> ` prefix: a client is never a slow
    /// consumer for what it could not have read yet. (A compressed message is
    /// sent only when it is smaller than the plain one.)
    pub fn min_pending(&self) -> usize {
        let join_list = match self.mode {
            Mode::Relay => MAX_NOTICE.saturating_mul(self.capacity.max_room_clients),
            Mode::Echo => 0,
        };
        let answer = self.max_answer_head().saturating_add(join_list);
        answer.saturating_add(self.message.max_message).saturating_add(64)
    }
}

impl Config {
    /// The longest 101 response head this configuration writes.
    fn max_answer_head(&self) -> usize {
        MAX_ACCEPT_RESPONSE + if self.deflate.is_some() { MAX_EXTENSIONS_RESPONSE } else { 0 }
    }
}

/// Bytes that must not appear in logs: `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FloodLimits {
    /// 1,000 messages a second with bursts of 2,000, 1 MiB a second with
    /// bursts of 2 MiB: a 60 Hz game uses 6% of it.
    pub const DEFAULT: FloodLimits =
        FloodLimits { messages_per_second: 1000, message_burst: 2000, bytes_per_second: 1 << 20, byte_burst: 2 << 20 };
}

/// The largest relay notice frame: a 2-byte header, a 20-digit id, ` join`.
const MAX_NOTICE: usize = 2 + 20 + 5;

/// The longest duration a configuration may hold. Past it an `Instant` may
/// not be able to represent a deadline, and no timeout needs to be longer.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

fn check_duration(name: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() || value > MAX_DURATION {
        return Err(ConfigError::DurationOutOfRange { name, value });
    }
    Ok(())
}

/// A configuration the relay refuses to run with: the caller's mistake.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_pending` cannot hold a newcomer's answer and one largest message.
    OutputBoundTooSmall {
        /// The configured bound.
        max_pending: usize,
        /// The least it must be ([`Config::min_pending`]).
        needed: usize,
        /// The 101 response's head, counted in `needed`: 256 bytes, 416
        /// with permessage-deflate on.
        head: usize,
    },
    /// A duration is zero or longer than [`MAX_DURATION`].
    DurationOutOfRange {
        /// The field.
        name: &'static str,
        /// Its value.
        value: Duration,
    },
    /// A count that must be at least 1 is 0.
    Zero(&'static str),
    /// A shard's index is not below the count, or there are over 65,535 shards.
    BadShard {
        /// The shard's index.
        index: usize,
        /// How many shards there are.
        count: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutputBoundTooSmall { max_pending, needed, head } => write!(
                f,
                "max_pending ({max_pending}) must be at least {needed}: a newcomer's join list in a full room \
                 (max_room_clients x 27 bytes + {head}) plus one largest message (max_message + 64)"
            ),
            Self::DurationOutOfRange { name, value } => {
                write!(f, "{name} ({value:?}) must be more than 0 and at most {MAX_DURATION:?}")
            }
            Self::Zero(name) => write!(f, "{name} must be at least 1"),
            Self::BadShard { index, count } => write!(f, "shard {index} of {count} does not exist"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(Config::DEFAULT.validate(), Ok(()));
        let small = Config {
            max_pending: 8192,
            message: MessageLimits { max_message: 4000, max_fragments: 8 },
            ..Config::DEFAULT
        };
        let needed = 256 + 27 * 1024 + 4000 + 64;
        assert_eq!(small.validate(), Err(ConfigError::OutputBoundTooSmall { max_pending: 8192, needed, head: 256 }));
        let deflate = Config { deflate: Some(Deflate::DEFAULT), ..small };
        let (needed, head) = (needed + 160, 256 + 160);
        assert_eq!(deflate.validate(), Err(ConfigError::OutputBoundTooSmall { max_pending: 8192, needed, head }));
        let huge = Config { ping_interval: Duration::from_secs(10_000_000_000_000_000_000), ..Config::DEFAULT };
        assert!(matches!(huge.validate(), Err(ConfigError::DurationOutOfRange { name: "ping_interval", .. })));
        let zero = Config { close_timeout: Duration::ZERO, ..Config::DEFAULT };
        assert!(matches!(zero.validate(), Err(ConfigError::DurationOutOfRange { name: "close_timeout", .. })));
    }
}
