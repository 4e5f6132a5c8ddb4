//! A game's backend and the relay over real TCP: signed tokens decide who
//! joins which room, carried either way a browser can, and the server API on
//! the operator's port speaks into rooms, lists them and disconnects players.
//! Every refusal is checked with its code or status.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{json, Value};
use ws_relay::client::{upgrade_request, Received};
use ws_relay::token::{mint, unix_now};

const SECRET: &[u8] = b"the backend's secret";
const PREVIOUS: &[u8] = b"last month's secret";
const API_KEY: &str = "api key of the backend";

/// A file holding `bytes`, with the trailing newline editors add.
fn secret_file(name: &str, bytes: &[u8]) -> PathBuf {
    // One file per call: tests running at once must not read each other's half-written file.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("ws-relay-test-{}-{n}-{name}", std::process::id()));
    let mut content = bytes.to_vec();
    content.push(b'\n');
    std::fs::write(&path, content).unwrap();
    path
}

fn relay(extra: &[&str]) -> Relay {
    let secret = secret_file("secret", SECRET);
    let previous = secret_file("previous", PREVIOUS);
    let key = secret_file("api", API_KEY.as_bytes());
    let (secret, previous, key) = (secret.to_str().unwrap(), previous.to_str().unwrap(), key.to_str().unwrap());
    let mut flags = vec!["--token-secret-file", secret, "--token-previous-secret-file", previous];
    flags.extend(["--api-key-file", key, "--admin-listen", "127.0.0.1:0"]);
    flags.extend(extra);
    let started = Relay::start(&flags);
    // Read at start (the relay printed its address after that): they can go.
    for file in [secret, previous, key] {
        let _ = std::fs::remove_file(file);
    }
    started
}

fn token(claims: Value) -> String {
    mint(&claims, SECRET)
}

fn valid(room: &str) -> String {
    token(json!({"exp": unix_now() + 60.0, "room": room}))
}

/// An upgrade to `room` offering `protocols` in `Sec-WebSocket-Protocol`.
fn offer(relay: &Relay, room: &str, protocols: &str) -> Raw {
    let mut raw = Raw::connect(relay.addr);
    let req = String::from_utf8(upgrade_request(room, "x")).unwrap();
    let req = req.replace("\r\n\r\n", &format!("\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n"));
    raw.write(req.as_bytes());
    raw
}

/// Reads a 101 then the close frame that follows it at once.
fn refused(mut raw: Raw) -> (u16, String) {
    assert_eq!(raw.next(), Received::Http(101));
    match raw.next() {
        Received::Close(Some(close)) => close,
        other => panic!("a close frame, not {other:?}"),
    }
}

