//! The client's side of the wire, for tools and tests that talk to a relay
//! without a WebSocket library: the upgrade request, masked frames out, and a
//! strict parser of what a server sends back. The relay itself never uses it.

use flate2::{Compress, Compression, Decompress, FlushCompress};

use crate::proto::deflate::inflate_message;
use crate::proto::error::ProtocolError;
use crate::proto::frame::apply_mask;
pub use crate::proto::frame::{FrameHeader, OpCode};
use crate::proto::message::parse_close;

/// An upgrade request for `target` (the room), with a fixed RFC 6455 sample key.
pub fn upgrade_request(target: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// An upgrade request for `target` like [`upgrade_request`], with
/// `extensions` as its `Sec-WebSocket-Extensions` header.
pub fn upgrade_request_offering(target: &str, host: &str, extensions: &str) -> Vec<u8> {
    let mut request = upgrade_request(target, host);
    request.truncate(request.len() - 2);
    request.extend_from_slice(format!("Sec-WebSocket-Extensions: {extensions}\r\n\r\n").as_bytes());
    request
}

/// Appends a masked client frame. The caller picks the mask: RFC 6455 wants it
/// unpredictable for browsers, which a relay's own tools do not need.
pub fn masked_frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    masked_frame_rsv1(out, fin, false, opcode, payload, mask);
}

/// Appends a masked client frame with RSV1 as given: set on the first frame
/// of a compressed message (permessage-deflate, RFC 7692 §6).
pub fn masked_frame_rsv1(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    FrameHeader { fin, rsv1, opcode, mask: Some(mask), len: payload.len() as u64 }.encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// A client's side of permessage-deflate: compresses messages as a client
/// would, keeping its window from message to message unless told not to.
#[derive(Debug)]
pub struct Deflater {
    ctx: Compress,
    context_takeover: bool,
}

impl Deflater {
    /// A compressor with a window of `window_bits` (9 to 15) that keeps its
    /// context across messages if `context_takeover`.
    pub fn new(window_bits: u8, context_takeover: bool) -> Self {
        Self { ctx: Compress::new_with_window_bits(Compression::default(), false, window_bits), context_takeover }
    }

    /// `message` as the payload of a compressed message: DEFLATE blocks
    /// ending in a sync flush, whose last four bytes (`00 00 FF FF`) are
    /// removed (RFC 7692 §7.2.1).
    pub fn compress(&mut self, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + 64);
        let mut input = message;
        loop {
            out.reserve(input.len() + 64);
            let before = self.ctx.total_in();
            self.ctx.compress_vec(input, &mut out, FlushCompress::Sync).expect("compressing into a Vec cannot fail");
            input = &input[(self.ctx.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]), "a sync flush ends with an empty stored block");
        out.truncate(out.len() - 4);
        if !self.context_takeover {
            self.ctx.reset();
        }
        out
    }
}

/// A client's side of permessage-deflate for what the server sends, once
/// the 101 accepted it: inflates each compressed message.
#[derive(Debug)]
pub struct Inflater {
    ctx: Decompress,
    /// The server said `server_no_context_takeover`: every message must
    /// inflate on its own, which resetting before each one checks.
    no_context_takeover: bool,
}

impl Inflater {
    /// An inflater with a 32 KiB window; `no_context_takeover` if the 101
    /// said `server_no_context_takeover`.
    pub fn new(no_context_takeover: bool) -> Self {
        Self { ctx: Decompress::new_with_window_bits(false, 15), no_context_takeover }
    }

    /// One whole compressed message's payload, inflated (the tail the sender
    /// removed appended back, RFC 7692 §7.2.2).
    pub fn inflate(&mut self, payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        if self.no_context_takeover {
            self.ctx.reset(false);
        }
        inflate_message(&mut self.ctx, payload)
    }
}

/// What a server sent, as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// The status code of the HTTP response that came first.
    Http(u16),
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame: code and reason, if it carried a code.
    Close(Option<(u16, String)>),
}

/// Why bytes from the server were not what a server may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

#[derive(Debug, PartialEq, Eq)]
enum State {
    Head,
    Body(usize),
    Frames,
    Done,
}

/// Parses server output fed in any chunking: an HTTP response head, then
/// either frames (after 101) or a `Content-Length` body and nothing more.
/// Server frames must be unmasked and unfragmented; nothing may follow a
/// close frame.
#[derive(Debug)]
pub struct ServerParser {
    buf: Vec<u8>,
    state: State,
    /// permessage-deflate, if the 101 accepted it.
    inflate: Option<Inflater>,
    compressed: u64,
}

impl Default for ServerParser {
    fn default() -> Self {
        Self { buf: Vec::new(), state: State::Head, inflate: None, compressed: 0 }
    }
}

