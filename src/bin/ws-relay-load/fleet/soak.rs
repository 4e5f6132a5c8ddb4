//! Soak: many well-behaved clients and a few misbehaving ones, for a long
//! while, beside a reader that lags behind a large stream and a crowd that
//! each sent one large message. Every well-behaved client must receive every
//! report addressed to it, in order, from the right source, and the relay's
//! memory and descriptors must stay bounded and come back once everyone has
//! left.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ws_relay::client::OpCode;
use ws_relay::client::{masked_frame, upgrade_request};

use super::{Behaviour, Fleet, State};
use crate::report::rss_kib;

/// The misbehaviours, in the order they are handed out.
const KINDS: [Behaviour; 5] =
    [Behaviour::Silent, Behaviour::Flooder, Behaviour::Garbage, Behaviour::Resetter, Behaviour::Trickler];

/// One soak run.
pub struct SoakPlan {
    /// Rooms of well-behaved clients.
    pub rooms: usize,
    /// Well-behaved clients per room.
    pub per_room: usize,
    /// Misbehaving clients, spread over the rooms.
    pub misbehaving: usize,
    /// Reports per second per well-behaved client.
    pub rate: f64,
    /// How long the load runs.
    pub duration: Duration,
    /// The relay, to watch its memory and descriptors.
    pub relay_pid: Option<u32>,
    /// Clients that each send one large message and then idle.
    pub crowd: usize,
    /// How far behind its stream the lagging reader stays, in bytes.
    pub lag: usize,
}

/// The lagging reader's stream: 60 KB messages, 16 a second (within the
/// default flood limit of 1 MiB/s).
pub(super) const STREAM_MESSAGE: usize = 60_000;
pub(super) const STREAM_RATE: f64 = 16.0;

/// What the relay's `/metrics` said at one moment.
#[derive(Clone, Copy, Default)]
pub(super) struct Gauges {
    pub(super) pending: f64,
    input_buffers: f64,
}

/// Reads the relay's gauges from its `/metrics`.
pub(super) fn scrape(addr: std::net::SocketAddr) -> Option<Gauges> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n").ok()?;
    let mut page = String::new();
    s.read_to_string(&mut page).ok()?;
    let value = |name: &str| page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok());
    Some(Gauges {
        pending: value("ws_relay_pending_bytes")?,
        input_buffers: value("ws_relay_buffer_bytes{buffer=\"input\"}")?,
    })
}

/// What a soak run saw.
pub struct SoakReport {
    /// Well-behaved clients.
    pub good: usize,
    /// Reports they received.
    pub received: u64,
    /// Reports addressed to them that never arrived.
    pub missing: u64,
    /// Reports that arrived out of order.
    pub disorder: u64,
    /// Well-behaved clients the relay closed.
    pub good_closed: usize,
    /// Times a misbehaving client was cut off by the relay and came back.
    pub respawns: u64,
    /// Relay RSS in KiB: before, highest during, after everyone left.
    pub rss: (u64, u64, u64),
    /// Relay open descriptors: before, highest during, after.
    pub fds: (usize, usize, usize),
    /// The lagging reader: messages streamed to it, received in order, out of order; still open.
    pub lagger: (u64, u64, u64, bool),
    /// The most bytes the relay held for the lagging reader at once, from `/metrics`.
    pub lag_held: u64,
    /// Large-message senders the relay closed.
    pub crowd_closed: usize,
    /// Message memory the relay held for the crowd while it idled: from
    /// `/metrics`, over what it held before the crowd came.
    pub crowd_input_buffers: u64,
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

impl Fleet {
    /// Waits until `key` has its `self`.
    pub(super) fn wait_open(&mut self, key: usize) -> Result<(), String> {
        let give_up = Instant::now() + Duration::from_secs(10);
        while self.clients[key].state != State::Open {
            if Instant::now() > give_up || self.clients[key].state == State::Closed {
                return Err("a client of the lagging pair did not join".into());
            }
            self.turn(Some(Duration::from_millis(10)), None)?;
        }
        Ok(())
    }

