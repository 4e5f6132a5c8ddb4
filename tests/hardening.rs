//! Regressions for what a hostile review of the relay found, each over real
//! TCP against the `ws-relay` binary: answers that reach half-closed clients,
//! a FIN after a long read, a decoder that keeps its place after a refusal, a
//! flooder that cannot push on while closing, memory given back after large
//! messages, answers larger than the output bound, and HTTP edges. (Memory
//! held for a lagging reader is the core's now: `tests/protocol.rs`.)

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use ws_relay::client::{upgrade_request, OpCode, Received};
use ws_relay::testing::frame;

/// Reads until the relay closes the connection; returns everything it sent.
fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("no end of stream: {e}"),
        }
    }
}

/// A request and the client's FIN arriving together: the answer still goes out.
#[test]
fn answers_reach_clients_that_half_close() {
    let relay = Relay::start(&[]);
    for i in 0..200 {
        let mut s = TcpStream::connect(relay.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let answer = String::from_utf8(read_to_end(&mut s)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok\n"), "try {i}: {answer:?}");
    }
    for i in 0..50 {
        let mut raw = relay.raw("/ws-relay/half");
        assert_eq!(raw.next(), Received::Text("1 self".into()));
        raw.stream.write_all(&frame(OpCode::Close, &1000u16.to_be_bytes())).unwrap();
        raw.stream.shutdown(Shutdown::Write).unwrap();
        let rest = read_to_end(&mut raw.stream);
        let mut got = Vec::new();
        raw.parser.feed(&rest, &mut got).unwrap();
        assert_eq!(got, [Received::Close(Some((1000, String::new())))], "try {i}");
    }
}

/// 300 KB and a FIN in one go: more than one turn's read budget, and the
/// FIN must not be lost behind it.
#[test]
fn a_fin_after_a_long_read_is_seen() {
    let relay = Relay::start(&[]);
    let mut watcher = relay.ws(ROOM);
    text(&mut watcher);
    let mut raw = relay.raw(ROOM);
    assert_eq!(text(&mut watcher), "2 join");
    let mut burst = Vec::new();
    for i in 0..5 {
        burst.extend(frame(OpCode::Text, format!("* big{i} {}", "y".repeat(60_000)).as_bytes()));
    }
    raw.stream.write_all(&burst).unwrap();
    raw.stream.shutdown(Shutdown::Write).unwrap();
    watcher.get_ref().set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for i in 0..5 {
        assert!(text(&mut watcher).starts_with(&format!("2 big{i} ")));
    }
    let started = Instant::now();
    assert_eq!(text(&mut watcher), "2 quit", "the FIN after the burst is a quit, at once");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Flood control cuts a flooder off with 1008; the frames already on their
/// way are still decoded in step (no protocol error), charged to its budget,
/// and a flooder that goes on pushing is dropped, not read at full speed.
#[test]
fn a_flooder_is_counted_as_one_and_cannot_push_on_while_closing() {
    let relay = Relay::start(&["--flood-messages", "100", "--flood-burst", "20"]);
    let mut watcher = relay.ws(ROOM);
    text(&mut watcher);
    let mut flooder = relay.raw(ROOM);
    let message = frame(OpCode::Text, format!("* {}", "f".repeat(1000)).as_bytes());
    let burst: Vec<u8> = message.iter().copied().cycle().take(message.len() * 100).collect();
    flooder.write(&burst);
    loop {
        match flooder.next() {
            Received::Close(close) => {
                assert_eq!(close, Some((1008, "rate limit exceeded".to_owned())));
                break;
            }
            Received::Text(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    // It goes on sending without reading: the relay ends it instead of reading on.
    flooder.stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut written = 0usize;
    let ended = loop {
        match flooder.stream.write(&burst) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        if written > 64 << 20 {
            panic!("the relay read 64 MB from a client it had closed");
        }
    };
    assert!(
        matches!(ended.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "{ended} after {written} bytes"
    );
    let scrape = relay.scrape();
    assert_eq!(sample(&scrape, "ws_relay_closes_total{reason=\"rate_limited\"}"), 1.0);
    assert_eq!(sample(&scrape, "ws_relay_closes_total{reason=\"protocol_error\"}"), 0.0);
}

/// After a 1008 the rest of the same read is decoded in step: the client's
/// close frame behind a bad message completes the close handshake.
#[test]
fn the_close_frame_behind_a_refused_message_is_read_in_step() {
    let relay = Relay::start(&["--close-timeout", "10s"]);
    let mut raw = relay.raw(ROOM);
    assert_eq!(raw.next(), Received::Text("1 self".into()));
    let mut both = frame(OpCode::Text, b"nobody here");
    both.extend(frame(OpCode::Text, b"* ignored while closing"));
    both.extend(frame(OpCode::Close, &1000u16.to_be_bytes()));
    raw.write(&both);
    assert!(matches!(raw.next(), Received::Close(Some((1008, _)))));
    let started = Instant::now();
    assert!(raw.closed_by_server(), "the close handshake completed");
    assert!(started.elapsed() < Duration::from_secs(2), "at once, not after the close timeout");
    let scrape = relay.scrape();
    assert_eq!(sample(&scrape, "ws_relay_closes_total{reason=\"relay_error\"}"), 1.0);
    assert_eq!(sample(&scrape, "ws_relay_closes_total{reason=\"protocol_error\"}"), 0.0);
}

/// Clients that each sent one large message, or only a header claiming one,
/// hold no message memory while they idle.
#[test]
fn memory_for_large_messages_is_given_back() {
    let relay = Relay::start(&[]);
    let mut watcher = relay.ws(ROOM);
    text(&mut watcher);
    let big = frame(OpCode::Binary, format!("* {}", "z".repeat(60_000)).as_bytes());
    let mut idle = Vec::new();
    for i in 0..40 {
        let mut raw = relay.raw(ROOM);
        // Half send a whole 60 KB message, half only the header that claims one.
        raw.write(if i % 2 == 0 { &big } else { &big[..8] });
        idle.push(raw);
    }
    // Every whole message was relayed (with a join for each newcomer) before the scrape.
    let mut bigs = 0;
    while bigs < 20 {
        match watcher.read().unwrap() {
            tungstenite::Message::Binary(b) => bigs += usize::from(b.len() > 60_000),
            _ => continue,
        }
    }
    let input = sample(&relay.scrape(), "ws_relay_buffer_bytes{buffer=\"input\"}");
    assert!(input < 40.0 * 4096.0, "{input} bytes of message buffers held for 40 idle clients");
}

/// The relay's own answers fit whatever bound the configuration allows: a
/// page larger than `--max-pending`, and a newcomer's join list in a full room.
#[test]
fn answers_larger_than_the_output_bound_are_sent_whole() {
    let relay = Relay::start(&["--max-message", "4000", "--max-pending", "8192", "--max-room-clients", "100"]);
    for (path, file) in [("/", "web/index.html"), ("/ws-relay.js", "web/ws-relay.js")] {
        let page = std::fs::read_to_string(file).unwrap();
        assert!(page.len() > 8192);
        let answer = http(&relay, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with(&page), "{path}");
    }
    let room = "/ws-relay/full";
    let mut first = relay.ws(room);
    text(&mut first);
    let mut others: Vec<_> = (2..100).map(|_| relay.raw(room)).collect();
    let mut last = relay.ws(room);
    assert_eq!(texts(&mut last, 100).len(), 100, "self and 99 joins");
    send(&mut last, &format!("* {}", "w".repeat(3900)));
    let heard = (0..100).map(|_| text(&mut first)).find(|t| t.starts_with("100 w")).expect("the message");
    assert_eq!(heard.len(), 3904);
    others.clear();
}

#[test]
fn http_edges() {
    let relay = Relay::start(&[]);
    // Empty lines before the request line are skipped, and HEAD is judged by the method.
    let head = http(&relay, b"\r\nHEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head:?}");
    // The absolute form names its path and query.
    let mut watcher = relay.ws("/ws-relay/abs?g=1");
    text(&mut watcher);
    let mut raw = Raw::connect(relay.addr);
    let request = String::from_utf8(upgrade_request("/ws-relay/abs?g=1", "x")).unwrap();
    raw.write(request.replacen("/ws-relay/abs?g=1", "http://relay.example/ws-relay/abs?g=1", 1).as_bytes());
    assert_eq!(raw.next(), Received::Http(101));
    assert_eq!(raw.next(), Received::Text("2 self".into()));
    assert_eq!(text(&mut watcher), "2 join");
    // What can never become a request is refused at once, not after the handshake timeout.
    let started = Instant::now();
    let answer = http(&relay, b"\x00\x01\x02");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    let mut hello = TcpStream::connect(relay.addr).unwrap();
    hello.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    hello.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").unwrap();
    assert_eq!(read_to_end(&mut hello), b"", "a TLS client is closed without an answer it could not read");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(sample(&relay.scrape(), "ws_relay_handshakes_rejected_total{status=\"400\"}"), 2.0);
}
