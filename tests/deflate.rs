//! permessage-deflate (RFC 7692) through the shared harness: what the relay
//! answers to the offers real clients send and to malformed ones, compressed
//! messages in (whole, fragmented, with the client's context carried over,
//! across a takeover) and out (compressed once per window size for a whole
//! room), and what it refuses: RSV1 where nothing gives it a meaning, bad
//! DEFLATE data, and a message that would inflate past the limit.

use std::time::Duration;

use flate2::{Compress, Compression, FlushCompress};
use ws_relay::client::{
    masked_frame, masked_frame_rsv1, upgrade_request, upgrade_request_offering, Deflater, OpCode, Received,
};
use ws_relay::testing::{close_code, frame, Sim};
use ws_relay::{CloseReason, Config, Deflate, FloodLimits, MessageLimits, Mode, ProtocolError, RelayError};

const ROOM: &str = "/ws-relay/deflate";
const MASK: [u8; 4] = [0x0F, 0xA5, 0x5A, 0xF0];

/// What browsers (Chrome, Safari), Python websockets and Node ws offer.
const BROWSER: &str = "permessage-deflate; client_max_window_bits";

/// A 200-byte game report: what the relay compresses for a room.
fn report(seq: u32) -> String {
    let body = format!(
        "* report {{\"seq\":{seq},\"x\":512.25,\"y\":384.5,\"vx\":-1.5,\"vy\":0.25,\"heading\":1.5708,\
         \"hp\":87,\"state\":\"flying\",\"thrust\":true,\"shield\":false,\"score\":1200,\"pad\":\"\"}}"
    );
    let pad = 200usize.saturating_sub(body.len());
    body.replace("\"pad\":\"\"", &format!("\"pad\":\"{}\"", "x".repeat(pad)))
}

fn on() -> Config {
    Config { deflate: Some(Deflate::DEFAULT), ..Config::default() }
}

/// The head of the response `conn` received, as text.
fn head(s: &Sim, conn: ws_relay::ConnId) -> String {
    let raw = s.raw(conn);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole response head") + 4;
    String::from_utf8(raw[..end].to_vec()).unwrap()
}

/// The `Sec-WebSocket-Extensions` value of `conn`'s 101, if any.
fn extensions(s: &Sim, conn: ws_relay::ConnId) -> Option<String> {
    head(s, conn).lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: ").map(str::to_owned))
}

/// A sample's value on `/metrics`.
fn metric(s: &Sim, sample: &str) -> u64 {
    let mut page = Vec::new();
    s.relay.render_metrics(&mut page);
    let page = String::from_utf8(page).unwrap();
    let line = page.lines().find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '));
    line.and_then(|l| l[sample.len() + 1..].parse().ok()).unwrap_or_else(|| panic!("no {sample} in\n{page}"))
}

/// A client joining `ROOM` with `offer`; its `101` is checked and taken.
fn join(s: &mut Sim, offer: &str) -> ws_relay::ConnId {
    let request = match offer {
        "" => upgrade_request(ROOM, "test"),
        offer => upgrade_request_offering(ROOM, "test", offer),
    };
    let conn = s.connect_raw(&request);
    let inbox = s.take(conn);
    assert_eq!(inbox.first(), Some(&Received::Http(101)), "{offer}: {}", head(s, conn));
    conn
}

/// A compressed message as one masked frame.
fn compressed(deflater: &mut Deflater, opcode: OpCode, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    masked_frame_rsv1(&mut out, true, true, opcode, &deflater.compress(message), MASK);
    out
}

#[test]
fn the_offers_clients_send_are_answered() {
    let mut s = Sim::new(on());
    // Chrome, Safari, Python websockets, Node ws; then Firefox.
    for offer in [BROWSER, "permessage-deflate"] {
        let c = join(&mut s, offer);
        assert_eq!(extensions(&s, c).as_deref(), Some("permessage-deflate; server_no_context_takeover"), "{offer}");
    }
    // What the client asks for is echoed; the relay never takes its own context over.
    let c = join(
        &mut s,
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits=12",
    );
    assert_eq!(
        extensions(&s, c).as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        )
    );
    // The first offer the relay can take, in the client's order.
    let c = join(&mut s, "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=16, permessage-deflate");
    assert_eq!(extensions(&s, c).as_deref(), Some("permessage-deflate; server_no_context_takeover"));
    // No offer, or deflate off: no extension.
    let c = join(&mut s, "x-unknown");
    assert_eq!(extensions(&s, c), None);
    let mut off = Sim::relay();
    let c = join(&mut off, BROWSER);
    assert_eq!(extensions(&off, c), None);
    assert_eq!(metric(&s, "ws_relay_deflate_clients"), 4);
}

