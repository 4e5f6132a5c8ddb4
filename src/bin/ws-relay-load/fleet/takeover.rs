//! Takeover: the load runs while this tool hands the relay, step after step,
//! to whatever it has just put at the relay's path — a fresh relay, a binary
//! that exits at once, one that hangs, a relay that cannot take the state —
//! and checks that the clients notice
//! nothing but a pause: no close, no `join`, `quit` or `self`, the same ids,
//! every report exactly once and in order, and the whole of a lagging
//! reader's stream, most of which the relay holds in its core as it hands
//! over. In each step a newcomer stops halfway through its upgrade request
//! and a well-behaved client halfway through a frame; both finish after it.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::soak::{scrape, STREAM_MESSAGE, STREAM_RATE};
use super::{Behaviour, Fleet, State};

/// What a step puts at the relay's path before SIGUSR2: the file of that
/// name in `--binaries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `good`: a relay. It takes over; the old process exits.
    Good,
    /// `exits`: a program that exits at once. The relay serves on.
    Exits,
    /// `hangs`: a program that never says hello. The relay kills it after
    /// its start deadline (5 s) and serves on.
    Hangs,
    /// `refuses`: a relay that says hello but cannot take the state (say,
    /// one allowed too few descriptors). The relay has frozen and exported
    /// by then, and must thaw and serve on: the one failure its clients wait
    /// through.
    Refuses,
}

impl Kind {
    /// The kinds in a comma-separated plan such as `good,good,exits,hangs`.
    pub fn plan(list: &str) -> Result<Vec<Self>, String> {
        list.split(',')
            .map(|name| match name.trim() {
                "good" => Ok(Self::Good),
                "exits" => Ok(Self::Exits),
                "hangs" => Ok(Self::Hangs),
                "refuses" => Ok(Self::Refuses),
                other => Err(format!("`{other}` is no takeover kind: good, exits, hangs or refuses")),
            })
            .collect()
    }

    fn name(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Exits => "exits",
            Self::Hangs => "hangs",
            Self::Refuses => "refuses",
        }
    }

    /// A good step fails unless it is done by then; a failing one must have
    /// failed by then, with the old process serving on.
    fn wait(self) -> Duration {
        match self {
            Self::Good => Duration::from_secs(10),
            Self::Exits | Self::Refuses => Duration::from_secs(2),
            Self::Hangs => Duration::from_secs(7),
        }
    }
}

/// One takeover run.
pub struct TakeoverPlan {
    /// Rooms of well-behaved clients.
    pub rooms: usize,
    /// Well-behaved clients per room.
    pub per_room: usize,
    /// Reports per second per well-behaved client.
    pub rate: f64,
    /// Bytes per report.
    pub size: usize,
    /// The load before each step.
    pub warmup: Duration,
    /// A room's clients send one after another, as in the fixed load.
    pub bursts: bool,
    /// How far behind its stream the lagging reader stays, in bytes.
    pub lag: usize,
    /// The steps, in order.
    pub steps: Vec<Kind>,
    /// The path the relay runs from.
    pub binary: PathBuf,
    /// Where each kind's file is.
    pub binaries: PathBuf,
    /// The relay's pid file.
    pub pid_file: PathBuf,
    /// Print each step as a JSON line.
    pub json: bool,
}

/// What one step saw.
pub struct StepReport {
    kind: Kind,
    /// The pid signalled, and the one in the pid file afterwards.
    old_pid: u32,
    new_pid: u32,
    /// From the signal until the new process had the relay (good), or
    /// until the old one was seen serving on (the others).
    took: Duration,
    /// From the signal to the end of the measurement: `took` and half a second.
    window: Duration,
    /// The longest any well-behaved client went without a report, in the window.
    longest_gap_us: u64,
    /// The same over the load before the step (`--warmup`), for comparison.
    baseline_gap_us: u64,
    /// The longest latency of a report received in the window, and before it.
    latency_us: u64,
    baseline_latency_us: u64,
    /// Bytes the relay held for slow readers as it was signalled, from `/metrics`.
    pending: u64,
}

