//! The `ws-relay` binary over real TCP, with tungstenite clients and raw
//! sockets: what a player's browser or a broken client would see.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;
use ws_relay::client::{masked_frame, upgrade_request, OpCode, Received, ServerParser};

#[test]
fn the_seed_three_client_table() {
    let relay = Relay::start(&[]);
    let mut c1 = relay.ws(ROOM);
    assert_eq!(text(&mut c1), "1 self");
    let mut c2 = relay.ws(ROOM);
    assert_eq!(texts(&mut c2, 2), ["2 self", "1 join"]);
    assert_eq!(text(&mut c1), "2 join");
    let mut c3 = relay.ws(ROOM);
    assert_eq!(texts(&mut c3, 3), ["3 self", "1 join", "2 join"]);
    assert_eq!(text(&mut c1), "3 join");
    assert_eq!(text(&mut c2), "3 join");
    send(&mut c1, "2 hello");
    assert_eq!(text(&mut c2), "1 hello");
    send(&mut c1, "* hello");
    assert_eq!(text(&mut c2), "1 hello");
    assert_eq!(text(&mut c3), "1 hello");
    c3.close(None).unwrap();
    assert_eq!(text(&mut c1), "3 quit");
    assert_eq!(text(&mut c2), "3 quit");
    c2.close(None).unwrap();
    assert_eq!(text(&mut c1), "2 quit");
    assert!(silent(&mut c1), "client 1 never hears its own messages");
}

#[test]
fn direct_broadcast_self_and_unknown_targets() {
    let relay = Relay::start(&[]);
    let mut a = relay.ws(ROOM);
    let mut b = relay.ws(ROOM);
    texts(&mut a, 2);
    texts(&mut b, 2);
    send(&mut a, "1 to myself");
    assert_eq!(text(&mut a), "1 to myself");
    send(&mut a, "7 nobody");
    send(&mut a, "02 not an id as the relay spells it");
    send(&mut a, "* report {\"x\": 1}");
    assert_eq!(text(&mut b), "1 report {\"x\": 1}", "dropped messages cost nothing, the sender stays");
    send(&mut b, "1 answer");
    assert_eq!(text(&mut a), "2 answer");
}

#[test]
fn rooms_differ_by_query_string() {
    let relay = Relay::start(&[]);
    let mut one = relay.ws("/ws-relay/spacewar?game=1");
    let mut two = relay.ws("/ws-relay/spacewar?game=2");
    let mut plain = relay.ws("/ws-relay/spacewar");
    for ws in [&mut one, &mut two, &mut plain] {
        assert_eq!(text(ws), "1 self");
    }
    send(&mut one, "* only game 1");
    assert!(silent(&mut two) && silent(&mut plain));
}

#[test]
fn ids_restart_after_the_room_empties() {
    let relay = Relay::start(&[]);
    let mut watcher = relay.ws(ROOM);
    let mut leaver = relay.ws(ROOM);
    texts(&mut leaver, 2);
    assert_eq!(texts(&mut watcher, 2), ["1 self", "2 join"]);
    leaver.close(None).unwrap();
    assert_eq!(text(&mut watcher), "2 quit");
    watcher.close(None).unwrap();
    let _ = close_of(&mut watcher);
    // The relay has processed the close once it answered it; the room is gone.
    let mut fresh = relay.ws(ROOM);
    assert_eq!(text(&mut fresh), "1 self");
}

