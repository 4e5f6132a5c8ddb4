//! The server API: what a game's backend may ask of the relay on the
//! operator's port, as JSON over HTTP. Publish a message into a room as the
//! server (id 0, which no client has), list rooms, see who is in one, and
//! disconnect a player. This module turns a request into an [`ApiRequest`]
//! and an [`ApiReply`] into a response; the relay carries requests out.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::handshake::{ApiCall, Framing};
use super::http::{self, Status};

/// Where a publish goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum To {
    /// Every client in the room.
    All,
    /// The client with this id.
    Id(u64),
}

/// Whom a disconnect is for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Who {
    /// One client of one room.
    Member {
        /// The room.
        room: Vec<u8>,
        /// The client's id.
        id: u64,
    },
    /// Every connection admitted with this subject (an account).
    Subject(String),
}

/// A server API request, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiRequest {
    /// `POST /api/publish`: `0 <data>` to `to` in `room`.
    Publish {
        /// The room.
        room: Vec<u8>,
        /// Its recipients.
        to: To,
        /// What follows `0 `.
        data: Vec<u8>,
        /// A binary message rather than text.
        binary: bool,
    },
    /// `GET /api/rooms`: rooms whose name starts with `prefix`, at most `limit`.
    Rooms {
        /// The start of the names.
        prefix: Vec<u8>,
        /// The most rooms to list.
        limit: usize,
    },
    /// `GET /api/presence`: who is in `room`, in join order.
    Presence {
        /// The room.
        room: Vec<u8>,
    },
    /// `POST /api/disconnect`: close 4000 to `who`; their rooms hear `quit`.
    Disconnect {
        /// The client, or every client of an account.
        who: Who,
        /// The close frame's reason.
        reason: String,
    },
}

impl ApiRequest {
    /// The room whose shard answers the request, or `None` when every shard must.
    pub fn room(&self) -> Option<&[u8]> {
        match self {
            Self::Publish { room, .. } | Self::Presence { room } => Some(room),
            Self::Disconnect { who: Who::Member { room, .. }, .. } => Some(room),
            Self::Rooms { .. } | Self::Disconnect { who: Who::Subject(_), .. } => None,
        }
    }
}

/// What a relay's core did with an [`ApiRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiReply {
    /// The room does not exist (here).
    NoSuchRoom,
    /// A publish reached this many clients.
    Published(u64),
    /// Rooms and their client counts, by name.
    Rooms(Vec<(Vec<u8>, usize)>),
    /// A room's members, in join order: id and subject.
    Presence(Vec<(u64, Option<String>)>),
    /// This many connections were closed.
    Disconnected(u64),
}

impl ApiReply {
    /// The process's reply from every shard's to a request that went to all
    /// of them (rooms, a disconnect by subject): `limit` rooms at most.
    pub fn merge(replies: impl IntoIterator<Item = ApiReply>, limit: usize) -> ApiReply {
        let (mut rooms, mut disconnected, mut any_rooms) = (Vec::new(), 0, false);
        for reply in replies {
            match reply {
                ApiReply::Rooms(r) => {
                    any_rooms = true;
                    rooms.extend(r);
                }
                ApiReply::Disconnected(n) => disconnected += n,
                other => return other,
            }
        }
        if !any_rooms {
            return ApiReply::Disconnected(disconnected);
        }
        rooms.sort();
        rooms.truncate(limit);
        ApiReply::Rooms(rooms)
    }
}

/// A request the API refuses, with the status it is answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: Status,
    pub(crate) message: String,
}

fn error(status: Status, message: impl Into<String>) -> ApiError {
    ApiError { status, message: message.into() }
}

/// The most rooms `GET /api/rooms` lists.
const MAX_LIMIT: usize = 10_000;

/// The longest close reason: a close frame holds 125 bytes, two of them the code.
const MAX_REASON: usize = 123;