impl StepReport {
    fn print(&self, json: bool, number: usize, of: usize) {
        let ms = |us: u64| us as f64 / 1000.0;
        if json {
            println!(
                "{{\"mode\":\"takeover-step\",\"step\":{number},\"kind\":\"{}\",\"old_pid\":{},\"new_pid\":{},\"took_ms\":{:.1},\"window_ms\":{:.1},\"longest_gap_ms\":{:.3},\"baseline_gap_ms\":{:.3},\"max_latency_ms\":{:.3},\"baseline_max_latency_ms\":{:.3},\"relay_pending_bytes\":{}}}",
                self.kind.name(),
                self.old_pid,
                self.new_pid,
                self.took.as_secs_f64() * 1000.0,
                self.window.as_secs_f64() * 1000.0,
                ms(self.longest_gap_us),
                ms(self.baseline_gap_us),
                ms(self.latency_us),
                ms(self.baseline_latency_us),
                self.pending,
            );
            return;
        }
        let outcome = match self.kind {
            Kind::Good => {
                format!("pid {} -> {} in {:.0} ms", self.old_pid, self.new_pid, self.took.as_secs_f64() * 1000.0)
            }
            _ => format!("pid {} serves on after {:.1} s, as planned", self.old_pid, self.took.as_secs_f64()),
        };
        println!(
            "takeover step {number}/{of} {}: {outcome}; in the {:.1} s from the signal the longest delivery gap was {:.1} ms \
             and the highest latency {:.1} ms ({:.1} and {:.1} ms before it); the relay held {:.1} MiB for the lagging \
             reader; the half handshake and the half frame completed",
            self.kind.name(),
            self.window.as_secs_f64(),
            ms(self.longest_gap_us),
            ms(self.latency_us),
            ms(self.baseline_gap_us),
            ms(self.baseline_latency_us),
            self.pending as f64 / (1 << 20) as f64,
        );
    }
}

/// What a whole run saw.
pub struct TakeoverReport {
    steps: Vec<StepReport>,
    /// Well-behaved clients.
    clients: usize,
    /// Reports they sent, and the deliveries those owe to room-mates.
    sent: u64,
    owed: u64,
    /// Deliveries that never came, and reports that came out of order or twice.
    missing: u64,
    disorder: u64,
    /// Clients of every kind closed (or, a newcomer, never opened).
    closed: usize,
    /// Clients that heard `self`, `join` or `quit` after the start (a
    /// newcomer's own `self` aside), and clients whose id changed.
    noticed: Vec<String>,
    renamed: Vec<String>,
    /// The lagging reader: messages streamed to it, received in order, out of order.
    lag: (u64, u64, u64),
    /// From scheduled send to receipt, in microseconds, over the whole run.
    latency: Histogram<u64>,
    /// The relay's process at the end, and its descriptors with every client connected.
    relay_pid: u32,
    relay_fds: usize,
    /// Connections this tool held at the end.
    connections: usize,
}

impl TakeoverReport {
    /// What went wrong, if anything.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.closed > 0 {
            v.push(format!("{} clients were closed or never opened", self.closed));
        }
        if !self.noticed.is_empty() {
            v.push(format!(
                "{} clients heard a self, join or quit after they started ({})",
                self.noticed.len(),
                first_few(&self.noticed)
            ));
        }
        if !self.renamed.is_empty() {
            v.push(format!("{} clients' ids changed ({})", self.renamed.len(), first_few(&self.renamed)));
        }
        if self.missing + self.disorder > 0 || self.sent == 0 {
            v.push(format!(
                "{} of {} deliveries missing, {} out of order or twice",
                self.missing, self.owed, self.disorder
            ));
        }
        let (streamed, got, disorder) = self.lag;
        if got != streamed || disorder > 0 {
            v.push(format!("the lagging reader got {got} of {streamed} messages in order, {disorder} out of order"));
        }
        v
    }

    pub fn print(&self, json: bool) {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let max = self.latency.max() as f64 / 1000.0;
        let good = self.steps.iter().filter(|s| s.kind == Kind::Good).count();
        let worst = self.steps.iter().map(|s| s.longest_gap_us).max().unwrap_or(0) as f64 / 1000.0;
        let (streamed, got, disorder) = self.lag;
        if json {
            println!(
                "{{\"mode\":\"takeover\",\"steps\":{},\"takeovers\":{good},\"clients\":{},\"sent\":{},\"owed\":{},\"missing\":{},\"disorder\":{},\"closed\":{},\"noticed\":{},\"renamed\":{},\"lag_streamed\":{streamed},\"lag_received\":{got},\"lag_disorder\":{disorder},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{max:.3},\"longest_gap_ms\":{worst:.3},\"relay_pid\":{},\"relay_fds\":{},\"connections\":{}}}",
                self.steps.len(),
                self.clients,
                self.sent,
                self.owed,
                self.missing,
                self.disorder,
                self.closed,
                self.noticed.len(),
                self.renamed.len(),
                ms(0.5),
                ms(0.99),
                ms(0.999),
                self.relay_pid,
                self.relay_fds,
                self.connections,
            );
            return;
        }
        println!(
            "takeover: {} steps, {good} takeovers; {} well-behaved clients sent {} reports, {} of {} deliveries missing, \
             {} out of order or twice; {} clients closed, {} heard self/join/quit, {} renamed; the lagging reader got {got} \
             of {streamed} messages in order; latency p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms max {max:.3} ms; longest \
             delivery gap in a step {worst:.1} ms; relay pid {} holds {} descriptors for {} connections",
            self.steps.len(),
            self.clients,
            self.sent,
            self.missing,
            self.owed,
            self.disorder,
            self.closed,
            self.noticed.len(),
            self.renamed.len(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.relay_pid,
            self.relay_fds,
            self.connections,
        );
    }
}

