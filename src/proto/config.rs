//! What the core is told at start: its mode, limits and timeouts.

use std::time::Duration;

use super::handshake::HandshakeLimits;
use super::message::MessageLimits;
use super::rate::FloodLimits;

/// What an upgraded connection does with its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The ws-relay protocol: rooms, ids, `<target> <rest>` routing.
    Relay,
    /// Every message is sent back to its sender, for conformance suites.
    Echo,
}

/// Which listening socket a connection came in on, which decides what it may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The public port: upgrades, `/healthz`, and the pages and `/metrics` if enabled.
    Public,
    /// The operator's port: `/metrics` and `/healthz` only.
    Metrics,
}

/// Caps past which an upgrade is refused with 503.
#[derive(Clone, Copy, Debug)]
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
}

/// The core's configuration. [`Config::default`] is what the binary runs with.
#[derive(Clone, Debug)]
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
    /// When set, a browser upgrade (one with an `Origin` header) is refused
    /// with 403 unless its origin, e.g. `https://game.example`, is listed.
    pub allowed_origins: Option<Vec<String>>,
    /// Serve the demo game at `/` and `ws-relay.js` on the public port.
    pub serve_pages: bool,
    /// Serve `/metrics` on the public port; off when a separate metrics port is used.
    pub serve_metrics: bool,
    /// A connection that has not completed its upgrade by then is closed (408).
    pub handshake_timeout: Duration,
    /// A client silent this long is pinged.
    pub ping_interval: Duration,
    /// A pinged client silent this much longer is closed (1011).
    pub ping_timeout: Duration,
    /// After the relay sends a close frame, how long it waits for the client's.
    pub close_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Relay,
            handshake: HandshakeLimits { max_head: 8 * 1024, max_headers: 64, max_target: 1024 },
            message: MessageLimits { max_message: 64 * 1024, max_fragments: 1024 },
            allowed_origins: None,
            serve_pages: true,
            serve_metrics: true,
            flood: Some(FloodLimits {
                messages_per_second: 1000,
                message_burst: 2000,
                bytes_per_second: 1024 * 1024,
                byte_burst: 2 * 1024 * 1024,
            }),
            capacity: Capacity {
                max_clients: 100_000,
                max_room_clients: 1024,
                max_rooms: 100_000,
                max_handshakes: 1024,
            },
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
        }
    }
}
