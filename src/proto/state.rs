//! A relay's whole state as bytes and back, so a new process can carry on
//! every connection of an old one ([`Relay::export_state`],
//! [`Relay::import_state`]): rooms, ids and members in join order, every
//! connection's phase, partial request, partial frame, UTF-8 state, message
//! being reassembled, flood budgets, deadlines and unwritten output, and the
//! counters.
//!
//! [`Relay::export_state`]: crate::Relay::export_state
//! [`Relay::import_state`]: crate::Relay::import_state
//!
//! # Format, version 1
//!
//! Integers are little-endian. `len` is a `u32` count; `bytes` is a `len`
//! then that many bytes; `opt<T>` is a byte 0 (absent) or 1 then a `T`; a
//! `time` is an `i64` of nanoseconds from the moment of the export (negative:
//! in the past), so a deadline keeps the time it had left; a `conn` is its
//! slot and generation, two `u32` (the shard is the relay's own).
//!
//! ```text
//! magic "WSRELAY\0", version u16 = 1, shard index u16, shard count u16,
//! next generation u32, shutting down u8,
//! stats:    17 u64 counters (the compression counters the last four),
//!           then len + u64 per close kind, per HTTP status, per admission
//!           refusal (each in the order `/metrics` lists them),
//! turns:    len + u64 per loop-turn bucket, sum of nanoseconds u128,
//! rooms:    len × { slot u32, name bytes, next id u64,
//!                   len × { id u64, conn, subject opt<bytes> } },
//! conns:    len × { conn, listener u8, peer opt<addr>, counted ip opt<ip>,
//!                   admitted u8, last read time, scheduled opt<time>,
//!                   flood budgets 2 × opt<time>, session opt<bytes>,
//!                   deflate opt<agreed>, phase, decoder,
//!                   output: pending bytes, frames start opt<u32>,
//!                   overflowed u8, last queued opt<time> },
//! arrivals: len × conn (connections in their handshake, oldest first).
//! ```
//!
//! A phase is a tag and its fields: 0 handshake (deadline opt<time>, the
//! request reader), 1 admitting (deadline, what the client sent meanwhile,
//! room, accept key, subprotocol u8, token opt<bytes>, origin opt<bytes>,
//! session opt<bytes>, deflate opt<agreed>), 2 open (seat opt<{room slot u32,
//! id u64}>, ping sent opt<time>), 3 closing (deadline, reason), 4 done,
//! 5 parked (seat, deadline). The request reader and the message decoder
//! are written field by field, in the order their own `save` functions give.
//! An address is 4 or 6, the IP's bytes, and for a socket address its port.
//!
//! permessage-deflate: `agreed` is what the upgrade agreed to,
//! { client_no_context_takeover u8, client_max_window_bits opt<u8>,
//! server_max_window_bits opt<u8> }. The decoder ends with the data message
//! in progress being compressed (u8) and, once deflate is agreed, its
//! inflater opt<{ context live u8, window bytes, input bytes }>: zlib's
//! state cannot be read out through flate2, so the window is the last
//! 2^client_max_window_bits bytes (32 KiB at most) the client's messages
//! inflated to, kept while its context carries over, and the input is the
//! compressed payload of the message in progress. A relay that imports it
//! primes a fresh inflater with the window (`inflateSetDictionary`, which
//! raw DEFLATE streams allow) and inflates the input again, which must give
//! the bytes of the message so far, so the client's stream goes on where it
//! was, even in the middle of a message. The relay's own compression keeps
//! no state between messages (`server_no_context_takeover`).
//!
//! A reader refuses anything it did not write: a wrong magic, a version it
//! does not know, another shard layout, a count or value out of range, a
//! member whose connection is not open in its room, trailing bytes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::action::ConnId;
use super::config::ConfigError;

/// The first bytes of every export.
pub(crate) const MAGIC: &[u8; 8] = b"WSRELAY\0";

/// The format this build writes and reads.
pub const STATE_VERSION: u16 = 1;

