//! Steady state allocates nothing per delivered message: after a warm-up, a
//! stream of broadcasts and direct messages through the core, drained into
//! reused output buffers as the mio driver does, makes no allocation at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ws_relay::proto::client::{masked_frame, upgrade_request};
use ws_relay::proto::frame::OpCode;
use ws_relay::{Action, Config, Relay};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn no_allocation_per_delivered_message() {
    let mut relay = Relay::new(Config::default());
    let start = Instant::now();
    let now = start;
    let mut outputs: Vec<Vec<u8>> = Vec::new();
    let drain = |relay: &mut Relay, outputs: &mut Vec<Vec<u8>>| {
        let mut delivered = 0;
        while let Some(action) = relay.poll_action() {
            let (to, bytes) = match action {
                Action::Send { ref to, bytes } => (std::slice::from_ref(to), bytes),
                Action::Broadcast { to, bytes } => (to, bytes),
                Action::Close { .. } => continue,
            };
            for c in to {
                if outputs.len() <= c.index() {
                    outputs.resize(c.index() + 1, Vec::new());
                }
                outputs[c.index()].extend_from_slice(bytes);
                delivered += 1;
            }
        }
        // The socket write empties each buffer and keeps its capacity.
        outputs.iter_mut().for_each(Vec::clear);
        delivered
    };
    let conns: Vec<_> = (0..8)
        .map(|_| {
            let c = relay.handle_connect(now);
            relay.handle_read(c, &upgrade_request("/ws-relay/alloc", "test"), now);
            drain(&mut relay, &mut outputs);
            c
        })
        .collect();
    let mut report = Vec::new();
    masked_frame(&mut report, true, OpCode::Text, format!("* report {}", "x".repeat(190)).as_bytes(), [1, 2, 3, 4]);
    let mut direct = Vec::new();
    masked_frame(&mut direct, true, OpCode::Binary, b"3 offer sdp", [5, 6, 7, 8]);
    let mut burst = Vec::new();
    for _ in 0..10 {
        burst.extend_from_slice(&report);
    }
    // Rounds 20 ms apart: 600 messages per second per client, inside the default flood limits.
    let round = |relay: &mut Relay, outputs: &mut Vec<Vec<u8>>, n: u32| {
        let now = start + Duration::from_millis(20) * n;
        let mut delivered = 0;
        for &c in &conns {
            relay.handle_read(c, &report, now);
            relay.handle_read(c, &direct, now);
            relay.handle_read(c, &burst, now);
            delivered += drain(relay, outputs);
        }
        delivered
    };
    // The warm-up grows every buffer and queue to its working size.
    for n in 0..50 {
        round(&mut relay, &mut outputs, n);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut delivered = 0;
    for n in 50..1050 {
        delivered += round(&mut relay, &mut outputs, n);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(delivered, 1000 * 8 * (7 + 1 + 70));
    assert_eq!(allocations, 0, "{allocations} allocations for {delivered} deliveries");
}
