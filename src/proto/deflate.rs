//! permessage-deflate (RFC 7692) as pure computation: which offer in a
//! `Sec-WebSocket-Extensions` header the relay takes, the answer it gives,
//! each client's inflater, and the relay's compressors.
//!
//! The relay always answers with `server_no_context_takeover` (RFC 7692
//! §7.1.1.1 lets a server add it unasked), so every message it compresses
//! stands alone: a broadcast is compressed once per window size and the same
//! bytes go to every recipient that agreed to that window. What a client
//! sends is inflated with the context it asked for: kept from message to
//! message unless it offered `client_no_context_takeover`.

use std::borrow::Cow;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::ProtocolError;
use super::frame::{encode_frame, FrameHeader, OpCode};
use super::handshake::is_tchar;
use super::state::{ImportError, Reader, Writer};

/// The four bytes a sync flush ends with, which a sender removes from a
/// compressed message and a receiver appends back (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// zlib's compression level for outgoing messages. Each message is
/// compressed on its own, so each pays for zlib-rs's reset of its hash table;
/// at level 1 (fast, static Huffman codes) a 200-byte JSON report costs
/// about 2.7 µs and shrinks by a fifth, at level 6 about 7 µs for a third.
/// Latency comes first.
const LEVEL: u32 = 1;

/// A compressed message's payload may be this much larger than the message
/// limit: DEFLATE's worst case on incompressible data is a few bytes per
/// block, and fixed-Huffman literals cost at most 9 bits for 8.
pub(crate) fn compressed_limit(max_message: usize) -> usize {
    max_message.saturating_add(max_message / 8).saturating_add(64)
}

/// An inflater's context as zlib-rs 0.6 allocates it: its state and a
/// 32 KiB window, whatever the window bits (measured, for `/metrics`).
const INFLATE_MEMORY: usize = 47_552;

/// A compressor's context as zlib-rs 0.6 allocates it, less its window and
/// hash chain (4 bytes per window byte), at any level (measured).
const DEFLATE_MEMORY: usize = 248_960;

/// A buffer that held more than this gives its memory back after its message.
const KEEP_CAPACITY: usize = 4 * 1024;

/// The longest `Sec-WebSocket-Extensions` line [`write_response`] writes.
pub(crate) const MAX_RESPONSE: usize = 160;

/// What a client and the relay agreed to, from the client's offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The client offered `client_no_context_takeover`: it compresses every
    /// message on its own, so its inflater starts afresh for each.
    pub(crate) client_no_context_takeover: bool,
    /// `client_max_window_bits` with a value, as offered (8 to 15): the
    /// client's window, echoed in the answer.
    pub(crate) client_max_window_bits: Option<u8>,
    /// `server_max_window_bits`, as offered: the largest window the relay may
    /// compress with, echoed in the answer.
    pub(crate) server_max_window_bits: Option<u8>,
}

impl Agreed {
    /// Which of the relay's compressions this client takes: the window bits
    /// (9 to 15), or 0 for none. zlib cannot compress with a 256-byte window
    /// (8 bits), so a client that asks for one is sent plain frames, which
    /// RFC 7692 always allows (RSV1 clear: not compressed).
    pub(crate) fn class(&self) -> u8 {
        match self.server_max_window_bits.unwrap_or(15) {
            8 => 0,
            bits => bits,
        }
    }

    /// How far back the client's messages may reach: its window.
    fn window(&self) -> usize {
        1 << self.client_max_window_bits.unwrap_or(15)
    }

    pub(crate) fn save(&self, w: &mut Writer) {
        w.bool(self.client_no_context_takeover);
        w.opt(self.client_max_window_bits, Writer::u8);
        w.opt(self.server_max_window_bits, Writer::u8);
    }

    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        let client_no_context_takeover = r.bool()?;
        let bits = |r: &mut Reader<'_>| match r.u8()? {
            b @ 8..=15 => Ok(b),
            _ => Err(ImportError::Corrupt("window bits outside 8 to 15")),
        };
        Ok(Self {
            client_no_context_takeover,
            client_max_window_bits: r.opt(bits)?,
            server_max_window_bits: r.opt(bits)?,
        })
    }
}

