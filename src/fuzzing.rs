//! The bodies of the cargo-fuzz targets in `fuzz/`. They live in the library so
//! that `cargo test` replays the committed corpus and every crash ever found
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) as regression tests.
//!
//! Each body panics when an invariant breaks; otherwise it returns quietly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use flate2::Decompress;

use crate::client::{
    masked_frame, masked_frame_rsv1, upgrade_request, upgrade_request_offering, Deflater, OpCode, Received,
};
use crate::proto::deflate::{compressed_limit, inflate_message, Agreed};
use crate::proto::error::{HandshakeError, ProtocolError};
use crate::proto::frame::{apply_mask, FrameDecoder, FrameEvent, FrameHeader};
use crate::proto::handshake::{Framing, Request, RequestReader, Upgrade};
use crate::proto::message::decode_all;
use crate::testing::Sim;
use crate::{ApiRequest, Capacity, CloseReason, Config, ConnId, HandshakeLimits, MessageLimits, To};

/// Splits `data` into a chunking seed and the input proper.
fn seed_and_input(data: &[u8]) -> (u32, &[u8]) {
    match data {
        [a, b, rest @ ..] => (u32::from(u16::from_le_bytes([*a, *b])) | 1, rest),
        _ => (1, data),
    }
}

/// Cuts `input` into pieces of pseudo-random sizes drawn from `seed`.
fn chunks(seed: u32, input: &[u8]) -> Vec<&[u8]> {
    let mut state = seed;
    let max = 1 + (seed >> 8) as usize % 64;
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        // xorshift32: deterministic chunk sizes, no randomness from outside.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + state as usize % max).min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
struct FrameLog {
    frames: Vec<(FrameHeader, Vec<u8>)>,
    error: Option<ProtocolError>,
}

fn decode_frames<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> FrameLog {
    let mut decoder = FrameDecoder::default();
    let mut log = FrameLog { frames: Vec::new(), error: None };
    let mut current = None;
    let mut payload = Vec::new();
    for piece in pieces {
        let mut rest = piece;
        loop {
            match decoder.decode(rest, &mut payload) {
                Err(e) => {
                    log.error = Some(e);
                    return log;
                }
                Ok((n, event)) => {
                    assert!(n <= rest.len(), "decoder claimed {n} of {} bytes", rest.len());
                    rest = &rest[n..];
                    match event {
                        Some(FrameEvent::Header(h)) => current = Some(h),
                        Some(FrameEvent::Payload(_)) => {}
                        Some(FrameEvent::End) => {
                            let header = current.take().expect("End follows a Header");
                            assert_eq!(payload.len() as u64, header.len);
                            log.frames.push((header, std::mem::take(&mut payload)));
                        }
                        None => break,
                    }
                }
            }
        }
    }
    log
}

/// Frame and message decoding: whole, in seeded chunks and a byte at a time
/// give one result; accepted frames re-encode to the bytes they came from.
pub fn frame_decoder(data: &[u8]) {
    let (seed, input) = seed_and_input(data);
    let whole = decode_frames([input]);
    assert_eq!(whole, decode_frames(chunks(seed, input)));
    assert_eq!(whole, decode_frames(input.chunks(1)));
    let mut encoded = Vec::new();
    for (header, payload) in &whole.frames {
        header.encode(&mut encoded);
        let start = encoded.len();
        encoded.extend_from_slice(payload);
        if let Some(mask) = header.mask {
            apply_mask(&mut encoded[start..], mask, 0);
        }
    }
    assert_eq!(&input[..encoded.len()], &encoded[..], "accepted frames re-encode differently");

    let limits = MessageLimits { max_message: 4096, max_fragments: 8 };
    let messages = decode_all(limits, None, [input]);
    assert_eq!(messages, decode_all(limits, None, chunks(seed, input)));
    assert_eq!(messages, decode_all(limits, None, input.chunks(1)));
    if let Some(e) = messages.1 {
        assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
    }

    // The same bytes from a client that agreed to permessage-deflate: RSV1
    // on a first frame is inflated, whatever the chunking.
    let agreed = Agreed { client_no_context_takeover: seed & 8 != 0, ..Agreed::default() };
    let inflated = decode_all(limits, Some(agreed), [input]);
    assert_eq!(inflated, decode_all(limits, Some(agreed), chunks(seed, input)));
    assert_eq!(inflated, decode_all(limits, Some(agreed), input.chunks(1)));
    if let Some(e) = inflated.1 {
        assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
    }
    if messages.1 == Some(ProtocolError::ReservedBits) {
        // An RSV bit stopped the plain decoder; up to it, deflate changes nothing.
        assert!(inflated.0.starts_with(&messages.0), "deflate changed the messages before an RSV bit");
    } else {
        assert_eq!(inflated, messages, "RSV1 nowhere, yet deflate changed the outcome");
    }

    // The bytes as the payload of one compressed message, in one frame or in
    // several: the same outcome, the one zlib gives, within the limit. (A
    // payload past the compressed limit is refused from its header alone.)
    if input.len() > compressed_limit(limits.max_message) {
        return;
    }
    let mask = [seed as u8, 0x5A, (seed >> 8) as u8, 0xC3];
    let mut one = Vec::new();
    masked_frame_rsv1(&mut one, true, true, OpCode::Binary, input, mask);
    let mut many = Vec::new();
    let pieces = chunks(seed, input);
    let per = pieces.len().div_ceil(8).max(1);
    let pieces: Vec<Vec<u8>> = pieces.chunks(per).map(|group| group.concat()).collect();
    if pieces.is_empty() {
        masked_frame_rsv1(&mut many, true, true, OpCode::Binary, &[], mask);
    }
    for (k, piece) in pieces.iter().enumerate() {
        let opcode = if k == 0 { OpCode::Binary } else { OpCode::Continuation };
        masked_frame_rsv1(&mut many, k + 1 == pieces.len(), k == 0, opcode, piece, mask);
    }
    let whole = decode_all(limits, Some(agreed), [&one[..]]);
    assert_eq!(whole, decode_all(limits, Some(agreed), [&many[..]]), "fragmenting changed the inflated message");
    assert_eq!(whole, decode_all(limits, Some(agreed), many.chunks(1)));
    let reference = inflate_message(&mut Decompress::new_with_window_bits(false, 15), input);
    match (&whole, reference) {
        ((got, None), Ok(bytes)) => {
            assert!(bytes.len() <= limits.max_message);
            assert_eq!(got, &[Received::Binary(bytes)]);
        }
        ((_, Some(ProtocolError::MessageTooBig)), Ok(bytes)) => assert!(bytes.len() > limits.max_message),
        // The limit may come before zlib finds the data bad.
        ((_, Some(ProtocolError::MessageTooBig | ProtocolError::BadCompressedData)), Err(_)) => {}
        (got, reference) => panic!("decoded {got:?}, zlib gives {reference:?}"),
    }
}

fn read_request<'a>(
    proxy: bool,
    api: bool,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let limits = HandshakeLimits { max_head: 1024, max_headers: 16, max_target: 256 };
    let mut reader = RequestReader::new(limits, proxy, api.then_some(512));
    let mut fed = 0;
    for piece in pieces {
        match reader.feed(piece)? {
            None => fed += piece.len(),
            Some((request, used)) => {
                assert!(used <= piece.len());
                return Ok(Some((request, fed + used)));
            }
        }
    }
    Ok(None)
}