#[test]
fn offers_it_cannot_take_are_declined_and_bad_headers_refused() {
    let mut s = Sim::new(on());
    // RFC 7692 §7: declined, the upgrade goes on without compression.
    for offer in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=08",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; mystery=1",
    ] {
        let c = join(&mut s, offer);
        assert_eq!(extensions(&s, c), None, "{offer}");
    }
    // RFC 6455 §4.2.1 and §9.1: not an extension list, 400.
    for bad in ["permessage-deflate;", "permessage-deflate; a=\"b c\"", "permessage deflate", ", ;"] {
        let c = s.connect_raw(&upgrade_request_offering(ROOM, "test", bad));
        assert_eq!(s.take(c).first(), Some(&Received::Http(400)), "{bad}");
        assert!(head(&s, c).starts_with("HTTP/1.1 400 "));
    }
    assert_eq!(s.relay.stats().refused(400), 4);
    // With deflate off the header is not read at all, as before.
    let mut off = Sim::relay();
    join(&mut off, "permessage-deflate;");
}

#[test]
fn a_compressed_message_goes_in_and_out() {
    let mut s = Sim::new(on());
    let (a, b, plain) = (join(&mut s, BROWSER), join(&mut s, BROWSER), join(&mut s, ""));
    for c in [a, b, plain] {
        s.take(c);
    }
    let (at_b, at_plain) = (s.raw(b).len(), s.raw(plain).len());
    let mut deflater = Deflater::new(15, true);
    let text = report(1);
    s.feed(a, &compressed(&mut deflater, OpCode::Text, text.as_bytes()));
    let want = text.replacen('*', "1", 1);
    assert_eq!(s.texts(b), std::slice::from_ref(&want));
    assert_eq!(s.texts(plain), std::slice::from_ref(&want));
    assert_eq!((s.compressed(b), s.compressed(plain)), (1, 0));
    assert_eq!(s.relay.stats().inflated, 1);
    // The plain client got the plain frame; the other a smaller one with RSV1.
    let (raw_b, raw_plain) = (&s.raw(b)[at_b..], &s.raw(plain)[at_plain..]);
    assert!(raw_plain.ends_with(want.as_bytes()) && raw_plain[0] == 0x81);
    assert_eq!(raw_b[0], 0xC1, "RSV1 and FIN on a text frame");
    let stats = s.relay.stats();
    assert_eq!(stats.compressions, 1);
    assert!(stats.compressed_out < stats.compressed_in, "{stats:?}");
    assert!(raw_b.len() < raw_plain.len());

    // Binary, fragmented: RSV1 on the first frame only, a ping between.
    let message = [b"* ".as_slice(), &[7u8; 300], b"tail"].concat();
    let deflated = deflater.compress(&message);
    let (one, rest) = deflated.split_at(deflated.len() / 3);
    let (two, three) = rest.split_at(rest.len() / 2);
    let mut wire = Vec::new();
    masked_frame_rsv1(&mut wire, false, true, OpCode::Binary, one, MASK);
    masked_frame(&mut wire, false, OpCode::Continuation, two, MASK);
    masked_frame(&mut wire, true, OpCode::Ping, b"between", MASK);
    masked_frame(&mut wire, true, OpCode::Continuation, three, MASK);
    // Fed a byte at a time: the inflater takes what arrives.
    for byte in &wire {
        s.feed(a, std::slice::from_ref(byte));
    }
    let want = [b"1 ".as_slice(), &[7u8; 300], b"tail"].concat();
    assert_eq!(s.take(a), [Received::Pong(b"between".to_vec())]);
    assert_eq!(s.take(b), [Received::Binary(want.clone())]);
    assert_eq!(s.take(plain), [Received::Binary(want)]);
    assert_eq!((s.compressed(b), s.relay.stats().inflated), (2, 2));
}

