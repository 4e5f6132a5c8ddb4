//! One connection's state: which phase it is in, its decoder, and the times
//! its keepalive and timeouts are computed from.

use std::time::Instant;

use super::action::{CloseReason, ConnId};
use super::config::Listener;
use super::handshake::RequestReader;
use super::message::MessageDecoder;
use super::rate::RateLimiter;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP upgrade request; closed at `deadline`.
    Handshake {
        /// The request so far.
        reader: RequestReader,
        /// When the handshake timeout fires.
        deadline: Instant,
    },
    /// Upgraded: frames flow.
    Open {
        /// Frames into messages.
        decoder: MessageDecoder,
        /// Room slot and id, in relay mode.
        member: Option<(usize, u64)>,
        /// When the unanswered keepalive ping went out.
        ping_sent: Option<Instant>,
    },
    /// The relay sent its close frame and waits for the client's until `deadline`.
    Closing {
        /// Still decoding, to find the client's close frame.
        decoder: MessageDecoder,
        /// When the close timeout fires.
        deadline: Instant,
        /// Why the relay is closing.
        reason: CloseReason,
    },
}

/// A connection known to the core.
#[derive(Debug)]
pub struct Conn {
    /// Its handle.
    pub id: ConnId,
    /// The socket it came in on.
    pub listener: Listener,
    /// Its phase.
    pub phase: Phase,
    /// When bytes last arrived from it.
    pub last_read: Instant,
    /// The earliest deadline this connection has in the timer queue.
    pub scheduled: Option<Instant>,
    /// Its flood-control budgets.
    pub rate: RateLimiter,
}