/// The upgrade-request reader: chunking does not change the outcome, which is
/// a request with where it ended, or a refusal with an HTTP status.
pub fn handshake(data: &[u8]) {
    let (seed, input) = seed_and_input(data);
    // One seed bit asks for a PROXY protocol header first; another reads as
    // the operator's port with the server API on, whose calls carry bodies.
    let (proxy, api) = (seed & 2 != 0, seed & 4 != 0);
    let whole = read_request(proxy, api, [input]);
    assert_eq!(whole, read_request(proxy, api, chunks(seed, input)));
    assert_eq!(whole, read_request(proxy, api, input.chunks(1)));
    match whole {
        Err(e) => assert!(matches!(e.http_status(), 400 | 404 | 405 | 414 | 426 | 431)),
        Ok(Some((Request::Api(call), end))) => {
            assert!(end <= input.len() && call.path.starts_with("/api/"));
            if let Framing::Length(n) = call.framing {
                assert_eq!(call.body.len(), n, "a call is read with its whole body");
            }
        }
        Ok(Some((Request::Upgrade(Upgrade { target, accept, .. }), end))) => {
            assert!(end <= input.len());
            assert!(target.starts_with(b"/"));
            assert_eq!(accept.len(), 28);
        }
        Ok(_) => {}
    }
}

