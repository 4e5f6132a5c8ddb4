//! `ws-relay-load`: a load generator for any relay that speaks the ws-relay
//! protocol. One thread, a hand-written mio loop, so that it is not the
//! bottleneck; it reports its own CPU time so a reader can check.

mod fleet;
mod report;
mod tls;
mod wait;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use fleet::soak::SoakPlan;
use fleet::takeover::{Kind, TakeoverPlan};
use fleet::{Fleet, Plan};
use report::{cpu_seconds, rss_kib, Step};

/// Load generator for ws-relay-protocol relays: R rooms × K clients, each
/// sending `* report <seq> <time> <padding>` at H Hz on an even open-loop
/// schedule; reports deliveries/s, loss and latency percentiles.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The relay's address.
    #[arg(long, default_value = "127.0.0.1:7927")]
    addr: SocketAddr,
    /// Room names are this prefix followed by the room number.
    #[arg(long, default_value = "/ws-relay/load-")]
    prefix: String,
    /// What to measure.
    #[arg(long, value_enum, default_value = "fixed")]
    mode: Mode,
    /// Rooms.
    #[arg(long, default_value_t = 64)]
    rooms: usize,
    /// Clients per room.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Messages per second sent by each client (ramp: the starting rate).
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
    /// Size of each report message in bytes.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Sending before measuring starts (takeover: before each step).
    #[arg(long, default_value = "2", value_parser = secs)]
    warmup: Duration,
    /// Length of the measurement (ramp: of each step; idle: of the hold).
    #[arg(long, default_value = "10", value_parser = secs)]
    duration: Duration,
    /// Ramp: each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.25)]
    ramp_factor: f64,
    /// Ramp: times a failed step is measured again before the ramp stops. A
    /// relay that cannot keep up fails every time; one stalled by a noisy
    /// machine for a moment does not.
    #[arg(long, default_value_t = 1)]
    ramp_retries: u32,
    /// Ramp: the step fails when more than this fraction is lost.
    #[arg(long, default_value_t = 0.01)]
    max_loss: f64,
    /// Ramp: the step fails when p99 latency passes this many milliseconds.
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
    /// Idle: connections to hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Churn: clients that stay in the room and watch the joins and quits.
    #[arg(long, default_value_t = 4)]
    watchers: usize,
    /// Churn: connect/self/close cycles run at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Soak: misbehaving clients mixed into the rooms.
    #[arg(long, default_value_t = 20)]
    misbehaving: usize,
    /// Soak: the relay's RSS may grow at most this many MiB over its starting size.
    #[arg(long, default_value_t = 256)]
    max_rss_growth_mib: u64,
    /// Soak: once everyone has left, the relay's RSS must be within this many
    /// percent of where it started, or within 2 MiB, or within a quarter of
    /// its peak growth: each shard's thread has its own allocator arena, and
    /// allocators keep part of what they once held for reuse. A leak shows as
    /// growth from one round to the next (scripts/soak.sh runs two).
    #[arg(long, default_value_t = 20)]
    max_rss_end_growth_pct: u64,
    /// Soak: clients that each send one 60 KB message and then idle.
    #[arg(long, default_value_t = 50)]
    crowd: usize,
    /// Soak and takeover: how many MiB the lagging reader stays behind its
    /// stream; more than the kernel's socket buffers, so the relay holds part
    /// of it (start the relay with a `--max-pending` above it).
    #[arg(long, default_value_t = 6)]
    lag_mib: usize,
    /// Join with a token signed with this file's secret (the relay's
    /// `--token-secret-file`), opening every room under `--prefix`.
    #[arg(long)]
    token_secret_file: Option<std::path::PathBuf>,
    /// Takeover: the steps, comma-separated. `good` puts a relay at the
    /// relay's path, which must take over; `exits`, a program that exits at
    /// once, `hangs`, one that never says hello, and `refuses`, a relay that
    /// cannot take the state: with those the old process must serve on. Each
    /// is the file of that name in `--binaries`.
    #[arg(long, default_value = "good,good,good,exits,hangs,refuses")]
    takeover_plan: String,
    /// Takeover: a room's clients send one right after another, as in the
    /// fixed load, rather than spread over the schedule. The relay writes to
    /// each receiver once for the room's reports rather than once per report,
    /// which lets a small machine carry thousands of clients; but a receiver
    /// then hears its room once every 1/rate s, so a pause shorter than that
    /// hardly shows as a gap (it does as latency).
    #[arg(long)]
    room_bursts: bool,
    /// Takeover: the path the relay runs from, where each step's file is put.
    #[arg(long)]
    binary: Option<std::path::PathBuf>,
    /// Takeover: the folder holding a file for each kind in the plan.
    #[arg(long)]
    binaries: Option<std::path::PathBuf>,
    /// Takeover: the relay's `--pid-file`, where its current pid is read.
    #[arg(long)]
    pid_file: Option<std::path::PathBuf>,
    /// The relay's process id, to report its CPU time and memory.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// A process in front of the relay (a TLS-terminating proxy's worker,
    /// say); repeat for several. Their CPU time is reported as the proxy's,
    /// and with the relay's as the server side's CPU per delivery.
    #[arg(long)]
    proxy_pid: Vec<u32>,
    /// Connect every client over TLS (wss://), with rustls (ring), TLS 1.3
    /// or 1.2, ALPN http/1.1. Not with soak or takeover (TLS sessions end at
    /// a takeover by design).
    #[arg(long)]
    tls: bool,
    /// With --tls: the PEM certificates to trust, CAs or the relay's own
    /// certificate (a self-signed test certificate, say, trusted as it is).
    /// Default: $SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, requires = "tls")]
    tls_ca: Option<std::path::PathBuf>,
    /// With --tls: the name sent as SNI and checked against the certificate.
    #[arg(long, default_value = "localhost", requires = "tls")]
    tls_server_name: String,
    /// Print one JSON object per result on stdout instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// A fixed load for `--duration`.
    Fixed,
    /// Raise the rate step by step until loss or p99 passes its bound.
    Ramp,
    /// Hold `--connections` idle connections; report relay RSS per connection.
    Idle,
    /// Connect, wait for `self`, close, as fast as possible.
    Churn,
    /// `--connections` clients one at a time on an otherwise idle relay:
    /// the time from connecting to the 101 response, p50/p99/max.
    Connect,
    /// `--rooms` × `--clients` well-behaved clients plus `--misbehaving` bad ones
    /// (silent, flooding, garbage, resetting mid-frame, trickling the
    /// handshake) for `--duration`; fails if a well-behaved client missed a
    /// report or the relay's memory or descriptors did not come back.
    Soak,
    /// `--rooms` × `--clients` well-behaved clients and a reader lagging
    /// `--lag-mib` behind a stream while the tool runs `--takeover-plan`
    /// against the relay at `--binary`: in each step a newcomer stops halfway
    /// through its handshake and a client halfway through a frame, the file
    /// at the relay's path is replaced, and SIGUSR2 goes to the pid in
    /// `--pid-file`. Prints each step's longest delivery gap; fails on any
    /// close, join, quit, new id, lost, repeated or reordered message, or
    /// outcome other than the planned one.
    Takeover,
    /// The game load with JSON reports against a relay started with --deflate, first with clients that do
    /// not offer permessage-deflate, then with clients that do: relay CPU per delivery and bytes on the wire.
    Deflate,
}

fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim_end_matches('s').parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ws-relay-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.tls && matches!(args.mode, Mode::Soak | Mode::Takeover) {
        return Err("--tls: not with soak (its misbehaving clients and /metrics speak plain TCP) or takeover \
                    (TLS sessions cannot move to a new process)"
            .into());
    }
    let mut fleet = fleet(args, args.prefix.clone())?;
    match args.mode {
        Mode::Fixed => {
            fleet.join_rooms(args.rooms, args.clients)?;
            let step = measure(&mut fleet, args, args.rate)?;
            step.print(args.json, "fixed");
        }
        Mode::Ramp => {
            fleet.join_rooms(args.rooms, args.clients)?;
            let mut rate = args.rate;
            let mut best: Option<Step> = None;
            'ramp: loop {
                let mut attempt = 0;
                let step = loop {
                    let step = measure(&mut fleet, args, rate)?;
                    step.print(args.json, "ramp-step");
                    if step.loss <= args.max_loss && step.p99_ms() <= args.max_p99_ms {
                        break step;
                    }
                    attempt += 1;
                    if attempt > args.ramp_retries {
                        break 'ramp;
                    }
                    fleet.settle(Duration::from_secs(2));
                };
                best = Some(step);
                rate *= args.ramp_factor;
                fleet.settle(Duration::from_secs(2));
            }
            match best {
                Some(step) => step.print(args.json, "ramp-best"),
                None => return Err("the first step already failed: lower --rate".into()),
            }
        }
        Mode::Idle => {
            let before = args.relay_pid.and_then(rss_kib);
            let cpu = cpu_seconds(None);
            fleet.join_rooms(args.connections.div_ceil(args.clients), args.clients)?;
            fleet.settle(args.duration);
            let after = args.relay_pid.and_then(rss_kib);
            let held = fleet.open();
            let per_conn = match (before, after) {
                (Some(b), Some(a)) => format!("{:.2}", (a.saturating_sub(b)) as f64 / held as f64),
                _ => "null".into(),
            };
            let tool_cpu = cpu_seconds(None).unwrap_or(0.0) - cpu.unwrap_or(0.0);
            if args.json {
                println!(
                    "{{\"mode\":\"idle\",\"connections\":{held},\"relay_rss_before_kib\":{},\"relay_rss_after_kib\":{},\"relay_kib_per_connection\":{per_conn},\"tool_cpu_s\":{tool_cpu:.3}}}",
                    opt(before),
                    opt(after)
                );
            } else {
                println!(
                    "idle: {held} connections held; relay RSS {} -> {} KiB; {per_conn} KiB per connection",
                    opt(before),
                    opt(after)
                );
            }
        }
        Mode::Churn => {
            fleet.join_rooms(1, args.watchers)?;
            let relay_cpu = relay_cpu_seconds(args.relay_pid);
            let proxy_cpu = proxy_cpu_seconds(&args.proxy_pid);
            let tool_cpu = cpu_seconds(None);
            let cycles = fleet.churn(args.concurrency, args.duration)?;
            let rate = cycles as f64 / args.duration.as_secs_f64();
            let relay = delta(relay_cpu_seconds(args.relay_pid), relay_cpu);
            let proxy = delta(proxy_cpu_seconds(&args.proxy_pid), proxy_cpu);
            let tool = delta(cpu_seconds(None), tool_cpu);
            if args.json {
                println!(
                    "{{\"mode\":\"churn\",\"cycles\":{cycles},\"cycles_per_s\":{rate:.1},\"relay_cpu_s\":{},\"proxy_cpu_s\":{},\"tool_cpu_s\":{}}}",
                    opt(relay),
                    opt(proxy),
                    opt(tool)
                );
            } else {
                println!(
                    "churn: {cycles} cycles in {:?}: {rate:.0} cycles/s; relay CPU {} s,{} tool CPU {} s",
                    args.duration,
                    opt(relay),
                    proxy.map_or(String::new(), |p| format!(" proxy CPU {p} s,")),
                    opt(tool)
                );
            }
        }
        Mode::Connect => {
            // A warm-up, so the first connections' page faults are not timed.
            fleet.connect_latency(args.connections.min(200), args.rooms)?;
            let times = fleet.connect_latency(args.connections, args.rooms)?;
            let us = |q: f64| times.value_at_quantile(q);
            if args.json {
                println!(
                    "{{\"mode\":\"connect\",\"connections\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
                    times.len(),
                    us(0.5),
                    us(0.99),
                    times.max()
                );
            } else {
                println!(
                    "connect: {} connections, connect to 101: p50 {} µs, p99 {} µs, max {} µs",
                    times.len(),
                    us(0.5),
                    us(0.99),
                    times.max()
                );
            }
        }
        Mode::Deflate => {
            drop(fleet);
            let mut per_delivery = Vec::new();
            for on in [false, true] {
                let side = if on { "deflate-on" } else { "deflate-off" };
                let fleet = self::fleet(args, format!("{}{side}-", args.prefix))?.with_json_reports();
                let mut fleet = if on { fleet.with_deflate() } else { fleet };
                fleet.join_rooms(args.rooms, args.clients)?;
                if on && !fleet.all_compressing() {
                    return Err("the relay declined permessage-deflate: start it with --deflate".into());
                }
                let step = measure(&mut fleet, args, args.rate)?;
                if on && step.compressed == 0 {
                    return Err("no message arrived compressed".into());
                }
                step.print(args.json, side);
                let cpu = step.relay_cpu_s.map(|c| c * 1e6 / step.delivered_total.max(1) as f64);
                per_delivery.push((cpu, step.wire_in as f64 / step.delivered_total.max(1) as f64));
                // The first phase's clients leave before the second's arrive.
                drop(fleet);
                std::thread::sleep(Duration::from_secs(1));
            }
            let [(cpu_off, wire_off), (cpu_on, wire_on)] = per_delivery[..] else { unreachable!("two phases") };
            let cpu = cpu_on.zip(cpu_off).map(|(on, off)| on / off);
            let wire = wire_on / wire_off;
            if args.json {
                let cpu = cpu.map_or("null".into(), |r| format!("{r:.3}"));
                println!(
                    "{{\"mode\":\"deflate-ratio\",\"relay_cpu_per_delivery\":{cpu},\"bytes_per_delivery\":{wire:.3}}}"
                );
            } else {
                let cpu = cpu.map_or("?".into(), |r| format!("{r:.2}x"));
                println!("deflate on/off: relay CPU per delivery {cpu}, bytes on the wire per delivery {wire:.2}x");
            }
        }
        Mode::Soak => {
            let plan = SoakPlan {
                rooms: args.rooms,
                per_room: args.clients,
                misbehaving: args.misbehaving,
                rate: args.rate,
                duration: args.duration,
                relay_pid: args.relay_pid,
                crowd: args.crowd,
                lag: args.lag_mib << 20,
            };
            let r = fleet.soak(&plan)?;
            let growth = r.rss.1.saturating_sub(r.rss.0);
            println!(
                "soak: {} well-behaved clients received {} reports, {} missing, {} out of order, {} closed by the relay; \
                 misbehaving clients cut off and reconnected {} times; relay RSS {} -> max {} -> {} KiB; descriptors {} -> max {} -> {}",
                r.good, r.received, r.missing, r.disorder, r.good_closed, r.respawns, r.rss.0, r.rss.1, r.rss.2, r.fds.0, r.fds.1, r.fds.2
            );
            let (streamed, lagged, lag_disorder, lagger_open) = r.lagger;
            println!(
                "soak: the lagging reader received {lagged} of {streamed} 60 KB messages, {lag_disorder} out of order, \
                 open: {lagger_open}; the relay held up to {} KiB for it; {} idle clients that each sent 60 KB: \
                 {} closed, {} KiB of message buffers held",
                r.lag_held / 1024,
                args.crowd,
                r.crowd_closed,
                r.crowd_input_buffers / 1024
            );
            let mut failures = Vec::new();
            if r.missing + r.disorder > 0 || r.good_closed > 0 || r.received == 0 {
                failures.push("a well-behaved client lost reports or its connection".to_owned());
            }
            if args.relay_pid.is_some() && growth > args.max_rss_growth_mib * 1024 {
                failures.push(format!("relay RSS grew {growth} KiB, over {} MiB", args.max_rss_growth_mib));
            }
            if args.relay_pid.is_some() && r.fds.2 > r.fds.0 {
                failures.push(format!("relay descriptors did not come back: {} -> {}", r.fds.0, r.fds.2));
            }
            let allowed = (r.rss.0 * args.max_rss_end_growth_pct / 100).max(2048).max(growth / 4);
            if args.relay_pid.is_some() && r.rss.2 > r.rss.0 + allowed {
                failures.push(format!(
                    "relay RSS did not come back: {} -> {} KiB, over {}%, 2 MiB and a quarter of its peak growth",
                    r.rss.0, r.rss.2, args.max_rss_end_growth_pct
                ));
            }
            if lagged != streamed || lag_disorder > 0 || !lagger_open {
                failures.push("the lagging reader lost messages or its connection".to_owned());
            }
            if r.lag_held == 0 {
                failures.push("the relay never held a backlog for the lagging reader: raise --lag-mib".to_owned());
            }
            if r.crowd_closed > 0 || r.crowd_input_buffers > (args.crowd as u64) * 4096 {
                failures.push("the crowd of large-message senders was closed or its memory kept".to_owned());
            }
            if !failures.is_empty() {
                return Err(failures.join("; "));
            }
        }
        Mode::Takeover => {
            let need = |p: &Option<std::path::PathBuf>, flag: &str| p.clone().ok_or(format!("takeover needs {flag}"));
            let plan = TakeoverPlan {
                rooms: args.rooms,
                per_room: args.clients,
                rate: args.rate,
                size: args.size,
                warmup: args.warmup,
                bursts: args.room_bursts,
                lag: args.lag_mib << 20,
                steps: Kind::plan(&args.takeover_plan)?,
                binary: need(&args.binary, "--binary")?,
                binaries: need(&args.binaries, "--binaries")?,
                pid_file: need(&args.pid_file, "--pid-file")?,
                json: args.json,
            };
            let report = fleet.takeover(&plan)?;
            report.print(args.json);
            let violations = report.violations();
            if !violations.is_empty() {
                return Err(violations.join("; "));
            }
        }
    }
    Ok(())
}

