//! A relay's state moved to another relay (`export_state`, `import_state`),
//! as a takeover moves it to a new process: at every step of a session, the
//! relay that moved must go on exactly as the one that stayed — the same
//! bytes to every client, the same closes, the same counters.

use std::time::{Duration, Instant};

use ws_relay::client::{masked_frame, upgrade_request, OpCode, Received};
use ws_relay::testing::{close_frame, frame, Sim};
use ws_relay::{Action, Budget, CloseReason, Config, ImportError, Listener, Relay, Shard, Verdict, STATE_VERSION};

const R1: &str = "/ws-relay/match?game=1";
const R2: &str = "/ws-relay/match?game=2";

/// A session touching every kind of state the core keeps, with `cp` called
/// between steps: the place a handover may happen.
fn session(s: &mut Sim, cp: &mut dyn FnMut(&mut Sim)) {
    let a = s.join(R1);
    cp(s);
    let b = s.join(R1);
    cp(s);
    // Half an upgrade request.
    let request = upgrade_request(R1, "game.example");
    let d = s.connect_raw(&request[..30]);
    cp(s);
    s.send(a, "* hello");
    cp(s);
    // Half a frame, cut inside a two-byte character: the frame decoder and
    // the UTF-8 validator are both mid-way.
    let split = frame(OpCode::Text, "* h\u{e9}llo w\u{f6}rld".as_bytes());
    s.feed(b, &split[..10]);
    cp(s);
    s.advance(Duration::from_secs(1));
    cp(s);
    s.feed(d, &request[30..]);
    cp(s);
    s.feed(b, &split[10..]);
    cp(s);
    // A message in fragments, a ping between them.
    let c = s.join(R1);
    let mut first = Vec::new();
    masked_frame(&mut first, false, OpCode::Text, b"* frag", [1, 2, 3, 4]);
    s.feed(c, &first);
    cp(s);
    s.feed(c, &frame(OpCode::Ping, b"are you there"));
    cp(s);
    let mut last = Vec::new();
    masked_frame(&mut last, true, OpCode::Continuation, b"mented", [5, 6, 7, 8]);
    s.feed(c, &last);
    cp(s);
    // A client that does not read, whose output waits in the core.
    let e = s.join(R2);
    s.stall(e, true);
    let g = s.join(R2);
    cp(s);
    for i in 0..5 {
        s.send(g, &format!("* report {i}"));
    }
    cp(s);
    // A flooder: its budget, part spent before a step and the rest after.
    let f = s.join(R2);
    for _ in 0..1500 {
        s.send(f, "* burst");
    }
    cp(s);
    for _ in 0..600 {
        s.send(f, "* burst");
    }
    cp(s);
    s.feed(g, &frame(OpCode::Binary, b"1 \x00\x01\x02"));
    cp(s);
    // Plain requests in two pieces. (Not /metrics: it shows how much memory
    // buffers hold, which is the allocator's business, not state.)
    let h = s.connect_raw(b"GET /healthz HTTP/1.1\r\nHo");
    cp(s);
    s.feed(h, b"st: x\r\n\r\n");
    cp(s);
    let m = s.connect_on(Listener::Public);
    s.feed(m, b"HEAD /ws-relay.j");
    cp(s);
    s.feed(m, b"s HTTP/1.1\r\nHost: x\r\n\r\n");
    cp(s);
    // Keepalive: pings go out, one client answers.
    s.advance(Duration::from_secs(30));
    cp(s);
    s.feed(a, &frame(OpCode::Pong, b"keepalive"));
    cp(s);
    // A message that breaks the format: b is closing, with a deadline.
    s.send(b, "nonsense");
    cp(s);
    s.advance(Duration::from_secs(2));
    cp(s);
    s.feed(b, &close_frame(1000));
    cp(s);
    s.feed(a, &close_frame(1000));
    cp(s);
    s.stall(e, false);
    cp(s);
    s.send(e, "* back");
    cp(s);
    // A resumable session: dropped, its seat keeps what is sent to it, and
    // a new connection with its key takes it back.
    let session = s.connect_raw(&with_key(R2));
    cp(s);
    s.drop_transport(session);
    cp(s);
    s.send(e, "* while it was away");
    cp(s);
    let back = s.connect_raw(&with_key(R2));
    cp(s);
    s.send(back, "* back again");
    cp(s);
    // The rest stay silent past the ping timeout.
    s.advance(Duration::from_secs(31));
    cp(s);
    s.send(d, "* anyone?");
    cp(s);
    s.advance(Duration::from_secs(60));
    cp(s);
}

