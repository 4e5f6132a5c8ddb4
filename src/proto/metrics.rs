//! The relay's counters in the Prometheus text exposition format (version
//! 0.0.4), and the one measurement only a driver can make: how long its event
//! loop turns take. The driver passes those in as durations, so the core
//! still reads no clock.

use std::fmt::Write;
use std::time::Duration;

use super::action::CloseKind;
use super::admission::Refusal;
use super::http::Status;
use super::state::{ImportError, Reader, Writer};
use super::stats::{Stats, TlsFailure};

/// Upper bounds of the turn-duration buckets in microseconds: powers of two
/// from 1 µs to about a second, one `leading_zeros` to place a sample.
const BUCKETS: usize = 21;

/// Event-loop turn durations, bucketed as Prometheus expects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TurnHistogram {
    /// Samples per bucket, not cumulative; the last counts those above every bound.
    counts: [u64; BUCKETS + 1],
    sum_nanos: u128,
}

impl TurnHistogram {
    /// Counts one turn.
    pub(crate) fn record(&mut self, turn: Duration) {
        let nanos = turn.as_nanos();
        let micros = u64::try_from(nanos.div_ceil(1000)).unwrap_or(u64::MAX);
        let bucket = if micros <= 1 { 0 } else { (64 - (micros - 1).leading_zeros()) as usize };
        self.counts[bucket.min(BUCKETS)] += 1;
        self.sum_nanos += nanos;
    }

    /// Turns counted.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub(crate) fn save(&self, w: &mut Writer) {
        w.len(self.counts.len());
        self.counts.iter().for_each(|&n| w.u64(n));
        w.u64(self.sum_nanos as u64);
        w.u64((self.sum_nanos >> 64) as u64);
    }

    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        let mut h = Self::default();
        let n = r.index()?;
        if n != h.counts.len() {
            return Err(ImportError::Corrupt("another set of loop-turn buckets"));
        }
        for c in &mut h.counts {
            *c = r.u64()?;
        }
        h.sum_nanos = u128::from(r.u64()?) | u128::from(r.u64()?) << 64;
        Ok(h)
    }

    fn add(&mut self, other: &TurnHistogram) {
        self.counts.iter_mut().zip(&other.counts).for_each(|(a, b)| *a += b);
        self.sum_nanos += other.sum_nanos;
    }
}

/// What only the process knows about itself, for `/metrics`: its driver
/// sets it ([`Relay::set_process_info`](crate::Relay::set_process_info)),
/// since the core reads no clock.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessInfo {
    /// When the process started, in seconds since the Unix epoch; 0 if unknown.
    pub start_time: f64,
    /// Takeovers the relay has been through: each new process counts one more
    /// than the process it took over from.
    pub takeovers: u64,
}

/// What one core counts and measures at a moment: the input of
/// [`render`], which adds up several for a process of many shards.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) shard: usize,
    pub(crate) stats: Stats,
    pub(crate) gauges: Gauges,
    pub(crate) turns: TurnHistogram,
    pub(crate) process: ProcessInfo,
}

/// The core's gauges at the moment of a scrape.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gauges {
    /// Transport connections in any phase.
    pub(crate) connections: usize,
    /// Connections still sending their HTTP request.
    pub(crate) handshakes: usize,
    /// Upgraded clients.
    pub(crate) clients: usize,
    /// Rooms with clients.
    pub(crate) rooms: usize,
    /// Memory held for messages being received.
    pub(crate) input_buffers: usize,
    /// Memory held for bytes waiting to be written.
    pub(crate) output_buffers: usize,
    /// Bytes waiting to be written.
    pub(crate) pending: usize,
    /// Sessions parked, waiting to be resumed.
    pub(crate) parked: usize,
    /// Clients that agreed to permessage-deflate.
    pub(crate) deflate_clients: usize,
    /// Memory held by inflaters, their windows and the compressors.
    pub(crate) deflate_buffers: usize,
}

