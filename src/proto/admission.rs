//! Who may enter a room is the embedder's decision, and may take I/O (a
//! database, a call to the game's servers): when admission is on, the core
//! hands the driver each upgrade as an [`Admission`] and waits, without
//! blocking anything else, for its [`Verdict`].

use std::net::SocketAddr;

use super::table::table_enum;

/// An upgrade waiting for the driver's verdict, from
/// [`Action::Admit`](crate::Action::Admit).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admission {
    /// The room it asks for: the request target, less a `token` query parameter.
    pub room: Vec<u8>,
    /// The token it presented: the `ws-relay.token.<token>` subprotocol, else
    /// the `token` query parameter.
    pub token: Option<String>,
    /// Its `Origin` header.
    pub origin: Option<Vec<u8>>,
    /// The client's address, if the driver gave it (or a PROXY header named it).
    pub peer: Option<SocketAddr>,
}

/// The driver's answer to an [`Admission`], through
/// [`Relay::handle_admission`](crate::Relay::handle_admission).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Let it in; `subject` (an account id, at most 128 bytes) stays with the
    /// member for the server API's presence and disconnect.
    Accept {
        /// Who the client is, to the game's backend.
        subject: Option<String>,
    },
    /// Keep it out. Browsers cannot read the status of a refused upgrade, so
    /// the upgrade completes and the connection closes at once with the
    /// refusal's code and reason; it never joins, and nobody hears of it.
    Refuse(Refusal),
}

table_enum! {
    /// Why an upgrade was kept out: its close code, its label on `/metrics`
    /// (`ws_relay_admission_refusals_total{cause}`) and the close reason.
    #[non_exhaustive]
    pub enum Refusal: (u16, &'static str, &'static str) {
        /// No token was presented.
        TokenMissing => (4401, "token_missing", "a token is required"),
        /// The token is not a well-formed HS256 JWT with the claims it must have.
        TokenMalformed => (4401, "token_malformed", "malformed token"),
        /// The token's signature does not verify with any configured secret.
        TokenBadSignature => (4401, "token_bad_signature", "bad token signature"),
        /// The token's `exp` has passed.
        TokenExpired => (4401, "token_expired", "token expired"),
        /// The token's `nbf` has not come yet.
        TokenNotYetValid => (4401, "token_not_yet_valid", "token not yet valid"),
        /// The token is valid, but its `room` or `room_prefix` does not name this room.
        WrongRoom => (4403, "wrong_room", "token not valid for this room"),
        /// The embedder said no, for reasons of its own.
        Denied => (4403, "denied", "not admitted"),
    }
}

impl Refusal {
    /// The close code: 4401 for a missing or invalid token, 4403 for one that
    /// does not open this room.
    pub fn close_code(self) -> u16 {
        self.row().0
    }

    /// The label it is counted under on `/metrics`.
    pub fn label(self) -> &'static str {
        self.row().1
    }

    /// The close frame's reason.
    pub fn reason(self) -> &'static str {
        self.row().2
    }
}

/// The longest subject kept with a member.
pub(crate) const MAX_SUBJECT: usize = 128;

/// `target` without its `token` query parameters, the other parameters kept
/// byte for byte and in order, and the first token's value:
/// `/game?token=A&g=1`, `/game?g=1&token=B` and `/game?g=1` name one room.
pub(crate) fn take_query_token(target: &[u8]) -> (Vec<u8>, Option<String>) {
    let Some(q) = target.iter().position(|&b| b == b'?') else { return (target.to_vec(), None) };
    let (path, query) = (&target[..q], &target[q + 1..]);
    let mut room = path.to_vec();
    let mut token = None;
    let mut first = true;
    for param in query.split(|&b| b == b'&') {
        if let Some(value) = param.strip_prefix(b"token=") {
            token = token.or_else(|| String::from_utf8(value.to_vec()).ok());
            continue;
        }
        if param == b"token" {
            continue;
        }
        room.push(if first { b'?' } else { b'&' });
        room.extend_from_slice(param);
        first = false;
    }
    (room, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_parameter_does_not_name_the_room() {
        let cases: [(&[u8], &[u8], Option<&str>); 6] = [
            (b"/game?token=A&g=1", b"/game?g=1", Some("A")),
            (b"/game?g=1&token=B", b"/game?g=1", Some("B")),
            (b"/game?g=1", b"/game?g=1", None),
            (b"/game?token=C", b"/game", Some("C")),
            (b"/game?a=1&token=D&b=2&token=E", b"/game?a=1&b=2", Some("D")),
            (b"/game?tokens=1&mytoken=2", b"/game?tokens=1&mytoken=2", None),
        ];
        for (target, room, token) in cases {
            assert_eq!(take_query_token(target), (room.to_vec(), token.map(String::from)), "{target:?}");
        }
        for r in Refusal::ALL {
            assert!(matches!(r.close_code(), 4401 | 4403) && r.reason().len() <= 123);
        }
    }
}
