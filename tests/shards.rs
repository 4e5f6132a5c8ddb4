//! The relay on several cores: rooms stay whole whichever shard accepts a
//! connection, the caps hold for the process, `/metrics` adds the shards up,
//! and the PROXY protocol brings the client's address for the per-address cap.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use tungstenite::Message;
use ws_relay::client::{upgrade_request, Received};

/// Hundreds of clients join 40 rooms at once from 16 threads, so joins to one
/// room race through different shards' sockets: every room must form whole,
/// with ids 1 to 8, every client must know all its room-mates, and a message
/// to `*` must reach exactly them.
#[test]
fn rooms_stay_whole_under_concurrent_joins_across_shards() {
    const ROOMS: usize = 40;
    const PER_ROOM: usize = 8;
    const THREADS: usize = 16;
    let relay = Relay::start(&["--threads", "4"]);
    let addr = relay.addr;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let relay_addr = addr;
                // Each thread's clients are spread over every room.
                let mine: Vec<usize> = (t..ROOMS * PER_ROOM).step_by(THREADS).collect();
                barrier.wait();
                let mut clients: Vec<(usize, tungstenite::WebSocket<TcpStream>)> = mine
                    .iter()
                    .map(|&i| {
                        let stream = TcpStream::connect(relay_addr).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let url = format!("ws://{relay_addr}/ws-relay/whole-{}", i % ROOMS);
                        (i % ROOMS, tungstenite::client::client(url, stream).expect("upgrade").0)
                    })
                    .collect();
                // Each learns its id and every room-mate, from its join list and the joins after it.
                let views: Vec<(usize, u64, BTreeSet<u64>)> = clients
                    .iter_mut()
                    .map(|(room, ws)| {
                        let me: u64 = text(ws).strip_suffix(" self").expect("self first").parse().unwrap();
                        let mut peers = BTreeSet::new();
                        while peers.len() < PER_ROOM - 1 {
                            let t = text(ws);
                            let (id, kind) = t.split_once(' ').unwrap();
                            assert_eq!(kind, "join", "{t}");
                            assert!(peers.insert(id.parse().unwrap()), "{t} twice");
                        }
                        (*room, me, peers)
                    })
                    .collect();
                barrier.wait();
                for (_, ws) in &mut clients {
                    send(ws, "* hello");
                }
                for ((_, ws), (_, me, peers)) in clients.iter_mut().zip(&views) {
                    let heard: BTreeSet<u64> = (0..PER_ROOM - 1)
                        .map(|_| {
                            let t = text(ws);
                            t.strip_suffix(" hello").expect("hello").parse().unwrap()
                        })
                        .collect();
                    assert_eq!(&heard, peers, "client {me} heard the room it saw join");
                }
                // The clients stay connected for the scrape below.
                (views, clients)
            })
        })
        .collect();
    let mut rooms: BTreeMap<usize, Vec<(u64, BTreeSet<u64>)>> = BTreeMap::new();
    let mut connected = Vec::new();
    for thread in threads {
        let (views, clients) = thread.join().expect("every client saw a whole room");
        for (room, me, peers) in views {
            rooms.entry(room).or_default().push((me, peers));
        }
        connected.extend(clients);
    }
    assert_eq!(rooms.len(), ROOMS);
    for (room, members) in rooms {
        let ids: BTreeSet<u64> = members.iter().map(|(me, _)| *me).collect();
        assert_eq!(ids, (1..=PER_ROOM as u64).collect(), "room {room}");
        for (me, peers) in members {
            let mut all = peers.clone();
            all.insert(me);
            assert_eq!(all, ids, "room {room}: client {me} sees another room");
        }
    }
    // The rooms were spread over the shards, and connections handed to them.
    let scrape = relay.scrape();
    assert_eq!(sample(&scrape, "ws_relay_clients"), (ROOMS * PER_ROOM) as f64);
    let per_shard: Vec<f64> =
        (0..4).map(|s| sample(&scrape, &format!("ws_relay_shard_clients{{shard=\"{s}\"}}"))).collect();
    assert_eq!(per_shard.iter().sum::<f64>(), (ROOMS * PER_ROOM) as f64, "{per_shard:?}");
    assert!(per_shard.iter().all(|&n| n > 0.0), "every shard serves some rooms: {per_shard:?}");
    assert!(sample(&scrape, "ws_relay_handoffs_total") > 0.0);
}

