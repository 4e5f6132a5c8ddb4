//! The HTTP/1.1 side of a connection: the incremental upgrade-request reader
//! (RFC 6455 §4.2.1) and the responses the relay writes before framing starts.

use super::error::HandshakeError;
use super::pages::{self, Page};

/// Limits on the request head, checked as bytes arrive.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeLimits {
    /// Largest request head in bytes, request line and headers included.
    pub max_head: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest request target (the room name) in bytes.
    pub max_target: usize,
}

/// A complete, valid request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A WebSocket upgrade for this request target (path and query, byte for byte).
    Upgrade {
        /// The request target, which names the room.
        target: Vec<u8>,
        /// The value for `Sec-WebSocket-Accept`.
        accept: String,
        /// The `Origin` header, which browsers always send.
        origin: Option<Vec<u8>>,
    },
    /// A plain `GET` for something the relay serves over HTTP.
    Get(Resource),
}

/// What a plain `GET` may fetch.
#[derive(Debug, PartialEq, Eq)]
pub enum Resource {
    /// `/healthz`: 200 while the relay runs.
    Health,
    /// `/metrics`: counters in the Prometheus text format.
    Metrics,
    /// A compiled-in file: the demo, `ws-relay.js`, its declarations.
    Page(&'static Page),
}

/// Reads a request head fed in any chunking. Each byte is scanned once for
/// the blank line; the head is parsed once, when it is complete.
#[derive(Debug)]
pub struct RequestReader {
    buf: Vec<u8>,
    scanned: usize,
    limits: HandshakeLimits,
}

impl RequestReader {
    /// A reader with these limits.
    pub fn new(limits: HandshakeLimits) -> Self {
        Self { buf: Vec::new(), scanned: 0, limits }
    }

    /// Feeds bytes. Returns `Ok(None)` while the head is incomplete; else the
    /// request and how many bytes of `input` it used (the rest are frames).
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
        let before = self.buf.len();
        // Past the limit is an error however the head ends, so keep one byte more than it at most.
        let room = (self.limits.max_head + 1).saturating_sub(before);
        self.buf.extend_from_slice(&input[..input.len().min(room)]);
        let Some(end) = self.find_end() else {
            if self.buf.len() > self.limits.max_head {
                return Err(HandshakeError::HeadTooLarge);
            }
            return Ok(None);
        };
        if end > self.limits.max_head {
            return Err(HandshakeError::HeadTooLarge);
        }
        let request = parse_head(&self.buf[..end], self.limits)?;
        Ok(Some((request, end - before)))
    }

    /// True if the request so far is a `HEAD`, whose answer carries no body.
    pub fn is_head(&self) -> bool {
        self.buf.starts_with(b"HEAD ")
    }

    /// Finds the end of the head: the first empty line, CRLF or bare LF.
    fn find_end(&mut self) -> Option<usize> {
        let from = self.scanned;
        self.scanned = self.buf.len();
        let buf = &self.buf;
        (from..buf.len()).find_map(|i| {
            let blank = buf[i] == b'\n'
                && ((i >= 1 && buf[i - 1] == b'\n') || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'));
            blank.then_some(i + 1)
        })
    }
}

fn parse_head(head: &[u8], limits: HandshakeLimits) -> Result<Request, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HandshakeError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::HeadTooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    }
    // Complete guarantees method, path and version are set.
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HandshakeError::Malformed);
    };
    if path.len() > limits.max_target {
        return Err(HandshakeError::TargetTooLong);
    }
    // HEAD is GET without the body (RFC 9110 §9.3.2), for monitors and link checkers.
    if method != "GET" && method != "HEAD" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    let all = &*req.headers;
    let header = |name: &'static str| all.iter().filter(move |h| h.name.eq_ignore_ascii_case(name));
    let has_body = header("transfer-encoding").next().is_some()
        || header("content-length").any(|h| h.value.iter().any(|&b| b != b'0' && !b.is_ascii_whitespace()));
    if has_body {
        return Err(HandshakeError::UnexpectedBody);
    }
    let upgrade = header("upgrade").any(|h| has_token(h.value, "websocket"));
    if upgrade && method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if !upgrade {
        // A cache-busting query (`/ws-relay.js?v=2`) still finds the file.
        let file = path.split_once('?').map_or(path, |(file, _)| file);
        return match file {
            "/healthz" => Ok(Request::Get(Resource::Health)),
            "/metrics" => Ok(Request::Get(Resource::Metrics)),
            // Every browser asks; a 404 says "none" where a 426 would puzzle.
            "/favicon.ico" => Err(HandshakeError::NotFound),
            _ if !path.starts_with('/') => Err(HandshakeError::NotFound),
            _ => pages::find(file).map(|p| Request::Get(Resource::Page(p))).ok_or(HandshakeError::NotWebSocket),
        };
    }
    if version != 1 {
        return Err(HandshakeError::OldHttpVersion);
    }
    if header("host").next().is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !header("connection").any(|h| has_token(h.value, "upgrade")) {
        return Err(HandshakeError::NotWebSocket);
    }
    if !header("sec-websocket-version").any(|h| h.value.trim_ascii() == b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let mut keys = header("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) if is_valid_key(k.value.trim_ascii()) => k.value.trim_ascii(),
        _ => return Err(HandshakeError::BadKey),
    };
    if !path.starts_with('/') {
        return Err(HandshakeError::NotFound);
    }
    Ok(Request::Upgrade {
        target: path.as_bytes().to_vec(),
        accept: tungstenite::handshake::derive_accept_key(key),
        origin: header("origin").next().map(|h| h.value.trim_ascii().to_vec()),
    })
}