/// A `Sec-WebSocket-Extensions` header that does not follow the grammar of
/// RFC 6455 §9.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The first `permessage-deflate` offer in `values` (every
/// `Sec-WebSocket-Extensions` header of the request, in order) that the
/// relay accepts, if any.
///
/// An offer is declined, and the next one considered, when RFC 7692 §7 says
/// a server must decline it: a parameter not defined for an offer, a
/// parameter with an invalid value, or the same parameter twice. A header
/// that is not an extension list at all (RFC 6455 §9.1) is a request that
/// does not match the handshake RFC 6455 §4.2.1 describes: the caller answers
/// it with 400.
pub(crate) fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<Agreed>, Malformed> {
    let mut agreed = None;
    for value in values {
        parse_list(value, &mut |name, params| {
            if agreed.is_none() && name.eq_ignore_ascii_case(b"permessage-deflate") {
                agreed = accept(params);
            }
        })?;
    }
    Ok(agreed)
}

/// A parameter's name and value, unquoted.
type Param<'a> = (&'a [u8], Option<Cow<'a, [u8]>>);

/// What the relay agrees to for one `permessage-deflate` offer, or `None`
/// to decline it (RFC 7692 §7).
fn accept(params: &[Param<'_>]) -> Option<Agreed> {
    let mut agreed = Agreed::default();
    let mut seen = [false; 4];
    for (name, value) in params {
        let value = value.as_deref();
        let (index, valid) = match *name {
            // Asked of the relay, which never takes its context over anyway.
            b"server_no_context_takeover" => (0, value.is_none()),
            b"client_no_context_takeover" => {
                agreed.client_no_context_takeover = true;
                (1, value.is_none())
            }
            // §7.1.2.1: a value is required.
            b"server_max_window_bits" => {
                agreed.server_max_window_bits = value.and_then(window_bits);
                (2, agreed.server_max_window_bits.is_some())
            }
            // §7.1.2.2: the value may be left out ("I can limit my window").
            b"client_max_window_bits" => {
                agreed.client_max_window_bits = value.and_then(window_bits);
                (3, value.is_none() || agreed.client_max_window_bits.is_some())
            }
            // §7: a parameter not defined for use in an offer.
            _ => return None,
        };
        // §7: an invalid value, or the same parameter twice.
        if !valid || std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(agreed)
}

/// RFC 7692 §7.1.2: a decimal integer from 8 to 15 without leading zeros.
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// Calls `each` with every extension in `value`, a comma-separated
/// extension list (RFC 6455 §9.1, with the implied whitespace of RFC 2616's
/// lists and the empty elements RFC 9110 §5.6.1 asks recipients to accept):
///
/// ```text
/// extension-list = 1#extension
/// extension = extension-token *( ";" extension-param )
/// extension-param = token [ "=" (token | quoted-string) ]
/// ```
///
/// A quoted value must be a token once unescaped (RFC 6455 §9.1).
fn parse_list<'a>(value: &'a [u8], each: &mut dyn FnMut(&'a [u8], &[Param<'a>])) -> Result<(), Malformed> {
    let mut at = 0;
    let mut params = Vec::new();
    let mut any = false;
    loop {
        skip_space(value, &mut at);
        match value.get(at) {
            None if any => return Ok(()),
            None => return Err(Malformed),
            Some(b',') => {
                at += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = token(value, &mut at).ok_or(Malformed)?;
        params.clear();
        loop {
            skip_space(value, &mut at);
            if value.get(at) != Some(&b';') {
                break;
            }
            at += 1;
            skip_space(value, &mut at);
            let param = token(value, &mut at).ok_or(Malformed)?;
            skip_space(value, &mut at);
            let arg = if value.get(at) == Some(&b'=') {
                at += 1;
                skip_space(value, &mut at);
                Some(match value.get(at) {
                    Some(b'"') => quoted_token(value, &mut at)?,
                    _ => Cow::Borrowed(token(value, &mut at).ok_or(Malformed)?),
                })
            } else {
                None
            };
            params.push((param, arg));
        }
        match value.get(at) {
            None | Some(b',') => {}
            Some(_) => return Err(Malformed),
        }
        any = true;
        each(name, &params);
    }
}

fn skip_space(value: &[u8], at: &mut usize) {
    while matches!(value.get(*at), Some(b' ' | b'\t')) {
        *at += 1;
    }
}

fn token<'a>(value: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let start = *at;
    while value.get(*at).is_some_and(|&b| is_tchar(b)) {
        *at += 1;
    }
    (*at > start).then(|| &value[start..*at])
}

/// A quoted-string (RFC 9110 §5.6.4) whose unescaped value is a token.
fn quoted_token<'a>(value: &'a [u8], at: &mut usize) -> Result<Cow<'a, [u8]>, Malformed> {
    *at += 1;
    let mut out = Vec::new();
    loop {
        let b = *value.get(*at).ok_or(Malformed)?;
        *at += 1;
        match b {
            b'"' => break,
            b'\\' => {
                out.push(*value.get(*at).ok_or(Malformed)?);
                *at += 1;
            }
            _ => out.push(b),
        }
    }
    if out.is_empty() || !out.iter().all(|&b| is_tchar(b)) {
        return Err(Malformed);
    }
    Ok(Cow::Owned(out))
}