fn first_few(items: &[String]) -> String {
    let mut shown = items.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if items.len() > 3 {
        shown.push_str("; …");
    }
    shown
}

/// The load that runs through every step.
struct Load {
    good: Vec<usize>,
    streamer: usize,
    lagger: usize,
    lag: usize,
    size: usize,
    start: Instant,
    interval: Duration,
    /// Reports scheduled so far.
    k: u64,
    streamed_bytes: usize,
    /// The client whose half frame waits: its other reports are skipped,
    /// not queued, so its room-mates' latencies measure the relay alone.
    held: Option<usize>,
    sending: bool,
}

/// Reports arriving in the window count as latency samples; those stamped 0
/// (the stream, the half frame) are late by design and do not.
const WINDOW: Option<(u64, u64)> = Some((1, u64::MAX));

/// How long after a step is done the measurement goes on, so that a gap the
/// new process opens after the pid file changed is seen.
const AFTER: Duration = Duration::from_millis(500);

/// What the relay must hold for the lagging reader shortly before every
/// signal, so that each takeover carries unwritten output.
const MIN_BACKLOG: u64 = 1 << 20;

impl Fleet {
    /// Runs `plan`. Errors on the first violation a step shows; the report
    /// lists what the end found.
    pub fn takeover(&mut self, plan: &TakeoverPlan) -> Result<TakeoverReport, String> {
        self.join_rooms(plan.rooms, plan.per_room)?;
        let mut good: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        if !plan.bursts {
            // Each room's senders spread evenly over the schedule, not one
            // after the other, so that a receiver hears a report every
            // 1/(rate × room size) s and a pause stands out as a gap.
            let mut rank = vec![0; plan.rooms];
            let mut order: Vec<(usize, usize)> = good
                .iter()
                .map(|&k| {
                    let room = self.clients[k].room;
                    rank[room] += 1;
                    (rank[room], k)
                })
                .collect();
            order.sort_unstable();
            good = order.into_iter().map(|(_, k)| k).collect();
        }
        // The lagging pair, in a room of its own, so the others hear no join:
        // the streamer is id 1, the lagger id 2.
        let lag_room = plan.rooms;
        let streamer = self.connect_as(lag_room, false, Behaviour::Streamer, true)?;
        self.wait_open(streamer)?;
        let lagger = self.connect_as(lag_room, false, Behaviour::Lagger, true)?;
        self.wait_open(lagger)?;
        // Each hears the other join (two notices with its own `self`) before
        // the lagger stops reading; read later, they would count as news.
        let give_up = Instant::now() + Duration::from_secs(10);
        while [streamer, lagger].iter().any(|&k| self.clients[k].notices < 2) {
            if Instant::now() > give_up {
                return Err("the lagging pair did not hear each other join".into());
            }
            self.turn(Some(Duration::from_millis(10)), None)?;
        }
        self.clients[lagger].read_budget = Some(0);
        let before: Vec<(usize, u64, u64)> = self.clients.iter().map(|(k, c)| (k, c.id, c.notices)).collect();
        self.latency.reset();
        let mut load = Load {
            interval: Duration::from_secs_f64(1.0 / (plan.rate * good.len() as f64)),
            good,
            streamer,
            lagger,
            lag: plan.lag,
            size: plan.size,
            start: Instant::now(),
            k: 0,
            streamed_bytes: 0,
            held: None,
            sending: true,
        };
        let mut newcomers = Vec::new();
        let mut steps = Vec::new();
        for (i, &kind) in plan.steps.iter().enumerate() {
            let (step, newcomer) = self
                .step(&mut load, plan, i, kind, lag_room + 1 + i)
                .map_err(|e| format!("step {} ({}): {e}", i + 1, kind.name()))?;
            step.print(plan.json, i + 1, plan.steps.len());
            steps.push(step);
            newcomers.push(newcomer);
            if let Some((_, c)) = self.clients.iter().find(|(_, c)| c.state == State::Closed) {
                return Err(format!("step {} ({}): the relay closed a client of room {}", i + 1, kind.name(), c.room));
            }
        }
        // The last reports land, then the lagger catches up. It reads what
        // waits in its socket without a new readiness event, so it is read
        // directly.
        load.sending = false;
        self.run_for(&mut load, Duration::from_secs(2))?;
        self.clients[lagger].read_budget = None;
        let streamed = self.clients[streamer].sent;
        let catch_up = Instant::now() + Duration::from_secs(20);
        while self.clients[lagger].expect.get(&1).copied().unwrap_or(0) < streamed && Instant::now() < catch_up {
            self.read(lagger, None);
            self.turn(Some(Duration::from_millis(10)), None)?;
        }
        let relay_pid = read_pid(&plan.pid_file).ok_or("no pid in the pid file at the end")?;
        let l = &self.clients[lagger];
        let mut report = TakeoverReport {
            clients: load.good.len(),
            sent: 0,
            owed: 0,
            missing: 0,
            disorder: 0,
            closed: self.clients.iter().filter(|(_, c)| c.state != State::Open).count(),
            noticed: (before.iter().map(|&(k, _, n)| (k, n)))
                .chain(newcomers.iter().map(|&k| (k, 1)))
                .filter(|&(k, n)| self.clients[k].notices != n)
                .map(|(k, n)| {
                    let c = &self.clients[k];
                    format!("room {} id {}: {} notices where {n} were due", c.room, c.id, c.notices)
                })
                .collect(),
            renamed: (before.iter().map(|&(k, id, _)| (k, id)))
                .chain(newcomers.iter().map(|&k| (k, 1)))
                .filter(|&(k, id)| self.clients[k].id != id)
                .map(|(k, id)| format!("room {}: id {id} became {}", self.clients[k].room, self.clients[k].id))
                .collect(),
            lag: (streamed, l.expect.get(&1).copied().unwrap_or(0), l.disorder),
            latency: self.latency.clone(),
            relay_pid,
            relay_fds: std::fs::read_dir(format!("/proc/{relay_pid}/fd")).map_or(0, |d| d.count()),
            connections: self.open(),
            steps,
        };
        for &r in &load.good {
            let receiver = &self.clients[r];
            report.disorder += receiver.disorder;
            for &s in &load.good {
                let sender = &self.clients[s];
                if s == r || sender.room != receiver.room {
                    continue;
                }
                let got = receiver.expect.get(&sender.id).copied().unwrap_or(0);
                report.owed += sender.sent;
                report.missing += sender.sent.saturating_sub(got);
                // A report seen twice also shows as out of order, but one
                // beyond the last sent would not.
                report.disorder += got.saturating_sub(sender.sent);
            }
        }
        report.sent = load.good.iter().map(|&k| self.clients[k].sent).sum();
        Ok(report)
    }