#[test]
fn binary_messages_are_relayed() {
    let relay = Relay::start(&[]);
    let mut a = relay.ws(ROOM);
    let mut b = relay.ws(ROOM);
    texts(&mut a, 2);
    texts(&mut b, 2);
    a.send(Message::binary(b"* \x00\xff\xfe game state".to_vec())).unwrap();
    match b.read().unwrap() {
        Message::Binary(got) => assert_eq!(&got[..], b"1 \x00\xff\xfe game state"),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[test]
fn an_abrupt_reset_is_a_quit() {
    let relay = Relay::start(&[]);
    let mut watcher = relay.ws(ROOM);
    text(&mut watcher);
    let raw = relay.raw(ROOM);
    assert_eq!(text(&mut watcher), "2 join");
    drop(raw);
    assert_eq!(text(&mut watcher), "2 quit");
    let half = relay.raw(ROOM);
    assert_eq!(text(&mut watcher), "3 join");
    half.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(text(&mut watcher), "3 quit", "FIN without a close frame is a quit");
}

#[test]
fn malformed_relay_messages_close_with_1008() {
    let relay = Relay::start(&[]);
    for bad in ["bob hi", "3", "   "] {
        let mut watcher = relay.ws("/ws-relay/1008");
        let mut ws = relay.ws("/ws-relay/1008");
        text(&mut watcher);
        texts(&mut ws, 2);
        assert_eq!(text(&mut watcher), "2 join");
        send(&mut ws, bad);
        let (code, reason) = close_of(&mut ws);
        assert_eq!(code, 1008, "{bad:?}");
        assert!(!reason.is_empty(), "{bad:?}: the reason names the problem");
        assert_eq!(text(&mut watcher), "2 quit");
        watcher.close(None).unwrap();
        let _ = close_of(&mut watcher);
    }
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let relay = Relay::start(&[]);
    let mut raw = relay.raw(ROOM);
    assert_eq!(raw.next(), Received::Text("1 self".into()));
    raw.send(OpCode::Text, b"* caf\xc3\x28");
    assert!(matches!(raw.next(), Received::Close(Some((1007, _)))));
    assert!(raw.closed_by_server());
}

#[test]
fn oversize_messages_close_with_1009() {
    let relay = Relay::start(&["--max-message", "1024"]);
    let mut ws = relay.ws(ROOM);
    text(&mut ws);
    send(&mut ws, &format!("* {}", "x".repeat(2000)));
    assert_eq!(close_of(&mut ws).0, 1009);
}

#[test]
fn ping_is_answered_with_the_same_payload() {
    let relay = Relay::start(&[]);
    let mut raw = relay.raw(ROOM);
    raw.next();
    raw.send(OpCode::Ping, b"latency probe 42");
    assert_eq!(raw.next(), Received::Pong(b"latency probe 42".to_vec()));
}

#[test]
fn keepalive_closes_a_silent_client() {
    let relay = Relay::start(&["--ping-interval", "200ms", "--ping-timeout", "200ms"]);
    let mut live = relay.ws(ROOM);
    assert_eq!(text(&mut live), "1 self");
    // The live client talks every 50 ms (a game would) and keeps reading, which answers pings.
    let talker = std::thread::spawn(move || {
        let mut heard = Vec::new();
        let until = Instant::now() + Duration::from_millis(1500);
        live.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        while Instant::now() < until {
            send(&mut live, "1 tick");
            std::thread::sleep(Duration::from_millis(50));
            match live.read() {
                Ok(Message::Text(t)) if t.as_str() != "1 tick" => heard.push(t.to_string()),
                Ok(Message::Close(_)) => panic!("the live client was closed"),
                _ => {}
            }
        }
        heard
    });
    let mut silent_client = relay.raw(ROOM);
    let started = Instant::now();
    assert_eq!(silent_client.next(), Received::Text("2 self".into()));
    assert_eq!(silent_client.next(), Received::Text("1 join".into()));
    let mut saw_ping = false;
    let code = loop {
        match silent_client.next() {
            Received::Ping(p) => saw_ping |= p == b"keepalive",
            Received::Close(Some((code, _))) => break code,
            other => assert!(matches!(other, Received::Text(ref t) if t == "1 tick"), "{other:?}"),
        }
    };
    assert!(saw_ping, "the silent client was pinged first");
    assert_eq!(code, 1011);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(silent_client.closed_by_server());
    let heard = talker.join().expect("the live client stayed connected");
    assert_eq!(heard, ["2 join", "2 quit"]);
}

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut relay = Relay::start(&["--drain-timeout", "1s"]);
    let mut a = relay.ws(ROOM);
    let mut b = relay.ws("/ws-relay/other");
    text(&mut a);
    text(&mut b);
    let status = Command::new("kill").args(["-TERM", &relay.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(close_of(&mut a).0, 1001);
    assert_eq!(close_of(&mut b).0, 1001);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(status) = relay.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the relay did not exit after the drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(TcpStream::connect(relay.addr).is_err(), "no longer accepting");
}

#[test]
fn plain_http_requests() {
    let relay = Relay::start(&[]);
    let cases: [(&[u8], u16, &str); 4] = [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ok\n"),
        (b"GET /ws-relay/x HTTP/1.1\r\nHost: x\r\n\r\n", 426, "Sec-WebSocket-Version: 13"),
        (b"POST /ws-relay/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "Allow: GET"),
        (b"\x00\x01 not http at all\r\n\r\n", 400, "Connection: close"),
    ];
    for (request, status, needle) in cases {
        let mut stream = TcpStream::connect(relay.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(request).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("the relay closes after answering");
        assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{response}");
        assert!(response.contains(needle), "{response}");
    }
}

#[test]
fn handshake_timeout_answers_408_and_closes() {
    let relay = Relay::start(&["--handshake-timeout", "300ms"]);
    let mut raw = Raw::connect(relay.addr);
    raw.write(b"GET /ws-relay/slow HTTP/1.1\r\nHost: x\r\n");
    let started = Instant::now();
    assert_eq!(raw.next(), Received::Http(408));
    assert!(raw.closed_by_server());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn frames_in_the_same_write_as_the_request_are_read() {
    let relay = Relay::start(&[]);
    let mut watcher = relay.ws(ROOM);
    text(&mut watcher);
    let mut raw = Raw::connect(relay.addr);
    let mut both = upgrade_request(ROOM, "test");
    masked_frame(&mut both, true, OpCode::Text, b"* right behind the request", [1, 2, 3, 4]);
    raw.write(&both);
    assert_eq!(text(&mut watcher), "2 join");
    assert_eq!(text(&mut watcher), "2 right behind the request");
    drop(raw);
    assert_eq!(text(&mut watcher), "2 quit");
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_nobody_else_waits() {
    // Flood control would stop the sender first; this test is about the reader.
    let relay =
        Relay::start(&["--max-pending", "131072", "--flood-bytes", "1000000000", "--flood-byte-burst", "1000000000"]);
    let mut sender = relay.ws(ROOM);
    let mut reader = relay.ws(ROOM);
    let stuck = relay.raw(ROOM);
    texts(&mut sender, 1);
    texts(&mut reader, 2);
    assert_eq!(text(&mut sender), "2 join");
    assert_eq!(text(&mut sender), "3 join");
    assert_eq!(text(&mut reader), "3 join");
    // 16 MB to a client that never reads: far past the kernel's buffers and the relay's bound.
    let payload = "x".repeat(60_000);
    let mut seen = Vec::new();
    let mut quits = 0;
    for i in 0..270 {
        send(&mut sender, &format!("* {i} {payload}"));
        loop {
            let got = text(&mut reader);
            if got == "3 quit" {
                quits += 1;
                continue;
            }
            seen.push(got.split(' ').nth(1).unwrap().parse::<usize>().unwrap());
            break;
        }
    }
    assert_eq!(seen, (0..270).collect::<Vec<_>>(), "the reading client sees every message, in order");
    assert_eq!(quits, 1, "the stuck client was disconnected and its peers told");
    assert_eq!(text(&mut sender), "3 quit");
    drop(stuck);
    let scrape = http(&relay, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(sample(&scrape, "ws_relay_closes_total{reason=\"slow_consumer\"}"), 1.0);
    // The message that passed the bound was the only one not queued for it.
    assert_eq!(sample(&scrape, "ws_relay_messages_dropped_total{reason=\"slow_consumer\"}"), 1.0);
}

#[test]
fn a_flooding_client_is_closed_with_1008() {
    let relay = Relay::start(&["--flood-messages", "100", "--flood-burst", "20"]);
    let mut watcher = relay.ws(ROOM);
    let mut flooder = relay.ws(ROOM);
    text(&mut watcher);
    texts(&mut flooder, 2);
    assert_eq!(text(&mut watcher), "2 join");
    for i in 0..100 {
        if flooder.send(Message::text(format!("* spam {i}"))).is_err() {
            break;
        }
    }
    assert_eq!(close_of(&mut flooder), (1008, "rate limit exceeded".to_owned()));
    let mut spam = Vec::new();
    loop {
        match text(&mut watcher).as_str() {
            "2 quit" => break,
            other => spam.push(other.to_owned()),
        }
    }
    // The burst, and what the rate refilled while it arrived, then nothing more.
    assert!((20..60).contains(&spam.len()), "{} messages got through", spam.len());
    assert_eq!(spam, (0..spam.len()).map(|i| format!("2 spam {i}")).collect::<Vec<_>>());
}

#[test]
fn out_of_descriptors_the_relay_keeps_serving_and_accepts_again() {
    let relay = Relay::start_with_fd_limit(40, &[]);
    let mut a = relay.ws(ROOM);
    let mut b = relay.ws(ROOM);
    text(&mut a);
    texts(&mut b, 2);
    assert_eq!(text(&mut a), "2 join");
    // Far more idle connections than descriptors: the rest wait in the listen queue.
    let mut idle: Vec<TcpStream> = (0..60).map(|_| TcpStream::connect(relay.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    send(&mut a, "2 still served");
    assert_eq!(text(&mut b), "1 still served");
    // Descriptors come back; with no new connection to wake it, the relay's own retry
    // accepts the last queued connection and serves it.
    let last = idle.pop().unwrap();
    idle.truncate(5);
    let mut late = Raw { stream: last, parser: ServerParser::default(), queue: Vec::new() };
    late.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    late.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(late.next(), Received::Http(200));
    let mut fresh = relay.ws(ROOM);
    assert_eq!(text(&mut fresh), "3 self");
}

/// Every malformed upgrade request and frame a server must refuse, sent whole
/// and then one byte per write: the answer is the same either way.
#[test]
fn malformed_input_is_refused_whole_and_byte_by_byte() {
    let relay = Relay::start(&["--max-message", "1000", "--max-request-head", "2048"]);
    let good = String::from_utf8(upgrade_request(ROOM, "x")).unwrap();
    let requests: Vec<(String, u16)> = vec![
        (good.replace("GET", "PUT"), 405),
        (good.replace("HTTP/1.1", "HTTP/1.0"), 400),
        (good.replace("Host: x\r\n", ""), 400),
        (good.replace("Upgrade: websocket\r\n", ""), 426),
        (good.replace("Connection: Upgrade", "Connection: keep-alive"), 426),
        (good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 12"), 426),
        (good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400),
        (good.replace("dGhlIHNhbXBsZSBub25jZQ==", "not-base64-at-all!!!!!=="), 400),
        (good.replace("Host: x", "Host: x\r\nTransfer-Encoding: chunked"), 400),
        (good.replace("Host: x", &format!("Host: x\r\nX-Pad: {}", "p".repeat(3000))), 431),
        ("GET /ws HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".into(), 400),
    ];
    for (request, status) in &requests {
        for bytewise in [false, true] {
            let mut raw = Raw::connect(relay.addr);
            if bytewise {
                raw.stream.set_nodelay(true).unwrap();
                for b in request.as_bytes() {
                    if raw.stream.write_all(std::slice::from_ref(b)).is_err() {
                        break; // Refused before the end, as 431 must be.
                    }
                }
            } else {
                raw.write(request.as_bytes());
            }
            assert_eq!(raw.next(), Received::Http(*status), "{request:?} bytewise={bytewise}");
            assert!(raw.closed_by_server(), "{status}: the connection is closed after the answer");
        }
    }

    let mask = [0x11, 0x22, 0x33, 0x44];
    let masked = |first: u8, payload: &[u8]| {
        let mut f = Vec::new();
        masked_frame(&mut f, true, OpCode::Text, payload, mask);
        f[0] = first;
        f
    };
    let mut fragmented_ping = Vec::new();
    masked_frame(&mut fragmented_ping, false, OpCode::Ping, b"x", mask);
    let mut long_ping = Vec::new();
    masked_frame(&mut long_ping, true, OpCode::Ping, &[0; 126], mask);
    let mut interleaved = Vec::new();
    masked_frame(&mut interleaved, false, OpCode::Text, b"* a", mask);
    masked_frame(&mut interleaved, true, OpCode::Binary, b"b", mask);
    let mut oversize = Vec::new();
    masked_frame(&mut oversize, true, OpCode::Binary, &[b'x'; 1001], mask);
    let frames: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", vec![0x81, 0x04, b'*', b' ', b'h', b'i'], 1002),
        ("RSV1", masked(0xC1, b"* hi"), 1002),
        ("RSV2", masked(0xA1, b"* hi"), 1002),
        ("RSV3", masked(0x91, b"* hi"), 1002),
        ("opcode 3", masked(0x83, b"* hi"), 1002),
        ("opcode 0xB", masked(0x8B, b"* hi"), 1002),
        ("16-bit length below 126", vec![0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4, 0, 0, 0, 0, 0], 1002),
        ("64-bit length below 65536", vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4], 1002),
        ("64-bit length with the high bit", vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4], 1002),
        ("fragmented ping", fragmented_ping, 1002),
        ("ping over 125 bytes", long_ping, 1002),
        ("continuation without a start", masked(0x80, b"x"), 1002),
        ("new message inside a fragmented one", interleaved, 1002),
        ("close with one byte", masked(0x88, b"\x03"), 1002),
        ("close code 1005", masked(0x88, b"\x03\xed"), 1002),
        ("close reason not UTF-8", masked(0x88, b"\x03\xe8\xc3"), 1007),
        ("text not UTF-8", masked(0x81, b"* \xed\xa0\x80"), 1007),
        ("message over --max-message", oversize, 1009),
    ];
    for (name, frame, code) in &frames {
        for bytewise in [false, true] {
            let mut raw = relay.raw("/ws-relay/malformed");
            assert_eq!(raw.next(), Received::Text("1 self".into()));
            if bytewise {
                raw.stream.set_nodelay(true).unwrap();
                for b in frame {
                    if raw.stream.write_all(std::slice::from_ref(b)).is_err() {
                        break;
                    }
                }
            } else {
                raw.write(frame);
            }
            match raw.next() {
                Received::Close(Some((got, _))) => assert_eq!(got, *code, "{name} bytewise={bytewise}"),
                other => panic!("{name} bytewise={bytewise}: {other:?}"),
            }
            assert!(raw.closed_by_server(), "{name}: the connection is dropped");
        }
    }
}

#[test]
fn upgrade_limits_over_tcp() {
    let relay = Relay::start(&[
        "--allow-origin",
        "https://game.example",
        "--max-room-clients",
        "1",
        "--max-clients",
        "2",
        "--max-target",
        "64",
    ]);
    let with = |extra: &str| {
        String::from_utf8(upgrade_request("/ws-relay/limits", "x"))
            .unwrap()
            .replace("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"))
    };
    let answer = http(&relay, with("Origin: https://evil.example").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    let answer = http(&relay, with("Content-Length: 5").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400 "), "a body is refused: {answer}");
    let long = String::from_utf8(upgrade_request(&format!("/{}", "r".repeat(100)), "x")).unwrap();
    assert!(http(&relay, long.as_bytes()).starts_with("HTTP/1.1 414 "));

    let mut first = relay.ws("/ws-relay/limits");
    text(&mut first);
    let answer = http(&relay, with("Origin: https://game.example").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 503 ") && answer.contains("room full"), "{answer}");
    let mut other = relay.ws("/ws-relay/other");
    text(&mut other);
    let answer = http(&relay, &upgrade_request("/ws-relay/third", "x"));
    assert!(answer.starts_with("HTTP/1.1 503 ") && answer.contains("server full"), "{answer}");
}

#[test]
fn a_refused_request_ends_the_connection_and_a_pipelined_one_is_never_read() {
    let relay = Relay::start(&[]);
    let mut watcher = relay.ws(ROOM);
    text(&mut watcher);
    let mut two = b"POST /ws-relay/x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    two.extend(upgrade_request(ROOM, "x"));
    let answer = http(&relay, &two);
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "one answer, then the connection closed: {answer}");
    assert!(answer.contains("Connection: close"));
    assert!(silent(&mut watcher), "the pipelined upgrade never joined the room");
}

#[test]
fn spoofed_notices_and_resets_mid_frame() {
    let relay = Relay::start(&[]);
    let mut watcher = relay.ws(ROOM);
    text(&mut watcher);
    let mut spoofer = relay.ws(ROOM);
    texts(&mut spoofer, 2);
    assert_eq!(text(&mut watcher), "2 join");
    send(&mut spoofer, "* quit");
    assert_eq!(close_of(&mut spoofer).0, 1008);
    assert_eq!(text(&mut watcher), "2 quit", "the real quit, from the relay; never a forged one");

    let mut cut = relay.raw(ROOM);
    assert_eq!(text(&mut watcher), "3 join");
    let mut frame = Vec::new();
    masked_frame(&mut frame, true, OpCode::Text, b"* this frame never ends", [1, 2, 3, 4]);
    cut.write(&frame[..frame.len() / 2]);
    drop(cut);
    assert_eq!(text(&mut watcher), "3 quit");
    send(&mut watcher, "1 still fine");
    assert_eq!(text(&mut watcher), "1 still fine");
}

#[test]
fn close_handshakes_end_even_when_the_client_does_not_cooperate() {
    let relay = Relay::start(&["--close-timeout", "300ms"]);
    // The relay closes a client for a bad message; the client never answers its close frame.
    let mut mute = relay.raw(ROOM);
    assert_eq!(mute.next(), Received::Text("1 self".into()));
    mute.send(OpCode::Text, b"nobody here");
    assert!(matches!(mute.next(), Received::Close(Some((1008, _)))));
    let started = Instant::now();
    assert!(mute.closed_by_server(), "dropped after the close timeout");
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the close timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A client that sends close and never reads is answered and dropped at once.
    let mut quitter = relay.raw(ROOM);
    assert_eq!(quitter.next(), Received::Text("1 self".into()));
    quitter.send(OpCode::Close, &1000u16.to_be_bytes());
    assert!(quitter.closed_by_server());
}

#[test]
fn configurations_the_relay_cannot_keep_its_promises_with_are_refused_at_start() {
    // A full room's join list (1024 x 27 bytes + 256) and one largest message (4000 + 64) need 31968.
    let small = ["--max-message", "4000", "--max-pending", "8192"];
    let cases: [(&[&str], &str); 6] = [
        (&small, "max_pending (8192) must be at least 31968"),
        (&["--max-message", "100000", "--max-pending", "65536"], "max_pending (65536) must be at least 127968"),
        (&["--ping-interval", "1e19"], "at most 86400s"),
        (&["--handshake-timeout", "100000"], "at most 86400s"),
        (&["--close-timeout", "0"], "must be more than 0"),
        (&["--drain-timeout", "1e10s"], "at most 86400s"),
    ];
    for (flags, message) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_ws-relay"))
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
}

#[test]
fn metrics_on_their_own_port_and_pages_on_the_public_one() {
    let relay = Relay::start(&["--metrics-listen", "127.0.0.1:0"]);
    let metrics = relay.metrics.unwrap();
    let page = http(&relay, b"GET /?game=7 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.ends_with(&std::fs::read_to_string("web/index.html").unwrap()));
    let js = http(&relay, b"GET /ws-relay.js HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(js.contains("\r\nContent-Type: text/javascript; charset=utf-8\r\n"), "{js}");
    assert!(http(&relay, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404 "));

    let (mut a, mut b) = (relay.ws("/ws-relay/m"), relay.ws("/ws-relay/m"));
    texts(&mut a, 2);
    texts(&mut b, 2);
    send(&mut a, "* report {}");
    assert_eq!(text(&mut b), "1 report {}");
    let scrape = http_to(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    assert_eq!(sample(&scrape, "ws_relay_clients"), 2.0);
    assert_eq!(sample(&scrape, "ws_relay_messages_received_total"), 1.0);
    // self, then a's join to b, b's join to a and the peer list, then the report.
    assert_eq!(sample(&scrape, "ws_relay_messages_delivered_total"), 5.0);
    assert_eq!(sample(&scrape, "ws_relay_closes_total{reason=\"http_served\"}"), 2.0);
    assert_eq!(sample(&scrape, "ws_relay_handshakes_rejected_total{status=\"404\"}"), 1.0);
    let turns = sample(&scrape, "ws_relay_loop_turn_seconds_count");
    assert!(turns >= 4.0, "every accept and read is a turn: {turns}");
    assert_eq!(sample(&scrape, "ws_relay_loop_turn_seconds_bucket{le=\"+Inf\"}"), turns);
    assert!(http_to(metrics, b"GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
    let upgrade = http_to(metrics, &upgrade_request("/ws-relay/m", "test"));
    assert!(upgrade.starts_with("HTTP/1.1 404 "), "no rooms on the metrics port: {upgrade}");
}

#[test]
fn a_slowloris_cannot_keep_players_out() {
    let relay = Relay::start(&["--max-handshakes", "16", "--handshake-timeout", "60s"]);
    // Far more half-sent requests than the cap, each holding a socket open.
    let mut slow: Vec<Raw> = (0..64)
        .map(|_| {
            let mut raw = Raw::connect(relay.addr);
            raw.write(b"GET /ws-relay/r HTTP/1.1\r\nHost: x\r\n");
            raw
        })
        .collect();
    let mut player = relay.ws("/ws-relay/r");
    assert_eq!(text(&mut player), "1 self");
    // Older ones were answered 503 and closed as newer ones arrived, all but
    // the cap's worth. Which ones stay depends, with several shards, on how
    // the kernel spread the crowd over them (each holds its share of the
    // cap); with one, they are the newest.
    let mut pushed_out = 0;
    for raw in &mut slow {
        raw.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        if raw.closed_by_server() {
            assert_eq!(raw.queue.first(), Some(&Received::Http(503)), "closed with a 503");
            pushed_out += 1;
        }
    }
    assert!(pushed_out >= 64 - 16, "only {pushed_out} of 64 pushed out past a cap of 16");
    let scrape = http(&relay, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(sample(&scrape, "ws_relay_pending_handshakes") <= 16.0, "{scrape}");
    assert!(sample(&scrape, "ws_relay_handshakes_rejected_total{status=\"503\"}") >= 48.0);
}

#[test]
fn a_refusal_reaches_a_client_that_goes_on_sending() {
    let relay = Relay::start(&[]);
    let mut stream = TcpStream::connect(relay.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Refused at its head; the client, not reading yet, sends its body.
    stream.write_all(b"POST /ws-relay/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // A socket closed outright answers these bytes with a reset, which fails
    // the next write and, on many stacks, destroys the answer not yet read.
    for _ in 0..2 {
        stream.write_all(&[b'x'; 50_000]).expect("the relay reads and discards what follows");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("the answer, then a clean end of stream");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    assert!(answer.ends_with("only GET can upgrade to a WebSocket\n"), "{answer}");
}

#[test]
fn every_flag_reads_an_environment_variable_named_after_it() {
    let help = Command::new(env!("CARGO_BIN_EXE_ws-relay")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim().strip_prefix("--")?.split([' ', '\t']).next())
        // Commands, not settings.
        .filter(|f| !matches!(*f, "help" | "version" | "takeover"))
        .collect();
    assert!(flags.len() >= 24, "{help}");
    for flag in flags {
        let env = format!("[env: WS_RELAY_{}=", flag.to_uppercase().replace('-', "_"));
        // The flag's own entry, not another's help mentioning it.
        let entry = help.split(&format!("\n      --{flag}")).nth(1).unwrap().split("\n      -").next().unwrap();
        assert!(entry.contains(&env), "--{flag} has no {env}");
    }
    // And the variable is honoured, not just listed.
    let relay = Relay::spawn(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_ws-relay"));
            c.env("WS_RELAY_NO_PAGES", "true");
            c
        },
        &[],
    );
    assert!(http(&relay, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404 "));
}
