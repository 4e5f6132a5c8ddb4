//! Steady state allocates nothing per delivered message: after a warm-up, a
//! stream of broadcasts and direct messages through the core, queued in its
//! output buffers and written out as a driver does, makes no allocation at
//! all; with admission on (members carrying an account id) as without.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ws_relay::client::{masked_frame, upgrade_request, OpCode, Received};
use ws_relay::testing::Sim;
use ws_relay::{Config, Verdict};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The counter is process-wide: one test at a time, or each counts the other's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

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
    let _alone = ONE_AT_A_TIME.lock().unwrap();
    let mut sim = Sim::relay();
    let conns: Vec<_> = (0..8).map(|_| sim.join("/ws-relay/alloc")).collect();
    assert_no_allocation(sim, conns);
}

#[test]
fn no_allocation_per_delivered_message_with_admission() {
    let _alone = ONE_AT_A_TIME.lock().unwrap();
    let mut sim = Sim::new(Config { admission: true, ..Config::default() });
    let conns: Vec<_> = (0..8)
        .map(|i| {
            let conn = sim.connect_raw(&upgrade_request("/ws-relay/alloc", "test"));
            sim.admit(conn, Verdict::Accept { subject: Some(format!("account-{i}")) });
            assert_eq!(sim.take(conn).first(), Some(&Received::Http(101)));
            conn
        })
        .collect();
    assert_no_allocation(sim, conns);
}

/// Feeds every client of `sim` (all in one room) its share of the load and
/// counts the allocations once the buffers have grown.
fn assert_no_allocation(mut sim: Sim, conns: Vec<ws_relay::ConnId>) {
    // From here the harness only writes, as a driver does, and keeps nothing.
    sim.record(false);
    let start = sim.now;
    let mut report = Vec::new();
    masked_frame(&mut report, true, OpCode::Text, format!("* report {}", "x".repeat(190)).as_bytes(), [1, 2, 3, 4]);
    let mut direct = Vec::new();
    masked_frame(&mut direct, true, OpCode::Binary, b"3 offer sdp", [5, 6, 7, 8]);
    let mut burst = Vec::new();
    for _ in 0..10 {
        burst.extend_from_slice(&report);
    }
    // Rounds 20 ms apart: 600 messages per second per client, inside the default flood limits.
    let round = |sim: &mut Sim, n: u32| {
        sim.now = start + Duration::from_millis(20) * n;
        for &c in &conns {
            sim.feed(c, &report);
            sim.feed(c, &direct);
            sim.feed(c, &burst);
        }
    };
    // The warm-up grows every buffer and queue to its working size.
    for n in 0..50 {
        round(&mut sim, n);
    }
    let delivered_before = sim.relay.stats().deliveries;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for n in 50..1050 {
        round(&mut sim, n);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let delivered = sim.relay.stats().deliveries - delivered_before;
    assert_eq!(delivered, 1000 * 8 * (7 + 1 + 70));
    assert!(sim.peers().iter().all(|p| p.closed.is_none()));
    assert_eq!(allocations, 0, "{allocations} allocations for {delivered} deliveries");
}
