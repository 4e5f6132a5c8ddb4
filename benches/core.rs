//! The core alone, no sockets: fanout, frame decoding, the upgrade handshake,
//! join and quit, token checks. Each iteration also takes the output out of the core the way
//! a driver does after writing it, through the shared harness, so queueing a
//! copy for every recipient is counted.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;
use ws_relay::client::{masked_frame, masked_frame_rsv1, upgrade_request, upgrade_request_offering, Deflater, OpCode};
use ws_relay::testing::{Decoder, Sim};
use ws_relay::token::{mint, Verifier};
use ws_relay::{Config, ConnId, Deflate, MessageLimits, Mode};

fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    masked_frame(&mut out, true, opcode, payload, [0x12, 0x34, 0x56, 0x78]);
    out
}

/// A room of `n` clients whose output is written and forgotten.
fn room(n: usize) -> (Sim, Vec<ConnId>) {
    let mut sim = Sim::relay();
    sim.record(false);
    let conns = (0..n).map(|_| sim.connect_raw(&upgrade_request("/ws-relay/bench", "bench"))).collect();
    (sim, conns)
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_200B");
    let frame = client_frame(OpCode::Text, format!("* report {}", "x".repeat(191)).as_bytes());
    for n in [2usize, 8, 64, 512] {
        let (mut sim, conns) = room(n);
        group.throughput(Throughput::Elements(n as u64 - 1));
        group.bench_function(format!("room_of_{n}"), |b| {
            b.iter(|| {
                // A game's pace (500 Hz), so flood control is charged but never trips.
                sim.now += Duration::from_millis(2);
                let before = sim.relay.stats().deliveries;
                sim.feed(conns[0], black_box(&frame));
                assert_eq!(sim.relay.stats().deliveries - before, n as u64 - 1);
            })
        });
    }
    group.finish();
}

/// A game's 200-byte JSON report, as `* report {...}`.
fn json_report() -> Vec<u8> {
    let body = "* report {\"seq\":48213,\"t\":1733500000123,\"x\":512.25,\"y\":384.5,\"vx\":-1.5,\"vy\":0.25,\
                \"heading\":1.5708,\"hp\":87,\"ammo\":12,\"state\":\"flying\",\"thrust\":true,\"shield\":false}";
    let mut report = body.as_bytes().to_vec();
    report.resize(200, b' ');
    report
}

/// Fanout of that report to a room of 8, with permessage-deflate off, and on
/// for every client: the sender's message arrives compressed (as a
/// browser's does) and is inflated, and the broadcast is compressed once for
/// the seven recipients.
fn fanout_deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_json_200B_room_of_8");
    group.throughput(Throughput::Elements(7));
    let report = json_report();
    for deflate in [false, true] {
        let config = Config { deflate: deflate.then_some(Deflate::DEFAULT), ..Config::default() };
        let mut sim = Sim::new(config);
        sim.record(false);
        let request =
            upgrade_request_offering("/ws-relay/bench", "bench", "permessage-deflate; client_max_window_bits");
        let conns: Vec<ConnId> = (0..8).map(|_| sim.connect_raw(&request)).collect();
        let mut frame = Vec::new();
        if deflate {
            // Compressed on its own, so the same bytes are valid whatever the relay's window holds.
            let deflated = Deflater::new(15, false).compress(&report);
            masked_frame_rsv1(&mut frame, true, true, OpCode::Text, &deflated, [0x12, 0x34, 0x56, 0x78]);
        } else {
            masked_frame(&mut frame, true, OpCode::Text, &report, [0x12, 0x34, 0x56, 0x78]);
        }
        let name = if deflate { "deflate_on" } else { "deflate_off" };
        group.bench_function(name, |b| {
            b.iter(|| {
                sim.now += Duration::from_millis(2);
                let before = sim.relay.stats().deliveries;
                sim.feed(conns[0], black_box(&frame));
                assert_eq!(sim.relay.stats().deliveries - before, 7);
            })
        });
        if deflate {
            let stats = sim.relay.stats();
            assert_eq!(stats.inflated, stats.compressions, "one compression per message");
            eprintln!(
                "deflate: {} payload bytes out as {} ({:.0}%), per recipient",
                stats.compressed_in / stats.compressions,
                stats.compressed_out / stats.compressions,
                100.0 * stats.compressed_out as f64 / stats.compressed_in as f64
            );
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_masked");
    for size in [200usize, 64 * 1024] {
        let frame = client_frame(OpCode::Binary, &vec![7u8; size]);
        let mut decoder = Decoder::new(MessageLimits { max_message: 1 << 20, max_fragments: 16 });
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| assert_eq!(decoder.decode(black_box(&frame)), (frame.len(), true)))
        });
    }
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let upgrade = upgrade_request("/ws-relay/bench", "bench");
    let close = client_frame(OpCode::Close, &1000u16.to_be_bytes());
    c.bench_function("upgrade_handshake", |b| {
        b.iter_batched_ref(
            || {
                let mut sim = Sim::new(Config { mode: Mode::Echo, ..Config::default() });
                sim.record(false);
                sim
            },
            |sim| {
                let conn = sim.connect_raw(black_box(&upgrade));
                sim.feed(conn, &close);
            },
            BatchSize::SmallInput,
        )
    });
}

fn join_quit(c: &mut Criterion) {
    let upgrade = upgrade_request("/ws-relay/bench", "bench");
    c.bench_function("join_then_quit_room_of_64", |b| {
        b.iter_batched_ref(
            || room(64).0,
            |sim| {
                let conn = sim.connect_raw(&upgrade);
                sim.drop_transport(conn);
            },
            BatchSize::LargeInput,
        )
    });
}

/// What `--token-secret-file` adds to an upgrade: parse and check a typical
/// token (a prefix room, an account id) against two secrets, the worst case
/// of a rotation being a signature that matches the second.
fn token_verify(c: &mut Criterion) {
    let verifier = Verifier::new(b"this month".to_vec(), Some(b"last month".to_vec()), Duration::from_secs(5));
    let claims = json!({"exp": 1_900_000_000u64, "room_prefix": "/ws-relay/match-", "sub": "player-2f6c41d0"});
    let room = b"/ws-relay/match-81723?region=eu";
    let mut group = c.benchmark_group("token_verify");
    for (name, secret) in [("current_secret", &b"this month"[..]), ("previous_secret", &b"last month"[..])] {
        let token = mint(&claims, secret);
        group.bench_function(name, |b| {
            b.iter(|| verifier.check(Some(black_box(&token)), black_box(room), 1_800_000_000.0).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, fanout, fanout_deflate, decode, handshake, join_quit, token_verify);
criterion_main!(benches);