/// Why a relay cannot import a state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportError {
    /// The bytes are not a relay's exported state.
    NotAState,
    /// A format version this build does not read.
    UnknownVersion(u16),
    /// The state is another shard's, or from a process with another number of shards.
    ShardMismatch {
        /// The exporting relay's shard index and count.
        exported: (usize, usize),
        /// This relay's.
        here: (usize, usize),
    },
    /// The relay already has connections: only a fresh one can import.
    NotEmpty,
    /// The bytes end before the state does.
    Truncated,
    /// A value no export writes.
    Corrupt(&'static str),
    /// The configuration is one the relay refuses.
    Config(ConfigError),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAState => f.write_str("not a ws-relay state"),
            Self::UnknownVersion(v) => write!(f, "state format version {v}; this build reads version {STATE_VERSION}"),
            Self::ShardMismatch { exported, here } => write!(
                f,
                "state of shard {} of {}, imported into shard {} of {}: run the new process with the same --threads",
                exported.0, exported.1, here.0, here.1
            ),
            Self::NotEmpty => f.write_str("only a relay with no connections can import a state"),
            Self::Truncated => f.write_str("the state ends early"),
            Self::Corrupt(what) => write!(f, "corrupt state: {what}"),
            Self::Config(e) => write!(f, "invalid configuration: {e}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// Writes a state, times relative to `now`.
pub(crate) struct Writer {
    pub(crate) out: Vec<u8>,
    now: Instant,
}

impl Writer {
    /// A writer with room for `capacity` bytes: a state with megabytes of
    /// output in it is written without growing (and copying) its buffer.
    pub(crate) fn with_capacity(now: Instant, capacity: usize) -> Self {
        Self { out: Vec::with_capacity(capacity), now }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// A count or an index; every one the core holds fits in 32 bits.
    pub(crate) fn len(&mut self, v: usize) {
        self.u32(u32::try_from(v).unwrap_or(u32::MAX));
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.out.extend_from_slice(v);
    }

    pub(crate) fn time(&mut self, t: Instant) {
        let nanos = match t.checked_duration_since(self.now) {
            Some(ahead) => i64::try_from(ahead.as_nanos()).unwrap_or(i64::MAX),
            None => -i64::try_from(self.now.duration_since(t).as_nanos()).unwrap_or(i64::MAX),
        };
        self.out.extend_from_slice(&nanos.to_le_bytes());
    }

    pub(crate) fn opt<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        self.bool(v.is_some());
        if let Some(v) = v {
            write(self, v);
        }
    }

    pub(crate) fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.out.extend_from_slice(&ip.octets());
            }
        }
    }

    pub(crate) fn addr(&mut self, addr: SocketAddr) {
        self.ip(addr.ip());
        self.u16(addr.port());
    }

    pub(crate) fn conn(&mut self, conn: ConnId) {
        self.u32(conn.index);
        self.u32(conn.generation);
    }
}

/// Reads a state written by [`Writer`], times relative to `now`.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    now: Instant,
    shard: u16,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], now: Instant, shard: u16) -> Self {
        Self { buf, now, shard }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ImportError> {
        if self.buf.len() < n {
            return Err(ImportError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ImportError> {
        Ok(self.take(N)?.try_into().expect("take gives N bytes"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ImportError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ImportError> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ImportError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ImportError> {
        self.array().map(u64::from_le_bytes)
    }

    pub(crate) fn bool(&mut self) -> Result<bool, ImportError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ImportError::Corrupt("a flag that is neither 0 nor 1")),
        }
    }

    /// A count of things each at least one byte long: never more than the
    /// bytes left, so a corrupt count cannot make the reader allocate.
    pub(crate) fn len(&mut self) -> Result<usize, ImportError> {
        let n = self.u32()? as usize;
        if n > self.buf.len() {
            return Err(ImportError::Truncated);
        }
        Ok(n)
    }

    /// An index or a size, not followed by that many bytes.
    pub(crate) fn index(&mut self) -> Result<usize, ImportError> {
        Ok(self.u32()? as usize)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], ImportError> {
        let n = self.len()?;
        self.take(n)
    }

    pub(crate) fn string(&mut self) -> Result<String, ImportError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| ImportError::Corrupt("text that is not UTF-8"))
    }

    pub(crate) fn time(&mut self) -> Result<Instant, ImportError> {
        let nanos = i64::from_le_bytes(self.array()?);
        let offset = Duration::from_nanos(nanos.unsigned_abs());
        // A time too far off for this process's clock is as far as it can go.
        Ok(if nanos >= 0 {
            self.now.checked_add(offset).unwrap_or(self.now)
        } else {
            self.now.checked_sub(offset).unwrap_or(self.now)
        })
    }

    pub(crate) fn opt<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, ImportError>,
    ) -> Result<Option<T>, ImportError> {
        if self.bool()? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn ip(&mut self) -> Result<IpAddr, ImportError> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => Err(ImportError::Corrupt("an address family other than 4 and 6")),
        }
    }

    pub(crate) fn addr(&mut self) -> Result<SocketAddr, ImportError> {
        Ok(SocketAddr::new(self.ip()?, self.u16()?))
    }

    pub(crate) fn conn(&mut self) -> Result<ConnId, ImportError> {
        Ok(ConnId { shard: self.shard, index: self.u32()?, generation: self.u32()? })
    }
}