/// Checks the key and parses `call`. `key` is the configured API key.
pub(crate) fn parse(call: &ApiCall, key: &[u8]) -> Result<ApiRequest, ApiError> {
    let presented = call.authorization.as_deref().and_then(|a| a.strip_prefix(b"Bearer ")).unwrap_or(b"");
    if !same(presented.trim_ascii(), key) {
        return Err(error(Status::Unauthorized, "missing or wrong API key: send Authorization: Bearer <key>"));
    }
    match call.framing {
        Framing::Length(_) => {}
        Framing::Chunked => return Err(error(Status::LengthRequired, "send the body with Content-Length")),
        Framing::TooLarge => return Err(error(Status::PayloadTooLarge, "body larger than --max-api-body")),
        Framing::Invalid => return Err(error(Status::BadRequest, "invalid Content-Length")),
    }
    let method = |want: &str| {
        if call.method == want {
            Ok(())
        } else {
            Err(error(Status::MethodNotAllowed, format!("{} takes {want}", call.path)))
        }
    };
    match call.path.as_str() {
        "/api/publish" => {
            method("POST")?;
            let mut body = object(&call.body, &["room", "to", "data", "data_base64"])?;
            let room = string(&mut body, "room")?.into_bytes();
            let to = match body.remove("to") {
                Some(Value::String(s)) if s == "*" => To::All,
                Some(Value::Number(n)) => To::Id(id(&n)?),
                Some(_) => return Err(error(Status::BadRequest, "`to` must be \"*\" or a client id")),
                None => return Err(error(Status::BadRequest, "missing `to`")),
            };
            let (data, binary) = match (body.remove("data"), body.remove("data_base64")) {
                (Some(Value::String(text)), None) => (text.into_bytes(), false),
                (None, Some(Value::String(b64))) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|_| error(Status::BadRequest, "`data_base64` is not base64"))?;
                    (bytes, true)
                }
                (None, None) => return Err(error(Status::BadRequest, "missing `data` or `data_base64`")),
                (Some(_), Some(_)) => return Err(error(Status::BadRequest, "send `data` or `data_base64`, not both")),
                _ => return Err(error(Status::BadRequest, "`data` and `data_base64` are strings")),
            };
            Ok(ApiRequest::Publish { room, to, data, binary })
        }
        "/api/rooms" => {
            method("GET")?;
            let query = query(&call.query, &["prefix", "limit"])?;
            let prefix = query.iter().find(|(k, _)| k == "prefix").map(|(_, v)| v.clone()).unwrap_or_default();
            let limit = match query.iter().find(|(k, _)| k == "limit") {
                None => 100,
                Some((_, v)) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| (1..=MAX_LIMIT).contains(&n))
                    .ok_or_else(|| error(Status::BadRequest, format!("`limit` must be 1 to {MAX_LIMIT}")))?,
            };
            Ok(ApiRequest::Rooms { prefix, limit })
        }
        "/api/presence" => {
            method("GET")?;
            let query = query(&call.query, &["room"])?;
            let room = query.into_iter().find(|(k, _)| k == "room").map(|(_, v)| v);
            Ok(ApiRequest::Presence { room: room.ok_or_else(|| error(Status::BadRequest, "missing `room`"))? })
        }
        "/api/disconnect" => {
            method("POST")?;
            let mut body = object(&call.body, &["room", "id", "sub", "reason"])?;
            let reason = match body.remove("reason") {
                None => String::new(),
                Some(Value::String(r)) if r.len() <= MAX_REASON => r,
                Some(Value::String(_)) => {
                    return Err(error(Status::BadRequest, format!("`reason` is at most {MAX_REASON} bytes")))
                }
                Some(_) => return Err(error(Status::BadRequest, "`reason` must be a string")),
            };
            let who = match (body.contains_key("sub"), body.contains_key("room")) {
                (true, false) if !body.contains_key("id") => Who::Subject(string(&mut body, "sub")?),
                (false, true) => {
                    let room = string(&mut body, "room")?.into_bytes();
                    match body.remove("id") {
                        Some(Value::Number(n)) => Who::Member { room, id: id(&n)? },
                        _ => return Err(error(Status::BadRequest, "`id` must be a client id")),
                    }
                }
                _ => return Err(error(Status::BadRequest, "send {\"room\", \"id\"} or {\"sub\"}")),
            };
            Ok(ApiRequest::Disconnect { who, reason })
        }
        _ => Err(error(Status::NotFound, format!("no API endpoint {}", call.path))),
    }
}

