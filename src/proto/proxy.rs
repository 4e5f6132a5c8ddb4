//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load
//! balancer sends before the client's bytes, naming the client's real
//! address. Read only when the configuration says a proxy is in front, and
//! then required; never trusted otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::HandshakeError;

/// The twelve bytes every version 2 header starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 header, CRLF included (the specification's figure).
const V1_MAX: usize = 107;

/// The most address and TLV bytes a version 2 header may carry here: the
/// addresses and the TLVs HAProxy sends (ALPN, authority, unique id, SSL
/// details) fit many times over.
const V2_MAX_BODY: usize = 1024;

/// The longest header of either version.
pub(crate) const MAX_LEN: usize = 16 + V2_MAX_BODY;

/// What a complete header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proxied {
    /// The proxy's own connection (a health check): the socket's address stands.
    Local,
    /// A client's connection, from this address.
    From(SocketAddr),
}

/// Reads one PROXY header from the front of `buf`. `Ok(None)` means more
/// bytes are needed; otherwise the header and its length. Anything that can
/// no longer become a header is refused as soon as it shows.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Proxied, usize)>, HandshakeError> {
    let bad = HandshakeError::BadProxyHeader;
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() { Ok(None) } else { parse_v2(buf) };
    }
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Err(bad);
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX { Err(bad) } else { Ok(None) };
    };
    if end + 2 > V1_MAX {
        return Err(bad);
    }
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| bad)?;
    let mut fields = line.split(' ');
    let proxied = match fields.next() {
        // The proxy could not tell; the rest of the line is to be ignored.
        Some("UNKNOWN") => Proxied::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let (Some(src), Some(_dst), Some(port), Some(_dst_port), None) =
                (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad);
            };
            let ip: IpAddr = match family {
                "TCP4" => IpAddr::V4(src.parse().map_err(|_| bad)?),
                _ => IpAddr::V6(src.parse().map_err(|_| bad)?),
            };
            // Ports are decimal without a sign or leading zeros.
            if port.starts_with('0') && port != "0" || port.starts_with('+') {
                return Err(bad);
            }
            Proxied::From(SocketAddr::new(ip, port.parse().map_err(|_| bad)?))
        }
        _ => return Err(bad),
    };
    Ok(Some((proxied, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Proxied, usize)>, HandshakeError> {
    let bad = HandshakeError::BadProxyHeader;
    let Some(&[version_command, family, hi, lo]) = buf.get(12..16) else { return Ok(None) };
    if version_command >> 4 != 2 {
        return Err(bad);
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX_BODY {
        return Err(bad);
    }
    let Some(body) = buf.get(16..16 + len) else { return Ok(None) };
    let proxied = match (version_command & 0x0F, family) {
        // LOCAL: the proxy speaking for itself; the address block is to be ignored.
        (0, _) => Proxied::Local,
        // PROXY over TCP/IPv4 and TCP/IPv6.
        (1, 0x11) if len >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Proxied::From(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([body[8], body[9]])))
        }
        (1, 0x21) if len >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            Proxied::From(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([body[32], body[33]])))
        }
        // UNSPEC: an unknown protocol; the socket's address stands.
        (1, 0x00) => Proxied::Local,
        _ => return Err(bad),
    };
    Ok(Some((proxied, 16 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[0x20 | command, family]);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Every header is judged the same whole and a byte at a time.
    fn parse_split(buf: &[u8]) -> Result<Option<(Proxied, usize)>, HandshakeError> {
        let whole = parse(buf);
        for cut in 1..buf.len() {
            match parse(&buf[..cut]) {
                Ok(None) => {}
                Err(e) => {
                    assert_eq!(whole, Err(e), "refused at {cut} of {buf:?}");
                    return whole;
                }
                Ok(Some(early)) => {
                    assert_eq!(whole, Ok(Some(early)), "complete at {cut}");
                    return whole;
                }
            }
        }
        whole
    }

    #[test]
    fn version_1() {
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET /";
        let from = "203.0.113.7:56324".parse().unwrap();
        assert_eq!(parse_split(line), Ok(Some((Proxied::From(from), 44))));
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n";
        assert_eq!(parse_split(six), Ok(Some((Proxied::From("[2001:db8::1]:4000".parse().unwrap()), six.len()))));
        assert_eq!(parse_split(b"PROXY UNKNOWN whatever\r\n"), Ok(Some((Proxied::Local, 24))));
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 070000 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert_eq!(parse_split(bad), Err(HandshakeError::BadProxyHeader), "{:?}", String::from_utf8_lossy(bad));
        }
        let endless = [&b"PROXY TCP4 "[..], &[b'1'; 200]].concat();
        assert_eq!(parse(&endless), Err(HandshakeError::BadProxyHeader), "no CRLF within 107 bytes");
    }

    #[test]
    fn version_2() {
        let ipv4 = v2(1, 0x11, &[203, 0, 113, 7, 192, 0, 2, 1, 0xDC, 0x04, 0x01, 0xBB]);
        assert_eq!(parse_split(&ipv4), Ok(Some((Proxied::From("203.0.113.7:56324".parse().unwrap()), 28))));
        let mut body = [0u8; 36];
        body[15] = 1;
        body[32..34].copy_from_slice(&4000u16.to_be_bytes());
        let ipv6 = v2(1, 0x21, &body);
        assert_eq!(parse_split(&ipv6), Ok(Some((Proxied::From("[::1]:4000".parse().unwrap()), 52))));
        // A health check, with TLVs after the (empty) addresses.
        assert_eq!(parse_split(&v2(0, 0, &[0x03, 0, 4, 1, 2, 3, 4])), Ok(Some((Proxied::Local, 23))));
        // Addresses followed by TLVs: the length covers both.
        let tlvs = v2(1, 0x11, &[[10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 0, 81].as_slice(), &[0x04, 0, 1, 0]].concat());
        assert_eq!(parse_split(&tlvs), Ok(Some((Proxied::From("10.0.0.1:80".parse().unwrap()), 32))));
        let mut version_one = v2(1, 0x11, &[0; 12]);
        version_one[12] = 0x11;
        for bad in [version_one, v2(1, 0x11, &[0; 11]), v2(2, 0x11, &[0; 12]), v2(1, 0x12, &[0; 12])] {
            assert_eq!(parse_split(&bad), Err(HandshakeError::BadProxyHeader), "{bad:?}");
        }
        let huge = [&V2_SIGNATURE[..], &[0x21, 0x11, 0xFF, 0xFF]].concat();
        assert_eq!(parse(&huge), Err(HandshakeError::BadProxyHeader), "refused from the length alone");
        assert_eq!(parse(&ipv4[..20]), Ok(None), "truncated: more is needed");
    }
}
