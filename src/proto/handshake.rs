//! The upgrade request (RFC 6455 §4.2.1): an incremental reader of the
//! request head that refuses what can never become a request as soon as the
//! request line shows it, and the checks that turn a complete head into an
//! upgrade or a plain request for [`http`](super::http) to route.

use std::borrow::Cow;

use super::config::HandshakeLimits;
use super::deflate::{self, Agreed, Malformed};
use super::error::HandshakeError;
use super::http::{self, Resource};
use super::proxy::{self, Proxied};
use super::state::{ImportError, Reader, Writer};

/// A complete, valid request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// A WebSocket upgrade.
    Upgrade(Upgrade),
    /// A plain `GET` or `HEAD` for something the relay serves over HTTP.
    Get(Resource),
    /// A call to the server API, body included.
    Api(ApiCall),
}

/// A WebSocket upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Upgrade {
    /// The request target (path and query, byte for byte), which names the room.
    pub(crate) target: Vec<u8>,
    /// The value for `Sec-WebSocket-Accept`.
    pub(crate) accept: String,
    /// The `Origin` header, which browsers always send.
    pub(crate) origin: Option<Vec<u8>>,
    /// The client offered the `ws-relay` subprotocol, which the relay then selects.
    pub(crate) ws_relay: bool,
    /// A token offered as the subprotocol `ws-relay.token.<token>`.
    pub(crate) token: Option<String>,
    /// A session key offered as the subprotocol `ws-relay.session.<key>`:
    /// 22 to 64 base64url characters.
    pub(crate) session: Option<Vec<u8>>,
    /// The permessage-deflate offer the relay would take, if any; `Err` for a
    /// `Sec-WebSocket-Extensions` header that is no extension list. Whether
    /// the relay offers compression at all is its configuration's call.
    pub(crate) deflate: Result<Option<Agreed>, Malformed>,
}

/// A request to the server API on the operator's port: `/api/...`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ApiCall {
    /// `GET`, `POST`, or anything else (refused by the API, not here).
    pub(crate) method: String,
    /// The path, `/api/...`.
    pub(crate) path: String,
    /// The query, without its `?`.
    pub(crate) query: String,
    /// The `Authorization` header.
    pub(crate) authorization: Option<Vec<u8>>,
    /// What the framing of the body says, before the body is read.
    pub(crate) framing: Framing,
    /// The body: `Content-Length` bytes.
    pub(crate) body: Vec<u8>,
}

/// How an API request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length`, or no body.
    Length(usize),
    /// Longer than the configured maximum: refused unread.
    TooLarge,
    /// `Transfer-Encoding`, which the relay does not speak: refused unread.
    Chunked,
    /// More than one length, or one that is not a number.
    Invalid,
}

/// Reads a request head fed in any chunking. Each byte is scanned once for
/// the blank line; the request line is judged as soon as it is complete and
/// the head is parsed once, when it is.
#[derive(Debug)]
pub(crate) struct RequestReader {
    /// Every byte read, up to the limits.
    buf: Vec<u8>,
    limits: HandshakeLimits,
    /// Where the request starts in `buf`: after the PROXY header when one is
    /// required, `None` until it has been read.
    start: Option<usize>,
    /// What the PROXY header said.
    proxied: Option<Proxied>,
    /// Bytes of `buf` already searched for the end of the head.
    scanned: usize,
    /// Where the head ended in `buf`, once it did.
    end: usize,
    /// The largest API body this reader accepts: set on the operator's port
    /// when the server API is on.
    api_body: Option<usize>,
    /// An API call whose body is still arriving.
    call: Option<Box<ApiCall>>,
    /// The request line is complete and well-formed.
    line_ok: bool,
    /// The method is `HEAD`, whose answer carries no body.
    head: bool,
}

impl RequestReader {
    /// A reader with these limits, for a request behind a PROXY header if `proxy`.
    pub(crate) fn new(limits: HandshakeLimits, proxy: bool, api_body: Option<usize>) -> Self {
        let start = (!proxy).then_some(0);
        Self {
            buf: Vec::new(),
            limits,
            start,
            proxied: None,
            scanned: 0,
            end: 0,
            api_body,
            call: None,
            line_ok: false,
            head: false,
        }
    }