/// A target as the fuzzer picks it.
#[derive(Arbitrary, Debug, Clone)]
pub enum FuzzTarget {
    /// `*`.
    All,
    /// A canonical id, 1 to 8.
    Id(u8),
    /// Any token at all.
    Token(String),
}

/// One step of a relay session.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// A client connects to room `room % 3` with a valid upgrade.
    Connect {
        /// Which of three rooms.
        room: u8,
    },
    /// A client connects and sends these bytes as its request.
    ConnectRaw {
        /// Whatever the fuzzer likes.
        bytes: Vec<u8>,
    },
    /// A well-formed relay message from a client.
    Send {
        /// Which client (modulo the count).
        client: u8,
        /// Where to.
        target: FuzzTarget,
        /// Binary rather than text.
        binary: bool,
        /// What follows the target.
        body: Vec<u8>,
        /// Split into this many fragments (at least one).
        fragments: u8,
    },
    /// A ping from a client.
    Ping {
        /// Which client.
        client: u8,
        /// Its payload (cut to 125 bytes).
        payload: Vec<u8>,
    },
    /// Raw bytes from a client.
    Raw {
        /// Which client.
        client: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A valid frame with one byte flipped.
    Mutated {
        /// Which client.
        client: u8,
        /// The message.
        body: Vec<u8>,
        /// Which byte.
        at: u16,
        /// How it is flipped.
        xor: u8,
    },
    /// A close frame from a client.
    CloseFrame {
        /// Which client.
        client: u8,
        /// The code it carries.
        code: u16,
    },
    /// A client's transport drops.
    Drop {
        /// Which client.
        client: u8,
    },
    /// A client ends its stream (FIN) and goes on reading.
    Eof {
        /// Which client.
        client: u8,
    },
    /// Time passes.
    Advance {
        /// By this many milliseconds.
        millis: u16,
    },
    /// The relay shuts down.
    Shutdown,
    /// A client stops reading, or starts again.
    Stall {
        /// Which client.
        client: u8,
    },
    /// The verdict on the oldest upgrade waiting for one (with admission on).
    Verdict {
        /// Let it in, or keep it out for the `refusal`-th reason.
        accept: bool,
        /// Which refusal.
        refusal: u8,
        /// The subject it is let in as.
        subject: Option<String>,
    },
    /// The relay hands everything over to a new relay, as a takeover does,
    /// which carries on in its place.
    Handover,
    /// A client connects to room `room % 3` offering session key `key % 3`.
    ConnectSession {
        /// Which of three rooms.
        room: u8,
        /// Which of three keys.
        key: u8,
    },
    /// A new connection offers a seated client's session key, for its room:
    /// it takes the seat back (a parked one, or a live one it replaces).
    Resume {
        /// Which client.
        client: u8,
        /// The new connection offers permessage-deflate.
        deflate: bool,
    },
    /// A client connects to room `room % 3` offering permessage-deflate, one
    /// of a few offers.
    ConnectDeflate {
        /// Which of three rooms.
        room: u8,
        /// Which of [`OFFERS`].
        offer: u8,
    },
    /// A well-formed relay message from a client, compressed if it offered
    /// permessage-deflate (plain otherwise), with RSV1 on the first fragment.
    SendCompressed {
        /// Which client (modulo the count).
        client: u8,
        /// Where to.
        target: FuzzTarget,
        /// Binary rather than text.
        binary: bool,
        /// What follows the target.
        body: Vec<u8>,
        /// Split into this many fragments (at least one).
        fragments: u8,
    },
    /// The server API publishes into one of the rooms, as id 0.
    Publish {
        /// Which of the rooms.
        room: u8,
        /// To everyone (`None`) or to an id, 1 to 8.
        to: Option<u8>,
        /// Binary rather than text.
        binary: bool,
        /// What follows `0 `.
        body: Vec<u8>,
    },
}

/// The sender, the clients that must hear it, and what they must hear.
type Expected = (usize, Vec<usize>, Option<Received>);

const ROOMS: [&str; 3] = ["/ws-relay/a", "/ws-relay/a?game=2", "/b"];

