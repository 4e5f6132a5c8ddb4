//! Resumable sessions, driven through the core without sockets: a client
//! that offered `ws-relay.session.<key>` keeps its seat for the resume
//! window after its transport ends without a close frame, and a connection
//! with its key takes the seat back, with every whole message kept for it.

use std::time::Duration;

use ws_relay::client::{upgrade_request, OpCode, Received};
use ws_relay::testing::{close_frame, frame, Sim};
use ws_relay::{Capacity, CloseReason, Config, ConnId};

use Received::{Close, Http, Text};

const ROOM: &str = "/ws-relay/match";
const KEY: &str = "3q2-7wAAAAAAAAAAAAAAAA";

fn offering(room: &str, protocols: &str) -> Vec<u8> {
    let req = String::from_utf8(upgrade_request(room, "x")).unwrap();
    req.replace("\r\n\r\n", &format!("\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n")).into_bytes()
}

fn with_key(room: &str, key: &str) -> Vec<u8> {
    offering(room, &format!("ws-relay, ws-relay.session.{key}"))
}

/// A room of three: `a` and `b`, then `s`, which opted in with `KEY`.
fn room_of_three(config: Config) -> (Sim, ConnId, ConnId, ConnId) {
    let mut sim = Sim::new(config);
    let a = sim.join(ROOM);
    let b = sim.join(ROOM);
    let s = sim.connect_raw(&with_key(ROOM, KEY));
    assert_eq!(sim.take(s), [Http(101), Text("3 self".into()), Text("1 join".into()), Text("2 join".into())]);
    assert!(String::from_utf8_lossy(sim.raw(s)).contains("\r\nSec-WebSocket-Protocol: ws-relay\r\n"));
    sim.take(a);
    sim.take(b);
    (sim, a, b, s)
}

#[test]
fn a_dropped_session_keeps_its_seat_and_gets_what_was_sent_meanwhile() {
    let (mut sim, a, b, s) = room_of_three(Config::default());
    sim.send(a, "* before");
    assert_eq!(sim.texts(s), ["1 before"]);
    sim.drop_transport(s);
    assert_eq!(sim.closed(s), Some(CloseReason::TransportClosed), "the driver lets the socket go");
    sim.send(a, "* one");
    sim.send(b, "3 two");
    sim.advance(Duration::from_secs(9));
    sim.send(a, "3 three");
    assert!(sim.take(a).is_empty(), "nobody hears of the drop");
    assert_eq!(sim.texts(b), ["1 before", "1 one"]);
    assert_eq!(sim.relay.members(ROOM.as_bytes()), [1, 2, 3]);

    let back = sim.connect_raw(&with_key(ROOM, KEY));
    assert_eq!(
        sim.take(back),
        [Http(101), Text("3 resume".into()), Text("1 one".into()), Text("2 two".into()), Text("1 three".into())]
    );
    assert!(sim.take(a).is_empty() && sim.take(b).is_empty(), "nobody hears of the resume either");
    sim.send(back, "* I am back");
    assert_eq!(sim.texts(a), ["3 I am back"]);
    sim.send(b, "* live");
    assert_eq!(sim.texts(back), ["2 live"]);
    assert_eq!(sim.relay.stats().resumes, 1);
}

#[test]
fn the_seat_goes_when_the_window_passes_and_the_key_then_joins_afresh() {
    let (mut sim, a, _b, s) = room_of_three(Config { resume_window: Duration::from_secs(5), ..Config::default() });
    sim.eof(s);
    sim.advance(Duration::from_millis(4999));
    assert!(sim.take(a).is_empty());
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.texts(a), ["3 quit"]);
    assert_eq!(sim.relay.stats().sessions_expired, 1);
    let late = sim.connect_raw(&with_key(ROOM, KEY));
    assert_eq!(sim.take(late)[1], Text("4 self".into()), "a fresh join, saying nothing of the key");
}

#[test]
fn a_close_frame_ends_the_session_at_once() {
    let (mut sim, a, _b, s) = room_of_three(Config::default());
    sim.feed(s, &close_frame(1000));
    assert_eq!(sim.closed(s), Some(CloseReason::ClientClose));
    assert_eq!(sim.texts(a), ["3 quit"]);
    let again = sim.connect_raw(&with_key(ROOM, KEY));
    assert_eq!(sim.take(again)[1], Text("4 self".into()));
}

#[test]
fn what_waits_for_a_parked_seat_is_bounded_like_a_live_client() {
    let capacity = Capacity { max_room_clients: 8, ..Config::DEFAULT.capacity };
    let config = Config { capacity, max_pending: 72 * 1024, ..Config::default() };
    let (mut sim, a, _b, s) = room_of_three(config);
    sim.drop_transport(s);
    let big = format!("* {}", "x".repeat(30 * 1024));
    sim.send(a, &big);
    sim.send(a, &big);
    assert!(sim.take(a).is_empty(), "within the bound: still seated");
    sim.send(a, &big);
    assert_eq!(sim.texts(a), ["3 quit"], "past the bound the seat goes");
    let back = sim.connect_raw(&with_key(ROOM, KEY));
    assert_eq!(sim.take(back)[1], Text("4 self".into()));
}