impl ServerParser {
    /// Feeds bytes, appending whatever they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Received>) -> Result<(), Malformed> {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            match self.step(at, out) {
                Ok(Some(n)) => at += n,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..at);
        result
    }

    /// True once the server said all it may say: a close frame or a whole non-101 response.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True if the 101 accepted permessage-deflate: compressed messages
    /// (RSV1) are inflated, and refused otherwise.
    pub fn deflate(&self) -> bool {
        self.inflate.is_some()
    }

    /// How many messages arrived compressed.
    pub fn compressed(&self) -> u64 {
        self.compressed
    }

    fn step(&mut self, at: usize, out: &mut Vec<Received>) -> Result<Option<usize>, Malformed> {
        let buf = &self.buf[at..];
        match self.state {
            State::Head => {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
                    return Ok(None);
                };
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(&buf[..end]) {
                    Ok(httparse::Status::Complete(_)) => {}
                    other => return Err(Malformed(format!("bad response head: {other:?}"))),
                }
                let code = response.code.unwrap_or(0);
                out.push(Received::Http(code));
                let extensions =
                    response.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"));
                for h in extensions {
                    let value = std::str::from_utf8(h.value).map_err(|_| Malformed("extensions not text".into()))?;
                    let mut params = value.split(';').map(str::trim);
                    if code != 101 || params.next() != Some("permessage-deflate") || self.inflate.is_some() {
                        return Err(Malformed(format!("unexpected Sec-WebSocket-Extensions: {value}")));
                    }
                    let no_context_takeover = params.any(|p| p == "server_no_context_takeover");
                    self.inflate = Some(Inflater::new(no_context_takeover));
                }
                self.state = if code == 101 {
                    State::Frames
                } else {
                    let length = response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .ok_or_else(|| Malformed(format!("{code} response without Content-Length")))?;
                    State::Body(length)
                };
                Ok(Some(end))
            }
            State::Body(length) => {
                if buf.len() < length {
                    return Ok(None);
                }
                self.state = State::Done;
                Ok(Some(length))
            }
            State::Frames => {
                let (header, len) = match FrameHeader::parse(buf) {
                    Ok(Some(h)) => h,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(Malformed(format!("bad server frame: {e}"))),
                };
                if header.mask.is_some() || !header.fin {
                    return Err(Malformed(format!("server frames must be unmasked and whole: {header:?}")));
                }
                let Some(payload) = usize::try_from(header.len).ok().and_then(|n| buf.get(len..len + n)) else {
                    return Ok(None);
                };
                let frame_len = len + payload.len();
                let inflated;
                let payload = match (&mut self.inflate, header.rsv1) {
                    (_, false) => payload,
                    (None, true) => return Err(Malformed("RSV1 without permessage-deflate".into())),
                    (Some(inflate), true) => {
                        inflated = inflate
                            .inflate(payload)
                            .map_err(|e| Malformed(format!("a compressed message that does not inflate: {e}")))?;
                        self.compressed += 1;
                        &inflated[..]
                    }
                };
                out.push(match header.opcode {
                    OpCode::Text => Received::Text(
                        String::from_utf8(payload.to_vec()).map_err(|_| Malformed("text frame not UTF-8".into()))?,
                    ),
                    OpCode::Binary => Received::Binary(payload.to_vec()),
                    OpCode::Ping => Received::Ping(payload.to_vec()),
                    OpCode::Pong => Received::Pong(payload.to_vec()),
                    OpCode::Close => {
                        self.state = State::Done;
                        let close = parse_close(payload).map_err(|e| Malformed(format!("bad close frame: {e}")))?;
                        Received::Close(close.map(|(c, r)| (c, r.to_owned())))
                    }
                    OpCode::Continuation => return Err(Malformed("server sent a continuation frame".into())),
                });
                Ok(Some(frame_len))
            }
            State::Done if buf.is_empty() => Ok(None),
            State::Done => Err(Malformed(format!("{} bytes after the end", buf.len()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::encode_frame;

    #[test]
    fn parses_a_session_in_any_chunking() {
        let mut wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        encode_frame(&mut wire, OpCode::Text, &[b"1 self"]);
        encode_frame(&mut wire, OpCode::Close, &[b"\x03\xe8"]);
        let want = vec![Received::Http(101), Received::Text("1 self".into()), Received::Close(Some((1000, "".into())))];
        for split in 0..wire.len() {
            let mut p = ServerParser::default();
            let mut got = Vec::new();
            p.feed(&wire[..split], &mut got).unwrap();
            p.feed(&wire[split..], &mut got).unwrap();
            assert_eq!(got, want);
            assert!(p.is_done());
        }
    }

    #[test]
    fn refuses_what_a_server_must_not_send() {
        let mut masked = b"HTTP/1.1 101 OK\r\n\r\n".to_vec();
        masked_frame(&mut masked, true, OpCode::Text, b"x", [1, 2, 3, 4]);
        assert!(ServerParser::default().feed(&masked, &mut Vec::new()).is_err());
        let after = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nnoX";
        assert!(ServerParser::default().feed(after, &mut Vec::new()).is_err());
    }
}