    /// Runs `plan`; the report says whether anything was lost.
    pub fn soak(&mut self, plan: &SoakPlan) -> Result<SoakReport, String> {
        let sample = |pid: Option<u32>| pid.map_or((0, 0), |p| (rss_kib(p).unwrap_or(0), fds(p)));
        let (rss0, fds0) = sample(plan.relay_pid);
        let (mut rss_max, mut fds_max) = (rss0, fds0);
        self.join_rooms(plan.rooms, plan.per_room)?;
        let good: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        // The lagging pair, in a room of its own: the streamer is id 1, the lagger id 2.
        let lag_room = plan.rooms;
        // One after the other: with several shards, two upgrades racing to a
        // room may join in either order, and the stream is addressed by id.
        let streamer = self.connect_as(lag_room, false, Behaviour::Streamer, true)?;
        self.wait_open(streamer)?;
        let lagger = self.connect_as(lag_room, false, Behaviour::Lagger, true)?;
        self.wait_open(lagger)?;
        self.clients[lagger].read_budget = Some(0);
        let (mut streamed, mut streamed_bytes) = (0u64, 0usize);
        let (mut lag_held, mut crowd_input, mut crowd_baseline) = (0u64, 0u64, 0u64);
        let mut crowd: Vec<usize> = Vec::new();
        let crowd_at = Instant::now() + plan.duration / 3;
        // Each misbehaving slot: its client (none while it waits to come back), room, kind, and when it returns.
        let mut bad: Vec<(Option<usize>, usize, Behaviour, Instant)> =
            (0..plan.misbehaving).map(|i| (None, i % plan.rooms, KINDS[i % KINDS.len()], Instant::now())).collect();
        let mut respawns = 0;
        let start = Instant::now();
        let end = start + plan.duration;
        let interval = Duration::from_secs_f64(1.0 / (plan.rate * good.len() as f64));
        let (mut k, mut next_sample) = (0u64, start);
        while Instant::now() < end {
            let now = Instant::now();
            // The stream, and the lagger reading exactly as much as keeps it `lag` behind.
            let due = (now.duration_since(start).as_secs_f64() * STREAM_RATE) as u64;
            while streamed < due && self.clients[streamer].state == State::Open {
                let at = self.micros(now);
                self.send_to(streamer, 2, at, STREAM_MESSAGE);
                streamed += 1;
                streamed_bytes += STREAM_MESSAGE;
            }
            let c = &mut self.clients[lagger];
            c.read_budget = Some(streamed_bytes.saturating_sub(plan.lag).saturating_sub(c.read_total));
            self.read(lagger, None);
            if crowd.is_empty() && now >= crowd_at {
                // What everyone else holds, so the crowd's share can be told apart.
                crowd_baseline = scrape(self.addr).ok_or("no /metrics from the relay")?.input_buffers as u64;
                for i in 0..plan.crowd {
                    let key = self.connect_as(lag_room + 1 + i % 10, false, Behaviour::BigSender, true)?;
                    self.clients[key].next_act = Some(now);
                    crowd.push(key);
                }
            }
            for &key in &crowd {
                self.misbehave(key, now);
            }
            let mut next = start + interval.mul_f64(k as f64);
            while next <= now {
                let key = good[(k % good.len() as u64) as usize];
                let at = self.micros(next);
                self.send_report(key, at, 200);
                k += 1;
                next = start + interval.mul_f64(k as f64);
            }
            for (slot, room, kind, back_at) in bad.iter_mut() {
                match *slot {
                    None if now >= *back_at => *slot = Some(self.spawn(*room, *kind)?),
                    None => {}
                    Some(key) if self.clients[key].state == State::Closed => {
                        self.clients.remove(key);
                        // Come back, but not in a tight loop: a real attacker's reconnects cost it a round trip.
                        *slot = None;
                        *back_at = now + Duration::from_millis(100);
                        respawns += 1;
                    }
                    Some(key) => self.misbehave(key, now),
                }
            }
            if now >= next_sample {
                let (rss, fds) = sample(plan.relay_pid);
                rss_max = rss_max.max(rss);
                fds_max = fds_max.max(fds);
                next_sample = now + Duration::from_secs(1);
                let gauges = scrape(self.addr).ok_or("no /metrics from the relay")?;
                lag_held = lag_held.max(gauges.pending as u64);
                // Once the crowd has sent and idled a second, what it holds is what idle clients keep.
                if now >= crowd_at + Duration::from_secs(2) {
                    crowd_input = crowd_input.max((gauges.input_buffers as u64).saturating_sub(crowd_baseline));
                }
            }
            self.turn(Some(next.saturating_duration_since(now).min(Duration::from_millis(5))), None)?;
        }
        // Let the last reports land before counting.
        self.settle(Duration::from_secs(2));
        // The lagger catches up before it is counted. It reads what waits in
        // its socket without a new readiness event, so it is read directly.
        self.clients[lagger].read_budget = None;
        let catch_up = Instant::now() + Duration::from_secs(10);
        while self.clients[lagger].expect.get(&1).copied().unwrap_or(0) < streamed && Instant::now() < catch_up {
            self.read(lagger, None);
            self.turn(Some(Duration::from_millis(10)), None)?;
        }
        let l = &self.clients[lagger];
        let lagged = l.expect.get(&1).copied().unwrap_or(0);
        let mut report = SoakReport {
            good: good.len(),
            received: 0,
            missing: 0,
            disorder: 0,
            good_closed: 0,
            respawns,
            rss: (rss0, 0, 0),
            fds: (fds0, 0, 0),
            lagger: (streamed, lagged, l.disorder, l.state == State::Open),
            lag_held,
            crowd_closed: crowd.iter().filter(|&&k| self.clients[k].state != State::Open).count(),
            crowd_input_buffers: crowd_input,
        };
        for &r in &good {
            let receiver = &self.clients[r];
            report.good_closed += usize::from(receiver.state != State::Open);
            report.disorder += receiver.disorder;
            for &s in &good {
                let sender = &self.clients[s];
                if s == r || sender.room != receiver.room {
                    continue;
                }
                let got = receiver.expect.get(&sender.id).copied().unwrap_or(0);
                report.received += got;
                report.missing += sender.sent.saturating_sub(got);
            }
        }
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            let mut c = self.clients.remove(key);
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        std::thread::sleep(Duration::from_secs(2));
        let (rss_end, fds_end) = sample(plan.relay_pid);
        report.rss = (rss0, rss_max.max(rss_end), rss_end);
        report.fds = (fds0, fds_max.max(fds_end), fds_end);
        Ok(report)
    }

