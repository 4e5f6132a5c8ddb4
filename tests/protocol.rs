//! The core driven without sockets: bytes in, bytes out, a simulated clock.
//! Every assertion is about what a client would see on the wire.

use std::collections::BTreeMap;
use std::time::Duration;

use ws_relay::client::{masked_frame, upgrade_request, FrameHeader, OpCode, Received};
use ws_relay::testing::{close_code, close_frame, frame, Sim};
use ws_relay::{Capacity, CloseKind, CloseReason, Config, FloodLimits, HandshakeError, Listener, MessageLimits, Mode};

use Received::{Binary, Close, Http, Ping, Pong, Text};

const ROOM: &str = "/ws-relay/spacewar";

#[test]
fn the_seed_three_client_table() {
    let mut s = Sim::relay();
    let c1 = s.join(ROOM);
    assert_eq!(s.texts(c1), ["1 self"]);
    let c2 = s.join(ROOM);
    assert_eq!(s.texts(c2), ["2 self", "1 join"]);
    assert_eq!(s.texts(c1), ["2 join"]);
    let c3 = s.join(ROOM);
    assert_eq!(s.texts(c3), ["3 self", "1 join", "2 join"]);
    assert_eq!(s.texts(c1), ["3 join"]);
    assert_eq!(s.texts(c2), ["3 join"]);
    s.send(c1, "2 hello");
    assert_eq!(s.texts(c2), ["1 hello"]);
    assert!(s.take(c1).is_empty() && s.take(c3).is_empty());
    s.send(c1, "* hello");
    assert_eq!(s.texts(c2), ["1 hello"]);
    assert_eq!(s.texts(c3), ["1 hello"]);
    assert!(s.take(c1).is_empty(), "`*` never echoes to the sender");
    s.feed(c3, &close_frame(1000));
    assert_eq!(s.take(c3), [Close(Some((1000, String::new())))]);
    assert_eq!(s.closed(c3).unwrap(), CloseReason::ClientClose);
    assert_eq!(s.texts(c1), ["3 quit"]);
    assert_eq!(s.texts(c2), ["3 quit"]);
    s.drop_transport(c2);
    assert_eq!(s.closed(c2).unwrap(), CloseReason::TransportClosed);
    assert_eq!(s.texts(c1), ["2 quit"]);
    s.drop_transport(c1);
    assert_eq!(s.relay.connections(), 0);
    assert_eq!(s.relay.rooms(), 0);
}

#[test]
fn routing_direct_self_and_unknown() {
    let mut s = Sim::relay();
    let (a, b) = (s.join(ROOM), s.join(ROOM));
    s.take(a);
    s.take(b);
    s.send(a, "1 note to self");
    assert_eq!(s.texts(a), ["1 note to self"]);
    assert!(s.take(b).is_empty());
    for target in ["9", "007", "0", "+2", "-2", "99999999999999999999999"] {
        s.send(a, &format!("{target} lost"));
    }
    assert!(s.take(a).is_empty() && s.take(b).is_empty());
    assert_eq!(s.relay.stats().undeliverable, 6);
    s.send(a, " \t\x0B\x0C\r\n2 \t  offer  v=0\r\n  o=- 1 ");
    assert_eq!(s.texts(b), ["1 offer  v=0\r\n  o=- 1 "], "rest is verbatim after the whitespace run");
    assert!(s.peers().iter().all(|p| p.closed.is_none()));
}

#[test]
fn rooms_are_the_whole_target_and_ids_restart() {
    let mut s = Sim::relay();
    let g1 = s.join("/ws-relay/spacewar?game=1");
    let g2 = s.join("/ws-relay/spacewar?game=2");
    let plain = s.join("/ws-relay/spacewar");
    for c in [g1, g2, plain] {
        assert_eq!(s.texts(c), ["1 self"]);
    }
    s.send(g1, "* anyone");
    assert!(s.take(g2).is_empty() && s.take(plain).is_empty());

    let room = "/ws-relay/ids";
    let a = s.join(room);
    let b = s.join(room);
    s.drop_transport(b);
    let c = s.join(room);
    assert_eq!(s.texts(c), ["3 self", "1 join"], "ids are never reused while the room lives");
    s.drop_transport(a);
    s.drop_transport(c);
    let d = s.join(room);
    assert_eq!(s.texts(d), ["1 self"], "an emptied room numbers from 1 again");
}

#[test]
fn binary_is_relayed_byte_for_byte() {
    let mut s = Sim::relay();
    let (a, b, c) = (s.join(ROOM), s.join(ROOM), s.join(ROOM));
    for x in [a, b, c] {
        s.take(x);
    }
    // One space after the target, then the payload byte for byte: leading
    // whitespace, nothing at all, or a word the relay's notices use.
    s.feed(a, &frame(OpCode::Binary, b"* \t\xff\x00\x80 raw"));
    let want = Binary(b"1 \t\xff\x00\x80 raw".to_vec());
    assert_eq!(s.take(b), std::slice::from_ref(&want));
    assert_eq!(s.take(c), [want]);
    for payload in [&b"\x01"[..], b"", b"self", b"  quit"] {
        s.feed(c, &frame(OpCode::Binary, &[&b"2 "[..], payload].concat()));
        assert_eq!(s.take(b), [Binary([&b"3 "[..], payload].concat())]);
    }
    // The separator is one space: a tab is no separator, so this target is no target.
    s.feed(a, &frame(OpCode::Binary, b"*\tx y"));
    assert_eq!(close_code(&s.take(a)), Some(1008));
}

