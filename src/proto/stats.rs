//! Counters the core keeps as it goes, for logs and metrics.

use std::collections::BTreeMap;

use super::action::CloseReason;
use super::error::RelayError;

/// Running totals since the core started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// Bytes received from clients.
    pub bytes_received: u64,
    /// Connections ended, by reason.
    pub closes: CloseCounts,
    /// Refused HTTP requests, by the status they were answered with.
    pub refused: BTreeMap<u16, u64>,
}

/// Connections ended, one counter per kind of [`CloseReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloseCounts {
    /// The client sent a close frame.
    pub client_close: u64,
    /// The transport ended without one.
    pub transport_closed: u64,
    /// The client stopped reading.
    pub slow_consumer: u64,
    /// RFC 6455 was broken.
    pub protocol_error: u64,
    /// The relay format was broken.
    pub relay_error: u64,
    /// Flood control cut the client off.
    pub rate_limited: u64,
    /// The upgrade was refused.
    pub handshake_refused: u64,
    /// A plain HTTP request was answered.
    pub http_served: u64,
    /// A keepalive ping went unanswered.
    pub keepalive_timeout: u64,
    /// The relay shut down.
    pub shutdown: u64,
}

impl CloseCounts {
    /// Each counter with the name `/metrics` labels it with.
    pub fn by_reason(&self) -> [(&'static str, u64); 10] {
        [
            ("client_close", self.client_close),
            ("transport_closed", self.transport_closed),
            ("slow_consumer", self.slow_consumer),
            ("protocol_error", self.protocol_error),
            ("relay_error", self.relay_error),
            ("rate_limited", self.rate_limited),
            ("handshake_refused", self.handshake_refused),
            ("http_served", self.http_served),
            ("keepalive_timeout", self.keepalive_timeout),
            ("shutdown", self.shutdown),
        ]
    }

    /// Counts one close.
    pub fn add(&mut self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::ClientClose => &mut self.client_close,
            CloseReason::TransportClosed => &mut self.transport_closed,
            CloseReason::SlowConsumer => &mut self.slow_consumer,
            CloseReason::Protocol(_) => &mut self.protocol_error,
            CloseReason::Relay(RelayError::RateLimited) => &mut self.rate_limited,
            CloseReason::Relay(_) => &mut self.relay_error,
            CloseReason::Handshake(_) => &mut self.handshake_refused,
            CloseReason::HttpServed => &mut self.http_served,
            CloseReason::KeepaliveTimeout => &mut self.keepalive_timeout,
            CloseReason::Shutdown => &mut self.shutdown,
        };
        *counter += 1;
    }
}