#[test]
fn a_key_offered_for_another_room_is_a_fresh_join_and_leaves_the_session_alone() {
    let (mut sim, a, _b, s) = room_of_three(Config::default());
    sim.drop_transport(s);
    let elsewhere = sim.connect_raw(&with_key("/ws-relay/other", KEY));
    assert_eq!(sim.take(elsewhere), [Http(101), Text("1 self".into())]);
    sim.send(a, "* still waiting for 3");
    let back = sim.connect_raw(&with_key(ROOM, KEY));
    assert_eq!(sim.take(back), [Http(101), Text("3 resume".into()), Text("1 still waiting for 3".into())]);
}

#[test]
fn a_half_dead_connection_is_replaced_with_4001() {
    let (mut sim, a, _b, s) = room_of_three(Config::default());
    // `s` stopped reading (its line went dead); the relay has not noticed.
    sim.stall(s, true);
    sim.send(a, "* unread");
    let back = sim.connect_raw(&with_key(ROOM, KEY));
    assert_eq!(sim.take(back), [Http(101), Text("3 resume".into()), Text("1 unread".into())]);
    sim.stall(s, false);
    assert_eq!(
        sim.take(s),
        [Close(Some((4001, "replaced".into())))],
        "what it had not read went to the new connection"
    );
    assert!(sim.take(a).is_empty());
    sim.send(a, "* to 3");
    assert_eq!(sim.texts(back), ["1 to 3"]);
    sim.feed(s, &close_frame(1000));
    assert_eq!(sim.closed(s), Some(CloseReason::Replaced));
    assert!(sim.take(a).is_empty(), "the old connection's end is no quit");
}

/// The old transport took part of a frame before it died: the client never
/// saw all of it, so the rest is dropped, and the resume starts at the next
/// whole message.
#[test]
fn a_frame_cut_by_the_drop_is_lost_and_the_rest_follow_whole() {
    let (mut sim, a, _b, s) = room_of_three(Config::default());
    sim.stall(s, true);
    sim.send(a, "* first");
    sim.send(a, "* second");
    sim.read_some(s, 4);
    sim.drop_transport(s);
    sim.send(a, "* third");
    let back = sim.connect_raw(&with_key(ROOM, KEY));
    assert_eq!(sim.take(back), [Http(101), Text("3 resume".into()), Text("1 second".into()), Text("1 third".into())]);
}

#[test]
fn a_keepalive_timeout_parks_without_a_close_frame() {
    let config =
        Config { ping_interval: Duration::from_secs(1), ping_timeout: Duration::from_secs(1), ..Config::default() };
    let (mut sim, a, b, s) = room_of_three(config);
    sim.stall(s, true);
    for _ in 0..4 {
        sim.feed(a, &frame(OpCode::Pong, b"keepalive"));
        sim.feed(b, &frame(OpCode::Pong, b"keepalive"));
        sim.advance(Duration::from_millis(600));
    }
    assert_eq!(sim.closed(s), Some(CloseReason::KeepaliveTimeout));
    // Only the relay's keepalive pings: a and b were sent nothing else, and no quit.
    assert!(sim.take(a).iter().all(|r| matches!(r, Received::Ping(_))), "parked, not gone");
    sim.send(a, "* meanwhile");
    let back = sim.connect_raw(&with_key(ROOM, KEY));
    let got = sim.take(back);
    assert_eq!(got[..2], [Http(101), Text("3 resume".into())]);
    assert!(got[2..].iter().all(|r| !matches!(r, Close(_))), "{got:?}");
    assert!(got.contains(&Text("1 meanwhile".into())));
}

#[test]
fn nobody_may_send_resume_and_a_bad_key_is_refused() {
    let (mut sim, a, _b, _s) = room_of_three(Config::default());
    sim.send(a, "* resume");
    assert_eq!(sim.take(a), [Close(Some((1008, "self, join, quit and resume are sent by the relay only".into())))]);
    for key in ["short", "has spaces in it ........", &"x".repeat(65), "bad+chars/in=it........."] {
        let refused = sim.connect_raw(&with_key(ROOM, key));
        assert_eq!(sim.take(refused)[0], Http(400), "{key}");
    }
}

#[test]
fn without_a_key_or_with_sessions_off_a_drop_is_a_quit_as_before() {
    let (mut sim, a, b, _s) = room_of_three(Config::default());
    sim.drop_transport(b);
    assert_eq!(sim.texts(a), ["2 quit"]);
    let (mut sim, a, _b, s) = room_of_three(Config { resume_window: Duration::ZERO, ..Config::default() });
    sim.drop_transport(s);
    assert_eq!(sim.texts(a), ["3 quit"]);
}

#[test]
fn parked_sessions_are_capped() {
    let (mut sim, a, _b, s) = room_of_three(Config { max_parked: 1, ..Config::default() });
    let t = sim.connect_raw(&with_key(ROOM, "another-key-of-22-chars"));
    sim.take(t);
    sim.take(a);
    sim.drop_transport(s);
    sim.drop_transport(t);
    assert_eq!(sim.texts(a), ["4 quit"], "the second drop finds the parking full");
}

#[test]
fn a_parked_session_moves_with_a_handover() {
    let (mut sim, a, _b, s) = room_of_three(Config::default());
    sim.drop_transport(s);
    sim.send(a, "* before the move");
    sim.handover();
    sim.send(a, "* after the move");
    let back = sim.connect_raw(&with_key(ROOM, KEY));
    assert_eq!(
        sim.take(back),
        [Http(101), Text("3 resume".into()), Text("1 before the move".into()), Text("1 after the move".into())]
    );
}
