//! One connection's state. What lives through every phase — the frame
//! decoder, flood budgets, the time of the last read — sits on [`Conn`];
//! [`Phase`] holds only what a phase alone needs. Its output is kept apart,
//! in [`Outputs`](super::output::Outputs).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::action::{CloseReason, ConnId};
use super::config::{Config, Listener};
use super::deflate::Agreed;
use super::handshake::RequestReader;
use super::message::MessageDecoder;
use super::rate::RateLimiter;
use super::room::Seat;
use super::state::{ImportError, Reader, Writer};

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
    /// A client with a resumable session whose transport ended without a
    /// close frame: it keeps its seat, and what is sent to it waits, until a
    /// connection with its key takes the seat back or `deadline` passes.
    Parked {
        /// Its place in its room.
        seat: Seat,
        /// When the seat is given up.
        deadline: Option<Instant>,
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
    /// The token it presented, and its `Origin`: what the verdict was asked
    /// about, kept so a relay that imports the connection can ask again.
    pub(crate) token: Option<String>,
    pub(crate) origin: Option<Vec<u8>>,
    /// The SHA-256 of the session key it offered, if it offered one.
    pub(crate) session: Option<[u8; 32]>,
    /// The permessage-deflate parameters the 101 will agree to, if any.
    pub(crate) deflate: Option<Agreed>,
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
    /// The SHA-256 of its session key, while its seat can be resumed.
    pub(crate) session: Option<[u8; 32]>,
    /// The permessage-deflate parameters its upgrade agreed to, if any.
    pub(crate) deflate: Option<Agreed>,
}

impl Conn {
    /// Its seat, while it is in a room.
    pub(crate) fn seat(&self) -> Option<Seat> {
        match self.phase {
            Phase::Open { seat, .. } => seat,
            Phase::Parked { seat, .. } => Some(seat),
            _ => None,
        }
    }
}

impl Phase {
    fn save(&self, w: &mut Writer) {
        match self {
            Self::Handshake { reader, deadline } => {
                w.u8(0);
                w.opt(*deadline, Writer::time);
                reader.save(w);
            }
            Self::Admitting { upgrade, deadline, early } => {
                w.u8(1);
                w.opt(*deadline, Writer::time);
                w.bytes(early);
                w.bytes(&upgrade.room);
                w.bytes(upgrade.accept.as_bytes());
                w.bool(upgrade.ws_relay);
                w.opt(upgrade.token.as_deref(), |w, t| w.bytes(t.as_bytes()));
                w.opt(upgrade.origin.as_deref(), Writer::bytes);
                w.opt(upgrade.session.as_ref(), |w, d| w.bytes(d));
                w.opt(upgrade.deflate.as_ref(), |w, a| a.save(w));
            }
            Self::Open { seat, ping_sent } => {
                w.u8(2);
                w.opt(*seat, |w, s| s.save(w));
                w.opt(*ping_sent, Writer::time);
            }
            Self::Closing { deadline, reason } => {
                w.u8(3);
                w.opt(*deadline, Writer::time);
                reason.save(w);
            }
            Self::Done => w.u8(4),
            Self::Parked { seat, deadline } => {
                w.u8(5);
                seat.save(w);
                w.opt(*deadline, Writer::time);
            }
        }
    }

    fn load(r: &mut Reader<'_>, config: &Config, listener: Listener) -> Result<Self, ImportError> {
        Ok(match r.u8()? {
            0 => {
                let deadline = r.opt(Reader::time)?;
                let api_body = (listener == Listener::Admin && config.api_key.is_some()).then_some(config.max_api_body);
                Self::Handshake { deadline, reader: RequestReader::load(r, config.handshake, api_body)? }
            }
            1 => {
                let deadline = r.opt(Reader::time)?;
                let early = r.bytes()?.to_vec();
                let room = r.bytes()?.to_vec();
                let accept = r.string()?;
                let ws_relay = r.bool()?;
                let token = r.opt(Reader::string)?;
                let origin = r.opt(|r| r.bytes().map(<[u8]>::to_vec))?;
                let session = r.opt(digest)?;
                let deflate = r.opt(Agreed::load)?;
                let upgrade = Box::new(Pending { room, accept, ws_relay, token, origin, session, deflate });
                Self::Admitting { upgrade, deadline, early }
            }
            2 => Self::Open { seat: r.opt(Seat::load)?, ping_sent: r.opt(Reader::time)? },
            3 => Self::Closing { deadline: r.opt(Reader::time)?, reason: CloseReason::load(r)? },
            4 => Self::Done,
            5 => Self::Parked { seat: Seat::load(r)?, deadline: r.opt(Reader::time)? },
            _ => return Err(ImportError::Corrupt("an unknown connection phase")),
        })
    }
}

impl Conn {
    pub(crate) fn save(&self, w: &mut Writer) {
        w.conn(self.id);
        w.u8(match self.listener {
            Listener::Public => 0,
            Listener::Admin => 1,
        });
        w.opt(self.peer, Writer::addr);
        w.opt(self.counted_ip, Writer::ip);
        w.bool(self.admitted);
        w.time(self.last_read);
        w.opt(self.scheduled, Writer::time);
        self.rate.save(w);
        w.opt(self.session.as_ref(), |w, d| w.bytes(d));
        w.opt(self.deflate.as_ref(), |w, a| a.save(w));
        self.phase.save(w);
        self.decoder.save(w);
    }

    /// A connection as [`save`](Self::save) wrote it, under `config`.
    pub(crate) fn load(r: &mut Reader<'_>, config: &Config) -> Result<Self, ImportError> {
        let id = r.conn()?;
        let listener = match r.u8()? {
            0 => Listener::Public,
            1 => Listener::Admin,
            _ => return Err(ImportError::Corrupt("an unknown listener")),
        };
        let peer = r.opt(Reader::addr)?;
        let counted_ip = r.opt(Reader::ip)?;
        let admitted = r.bool()?;
        let last_read = r.time()?;
        let scheduled = r.opt(Reader::time)?;
        let rate = RateLimiter::load(r)?;
        let session = r.opt(digest)?;
        let deflate = r.opt(Agreed::load)?;
        let phase = Phase::load(r, config, listener)?;
        let decoder = MessageDecoder::load(r, config.message, deflate)?;
        Ok(Self {
            id,
            listener,
            phase,
            decoder,
            peer,
            counted_ip,
            admitted,
            last_read,
            scheduled,
            rate,
            session,
            deflate,
        })
    }
}

/// A session key's SHA-256, as saved.
fn digest(r: &mut Reader<'_>) -> Result<[u8; 32], ImportError> {
    r.bytes()?.try_into().map_err(|_| ImportError::Corrupt("a session digest that is not 32 bytes"))
}
