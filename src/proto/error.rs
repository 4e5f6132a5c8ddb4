//! The core's errors, one type per layer, each carrying the answer the peer gets:
//! [`HandshakeError`] an HTTP status, [`ProtocolError`] (framing) and
//! [`RelayError`] (the relay's message format) a WebSocket close code.
//! [`ConfigError`](super::ConfigError) is the caller's mistake, not the peer's.

use std::fmt;

use super::http::Status;

/// Why an HTTP upgrade request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request head could not be parsed as HTTP/1.1: refused as soon as
    /// the request line shows it.
    Malformed,
    /// A TLS ClientHello on the plain port: closed without an answer, which
    /// a TLS client could not read.
    TlsOnPlainPort,
    /// A PROXY protocol header was required and missing or malformed.
    BadProxyHeader,
    /// The client's address has as many clients as `max_clients_per_ip` allows.
    TooManyFromAddress,
    /// The client sent more than its output bound's worth while its upgrade
    /// waited for the admission verdict.
    TooEarly,
    /// The request head grew past the configured size or header count.
    HeadTooLarge,
    /// The request line's target is longer than allowed.
    TargetTooLong,
    /// The method is not GET.
    MethodNotAllowed,
    /// HTTP/1.0 or older: an upgrade needs HTTP/1.1.
    OldHttpVersion,
    /// No Host header.
    MissingHost,
    /// A body was announced (Content-Length or Transfer-Encoding) on a GET.
    UnexpectedBody,
    /// Upgrade or Connection headers do not ask for a WebSocket.
    NotWebSocket,
    /// Sec-WebSocket-Version is missing or not 13.
    UnsupportedVersion,
    /// Sec-WebSocket-Key is missing or not 16 bytes in base64.
    BadKey,
    /// A `ws-relay.session.<key>` subprotocol whose key is not 22 to 64
    /// base64url characters, or more than one.
    BadSessionKey,
    /// A `Sec-WebSocket-Extensions` header that is not an extension list
    /// (RFC 6455 §9.1), with permessage-deflate on.
    BadExtensions,
    /// A plain HTTP request for a path the relay does not serve.
    NotFound,
    /// The client did not finish its request in time.
    Timeout,
    /// The relay is shutting down.
    ShuttingDown,
    /// The page's Origin is not on the allow-list.
    ForbiddenOrigin,
    /// The relay holds as many clients as it may.
    ServerFull,
    /// The room holds as many clients as it may.
    RoomFull,
    /// The relay holds as many rooms as it may, and this one is new.
    TooManyRooms,
    /// Newer connections arrived while this one was the oldest still sending
    /// its request, with the configured number of requests in progress.
    TooManyHandshakes,
}

impl HandshakeError {
    /// The HTTP status this error is answered with (and counted under).
    pub fn http_status(self) -> u16 {
        self.status().code()
    }

    pub(crate) fn status(self) -> Status {
        match self {
            Self::Malformed
            | Self::TlsOnPlainPort
            | Self::BadProxyHeader
            | Self::TooEarly
            | Self::OldHttpVersion
            | Self::MissingHost
            | Self::UnexpectedBody
            | Self::BadKey
            | Self::BadSessionKey
            | Self::BadExtensions => Status::BadRequest,
            Self::HeadTooLarge => Status::HeaderFieldsTooLarge,
            Self::TargetTooLong => Status::UriTooLong,
            Self::MethodNotAllowed => Status::MethodNotAllowed,
            Self::NotWebSocket | Self::UnsupportedVersion => Status::UpgradeRequired,
            Self::NotFound => Status::NotFound,
            Self::ForbiddenOrigin => Status::Forbidden,
            Self::Timeout => Status::RequestTimeout,
            Self::ShuttingDown
            | Self::ServerFull
            | Self::RoomFull
            | Self::TooManyRooms
            | Self::TooManyHandshakes
            | Self::TooManyFromAddress => Status::ServiceUnavailable,
        }
    }

    /// False when the client could not read an HTTP answer anyway.
    pub(crate) fn is_answered(self) -> bool {
        self != Self::TlsOnPlainPort
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed HTTP request",
            Self::TlsOnPlainPort => "TLS on the plain-text port",
            Self::BadProxyHeader => "missing or malformed PROXY protocol header",
            Self::TooManyFromAddress => "too many clients from this address",
            Self::TooEarly => "sent too much before its upgrade was answered",
            Self::HeadTooLarge => "request header fields too large",
            Self::TargetTooLong => "request target too long",
            Self::MethodNotAllowed => "only GET can upgrade to a WebSocket",
            Self::OldHttpVersion => "a WebSocket upgrade needs HTTP/1.1",
            Self::MissingHost => "missing Host header",
            Self::UnexpectedBody => "an upgrade request must not carry a body",
            Self::NotWebSocket => "this is a WebSocket relay: send Upgrade: websocket",
            Self::UnsupportedVersion => "only WebSocket version 13 is supported",
            Self::BadKey => "Sec-WebSocket-Key must be 16 bytes in base64",
            Self::BadSessionKey => "a session key is one ws-relay.session.<key> of 22 to 64 base64url characters",
            Self::BadExtensions => "Sec-WebSocket-Extensions is not an extension list (RFC 6455 section 9.1)",
            Self::NotFound => "not found",
            Self::Timeout => "request timeout",
            Self::ShuttingDown => "shutting down",
            Self::ForbiddenOrigin => "origin not allowed",
            Self::ServerFull => "server full",
            Self::RoomFull => "room full",
            Self::TooManyRooms => "too many rooms",
            Self::TooManyHandshakes => "too many requests in progress",
        })
    }
}

impl std::error::Error for HandshakeError {}