/// `--max-clients` and `--max-rooms` count every shard's clients and rooms.
#[test]
fn caps_hold_for_the_whole_process() {
    let relay = Relay::start(&["--threads", "4", "--max-clients", "6", "--max-rooms", "4"]);
    // One room on each shard.
    let rooms: Vec<String> = (0..4)
        .map(|shard| {
            let name = |k: usize| format!("/ws-relay/cap-{k}");
            (0..).map(name).find(|n| ws_relay::shard_of(n.as_bytes(), 4) == shard).unwrap()
        })
        .collect();
    let mut held: Vec<_> = rooms.iter().map(|r| relay.ws(r)).collect();
    held.push(relay.ws(&rooms[0]));
    held.push(relay.ws(&rooms[1]));
    for ws in &mut held {
        text(ws);
    }
    let answer = http(&relay, &upgrade_request(&rooms[2], "x"));
    assert!(answer.starts_with("HTTP/1.1 503 ") && answer.contains("server full"), "{answer}");
    for _ in 0..2 {
        let mut ws = held.pop().unwrap();
        ws.close(None).unwrap();
        let _ = close_of(&mut ws);
    }
    // Back to four clients in four rooms: one more client fits, a fifth room does not.
    let answer = http(&relay, &upgrade_request("/ws-relay/cap-fifth", "x"));
    assert!(answer.starts_with("HTTP/1.1 503 ") && answer.contains("too many rooms"), "{answer}");
    let mut again = relay.ws(&rooms[3]);
    assert_eq!(text(&mut again), "2 self");
}

/// A raw connection that first sends `header`, then an upgrade to `room`.
fn proxied(relay: &Relay, header: &[u8], room: &str) -> Raw {
    let mut raw = Raw::connect(relay.addr);
    let mut bytes = header.to_vec();
    bytes.extend(upgrade_request(room, "x"));
    raw.write(&bytes);
    raw
}

#[test]
fn the_proxy_protocol_names_the_client_for_the_per_address_cap() {
    let relay = Relay::start(&["--proxy-protocol", "--max-clients-per-ip", "2", "--metrics-listen", "127.0.0.1:0"]);
    let v1 = |ip: &str| format!("PROXY TCP4 {ip} 192.0.2.1 40000 7927\r\n").into_bytes();
    let mut a = proxied(&relay, &v1("203.0.113.7"), ROOM);
    let mut b = proxied(&relay, &v1("203.0.113.7"), ROOM);
    assert_eq!(a.next(), Received::Http(101));
    assert_eq!(b.next(), Received::Http(101));
    let mut third = proxied(&relay, &v1("203.0.113.7"), ROOM);
    assert_eq!(third.next(), Received::Http(503), "the third client from one address");
    assert!(third.closed_by_server());
    // Version 2, binary, from another address: admitted.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 9, 192, 0, 2, 1, 0x9c, 0x40, 0x1e, 0xf7]);
    let mut other = proxied(&relay, &v2, ROOM);
    assert_eq!(other.next(), Received::Http(101));
    // One leaves, and its address has room again.
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = proxied(&relay, &v1("203.0.113.7"), ROOM);
    assert_eq!(again.next(), Received::Http(101));
    let scrape = relay.scrape();
    assert_eq!(sample(&scrape, "ws_relay_handshakes_rejected_total{status=\"503\"}"), 1.0);
}

#[test]
fn a_missing_or_bad_proxy_header_is_refused_and_never_trusted_when_off() {
    let relay = Relay::start(&["--proxy-protocol"]);
    let bad: [&[u8]; 5] = [
        b"GET /ws-relay/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c123456789012",
        b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n",
    ];
    for header in bad {
        let answer = http(&relay, header);
        assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains("PROXY"), "{header:?}: {answer}");
    }
    // A truncated header and a hang-up: no answer, nothing else disturbed.
    let mut cut = TcpStream::connect(relay.addr).unwrap();
    cut.write_all(b"PROXY TCP4 1.2.").unwrap();
    drop(cut);
    // The same header a byte at a time is fine.
    let mut slow = Raw::connect(relay.addr);
    slow.stream.set_nodelay(true).unwrap();
    let mut bytes = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7927\r\n".to_vec();
    bytes.extend(upgrade_request(ROOM, "x"));
    for b in bytes {
        slow.write(&[b]);
    }
    assert_eq!(slow.next(), Received::Http(101));
    // Without --proxy-protocol a PROXY line is no request: nobody can claim an address.
    let plain = Relay::start(&["--max-clients-per-ip", "1"]);
    let answer = http(&plain, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET /healthz HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

#[test]
fn metrics_add_up_the_shards() {
    let relay = Relay::start(&["--threads", "3", "--metrics-listen", "127.0.0.1:0"]);
    let mut held = Vec::new();
    for i in 0..12 {
        let mut ws = relay.ws(&format!("/ws-relay/m-{i}"));
        text(&mut ws);
        ws.send(Message::text("* nobody else here")).unwrap();
        held.push(ws);
    }
    std::thread::sleep(Duration::from_millis(100));
    let scrape = relay.scrape();
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    assert_eq!(sample(&scrape, "ws_relay_clients"), 12.0);
    assert_eq!(sample(&scrape, "ws_relay_rooms"), 12.0);
    assert_eq!(sample(&scrape, "ws_relay_upgrades_total"), 12.0);
    assert_eq!(sample(&scrape, "ws_relay_messages_received_total"), 12.0);
    let shards: f64 = (0..3).map(|s| sample(&scrape, &format!("ws_relay_shard_clients{{shard=\"{s}\"}}"))).sum();
    assert_eq!(shards, 12.0);
    // Accepted connections are counted once, by the shard that accepted them.
    assert_eq!(sample(&scrape, "ws_relay_connections_accepted_total"), 13.0, "12 clients and this scrape");
}