/// Appends the `Sec-WebSocket-Extensions` header line of the 101 that
/// accepts `agreed`: `server_no_context_takeover` always, and what the
/// client offered echoed back.
pub(crate) fn write_response(agreed: &Agreed, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover");
    if agreed.client_no_context_takeover {
        out.extend_from_slice(b"; client_no_context_takeover");
    }
    if let Some(bits) = agreed.server_max_window_bits {
        out.extend_from_slice(format!("; server_max_window_bits={bits}").as_bytes());
    }
    // §7.1.2.2: only when offered, with a value no larger than the offer's.
    if let Some(bits) = agreed.client_max_window_bits {
        out.extend_from_slice(format!("; client_max_window_bits={bits}").as_bytes());
    }
}

/// The last bytes a client's messages inflated to, as far back as its
/// window reaches: kept while its context carries over from message to
/// message, so a relay that takes the connection over can prime a fresh
/// inflater with them (zlib's window cannot be read out of flate2).
#[derive(Debug, Default)]
struct History {
    /// Up to `size` bytes; once full, a ring whose oldest byte is at `at`.
    buf: Vec<u8>,
    at: usize,
    size: usize,
}

impl History {
    fn push(&mut self, mut bytes: &[u8]) {
        if self.size == 0 {
            return;
        }
        if bytes.len() >= self.size {
            self.buf.clear();
            self.buf.extend_from_slice(&bytes[bytes.len() - self.size..]);
            self.at = 0;
            return;
        }
        if self.buf.capacity() < self.size {
            self.buf.reserve_exact(self.size - self.buf.len());
        }
        let room = self.size - self.buf.len();
        let n = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        while !bytes.is_empty() {
            let n = (self.size - self.at).min(bytes.len());
            self.buf[self.at..self.at + n].copy_from_slice(&bytes[..n]);
            self.at = (self.at + n) % self.size;
            bytes = &bytes[n..];
        }
    }

    /// The bytes, oldest first.
    fn linear(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len());
        out.extend_from_slice(&self.buf[self.at..]);
        out.extend_from_slice(&self.buf[..self.at]);
        out
    }
}

/// One client's inflater: compressed payload in as frames arrive, the
/// message out, checked against the message limit as it grows, so a message
/// that would inflate past it is refused before it is expanded.
#[derive(Debug)]
pub(crate) struct Inflater {
    agreed: Agreed,
    /// zlib's stream, from the client's first compressed message on.
    ctx: Option<Decompress>,
    /// The compressed payload of the message in progress, as it arrived.
    input: Vec<u8>,
    /// How much of `input` has been inflated.
    inflated: usize,
    /// The message's DEFLATE stream ended (a block with BFINAL set): what
    /// follows in the message is not inflated, and the next message starts
    /// a new stream primed with the window.
    ended: bool,
    /// The window, while the client's context carries over.
    history: History,
}

impl Inflater {
    /// An inflater for a client that agreed to `agreed`; it allocates
    /// nothing until the first compressed message.
    pub(crate) fn new(agreed: Agreed) -> Self {
        let size = if agreed.client_no_context_takeover { 0 } else { agreed.window() };
        Self {
            agreed,
            ctx: None,
            input: Vec::new(),
            inflated: 0,
            ended: false,
            history: History { size, ..History::default() },
        }
    }

    /// A compressed message starts.
    pub(crate) fn begin(&mut self) {
        // A 15-bit window inflates whatever window the client compresses with.
        self.ctx.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
    }

    /// Where the compressed payload goes as it arrives.
    pub(crate) fn input(&mut self) -> &mut Vec<u8> {
        &mut self.input
    }

    /// The compressed bytes of the message in progress.
    pub(crate) fn compressed_len(&self) -> usize {
        self.input.len()
    }