    /// One step: load, the two half-sent clients, the binary replaced,
    /// SIGUSR2, the outcome awaited under load, the halves finished. Returns
    /// the step and its newcomer.
    fn step(
        &mut self,
        load: &mut Load,
        plan: &TakeoverPlan,
        index: usize,
        kind: Kind,
        room: usize,
    ) -> Result<(StepReport, usize), String> {
        self.reset_gaps(&load.good);
        let at_start = self.latency.clone();
        self.run_for(load, plan.warmup)?;
        let baseline_gap_us = self.longest_gap(&load.good);
        let baseline_latency_us = self.latency_since(&at_start);
        self.wait_backlog(load)?;
        let newcomer = self.connect_as(room, false, Behaviour::Good, true)?;
        let request = self.clients[newcomer].out.len();
        self.hold_back(newcomer, request - request / 2);
        // A different room each step; the sender waits until what it has
        // queued is out, so that what it holds back is half of one frame.
        let sender = load.good[index % load.good.len()];
        load.held = Some(sender);
        self.run_until(load, Duration::from_secs(2), |f| f.clients[sender].out.is_empty())
            .map_err(|e| format!("the half-frame sender's queue did not drain: {e}"))?;
        self.send(sender, "*", 0, plan.size);
        let frame = self.clients[sender].out.len();
        self.hold_back(sender, frame - frame / 2);
        let copy = replace(plan.binaries.join(kind.name()), plan.binary.clone());
        let halves = [newcomer, sender];
        self.run_until(load, Duration::from_secs(5), |f| {
            copy.is_finished() && halves.iter().all(|&k| Some(f.clients[k].written) == f.clients[k].hold)
        })
        .map_err(|e| format!("the binary was not replaced, or the halves not written: {e}"))?;
        copy.join()
            .map_err(|_| "the copy panicked")?
            .map_err(|e| format!("replacing {}: {e}", plan.binary.display()))?;
        // The relay reads both halves before it is signalled.
        self.run_for(load, Duration::from_millis(100))?;
        let pending = scrape(self.addr).ok_or("no /metrics from the relay")?.pending as u64;
        if pending == 0 {
            return Err("the relay holds nothing for the lagging reader".into());
        }
        let old = read_pid(&plan.pid_file).ok_or("no pid in the pid file")?;
        if !alive(old) {
            return Err(format!("pid {old} from the pid file is not running"));
        }
        let before = self.latency.clone();
        signal(old, libc::SIGUSR2)?;
        let signalled = Instant::now();
        self.reset_gaps(&load.good);
        let new = match kind {
            Kind::Good => {
                let successor = || read_pid(&plan.pid_file).filter(|&p| p != old && alive(p));
                self.run_until(load, kind.wait(), |_| !alive(old) && successor().is_some())
                    .map_err(|e| format!("pid {old} did not hand over: {e}"))?;
                successor().ok_or("the pid file lost the new pid")?
            }
            Kind::Exits | Kind::Hangs | Kind::Refuses => {
                self.run_for(load, kind.wait())?;
                // The failed successor is the relay's child until the relay
                // has killed and reaped it; a signal before then would find
                // the takeover still under way.
                self.run_until(load, Duration::from_secs(5), |_| children(old).is_empty())
                    .map_err(|e| format!("pid {old} still has its failed successor {:?}: {e}", children(old)))?;
                let now = read_pid(&plan.pid_file);
                if !alive(old) || now != Some(old) {
                    return Err(format!("pid {old} should serve on, but it is gone or the pid file names {now:?}"));
                }
                old
            }
        };
        let took = signalled.elapsed();
        self.run_for(load, AFTER)?;
        let window = signalled.elapsed();
        let longest_gap_us = self.longest_gap(&load.good);
        let latency_us = self.latency_since(&before);
        self.release(newcomer);
        self.release(sender);
        let mates: Vec<usize> = load
            .good
            .iter()
            .copied()
            .filter(|&k| k != sender && self.clients[k].room == self.clients[sender].room)
            .collect();
        let (id, sent) = (self.clients[sender].id, self.clients[sender].sent);
        self.run_until(load, Duration::from_secs(5), |f| {
            f.clients[newcomer].notices == 1 && mates.iter().all(|&m| f.clients[m].expect.get(&id) == Some(&sent))
        })
        .map_err(|e| format!("the half handshake or the half frame did not complete: {e}"))?;
        load.held = None;
        let c = &self.clients[newcomer];
        if c.state != State::Open || c.id != 1 || c.peers != 0 {
            return Err(format!("the newcomer of room {room} got id {} and {} peers, not 1 and none", c.id, c.peers));
        }
        let step = StepReport {
            kind,
            old_pid: old,
            new_pid: new,
            took,
            window,
            longest_gap_us,
            baseline_gap_us,
            latency_us,
            baseline_latency_us,
            pending,
        };
        Ok((step, newcomer))
    }

