//! Plain HTTP, in one place: the statuses the relay answers with, which path
//! serves what on which listener, and the responses written before framing
//! starts (or instead of it).

use super::config::{Config, Listener};
use super::deflate::{self, Agreed};
use super::error::HandshakeError;
use super::pages::{self, Page};
use super::table::table_enum;

table_enum! {
    /// Every HTTP status the relay answers with: code, reason phrase, and the
    /// headers that status always carries (each ending in CRLF).
    pub(crate) enum Status: (u16, &'static str, &'static str) {
        Ok => (200, "OK", ""),
        BadRequest => (400, "Bad Request", ""),
        Unauthorized => (401, "Unauthorized", "WWW-Authenticate: Bearer\r\n"),
        Forbidden => (403, "Forbidden", ""),
        NotFound => (404, "Not Found", ""),
        MethodNotAllowed => (405, "Method Not Allowed", "Allow: GET, HEAD\r\n"),
        RequestTimeout => (408, "Request Timeout", ""),
        LengthRequired => (411, "Length Required", ""),
        PayloadTooLarge => (413, "Content Too Large", ""),
        UriTooLong => (414, "URI Too Long", ""),
        UpgradeRequired => (426, "Upgrade Required", "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"),
        HeaderFieldsTooLarge => (431, "Request Header Fields Too Large", ""),
        ServiceUnavailable => (503, "Service Unavailable", ""),
    }
}

impl Status {
    /// The three-digit code.
    pub(crate) fn code(self) -> u16 {
        self.row().0
    }

    /// The status with this code, if the relay ever answers with it.
    pub(crate) fn from_code(code: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.code() == code)
    }
}

/// What a plain `GET` or `HEAD` may fetch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    /// `/healthz`: 200 while the relay runs.
    Health,
    /// `/metrics`: counters in the Prometheus text format.
    Metrics,
    /// A compiled-in file: the demo, `ws-relay.js`, its declarations.
    Page(&'static Page),
}

/// What a request without `Upgrade: websocket` for `path` (origin form,
/// query included) fetches, whichever port it came in on.
pub(crate) fn route(path: &str) -> Result<Resource, HandshakeError> {
    // A cache-busting query (`/ws-relay.js?v=2`) still finds the file.
    let file = path.split_once('?').map_or(path, |(file, _)| file);
    match file {
        "/healthz" => Ok(Resource::Health),
        "/metrics" => Ok(Resource::Metrics),
        // Every browser asks; a 404 says "none" where a 426 would puzzle.
        "/favicon.ico" => Err(HandshakeError::NotFound),
        _ => pages::find(file).map(Resource::Page).ok_or(HandshakeError::NotWebSocket),
    }
}

/// Whether `resource` is served on `listener`: the operator's port has
/// `/metrics` and `/healthz` only; the public port has the pages and
/// `/metrics` unless the configuration moved or turned them off.
pub(crate) fn served(resource: &Resource, listener: Listener, config: &Config) -> bool {
    match (resource, listener) {
        (Resource::Health, _) | (Resource::Metrics, Listener::Admin) => true,
        (Resource::Metrics, Listener::Public) => config.serve_metrics,
        (Resource::Page(_), Listener::Public) => config.serve_pages,
        (Resource::Page(_), Listener::Admin) => false,
    }
}

/// Headers of a file or a scrape: they change with the binary and the
/// moment, so browsers revalidate rather than cache.
const FILE_HEADERS: &str = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n";

/// A 200 carrying a file or a scrape.
pub(crate) fn file_response(content_type: &str, body: &[u8], head_only: bool, out: &mut Vec<u8>) {
    response(Status::Ok, FILE_HEADERS, content_type, body, head_only, out);
}

/// A response with a one-line text body.
pub(crate) fn text_response(status: Status, text: &str, head_only: bool, out: &mut Vec<u8>) {
    let body = format!("{text}\n");
    response(status, status.row().2, "text/plain; charset=utf-8", body.as_bytes(), head_only, out);
}

/// Every response but the 101: the connection closes after it. The answer to
/// a `HEAD` is the same head, `Content-Length` included, without the body
/// (RFC 9110 §9.3.2).
fn response(status: Status, headers: &str, content_type: &str, body: &[u8], head_only: bool, out: &mut Vec<u8>) {
    let (code, reason, _) = status.row();
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}\
         Connection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// An answer of the server API.
pub(crate) fn json_response(status: Status, body: &[u8], out: &mut Vec<u8>) {
    response(status, status.row().2, "application/json", body, false, out);
}

/// The 101 response that completes an upgrade, selecting the `ws-relay`
/// subprotocol when the client offered it, and permessage-deflate with the
/// parameters agreed, if any.
pub(crate) fn accept_response(accept: &str, ws_relay: bool, deflate: Option<&Agreed>, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    if ws_relay {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ws-relay");
    }
    if let Some(agreed) = deflate {
        deflate::write_response(agreed, out);
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// The longest 101 response [`accept_response`] writes without its
/// `Sec-WebSocket-Extensions` line ([`deflate::MAX_RESPONSE`] more), with
/// room for the headers later protocol options add.
pub(crate) const MAX_ACCEPT_RESPONSE: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_order_and_codes_are_unique() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(Status::from_code(s.code()), Some(*s));
        }
        let mut out = Vec::new();
        accept_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", true, None, &mut out);
        assert!(out.len() <= MAX_ACCEPT_RESPONSE);
        let most = Agreed {
            client_no_context_takeover: true,
            client_max_window_bits: Some(15),
            server_max_window_bits: Some(15),
        };
        let mut with = Vec::new();
        accept_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", true, Some(&most), &mut with);
        assert!(with.len() - out.len() <= deflate::MAX_RESPONSE, "{}", with.len() - out.len());
    }

    #[test]
    fn head_answers_carry_the_length_but_no_body() {
        let (mut get, mut head) = (Vec::new(), Vec::new());
        text_response(Status::MethodNotAllowed, "no", false, &mut get);
        text_response(Status::MethodNotAllowed, "no", true, &mut head);
        assert!(get.starts_with(&head) && get.ends_with(b"\r\n\r\nno\n"));
        assert!(head.ends_with(b"Allow: GET, HEAD\r\nConnection: close\r\n\r\n"));
    }
}