    /// Inflates what arrived since the last call, appending to `out`, which
    /// never grows past `max` bytes: past it the message is too big. `check`
    /// sees every piece of output as it comes, before the size is judged or
    /// bad data reported, so the first fault in the message is the one
    /// reported however its frames were cut.
    pub(crate) fn inflate(&mut self, out: &mut Vec<u8>, max: usize, check: Check<'_>) -> Result<(), ProtocolError> {
        let Some(ctx) = self.ctx.as_mut() else { return Ok(()) };
        if self.ended {
            // What follows the stream's last block is not part of the message.
            self.inflated = self.input.len();
            return Ok(());
        }
        let (consumed, ended) = inflate_into(ctx, &self.input[self.inflated..], out, max, check)?;
        self.inflated += consumed;
        self.ended = ended;
        Ok(())
    }

    /// The message's last frame has arrived: inflates the rest with the tail
    /// the sender removed, and keeps the window for the next message, or
    /// forgets it as the client asked.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, max: usize, check: Check<'_>) -> Result<(), ProtocolError> {
        self.input.extend_from_slice(&TAIL);
        self.inflate(out, max, check)?;
        self.history.push(out);
        if let Some(ctx) = self.ctx.as_mut() {
            if self.ended || self.agreed.client_no_context_takeover {
                ctx.reset(false);
                prime(ctx, &self.history)?;
            }
        }
        self.ended = false;
        self.inflated = 0;
        self.input.clear();
        if self.input.capacity() > KEEP_CAPACITY {
            self.input = Vec::new();
        }
        Ok(())
    }

    /// Memory held, for `/metrics`: zlib's context, the window kept, and the
    /// compressed bytes of the message in progress.
    pub(crate) fn memory(&self) -> usize {
        let ctx = if self.ctx.is_some() { INFLATE_MEMORY } else { 0 };
        ctx + self.input.capacity() + self.history.buf.capacity()
    }

    /// The context's state: whether it is live, its window, and the
    /// compressed bytes of the message in progress, from which a new
    /// inflater rebuilds zlib's state in the middle of a message.
    pub(crate) fn save(&self, w: &mut Writer) {
        w.bool(self.ctx.is_some());
        w.bytes(&self.history.linear());
        w.bytes(&self.input);
    }

    /// An inflater for `agreed` where the saved one left off; `inflated` is
    /// what the message in progress has inflated to so far, which the
    /// rebuilt state must give again.
    pub(crate) fn load(r: &mut Reader<'_>, agreed: Agreed, inflated: &[u8], max: usize) -> Result<Self, ImportError> {
        let corrupt = ImportError::Corrupt;
        let live = r.bool()?;
        let window = r.bytes()?;
        let input = r.bytes()?;
        let mut me = Self::new(agreed);
        let orphan = !live && (!window.is_empty() || !input.is_empty());
        if window.len() > me.history.size || orphan {
            return Err(corrupt("an inflater's window past its size, or bytes without a context"));
        }
        me.history.push(window);
        if live {
            me.begin();
            let ctx = me.ctx.as_mut().expect("begin makes the context");
            prime(ctx, &me.history).map_err(|_| corrupt("a window zlib refuses"))?;
            me.input.extend_from_slice(input);
            let mut again = Vec::new();
            me.inflate(&mut again, max, &mut |_| Ok(()))
                .map_err(|_| corrupt("a message in progress that does not inflate"))?;
            if again != inflated {
                return Err(corrupt("a message in progress that inflates to other bytes"));
            }
        }
        Ok(me)
    }
}

/// Primes a fresh context with the window kept, if any.
fn prime(ctx: &mut Decompress, history: &History) -> Result<(), ProtocolError> {
    if !history.buf.is_empty() {
        ctx.set_dictionary(&history.linear()).map_err(|_| ProtocolError::BadCompressedData)?;
    }
    Ok(())
}

/// What inflated output is checked with as it comes (text must be UTF-8).
pub(crate) type Check<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), ProtocolError>;