    /// Feeds bytes. Returns `Ok(None)` while the head is incomplete; else the
    /// request and how many bytes of `input` it used (the rest are frames).
    pub(crate) fn feed(&mut self, input: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
        if self.call.is_some() {
            return Ok(take_body(&mut self.call, input, 0));
        }
        let before = self.buf.len();
        // Past the limit is an error however the head ends, so keep one byte more than it at most.
        let proxy_room = if self.start.is_none() { proxy::MAX_LEN } else { self.start.unwrap_or(0) };
        let room = (proxy_room + self.limits.max_head + 1).saturating_sub(before);
        self.buf.extend_from_slice(&input[..input.len().min(room)]);
        let start = match self.start {
            Some(start) => start,
            None => match proxy::parse(&self.buf)? {
                None => return Ok(None),
                Some((proxied, len)) => {
                    self.proxied = Some(proxied);
                    self.start = Some(len);
                    self.scanned = len;
                    len
                }
            },
        };
        self.check_line(start)?;
        let Some(end) = self.find_end(start) else {
            if self.buf.len() - start > self.limits.max_head {
                return Err(HandshakeError::HeadTooLarge);
            }
            return Ok(None);
        };
        if end - start > self.limits.max_head {
            return Err(HandshakeError::HeadTooLarge);
        }
        let request = parse_head(&self.buf[start..end], self.limits, self.api_body)?;
        self.end = end;
        let used = end - before;
        match request {
            Request::Api(call) if matches!(call.framing, Framing::Length(n) if n > 0) => {
                self.call = Some(Box::new(call));
                Ok(take_body(&mut self.call, &input[used..], used))
            }
            request => Ok(Some((request, used))),
        }
    }

    /// True once a whole request was read.
    pub(crate) fn is_complete(&self) -> bool {
        self.end > 0 && self.call.is_none()
    }

    /// True if the request line names `HEAD`, whose answer carries no body.
    pub(crate) fn is_head(&self) -> bool {
        self.head
    }

    /// What the PROXY header said, once it was read.
    pub(crate) fn proxied(&self) -> Option<Proxied> {
        self.proxied
    }

    pub(crate) fn save(&self, w: &mut Writer) {
        w.bytes(&self.buf);
        w.opt(self.start, Writer::len);
        w.opt(self.proxied, |w, p| match p {
            Proxied::Local => w.u8(0),
            Proxied::From(addr) => {
                w.u8(1);
                w.addr(addr);
            }
        });
        w.len(self.scanned);
        w.len(self.end);
        w.opt(self.call.as_deref(), |w, call| {
            for text in [&call.method, &call.path, &call.query] {
                w.bytes(text.as_bytes());
            }
            w.opt(call.authorization.as_deref(), Writer::bytes);
            match call.framing {
                Framing::Length(n) => {
                    w.u8(0);
                    w.len(n);
                }
                Framing::TooLarge => w.u8(1),
                Framing::Chunked => w.u8(2),
                Framing::Invalid => w.u8(3),
            }
            w.bytes(&call.body);
        });
        w.bool(self.line_ok);
        w.bool(self.head);
    }