#[test]
fn malformed_relay_messages_close_with_1008() {
    for bad in ["", "   ", "bob hi", "** hi", "3", "2 \t ", "\u{e9}1 x", "* quit", "1 join", "* self"] {
        let mut s = Sim::relay();
        let (a, b) = (s.join(ROOM), s.join(ROOM));
        s.take(a);
        s.take(b);
        s.send(b, bad);
        let got = s.take(b);
        let [Close(Some((1008, reason)))] = &got[..] else { panic!("{bad:?}: {got:?}") };
        assert!(!reason.is_empty());
        assert_eq!(s.texts(a), ["2 quit"], "{bad:?}: the room hears the quit at once");
        assert!(s.closed(b).is_none(), "the relay waits for the client's close frame");
        s.send(b, "* ignored while closing");
        assert!(s.take(a).is_empty());
        s.feed(b, &close_frame(1000));
        assert!(
            matches!(s.closed(b).unwrap(), CloseReason::Relay(_)),
            "{bad:?}: closed after the client's close frame"
        );
    }
}

#[test]
fn close_timeout_when_the_client_never_answers() {
    let config = Config { close_timeout: Duration::from_secs(3), ..Config::default() };
    let mut s = Sim::new(config);
    let a = s.join(ROOM);
    s.send(a, "nobody");
    assert_eq!(close_code(&s.take(a)), Some(1008));
    s.advance(Duration::from_millis(2999));
    assert!(s.peers().iter().all(|p| p.closed.is_none()));
    s.advance(Duration::from_millis(1));
    assert!(matches!(s.closed(a).unwrap(), CloseReason::Relay(_)), "the close keeps its cause");
}

#[test]
fn protocol_errors_fail_the_connection_with_their_code() {
    let limits = MessageLimits { max_message: 100, max_fragments: 4 };
    let mut unmasked = Vec::new();
    unmasked.extend_from_slice(b"\x81\x04* hi");
    let mut rsv = frame(OpCode::Text, b"* hi");
    rsv[0] |= 0x20;
    let mut reserved = frame(OpCode::Text, b"* hi");
    reserved[0] = 0x83;
    let mut split_utf8 = Vec::new();
    masked_frame(&mut split_utf8, false, OpCode::Text, b"* caf\xc3", [1, 2, 3, 4]);
    masked_frame(&mut split_utf8, true, OpCode::Continuation, b"\x28", [1, 2, 3, 4]);
    let mut oversize_header = Vec::new();
    FrameHeader { fin: true, rsv1: false, opcode: OpCode::Binary, mask: Some([0; 4]), len: 101 }
        .encode(&mut oversize_header);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", unmasked, 1002),
        ("rsv bit", rsv, 1002),
        ("reserved opcode", reserved, 1002),
        ("bad utf-8", frame(OpCode::Text, b"* \xff"), 1007),
        ("utf-8 split across fragments", split_utf8, 1007),
        ("oversize, header only", oversize_header, 1009),
        ("long ping", frame(OpCode::Ping, &[0; 126]), 1002),
        ("invalid close code", close_frame(1005), 1002),
        ("close reason not utf-8", frame(OpCode::Close, b"\x03\xe8\xff"), 1007),
        ("stray continuation", frame(OpCode::Continuation, b"x"), 1002),
    ];
    for (name, bytes, code) in cases {
        let mut s = Sim::new(Config { message: limits, ..Config::default() });
        let (a, b) = (s.join(ROOM), s.join(ROOM));
        s.take(a);
        s.take(b);
        s.feed(b, &bytes);
        assert_eq!(close_code(&s.take(b)), Some(code), "{name}");
        assert!(matches!(s.closed(b).as_ref(), Some(CloseReason::Protocol(_))), "{name}: dropped at once");
        assert_eq!(s.texts(a), ["2 quit"], "{name}");
    }
}

#[test]
fn ping_pong_and_fragments_with_a_ping_between() {
    let mut s = Sim::relay();
    let (a, b) = (s.join(ROOM), s.join(ROOM));
    s.take(a);
    s.take(b);
    s.feed(a, &frame(OpCode::Ping, b"are you there"));
    assert_eq!(s.take(a), [Pong(b"are you there".to_vec())]);
    let mut wire = Vec::new();
    masked_frame(&mut wire, false, OpCode::Text, b"* rep", [9, 8, 7, 6]);
    masked_frame(&mut wire, true, OpCode::Ping, b"mid", [9, 8, 7, 6]);
    masked_frame(&mut wire, false, OpCode::Continuation, b"ort {\"x\":", [9, 8, 7, 6]);
    masked_frame(&mut wire, true, OpCode::Continuation, b"1}", [9, 8, 7, 6]);
    s.feed(a, &wire);
    assert_eq!(s.take(a), [Pong(b"mid".to_vec())]);
    assert_eq!(s.texts(b), ["1 report {\"x\":1}"]);
}

/// A whole session's client bytes, fed whole and then split at every byte
/// boundary: every client must receive exactly the same bytes.
#[test]
fn every_split_gives_the_same_result() {
    let mut script = upgrade_request(ROOM, "test");
    script.extend(frame(OpCode::Text, b"* hello there"));
    script.extend(frame(OpCode::Ping, b"p"));
    let mut frag = Vec::new();
    masked_frame(&mut frag, false, OpCode::Binary, b"1 bi", [5, 5, 5, 5]);
    masked_frame(&mut frag, true, OpCode::Continuation, b"nary", [5, 5, 5, 5]);
    script.extend(frag);
    script.extend(frame(OpCode::Text, "1 \u{1F680} rocket".as_bytes()));
    script.extend(close_frame(1000));

    let run = |cuts: &[usize]| {
        let mut s = Sim::relay();
        let watcher = s.join(ROOM);
        let c = s.connect_raw(b"");
        let mut last = 0;
        for &cut in cuts.iter().chain([&script.len()]) {
            s.feed(c, &script[last..cut]);
            last = cut;
        }
        (s.raw(watcher).to_vec(), s.raw(c).to_vec(), s.closed(c))
    };
    let whole = run(&[]);
    assert!(whole.0.ends_with(b"\x81\x0d2 hello there\x82\x082 binary\x81\x0d2 \xf0\x9f\x9a\x80 rocket\x81\x062 quit"));
    assert_eq!(whole.2, Some(CloseReason::ClientClose));
    for cut in 1..script.len() {
        assert_eq!(run(&[cut]), whole, "split at {cut}");
    }
    let bytewise: Vec<usize> = (1..script.len()).collect();
    assert_eq!(run(&bytewise), whole, "one byte at a time");
}

