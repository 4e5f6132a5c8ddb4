//! One connection's state. What lives through every phase — the frame
//! decoder, flood budgets, the time of the last read — sits on [`Conn`];
//! [`Phase`] holds only what a phase alone needs. Its output is kept apart,
//! in [`Outputs`](super::output::Outputs).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::action::{CloseReason, ConnId};
use super::config::Listener;
use super::handshake::RequestReader;
use super::message::MessageDecoder;
use super::rate::RateLimiter;
use super::room::Seat;

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Reading the HTTP upgrade request; closed at `deadline`.
    Handshake {
        /// The request so far.
        reader: RequestReader,
        /// When the handshake timeout fires.
        deadline: Option<Instant>,
    },
    /// The request is an upgrade, waiting for the driver's admission verdict;
    /// closed at `deadline` like a handshake.
    Admitting {
        /// The upgrade, to complete or refuse.
        upgrade: Box<Pending>,
        /// When the handshake timeout fires.
        deadline: Option<Instant>,
        /// What the client sent meanwhile, kept in order.
        early: Vec<u8>,
    },
    /// Upgraded: frames flow.
    Open {
        /// Its place in a room, in relay mode.
        seat: Option<Seat>,
        /// When the unanswered keepalive ping went out.
        ping_sent: Option<Instant>,
    },
    /// The relay sent its close frame and waits for the client's until `deadline`.
    Closing {
        /// When the close timeout fires.
        deadline: Option<Instant>,
        /// Why the relay is closing.
        reason: CloseReason,
    },
    /// Finished: the driver has been told, and only output waits to be written.
    Done,
}

/// An upgrade that waits for its admission verdict.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The room: the request target, less any `token` parameter.
    pub(crate) room: Vec<u8>,
    /// The value for `Sec-WebSocket-Accept`.
    pub(crate) accept: String,
    /// The client offered the `ws-relay` subprotocol.
    pub(crate) ws_relay: bool,
}

/// A connection known to the core.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Its handle.
    pub(crate) id: ConnId,
    /// The socket it came in on.
    pub(crate) listener: Listener,
    /// Its phase.
    pub(crate) phase: Phase,
    /// Frames into messages, once upgraded.
    pub(crate) decoder: MessageDecoder,
    /// The client's address: the socket's, or what the PROXY header said.
    pub(crate) peer: Option<SocketAddr>,
    /// The address it is counted under for `max_clients_per_ip`, once admitted.
    pub(crate) counted_ip: Option<IpAddr>,
    /// Counted as a client (against `max_clients`), from admission to its end.
    pub(crate) admitted: bool,
    /// When bytes last arrived from it.
    pub(crate) last_read: Instant,
    /// The earliest deadline this connection has in the timer queue.
    pub(crate) scheduled: Option<Instant>,
    /// Its flood-control budgets.
    pub(crate) rate: RateLimiter,
}

impl Conn {
    /// Its seat, while it is in a room.
    pub(crate) fn seat(&self) -> Option<Seat> {
        match self.phase {
            Phase::Open { seat, .. } => seat,
            _ => None,
        }
    }
}