impl Snapshot {
    /// The shard it was taken from.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

impl Gauges {
    fn add(&mut self, other: &Gauges) {
        let Gauges {
            connections,
            handshakes,
            clients,
            rooms,
            input_buffers,
            output_buffers,
            pending,
            parked,
            deflate_clients,
            deflate_buffers,
        } = *other;
        self.parked += parked;
        self.deflate_clients += deflate_clients;
        self.deflate_buffers += deflate_buffers;
        self.connections += connections;
        self.handshakes += handshakes;
        self.clients += clients;
        self.rooms += rooms;
        self.input_buffers += input_buffers;
        self.output_buffers += output_buffers;
        self.pending += pending;
    }
}

/// Appends the `/metrics` page for a process whose cores are `shards` (one
/// [`Snapshot`] each, from [`Relay::snapshot`](crate::Relay::snapshot)): every
/// counter and gauge summed over them, and each shard's clients apart.
pub fn render(shards: &[Snapshot], out: &mut Vec<u8>) {
    let (mut stats, mut gauges, mut turns) = (Stats::default(), Gauges::default(), TurnHistogram::default());
    for s in shards {
        stats.add(&s.stats);
        gauges.add(&s.gauges);
        turns.add(&s.turns);
    }
    let stats = &stats;
    let mut text = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(text, "{name}{labels} {value}");
        }
    };
    metric(
        "ws_relay_open_connections",
        "gauge",
        "Open transport connections, in any phase.",
        &[("", gauges.connections as u64)],
    );
    metric(
        "ws_relay_pending_handshakes",
        "gauge",
        "Connections still sending their HTTP request.",
        &[("", gauges.handshakes as u64)],
    );
    metric("ws_relay_clients", "gauge", "Upgraded WebSocket clients.", &[("", gauges.clients as u64)]);
    let per_shard = labelled("shard", shards.iter().map(|s| (s.shard, s.gauges.clients as u64)));
    let help = "Upgraded WebSocket clients served by each shard (thread).";
    metric("ws_relay_shard_clients", "gauge", help, &borrowed(&per_shard));
    metric("ws_relay_rooms", "gauge", "Rooms with at least one client.", &[("", gauges.rooms as u64)]);
    let help = "Resumable sessions whose connection dropped, holding their seat until resumed or their window passes.";
    metric("ws_relay_parked_sessions", "gauge", help, &[("", gauges.parked as u64)]);
    let help = "Sessions taken back by a new connection within the resume window.";
    metric("ws_relay_resumes_total", "counter", help, &[("", stats.resumes)]);
    let help = "Parked sessions not resumed in time: their room heard them quit.";
    metric("ws_relay_sessions_expired_total", "counter", help, &[("", stats.sessions_expired)]);
    metric(
        "ws_relay_buffer_bytes",
        "gauge",
        "Memory held in per-connection buffers: messages being received, bytes waiting to be written, \
         permessage-deflate's inflaters and compressors.",
        &[
            ("{buffer=\"input\"}", gauges.input_buffers as u64),
            ("{buffer=\"output\"}", gauges.output_buffers as u64),
            ("{buffer=\"deflate\"}", gauges.deflate_buffers as u64),
        ],
    );
    let help = "Clients that agreed to permessage-deflate.";
    metric("ws_relay_deflate_clients", "gauge", help, &[("", gauges.deflate_clients as u64)]);
    let help = "Messages the relay compressed: one per message and window size, however many recipients share it.";
    metric("ws_relay_compressions_total", "counter", help, &[("", stats.compressions)]);
    let help = "Payload bytes of the messages sent compressed, before (in) and after (out) compression.";
    let samples = [("{stage=\"in\"}", stats.compressed_in), ("{stage=\"out\"}", stats.compressed_out)];
    metric("ws_relay_compressed_bytes_total", "counter", help, &samples);
    let help = "Compressed messages received from clients and inflated.";
    metric("ws_relay_inflated_messages_total", "counter", help, &[("", stats.inflated)]);
    metric(
        "ws_relay_pending_bytes",
        "gauge",
        "Bytes queued for clients and not yet written: what slow readers have not taken.",
        &[("", gauges.pending as u64)],
    );
    metric(
        "ws_relay_connections_accepted_total",
        "counter",
        "Transport connections accepted.",
        &[("", stats.connections)],
    );
    metric("ws_relay_upgrades_total", "counter", "WebSocket upgrades completed.", &[("", stats.upgrades)]);
    let help = "Upgrade requests handed to the shard that serves their room.";
    metric("ws_relay_handoffs_total", "counter", help, &[("", stats.handoffs)]);
    metric("ws_relay_admissions_total", "counter", "Upgrades admission let in.", &[("", stats.admitted)]);
    let refusals = labelled("cause", Refusal::ALL.iter().map(|&r| (r.label(), stats.admission_refusals(r))));
    let help = "Upgrades admission kept out (closed with 4401 or 4403), by cause.";
    metric("ws_relay_admission_refusals_total", "counter", help, &borrowed(&refusals));
    let failures = labelled("cause", TlsFailure::ALL.iter().map(|&f| (f.label(), stats.tls_failures(f))));
    let help = "TLS connections that failed before their request, by cause.";
    metric("ws_relay_tls_failures_total", "counter", help, &borrowed(&failures));
    let help = "Server API calls on the operator's port, answered or refused.";
    metric("ws_relay_api_requests_total", "counter", help, &[("", stats.api_calls)]);
    metric(
        "ws_relay_messages_received_total",
        "counter",
        "Data messages received from clients.",
        &[("", stats.messages_received)],
    );
    metric(
        "ws_relay_messages_delivered_total",
        "counter",
        "Copies of messages queued to recipients, join/quit/self notices included.",
        &[("", stats.deliveries)],
    );
    metric(
        "ws_relay_messages_dropped_total",
        "counter",
        "Messages not delivered: addressed to an id not in the room, or to a client past its output bound.",
        &[
            ("{reason=\"no_such_id\"}", stats.undeliverable),
            ("{reason=\"slow_consumer\"}", stats.dropped_slow_consumer),
        ],
    );
    metric("ws_relay_received_bytes_total", "counter", "Bytes read from clients.", &[("", stats.bytes_received)]);
    metric("ws_relay_sent_bytes_total", "counter", "Bytes written to clients.", &[("", stats.bytes_sent)]);
    let closes = labelled("reason", CloseKind::ALL.iter().map(|&k| (k.label(), stats.closes(k))));
    metric("ws_relay_closes_total", "counter", "Connections ended, by reason.", &borrowed(&closes));
    // Every status the relay refuses with, so each series exists from the start.
    let statuses = Status::ALL.iter().filter(|s| s.code() >= 400);
    let refused = labelled("status", statuses.map(|s| (s.code(), stats.refused(s.code()))));
    let help = "HTTP requests refused, by response status.";
    metric("ws_relay_handshakes_rejected_total", "counter", help, &borrowed(&refused));
    let process = shards.first().map(|s| s.process).unwrap_or_default();
    let help = "Times the relay was handed to a new process without dropping a connection (SIGUSR2).";
    metric("ws_relay_takeovers_total", "counter", help, &[("", process.takeovers)]);
    render_turns(&turns, &mut text);
    if process.start_time > 0.0 {
        let name = "process_start_time_seconds";
        let _ = writeln!(text, "# HELP {name} Start time of the process since unix epoch in seconds.");
        let _ = writeln!(text, "# TYPE {name} gauge\n{name} {:.3}", process.start_time);
    }
    out.extend_from_slice(text.as_bytes());
}

