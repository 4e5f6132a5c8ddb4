//! The core alone, no sockets: fanout, frame decoding, the upgrade handshake,
//! join and quit. Each iteration drains the actions into per-connection output
//! buffers the way the mio driver does, so copying to recipients is counted.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ws_relay::proto::frame::{apply_mask, FrameHeader, OpCode};
use ws_relay::proto::message::{MessageDecoder, MessageLimits};
use ws_relay::{Action, Config, ConnId, Relay};

const UPGRADE: &[u8] = b"GET /ws-relay/bench HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = Vec::new();
    FrameHeader { fin: true, opcode, mask: Some(mask), len: payload.len() as u64 }.encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
    out
}

/// Output buffers indexed by connection slot, as a driver keeps them.
struct Sink(Vec<Vec<u8>>);

impl Sink {
    fn drain(&mut self, relay: &mut Relay) -> usize {
        let mut deliveries = 0;
        while let Some(action) = relay.poll_action() {
            match action {
                Action::Send { to, bytes } => {
                    self.0[to.index()].extend_from_slice(bytes);
                    deliveries += 1;
                }
                Action::Broadcast { to, bytes } => {
                    for c in to {
                        self.0[c.index()].extend_from_slice(bytes);
                    }
                    deliveries += to.len();
                }
                Action::Close { .. } => {}
            }
        }
        for out in &mut self.0 {
            // The socket write: the buffer empties, its capacity stays.
            out.clear();
        }
        deliveries
    }
}

fn room(n: usize) -> (Relay, Vec<ConnId>, Sink, Instant) {
    let mut relay = Relay::new(Config::default());
    let now = Instant::now();
    let mut sink = Sink(vec![Vec::new(); n]);
    let conns: Vec<ConnId> = (0..n)
        .map(|_| {
            let c = relay.handle_connect(now);
            relay.handle_read(c, UPGRADE, now);
            sink.drain(&mut relay);
            c
        })
        .collect();
    (relay, conns, sink, now)
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_200B");
    let frame = client_frame(OpCode::Text, format!("* report {}", "x".repeat(191)).as_bytes());
    for n in [2usize, 8, 64, 512] {
        let (mut relay, conns, mut sink, mut now) = room(n);
        group.throughput(Throughput::Elements(n as u64 - 1));
        group.bench_function(format!("room_of_{n}"), |b| {
            b.iter(|| {
                // A game's pace (500 Hz), so flood control is charged but never trips.
                now += Duration::from_millis(2);
                relay.handle_read(conns[0], black_box(&frame), now);
                assert_eq!(sink.drain(&mut relay), n - 1);
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_masked");
    for size in [200usize, 64 * 1024] {
        let frame = client_frame(OpCode::Binary, &vec![7u8; size]);
        let mut decoder = MessageDecoder::new(MessageLimits { max_message: 1 << 20, max_fragments: 16 });
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                let (used, msg) = decoder.decode(black_box(&frame)).unwrap();
                assert_eq!(used, frame.len());
                black_box(msg);
            })
        });
    }
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let mut relay = Relay::new(Config { mode: ws_relay::Mode::Echo, ..Config::default() });
    let now = Instant::now();
    let close = client_frame(OpCode::Close, &1000u16.to_be_bytes());
    c.bench_function("upgrade_handshake", |b| {
        b.iter(|| {
            let conn = relay.handle_connect(now);
            relay.handle_read(conn, black_box(UPGRADE), now);
            while relay.poll_action().is_some() {}
            relay.handle_read(conn, &close, now);
            while relay.poll_action().is_some() {}
        })
    });
}

fn join_quit(c: &mut Criterion) {
    c.bench_function("join_then_quit_room_of_64", |b| {
        b.iter_batched_ref(
            || room(64),
            |(relay, _, sink, now)| {
                let conn = relay.handle_connect(*now);
                sink.0.resize(sink.0.len().max(conn.index() + 1), Vec::new());
                relay.handle_read(conn, UPGRADE, *now);
                sink.drain(relay);
                relay.handle_close(conn, *now);
                sink.drain(relay);
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, fanout, decode, handshake, join_quit);
criterion_main!(benches);