#[test]
fn handshake_answers_and_leftover_bytes() {
    let mut s = Sim::relay();
    let watcher = s.join(ROOM);
    s.take(watcher);
    let mut both = upgrade_request(ROOM, "x");
    both.extend(frame(OpCode::Text, b"* first frame rides with the request"));
    let c = s.connect_raw(&both);
    assert_eq!(s.take(c), [Http(101), Text("2 self".into()), Text("1 join".into())]);
    assert_eq!(s.texts(watcher), ["2 join", "2 first frame rides with the request"]);

    let good = String::from_utf8(upgrade_request(ROOM, "x")).unwrap();
    let cases = [
        (good.replace("GET", "POST"), 405, "Allow: GET"),
        (good.replace("Version: 13", "Version: 8"), 426, "Sec-WebSocket-Version: 13"),
        (good.replace("dGhlIHNhbXBsZSBub25jZQ==", "tooshort"), 400, "Connection: close"),
        ("GET /ws-relay/x HTTP/1.1\r\nHost: x\r\n\r\n".into(), 426, "Upgrade: websocket"),
        (format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000)), 431, "Connection: close"),
        ("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".into(), 200, "\r\n\r\nok\n"),
    ];
    for (request, status, needle) in cases {
        let c = s.connect_raw(request.as_bytes());
        assert_eq!(s.take(c), [Http(status)], "{request}");
        let raw = String::from_utf8(s.raw(c).to_vec()).unwrap();
        assert!(raw.contains(needle), "{status}: {raw}");
        assert!(s.closed(c).is_some(), "{status} is followed by closing the connection");
    }
    let refused: Vec<(u16, u64)> = s.relay.stats().refusals().collect();
    assert_eq!(refused, [(400, 1), (405, 1), (426, 2), (431, 1)], "every refusal is counted by status");
    assert_eq!(s.relay.stats().closes(CloseKind::HandshakeRefused), 5);
    assert_eq!(s.relay.stats().closes(CloseKind::HttpServed), 1);
}

#[test]
fn handshake_timeout_is_exact() {
    let config = Config { handshake_timeout: Duration::from_secs(10), ..Config::default() };
    let mut s = Sim::new(config);
    let c = s.connect_raw(b"GET /ws-relay/slow HTTP/1.1\r\nHo");
    assert_eq!(s.relay.poll_timeout(), Some(s.start + Duration::from_secs(10)));
    s.advance(Duration::from_millis(9999));
    assert!(s.take(c).is_empty());
    s.advance(Duration::from_millis(1));
    assert_eq!(s.take(c), [Http(408)]);
    assert!(matches!(s.closed(c).unwrap(), CloseReason::Handshake(_)));
}

#[test]
fn keepalive_pings_quiet_clients_and_closes_silent_ones() {
    let config =
        Config { ping_interval: Duration::from_secs(1), ping_timeout: Duration::from_secs(1), ..Config::default() };
    let mut s = Sim::new(config);
    let (talker, silent) = (s.join(ROOM), s.join(ROOM));
    s.take(talker);
    s.take(silent);
    s.advance(Duration::from_millis(500));
    s.send(talker, "1 still here");
    s.take(talker);
    s.advance(Duration::from_millis(500));
    assert_eq!(s.take(silent), [Ping(b"keepalive".to_vec())]);
    assert!(s.take(talker).is_empty(), "activity postpones the ping");
    s.advance(Duration::from_millis(500));
    assert_eq!(s.take(talker), [Ping(b"keepalive".to_vec())]);
    s.feed(talker, &frame(OpCode::Pong, b"keepalive"));
    s.advance(Duration::from_millis(500));
    let got = s.take(silent);
    assert_eq!(close_code(&got), Some(1011), "{got:?}");
    assert_eq!(s.closed(silent).unwrap(), CloseReason::KeepaliveTimeout);
    assert_eq!(s.texts(talker), ["2 quit"]);
    assert!(s.closed(talker).is_none(), "a client that answered stays");
}

/// Keepalive runs both ways: a client that keeps sending but is sent
/// nothing (alone in its room) is pinged each interval all the same, so a
/// proxy in front that times out a direction idle for long sees traffic.
#[test]
fn a_client_the_relay_sends_nothing_is_pinged_though_it_talks() {
    let config =
        Config { ping_interval: Duration::from_secs(1), ping_timeout: Duration::from_secs(1), ..Config::default() };
    let mut s = Sim::new(config);
    let talker = s.join(ROOM);
    s.take(talker);
    let mut pings = 0;
    for _ in 0..12 {
        s.advance(Duration::from_millis(250));
        s.send(talker, "* anyone?");
        pings += s.take(talker).iter().filter(|r| matches!(r, Ping(_))).count();
    }
    assert_eq!(pings, 3, "one ping for each second it was sent nothing");
    assert!(s.closed(talker).is_none(), "talking answers a ping as well as a pong does");
}

