//! `--mode deflate`: the game load with JSON reports against a relay started
//! with `--deflate`, twice in one run: first with clients that do not offer
//! permessage-deflate, then with clients that offer it as browsers do
//! (`permessage-deflate; client_max_window_bits`), compress what they send
//! with their context carried over, and inflate what they receive. Each
//! phase reports the relay's CPU per delivery, the bytes on the wire per
//! message sent and per delivery, and latency.
//!
//! Self-contained on purpose: its own small poll loop beside the fleet's, so
//! the fleet stays as it is.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use ws_relay::client::{masked_frame, masked_frame_rsv1, upgrade_request, upgrade_request_offering, Deflater};
use ws_relay::client::{FrameHeader, OpCode};

use crate::report::cpu_seconds;
use crate::wait::{Waiter, TIMER};

/// What a browser offers.
const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// How long after the window closes late deliveries are still counted.
const GRACE: Duration = Duration::from_secs(2);

/// The load: `rooms` × `clients`, each sending a `size`-byte JSON report to
/// its room at `rate` Hz.
pub struct Load {
    /// The relay, started with `--deflate`.
    pub addr: SocketAddr,
    /// Room names are this prefix, `deflate-off-` or `deflate-on-`, and a number.
    pub prefix: String,
    /// Rooms.
    pub rooms: usize,
    /// Clients per room.
    pub clients: usize,
    /// Reports per second per client.
    pub rate: f64,
    /// Bytes per report.
    pub size: usize,
    /// Sending before the window opens.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// The relay's process id, for its CPU time.
    pub relay_pid: Option<u32>,
    /// One JSON object per phase instead of text.
    pub json: bool,
}

struct Client {
    stream: TcpStream,
    open: bool,
    closed: bool,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    peers: usize,
    seq: u64,
    mask: u32,
    deflater: Option<Deflater>,
    inflater: Option<Decompress>,
    /// The 101 agreed to permessage-deflate.
    agreed: bool,
}

/// What one phase measured.
struct Phase {
    sent: u64,
    expected: u64,
    delivered: u64,
    delivered_total: u64,
    compressed: u64,
    bytes_in: u64,
    bytes_out: u64,
    sent_total: u64,
    relay_cpu_s: Option<f64>,
    tool_cpu_s: Option<f64>,
    latency: Histogram<u64>,
}

struct Net {
    poll: Poll,
    events: Events,
    waiter: Waiter,
    clients: Slab<Client>,
    buf: Vec<u8>,
    epoch: Instant,
    /// Bytes read from and written to the relay.
    bytes_in: u64,
    bytes_out: u64,
    delivered: u64,
    delivered_total: u64,
    compressed: u64,
    latency: Histogram<u64>,
    inflated: Vec<u8>,
}

/// Runs both phases and prints them, then the on/off ratios.
pub fn run(load: &Load) -> Result<(), String> {
    let off = phase(load, false)?;
    print(load, "deflate-off", &off);
    std::thread::sleep(Duration::from_secs(1));
    let on = phase(load, true)?;
    print(load, "deflate-on", &on);
    if on.compressed == 0 {
        return Err("no message arrived compressed: start the relay with --deflate".into());
    }
    let per = |p: &Phase| p.relay_cpu_s.map(|c| c * 1e6 / p.delivered_total.max(1) as f64);
    let wire = |p: &Phase| p.bytes_in as f64 / p.delivered_total.max(1) as f64;
    let cpu_ratio = per(&on).zip(per(&off)).map(|(a, b)| a / b);
    let wire_ratio = wire(&on) / wire(&off);
    if load.json {
        let cpu = cpu_ratio.map_or("null".into(), |r| format!("{r:.3}"));
        println!(
            "{{\"mode\":\"deflate-ratio\",\"relay_cpu_per_delivery\":{cpu},\"bytes_per_delivery\":{wire_ratio:.3}}}"
        );
    } else {
        let cpu = cpu_ratio.map_or("?".into(), |r| format!("{r:.2}x"));
        println!("deflate on/off: relay CPU per delivery {cpu}, bytes on the wire per delivery {wire_ratio:.2}x");
    }
    Ok(())
}

