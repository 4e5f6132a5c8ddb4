//! Counters the core keeps as it goes, for logs and metrics.

use std::fmt;

use super::action::{CloseKind, CloseReason};
use super::admission::Refusal;
use super::http::Status;
use super::state::{ImportError, Reader, Writer};
use super::table::table_enum;

/// Running totals since the core started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections handed to the core.
    pub connections: u64,
    /// Upgrades completed.
    pub upgrades: u64,
    /// Data messages received from clients.
    pub messages_received: u64,
    /// Copies of messages queued to recipients, notices included.
    pub deliveries: u64,
    /// Messages addressed to an id no client in the room has.
    pub undeliverable: u64,
    /// Messages not queued because their recipient had passed its output bound.
    pub dropped_slow_consumer: u64,
    /// Bytes received from clients.
    pub bytes_received: u64,
    /// Bytes the driver reported written to clients.
    pub bytes_sent: u64,
    /// Upgrades handed to the shard that serves their room.
    pub handoffs: u64,
    /// Upgrades admission let in.
    pub admitted: u64,
    /// Server API calls, answered or refused.
    pub api_calls: u64,
    /// Sessions taken back by a new connection within the resume window.
    pub resumes: u64,
    /// Parked sessions whose window passed: their seat went.
    pub sessions_expired: u64,
    /// Messages the relay compressed (permessage-deflate): one per message
    /// and window size, however many recipients share it.
    pub compressions: u64,
    /// Payload bytes of the messages compressed and sent compressed.
    pub compressed_in: u64,
    /// What those payloads compressed to.
    pub compressed_out: u64,
    /// Compressed messages received from clients, and inflated.
    pub inflated: u64,
    closes: [u64; CloseKind::COUNT],
    refused: [u64; Status::COUNT],
    admission_refusals: [u64; Refusal::COUNT],
    tls_failures: [u64; TlsFailure::COUNT],
}

table_enum! {
    /// Why a TLS connection failed before its request, as its driver reports
    /// it ([`Relay::record_tls_failure`](crate::Relay::record_tls_failure)):
    /// the core sees only plaintext, and counts what the driver saw.
    #[non_exhaustive]
    pub enum TlsFailure: &'static str {
        /// The TLS handshake failed: a protocol error, no shared cipher, an alert.
        Handshake => "handshake",
        /// The TLS handshake was not done when the handshake timeout fired.
        Timeout => "timeout",
        /// Plain HTTP on the TLS port, answered with a plain 400.
        PlainHttp => "plain_http",
    }
}

impl TlsFailure {
    /// The label of `ws_relay_tls_failures_total`.
    pub fn label(self) -> &'static str {
        self.row()
    }
}

impl Stats {
    /// Connections ended for reasons of this kind.
    pub fn closes(&self, kind: CloseKind) -> u64 {
        self.closes[kind as usize]
    }

    /// Upgrades admission kept out for this reason.
    pub fn admission_refusals(&self, refusal: Refusal) -> u64 {
        self.admission_refusals[refusal as usize]
    }

    /// TLS connections that failed for this reason.
    pub fn tls_failures(&self, failure: TlsFailure) -> u64 {
        self.tls_failures[failure as usize]
    }

    pub(crate) fn count_tls_failure(&mut self, failure: TlsFailure) {
        self.tls_failures[failure as usize] += 1;
    }

    pub(crate) fn count_admission_refusal(&mut self, refusal: Refusal) {
        self.admission_refusals[refusal as usize] += 1;
    }

    /// Requests refused with this HTTP status.
    pub fn refused(&self, status: u16) -> u64 {
        Status::from_code(status).map_or(0, |s| self.refused[s as usize])
    }

    /// Every status requests were refused with, and how often, lowest first.
    pub fn refusals(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        Status::ALL.iter().map(|&s| (s.code(), self.refused[s as usize])).filter(|&(_, n)| n > 0)
    }