#[test]
fn shutdown_sends_1001_and_refuses_handshakes() {
    let mut s = Sim::relay();
    let (a, b) = (s.join(ROOM), s.join(ROOM));
    let half = s.connect_raw(b"GET / HTTP/1.1\r\n");
    s.take(a);
    s.take(b);
    s.relay.shutdown(s.now);
    s.drain();
    assert_eq!(close_code(&s.take(a)), Some(1001));
    assert_eq!(s.take(b).len(), 1, "no quit notices during shutdown, only the close");
    assert_eq!(s.take(half), [Http(503)]);
    s.feed(a, &close_frame(1001));
    s.feed(b, &close_frame(1001));
    assert_eq!(s.relay.connections(), 0);
    let late = s.connect_raw(&upgrade_request(ROOM, "x"));
    assert_eq!(s.take(late), [Http(503)]);
}

#[test]
fn echo_mode_echoes_text_and_binary() {
    let config = Config {
        mode: Mode::Echo,
        message: MessageLimits { max_message: 1 << 21, max_fragments: 1 << 12 },
        max_pending: 1 << 22,
        ..Config::default()
    };
    let mut s = Sim::new(config);
    let c = s.join("/anything");
    assert!(s.take(c).is_empty(), "echo mode sends no relay notices");
    s.send(c, "no target needed");
    s.feed(c, &frame(OpCode::Binary, b"\x00\x01"));
    assert_eq!(s.take(c), [Text("no target needed".into()), Binary(vec![0, 1])]);
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut wire = Vec::new();
    for (i, piece) in big.chunks(4096).enumerate() {
        let op = if i == 0 { OpCode::Binary } else { OpCode::Continuation };
        masked_frame(&mut wire, (i + 1) * 4096 >= big.len(), op, piece, [1, 2, 3, 4]);
    }
    s.feed(c, &wire);
    assert_eq!(s.take(c), [Binary(big)]);
}

