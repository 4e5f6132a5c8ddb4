//! What the core asks its driver to do, and why a connection ended.

use std::fmt;

use super::admission::{Admission, Refusal};
use super::api::ApiRequest;
use super::error::{HandshakeError, ProtocolError, RelayError};
use super::state::{ImportError, Reader, Writer};
use super::table::table_enum;

/// A connection's handle: its relay's shard, a slot and a generation, so a
/// handle kept past its connection's end never reaches the connection that
/// reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub(crate) shard: u16,
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// The slot, dense from 0: usable as an index into the driver's own tables.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// `#slot.generation`, or `#shard:slot.generation` past the first shard.
impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard {
            0 => write!(f, "#{}.{}", self.index, self.generation),
            shard => write!(f, "#{shard}:{}.{}", self.index, self.generation),
        }
    }
}

/// Something for the driver to do besides writing, from
/// [`Relay::poll_action`](crate::Relay::poll_action).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// The core is done with `conn`: it reads nothing more from it (the
    /// driver may discard what still arrives). Write what
    /// [`Relay::pending`](crate::Relay::pending) still holds for it, then
    /// shut the transport down. With [`CloseReason::SlowConsumer`] nothing is
    /// held: the client is not reading, so close at once.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why it ends.
        reason: CloseReason,
    },
    /// `conn` asks for a room another shard serves
    /// ([`shard_of`](crate::shard_of)): the core has forgotten it. Move its
    /// transport to shard `shard`, announce it there with
    /// [`Relay::handle_handoff`](crate::Relay::handle_handoff) and feed that
    /// core `bytes`, all the connection sent so far: it carries on as if it
    /// had read them itself.
    Handoff {
        /// The connection.
        conn: ConnId,
        /// The shard that serves its room.
        shard: usize,
        /// Every byte read from it so far.
        bytes: Vec<u8>,
    },
    /// `conn` asks for `/metrics` of a relay that is one of several shards:
    /// render it for every shard with [`render_metrics`](crate::render_metrics)
    /// and answer with [`Relay::handle_metrics`](crate::Relay::handle_metrics).
    Metrics {
        /// The connection.
        conn: ConnId,
    },
    /// `conn` asks to join a room and admission is on (`Config::admission`):
    /// decide, as slowly as needed, and answer with
    /// [`Relay::handle_admission`](crate::Relay::handle_admission).
    /// Meanwhile the connection waits; what it sends is kept in order.
    Admit {
        /// The connection.
        conn: ConnId,
        /// What it asks for.
        admission: Admission,
    },
    /// `conn` made a server API call to a relay that is one of several
    /// shards: carry `request` out with [`Relay::api`](crate::Relay::api) on
    /// the shard that serves its room ([`ApiRequest::room`]), or on every shard
    /// and merge the replies ([`ApiReply::merge`](crate::ApiReply::merge)),
    /// then answer with [`Relay::handle_api`](crate::Relay::handle_api).
    Api {
        /// The connection.
        conn: ConnId,
        /// The call.
        request: ApiRequest,
    },
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent a close frame.
    ClientClose,
    /// The transport ended without a close handshake (EOF, reset, write error).
    TransportClosed,
    /// The client stopped reading and its output passed the bound
    /// ([`Config::max_pending`](crate::Config::max_pending)).
    SlowConsumer,
    /// The client broke RFC 6455.
    Protocol(ProtocolError),
    /// The client broke the relay's message format, or flood control.
    Relay(RelayError),
    /// The upgrade request was refused.
    Handshake(HandshakeError),
    /// The driver's admission kept the client out.
    Refused(Refusal),
    /// The server API disconnected the client (close 4000).
    Disconnected,
    /// A plain HTTP request was answered.
    HttpServed,
    /// The client did not answer a keepalive ping.
    KeepaliveTimeout,
    /// The relay is shutting down.
    Shutdown,
    /// Another connection resumed the client's session (close 4001).
    Replaced,
}