fn print(load: &Load, label: &str, p: &Phase) {
    let per_delivery = p.relay_cpu_s.map(|c| c * 1e6 / p.delivered_total.max(1) as f64);
    let wire_in = p.bytes_in as f64 / p.delivered_total.max(1) as f64;
    let wire_out = p.bytes_out as f64 / p.sent_total.max(1) as f64;
    let ms = |q: f64| p.latency.value_at_quantile(q) as f64 / 1000.0;
    let loss = if p.expected == 0 { 0.0 } else { 1.0 - p.delivered.min(p.expected) as f64 / p.expected as f64 };
    let num = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.4}"));
    if load.json {
        println!(
            "{{\"mode\":\"{label}\",\"sent\":{},\"expected\":{},\"delivered\":{},\"loss\":{loss:.6},\"compressed\":{},\
             \"p50_ms\":{:.3},\"p99_ms\":{:.3},\"relay_cpu_s\":{},\"relay_us_per_delivery\":{},\"tool_cpu_s\":{},\
             \"wire_bytes_per_delivery\":{wire_in:.1},\"wire_bytes_per_send\":{wire_out:.1}}}",
            p.sent,
            p.expected,
            p.delivered,
            p.compressed,
            ms(0.5),
            ms(0.99),
            num(p.relay_cpu_s),
            num(per_delivery),
            num(p.tool_cpu_s),
        );
    } else {
        println!(
            "{label}: {} of {} delivered (loss {:.3}%, {} compressed), p50 {:.3} ms p99 {:.3} ms; relay {} µs CPU/delivery; \
             {wire_in:.1} bytes on the wire per delivery, {wire_out:.1} per report sent; tool CPU {} s",
            p.delivered,
            p.expected,
            loss * 100.0,
            p.compressed,
            ms(0.5),
            ms(0.99),
            per_delivery.map_or("?".into(), |v| format!("{v:.2}")),
            num(p.tool_cpu_s),
        );
    }
}

/// A `size`-byte JSON game report: `* report {"seq":..,"t":..,...}`.
fn report(seq: u64, at_us: u64, size: usize) -> Vec<u8> {
    let x = (seq * 37 % 1024) as f64 / 2.0;
    let y = (seq * 53 % 768) as f64 / 2.0;
    let mut msg = format!(
        "* report {{\"seq\":{seq},\"t\":{at_us},\"x\":{x},\"y\":{y},\"vx\":-1.5,\"vy\":0.25,\"heading\":{:.4},\
         \"hp\":87,\"state\":\"flying\",\"thrust\":{},\"shield\":false,\"pad\":\"",
        (seq % 628) as f64 / 100.0,
        seq % 2 == 0
    )
    .into_bytes();
    msg.resize(size.max(msg.len() + 2) - 2, b'-');
    msg.extend_from_slice(b"\"}");
    msg
}

/// The scheduled send time in a relayed report: the number after `"t":`.
fn report_time(message: &[u8]) -> Option<u64> {
    let at = message.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits = message[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&message[at..at + digits]).ok()?.parse().ok()
}