/// What the fuzz oracle knows of one client, beside what the harness records.
#[derive(Debug)]
struct Client {
    conn: ConnId,
    /// Entries of its inbox already checked.
    seen: usize,
    id: Option<u64>,
    peers: BTreeSet<u64>,
    /// Sent bytes the relay may not read as the harness meant, so its messages can't be predicted.
    tainted: bool,
    /// Which of [`KEYS`] it offered as its session key.
    offered: Option<usize>,
    /// Which of [`KEYS`] its seat holds: the key it offered, if no seated
    /// client held that key when it joined.
    key: Option<usize>,
    /// While parked: the messages its seat must keep, in order; `None` once
    /// they can no longer be known (it had stopped reading before).
    kept: Option<Vec<Received>>,
    /// Right after a resume: the messages the new connection must be given.
    resumed: Option<Vec<Received>>,
    /// Its compressor, if it offered permessage-deflate (which the relay,
    /// with deflate on, always takes).
    deflater: Option<Deflater>,
}

/// permessage-deflate offers the fuzzer's clients make, and the window bits
/// and context takeover their compressors use by them.
const OFFERS: [(&str, u8, bool); 5] = [
    ("permessage-deflate; client_max_window_bits", 15, true),
    ("permessage-deflate; client_no_context_takeover", 15, false),
    ("permessage-deflate; server_max_window_bits=9; client_max_window_bits=10", 10, true),
    // zlib cannot compress with 8 bits: the relay sends this one plain.
    ("permessage-deflate; server_max_window_bits=8", 15, true),
    ("permessage-deflate; server_max_window_bits=12; client_no_context_takeover; client_max_window_bits=9", 9, false),
];

/// Session keys the fuzzer's clients offer: few, so sessions meet.
const KEYS: [&str; 3] = ["session-key-number-one", "session-key-number-two", "session-key-number-3--"];

/// A whole relay session driven by fuzzer-chosen operations through the
/// shared harness ([`Sim`]), checking on every step: every byte to a client
/// parses as a valid HTTP response then server frames; each client's first
/// message is `self`; the `join` and `quit` notices it hears track the room's
/// real membership; a message reaches exactly the clients it names, with the
/// sender's id; nothing is queued for a connection after its `Close`; the
/// core's own output bound holds for every upgraded client, and one that
/// stops reading is cut off once it would pass it, and its room hears it quit.
/// A handover to a new relay may come at any step: every rule above holds
/// across it, and the new relay's state, exported again, is the old one's.
/// Clients may hold resumable sessions: one whose transport ends keeps its
/// seat, its room hears nothing, and a connection resuming it is told its id
/// and given exactly the messages sent to it meanwhile, in order; or the
/// window passes and its room hears it quit.
pub fn session(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(admission) = bool::arbitrary(&mut u) else { return };
    let Ok(ops) = Vec::<Op>::arbitrary(&mut u) else { return };
    let message = MessageLimits { max_message: 2048, max_fragments: 8 };
    let capacity = Capacity { max_room_clients: 8, ..Config::DEFAULT.capacity };
    let config = Config {
        message,
        capacity,
        ping_interval: Duration::from_secs(2),
        ping_timeout: Duration::from_secs(2),
        close_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(1),
        admission,
        // Only clients that offer it get it; the others see the relay as before.
        deflate: Some(crate::Deflate { min_size: 16 }),
        ..Config::DEFAULT
    };
    // The smallest bound the configuration allows, so stalled clients reach it.
    let config = Config { max_pending: config.min_pending(), ..config };
    let mut fuzz = Fuzz { sim: Sim::new(config), clients: Vec::new() };
    for op in ops.into_iter().take(64) {
        fuzz.step(op);
    }
}

struct Fuzz {
    sim: Sim,
    clients: Vec<Client>,
}

impl Fuzz {
    fn pick(&self, client: u8) -> Option<usize> {
        (!self.clients.is_empty()).then(|| client as usize % self.clients.len())
    }