/// Samples with one label each: `{name="value"}` and the count.
fn labelled<V: std::fmt::Display>(name: &str, samples: impl IntoIterator<Item = (V, u64)>) -> Vec<(String, u64)> {
    samples.into_iter().map(|(v, n)| (format!("{{{name}=\"{v}\"}}"), n)).collect()
}

fn borrowed(samples: &[(String, u64)]) -> Vec<(&str, u64)> {
    samples.iter().map(|(l, n)| (l.as_str(), *n)).collect()
}

fn render_turns(turns: &TurnHistogram, text: &mut String) {
    let name = "ws_relay_loop_turn_seconds";
    let _ = writeln!(text, "# HELP {name} Duration of event-loop turns, from wake-up to the last write.");
    let _ = writeln!(text, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, count) in turns.counts[..BUCKETS].iter().enumerate() {
        cumulative += count;
        let bound = (1u64 << i) as f64 / 1e6;
        let _ = writeln!(text, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(text, "{name}_bucket{{le=\"+Inf\"}} {}", turns.count());
    let _ = writeln!(text, "{name}_sum {}", turns.sum_nanos as f64 / 1e9);
    let _ = writeln!(text, "{name}_count {}", turns.count());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_of(d: Duration) -> usize {
        let mut h = TurnHistogram::default();
        h.record(d);
        h.counts.iter().position(|&c| c == 1).unwrap()
    }

    #[test]
    fn samples_land_in_the_smallest_bucket_that_holds_them() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_nanos(1000)), 0);
        assert_eq!(bucket_of(Duration::from_nanos(1001)), 1);
        assert_eq!(bucket_of(Duration::from_micros(2)), 1);
        assert_eq!(bucket_of(Duration::from_micros(3)), 2);
        assert_eq!(bucket_of(Duration::from_micros(1 << 20)), 20);
        assert_eq!(bucket_of(Duration::from_secs(2)), BUCKETS);
        assert_eq!(bucket_of(Duration::MAX), BUCKETS);
    }

    #[test]
    fn histogram_is_cumulative_and_sums_in_seconds() {
        let mut turns = TurnHistogram::default();
        for us in [1, 3, 3, 5_000_000] {
            turns.record(Duration::from_micros(us));
        }
        let mut out = Vec::new();
        let process = ProcessInfo::default();
        render(&[Snapshot { shard: 0, stats: Stats::default(), gauges: Gauges::default(), turns, process }], &mut out);
        let text = String::from_utf8(out).unwrap();
        for line in [
            "ws_relay_loop_turn_seconds_bucket{le=\"0.000001\"} 1",
            "ws_relay_loop_turn_seconds_bucket{le=\"0.000002\"} 1",
            "ws_relay_loop_turn_seconds_bucket{le=\"0.000004\"} 3",
            "ws_relay_loop_turn_seconds_bucket{le=\"1.048576\"} 3",
            "ws_relay_loop_turn_seconds_bucket{le=\"+Inf\"} 4",
            "ws_relay_loop_turn_seconds_sum 5.000007",
            "ws_relay_loop_turn_seconds_count 4",
            "ws_relay_handshakes_rejected_total{status=\"503\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_status_and_close_reason_has_its_series() {
        let mut out = Vec::new();
        let (stats, gauges, turns) = (Stats::default(), Gauges::default(), TurnHistogram::default());
        let process = ProcessInfo { start_time: 1_800_000_000.25, takeovers: 3 };
        render(&[Snapshot { shard: 0, stats, gauges, turns, process }], &mut out);
        let text = String::from_utf8(out).unwrap();
        for line in ["ws_relay_takeovers_total 3", "process_start_time_seconds 1800000000.250"] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        for kind in CloseKind::ALL {
            let line = format!("ws_relay_closes_total{{reason=\"{}\"}} 0", kind.label());
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        for status in Status::ALL.iter().filter(|s| s.code() != 200) {
            let line = format!("ws_relay_handshakes_rejected_total{{status=\"{}\"}} 0", status.code());
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }
}