/// Inflates `input` into `out`, which may not pass `max` bytes, showing
/// `check` each piece of output. Returns how much input was taken and
/// whether the stream ended.
fn inflate_into(
    ctx: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
    check: Check<'_>,
) -> Result<(usize, bool), ProtocolError> {
    let mut consumed = 0;
    loop {
        let start = out.len();
        // Room for what the limit allows and one byte more, which shows a
        // message past it: output never grows further than that.
        let allowed = max.saturating_add(1).saturating_sub(start);
        let room = allowed.min(input.len().saturating_mul(4).max(start).max(1024));
        out.resize(start + room, 0);
        let (before_in, before_out) = (ctx.total_in(), ctx.total_out());
        let status = ctx.decompress(input, &mut out[start..], FlushDecompress::None);
        // The counters move by at most the slices' lengths.
        let taken = (ctx.total_in() - before_in) as usize;
        let produced = (ctx.total_out() - before_out) as usize;
        out.truncate(start + produced);
        check(&out[start..])?;
        let status = status.map_err(|_| ProtocolError::BadCompressedData)?;
        consumed += taken;
        input = &input[taken..];
        if out.len() > max {
            return Err(ProtocolError::MessageTooBig);
        }
        match status {
            Status::StreamEnd => return Ok((consumed, true)),
            // Output full: zlib may hold more, even with its input used up.
            _ if produced == room => {}
            _ if input.is_empty() || (taken == 0 && produced == 0) => return Ok((consumed, false)),
            _ => {}
        }
    }
}

/// One whole compressed message's payload inflated with `ctx`, the tail
/// appended, without a limit: for clients that trust the server.
pub(crate) fn inflate_message(ctx: &mut Decompress, payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut input = Vec::with_capacity(payload.len() + TAIL.len());
    input.extend_from_slice(payload);
    input.extend_from_slice(&TAIL);
    let mut out = Vec::new();
    inflate_into(ctx, &input, &mut out, usize::MAX - 1, &mut |_| Ok(()))?;
    Ok(out)
}

/// The relay's compressors, one per window size a client asked for, each
/// made at its first use. Every message is compressed on its own
/// (`server_no_context_takeover`), so one compression serves every client
/// with that window.
#[derive(Default)]
pub(crate) struct Compressors {
    by_bits: [Option<Compress>; 7],
}

impl std::fmt::Debug for Compressors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live: Vec<usize> = (0..7).filter(|&i| self.by_bits[i].is_some()).map(|i| i + 9).collect();
        write!(f, "Compressors({live:?})")
    }
}

impl Compressors {
    /// Compresses `payload` with a window of `bits` (9 to 15) into `out`,
    /// without the tail (RFC 7692 §7.2.1). False, with `out` empty, if that
    /// would not make it smaller (it is then sent plain), unless `always`.
    pub(crate) fn compress(&mut self, bits: u8, payload: &[u8], out: &mut Vec<u8>, always: bool) -> bool {
        out.clear();
        let slot = &mut self.by_bits[usize::from(bits.clamp(9, 15) - 9)];
        let ctx = slot.get_or_insert_with(|| Compress::new_with_window_bits(Compression::new(LEVEL), false, bits));
        let mut input = payload;
        let ok = loop {
            out.reserve(input.len() / 2 + 64);
            let before = ctx.total_in();
            if ctx.compress_vec(input, out, FlushCompress::Sync).is_err() {
                break false;
            }
            input = &input[(ctx.total_in() - before) as usize..];
            // A sync flush is complete when zlib stops short of the room it had.
            if input.is_empty() && out.len() < out.capacity() {
                break out.ends_with(&TAIL);
            }
        };
        // Each message stands alone: the next starts from an empty window.
        ctx.reset();
        if !ok || (out.len() - TAIL.len() >= payload.len() && !always) {
            out.clear();
            return false;
        }
        out.truncate(out.len() - TAIL.len());
        true
    }

    /// Memory held, for `/metrics`: each compressor's context.
    pub(crate) fn memory(&self) -> usize {
        (0..7).filter(|&i| self.by_bits[i].is_some()).map(|i| DEFLATE_MEMORY + (4 << (i + 9))).sum()
    }
}