    /// Runs the load until the relay holds [`MIN_BACKLOG`] for the lagging
    /// reader. What it holds is what the kernel's socket buffers do not,
    /// and those grow as the stream runs: at first they take all of it.
    fn wait_backlog(&mut self, load: &mut Load) -> Result<(), String> {
        let (addr, pair) = (self.addr, [load.streamer, load.lagger]);
        let mut next_scrape = Instant::now();
        self.run_until(load, Duration::from_secs(20), |f| {
            let now = Instant::now();
            pair.iter().any(|&k| f.clients[k].state == State::Closed)
                || now >= next_scrape && {
                    next_scrape = now + Duration::from_millis(250);
                    scrape(addr).is_some_and(|g| g.pending as u64 >= MIN_BACKLOG)
                }
        })
        .map_err(|e| format!("the relay held less than {MIN_BACKLOG} B for the lagging reader: {e}"))?;
        if pair.iter().any(|&k| self.clients[k].state == State::Closed) {
            return Err("the relay closed the lagging pair: is its --max-pending above --lag-mib?".into());
        }
        Ok(())
    }

    /// One turn of the load: the reports and stream messages now due, the
    /// lagger's reading, one poll.
    fn tick(&mut self, load: &mut Load) -> Result<(), String> {
        let now = Instant::now();
        if load.sending {
            let due = (now.duration_since(load.start).as_secs_f64() * STREAM_RATE) as u64;
            while self.clients[load.streamer].sent < due && self.clients[load.streamer].state == State::Open {
                self.send_to(load.streamer, 2, 0, STREAM_MESSAGE);
                load.streamed_bytes += STREAM_MESSAGE;
            }
        }
        let c = &mut self.clients[load.lagger];
        c.read_budget = Some(load.streamed_bytes.saturating_sub(load.lag).saturating_sub(c.read_total));
        self.read(load.lagger, None);
        let mut next = load.start + load.interval.mul_f64(load.k as f64);
        while next <= now {
            let key = load.good[(load.k % load.good.len() as u64) as usize];
            if load.sending && load.held != Some(key) {
                let at = self.micros(next);
                self.send_report(key, at, load.size);
            }
            load.k += 1;
            next = load.start + load.interval.mul_f64(load.k as f64);
        }
        self.turn(Some(next.saturating_duration_since(now).min(Duration::from_millis(5))), WINDOW)
    }