#[test]
fn same_inputs_same_outputs() {
    let run = || {
        let mut s = Sim::relay();
        let a = s.join(ROOM);
        let b = s.join("/other");
        let c = s.join(ROOM);
        s.send(a, "* x");
        s.send(c, "1 y");
        s.advance(Duration::from_secs(40));
        s.drop_transport(b);
        s.send(a, "bad");
        s.advance(Duration::from_secs(40));
        (
            s.peers().iter().map(|p| p.raw.clone()).collect::<Vec<_>>(),
            s.peers().iter().map(|p| p.closed).collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(), run());
}

#[test]
fn joins_and_quits_are_atomic_with_messages() {
    let mut s = Sim::relay();
    // Two upgrades in the same turn, before any action is drained.
    let a = s.connect_on(Listener::Public);
    let b = s.connect_on(Listener::Public);
    s.relay.handle_read(a, &upgrade_request(ROOM, "x"), s.now);
    s.relay.handle_read(b, &upgrade_request(ROOM, "x"), s.now);
    s.drain();
    assert_eq!(s.take(a), [Http(101), Text("1 self".into()), Text("2 join".into())]);
    assert_eq!(s.take(b), [Http(101), Text("2 self".into()), Text("1 join".into())]);

    // A peer leaves and, in the same turn, a message to everyone arrives.
    s.relay.handle_close(b, s.now);
    s.relay.handle_read(a, &frame(OpCode::Text, b"* anyone?"), s.now);
    s.relay.handle_read(a, &frame(OpCode::Text, b"2 you?"), s.now);
    s.drain();
    assert_eq!(s.texts(a), ["2 quit"]);
    assert!(s.closed(a).is_none(), "sending while a peer leaves never disconnects the sender");

    // A newcomer right after the quit never sees the departed peer.
    let c = s.join(ROOM);
    assert_eq!(s.texts(c), ["3 self", "1 join"]);
}

#[test]
fn caps_refuse_upgrades_with_503() {
    let capacity = Capacity { max_clients: 3, max_room_clients: 2, max_rooms: 2, ..Config::DEFAULT.capacity };
    let mut s = Sim::new(Config { capacity, ..Config::default() });
    let (a, _b) = (s.join("/r1"), s.join("/r1"));
    let full = s.connect_raw(&upgrade_request("/r1", "x"));
    assert_eq!(s.take(full), [Http(503)]);
    assert!(String::from_utf8_lossy(s.raw(full)).contains("room full"));
    let c = s.join("/r2");
    let third_room = s.connect_raw(&upgrade_request("/r3", "x"));
    assert_eq!(s.take(third_room), [Http(503)], "max_clients and max_rooms are both reached");
    s.drop_transport(c);
    let r3 = s.connect_raw(&upgrade_request("/r3", "x"));
    assert_eq!(s.take(r3)[0], Http(101), "a freed place is usable again");
    s.drop_transport(a);
    let again = s.connect_raw(&upgrade_request("/r3", "x"));
    assert_eq!(s.take(again)[0], Http(101));
    let over = s.connect_raw(&upgrade_request("/r1", "x"));
    assert_eq!(s.take(over), [Http(503)], "three clients: the relay is full");
    assert!(String::from_utf8_lossy(s.raw(over)).contains("server full"));
}

#[test]
fn slow_requests_are_pushed_out_by_new_ones_past_max_handshakes() {
    let capacity = Capacity { max_handshakes: 2, ..Config::default().capacity };
    let mut s = Sim::new(Config { capacity, ..Config::default() });
    let half = b"GET /ws-relay/r HTTP/1.1\r\nHost: x\r\n";
    let (slow1, slow2) = (s.connect_raw(half), s.connect_raw(half));
    let member = s.join("/ws-relay/r");
    assert_eq!(s.take(slow1), [Http(503)], "the oldest request in progress makes way");
    assert!(String::from_utf8_lossy(s.raw(slow1)).contains("too many requests in progress"));
    assert_eq!(s.closed(slow1).unwrap(), CloseReason::Handshake(HandshakeError::TooManyHandshakes));
    assert!(s.closed(slow2).is_none());
    // Upgraded clients and finished requests do not count.
    let slow3 = s.connect_raw(half);
    assert!(s.closed(slow2).is_none() && s.closed(slow3).is_none());
    assert_eq!(s.texts(member), ["1 self"]);
    // The slow ones can still finish while they are within the cap.
    s.feed(slow2, b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    assert_eq!(s.take(slow2)[0], Http(101));
    let (slow4, slow5) = (s.connect_raw(half), s.connect_raw(half));
    assert_eq!(s.take(slow3), [Http(503)]);
    assert!(s.closed(slow4).is_none() && s.closed(slow5).is_none());
}

#[test]
fn origin_allow_list_refuses_other_sites_with_403() {
    let allowed_origins = Some(vec!["https://game.example".to_owned()]);
    let mut s = Sim::new(Config { allowed_origins, ..Config::default() });
    let with_origin = |origin: &str| {
        String::from_utf8(upgrade_request(ROOM, "x"))
            .unwrap()
            .replace("\r\n\r\n", &format!("\r\nOrigin: {origin}\r\n\r\n"))
    };
    let evil = s.connect_raw(with_origin("https://evil.example").as_bytes());
    assert_eq!(s.take(evil), [Http(403)]);
    let good = s.connect_raw(with_origin("https://game.example").as_bytes());
    assert_eq!(s.take(good), [Http(101), Text("1 self".into())]);
    let tool = s.connect_raw(&upgrade_request(ROOM, "x"));
    assert_eq!(s.take(tool)[0], Http(101), "clients without an Origin are not browsers");
}

#[test]
fn flood_control_closes_a_flooding_client_with_1008() {
    let flood = Some(FloodLimits {
        messages_per_second: 60,
        message_burst: 10,
        bytes_per_second: 1_000_000,
        byte_burst: 1_000_000,
    });
    let mut s = Sim::new(Config { flood, ..Config::default() });
    let (game, flooder) = (s.join(ROOM), s.join(ROOM));
    s.take(game);
    s.take(flooder);
    // A 60 Hz game is never limited.
    for _ in 0..600 {
        s.advance(Duration::from_micros(16_667));
        s.send(game, "* report {}");
    }
    assert_eq!(s.texts(flooder).len(), 600);
    let mut burst = Vec::new();
    for _ in 0..11 {
        burst.extend(frame(OpCode::Text, b"* spam"));
    }
    s.feed(flooder, &burst);
    assert_eq!(s.texts(game), vec!["2 spam"; 10].into_iter().chain(["2 quit"]).collect::<Vec<_>>());
    let got = s.take(flooder);
    let [Close(Some((1008, reason)))] = &got[..] else { panic!("{got:?}") };
    assert_eq!(reason, "rate limit exceeded");
}

/// Sends a plain `GET path` on `listener` and returns the whole response as
/// text, checking the core closed the connection after it.
fn get(s: &mut Sim, listener: Listener, path: &str) -> String {
    request(s, listener, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

/// Sends `request` on a new connection on `listener` and returns the whole
/// answer, checking the core closed the connection after it.
fn request(s: &mut Sim, listener: Listener, request: &str) -> String {
    let c = s.connect_on(listener);
    s.feed(c, request.as_bytes());
    assert!(s.closed(c).is_some(), "{request:?}: the connection stays open");
    assert_eq!(s.relay.pending(c), b"", "{request:?}: all of the answer was written");
    String::from_utf8(s.raw(c).to_vec()).unwrap()
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").expect("a complete head").1
}

#[test]
fn the_demo_and_the_browser_helper_are_served_from_the_repo() {
    use Listener::{Admin, Public};
    let mut s = Sim::relay();
    let files = [
        ("/", "web/index.html", "text/html; charset=utf-8"),
        ("/index.html?game=2", "web/index.html", "text/html; charset=utf-8"),
        ("/ws-relay.js", "web/ws-relay.js", "text/javascript; charset=utf-8"),
        ("/ws-relay.d.ts", "web/ws-relay.d.ts", "application/typescript; charset=utf-8"),
    ];
    for (path, file, content_type) in files {
        let want = std::fs::read_to_string(file).unwrap();
        let got = get(&mut s, Public, path);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {got}");
        assert!(got.contains(&format!("\r\nContent-Type: {content_type}\r\n")), "{path}");
        assert!(got.contains(&format!("\r\nContent-Length: {}\r\n", want.len())), "{path}");
        assert_eq!(body(&got), want, "{path}");
        // The operator's port serves nothing a browser would load.
        assert!(get(&mut s, Admin, path).starts_with("HTTP/1.1 404 "), "{path} on the metrics port");
    }
    // HEAD: the same head, Content-Length included, and no body.
    let head =
        |s: &mut Sim, listener, path: &str| request(s, listener, &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let index = std::fs::read("web/index.html").unwrap().len();
    let got = head(&mut s, Public, "/");
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains(&format!("\r\nContent-Length: {index}\r\n")) && got.ends_with("\r\n\r\n"), "{got}");
    let got = head(&mut s, Admin, "/metrics");
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("\r\n\r\n"), "{got}");
    let got = head(&mut s, Public, "/ws-relay/room");
    assert!(
        got.starts_with("HTTP/1.1 426 ") && got.ends_with("\r\n\r\n"),
        "a refusal to HEAD has no body either: {got}"
    );
    let mut quiet = Sim::new(Config { serve_pages: false, ..Config::default() });
    assert!(get(&mut quiet, Public, "/ws-relay.js").starts_with("HTTP/1.1 404 "));
    assert!(get(&mut quiet, Public, "/healthz").starts_with("HTTP/1.1 200 "));
}

#[test]
fn metrics_count_a_known_exchange() {
    use Listener::{Admin, Public};
    let mut s = Sim::relay();
    let c1 = s.join(ROOM);
    let c2 = s.join(ROOM);
    let c3 = s.join(ROOM);
    s.send(c1, "2 hello");
    s.send(c1, "* hello");
    s.send(c1, "7 nobody");
    s.send(c3, "* self");
    assert_eq!(close_code(&s.take(c3)), Some(1008));
    s.feed(c3, &close_frame(1000));
    s.drop_transport(c2);
    s.connect_raw(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n");
    let wire: usize = s.peers().iter().map(|p| p.raw.len()).sum();
    let exposition = get(&mut s, Admin, "/metrics");
    assert!(exposition.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    let values: BTreeMap<&str, &str> = body(&exposition)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').expect("name value"))
        .collect();
    let expect = [
        ("ws_relay_clients", "1"),
        ("ws_relay_rooms", "1"),
        // The scrape's own connection is open while the page is made.
        ("ws_relay_open_connections", "2"),
        ("ws_relay_connections_accepted_total", "5"),
        ("ws_relay_upgrades_total", "3"),
        ("ws_relay_messages_received_total", "4"),
        // Joins: 1 + 3 + 5; messages: 1 + 2; quits: 2 (c3 to c1 and c2) + 1 (c2 to c1).
        ("ws_relay_messages_delivered_total", "15"),
        ("ws_relay_messages_dropped_total{reason=\"no_such_id\"}", "1"),
        ("ws_relay_closes_total{reason=\"relay_error\"}", "1"),
        ("ws_relay_closes_total{reason=\"transport_closed\"}", "1"),
        ("ws_relay_closes_total{reason=\"handshake_refused\"}", "1"),
        ("ws_relay_closes_total{reason=\"client_close\"}", "0"),
        ("ws_relay_handshakes_rejected_total{status=\"405\"}", "1"),
        ("ws_relay_handshakes_rejected_total{status=\"503\"}", "0"),
        ("ws_relay_loop_turn_seconds_count", "0"),
    ];
    for (name, value) in expect {
        assert_eq!(values.get(name), Some(&value), "{name}");
    }
    let sent: u64 = values["ws_relay_sent_bytes_total"].parse().unwrap();
    assert_eq!(sent, wire as u64, "every byte queued is counted once per recipient");
    let received: u64 = values["ws_relay_received_bytes_total"].parse().unwrap();
    assert!(received > 3 * 100, "the three upgrade requests at least: {received}");
    // The public port serves /metrics only when no separate port is configured.
    assert!(get(&mut s, Public, "/metrics").starts_with("HTTP/1.1 200 "));
    let mut split = Sim::new(Config { serve_metrics: false, ..Config::default() });
    assert!(get(&mut split, Public, "/metrics").starts_with("HTTP/1.1 404 "));
    assert!(get(&mut split, Admin, "/metrics").starts_with("HTTP/1.1 200 "));
    // Upgrades are for the public port only.
    let upgrade = String::from_utf8(upgrade_request(ROOM, "test")).unwrap();
    assert!(request(&mut split, Admin, &upgrade).starts_with("HTTP/1.1 404 "));
}

/// A client that reads, but never quite catches up: the relay always holds
/// part of its stream and never all of it. The memory held for it must follow
/// that backlog, not everything written since the backlog was last empty.
#[test]
fn memory_held_for_a_lagging_reader_follows_its_backlog() {
    let mut s = Sim::relay();
    let (sender, reader) = (s.join(ROOM), s.join(ROOM));
    s.take(sender);
    s.take(reader);
    s.record(false);
    s.stall(reader, true);
    let message = frame(OpCode::Text, format!("* {}", "x".repeat(998)).as_bytes());
    let mut most = 0;
    // 30 MB, read about 50 KB behind: far past any bound if written bytes
    // were kept until the backlog reached zero.
    for i in 0..30_000 {
        s.now += Duration::from_millis(2);
        s.feed(sender, &message);
        if i >= 50 {
            s.read_some(reader, 1003 + i % 3);
        }
        let mut page = Vec::new();
        s.relay.render_metrics(&mut page);
        let page = String::from_utf8(page).unwrap();
        let held = page.lines().find_map(|l| l.strip_prefix("ws_relay_buffer_bytes{buffer=\"output\"} ")).unwrap();
        most = most.max(held.parse::<usize>().unwrap());
    }
    let backlog = s.relay.pending(reader).len();
    assert!((40_000..60_000).contains(&backlog), "the reader lags by about 50 KB: {backlog}");
    assert!(s.closed(reader).is_none(), "it reads, so it is no slow consumer");
    assert!(most < 256 * 1024, "{most} bytes held for a backlog of about 50 KB");
}

/// An upgrade to a room another shard serves leaves the shard that accepted
/// it, with every byte it sent (frames behind the request included), and the
/// owning shard carries on as if it had read them itself.
#[test]
fn an_upgrade_for_another_shards_room_is_handed_over_with_its_bytes() {
    use ws_relay::{Action, Budget, Relay, Shard};
    let budget = Budget::new();
    let mut shards: Vec<Relay> = (0..2)
        .map(|index| Relay::sharded(Config::default(), Shard { index, count: 2 }, budget.clone()).unwrap())
        .collect();
    let room = (0..).map(|i| format!("/ws-relay/r{i}")).find(|r| ws_relay::shard_of(r.as_bytes(), 2) == 1).unwrap();
    let now = std::time::Instant::now();
    let drain = |relay: &mut Relay| {
        let mut out = BTreeMap::new();
        while let Some(conn) = relay.poll_transmit() {
            out.insert(conn, relay.pending(conn).to_vec());
            let n = relay.pending(conn).len();
            relay.handle_written(conn, n);
        }
        out
    };
    // Someone already in the room, on its shard.
    let watcher = shards[1].handle_connect(now);
    shards[1].handle_read(watcher, &upgrade_request(&room, "x"), now);
    drain(&mut shards[1]);
    // A newcomer reaches the other shard, its first frame right behind its request, in two reads.
    let mut bytes = upgrade_request(&room, "x");
    bytes.extend(frame(OpCode::Text, b"* early"));
    let c = shards[0].handle_connect(now);
    shards[0].handle_read(c, &bytes[..20], now);
    shards[0].handle_read(c, &bytes[20..], now);
    let Some(Action::Handoff { conn, shard: 1, bytes: moved }) = shards[0].poll_action() else { panic!("no handoff") };
    assert_eq!((conn, &moved), (c, &bytes), "the request and what followed it, as they arrived");
    assert!(shards[0].poll_action().is_none() && drain(&mut shards[0]).is_empty(), "nothing said, nothing closed");
    assert_eq!(shards[0].connections(), 0);
    let adopted = shards[1].handle_handoff(ws_relay::Listener::Public, None, now);
    shards[1].handle_read(adopted, &moved, now);
    let out = drain(&mut shards[1]);
    assert!(out[&adopted].starts_with(b"HTTP/1.1 101 ") && out[&adopted].ends_with(b"\x81\x062 self\x81\x061 join"));
    assert_eq!(out[&watcher], b"\x81\x062 join\x81\x072 early");
    // Counted once: accepted by the first shard, upgraded by the second.
    let (first, second) = (shards[0].stats(), shards[1].stats());
    assert_eq!((first.connections, first.handoffs, first.upgrades), (1, 1, 0));
    assert_eq!((second.connections, second.upgrades), (1, 2));
    assert_eq!(budget.clients(), 2);
}

/// Upgrades with a token offered the preferred way, as a subprotocol.
fn upgrade_with_token(room: &str, token: &str) -> Vec<u8> {
    let req = String::from_utf8(upgrade_request(room, "x")).unwrap();
    req.replace("\r\n\r\n", &format!("\r\nSec-WebSocket-Protocol: ws-relay, ws-relay.token.{token}\r\n\r\n"))
        .into_bytes()
}

fn admitting() -> Sim {
    Sim::new(Config { admission: true, handshake_timeout: Duration::from_secs(10), ..Config::default() })
}

/// The verdict may take as long as the backend needs: the upgrade waits,
/// other clients go on, and what the newcomer sent meanwhile is read after
/// it joins, in order.
#[test]
fn admission_waits_for_the_verdict_without_holding_anyone_up() {
    use ws_relay::Verdict;
    let mut s = admitting();
    let first = s.connect_raw(&upgrade_with_token(ROOM, "t1"));
    let (c, admission) = s.admissions.remove(0);
    assert_eq!((c, admission.room.as_slice(), admission.token.as_deref()), (first, ROOM.as_bytes(), Some("t1")));
    s.admit(first, Verdict::Accept { subject: Some("alice".into()) });
    let got = s.take(first);
    assert_eq!(got[1..], [Text("1 self".into())]);
    assert!(
        s.raw(first).starts_with(b"HTTP/1.1 101 ")
            && String::from_utf8_lossy(s.raw(first)).contains("\r\nSec-WebSocket-Protocol: ws-relay\r\n")
    );
    // A newcomer sends a message right behind its request, before any verdict.
    let mut bytes = upgrade_with_token(ROOM, "t2");
    bytes.extend(frame(OpCode::Text, b"* hi, I am new"));
    let second = s.connect_raw(&bytes);
    s.feed(second, &frame(OpCode::Text, b"* and so keen"));
    assert!(s.take(second).is_empty(), "no answer before the verdict");
    assert!(s.take(first).is_empty(), "nobody hears of it");
    s.send(first, "* life goes on");
    assert_eq!(s.relay.member(first).map(|(_, id)| id), Some(1));
    s.advance(Duration::from_secs(3));
    s.admit(second, Verdict::Accept { subject: None });
    assert_eq!(s.take(second), [Http(101), Text("2 self".into()), Text("1 join".into())]);
    assert_eq!(s.texts(first), ["2 join", "2 hi, I am new", "2 and so keen"]);
    assert_eq!(s.relay.stats().admitted, 2);
}

#[test]
fn a_refusal_completes_the_upgrade_and_closes_with_its_code() {
    use ws_relay::{Refusal, Verdict};
    let mut s = admitting();
    let member = s.connect_raw(&upgrade_with_token(ROOM, "ok"));
    s.admit(member, Verdict::Accept { subject: None });
    s.take(member);
    let refused = s.connect_raw(&upgrade_with_token(ROOM, "forged"));
    s.admit(refused, Verdict::Refuse(Refusal::TokenBadSignature));
    let got = s.take(refused);
    assert_eq!(got, [Http(101), Close(Some((4401, "bad token signature".into())))]);
    assert!(s.take(member).is_empty(), "it never joined, so nobody hears it leave");
    let wrong = s.connect_raw(&upgrade_with_token(ROOM, "other-room"));
    s.admit(wrong, Verdict::Refuse(Refusal::WrongRoom));
    assert_eq!(close_code(&s.take(wrong)), Some(4403));
    // The close handshake completes with the client's close frame.
    s.feed(refused, &close_frame(1000));
    assert_eq!(s.closed(refused), Some(CloseReason::Refused(Refusal::TokenBadSignature)));
    assert_eq!(s.relay.stats().admission_refusals(Refusal::TokenBadSignature), 1);
    assert_eq!(s.relay.stats().admission_refusals(Refusal::WrongRoom), 1);
    assert_eq!(s.relay.members(ROOM.as_bytes()), [1]);
}

#[test]
fn the_handshake_timeout_runs_while_the_verdict_is_awaited() {
    use ws_relay::Verdict;
    let mut s = admitting();
    let c = s.connect_raw(&upgrade_with_token(ROOM, "slow"));
    s.advance(Duration::from_secs(10));
    assert_eq!(s.take(c), [Http(408)]);
    // The verdict comes too late and is ignored.
    s.admit(c, Verdict::Accept { subject: None });
    assert!(s.take(c).is_empty());
    assert_eq!(s.relay.rooms(), 0);
}

#[test]
fn a_query_token_does_not_name_the_room() {
    use ws_relay::Verdict;
    let mut s = admitting();
    let a = s.connect_raw(&upgrade_request("/game?token=AAA&g=1", "x"));
    let b = s.connect_raw(&upgrade_request("/game?g=1&token=BBB", "x"));
    let tokens: Vec<_> =
        s.admissions.iter().map(|(_, a)| (String::from_utf8(a.room.clone()).unwrap(), a.token.clone())).collect();
    assert_eq!(tokens, [("/game?g=1".to_owned(), Some("AAA".into())), ("/game?g=1".to_owned(), Some("BBB".into()))]);
    s.admit(a, Verdict::Accept { subject: None });
    s.admit(b, Verdict::Accept { subject: None });
    assert_eq!(s.relay.members(b"/game?g=1"), [1, 2]);
    // Without admission the query is the room, byte for byte.
    let mut plain = Sim::relay();
    plain.join("/game?token=AAA&g=1");
    assert_eq!(plain.relay.members(b"/game?token=AAA&g=1"), [1]);
}

#[test]
fn too_much_before_the_verdict_is_refused() {
    let mut s = Sim::new(Config { admission: true, max_pending: Config::DEFAULT.min_pending(), ..Config::default() });
    let c = s.connect_raw(&upgrade_with_token(ROOM, "t"));
    let big = frame(OpCode::Binary, &vec![b'x'; Config::DEFAULT.message.max_message]);
    s.feed(c, &big);
    s.feed(c, &big);
    assert_eq!(s.take(c), [Http(400)]);
    assert!(String::from_utf8_lossy(s.raw(c)).contains("sent too much before its upgrade was answered"));
}

/// The server API on the operator's port of a relay alone: the backend
/// publishes as id 0, lists rooms, sees who is there, and disconnects.
#[test]
fn the_server_api_speaks_into_rooms() {
    use ws_relay::{Secret, Verdict};
    let config = Config { admission: true, api_key: Some(Secret(b"k3y".to_vec())), ..Config::default() };
    let mut s = Sim::new(config);
    let join = |s: &mut Sim, room: &str, sub: Option<&str>| {
        let c = s.connect_raw(&upgrade_with_token(room, "t"));
        s.admit(c, Verdict::Accept { subject: sub.map(String::from) });
        s.take(c);
        c
    };
    let (a, b, c) =
        (join(&mut s, ROOM, Some("alice")), join(&mut s, ROOM, Some("bob")), join(&mut s, "/other", Some("alice")));
    s.take(a);
    let call = |s: &mut Sim, method: &str, path: &str, body: &str| {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k3y\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        request(s, Listener::Admin, &req)
    };
    let answer =
        call(&mut s, "POST", "/api/publish", r#"{"room": "/ws-relay/spacewar", "to": "*", "data": "start round 2"}"#);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            && answer.ends_with(r#"{"delivered":2}"#),
        "{answer}"
    );
    assert_eq!(s.texts(a), ["0 start round 2"]);
    assert_eq!(s.texts(b), ["0 start round 2"]);
    let answer =
        call(&mut s, "POST", "/api/publish", r#"{"room": "/ws-relay/spacewar", "to": 2, "data_base64": "AP8="}"#);
    assert!(answer.ends_with(r#"{"delivered":1}"#), "{answer}");
    assert_eq!(s.take(b), [Binary(b"0 \x00\xff".to_vec())]);
    let answer = call(&mut s, "POST", "/api/publish", r#"{"room": "/nowhere", "to": "*", "data": "x"}"#);
    assert!(answer.starts_with("HTTP/1.1 404 ") && answer.ends_with(r#"{"error":"no such room"}"#), "{answer}");
    let answer = call(&mut s, "GET", "/api/rooms?prefix=%2F", "");
    assert!(
        answer.ends_with(r#"{"rooms":[{"clients":1,"room":"/other"},{"clients":2,"room":"/ws-relay/spacewar"}]}"#),
        "{answer}"
    );
    let answer = call(&mut s, "GET", "/api/presence?room=%2Fws-relay%2Fspacewar", "");
    assert!(
        answer.ends_with(r#"{"members":[{"id":1,"sub":"alice"},{"id":2,"sub":"bob"}],"room":"/ws-relay/spacewar"}"#),
        "{answer}"
    );
    // Every connection of one account: a in the spacewar room, c elsewhere.
    let answer = call(&mut s, "POST", "/api/disconnect", r#"{"sub": "alice", "reason": "banned"}"#);
    assert!(answer.ends_with(r#"{"disconnected":2}"#), "{answer}");
    assert_eq!(s.take(a), [Close(Some((4000, "banned".into())))]);
    assert_eq!(s.take(c), [Close(Some((4000, "banned".into())))]);
    assert_eq!(s.texts(b), ["1 quit"]);
    let answer = call(&mut s, "POST", "/api/disconnect", r#"{"room": "/ws-relay/spacewar", "id": 2}"#);
    assert!(answer.ends_with(r#"{"disconnected":1}"#), "{answer}");
    assert_eq!(close_code(&s.take(b)), Some(4000));
    // No key, no answer but 401; the public port has no API at all.
    let denied = request(&mut s, Listener::Admin, "GET /api/rooms HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(denied.starts_with("HTTP/1.1 401 ") && denied.contains("WWW-Authenticate: Bearer\r\n"), "{denied}");
    let public =
        request(&mut s, Listener::Public, "GET /api/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k3y\r\n\r\n");
    assert!(public.starts_with("HTTP/1.1 426 "), "{public}");
    assert_eq!(s.relay.stats().api_calls, 8);
}