/// A fleet for rooms named `prefix<n>`, with the TLS and token options given.
fn fleet(args: &Args, prefix: String) -> Result<Fleet, String> {
    let mut fleet = Fleet::new(args.addr, prefix).map_err(|e| e.to_string())?;
    if args.tls {
        fleet = fleet.with_tls(tls::TlsClient::new(args.tls_ca.as_deref(), &args.tls_server_name)?);
    }
    if let Some(path) = &args.token_secret_file {
        let mut secret = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if secret.last() == Some(&b'\n') {
            secret.pop();
        }
        // One token for the whole run: the relay checks it on every upgrade
        // all the same, and the tool's CPU stays on the connections.
        let claims = serde_json::json!({"exp": ws_relay::token::unix_now() + 86_400.0, "room_prefix": args.prefix});
        fleet = fleet.with_token(ws_relay::token::mint(&claims, &secret));
    }
    Ok(fleet)
}

fn measure(fleet: &mut Fleet, args: &Args, rate: f64) -> Result<Step, String> {
    let plan = Plan { rate, size: args.size, warmup: args.warmup, duration: args.duration };
    let relay_cpu = relay_cpu_seconds(args.relay_pid);
    let proxy_cpu = proxy_cpu_seconds(&args.proxy_pid);
    let tool_cpu = cpu_seconds(None);
    let mut step = fleet.run(&plan)?;
    step.relay_cpu_s = delta(relay_cpu_seconds(args.relay_pid), relay_cpu);
    step.proxy_cpu_s = delta(proxy_cpu_seconds(&args.proxy_pid), proxy_cpu);
    step.tool_cpu_s = delta(cpu_seconds(None), tool_cpu);
    Ok(step)
}

/// The relay's CPU time, if its pid was given (`cpu_seconds(None)` would be this tool's own).
fn relay_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    cpu_seconds(Some(pid?))
}

/// The CPU time of the processes in front of the relay, summed; `None` if
/// there are none or one has gone.
fn proxy_cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_seconds(Some(p))).sum()
}

fn delta(after: Option<f64>, before: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}