impl CloseReason {
    /// The counter it is counted under.
    pub fn kind(self) -> CloseKind {
        match self {
            Self::ClientClose => CloseKind::ClientClose,
            Self::TransportClosed => CloseKind::TransportClosed,
            Self::SlowConsumer => CloseKind::SlowConsumer,
            Self::Protocol(_) => CloseKind::ProtocolError,
            Self::Relay(RelayError::RateLimited) => CloseKind::RateLimited,
            Self::Relay(_) => CloseKind::RelayError,
            Self::Handshake(_) => CloseKind::HandshakeRefused,
            Self::Refused(_) => CloseKind::AdmissionRefused,
            Self::Disconnected => CloseKind::Disconnected,
            Self::HttpServed => CloseKind::HttpServed,
            Self::KeepaliveTimeout => CloseKind::KeepaliveTimeout,
            Self::Shutdown => CloseKind::Shutdown,
            Self::Replaced => CloseKind::Replaced,
        }
    }
}

impl CloseReason {
    /// A tag, and the inner error's place in its `ALL` list.
    pub(crate) fn save(self, w: &mut Writer) {
        fn place<T: PartialEq>(all: &[T], v: &T) -> u8 {
            all.iter().position(|x| x == v).unwrap_or(usize::from(u8::MAX)) as u8
        }
        let (tag, inner) = match self {
            Self::ClientClose => (0, 0),
            Self::TransportClosed => (1, 0),
            Self::SlowConsumer => (2, 0),
            Self::Protocol(e) => (3, place(ProtocolError::ALL, &e)),
            Self::Relay(e) => (4, place(RelayError::ALL, &e)),
            Self::Handshake(e) => (5, place(HandshakeError::ALL, &e)),
            Self::Refused(r) => (6, place(Refusal::ALL, &r)),
            Self::Disconnected => (7, 0),
            Self::HttpServed => (8, 0),
            Self::KeepaliveTimeout => (9, 0),
            Self::Shutdown => (10, 0),
            Self::Replaced => (11, 0),
        };
        w.u8(tag);
        w.u8(inner);
    }

    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        let (tag, inner) = (r.u8()?, usize::from(r.u8()?));
        let unknown = ImportError::Corrupt("an unknown close reason");
        Ok(match tag {
            0 => Self::ClientClose,
            1 => Self::TransportClosed,
            2 => Self::SlowConsumer,
            3 => Self::Protocol(*ProtocolError::ALL.get(inner).ok_or(unknown)?),
            4 => Self::Relay(*RelayError::ALL.get(inner).ok_or(unknown)?),
            5 => Self::Handshake(*HandshakeError::ALL.get(inner).ok_or(unknown)?),
            6 => Self::Refused(*Refusal::ALL.get(inner).ok_or(unknown)?),
            7 => Self::Disconnected,
            8 => Self::HttpServed,
            9 => Self::KeepaliveTimeout,
            10 => Self::Shutdown,
            11 => Self::Replaced,
            _ => return Err(unknown),
        })
    }
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
            Self::Refused(r) => write!(f, "admission refused {}: {}", r.close_code(), r.reason()),
            Self::Disconnected => f.write_str("disconnected by the server API"),
            Self::HttpServed => f.write_str("http request served"),
            Self::KeepaliveTimeout => f.write_str("keepalive timeout"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Replaced => f.write_str("replaced by a resumed session"),
        }
    }
}

table_enum! {
    /// The kinds of [`CloseReason`] counted apart, each with the label
    /// `/metrics` gives it (`ws_relay_closes_total{reason="..."}`).
    #[non_exhaustive]
    pub enum CloseKind: &'static str {
        /// The client sent a close frame.
        ClientClose => "client_close",
        /// The transport ended without one.
        TransportClosed => "transport_closed",
        /// The client stopped reading.
        SlowConsumer => "slow_consumer",
        /// RFC 6455 was broken.
        ProtocolError => "protocol_error",
        /// The relay's message format was broken.
        RelayError => "relay_error",
        /// Flood control cut the client off.
        RateLimited => "rate_limited",
        /// The upgrade was refused.
        HandshakeRefused => "handshake_refused",
        /// Admission kept the client out (4401, 4403).
        AdmissionRefused => "admission_refused",
        /// The server API disconnected it.
        Disconnected => "api_disconnect",
        /// A plain HTTP request was answered.
        HttpServed => "http_served",
        /// A keepalive ping went unanswered.
        KeepaliveTimeout => "keepalive_timeout",
        /// The relay shut down.
        Shutdown => "shutdown",
        /// A resumed session replaced it (4001). New kinds go last: the
        /// exported state counts closes by their place here.
        Replaced => "replaced",
    }
}

impl CloseKind {
    /// The label of `ws_relay_closes_total`.
    pub fn label(self) -> &'static str {
        self.row()
    }
}
