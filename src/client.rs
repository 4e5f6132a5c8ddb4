//! The client's side of the wire, for tools and tests that talk to a relay
//! without a WebSocket library: the upgrade request, masked frames out, and a
//! strict parser of what a server sends back. The relay itself never uses it.

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

/// Appends a masked client frame. The caller picks the mask: RFC 6455 wants it
/// unpredictable for browsers, which a relay's own tools do not need.
pub fn masked_frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    FrameHeader { fin, opcode, mask: Some(mask), len: payload.len() as u64 }.encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
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
}

impl Default for ServerParser {
    fn default() -> Self {
        Self { buf: Vec::new(), state: State::Head }
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
                Ok(Some(len + payload.len()))
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