    fn run_for(&mut self, load: &mut Load, d: Duration) -> Result<(), String> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.tick(load)?;
        }
        Ok(())
    }

    /// Runs the load until `done`, or fails after `limit`.
    fn run_until(
        &mut self,
        load: &mut Load,
        limit: Duration,
        mut done: impl FnMut(&Fleet) -> bool,
    ) -> Result<(), String> {
        let end = Instant::now() + limit;
        while !done(self) {
            if Instant::now() > end {
                return Err(format!("not within {limit:?}"));
            }
            self.tick(load)?;
        }
        Ok(())
    }

    /// The longest latency among the reports received since `then`, a copy
    /// of the run's histogram.
    fn latency_since(&self, then: &Histogram<u64>) -> u64 {
        let mut since = self.latency.clone();
        since.subtract(then).map_or(0, |()| since.max())
    }

    fn reset_gaps(&mut self, keys: &[usize]) {
        for &k in keys {
            self.clients[k].longest_gap_us = 0;
        }
    }

    /// The longest wait for a report any of `keys` had since the reset, the
    /// one still going on included.
    fn longest_gap(&self, keys: &[usize]) -> u64 {
        let now = self.micros(Instant::now());
        keys.iter()
            .map(|&k| &self.clients[k])
            .map(|c| c.longest_gap_us.max(now.saturating_sub(c.last_report_us)))
            .max()
            .unwrap_or(0)
    }
}

/// Copies `source` next to `target` and renames it over `target`, as an
/// upgrade would, on a thread: the copy of a relay binary takes longer than
/// the load can wait.
fn replace(source: PathBuf, target: PathBuf) -> JoinHandle<std::io::Result<()>> {
    std::thread::spawn(move || {
        let mut tmp = target.clone().into_os_string();
        tmp.push(".tmp");
        // std::fs::copy keeps the permission bits, so the copy stays executable.
        std::fs::copy(&source, &tmp)?;
        std::fs::rename(&tmp, &target)
    })
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` runs. kill(2) with signal 0 says a process exists, but an
/// exited relay stays a zombie until its parent reaps it, and the parent of a
/// relay that took over is init, which may not.
fn alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    if unsafe { libc::kill(raw, 0) } != 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}

/// The processes whose parent is `pid`, zombies included.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // The parent is the second field after the parenthesised command name.
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok()) == Some(pid)
        })
        .collect()
}

fn signal(pid: u32, signal: i32) -> Result<(), String> {
    let raw = libc::pid_t::try_from(pid).map_err(|_| format!("{pid} is no pid"))?;
    // SAFETY: kill(2) with a valid signal number; a wrong pid shows in its result.
    if unsafe { libc::kill(raw, signal) } != 0 {
        return Err(format!("cannot signal pid {pid}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