    fn step(&mut self, op: Op) {
        let mut expect = None;
        match op {
            Op::Connect { room } => {
                let room = room as usize % ROOMS.len();
                self.connect(true, &upgrade_request(ROOMS[room], "fuzz"));
            }
            Op::ConnectRaw { bytes } => self.connect(false, &bytes),
            Op::Send { client, target, binary, body, fragments } => {
                let Some(i) = self.pick(client) else { return };
                expect = self.send(i, target, binary, body, fragments, false);
            }
            Op::SendCompressed { client, target, binary, body, fragments } => {
                let Some(i) = self.pick(client) else { return };
                expect = self.send(i, target, binary, body, fragments, true);
            }
            Op::ConnectDeflate { room, offer } => {
                let room = ROOMS[room as usize % ROOMS.len()];
                let (offer, bits, takeover) = OFFERS[usize::from(offer) % OFFERS.len()];
                self.connect(true, &upgrade_request_offering(room, "fuzz", offer));
                if let Some(c) = self.clients.last_mut() {
                    c.deflater = Some(Deflater::new(bits, takeover));
                }
            }
            Op::Ping { client, mut payload } => {
                let Some(i) = self.pick(client) else { return };
                payload.truncate(125);
                let mut wire = Vec::new();
                masked_frame(&mut wire, true, OpCode::Ping, &payload, [1, 2, 3, 4]);
                self.feed(i, &wire, false);
            }
            Op::Raw { client, bytes } => {
                let Some(i) = self.pick(client) else { return };
                self.feed(i, &bytes, true);
            }
            Op::Mutated { client, body, at, xor } => {
                let Some(i) = self.pick(client) else { return };
                let mut wire = Vec::new();
                masked_frame(&mut wire, true, OpCode::Text, &body, [9, 9, 9, 9]);
                let at = at as usize % wire.len();
                wire[at] ^= xor;
                self.feed(i, &wire, true);
            }
            Op::CloseFrame { client, code } => {
                let Some(i) = self.pick(client) else { return };
                let mut wire = Vec::new();
                masked_frame(&mut wire, true, OpCode::Close, &code.to_be_bytes(), [5, 6, 7, 8]);
                self.feed(i, &wire, true);
            }
            Op::Drop { client } => {
                let Some(i) = self.pick(client) else { return };
                self.clients[i].tainted = true;
                self.sim.drop_transport(self.clients[i].conn);
            }
            Op::Eof { client } => {
                let Some(i) = self.pick(client) else { return };
                self.clients[i].tainted = true;
                self.sim.eof(self.clients[i].conn);
            }
            Op::Advance { millis } => self.sim.advance(Duration::from_millis(u64::from(millis))),
            Op::Shutdown => {
                self.sim.relay.shutdown(self.sim.now);
                self.sim.drain();
            }
            Op::Stall { client } => {
                let Some(i) = self.pick(client) else { return };
                let conn = self.clients[i].conn;
                let stalled = !self.sim.peer(conn).stalled;
                self.sim.stall(conn, stalled);
            }
            Op::Verdict { accept, refusal, subject } => {
                let Some(&(conn, _)) = self.sim.admissions.first() else { return };
                let verdict = if accept {
                    crate::Verdict::Accept { subject }
                } else {
                    crate::Verdict::Refuse(crate::Refusal::ALL[usize::from(refusal) % crate::Refusal::COUNT])
                };
                self.sim.admit(conn, verdict);
            }
            Op::Handover => self.sim.handover(),
            Op::ConnectSession { room, key } => {
                let room = ROOMS[room as usize % ROOMS.len()];
                let key = key as usize % KEYS.len();
                let relay = &self.sim.relay;
                // Two upgrades with one key still waiting to join would race for one seat.
                let waiting = |c: &Client| self.sim.closed(c.conn).is_none() && c.id.is_none();
                if self.clients.iter().any(|c| c.offered == Some(key) && waiting(c)) {
                    return;
                }
                let holder = (self.clients.iter().enumerate())
                    .find(|(_, c)| c.key == Some(key) && relay.member(c.conn).is_some())
                    .map(|(j, c)| (j, relay.member(c.conn).is_some_and(|(r, _)| r == room.as_bytes())));
                match holder {
                    // The key's seat is in this room: this is its resume.
                    Some((j, true)) => self.resume(j, key == 2),
                    // A fresh join; whether its key makes a session is settled when it joins.
                    _ => {
                        // The third key's clients offer permessage-deflate too.
                        self.connect(true, &with_session(room, KEYS[key], key == 2));
                        if let Some(c) = self.clients.last_mut() {
                            c.offered = Some(key);
                            c.deflater = (key == 2).then(|| Deflater::new(15, true));
                        }
                    }
                }
            }
            Op::Resume { client, deflate } => {
                if let Some(i) = self.pick(client) {
                    self.resume(i, deflate);
                }
            }
            Op::Publish { room, to, binary, body } => {
                let room = ROOMS[usize::from(room) % ROOMS.len()];
                let to = to.map_or(To::All, |n| To::Id(u64::from(1 + n % 8)));
                let body = if binary { body } else { String::from_utf8_lossy(&body).into_owned().into_bytes() };
                expect = Some(self.published(room, to, binary, &body));
                let request = ApiRequest::Publish { room: room.as_bytes().to_vec(), to, data: body, binary };
                self.sim.relay.api(&request, self.sim.now);
                self.sim.drain();
            }
        }
        self.check(expect);
    }