/// `frames`, whole server frames, with every compressed one replaced by its
/// plain form: what a session kept for one connection, given to another
/// that did not agree to the same compression.
pub(crate) fn plain_frames(frames: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.len());
    let mut rest = frames;
    let mut ctx = None;
    while let Ok(Some((header, len))) = FrameHeader::parse(rest) {
        let end = len.saturating_add(header.len as usize).min(rest.len());
        let payload = &rest[len..end];
        let mut plain = false;
        if header.rsv1 {
            let ctx = ctx.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
            ctx.reset(false);
            // The relay compressed these itself, each standing alone.
            if let Ok(message) = inflate_message(ctx, payload) {
                let opcode = if header.opcode == OpCode::Binary { OpCode::Binary } else { OpCode::Text };
                encode_frame(&mut out, opcode, &[&message]);
                plain = true;
            }
        }
        if !plain {
            out.extend_from_slice(&rest[..end]);
        }
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(header: &str) -> Result<Option<Agreed>, Malformed> {
        negotiate([header.as_bytes()])
    }

    #[test]
    fn what_browsers_and_libraries_offer_is_taken() {
        let plain = Agreed::default();
        // Chrome, Safari, Python websockets and Node ws offer the first; Firefox the second.
        assert_eq!(offer("permessage-deflate; client_max_window_bits"), Ok(Some(plain)));
        assert_eq!(offer("permessage-deflate"), Ok(Some(plain)));
        let all = offer(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                         server_max_window_bits=10; client_max_window_bits=\"9\"",
        );
        let want = Agreed {
            client_no_context_takeover: true,
            client_max_window_bits: Some(9),
            server_max_window_bits: Some(10),
        };
        assert_eq!(all, Ok(Some(want)));
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=1a",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; x-unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), Ok(None), "{bad}");
            let next = format!("{bad}, permessage-deflate; client_no_context_takeover");
            let want = Agreed { client_no_context_takeover: true, ..Agreed::default() };
            assert_eq!(offer(&next), Ok(Some(want)), "{next}");
        }
    }

    #[test]
    fn what_is_not_an_extension_list_is_malformed() {
        for bad in [
            "",
            " ",
            "permessage-deflate;",
            "permessage-deflate; =1",
            "permessage-deflate; a=",
            "permessage deflate",
            "permessage-deflate; a=\"b c\"",
            "permessage-deflate; a=\"unterminated",
            "permessage-deflate; a=\"\"",
            "\"quoted\"",
            "permessage-deflate; a=b=c",
        ] {
            assert_eq!(offer(bad), Err(Malformed), "{bad:?}");
        }
        assert_eq!(offer(" , permessage-deflate ,, "), Ok(Some(Agreed::default())));
        // Every header counts: a bad one after a good one is still bad.
        assert_eq!(negotiate([&b"permessage-deflate"[..], b";"]), Err(Malformed));
    }

    #[test]
    fn compressed_messages_inflate_back_and_bombs_stop_at_the_limit() {
        let mut compressors = Compressors::default();
        let message = b"{\"x\": 1, \"y\": 2, \"x\": 1, \"y\": 2, \"x\": 1, \"y\": 2, \"x\": 1, \"y\": 2}".repeat(4);
        let mut deflated = Vec::new();
        assert!(compressors.compress(15, &message, &mut deflated, false));
        assert!(deflated.len() < message.len() / 2);
        let mut inflater = Inflater::new(Agreed::default());
        for _ in 0..3 {
            inflater.begin();
            inflater.input().extend_from_slice(&deflated);
            let mut out = Vec::new();
            inflater.inflate(&mut out, 1000, &mut |_| Ok(())).unwrap();
            inflater.finish(&mut out, 1000, &mut |_| Ok(())).unwrap();
            assert_eq!(out, message);
        }
        // Not smaller: sent plain, unless asked for all the same.
        assert!(!compressors.compress(9, b"abc", &mut deflated, false));
        assert!(compressors.compress(9, b"abc", &mut deflated, true) && deflated.len() >= 3);
        // A million zeros in about a kilobyte stop at the limit.
        let mut bomb = Compress::new_with_window_bits(Compression::best(), false, 15);
        let mut zeros = Vec::with_capacity(4096);
        bomb.compress_vec(&vec![0; 1 << 20], &mut zeros, FlushCompress::Sync).unwrap();
        assert!(zeros.len() < 2048);
        let mut inflater = Inflater::new(Agreed::default());
        inflater.begin();
        inflater.input().extend_from_slice(&zeros);
        let mut out = Vec::new();
        assert_eq!(inflater.inflate(&mut out, 4096, &mut |_| Ok(())), Err(ProtocolError::MessageTooBig));
        assert!(out.capacity() <= 4097 + 1024, "{} bytes taken for a 4096-byte limit", out.capacity());
    }

    #[test]
    fn the_history_keeps_the_last_window() {
        let mut h = History { size: 8, ..History::default() };
        h.push(b"abc");
        assert_eq!(h.linear(), b"abc");
        h.push(b"defgh");
        assert_eq!(h.linear(), b"abcdefgh");
        h.push(b"ij");
        assert_eq!(h.linear(), b"cdefghij");
        h.push(b"0123456789");
        assert_eq!(h.linear(), b"23456789");
        h.push(b"x");
        assert_eq!(h.linear(), b"3456789x");
    }
}
