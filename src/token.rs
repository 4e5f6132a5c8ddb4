//! Signed tokens for admission: a game's backend mints a JWT (HS256) that
//! opens one room, or every room under a prefix, until it expires, and the
//! relay checks it on every upgrade ([`Verifier::verdict`] for an
//! [`Admission`]). Verification is pure: the caller passes the wall-clock
//! time in.
//!
//! A token is refused, with the [`Refusal`] that says why, when it is missing;
//! not three base64url parts; its header is not `{"alg":"HS256"}` (`none`,
//! any other algorithm, a `crit` extension); its signature matches no
//! configured secret; a claim has the wrong type (a string `exp`, a number
//! `room`) or `exp` is missing; it has expired or is not valid yet (both
//! with a leeway for clock skew); or its `room`/`room_prefix` does not open
//! the room asked for (4403).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::{Admission, Refusal, Verdict};

/// The longest `sub` a token may carry.
const MAX_SUBJECT: usize = 128;

/// The longest token looked at: far more than any real one, so a huge one
/// costs nothing to refuse.
const MAX_TOKEN: usize = 8 * 1024;

/// Checks HS256 tokens against a secret, and during a rotation the previous one.
#[derive(Clone)]
pub struct Verifier {
    secrets: Vec<Vec<u8>>,
    leeway: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({} secrets, leeway {:?})", self.secrets.len(), self.leeway)
    }
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: the player's account id.
    pub subject: Option<String>,
}

impl Verifier {
    /// A verifier accepting tokens signed with `secret` or, while a rotation
    /// lasts, `previous`; `exp` and `nbf` are judged `leeway` generously.
    pub fn new(secret: Vec<u8>, previous: Option<Vec<u8>>, leeway: Duration) -> Self {
        Self { secrets: std::iter::once(secret).chain(previous).collect(), leeway }
    }

    /// The verdict on `admission` at wall-clock time `now`.
    pub fn verdict(&self, admission: &Admission, now: SystemTime) -> Verdict {
        let unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        match self.check(admission.token.as_deref(), &admission.room, unix) {
            Ok(claims) => Verdict::Accept { subject: claims.subject },
            Err(refusal) => Verdict::Refuse(refusal),
        }
    }

    /// Checks `token` for `room` at `now` seconds since the Unix epoch.
    pub fn check(&self, token: Option<&str>, room: &[u8], now: f64) -> Result<Claims, Refusal> {
        let token = token.ok_or(Refusal::TokenMissing)?;
        let malformed = Refusal::TokenMalformed;
        if token.len() > MAX_TOKEN {
            return Err(malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed);
        };
        let header = object(header)?;
        if header.get("alg") != Some(&Value::String("HS256".into())) || header.contains_key("crit") {
            return Err(malformed);
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed)?;
        let signed = &token[..header_and_payload_len(token)];
        let valid = self.secrets.iter().any(|secret| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
            mac.update(signed.as_bytes());
            mac.verify_slice(&signature).is_ok()
        });
        if !valid {
            return Err(Refusal::TokenBadSignature);
        }
        let claims = object(payload)?;
        let number = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(malformed),
            Some(_) => Err(malformed),
        };
        let string = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(malformed),
        };
        let exp = number("exp")?.ok_or(malformed)?;
        let nbf = number("nbf")?;
        let (exact, prefix, subject) = (string("room")?, string("room_prefix")?, string("sub")?);
        if subject.is_some_and(|s| s.len() > MAX_SUBJECT) || (exact.is_some() && prefix.is_some()) {
            return Err(malformed);
        }
        let leeway = self.leeway.as_secs_f64();
        if now > exp + leeway {
            return Err(Refusal::TokenExpired);
        }
        if nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(Refusal::TokenNotYetValid);
        }
        let opens = match (exact, prefix) {
            (Some(exact), None) => exact.as_bytes() == room,
            (None, Some(prefix)) => room.starts_with(prefix.as_bytes()),
            _ => false,
        };
        if !opens {
            return Err(Refusal::WrongRoom);
        }
        Ok(Claims { subject: subject.map(String::from) })
    }
}

/// The length of `header.payload`, the signed part of a token with three parts.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

/// A base64url part that holds a JSON object.
fn object(part: &str) -> Result<Map<String, Value>, Refusal> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| Refusal::TokenMalformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Refusal::TokenMalformed),
    }
}

