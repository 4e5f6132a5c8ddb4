//! ws-relay: a WebSocket relay for multiplayer browser games.
//!
//! The core, [`Relay`], is a deterministic state machine with no I/O: no
//! sockets, no clock reads, no threads, no randomness. A driver feeds it bytes
//! and the time through its `handle_*` methods and takes out bytes to write
//! ([`Relay::poll_transmit`], [`Relay::pending`]), things to do
//! ([`Relay::poll_action`]) and when to wake up ([`Relay::poll_timeout`]);
//! [`Relay`]'s documentation gives the rules. [`server`] is the mio driver the
//! `ws-relay` binary runs (feature `server`, on by default); `client` helps
//! tools speak the wire protocol.
//!
//! ```
//! use std::time::Instant;
//! use ws_relay::{Config, Relay};
//!
//! let mut relay = Relay::new(Config::default()).expect("the defaults are valid");
//! let now = Instant::now();
//! let conn = relay.handle_connect(now);
//! relay.handle_read(conn, b"GET /ws-relay/demo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n", now);
//! assert_eq!(relay.poll_transmit(), Some(conn));
//! let bytes = relay.pending(conn);
//! assert!(bytes.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! assert!(bytes.ends_with(b"\x81\x061 self"));
//! ```

#![warn(unreachable_pub, missing_docs)]

pub mod client;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod proto;
#[cfg(feature = "server")]
pub mod server;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod token;

pub use proto::action::{Action, CloseKind, CloseReason, ConnId};
pub use proto::admission::{Admission, Refusal, Verdict};
pub use proto::api::{ApiReply, ApiRequest, To, Who};
pub use proto::budget::Budget;
pub use proto::config::{
    Capacity, Config, ConfigError, Deflate, FloodLimits, HandshakeLimits, Listener, MessageLimits, Mode, Secret,
    MAX_DURATION,
};
pub use proto::error::{HandshakeError, ProtocolError, RelayError};
pub use proto::metrics::{render as render_metrics, ProcessInfo, Snapshot};
pub use proto::relay::Relay;
pub use proto::shard::{shard_of, Shard};
pub use proto::state::{ImportError, STATE_VERSION};
pub use proto::stats::{Stats, TlsFailure};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
