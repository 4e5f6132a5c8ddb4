//! Soak: many well-behaved clients and a few misbehaving ones, for a long
//! while. Every well-behaved client must receive every report addressed to it,
//! in order, from the right source, and the relay's memory and descriptors
//! must stay bounded and come back once everyone has left.

use std::io::Write;
use std::time::{Duration, Instant};

use ws_relay::proto::client::{masked_frame, upgrade_request};
use ws_relay::proto::frame::OpCode;

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
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

impl Fleet {
    /// Runs `plan`; the report says whether anything was lost.
    pub fn soak(&mut self, plan: &SoakPlan) -> Result<SoakReport, String> {
        let sample = |pid: Option<u32>| pid.map_or((0, 0), |p| (rss_kib(p).unwrap_or(0), fds(p)));
        let (rss0, fds0) = sample(plan.relay_pid);
        let (mut rss_max, mut fds_max) = (rss0, fds0);
        self.join_rooms(plan.rooms, plan.per_room)?;
        let good: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
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
            }
            self.turn(Some(next.saturating_duration_since(now).min(Duration::from_millis(5))), None)?;
        }
        // Let the last reports land before counting.
        self.settle(Duration::from_secs(2));
        let mut report = SoakReport {
            good: good.len(),
            received: 0,
            missing: 0,
            disorder: 0,
            good_closed: 0,
            respawns,
            rss: (rss0, 0, 0),
            fds: (fds0, 0, 0),
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