#[test]
fn messages_under_the_threshold_and_notices_go_plain() {
    let mut s = Sim::new(on());
    let (a, b) = (join(&mut s, BROWSER), join(&mut s, BROWSER));
    s.send(a, "* short and sweet");
    s.send(a, &format!("* {}", "y".repeat(125)));
    assert_eq!(s.texts(b), ["1 short and sweet".to_owned(), format!("1 {}", "y".repeat(125))]);
    assert_eq!((s.compressed(b), s.relay.stats().compressions), (0, 0));
    // From 128 bytes of payload on: compressed.
    s.send(a, &format!("* {}", "y".repeat(126)));
    assert_eq!(s.texts(b), [format!("1 {}", "y".repeat(126))]);
    assert_eq!(s.compressed(b), 1);
    // --deflate-min 0: anything that gets smaller.
    let mut s = Sim::new(Config { deflate: Some(Deflate { min_size: 0 }), ..Config::default() });
    let (a, b) = (join(&mut s, BROWSER), join(&mut s, BROWSER));
    s.send(a, "* aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    s.send(a, "* ab");
    assert_eq!(s.texts(b), ["1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "1 ab"]);
    assert_eq!((s.compressed(b), s.relay.stats().compressions), (1, 2), "the short one did not get smaller");
}

#[test]
fn a_broadcast_is_compressed_once_per_window_size() {
    let mut s = Sim::new(on());
    let sender = join(&mut s, "");
    let deflating: Vec<_> = (0..4).map(|_| join(&mut s, BROWSER)).collect();
    let plain: Vec<_> = (0..3).map(|_| join(&mut s, "")).collect();
    let small = join(&mut s, "permessage-deflate; server_max_window_bits=9");
    let tiny = join(&mut s, "permessage-deflate; server_max_window_bits=8");
    let everyone: Vec<_> = deflating.iter().chain(&plain).chain([&small, &tiny]).copied().collect();
    for &c in everyone.iter().chain([&sender]) {
        s.take(c);
    }
    let before: Vec<usize> = everyone.iter().map(|&c| s.raw(c).len()).collect();
    let text = report(7);
    s.send(sender, &text);
    let want = text.replacen('*', "1", 1);
    let got: Vec<&[u8]> = everyone.iter().zip(&before).map(|(&c, &at)| &s.raw(c)[at..]).collect();
    // Two compressions: one for the four 15-bit windows, one for the 9-bit one.
    assert_eq!(s.relay.stats().compressions, 2);
    assert!(got[..4].iter().all(|g| *g == got[0] && g[0] == 0xC1), "the same compressed bytes");
    assert!(got[4..7].iter().all(|g| *g == got[4] && g[0] == 0x81 && g.ends_with(want.as_bytes())));
    assert_eq!(got[7][0], 0xC1, "the 9-bit window's own compression");
    // zlib cannot compress with a 256-byte window: plain for that one.
    assert_eq!(got[8], got[4]);
    for &c in &everyone {
        assert_eq!(s.texts(c), std::slice::from_ref(&want));
    }
    assert_eq!(s.compressed(small), 1);
    assert_eq!(s.compressed(tiny), 0);
}

#[test]
fn the_clients_context_carries_over_unless_it_said_otherwise() {
    let mut s = Sim::new(on());
    let (a, b) = (join(&mut s, BROWSER), join(&mut s, ""));
    s.take(b);
    let mut deflater = Deflater::new(15, true);
    let first = compressed(&mut deflater, OpCode::Text, report(1).as_bytes());
    let second = compressed(&mut deflater, OpCode::Text, report(2).as_bytes());
    assert!(second.len() < first.len() / 2, "the second refers back to the first");
    s.feed(a, &first);
    s.feed(a, &second);
    assert_eq!(s.texts(b), [report(1).replacen('*', "1", 1), report(2).replacen('*', "1", 1)]);

    // A client that offered client_no_context_takeover is inflated afresh
    // each time: one that refers back anyway is sending bad data (1007).
    let c = join(&mut s, "permessage-deflate; client_no_context_takeover");
    s.take(b);
    let mut deflater = Deflater::new(15, true);
    s.feed(c, &compressed(&mut deflater, OpCode::Text, report(3).as_bytes()));
    assert_eq!(s.texts(b), [report(3).replacen('*', "3", 1)]);
    s.feed(c, &compressed(&mut deflater, OpCode::Text, report(4).as_bytes()));
    assert_eq!(close_code(&s.take(c)), Some(1007));
    assert_eq!(s.closed(c), Some(CloseReason::Protocol(ProtocolError::BadCompressedData)));
    // Honoured, it works message after message.
    let d = join(&mut s, "permessage-deflate; client_no_context_takeover");
    s.take(b);
    let mut deflater = Deflater::new(15, false);
    for seq in 5..8 {
        s.feed(d, &compressed(&mut deflater, OpCode::Text, report(seq).as_bytes()));
        assert_eq!(s.texts(b), [report(seq).replacen('*', "4", 1)]);
    }
}

#[test]
fn a_zip_bomb_is_closed_with_1009_before_it_expands() {
    let limits = MessageLimits { max_message: 64 * 1024, max_fragments: 16 };
    let mut s = Sim::new(Config { message: limits, ..on() });
    let (a, b) = (join(&mut s, BROWSER), join(&mut s, BROWSER));
    s.take(b);
    // 16 MiB of one byte deflates to about 16 KB.
    let mut bomb = Compress::new_with_window_bits(Compression::best(), false, 15);
    let mut deflated = Vec::with_capacity(64 * 1024);
    bomb.compress_vec(&vec![b'a'; 16 << 20], &mut deflated, FlushCompress::Sync).unwrap();
    assert!(deflated.len() < 32 * 1024, "{}", deflated.len());
    let mut wire = Vec::new();
    // In frames, so it arrives piece by piece.
    let body = &deflated[..deflated.len() - 4];
    let (first, rest) = body.split_at(64);
    masked_frame_rsv1(&mut wire, false, true, OpCode::Text, first, MASK);
    for piece in rest.chunks(1024) {
        masked_frame(&mut wire, false, OpCode::Continuation, piece, MASK);
    }
    let mut most = 0;
    for piece in wire.chunks(512) {
        s.feed(a, piece);
        most = most.max(metric(&s, "ws_relay_buffer_bytes{buffer=\"input\"}"));
        if s.closed(a).is_some() {
            break;
        }
    }
    assert_eq!(close_code(&s.take(a)), Some(1009));
    assert_eq!(s.closed(a), Some(CloseReason::Protocol(ProtocolError::MessageTooBig)));
    assert!(most <= 2 * 64 * 1024 + 8192, "{most} bytes held for a 64 KiB limit");
    assert_eq!(s.texts(b), ["1 quit"], "nothing of it was relayed");
}

#[test]
fn rsv1_is_still_a_protocol_error_where_nothing_gives_it_a_meaning() {
    let mut deflater = Deflater::new(15, true);
    let message = compressed(&mut deflater, OpCode::Text, report(1).as_bytes());
    // Without deflate: 1002, as before.
    let mut s = Sim::new(on());
    let a = join(&mut s, "");
    s.feed(a, &message);
    assert_eq!(close_code(&s.take(a)), Some(1002));
    assert_eq!(s.closed(a), Some(CloseReason::Protocol(ProtocolError::ReservedBits)));
    let mut off = Sim::relay();
    let a = join(&mut off, BROWSER);
    off.feed(a, &message);
    assert_eq!(close_code(&off.take(a)), Some(1002));
    // With deflate: on a continuation, on a control frame, RSV2.
    let mut cases = Vec::new();
    let mut continuation = Vec::new();
    masked_frame(&mut continuation, false, OpCode::Text, b"* hel", MASK);
    masked_frame_rsv1(&mut continuation, true, true, OpCode::Continuation, b"lo", MASK);
    cases.push(continuation);
    let mut ping = Vec::new();
    masked_frame_rsv1(&mut ping, true, true, OpCode::Ping, b"", MASK);
    cases.push(ping);
    let mut rsv2 = frame(OpCode::Text, b"* hi");
    rsv2[0] |= 0x20;
    cases.push(rsv2);
    for wire in cases {
        let a = join(&mut s, BROWSER);
        s.feed(a, &wire);
        assert_eq!(close_code(&s.take(a)), Some(1002), "{wire:02x?}");
    }
    // Not DEFLATE at all: 1007.
    let a = join(&mut s, BROWSER);
    let mut garbage = Vec::new();
    masked_frame_rsv1(&mut garbage, true, true, OpCode::Text, &[0xFF; 40], MASK);
    s.feed(a, &garbage);
    assert_eq!(close_code(&s.take(a)), Some(1007));
}

#[test]
fn flood_control_counts_what_a_message_inflates_to() {
    let flood = FloodLimits { byte_burst: 20_000, ..FloodLimits::DEFAULT };
    let mut s = Sim::new(Config { flood: Some(flood), ..on() });
    let a = join(&mut s, BROWSER);
    let mut deflater = Deflater::new(15, true);
    let big = format!("* {}", "z".repeat(30_000));
    let wire = compressed(&mut deflater, OpCode::Text, big.as_bytes());
    assert!(wire.len() < 1000);
    s.feed(a, &wire);
    assert_eq!(s.closed(a), None, "closing, not closed");
    assert_eq!(close_code(&s.take(a)), Some(1008));
    s.advance(Duration::from_secs(10));
    assert_eq!(s.closed(a), Some(CloseReason::Relay(RelayError::RateLimited)));
}

#[test]
fn echo_mode_answers_compressed() {
    let mut s = Sim::new(Config { mode: Mode::Echo, ..on() });
    let a = join(&mut s, BROWSER);
    let mut deflater = Deflater::new(15, true);
    let text = report(3);
    s.feed(a, &compressed(&mut deflater, OpCode::Text, text.as_bytes()));
    assert_eq!(s.texts(a), [text]);
    assert_eq!(s.compressed(a), 1);
}

#[test]
fn a_compressed_stream_with_context_takeover_continues_across_a_handover() {
    let mut s = Sim::new(on());
    let (a, b) = (join(&mut s, BROWSER), join(&mut s, ""));
    s.take(a);
    let mut deflater = Deflater::new(15, true);
    s.feed(a, &compressed(&mut deflater, OpCode::Text, report(1).as_bytes()));
    s.handover();
    // This one refers back to the first: the new relay's inflater is primed with the window.
    let second = compressed(&mut deflater, OpCode::Text, report(2).as_bytes());
    assert!(second.len() < 60, "{} bytes: it does refer back", second.len());
    s.feed(a, &second);
    // And in the middle of a fragmented message.
    let third = deflater.compress(report(3).as_bytes());
    let (one, two) = third.split_at(third.len() / 2);
    let mut first_half = Vec::new();
    masked_frame_rsv1(&mut first_half, false, true, OpCode::Text, one, MASK);
    let mut second_half = Vec::new();
    masked_frame(&mut second_half, true, OpCode::Continuation, two, MASK);
    s.feed(a, &first_half);
    s.handover();
    s.feed(a, &second_half);
    s.handover();
    s.feed(a, &compressed(&mut deflater, OpCode::Text, report(4).as_bytes()));
    let want: Vec<String> = (1..5).map(|i| report(i).replacen('*', "1", 1)).collect();
    assert_eq!(s.texts(b), want);
    assert_eq!(s.relay.stats().inflated, 4);
    // What goes out is compressed after the handover too.
    s.send(b, &report(5));
    assert_eq!(s.texts(a), [report(5).replacen('*', "2", 1)]);
    assert_eq!(s.compressed(a), 1);
}

#[test]
fn a_resumed_session_without_deflate_gets_what_was_kept_plain() {
    let mut s = Sim::new(on());
    let offer = "permessage-deflate";
    let with_key = |offer: &str| {
        let req = String::from_utf8(upgrade_request_offering(ROOM, "x", offer)).unwrap();
        req.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: ws-relay, ws-relay.session.0123456789abcdefghijkl\r\n\r\n")
    };
    let a = s.connect_raw(with_key(offer).as_bytes());
    let b = join(&mut s, "");
    s.take(a);
    s.drop_transport(a);
    s.send(b, &report(1));
    // The new connection does not offer deflate: the kept message arrives plain.
    let back = s.connect_raw(with_key("x-none").as_bytes());
    let got = s.take(back);
    assert_eq!(got[1..], [Received::Text("1 resume".into()), Received::Text(report(1).replacen('*', "2", 1))]);
    assert_eq!(s.compressed(back), 0);
}

#[test]
fn echo_mode_mirrors_compression_whatever_the_size() {
    let mut s = Sim::new(Config { mode: Mode::Echo, ..on() });
    let a = join(&mut s, BROWSER);
    let mut deflater = Deflater::new(15, true);
    // Short and incompressible: still answered compressed, since it came so.
    s.feed(a, &compressed(&mut deflater, OpCode::Binary, b"\x8f\x13"));
    assert_eq!(s.take(a), [Received::Binary(b"\x8f\x13".to_vec())]);
    assert_eq!(s.compressed(a), 1);
    // A plain message follows the relay's rule: short, so plain.
    s.send(a, "hi");
    assert_eq!(s.texts(a), ["hi"]);
    assert_eq!(s.compressed(a), 1);
}