    /// A reader with `limits` and `api_body` (as [`new`](Self::new) takes
    /// them) where the saved one left off.
    pub(crate) fn load(
        r: &mut Reader<'_>,
        limits: HandshakeLimits,
        api_body: Option<usize>,
    ) -> Result<Self, ImportError> {
        let corrupt = ImportError::Corrupt;
        let buf = r.bytes()?.to_vec();
        let start = r.opt(Reader::index)?;
        let proxied = r.opt(|r| match r.u8()? {
            0 => Ok(Proxied::Local),
            1 => Ok(Proxied::From(r.addr()?)),
            _ => Err(corrupt("an unknown PROXY header kind")),
        })?;
        let (scanned, end) = (r.index()?, r.index()?);
        let call = r.opt(|r| {
            let (method, path, query) = (r.string()?, r.string()?, r.string()?);
            let authorization = r.opt(|r| r.bytes().map(<[u8]>::to_vec))?;
            let framing = match r.u8()? {
                0 => Framing::Length(r.index()?),
                1 => Framing::TooLarge,
                2 => Framing::Chunked,
                3 => Framing::Invalid,
                _ => return Err(corrupt("an unknown body framing")),
            };
            let body = r.bytes()?.to_vec();
            match framing {
                Framing::Length(n) if body.len() < n => {}
                _ => return Err(corrupt("an API body that is complete or has no length")),
            }
            Ok(Box::new(ApiCall { method, path, query, authorization, framing, body }))
        })?;
        let (line_ok, head) = (r.bool()?, r.bool()?);
        if start.is_some_and(|s| s > buf.len()) || scanned > buf.len() || end > buf.len() {
            return Err(corrupt("a request reader's place past what it read"));
        }
        Ok(Self { buf, limits, start, proxied, scanned, end, api_body, call, line_ok, head })
    }

    /// Every byte of the connection up to the end of its request: the PROXY
    /// header and the head, as they arrived.
    pub(crate) fn request_bytes(&self) -> &[u8] {
        &self.buf[..self.end]
    }

    /// Refuses, as soon as they arrive, bytes that can never start a request:
    /// a method that is not a token, a malformed request line, a TLS
    /// ClientHello. Empty lines before the request line are skipped (RFC 9112
    /// §2.2), as httparse does.
    fn check_line(&mut self, from: usize) -> Result<(), HandshakeError> {
        if self.line_ok {
            return Ok(());
        }
        let buf = &self.buf[from..];
        let Some(start) = buf.iter().position(|&b| b != b'\r' && b != b'\n') else { return Ok(()) };
        let line = &buf[start..];
        // A TLS record of type handshake, version 3.x: a client that thinks this is https.
        if start == 0 && line[0] == 0x16 {
            match line.get(1) {
                None => return Ok(()),
                Some(0x03) => return Err(HandshakeError::TlsOnPlainPort),
                Some(_) => {}
            }
        }
        match line.iter().position(|&b| !is_tchar(b)) {
            None => return Ok(()),
            Some(n) if n == 0 || line[n] != b' ' => return Err(HandshakeError::Malformed),
            Some(n) => self.head = &line[..n] == b"HEAD",
        }
        let Some(lf) = line.iter().position(|&b| b == b'\n') else { return Ok(()) };
        // The line alone: httparse asks for the headers (Partial) or names what is wrong with the line.
        match httparse::Request::new(&mut []).parse(&line[..=lf]) {
            Ok(_) | Err(httparse::Error::TooManyHeaders) => {
                self.line_ok = true;
                Ok(())
            }
            Err(_) => Err(HandshakeError::Malformed),
        }
    }