/// The response to `request` once it was carried out, as `status` and JSON.
pub(crate) fn answer(request: &ApiRequest, reply: &ApiReply) -> (Status, Value) {
    match reply {
        ApiReply::NoSuchRoom => (Status::NotFound, json!({ "error": "no such room" })),
        ApiReply::Published(n) => (Status::Ok, json!({ "delivered": n })),
        ApiReply::Disconnected(n) => (Status::Ok, json!({ "disconnected": n })),
        ApiReply::Rooms(rooms) => {
            let rooms: Vec<Value> =
                rooms.iter().map(|(name, n)| json!({ "room": String::from_utf8_lossy(name), "clients": n })).collect();
            (Status::Ok, json!({ "rooms": rooms }))
        }
        ApiReply::Presence(members) => {
            let room = request.room().map(String::from_utf8_lossy).unwrap_or_default();
            let members: Vec<Value> = members.iter().map(|(id, sub)| json!({ "id": id, "sub": sub })).collect();
            (Status::Ok, json!({ "room": room, "members": members }))
        }
    }
}

/// Appends the HTTP response for `status` and `body`.
pub(crate) fn respond(status: Status, body: &Value, out: &mut Vec<u8>) {
    http::json_response(status, body.to_string().as_bytes(), out);
}

/// The response to a refused request.
pub(crate) fn refuse(e: &ApiError, out: &mut Vec<u8>) {
    respond(e.status, &json!({ "error": e.message }), out);
}

/// The body as a JSON object with no fields but `allowed`.
fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| error(Status::BadRequest, format!("body is not JSON: {e}")))?;
    let Value::Object(map) = value else { return Err(error(Status::BadRequest, "body must be a JSON object")) };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(error(Status::BadRequest, format!("unknown field `{unknown}`")));
    }
    Ok(map)
}

fn string(body: &mut Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match body.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(error(Status::BadRequest, format!("`{field}` must be a string"))),
        None => Err(error(Status::BadRequest, format!("missing `{field}`"))),
    }
}

/// A client id: a whole number from 1.
fn id(n: &serde_json::Number) -> Result<u64, ApiError> {
    n.as_u64().filter(|&id| id > 0).ok_or_else(|| error(Status::BadRequest, "a client id is a whole number from 1"))
}

/// The query's parameters, percent-decoded, none but `allowed`.
fn query(query: &str, allowed: &[&str]) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = String::from_utf8(decode(key)?).map_err(|_| error(Status::BadRequest, "query is not UTF-8"))?;
        if !allowed.contains(&key.as_str()) {
            return Err(error(Status::BadRequest, format!("unknown parameter `{key}`")));
        }
        out.push((key, decode(value)?));
    }
    Ok(out)
}

/// Percent-decodes a query component (`+` is a space, as forms send it).
fn decode(s: &str) -> Result<Vec<u8>, ApiError> {
    let bad = || error(Status::BadRequest, "bad percent-encoding in the query");
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'%' => {
                let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                u8::from_str_radix(hex, 16).map_err(|_| bad())?
            }
            b'+' => b' ',
            b => b,
        });
    }
    Ok(out)
}

