//! Results, and the CPU and memory readings that go with them.

use hdrhistogram::Histogram;

/// One measured run at one rate.
pub struct Step {
    /// Messages per second per client.
    pub rate: f64,
    /// Clients sending.
    pub clients: usize,
    /// Messages sent in the measurement window.
    pub sent: u64,
    /// Deliveries those messages should make.
    pub expected: u64,
    /// Deliveries of them that arrived.
    pub delivered: u64,
    /// Deliveries received over the whole run, warmup included.
    pub delivered_total: u64,
    /// Fraction of expected deliveries that did not arrive.
    pub loss: f64,
    /// Latency from scheduled send to receipt, in microseconds.
    pub latency: Histogram<u64>,
    /// Length of the measurement window in seconds.
    pub seconds: f64,
    /// CPU time of the relay over the whole run, if its pid was given.
    pub relay_cpu_s: Option<f64>,
    /// CPU time of the processes in front of it (`--proxy-pid`), if any.
    pub proxy_cpu_s: Option<f64>,
    /// CPU time of this tool over the whole run.
    pub tool_cpu_s: Option<f64>,
    /// Wall time of the whole run (warmup, window, grace) in seconds.
    pub wall_s: f64,
    /// Messages sent over the whole run, warmup included.
    pub sent_total: u64,
    /// WebSocket bytes read and written over the whole run (inside TLS).
    pub wire_in: u64,
    pub wire_out: u64,
    /// Messages that arrived compressed (permessage-deflate).
    pub compressed: u64,
}

impl Step {
    /// p99 latency in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// Relay CPU microseconds per delivered message.
    fn relay_us_per_delivery(&self) -> Option<f64> {
        let cpu = self.relay_cpu_s?;
        (self.delivered_total > 0).then(|| cpu * 1e6 / self.delivered_total as f64)
    }

    /// Relay and proxy CPU microseconds per delivered message: the server
    /// side's cost, whichever process terminates TLS.
    fn server_us_per_delivery(&self) -> Option<f64> {
        let cpu = self.relay_cpu_s? + self.proxy_cpu_s.unwrap_or(0.0);
        (self.delivered_total > 0).then(|| cpu * 1e6 / self.delivered_total as f64)
    }

    /// Prints the step as text or as one JSON line.
    pub fn print(&self, json: bool, label: &str) {
        let per_s = self.delivered as f64 / self.seconds;
        let cpu_per = self.relay_us_per_delivery();
        let server_per = self.server_us_per_delivery();
        let tool_share = self.tool_cpu_s.map(|c| 100.0 * c / self.wall_s);
        let wire_per_delivery = self.wire_in as f64 / self.delivered_total.max(1) as f64;
        let wire_per_send = self.wire_out as f64 / self.sent_total.max(1) as f64;
        if json {
            println!(
                "{{\"mode\":\"{label}\",\"rate_hz\":{:.2},\"clients\":{},\"sent\":{},\"expected\":{},\"delivered\":{},\"deliveries_per_s\":{per_s:.0},\"loss\":{:.6},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"relay_cpu_s\":{},\"relay_us_per_delivery\":{},\"proxy_cpu_s\":{},\"server_us_per_delivery\":{},\"tool_cpu_s\":{},\"tool_cpu_percent\":{},\"compressed\":{},\"wire_bytes_per_delivery\":{wire_per_delivery:.1},\"wire_bytes_per_send\":{wire_per_send:.1}}}",
                self.rate,
                self.clients,
                self.sent,
                self.expected,
                self.delivered,
                self.loss,
                self.ms(0.5),
                self.ms(0.99),
                self.ms(0.999),
                self.latency.max() as f64 / 1000.0,
                json_num(self.relay_cpu_s),
                json_num(cpu_per),
                json_num(self.proxy_cpu_s),
                json_num(server_per),
                json_num(self.tool_cpu_s),
                json_num(tool_share),
                self.compressed,
            );
        } else {
            println!(
                "{label}: {} clients × {:.1} Hz: {} of {} delivered ({per_s:.0}/s, loss {:.3}%), latency p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms max {:.3} ms; relay {} µs CPU/delivery{}; {wire_per_delivery:.1} B on the wire per delivery{}; tool CPU {}%",
                self.clients,
                self.rate,
                self.delivered,
                self.expected,
                self.loss * 100.0,
                self.ms(0.5),
                self.ms(0.99),
                self.ms(0.999),
                self.latency.max() as f64 / 1000.0,
                cpu_per.map_or("?".into(), |v| format!("{v:.2}")),
                match (self.proxy_cpu_s, server_per) {
                    (Some(_), Some(v)) => format!(", with the proxy {v:.2}"),
                    _ => String::new(),
                },
                match self.compressed {
                    0 => String::new(),
                    n => format!(" ({n} compressed), {wire_per_send:.1} per report sent"),
                },
                tool_share.map_or("?".into(), |v| format!("{v:.0}")),
            );
        }
    }
}

fn json_num(v: Option<f64>) -> String {
    v.map_or_else(|| "null".into(), |v| format!("{v:.4}"))
}

/// CPU time (user + system) in seconds of `pid`, or of this process.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name, which may itself hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks of USER_HZ, which is 100 on every mainstream architecture.
    Some((utime + stime) / 100.0)
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
