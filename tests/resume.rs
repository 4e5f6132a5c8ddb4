//! Resumable sessions over real sockets: a player in a room of four whose
//! connection is cut without a close frame comes back within the window with
//! the same id and every message sent to it meanwhile, and the others notice
//! nothing; after the window its room hears it quit.

mod common;

use std::net::Shutdown;
use std::time::Duration;

use common::{send, silent, text, texts, Raw, Relay};
use ws_relay::client::{upgrade_request, OpCode, Received};

const ROOM: &str = "/ws-relay/match?game=7";
const KEY: &str = "Zm9yIHRlc3RzIG9ubHkgYnkgdGhlIHJlbGF5";

fn with_key(relay: &Relay) -> Raw {
    let mut raw = Raw::connect(relay.addr);
    let req = String::from_utf8(upgrade_request(ROOM, "x")).unwrap();
    let req = req.replace("\r\n\r\n", &format!("\r\nSec-WebSocket-Protocol: ws-relay, ws-relay.session.{KEY}\r\n\r\n"));
    raw.write(req.as_bytes());
    assert_eq!(raw.next(), Received::Http(101));
    raw
}

#[test]
fn a_player_cut_off_mid_game_comes_back_with_its_id_and_every_message() {
    let relay = Relay::start(&["--resume-window", "2s"]);
    let mut a = relay.ws(ROOM);
    assert_eq!(text(&mut a), "1 self");
    let mut b = relay.ws(ROOM);
    assert_eq!(texts(&mut b, 2), ["2 self", "1 join"]);
    let mut c = relay.ws(ROOM);
    assert_eq!(texts(&mut c, 3), ["3 self", "1 join", "2 join"]);
    let mut s = with_key(&relay);
    for want in ["4 self", "1 join", "2 join", "3 join"] {
        assert_eq!(s.next(), Received::Text(want.into()));
    }
    assert_eq!(texts(&mut a, 3), ["2 join", "3 join", "4 join"]);
    assert_eq!(texts(&mut b, 2), ["3 join", "4 join"]);
    assert_eq!(texts(&mut c, 1), ["4 join"]);
    send(&mut a, "* round 1");
    assert_eq!(s.next(), Received::Text("1 round 1".into()));
    let _ = (text(&mut b), text(&mut c));

    // The line goes dead: no close frame, the socket just ends.
    s.stream.shutdown(Shutdown::Both).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let mut sent = Vec::new();
    for round in 2..12 {
        let msg = format!("round {round}");
        send(&mut a, &format!("* {msg}"));
        sent.push(format!("1 {msg}"));
        send(&mut b, &format!("4 to you, {msg}"));
        sent.push(format!("2 to you, {msg}"));
    }
    for _ in 2..12 {
        assert!(text(&mut b).starts_with("1 round"));
        assert!(text(&mut c).starts_with("1 round"));
    }
    for ws in [&mut a, &mut b, &mut c] {
        assert!(silent(ws), "nobody hears of the drop");
    }

    let mut back = with_key(&relay);
    assert_eq!(back.next(), Received::Text("4 resume".into()), "the same id");
    // Every message kept, once, in each sender's order (two senders' messages
    // may interleave either way: they come on two connections).
    let got: Vec<String> = (0..sent.len())
        .map(|_| match back.next() {
            Received::Text(t) => t,
            other => panic!("{other:?}"),
        })
        .collect();
    for sender in ["1 ", "2 "] {
        let of = |list: &[String]| list.iter().filter(|m| m.starts_with(sender)).cloned().collect::<Vec<_>>();
        assert_eq!(of(&got), of(&sent));
    }
    for ws in [&mut a, &mut b, &mut c] {
        assert!(silent(ws), "nobody hears of the resume");
    }
    back.send(OpCode::Text, b"* I am back");
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(text(ws), "4 I am back");
    }
    send(&mut c, "4 welcome back");
    assert_eq!(back.next(), Received::Text("3 welcome back".into()));
    let metrics = relay.scrape();
    assert_eq!(common::sample(&metrics, "ws_relay_resumes_total"), 1.0);

    // Cut again, and this time the window passes: the room hears it quit.
    back.stream.shutdown(Shutdown::Both).unwrap();
    drop(back);
    assert_eq!(common::sample(&relay.scrape(), "ws_relay_parked_sessions"), 1.0);
    a.get_ref().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(text(&mut a), "4 quit");
    assert_eq!(text(&mut b), "4 quit");
    let metrics = relay.scrape();
    assert_eq!(common::sample(&metrics, "ws_relay_sessions_expired_total"), 1.0);
    assert_eq!(common::sample(&metrics, "ws_relay_parked_sessions"), 0.0);
}