    /// Finds the end of the head that starts at `from`: the first empty line,
    /// CRLF or bare LF.
    fn find_end(&mut self, from: usize) -> Option<usize> {
        let scan = self.scanned.max(from);
        self.scanned = self.buf.len();
        let buf = &self.buf;
        (scan..buf.len()).find_map(|i| {
            let blank = buf[i] == b'\n'
                && ((i > from && buf[i - 1] == b'\n') || (i >= from + 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'));
            // Empty lines before the request line are not the end of the head.
            (blank && !buf[from..i].iter().all(|&b| b == b'\r' || b == b'\n')).then_some(i + 1)
        })
    }
}

/// Appends what `input` holds of an API call's body; once it is whole,
/// returns the call and the bytes of `input` used (after `already` used by
/// its head).
fn take_body(pending: &mut Option<Box<ApiCall>>, input: &[u8], already: usize) -> Option<(Request, usize)> {
    let call = pending.as_mut()?;
    let Framing::Length(length) = call.framing else { return None };
    let take = (length - call.body.len()).min(input.len());
    call.body.extend_from_slice(&input[..take]);
    if call.body.len() < length {
        return None;
    }
    pending.take().map(|call| (Request::Api(*call), already + take))
}

/// RFC 9110 §5.6.2: the characters of a token, such as a method or an
/// extension's name.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_head(head: &[u8], limits: HandshakeLimits, api_body: Option<usize>) -> Result<Request, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HandshakeError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::HeadTooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    }
    // Complete guarantees method, path and version are set.
    let (Some(method), Some(raw_target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HandshakeError::Malformed);
    };
    if raw_target.len() > limits.max_target {
        return Err(HandshakeError::TargetTooLong);
    }
    let all = &*req.headers;
    let header = |name: &'static str| all.iter().filter(move |h| h.name.eq_ignore_ascii_case(name));
    if let Some(max_body) = api_body {
        if let Some(path) = origin_form(raw_target).filter(|t| t.starts_with("/api/")) {
            let (path, query) = path.split_once('?').unwrap_or((&path, ""));
            let lengths: Vec<&[u8]> = header("content-length").map(|h| h.value.trim_ascii()).collect();
            let framing = match lengths[..] {
                _ if header("transfer-encoding").next().is_some() => Framing::Chunked,
                [] => Framing::Length(0),
                [n] if !n.is_empty() && n.iter().all(u8::is_ascii_digit) => {
                    match std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()) {
                        Some(n) if n <= max_body => Framing::Length(n),
                        _ => Framing::TooLarge,
                    }
                }
                _ => Framing::Invalid,
            };
            return Ok(Request::Api(ApiCall {
                method: method.to_owned(),
                path: path.to_owned(),
                query: query.to_owned(),
                authorization: header("authorization").next().map(|h| h.value.trim_ascii().to_vec()),
                framing,
                body: Vec::new(),
            }));
        }
    }
    // HEAD is GET without the body (RFC 9110 §9.3.2), for monitors and link checkers.
    if method != "GET" && method != "HEAD" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    let has_body = header("transfer-encoding").next().is_some()
        || header("content-length").any(|h| h.value.iter().any(|&b| b != b'0' && !b.is_ascii_whitespace()));
    if has_body {
        return Err(HandshakeError::UnexpectedBody);
    }
    let upgrade = header("upgrade").any(|h| has_token(h.value, "websocket"));
    if upgrade && method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    let Some(target) = origin_form(raw_target) else { return Err(HandshakeError::NotFound) };
    if !upgrade {
        return http::route(&target).map(Request::Get);
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
    // Browsers can set no header on a WebSocket but this one: a token rides in
    // it as a subprotocol the relay never selects, so it appears in no URL.
    // A session key rides the same way.
    let (mut ws_relay, mut token, mut session) = (false, None, None);
    for offer in header("sec-websocket-protocol").flat_map(|h| h.value.split(|&b| b == b',')) {
        match offer.trim_ascii() {
            b"ws-relay" => ws_relay = true,
            other => {
                if let Some(t) = other.strip_prefix(b"ws-relay.token.") {
                    token = token.or_else(|| String::from_utf8(t.to_vec()).ok());
                } else if let Some(key) = other.strip_prefix(b"ws-relay.session.") {
                    let valid = (22..=64).contains(&key.len())
                        && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !valid || session.is_some() {
                        return Err(HandshakeError::BadSessionKey);
                    }
                    session = Some(key.to_vec());
                }
            }
        }
    }
    Ok(Request::Upgrade(Upgrade {
        target: target.as_bytes().to_vec(),
        accept: accept_key(key),
        origin: header("origin").next().map(|h| h.value.trim_ascii().to_vec()),
        ws_relay,
        token,
        session,
        deflate: deflate::negotiate(header("sec-websocket-extensions").map(|h| h.value)),
    }))
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2): base64 of the SHA-1 of
/// the key and the protocol's GUID.
fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::Digest;
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The path and query a request target names. A server must accept the
/// absolute form (`GET http://host/room?x HTTP/1.1`, RFC 9112 §3.2.2), which
/// names the same resource as `/room?x`; the authority and asterisk forms
/// name nothing here.
fn origin_form(target: &str) -> Option<Cow<'_, str>> {
    if target.starts_with('/') {
        return Some(Cow::Borrowed(target));
    }
    let (scheme, rest) = target.split_once("://")?;
    if !["http", "https", "ws", "wss"].iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return None;
    }
    Some(match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Cow::Borrowed(&rest[i..]),
        // An empty path is `/` (RFC 9110 §4.2.3): `http://host?x` is `/?x`.
        Some(i) => Cow::Owned(format!("/{}", &rest[i..])),
        None => Cow::Borrowed("/"),
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HandshakeLimits = HandshakeLimits { max_head: 1024, max_headers: 16, max_target: 256 };
    const GOOD: &[u8] = b"GET /ws-relay/spacewar?game=1 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn feed_all(chunks: &[&[u8]]) -> Result<Option<(Request, usize)>, HandshakeError> {
        let mut r = RequestReader::new(LIMITS, false, None);
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
            Request::Upgrade(Upgrade {
                target: b"/ws-relay/spacewar?game=1".to_vec(),
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
                origin: None,
                ws_relay: false,
                token: None,
                session: None,
                deflate: Ok(None),
            })
        );
    }

    #[test]
    fn same_result_one_byte_at_a_time_and_leftover_is_reported() {
        let mut wire = GOOD.to_vec();
        wire.extend_from_slice(b"\x81\x80");
        let mut r = RequestReader::new(LIMITS, false, None);
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
        let mut r = RequestReader::new(LIMITS, false, None);
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

    #[test]
    fn what_can_never_be_a_request_is_refused_before_the_head_ends() {
        let early: [(&[u8], HandshakeError); 5] = [
            (b"\x00\x01\x02", HandshakeError::Malformed),
            (b"GE\x7fT / HTTP/1.1", HandshakeError::Malformed),
            (b"GET\t/ HTTP/1.1", HandshakeError::Malformed),
            (b"GET / HTTP/9\r\n", HandshakeError::Malformed),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", HandshakeError::TlsOnPlainPort),
        ];
        for (bytes, err) in early {
            let mut r = RequestReader::new(LIMITS, false, None);
            assert_eq!(r.feed(bytes), Err(err), "{bytes:?}");
            // The same, a byte at a time: refused at the byte that decides it, not at the end.
            let mut r = RequestReader::new(LIMITS, false, None);
            let refused = bytes.iter().position(|b| r.feed(std::slice::from_ref(b)).is_err());
            assert!(refused.is_some(), "{bytes:?}");
        }
        // A good line waits for the rest of the head.
        assert_eq!(RequestReader::new(LIMITS, false, None).feed(b"GET /x HTTP/1.1\r\nHost"), Ok(None));
    }

    #[test]
    fn empty_lines_before_the_request_are_skipped_and_head_is_judged_by_the_method() {
        let mut r = RequestReader::new(LIMITS, false, None);
        let got = r.feed(b"\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().unwrap().0;
        assert_eq!(got, Request::Get(Resource::Health));
        assert!(r.is_head());
        let mut r = RequestReader::new(LIMITS, false, None);
        assert_eq!(r.feed(b"GET /HEAD HTTP/1.1\r\nHost: x\r\n\r\n"), Err(HandshakeError::NotWebSocket));
        assert!(!r.is_head());
    }

    #[test]
    fn the_absolute_form_names_its_path_and_query() {
        let good = String::from_utf8(GOOD.to_vec()).unwrap();
        for (target, room) in [
            ("http://relay.example/ws-relay/spacewar?game=1", "/ws-relay/spacewar?game=1"),
            ("WSS://relay.example:443/r", "/r"),
            ("http://relay.example", "/"),
            ("http://relay.example?game=2", "/?game=2"),
        ] {
            let req = good.replacen("/ws-relay/spacewar?game=1", target, 1);
            let (got, _) = feed_all(&[req.as_bytes()]).unwrap().unwrap();
            let Request::Upgrade(Upgrade { target: got, .. }) = got else { panic!("{target}: {got:?}") };
            assert_eq!(got, room.as_bytes(), "{target}");
        }
        let req = good.replacen("/ws-relay/spacewar?game=1", "ftp://x/r", 1);
        assert_eq!(feed_all(&[req.as_bytes()]), Err(HandshakeError::NotFound));
        let health = feed_all(&[b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n"]).unwrap().unwrap().0;
        assert_eq!(health, Request::Get(Resource::Health));
    }
}