    /// Client `i` sends `<target> <body>`, compressed if asked and it can;
    /// what it must reach, when that can be known.
    fn send(
        &mut self,
        i: usize,
        target: FuzzTarget,
        binary: bool,
        mut body: Vec<u8>,
        fragments: u8,
        compress: bool,
    ) -> Option<Expected> {
        // Binary goes byte for byte, whatever it holds. A text body gets a leading
        // letter, which keeps it non-empty, unstripped, and clear of the relay's types.
        if !binary {
            body.insert(0, b'm');
        }
        let body = if binary { body } else { String::from_utf8_lossy(&body).into_owned().into_bytes() };
        let token = match &target {
            FuzzTarget::All => "*".to_owned(),
            FuzzTarget::Id(n) => (1 + n % 8).to_string(),
            FuzzTarget::Token(t) => t.clone(),
        };
        let mut msg = token.into_bytes();
        msg.push(b' ');
        msg.extend_from_slice(&body);
        let wire = match self.clients[i].deflater.as_mut().filter(|_| compress) {
            Some(deflater) => fragment(&deflater.compress(&msg), binary, fragments, i as u8, true),
            None => fragment(&msg, binary, fragments, i as u8, false),
        };
        let mut expect = None;
        if !matches!(target, FuzzTarget::Token(_)) && !self.clients[i].tainted {
            expect = self.expected(i, &target, binary, &body);
        }
        let tainted = matches!(target, FuzzTarget::Token(_));
        self.feed(i, &wire, tainted);
        expect
    }

    fn feed(&mut self, i: usize, bytes: &[u8], tainted: bool) {
        let c = &mut self.clients[i];
        c.tainted |= tainted;
        self.sim.feed(c.conn, bytes);
    }

    /// A new connection with client `client`'s key takes its seat, if it has
    /// a key and a seat and the relay takes upgrades; it offers
    /// permessage-deflate if `deflate`, whatever the old one agreed to.
    fn resume(&mut self, i: usize, deflate: bool) {
        let relay = &self.sim.relay;
        let (Some(key), Some((room, id))) = (self.clients[i].key, relay.member(self.clients[i].conn)) else { return };
        if relay.is_shutting_down() || self.clients.len() >= 24 {
            return;
        }
        let room = String::from_utf8(room.to_vec()).expect("the fuzzer's rooms are text");
        let old = self.clients[i].conn;
        let replaced = self.sim.closed(old).is_none();
        let conn = self.sim.connect_raw(&with_session(&room, KEYS[key], deflate));
        if let Some(at) = self.sim.admissions.iter().position(|(c, _)| *c == conn) {
            self.sim.admissions.remove(at);
            self.sim.admit(conn, crate::Verdict::Accept { subject: None });
        }
        let c = &mut self.clients[i];
        let inbox = &self.sim.peer(conn).inbox;
        assert_eq!(inbox.first(), Some(&Received::Http(101)), "a resume is upgraded");
        assert_eq!(inbox.get(1), Some(&Received::Text(format!("{id} resume"))), "then told it resumed its id");
        c.resumed = if replaced { None } else { c.kept.take() };
        c.kept = Some(Vec::new());
        c.conn = conn;
        c.seen = 2;
        // A new connection, a new negotiation: its context starts afresh.
        c.deflater = deflate.then(|| Deflater::new(15, true));
        if replaced {
            // The connection it replaced lives on until its close: a client of its own now.
            let seen = self.sim.peer(old).inbox.len();
            self.clients.push(Client {
                conn: old,
                seen,
                id: None,
                peers: BTreeSet::new(),
                tainted: true,
                offered: None,
                key: None,
                kept: None,
                resumed: None,
                deflater: None,
            });
        }
    }

    fn connect(&mut self, valid: bool, request: &[u8]) {
        if self.clients.len() >= 24 {
            return;
        }
        let conn = self.sim.connect_raw(request);
        self.clients.push(Client {
            conn,
            seen: 0,
            id: None,
            peers: BTreeSet::new(),
            tainted: !valid,
            offered: None,
            key: None,
            kept: Some(Vec::new()),
            resumed: None,
            deflater: None,
        });
    }