/// A breach of RFC 6455 by the peer, fatal to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An RSV bit is set that no negotiated extension gives a meaning: RSV2
    /// or RSV3, RSV1 without permessage-deflate, or RSV1 on a control frame
    /// or a continuation.
    ReservedBits,
    /// The opcode is one RFC 6455 reserves.
    ReservedOpcode,
    /// A length was not written in its shortest form.
    NonMinimalLength,
    /// A 64-bit length has its most significant bit set.
    LengthHighBit,
    /// A client frame arrived without a mask.
    UnmaskedFrame,
    /// A control frame had FIN clear.
    FragmentedControl,
    /// A control frame carried more than 125 bytes.
    ControlTooLong,
    /// A continuation frame arrived with no message in progress.
    UnexpectedContinuation,
    /// A new data frame arrived while a fragmented message was in progress.
    ExpectedContinuation,
    /// A close frame carried a one-byte payload.
    CloseTooShort,
    /// A close frame carried a code that may not be sent.
    InvalidCloseCode,
    /// A close frame's reason is not UTF-8.
    InvalidCloseReason,
    /// A text message is not UTF-8.
    InvalidUtf8,
    /// A message would exceed the configured maximum size.
    MessageTooBig,
    /// A message was split into more fragments than allowed.
    TooManyFragments,
    /// A compressed message (permessage-deflate) is not valid DEFLATE data.
    BadCompressedData,
}

impl ProtocolError {
    /// The close code this error is answered with.
    pub fn close_code(self) -> u16 {
        match self {
            // RFC 6455 §7.4.1: data not consistent with the message's type.
            Self::InvalidUtf8 | Self::InvalidCloseReason | Self::BadCompressedData => 1007,
            Self::MessageTooBig | Self::TooManyFragments => 1009,
            _ => 1002,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ReservedBits => "reserved bits set",
            Self::ReservedOpcode => "reserved opcode",
            Self::NonMinimalLength => "length not minimally encoded",
            Self::LengthHighBit => "64-bit length with the high bit set",
            Self::UnmaskedFrame => "client frames must be masked",
            Self::FragmentedControl => "fragmented control frame",
            Self::ControlTooLong => "control frame longer than 125 bytes",
            Self::UnexpectedContinuation => "continuation frame without a message",
            Self::ExpectedContinuation => "new message before the last one ended",
            Self::CloseTooShort => "close frame with a one-byte payload",
            Self::InvalidCloseCode => "invalid close code",
            Self::InvalidCloseReason => "close reason is not UTF-8",
            Self::InvalidUtf8 => "text message is not UTF-8",
            Self::MessageTooBig => "message too big",
            Self::TooManyFragments => "too many fragments",
            Self::BadCompressedData => "compressed message is not valid DEFLATE data",
        })
    }
}

impl std::error::Error for ProtocolError {}

/// A well-formed WebSocket message the relay refuses: it breaks the
/// `<target> <rest>` format, or arrives faster than flood control allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// The message is empty or only whitespace.
    MissingTarget,
    /// The target is neither `*` nor a decimal id.
    InvalidTarget,
    /// Nothing follows the target.
    EmptyMessage,
    /// The message type is `self`, `join`, `quit` or `resume`, which only the relay sends.
    ReservedType,
    /// The client sends faster than flood control allows.
    RateLimited,
}

impl RelayError {
    /// The close code this error is answered with: policy violation.
    pub fn close_code(self) -> u16 {
        1008
    }
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingTarget => "message has no target: send `<id|*> <msgtype> [data]`",
            Self::InvalidTarget => "target must be `*` or a decimal client id",
            Self::EmptyMessage => "message has nothing after the target",
            Self::ReservedType => "self, join, quit and resume are sent by the relay only",
            Self::RateLimited => "rate limit exceeded",
        })
    }
}

impl std::error::Error for RelayError {}

impl HandshakeError {
    /// Every variant, for the exported state, which names one by its place here.
    pub(crate) const ALL: &'static [HandshakeError] = &[
        Self::Malformed,
        Self::TlsOnPlainPort,
        Self::BadProxyHeader,
        Self::TooManyFromAddress,
        Self::TooEarly,
        Self::HeadTooLarge,
        Self::TargetTooLong,
        Self::MethodNotAllowed,
        Self::OldHttpVersion,
        Self::MissingHost,
        Self::UnexpectedBody,
        Self::NotWebSocket,
        Self::UnsupportedVersion,
        Self::BadKey,
        Self::NotFound,
        Self::Timeout,
        Self::ShuttingDown,
        Self::ForbiddenOrigin,
        Self::ServerFull,
        Self::RoomFull,
        Self::TooManyRooms,
        Self::TooManyHandshakes,
        // New variants go last: the state format names a variant by its place here.
        Self::BadSessionKey,
        Self::BadExtensions,
    ];
}

impl ProtocolError {
    /// Every variant, for the exported state, which names one by its place here.
    pub(crate) const ALL: &'static [ProtocolError] = &[
        Self::ReservedBits,
        Self::ReservedOpcode,
        Self::NonMinimalLength,
        Self::LengthHighBit,
        Self::UnmaskedFrame,
        Self::FragmentedControl,
        Self::ControlTooLong,
        Self::UnexpectedContinuation,
        Self::ExpectedContinuation,
        Self::CloseTooShort,
        Self::InvalidCloseCode,
        Self::InvalidCloseReason,
        Self::InvalidUtf8,
        Self::MessageTooBig,
        Self::TooManyFragments,
        // New variants go last: the state format names a variant by its place here.
        Self::BadCompressedData,
    ];
}

impl RelayError {
    /// Every variant, for the exported state, which names one by its place here.
    pub(crate) const ALL: &'static [RelayError] =
        &[Self::MissingTarget, Self::InvalidTarget, Self::EmptyMessage, Self::ReservedType, Self::RateLimited];
}