/// Every client's bytes and close reason, the counters, the connections
/// held and a room's members: what must not change with a handover.
type Outcome = (Vec<(Vec<u8>, Option<CloseReason>)>, ws_relay::Stats, usize, Vec<u64>);

fn outcome(s: &Sim) -> Outcome {
    let peers = s.peers().iter().map(|p| (p.raw.clone(), p.closed)).collect();
    (peers, s.relay.stats().clone(), s.relay.connections(), s.relay.members(R2.as_bytes()))
}

fn run(config: &Config, at: Option<usize>) -> (Sim, usize) {
    let mut s = Sim::new(config.clone());
    let mut step = 0;
    session(&mut s, &mut |s| {
        if Some(step) == at {
            s.handover();
        }
        step += 1;
    });
    (s, step)
}

#[test]
fn a_relay_moved_at_any_step_goes_on_byte_for_byte() {
    let config = Config::default();
    let (stayed, steps) = run(&config, None);
    let expected = outcome(&stayed);
    // The session does what it says: messages relayed, closes of each kind.
    let got = |peer: usize, text: &str| expected.0[peer].0.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(got(1, "1 hello") && got(0, "2 h\u{e9}llo w\u{f6}rld") && got(0, "4 fragmented"));
    assert!(got(4, "2 report 4") && got(5, "1 back") && got(7, "200 OK") && got(8, "text/javascript"));
    assert!(got(10, "4 resume") && got(10, "1 while it was away") && got(4, "4 back again"));
    let closed: Vec<Option<CloseReason>> = expected.0.iter().map(|(_, c)| *c).collect();
    assert_eq!(closed[0], Some(CloseReason::ClientClose));
    assert!(matches!(closed[1], Some(CloseReason::Relay(_))));
    assert_eq!(closed[2], Some(CloseReason::KeepaliveTimeout));
    assert_eq!(closed[6], Some(CloseReason::Relay(ws_relay::RelayError::RateLimited)));
    assert!(steps > 25);
    for at in 0..steps {
        let (moved, _) = run(&config, Some(at));
        let got = outcome(&moved);
        for (i, (a, b)) in got.0.iter().zip(&expected.0).enumerate() {
            assert!(
                a == b,
                "moved after step {at}: client {i} saw\n{:?} {:?}\ninstead of\n{:?} {:?}",
                a.1,
                String::from_utf8_lossy(&a.0),
                b.1,
                String::from_utf8_lossy(&b.0)
            );
        }
        assert!(
            got == expected,
            "moved after step {at}: {:?} instead of {:?}",
            (&got.1, got.2, &got.3),
            (&expected.1, expected.2, &expected.3)
        );
    }
}

#[test]
fn moving_twice_in_a_row_and_at_every_step_changes_nothing() {
    let config = Config::default();
    let expected = outcome(&run(&config, None).0);
    let mut s = Sim::new(config);
    session(&mut s, &mut |s| {
        s.handover();
        s.handover();
    });
    assert!(outcome(&s) == expected);
}

fn with_key(room: &str) -> Vec<u8> {
    let req = String::from_utf8(upgrade_request(room, "x")).unwrap();
    req.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: ws-relay, ws-relay.session.0123456789abcdefghijkl\r\n\r\n")
        .into_bytes()
}

fn upgrade_with_token(room: &str, token: &str) -> Vec<u8> {
    let req = String::from_utf8(upgrade_request(room, "x")).unwrap();
    req.replace("\r\n\r\n", &format!("\r\nSec-WebSocket-Protocol: ws-relay, ws-relay.token.{token}\r\n\r\n"))
        .into_bytes()
}