    /// Who must receive what when the server publishes `body` to `to` in `room`.
    fn published(&self, room: &str, to: To, binary: bool, body: &[u8]) -> Expected {
        let relay = &self.sim.relay;
        let recipients = (self.clients.iter().enumerate())
            .filter(|(_, c)| {
                relay.member(c.conn).is_some_and(|(r, id)| r == room.as_bytes() && (to == To::All || to == To::Id(id)))
            })
            .map(|(j, _)| j)
            .collect();
        let mut payload = b"0 ".to_vec();
        payload.extend_from_slice(body);
        let message = if binary {
            Received::Binary(payload)
        } else {
            Received::Text(String::from_utf8(payload).expect("text bodies are made valid UTF-8"))
        };
        (usize::MAX, recipients, Some(message))
    }

    /// Who must receive what when client `i` sends a well-formed message.
    fn expected(&self, i: usize, target: &FuzzTarget, binary: bool, body: &[u8]) -> Option<Expected> {
        let relay = &self.sim.relay;
        let Some((room, id)) = relay.member(self.clients[i].conn) else {
            // A client that is closing, or not upgraded, is not heard.
            return Some((i, Vec::new(), None));
        };
        let by_id: BTreeMap<u64, usize> = (self.clients.iter().enumerate())
            .filter_map(|(j, c)| relay.member(c.conn).filter(|(r, _)| *r == room).map(|(_, id)| (id, j)))
            .collect();
        let recipients = match target {
            FuzzTarget::All => by_id.iter().filter(|(&k, _)| k != id).map(|(_, &j)| j).collect(),
            FuzzTarget::Id(n) => by_id.get(&u64::from(1 + n % 8)).into_iter().copied().collect(),
            FuzzTarget::Token(_) => return None,
        };
        let mut payload = format!("{id} ").into_bytes();
        payload.extend_from_slice(body);
        let message = if binary {
            Received::Binary(payload)
        } else {
            Received::Text(String::from_utf8(payload).expect("text bodies are made valid UTF-8"))
        };
        Some((i, recipients, Some(message)))
    }

    fn check(&mut self, expect: Option<Expected>) {
        let unjoined: Vec<usize> = (0..self.clients.len()).filter(|&i| self.clients[i].id.is_none()).collect();
        self.check_clients(expect);
        // A key makes a session when no seated client holds it as the client joins.
        for i in unjoined {
            let Some(key) = self.clients[i].offered.filter(|_| self.clients[i].id.is_some()) else { continue };
            let relay = &self.sim.relay;
            let held = (self.clients.iter().enumerate())
                .any(|(j, c)| j != i && c.key == Some(key) && relay.member(c.conn).is_some());
            if !held {
                self.clients[i].key = Some(key);
            }
        }
    }