    fn spawn(&mut self, room: usize, behaviour: Behaviour) -> Result<usize, String> {
        let trickle = behaviour == Behaviour::Trickler;
        let key = self.connect_as(room, false, behaviour, !trickle)?;
        self.clients[key].next_act = Some(Instant::now());
        Ok(key)
    }

    /// One act of misbehaviour, when it is due.
    fn misbehave(&mut self, key: usize, now: Instant) {
        let Some(c) = self.clients.get_mut(key) else { return };
        if c.next_act.is_none_or(|at| at > now) {
            return;
        }
        let open = c.state == State::Open;
        match c.behaviour {
            Behaviour::Good | Behaviour::Silent => c.next_act = None,
            Behaviour::Flooder if open => {
                for _ in 0..100 {
                    masked_frame(&mut c.out, true, OpCode::Text, b"* flood", [7, 7, 7, 7]);
                }
                c.next_act = Some(now + Duration::from_millis(1));
                self.dirty.push(key);
            }
            Behaviour::Garbage if open => {
                c.out.extend_from_slice(b"\x8f\x13garbage that is no frame at all");
                c.next_act = None;
                self.dirty.push(key);
            }
            Behaviour::Resetter if open => {
                let mut frame = Vec::new();
                masked_frame(&mut frame, true, OpCode::Text, b"* cut off in the middle", [1, 2, 3, 4]);
                let _ = c.stream.write(&frame[..frame.len() / 2]);
                c.state = State::Closed;
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
            Behaviour::BigSender if open => {
                // To id 0, which no client has: the relay reads it whole and drops it.
                let body = format!("0 big {}", "b".repeat(STREAM_MESSAGE));
                masked_frame(&mut c.out, true, OpCode::Text, body.as_bytes(), [3, 1, 4, 1]);
                c.next_act = None;
                self.dirty.push(key);
            }
            Behaviour::Trickler => {
                let request = upgrade_request(&format!("{}{}", self.prefix, c.room), "soak");
                match request.get(c.sent as usize) {
                    Some(&b) => {
                        c.out.push(b);
                        c.sent += 1;
                        c.next_act = Some(now + Duration::from_millis(200));
                        self.dirty.push(key);
                    }
                    None => c.next_act = None,
                }
            }
            _ => {}
        }
    }
}
