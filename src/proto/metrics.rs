//! The relay's counters in the Prometheus text exposition format (version
//! 0.0.4), and the measurements only a driver can make: how long its event
//! loop turns take and what it dropped for clients that stopped reading. The
//! driver passes those in as numbers, so the core still reads no clock.

use std::fmt::Write;
use std::time::Duration;

use super::stats::Stats;

/// Upper bounds of the turn-duration buckets in microseconds: powers of two
/// from 1 µs to about a second, one `leading_zeros` to place a sample.
const BUCKETS: usize = 21;

/// Event-loop turn durations, bucketed as Prometheus expects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnHistogram {
    /// Samples per bucket, not cumulative; the last counts those above every bound.
    counts: [u64; BUCKETS + 1],
    sum_nanos: u128,
}

impl TurnHistogram {
    /// Counts one turn.
    pub fn record(&mut self, turn: Duration) {
        let nanos = turn.as_nanos();
        let micros = u64::try_from(nanos.div_ceil(1000)).unwrap_or(u64::MAX);
        let bucket = if micros <= 1 { 0 } else { (64 - (micros - 1).leading_zeros()) as usize };
        self.counts[bucket.min(BUCKETS)] += 1;
        self.sum_nanos += nanos;
    }

    /// Turns counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What the driver measured and reports to the core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverMetrics {
    /// How long each event-loop turn took, from wake-up to the last write.
    pub turns: TurnHistogram,
    /// Messages not queued to a client because it had passed its output bound.
    pub dropped_slow_consumer: u64,
}

/// The core's gauges at the moment of a scrape.
#[derive(Clone, Copy, Debug)]
pub struct Gauges {
    /// Transport connections in any phase.
    pub connections: usize,
    /// Connections still sending their HTTP request.
    pub handshakes: usize,
    /// Upgraded clients.
    pub clients: usize,
    /// Rooms with clients.
    pub rooms: usize,
    /// Bytes handed to the driver to send, responses and frames alike.
    pub bytes_sent: u64,
}

/// Every HTTP status the relay refuses with, so each series exists from the start.
const STATUSES: [u16; 9] = [400, 403, 404, 405, 408, 414, 426, 431, 503];

/// Appends the exposition text for these values to `out`.
pub fn render(stats: &Stats, gauges: Gauges, driver: &DriverMetrics, out: &mut Vec<u8>) {
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
    metric("ws_relay_rooms", "gauge", "Rooms with at least one client.", &[("", gauges.rooms as u64)]);
    metric(
        "ws_relay_connections_accepted_total",
        "counter",
        "Transport connections accepted.",
        &[("", stats.connections)],
    );
    metric("ws_relay_upgrades_total", "counter", "WebSocket upgrades completed.", &[("", stats.upgrades)]);
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
            ("{reason=\"slow_consumer\"}", driver.dropped_slow_consumer),
        ],
    );
    metric("ws_relay_received_bytes_total", "counter", "Bytes read from clients.", &[("", stats.bytes_received)]);
    metric("ws_relay_sent_bytes_total", "counter", "Bytes queued for clients.", &[("", gauges.bytes_sent)]);
    let closes = labelled("reason", stats.closes.by_reason());
    metric("ws_relay_closes_total", "counter", "Connections ended, by reason.", &borrowed(&closes));
    let refused = labelled("status", STATUSES.map(|s| (s, stats.refused.get(&s).copied().unwrap_or(0))));
    let help = "HTTP requests refused, by response status.";
    metric("ws_relay_handshakes_rejected_total", "counter", help, &borrowed(&refused));
    render_turns(&driver.turns, &mut text);
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
        let mut driver = DriverMetrics::default();
        for us in [1, 3, 3, 5_000_000] {
            driver.turns.record(Duration::from_micros(us));
        }
        let gauges = Gauges { connections: 0, handshakes: 0, clients: 0, rooms: 0, bytes_sent: 0 };
        let mut out = Vec::new();
        render(&Stats::default(), gauges, &driver, &mut out);
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
}
