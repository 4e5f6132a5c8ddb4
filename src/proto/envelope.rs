//! The relay's message format: `<target> <rest>` from clients, `<source> <rest>`
//! to them.

use super::error::RelayError;

/// Where a client message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `*`: every other client in the room.
    All,
    /// One client, by the id the relay gave it.
    Id(u64),
    /// Decimal, but not as the relay spells ids (sign, leading zero, zero, too
    /// large): no client can have it, so the message is dropped and counted.
    Nobody,
}

/// ASCII whitespace as the protocol counts it: space, tab, LF, VT, FF, CR.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r')
}

/// Splits a client message into its target and the rest, verbatim after the
/// whitespace that follows the target.
pub(crate) fn parse(msg: &[u8]) -> Result<(Target, &[u8]), RelayError> {
    let start = msg.iter().position(|&b| !is_space(b)).ok_or(RelayError::MissingTarget)?;
    let msg = &msg[start..];
    let end = msg.iter().position(|&b| is_space(b)).unwrap_or(msg.len());
    let (token, after) = msg.split_at(end);
    let rest_at = after.iter().position(|&b| !is_space(b)).unwrap_or(after.len());
    let target = parse_target(token)?;
    let rest = &after[rest_at..];
    if rest.is_empty() {
        return Err(RelayError::EmptyMessage);
    }
    // The relay's own notices would otherwise let any player fake another's arrival or departure.
    let msgtype = &rest[..rest.iter().position(|&b| is_space(b)).unwrap_or(rest.len())];
    if matches!(msgtype, b"self" | b"join" | b"quit" | b"resume") {
        return Err(RelayError::ReservedType);
    }
    Ok((target, rest))
}

/// Splits a binary client message into its target and its payload: the
/// target, one ASCII space, then every byte after it as sent — empty,
/// starting with whitespace or with any word. The relay never sends binary
/// notices, so there is nothing for a payload to spoof.
pub(crate) fn parse_binary(msg: &[u8]) -> Result<(Target, &[u8]), RelayError> {
    let space = msg.iter().position(|&b| b == b' ').ok_or(RelayError::MissingTarget)?;
    Ok((parse_target(&msg[..space])?, &msg[space + 1..]))
}

fn parse_target(token: &[u8]) -> Result<Target, RelayError> {
    if token == b"*" {
        return Ok(Target::All);
    }
    let digits = match token {
        [b'+' | b'-', rest @ ..] => rest,
        _ => token,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RelayError::InvalidTarget);
    }
    if digits.len() != token.len() || token[0] == b'0' {
        return Ok(Target::Nobody);
    }
    // All ASCII digits, checked above; only overflow can fail.
    let id = std::str::from_utf8(token).ok().and_then(|s| s.parse().ok());
    Ok(id.map_or(Target::Nobody, Target::Id))
}

/// Writes `id` in decimal into `buf`, returning the digits.
pub(crate) fn format_id(id: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = id;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn binary_payloads_are_every_byte_after_one_space() {
        use super::{parse_binary, Target};
        use crate::proto::error::RelayError;
        assert_eq!(parse_binary(b"* "), Ok((Target::All, &b""[..])));
        assert_eq!(parse_binary(b"2  \tspaced"), Ok((Target::Id(2), &b" \tspaced"[..])));
        assert_eq!(parse_binary(b"* self"), Ok((Target::All, &b"self"[..])));
        assert_eq!(parse_binary(b"7 \x00\xff"), Ok((Target::Id(7), &b"\x00\xff"[..])));
        assert_eq!(parse_binary(b"*"), Err(RelayError::MissingTarget));
        assert_eq!(parse_binary(b" * x"), Err(RelayError::InvalidTarget));
        assert_eq!(parse_binary(b"\t2 x"), Err(RelayError::InvalidTarget));
        assert_eq!(parse_binary(b"01 x"), Ok((Target::Nobody, &b"x"[..])));
    }

    use super::*;

    #[test]
    fn splits_target_and_rest() {
        assert_eq!(parse(b"2 hello"), Ok((Target::Id(2), &b"hello"[..])));
        assert_eq!(parse(b" \t* report {\"x\": 1}  "), Ok((Target::All, &b"report {\"x\": 1}  "[..])));
        assert_eq!(parse(b"17\x0B\x0Coffer a\nb"), Ok((Target::Id(17), &b"offer a\nb"[..])));
    }

    #[test]
    fn spellings_no_client_has_are_nobody() {
        for t in ["0", "007", "+3", "-1", "99999999999999999999999"] {
            assert_eq!(parse(format!("{t} hi").as_bytes()), Ok((Target::Nobody, &b"hi"[..])), "{t}");
        }
    }

    #[test]
    fn malformed_messages_are_relay_errors() {
        assert_eq!(parse(b""), Err(RelayError::MissingTarget));
        assert_eq!(parse(b" \r\n"), Err(RelayError::MissingTarget));
        assert_eq!(parse(b"bob hi"), Err(RelayError::InvalidTarget));
        assert_eq!(parse(b"** hi"), Err(RelayError::InvalidTarget));
        assert_eq!(parse(b"+ hi"), Err(RelayError::InvalidTarget));
        assert_eq!(parse(b"3"), Err(RelayError::EmptyMessage));
        assert_eq!(parse(b"* \t "), Err(RelayError::EmptyMessage));
        assert_eq!(parse(b"* quit"), Err(RelayError::ReservedType));
        assert_eq!(parse(b"2 join now"), Err(RelayError::ReservedType));
        assert_eq!(parse(b"2 self"), Err(RelayError::ReservedType));
        assert_eq!(parse(b"2 selfie"), Ok((Target::Id(2), &b"selfie"[..])));
    }

    #[test]
    fn ids_format_in_decimal() {
        let mut buf = [0; 20];
        assert_eq!(format_id(0, &mut buf), b"0");
        assert_eq!(format_id(1907, &mut buf), b"1907");
        assert_eq!(format_id(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