fn phase(load: &Load, deflate: bool) -> Result<Phase, String> {
    let poll = Poll::new().map_err(|e| e.to_string())?;
    let mut net = Net {
        waiter: Waiter::new(&poll).map_err(|e| e.to_string())?,
        poll,
        events: Events::with_capacity(4096),
        clients: Slab::new(),
        buf: vec![0; 256 * 1024],
        epoch: Instant::now(),
        bytes_in: 0,
        bytes_out: 0,
        delivered: 0,
        delivered_total: 0,
        compressed: 0,
        latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
        inflated: Vec::with_capacity(64 * 1024),
    };
    let tag = if deflate { "deflate-on-" } else { "deflate-off-" };
    let deadline = Instant::now() + Duration::from_secs(120);
    for room in 0..load.rooms {
        for _ in 0..load.clients {
            net.connect(load, &format!("{}{tag}{room}", load.prefix), deflate)?;
            // A few hundred handshakes in flight at most, as the fleet does.
            while net.clients.iter().filter(|(_, c)| !c.open).count() >= 256 {
                net.turn(Some(Duration::from_millis(20)), None)?;
            }
        }
    }
    while net.clients.iter().any(|(_, c)| !c.open || c.peers + 1 < load.clients) {
        if net.clients.iter().any(|(_, c)| c.closed) || Instant::now() > deadline {
            return Err("the rooms did not form".into());
        }
        net.turn(Some(Duration::from_millis(20)), None)?;
    }
    if deflate && net.clients.iter().any(|(_, c)| !c.agreed) {
        return Err("the relay declined permessage-deflate: start it with --deflate".into());
    }
    let senders: Vec<usize> = net.clients.iter().map(|(k, _)| k).collect();
    let (relay_cpu, tool_cpu) = (cpu_seconds(load.relay_pid), cpu_seconds(None));
    let (bytes_in, bytes_out) = (net.bytes_in, net.bytes_out);
    let start = Instant::now();
    let (window_start, window_end) = (start + load.warmup, start + load.warmup + load.duration);
    let window = (net.micros(window_start), net.micros(window_end));
    let interval = Duration::from_secs_f64(1.0 / (load.rate * senders.len() as f64));
    let (mut k, mut sent) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        let mut next = start + interval.mul_f64(k as f64);
        while next <= now && next < window_end {
            let at = net.micros(next);
            net.send(senders[(k % senders.len() as u64) as usize], at, load.size);
            sent += u64::from(next >= window_start);
            k += 1;
            next = start + interval.mul_f64(k as f64);
        }
        let expected = sent * (load.clients as u64 - 1);
        if now >= window_end && (net.delivered >= expected || now >= window_end + GRACE) {
            let delta = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
            return Ok(Phase {
                sent,
                expected,
                delivered: net.delivered,
                delivered_total: net.delivered_total,
                compressed: net.compressed,
                bytes_in: net.bytes_in - bytes_in,
                bytes_out: net.bytes_out - bytes_out,
                sent_total: k,
                relay_cpu_s: delta(cpu_seconds(load.relay_pid), relay_cpu),
                tool_cpu_s: delta(cpu_seconds(None), tool_cpu),
                latency: net.latency.clone(),
            });
        }
        let wake = if next < window_end { next } else { window_end + GRACE };
        net.turn(Some(wake.saturating_duration_since(now)), Some(window))?;
    }
}

impl Net {
    fn micros(&self, t: Instant) -> u64 {
        t.duration_since(self.epoch).as_micros() as u64
    }