/// Compares two byte strings in time that depends on their lengths only, so
/// a wrong key reveals nothing of the right one but its length.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, path: &str, body: &str) -> ApiCall {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        ApiCall {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            authorization: Some(b"Bearer k3y".to_vec()),
            framing: Framing::Length(body.len()),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn requests_parse() {
        let got = parse(&call("POST", "/api/publish", r#"{"room": "/r", "to": "*", "data": "start 1"}"#), b"k3y");
        assert_eq!(
            got,
            Ok(ApiRequest::Publish { room: b"/r".to_vec(), to: To::All, data: b"start 1".to_vec(), binary: false })
        );
        let got = parse(&call("POST", "/api/publish", r#"{"room": "/r", "to": 3, "data_base64": "AAEC"}"#), b"k3y");
        assert_eq!(
            got,
            Ok(ApiRequest::Publish { room: b"/r".to_vec(), to: To::Id(3), data: vec![0, 1, 2], binary: true })
        );
        let got = parse(&call("GET", "/api/rooms?prefix=%2Fws-relay%2F&limit=5", ""), b"k3y");
        assert_eq!(got, Ok(ApiRequest::Rooms { prefix: b"/ws-relay/".to_vec(), limit: 5 }));
        let got = parse(&call("GET", "/api/presence?room=%2Fr%3Fg%3D1", ""), b"k3y");
        assert_eq!(got, Ok(ApiRequest::Presence { room: b"/r?g=1".to_vec() }));
        let got = parse(&call("POST", "/api/disconnect", r#"{"sub": "alice", "reason": "banned"}"#), b"k3y");
        assert_eq!(got, Ok(ApiRequest::Disconnect { who: Who::Subject("alice".into()), reason: "banned".into() }));
    }

    #[test]
    fn bad_requests_get_their_status() {
        let cases: [(&str, &str, &str, u16); 16] = [
            ("POST", "/api/publish", "{", 400),
            ("POST", "/api/publish", "[1]", 400),
            ("POST", "/api/publish", r#"{"room": "/r", "to": "*", "data": "x", "extra": 1}"#, 400),
            ("POST", "/api/publish", r#"{"room": 5, "to": "*", "data": "x"}"#, 400),
            ("POST", "/api/publish", r#"{"room": "/r", "to": "everyone", "data": "x"}"#, 400),
            ("POST", "/api/publish", r#"{"room": "/r", "to": 0, "data": "x"}"#, 400),
            ("POST", "/api/publish", r#"{"room": "/r", "to": -1, "data": "x"}"#, 400),
            ("POST", "/api/publish", r#"{"room": "/r", "to": 1.5, "data": "x"}"#, 400),
            ("POST", "/api/publish", r#"{"room": "/r", "to": "*"}"#, 400),
            ("POST", "/api/publish", r#"{"room": "/r", "to": "*", "data": "x", "data_base64": "eA=="}"#, 400),
            ("POST", "/api/publish", r#"{"room": "/r", "to": "*", "data_base64": "!!"}"#, 400),
            ("GET", "/api/publish", "", 405),
            ("GET", "/api/rooms?limit=0", "", 400),
            ("GET", "/api/rooms?colour=red", "", 400),
            ("POST", "/api/disconnect", r#"{"room": "/r", "sub": "x"}"#, 400),
            ("GET", "/api/everything", "", 404),
        ];
        for (method, path, body, status) in cases {
            let got = parse(&call(method, path, body), b"k3y").map_err(|e| e.status.code());
            assert_eq!(got, Err(status), "{method} {path} {body}");
        }
        let mut wrong = call("GET", "/api/rooms", "");
        wrong.authorization = Some(b"Bearer k3Y".to_vec());
        assert_eq!(parse(&wrong, b"k3y").map_err(|e| e.status.code()), Err(401));
        wrong.authorization = None;
        assert_eq!(parse(&wrong, b"k3y").map_err(|e| e.status.code()), Err(401));
        for (framing, status) in [(Framing::Chunked, 411), (Framing::TooLarge, 413), (Framing::Invalid, 400)] {
            let mut c = call("POST", "/api/publish", "");
            c.framing = framing;
            assert_eq!(parse(&c, b"k3y").map_err(|e| e.status.code()), Err(status));
        }
    }

    #[test]
    fn shards_replies_merge() {
        let a = ApiReply::Rooms(vec![(b"/b".to_vec(), 2), (b"/d".to_vec(), 1)]);
        let b = ApiReply::Rooms(vec![(b"/a".to_vec(), 3), (b"/c".to_vec(), 4)]);
        let merged = ApiReply::merge([a, b], 3);
        assert_eq!(merged, ApiReply::Rooms(vec![(b"/a".to_vec(), 3), (b"/b".to_vec(), 2), (b"/c".to_vec(), 4)]));
        assert_eq!(
            ApiReply::merge([ApiReply::Disconnected(2), ApiReply::Disconnected(1)], 0),
            ApiReply::Disconnected(3)
        );
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