#[test]
fn tokens_decide_who_joins_which_room() {
    let relay = relay(&[]);
    let room = "/ws-relay/match?id=7";
    // The preferred way: a subprotocol, never echoed; the relay selects `ws-relay`.
    let mut first = offer(&relay, room, &format!("ws-relay, ws-relay.token.{}", valid(room)));
    assert_eq!(first.next(), Received::Http(101));
    assert_eq!(first.next(), Received::Text("1 self".into()));
    // The other way: a query parameter, which does not name the room.
    let mut second = relay.raw(&format!("/ws-relay/match?token={}&id=7", valid(room)));
    assert_eq!(second.next(), Received::Text("2 self".into()));
    assert_eq!(first.next(), Received::Text("2 join".into()));
    // A token signed with the previous secret still works during a rotation, for a whole prefix.
    let prefix = mint(&json!({"exp": unix_now() + 60.0, "room_prefix": "/ws-relay/match?", "sub": "carol"}), PREVIOUS);
    let mut third = offer(&relay, room, &format!("ws-relay.token.{prefix}, ws-relay"));
    assert_eq!(third.next(), Received::Http(101));
    assert_eq!(third.next(), Received::Text("3 self".into()));
    assert_eq!(first.next(), Received::Text("3 join".into()));

    let now = unix_now();
    let header = |alg: &str| base64_url(&format!(r#"{{"alg":"{alg}"}}"#));
    let none = format!("{}.{}.", header("none"), base64_url(&json!({"exp": now + 60.0, "room": room}).to_string()));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("missing", String::new(), 4401, "a token is required"),
        ("garbage", "ws-relay.token.not-a-jwt".into(), 4401, "malformed token"),
        ("alg none", format!("ws-relay.token.{none}"), 4401, "malformed token"),
        (
            "other secret",
            format!("ws-relay.token.{}", mint(&json!({"exp": now + 60.0, "room": room}), b"guess")),
            4401,
            "bad token signature",
        ),
        (
            "expired",
            format!("ws-relay.token.{}", token(json!({"exp": now - 60.0, "room": room}))),
            4401,
            "token expired",
        ),
        (
            "not yet",
            format!("ws-relay.token.{}", token(json!({"exp": now + 600.0, "nbf": now + 60.0, "room": room}))),
            4401,
            "token not yet valid",
        ),
        ("no exp", format!("ws-relay.token.{}", token(json!({"room": room}))), 4401, "malformed token"),
        (
            "string exp",
            format!("ws-relay.token.{}", token(json!({"exp": (now + 60.0).to_string(), "room": room}))),
            4401,
            "malformed token",
        ),
        (
            "number room",
            format!("ws-relay.token.{}", token(json!({"exp": now + 60.0, "room": 7}))),
            4401,
            "malformed token",
        ),
        (
            "other room",
            format!("ws-relay.token.{}", valid("/ws-relay/match?id=8")),
            4403,
            "token not valid for this room",
        ),
    ];
    for (name, offered, code, reason) in &cases {
        let raw =
            if offered.is_empty() { Raw::connect_and_upgrade(&relay, room) } else { offer(&relay, room, offered) };
        assert_eq!(refused(raw), (*code, reason.to_string()), "{name}");
    }
    // Nobody in the room heard any of them.
    first.stream.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let mut rest = Vec::new();
    let mut buf = [0u8; 1024];
    if let Ok(n) = std::io::Read::read(&mut first.stream, &mut buf) {
        first.parser.feed(&buf[..n], &mut rest).unwrap();
    }
    assert!(rest.is_empty(), "{rest:?}");
    let scrape = relay.scrape();
    assert_eq!(sample(&scrape, "ws_relay_admissions_total"), 3.0);
    assert_eq!(sample(&scrape, "ws_relay_admission_refusals_total{cause=\"token_malformed\"}"), 5.0);
    assert_eq!(sample(&scrape, "ws_relay_admission_refusals_total{cause=\"wrong_room\"}"), 1.0);
    assert_eq!(sample(&scrape, "ws_relay_closes_total{reason=\"admission_refused\"}"), cases.len() as f64);
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

impl Raw {
    /// An upgrade without any subprotocol.
    fn connect_and_upgrade(relay: &Relay, room: &str) -> Raw {
        let mut raw = Raw::connect(relay.addr);
        raw.write(&upgrade_request(room, "x"));
        raw
    }
}

/// A call to the server API: the status and the JSON body.
fn api(relay: &Relay, method: &str, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
    let auth = key.map_or_else(String::new, |k| format!("Authorization: Bearer {k}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    parse_answer(&http_to(relay.metrics.unwrap(), request.as_bytes()))
}

fn parse_answer(answer: &str) -> (u16, Value) {
    let status = answer[9..12].parse().unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("\r\nContent-Type: application/json\r\n"), "{head}");
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

fn join(relay: &Relay, room: &str, sub: &str) -> Raw {
    let t = token(json!({"exp": unix_now() + 60.0, "room": room, "sub": sub}));
    let mut raw = offer(relay, room, &format!("ws-relay, ws-relay.token.{t}"));
    assert_eq!(raw.next(), Received::Http(101));
    raw
}

#[test]
fn the_server_api_publishes_lists_and_disconnects() {
    let relay = relay(&[]);
    let key = Some(API_KEY);
    let room = "/ws-relay/arena?m=1";
    let mut alice = join(&relay, room, "alice");
    let mut bob = join(&relay, room, "bob");
    let mut alice2 = join(&relay, "/ws-relay/lobby", "alice");
    assert_eq!(
        [alice.next(), bob.next(), bob.next(), alice.next()],
        [
            Received::Text("1 self".into()),
            Received::Text("2 self".into()),
            Received::Text("1 join".into()),
            Received::Text("2 join".into())
        ]
    );
    assert_eq!(alice2.next(), Received::Text("1 self".into()));
    let (status, body) =
        api(&relay, "POST", "/api/publish", &json!({"room": room, "to": "*", "data": "start"}).to_string(), key);
    assert_eq!((status, body), (200, json!({"delivered": 2})));
    assert_eq!(alice.next(), Received::Text("0 start".into()));
    assert_eq!(bob.next(), Received::Text("0 start".into()));
    let (status, body) =
        api(&relay, "POST", "/api/publish", &json!({"room": room, "to": 2, "data_base64": "AQI="}).to_string(), key);
    assert_eq!((status, body), (200, json!({"delivered": 1})));
    assert_eq!(bob.next(), Received::Binary(b"0 \x01\x02".to_vec()));
    let (status, body) = api(&relay, "GET", "/api/rooms?prefix=%2Fws-relay%2F&limit=10", "", key);
    assert_eq!(status, 200);
    assert_eq!(body, json!({"rooms": [{"room": room, "clients": 2}, {"room": "/ws-relay/lobby", "clients": 1}]}));
    let (status, body) = api(&relay, "GET", "/api/presence?room=%2Fws-relay%2Farena%3Fm%3D1", "", key);
    assert_eq!(
        (status, body),
        (200, json!({"room": room, "members": [{"id": 1, "sub": "alice"}, {"id": 2, "sub": "bob"}]}))
    );
    let (status, _) = api(&relay, "GET", "/api/presence?room=%2Fnone", "", key);
    assert_eq!(status, 404);
    // Every connection of one account, in every room (and on every shard).
    let (status, body) = api(&relay, "POST", "/api/disconnect", r#"{"sub": "alice", "reason": "account closed"}"#, key);
    assert_eq!((status, body), (200, json!({"disconnected": 2})));
    assert_eq!(alice.next(), Received::Close(Some((4000, "account closed".into()))));
    assert_eq!(alice2.next(), Received::Close(Some((4000, "account closed".into()))));
    assert_eq!(bob.next(), Received::Text("1 quit".into()));
    let (status, body) = api(&relay, "POST", "/api/disconnect", &json!({"room": room, "id": 2}).to_string(), key);
    assert_eq!((status, body), (200, json!({"disconnected": 1})));
    assert_eq!(bob.next(), Received::Close(Some((4000, String::new()))));
}

#[test]
fn the_server_api_refuses_bad_requests_with_json_errors() {
    let relay = relay(&["--max-api-body", "100"]);
    let key = Some(API_KEY);
    let publish = |body: &str| api(&relay, "POST", "/api/publish", body, key).0;
    assert_eq!(api(&relay, "GET", "/api/rooms", "", None).0, 401);
    assert_eq!(api(&relay, "GET", "/api/rooms", "", Some("wrong")).0, 401);
    assert_eq!(publish("{"), 400);
    assert_eq!(publish("[]"), 400);
    assert_eq!(publish(r#"{"room": "/r", "to": "*", "data": "x", "colour": "red"}"#), 400);
    assert_eq!(publish(r#"{"room": ["/r"], "to": "*", "data": "x"}"#), 400);
    assert_eq!(publish(r#"{"room": "/r", "to": "all", "data": "x"}"#), 400);
    assert_eq!(publish(r#"{"room": "/r", "to": "*", "data": 5}"#), 400);
    assert_eq!(publish(r#"{"room": "/nobody/here", "to": "*", "data": "x"}"#), 404);
    assert_eq!(publish(&format!(r#"{{"room": "/r", "to": "*", "data": "{}"}}"#, "x".repeat(100))), 413);
    assert_eq!(api(&relay, "GET", "/api/publish", "", key).0, 405);
    assert_eq!(api(&relay, "POST", "/api/rooms", "", key).0, 405);
    assert_eq!(api(&relay, "GET", "/api/nothing", "", key).0, 404);
    assert_eq!(api(&relay, "GET", "/api/rooms?limit=many", "", key).0, 400);
    assert_eq!(api(&relay, "POST", "/api/disconnect", r#"{"room": "/r"}"#, key).0, 400);
    let chunked = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let (status, body) = parse_answer(&http_to(relay.metrics.unwrap(), chunked.as_bytes()));
    assert_eq!(status, 411);
    assert!(body["error"].as_str().unwrap().contains("Content-Length"), "{body}");
    // The public port has no API.
    assert!(http(&relay, b"GET /api/rooms HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 426 "));
    assert!(sample(&relay.scrape(), "ws_relay_api_requests_total") >= 16.0);
}

#[test]
fn secrets_come_from_files_and_bad_ones_stop_the_start() {
    let empty = secret_file("empty", b"");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ws-relay"))
        .args(["--listen", "127.0.0.1:0", "--token-secret-file", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"), "{}", String::from_utf8_lossy(&out.stderr));
    let key = secret_file("lonely-key", b"k");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ws-relay"))
        .args(["--listen", "127.0.0.1:0", "--api-key-file", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-listen"));
    let _ = std::fs::remove_file(empty);
    let _ = std::fs::remove_file(key);
}