/// Mints an HS256 token with `claims` (a JSON object) signed with `secret`:
/// for tests, tools and backends written in Rust.
pub fn mint(claims: &Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Seconds since the Unix epoch now, for `exp` and `nbf`.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: f64 = 1_800_000_000.0;
    const SECRET: &[u8] = b"secret of the game's backend";

    fn verifier() -> Verifier {
        Verifier::new(SECRET.to_vec(), Some(b"last month's secret".to_vec()), Duration::from_secs(5))
    }

    fn forged(header: &str, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(header);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn valid_tokens_open_their_rooms() {
        let v = verifier();
        let t = mint(&json!({"exp": NOW + 60.0, "room": "/ws-relay/g?m=1", "sub": "alice"}), SECRET);
        assert_eq!(v.check(Some(&t), b"/ws-relay/g?m=1", NOW), Ok(Claims { subject: Some("alice".into()) }));
        assert_eq!(v.check(Some(&t), b"/ws-relay/g?m=2", NOW), Err(Refusal::WrongRoom));
        let t = mint(&json!({"exp": NOW + 60.0, "room_prefix": "/ws-relay/g?"}), SECRET);
        assert_eq!(v.check(Some(&t), b"/ws-relay/g?m=7", NOW), Ok(Claims { subject: None }));
        assert_eq!(v.check(Some(&t), b"/ws-relay/h", NOW), Err(Refusal::WrongRoom));
        // The previous secret still verifies during a rotation.
        let t = mint(&json!({"exp": NOW + 60.0, "room": "/r"}), b"last month's secret");
        assert!(v.check(Some(&t), b"/r", NOW).is_ok());
        let t = mint(&json!({"exp": NOW + 60.0, "room": "/r"}), b"an attacker's guess");
        assert_eq!(v.check(Some(&t), b"/r", NOW), Err(Refusal::TokenBadSignature));
        let t = mint(&json!({"exp": NOW + 60.0}), SECRET);
        assert_eq!(v.check(Some(&t), b"/r", NOW), Err(Refusal::WrongRoom), "a token that opens no room");
    }

    #[test]
    fn time_with_leeway() {
        let v = verifier();
        let t = mint(&json!({"exp": NOW, "nbf": NOW - 10.0, "room": "/r"}), SECRET);
        assert!(v.check(Some(&t), b"/r", NOW + 5.0).is_ok(), "within the leeway");
        assert_eq!(v.check(Some(&t), b"/r", NOW + 5.5), Err(Refusal::TokenExpired));
        let t = mint(&json!({"exp": NOW + 100.0, "nbf": NOW + 10.0, "room": "/r"}), SECRET);
        assert_eq!(v.check(Some(&t), b"/r", NOW), Err(Refusal::TokenNotYetValid));
        assert!(v.check(Some(&t), b"/r", NOW + 6.0).is_ok());
    }

    #[test]
    fn what_a_token_must_not_be() {
        let v = verifier();
        let good = json!({"exp": NOW + 60.0, "room": "/r"});
        let malformed = [
            "".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            forged(r#"{"alg":"none","typ":"JWT"}"#, &good),
            forged(r#"{"alg":"HS512"}"#, &good),
            forged(r#"{"alg":"RS256"}"#, &good),
            forged(r#"{"typ":"JWT"}"#, &good),
            forged(r#"{"alg":"HS256","crit":["exp"]}"#, &good),
            forged(r#"["HS256"]"#, &good),
            mint(&json!({"room": "/r"}), SECRET),
            mint(&json!({"exp": "1900000000", "room": "/r"}), SECRET),
            mint(&json!({"exp": NOW + 60.0, "room": 7}), SECRET),
            mint(&json!({"exp": NOW + 60.0, "nbf": true, "room": "/r"}), SECRET),
            mint(&json!({"exp": NOW + 60.0, "room": "/r", "sub": 12}), SECRET),
            mint(&json!({"exp": NOW + 60.0, "room": "/r", "sub": "x".repeat(129)}), SECRET),
            mint(&json!({"exp": NOW + 60.0, "room": "/r", "room_prefix": "/"}), SECRET),
            mint(&json!([1, 2]), SECRET),
        ];
        for token in malformed {
            assert_eq!(v.check(Some(&token), b"/r", NOW), Err(Refusal::TokenMalformed), "{token}");
        }
        // The signature of `alg: none` (empty) is refused before the header would matter.
        let none =
            format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(good.to_string()));
        assert_eq!(v.check(Some(&none), b"/r", NOW), Err(Refusal::TokenMalformed));
        assert_eq!(v.check(None, b"/r", NOW), Err(Refusal::TokenMissing));
        let mut tampered = mint(&good, SECRET);
        tampered.insert(tampered.find('.').unwrap() + 2, 'x');
        assert!(matches!(
            v.check(Some(&tampered), b"/r", NOW),
            Err(Refusal::TokenBadSignature | Refusal::TokenMalformed)
        ));
    }
}
