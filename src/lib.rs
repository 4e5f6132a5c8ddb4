//! ws-relay: a WebSocket relay for multiplayer browser games.
//!
//! [`proto`] is the core, a deterministic state machine with no I/O that any
//! event loop can drive; [`server`] is the single-threaded mio driver the
//! `ws-relay` binary runs (feature `server`, on by default).
//!
//! ```
//! use std::time::Instant;
//! use ws_relay::{Action, Config, Relay};
//!
//! let mut relay = Relay::new(Config::default());
//! let now = Instant::now();
//! let conn = relay.handle_connect(now);
//! relay.handle_read(conn, b"GET /ws-relay/demo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n", now);
//! let Some(Action::Send { to, bytes }) = relay.poll_action() else { panic!() };
//! assert_eq!(to, conn);
//! assert!(bytes.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! assert!(bytes.ends_with(b"\x81\x061 self"));
//! ```

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod proto;
#[cfg(feature = "server")]
pub mod server;

pub use proto::{
    Action, CloseReason, Config, ConnId, HandshakeError, Listener, Mode, ProtocolError, Relay, RelayError,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
