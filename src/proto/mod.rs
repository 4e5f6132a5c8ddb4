//! The sans-IO core: the whole ws-relay protocol with no sockets, no clock
//! reads, no threads and no randomness. Time is an argument; output is a queue
//! of [`Action`]s. Same inputs, same outputs.
//!
//! Data flows one way: bytes → [`handshake`] or [`frame`] → [`message`] →
//! [`envelope`] and [`room`] → [`Action`]s.

pub mod action;
pub mod client;
pub mod config;
pub mod conn;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod metrics;
pub mod outbox;
pub mod pages;
pub mod rate;
pub mod relay;
pub mod room;
pub mod stats;
pub mod timer;
pub mod utf8;

pub use action::{Action, CloseReason, ConnId};
pub use config::{Capacity, Config, Listener, Mode};
pub use error::{HandshakeError, ProtocolError, RelayError};
pub use relay::Relay;
pub use stats::Stats;