/// An upgrade waiting for its verdict when the relay moves is asked about
/// again, with what it said the first time, and what it sent meanwhile is kept.
#[test]
fn an_upgrade_waiting_for_its_verdict_is_asked_about_again() {
    let mut s = Sim::new(Config { admission: true, ..Config::default() });
    let first = s.connect_raw(&upgrade_with_token(R1, "first"));
    s.admit(first, Verdict::Accept { subject: Some("alice".into()) });
    let mut bytes = upgrade_with_token(R1, "second");
    bytes.extend(frame(OpCode::Text, b"* early"));
    let second = s.connect_raw(&bytes);
    let asked = s.admissions.clone();
    assert_eq!(asked.len(), 1);
    s.handover();
    assert_eq!(s.admissions, asked, "the same question again");
    s.admit(second, Verdict::Accept { subject: None });
    assert_eq!(s.take(second), [Received::Http(101), Received::Text("2 self".into()), Received::Text("1 join".into())]);
    assert_eq!(s.take(first)[2..], [Received::Text("2 join".into()), Received::Text("2 early".into())]);
}

/// A scrape that waits for other shards' counters cannot be finished by a
/// relay that does not have them: it is answered 503, and nothing hangs.
#[test]
fn a_request_waiting_for_other_shards_is_answered_503() {
    let now = Instant::now();
    let shard = Shard { index: 0, count: 2 };
    let mut old = Relay::sharded(Config::default(), shard, Budget::new()).unwrap();
    let conn = old.handle_connect(now);
    old.handle_read(conn, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", now);
    assert_eq!(old.poll_action(), Some(Action::Metrics { conn }));
    let state = old.export_state(now);
    let mut new = Relay::sharded(Config::default(), shard, Budget::new()).unwrap();
    new.import_state(&state, now).unwrap();
    assert!(matches!(new.poll_action(), Some(Action::Close { conn: c, .. }) if c == conn));
    assert!(new.pending(conn).starts_with(b"HTTP/1.1 503 "));
}

/// Caps taken by the moved clients are taken in the new relay's budget.
#[test]
fn the_budget_counts_the_clients_and_rooms_that_moved() {
    let mut s = Sim::relay();
    for room in [R1, R1, R2] {
        s.join(room);
    }
    let state = s.relay.export_state(s.now);
    let budget = Budget::new();
    let mut new = Relay::sharded(Config::default(), Shard::ALONE, budget.clone()).unwrap();
    new.import_state(&state, s.now).unwrap();
    assert_eq!((budget.clients(), budget.rooms()), (3, 2));
    assert_eq!(new.members(R1.as_bytes()), [1, 2]);
}

#[test]
fn a_state_it_did_not_write_is_refused_and_changes_nothing() {
    let mut s = Sim::relay();
    let a = s.join(R1);
    s.send(a, "* hi");
    s.join(R1);
    let state = s.relay.export_state(s.now);
    let fresh = || Relay::new(Config::default()).unwrap();
    let import = |bytes: &[u8]| {
        let mut r = fresh();
        let result = r.import_state(bytes, s.now);
        if result.is_err() {
            assert_eq!((r.connections(), r.rooms()), (0, 0), "a refused state leaves the relay as it was");
        }
        result
    };
    assert_eq!(import(b"GET / HTTP/1.1\r\n"), Err(ImportError::NotAState));
    assert_eq!(import(&state[..5]), Err(ImportError::NotAState));
    let mut newer = state.clone();
    newer[8..10].copy_from_slice(&(STATE_VERSION + 1).to_le_bytes());
    assert_eq!(import(&newer), Err(ImportError::UnknownVersion(STATE_VERSION + 1)));
    let mut other = Relay::sharded(Config::default(), Shard { index: 1, count: 2 }, Budget::new()).unwrap();
    assert_eq!(other.import_state(&state, s.now), Err(ImportError::ShardMismatch { exported: (0, 1), here: (1, 2) }));
    for cut in 10..state.len() {
        assert!(import(&state[..cut]).is_err(), "a state cut at {cut} of {} was taken", state.len());
    }
    let mut longer = state.clone();
    longer.push(0);
    assert!(matches!(import(&longer), Err(ImportError::Corrupt(_))));
    let mut busy = fresh();
    busy.handle_connect(s.now);
    assert_eq!(busy.import_state(&state, s.now), Err(ImportError::NotEmpty));
    // Every single corrupted byte is refused or gives a relay that works: never a panic.
    for i in 10..state.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = state.clone();
            bad[i] ^= flip;
            let mut r = fresh();
            if r.import_state(&bad, s.now).is_ok() {
                while r.poll_action().is_some() {}
                r.handle_timeout(s.now + Duration::from_secs(3600));
                let _ = r.export_state(s.now);
            }
        }
    }
}