/// True if the comma-separated header value lists `token`, ignoring case.
fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A key is 16 bytes in base64: 22 alphabet characters and `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The 101 response that completes an upgrade.
pub fn accept_response(accept: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// A 200 response carrying `body`, after which the connection is closed.
/// Pages change with the binary, so browsers revalidate rather than cache.
pub fn ok_response(content_type: &str, body: &[u8], out: &mut Vec<u8>) {
    let headers = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n";
    response(200, headers, content_type, body, out);
}

/// A plain response with a text body, after which the connection is closed.
pub fn plain_response(status: u16, body: &str, out: &mut Vec<u8>) {
    let headers = match status {
        405 => "Allow: GET, HEAD\r\n",
        426 => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        _ => "",
    };
    response(status, headers, "text/plain; charset=utf-8", format!("{body}\n").as_bytes(), out);
}

/// Every response but the 101: `headers` (each ending in CRLF) join the
/// content headers, and the connection closes after the body.
fn response(status: u16, headers: &str, content_type: &str, body: &[u8], out: &mut Vec<u8>) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}\
         Connection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
}

/// Cuts the body off the response that starts at `start` in `out`, leaving
/// its head (with the `Content-Length` the body would have had): the answer to
/// a `HEAD`.
pub fn strip_body(out: &mut Vec<u8>, start: usize) {
    if let Some(end) = out[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        out.truncate(start + end + 4);
    }
}

/// The response for a refused request.
pub fn error_response(err: HandshakeError, out: &mut Vec<u8>) {
    plain_response(err.http_status(), &err.to_string(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HandshakeLimits = HandshakeLimits { max_head: 1024, max_headers: 16, max_target: 256 };
    const GOOD: &[u8] = b"GET /ws-relay/spacewar?game=1 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn feed_all(chunks: &[&[u8]]) -> Result<Option<(Request, usize)>, HandshakeError> {
        let mut r = RequestReader::new(LIMITS);
        let mut last = Ok(None);
        for c in chunks {
            last = r.feed(c);
            if !matches!(last, Ok(None)) {
                return last;
            }
        }
        last
    }

    #[test]
    fn rfc_sample_key_is_accepted() {
        let (req, used) = feed_all(&[GOOD]).unwrap().unwrap();
        assert_eq!(used, GOOD.len());
        assert_eq!(
            req,
            Request::Upgrade {
                target: b"/ws-relay/spacewar?game=1".to_vec(),
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
                origin: None,
            }
        );
    }

    #[test]
    fn same_result_one_byte_at_a_time_and_leftover_is_reported() {
        let mut wire = GOOD.to_vec();
        wire.extend_from_slice(b"\x81\x80");
        let mut r = RequestReader::new(LIMITS);
        for (i, b) in wire.iter().enumerate() {
            match r.feed(std::slice::from_ref(b)).unwrap() {
                None => assert!(i < GOOD.len() - 1),
                Some((_, used)) => {
                    assert_eq!(i, GOOD.len() - 1);
                    assert_eq!(used, 1);
                    break;
                }
            }
        }
        let (_, used) = feed_all(&[&wire]).unwrap().unwrap();
        assert_eq!(used, GOOD.len());
    }

    #[test]
    fn refusals_carry_their_status() {
        let swap = |from: &str, to: &str| String::from_utf8(GOOD.to_vec()).unwrap().replacen(from, to, 1);
        let cases = [
            (swap("GET", "POST"), 405),
            (swap("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), 426),
            (swap("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Key: short"), 400),
            (swap("Host: x\r\n", ""), 400),
            (swap("Upgrade: WebSocket", "Upgrade: h2c"), 426),
            (swap("Connection: keep-alive, Upgrade", "Connection: close"), 426),
            (swap("Host: x\r\n", "Host: x\r\nContent-Length: 5\r\n"), 400),
            (swap("HTTP/1.1", "HTTP/1.0"), 400),
            ("GET /ws-relay/spacewar HTTP/1.1\r\nHost: x\r\n\r\n".into(), 426),
            ("GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n".into(), 404),
            (swap("GET", "HEAD"), 405),
            ("GARBAGE\r\n\r\n".into(), 400),
        ];
        for (req, status) in cases {
            let got = feed_all(&[req.as_bytes()]).map(|r| r.map(|(r, _)| r));
            assert_eq!(got.map_err(|e| e.http_status()), Err(status), "{req}");
        }
        let health = feed_all(&[b"GET /healthz HTTP/1.0\r\n\r\n"]).unwrap().unwrap();
        assert_eq!(health.0, Request::Get(Resource::Health));
        let metrics = feed_all(&[b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"]).unwrap().unwrap();
        assert_eq!(metrics.0, Request::Get(Resource::Metrics));
        for path in ["/", "/index.html", "/?game=2", "/ws-relay.js", "/ws-relay.js?v=3", "/ws-relay.d.ts"] {
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            let got = feed_all(&[req.as_bytes()]).unwrap().unwrap().0;
            assert!(matches!(got, Request::Get(Resource::Page(_))), "{path}: {got:?}");
        }
    }

    #[test]
    fn oversized_heads_are_refused_before_they_end() {
        let mut r = RequestReader::new(LIMITS);
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut result = r.feed(b"GET / HTTP/1.1\r\n");
        while let Ok(None) = result {
            result = r.feed(line);
        }
        assert_eq!(result, Err(HandshakeError::HeadTooLarge));
        let many: String = (0..20).map(|i| format!("X-{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(feed_all(&[req.as_bytes()]), Err(HandshakeError::HeadTooLarge));
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(300));
        assert_eq!(feed_all(&[long.as_bytes()]), Err(HandshakeError::TargetTooLong));
    }
}