    fn check_clients(&mut self, expect: Option<Expected>) {
        let relay = &self.sim.relay;
        // A parked session has had its Close, and its seat waits for it.
        let parked = |c: &Client| self.sim.closed(c.conn).is_some() && relay.member(c.conn).is_some();
        let held = (self.clients.iter())
            .filter(|c| self.sim.closed(c.conn).is_none() || !relay.pending(c.conn).is_empty() || parked(c))
            .count();
        assert_eq!(relay.connections(), held, "the core holds connections nobody has, or lost some");
        let bound = relay.config().max_pending;
        for (i, c) in self.clients.iter_mut().enumerate() {
            let peer = self.sim.peer(c.conn);
            let upgraded = peer.raw.starts_with(b"HTTP/1.1 101 ");
            let pending = relay.pending(c.conn).len();
            assert!(!upgraded || pending <= bound, "client {i}: {pending} bytes queued, over the bound {bound}");
            if peer.closed == Some(CloseReason::SlowConsumer) {
                // It lost bytes on purpose, and the core has let it go.
                continue;
            }
            if self.sim.closed(c.conn).is_some() && relay.member(c.conn).is_some() {
                // Parked: what it is sent waits for its resume, in order.
                if let (Some(kept), Some((_, recipients, Some(message)))) = (&mut c.kept, &expect) {
                    if recipients.contains(&i) {
                        kept.push(message.clone());
                    }
                }
                continue;
            }
            if peer.stalled {
                // Nothing reaches it; its inbox is checked once it reads again, and
                // what a seat keeps for it if it drops meanwhile cannot be known.
                c.kept = None;
                continue;
            }
            let mut data = Vec::new();
            for r in &peer.inbox[c.seen..] {
                let (source, rest) = match r {
                    Received::Text(t) => match t.split_once(' ') {
                        Some((s, rest)) => (s.as_bytes().to_vec(), rest.as_bytes().to_vec()),
                        None => panic!("relay text without a space: {t:?}"),
                    },
                    Received::Binary(b) => {
                        let space = b.iter().position(|&x| x == b' ').expect("binary relay message has a source");
                        (b[..space].to_vec(), b[space + 1..].to_vec())
                    }
                    _ => continue,
                };
                let source: u64 =
                    std::str::from_utf8(&source).ok().and_then(|s| s.parse().ok()).expect("numeric source");
                match (c.id, &rest[..], matches!(r, Received::Text(_))) {
                    (None, b"self", true) => c.id = Some(source),
                    (None, _, _) => panic!("first message was not self: {r:?}"),
                    (Some(_), b"join", true) => assert!(c.peers.insert(source), "{source} joined twice"),
                    (Some(_), b"quit", true) => assert!(c.peers.remove(&source), "{source} quit but was not there"),
                    (Some(me), _, _) => {
                        // Id 0 is the server, which no client can be or forge.
                        let known = source == me || source == 0 || c.peers.contains(&source);
                        assert!(known, "message from {source}, not in the room");
                        data.push(r.clone());
                    }
                }
            }
            c.seen = peer.inbox.len();
            // Reading everything, it has nothing its seat would keep.
            c.kept = Some(Vec::new());
            if let Some(resumed) = c.resumed.take() {
                assert_eq!(data, resumed, "client {i}: what its seat kept, after its resume");
            }
            // Only one client sent this step, so everyone else must have heard exactly what it said.
            if let Some((sender, recipients, message)) = &expect {
                let want: Vec<Received> = message.iter().filter(|_| recipients.contains(&i)).cloned().collect();
                assert_eq!(data, want, "client {i} after a message from client {sender}");
            }
            if let Some((room, me)) = relay.member(c.conn) {
                assert_eq!(Some(me), c.id, "client {i} was told another id");
                let others: BTreeSet<u64> = relay.members(room).into_iter().filter(|&m| m != me).collect();
                assert_eq!(c.peers, others, "client {i} (id {me}) has a wrong view of its room");
            }
        }
    }
}

/// An upgrade to `room` offering session `key`, and permessage-deflate if `deflate`.
fn with_session(room: &str, key: &str, deflate: bool) -> Vec<u8> {
    let request = match deflate {
        true => upgrade_request_offering(room, "fuzz", OFFERS[0].0),
        false => upgrade_request(room, "fuzz"),
    };
    let request = String::from_utf8(request).expect("the request is text");
    let protocols = format!("\r\nSec-WebSocket-Protocol: ws-relay, ws-relay.session.{key}\r\n\r\n");
    request.replace("\r\n\r\n", &protocols).into_bytes()
}

/// A relay message as `fragments` masked frames; `compressed`, a
/// permessage-deflate payload, sets RSV1 on the first (RFC 7692 §6.1).
fn fragment(msg: &[u8], binary: bool, fragments: u8, key: u8, compressed: bool) -> Vec<u8> {
    let n = usize::from(fragments.clamp(1, 8));
    let size = msg.len().div_ceil(n).max(1);
    let pieces: Vec<&[u8]> = if msg.is_empty() { vec![&[][..]] } else { msg.chunks(size).collect() };
    let mut wire = Vec::new();
    for (k, piece) in pieces.iter().enumerate() {
        let opcode = match (k, binary) {
            (0, true) => OpCode::Binary,
            (0, false) => OpCode::Text,
            _ => OpCode::Continuation,
        };
        let rsv1 = compressed && k == 0;
        masked_frame_rsv1(&mut wire, k + 1 == pieces.len(), rsv1, opcode, piece, [key, 0x5A, key ^ 0xFF, 0x11]);
    }
    wire
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays every file under `fuzz/corpus/<target>` and `fuzz/regressions/<target>`.
    fn replay(target: &str, body: fn(&[u8])) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut count = 0;
        for dir in [root.join("corpus").join(target), root.join("regressions").join(target)] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).expect("corpus file is readable");
                body(&data);
                count += 1;
            }
        }
        assert!(count > 0, "no corpus for {target}");
    }

    #[test]
    fn frame_decoder_corpus() {
        replay("frame_decoder", super::frame_decoder);
    }

    #[test]
    fn handshake_corpus() {
        replay("handshake", super::handshake);
    }

    #[test]
    fn session_corpus() {
        replay("session", super::session);
    }
}