    /// Adds `other`'s counts to these: the totals of several shards.
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            connections,
            upgrades,
            messages_received,
            deliveries,
            undeliverable,
            dropped_slow_consumer,
            bytes_received,
            bytes_sent,
            handoffs,
            admitted,
            api_calls,
            resumes,
            sessions_expired,
            compressions,
            compressed_in,
            compressed_out,
            inflated,
            closes,
            refused,
            admission_refusals,
            tls_failures,
        } = other;
        self.connections += connections;
        self.upgrades += upgrades;
        self.messages_received += messages_received;
        self.deliveries += deliveries;
        self.undeliverable += undeliverable;
        self.dropped_slow_consumer += dropped_slow_consumer;
        self.bytes_received += bytes_received;
        self.bytes_sent += bytes_sent;
        self.handoffs += handoffs;
        self.admitted += admitted;
        self.api_calls += api_calls;
        self.resumes += resumes;
        self.sessions_expired += sessions_expired;
        self.compressions += compressions;
        self.compressed_in += compressed_in;
        self.compressed_out += compressed_out;
        self.inflated += inflated;
        self.admission_refusals.iter_mut().zip(admission_refusals).for_each(|(a, b)| *a += b);
        self.tls_failures.iter_mut().zip(tls_failures).for_each(|(a, b)| *a += b);
        self.closes.iter_mut().zip(closes).for_each(|(a, b)| *a += b);
        self.refused.iter_mut().zip(refused).for_each(|(a, b)| *a += b);
    }

    pub(crate) fn save(&self, w: &mut Writer) {
        for n in self.scalars() {
            w.u64(n);
        }
        for counts in [&self.closes[..], &self.refused[..], &self.admission_refusals[..], &self.tls_failures[..]] {
            w.len(counts.len());
            counts.iter().for_each(|&n| w.u64(n));
        }
    }

    /// The counters [`save`](Self::save) wrote. A table with more entries
    /// than this build knows (a newer build's) keeps the ones it knows.
    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        let mut s = Stats::default();
        let mut scalars = [0; 17];
        for n in &mut scalars {
            *n = r.u64()?;
        }
        [
            s.connections,
            s.upgrades,
            s.messages_received,
            s.deliveries,
            s.undeliverable,
            s.dropped_slow_consumer,
            s.bytes_received,
            s.bytes_sent,
            s.handoffs,
            s.admitted,
            s.api_calls,
            s.resumes,
            s.sessions_expired,
            s.compressions,
            s.compressed_in,
            s.compressed_out,
            s.inflated,
        ] = scalars;
        let tables = [&mut s.closes[..], &mut s.refused[..], &mut s.admission_refusals[..], &mut s.tls_failures[..]];
        for counts in tables {
            let n = r.index()?;
            for i in 0..n {
                let value = r.u64()?;
                if let Some(c) = counts.get_mut(i) {
                    *c = value;
                }
            }
        }
        Ok(s)
    }

    fn scalars(&self) -> [u64; 17] {
        [
            self.connections,
            self.upgrades,
            self.messages_received,
            self.deliveries,
            self.undeliverable,
            self.dropped_slow_consumer,
            self.bytes_received,
            self.bytes_sent,
            self.handoffs,
            self.admitted,
            self.api_calls,
            self.resumes,
            self.sessions_expired,
            self.compressions,
            self.compressed_in,
            self.compressed_out,
            self.inflated,
        ]
    }

    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        self.closes[reason.kind() as usize] += 1;
    }

    pub(crate) fn count_refusal(&mut self, status: Status) {
        self.refused[status as usize] += 1;
    }
}

/// One line for logs: `connections 12, upgrades 10, messages 300 received 2400 delivered ...`.
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections {}, upgrades {}, messages {} received {} delivered {} undeliverable {} dropped, \
             bytes {} in {} out; closes:",
            self.connections,
            self.upgrades,
            self.messages_received,
            self.deliveries,
            self.undeliverable,
            self.dropped_slow_consumer,
            self.bytes_received,
            self.bytes_sent
        )?;
        for &kind in CloseKind::ALL.iter().filter(|&&k| self.closes(k) > 0) {
            write!(f, " {}={}", kind.label(), self.closes(kind))?;
        }
        f.write_str("; refused:")?;
        for (status, n) in self.refusals() {
            write!(f, " {status}={n}")?;
        }
        Ok(())
    }
}