    fn connect(&mut self, load: &Load, room: &str, deflate: bool) -> Result<(), String> {
        let stream = std::net::TcpStream::connect(load.addr).map_err(|e| format!("connect {}: {e}", load.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = TcpStream::from_std(stream);
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll.registry().register(&mut stream, Token(key), interest).map_err(|e| e.to_string())?;
        let host = load.addr.to_string();
        let out = if deflate { upgrade_request_offering(room, &host, OFFER) } else { upgrade_request(room, &host) };
        entry.insert(Client {
            stream,
            open: false,
            closed: false,
            inbuf: Vec::new(),
            out,
            written: 0,
            peers: 0,
            seq: 0,
            mask: key as u32 | 1,
            // A browser keeps its context from message to message.
            deflater: deflate.then(|| Deflater::new(15, true)),
            inflater: deflate.then(|| Decompress::new_with_window_bits(false, 15)),
            agreed: false,
        });
        self.flush(key);
        Ok(())
    }

    fn send(&mut self, key: usize, at_us: u64, size: usize) {
        let Some(c) = self.clients.get_mut(key).filter(|c| c.open && !c.closed) else { return };
        let msg = report(c.seq, at_us, size);
        c.seq += 1;
        c.mask = c.mask.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        match c.deflater.as_mut().filter(|_| c.agreed) {
            Some(deflater) => {
                let deflated = deflater.compress(&msg);
                masked_frame_rsv1(&mut c.out, true, true, OpCode::Text, &deflated, c.mask.to_le_bytes());
            }
            None => masked_frame(&mut c.out, true, OpCode::Text, &msg, c.mask.to_le_bytes()),
        }
        self.flush(key);
    }

    fn turn(&mut self, timeout: Option<Duration>, window: Option<(u64, u64)>) -> Result<(), String> {
        match self.waiter.poll(&mut self.poll, &mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let ready: Vec<(usize, bool)> =
            self.events.iter().filter(|e| e.token() != TIMER).map(|e| (e.token().0, e.is_writable())).collect();
        for (key, writable) in ready {
            self.read(key, window);
            if writable {
                self.flush(key);
            }
        }
        Ok(())
    }

    fn read(&mut self, key: usize, window: Option<(u64, u64)>) {
        loop {
            let Some(c) = self.clients.get_mut(key).filter(|c| !c.closed) else { return };
            match c.stream.read(&mut self.buf) {
                Ok(0) => return self.close(key),
                Ok(n) => {
                    self.bytes_in += n as u64;
                    c.inbuf.extend_from_slice(&self.buf[..n]);
                    let now_us = self.epoch.elapsed().as_micros() as u64;
                    if !self.parse(key, now_us, window) {
                        return self.close(key);
                    }
                    if n < self.buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(key),
            }
        }
    }

    /// Handles every whole frame read; false when the connection is over.
    fn parse(&mut self, key: usize, now_us: u64, window: Option<(u64, u64)>) -> bool {
        let c = &mut self.clients[key];
        let mut at = 0;
        if !c.open {
            let Some(end) = c.inbuf.windows(4).position(|w| w == b"\r\n\r\n") else { return true };
            let head = String::from_utf8_lossy(&c.inbuf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 101") {
                eprintln!("upgrade refused: {head}");
                return false;
            }
            c.agreed = head.contains("sec-websocket-extensions: permessage-deflate");
            c.open = true;
            at = end + 4;
        }
        let mut alive = true;
        let mut pong = None;
        while let Ok(Some((header, len))) = FrameHeader::parse(&c.inbuf[at..]) {
            let size = header.len as usize;
            if c.inbuf.len() < at + len + size {
                break;
            }
            let payload = &c.inbuf[at + len..at + len + size];
            match header.opcode {
                OpCode::Text | OpCode::Binary => {
                    let message = match (header.rsv1, c.inflater.as_mut()) {
                        (false, _) => payload,
                        (true, Some(ctx)) => {
                            // server_no_context_takeover: every message stands alone.
                            ctx.reset(false);
                            self.inflated.clear();
                            let mut input = payload.to_vec();
                            input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
                            self.inflated.reserve(256 * 1024);
                            if ctx.decompress_vec(&input, &mut self.inflated, FlushDecompress::Sync).is_err() {
                                eprintln!("a compressed message that does not inflate");
                                return false;
                            }
                            self.compressed += 1;
                            &self.inflated[..]
                        }
                        (true, None) => return false,
                    };
                    let rest = message.splitn(2, |&b| b == b' ').nth(1).unwrap_or(b"");
                    match rest {
                        b"self" => {}
                        b"join" => c.peers += 1,
                        b"quit" => c.peers = c.peers.saturating_sub(1),
                        _ => {
                            self.delivered_total += 1;
                            if let (Some(sent), Some((from, to))) = (report_time(rest), window) {
                                if (from..to).contains(&sent) {
                                    self.delivered += 1;
                                    let _ = self.latency.record(now_us.saturating_sub(sent).max(1));
                                }
                            }
                        }
                    }
                }
                OpCode::Ping => pong = Some(payload.to_vec()),
                OpCode::Close => alive = false,
                _ => {}
            }
            at += len + size;
            if !alive {
                break;
            }
        }
        c.inbuf.drain(..at);
        if let Some(ping) = pong {
            masked_frame(&mut c.out, true, OpCode::Pong, &ping, [1, 2, 3, 4]);
            self.flush(key);
        }
        alive
    }

    fn close(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key) {
            c.closed = true;
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key).filter(|c| !c.closed) else { return };
        while c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(n) => {
                    c.written += n;
                    self.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.closed = true;
                    return;
                }
            }
        }
        c.out.clear();
        c.written = 0;
    }
}
