//! What the core asks its driver to do, and why a connection ended.

use std::fmt;

use super::error::{HandshakeError, ProtocolError, RelayError};

/// A connection's handle: a slot and a generation, so a handle kept past its
/// connection's end never reaches the connection that reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// The slot, dense from 0: usable as an index into the driver's own tables.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// One thing for the driver to do, borrowed from the core until the next
/// `poll_action`. Bytes are complete HTTP responses or server frames, to be
/// written in the order they come.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Write `bytes` to one connection.
    Send {
        /// The connection.
        to: ConnId,
        /// What to write.
        bytes: &'a [u8],
    },
    /// Write the same `bytes` to every connection in `to`.
    Broadcast {
        /// The recipients, in room order.
        to: &'a [ConnId],
        /// What to write to each.
        bytes: &'a [u8],
    },
    /// Write what was sent to `conn` before, then close its transport. The
    /// core has already forgotten `conn`. With [`CloseReason::SlowConsumer`]
    /// the client is not reading: do not wait for its backlog to drain.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why it ends.
        reason: CloseReason,
    },
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame.
    ClientClose,
    /// The transport ended without a close handshake (EOF, reset, write error).
    TransportClosed,
    /// The client stopped reading and its output passed the driver's bound.
    SlowConsumer,
    /// The client broke RFC 6455.
    Protocol(ProtocolError),
    /// The client broke the relay's message format.
    Relay(RelayError),
    /// The upgrade request was refused.
    Handshake(HandshakeError),
    /// A plain HTTP request was answered.
    HttpServed,
    /// The client did not answer a keepalive ping.
    KeepaliveTimeout,
    /// The relay is shutting down.
    Shutdown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientClose => f.write_str("client closed"),
            Self::TransportClosed => f.write_str("transport closed"),
            Self::SlowConsumer => f.write_str("slow consumer: output bound passed"),
            Self::Protocol(e) => write!(f, "protocol error {}: {e}", e.close_code()),
            Self::Relay(e) => write!(f, "relay error {}: {e}", e.close_code()),
            Self::Handshake(e) => write!(f, "handshake refused {}: {e}", e.http_status()),
            Self::HttpServed => f.write_str("http request served"),
            Self::KeepaliveTimeout => f.write_str("keepalive timeout"),
            Self::Shutdown => f.write_str("shutdown"),
        }
    }
}
