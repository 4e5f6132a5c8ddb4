//! RFC 6455 §5 framing: the frame header, a streaming decoder that unmasks
//! payload as it arrives, and the encoder for the frames a server sends.

use super::error::ProtocolError;
use super::state::{ImportError, Reader, Writer};

/// The largest header a frame can have: 2 fixed bytes, 8 length bytes, 4 mask bytes.
pub(crate) const MAX_HEADER_LEN: usize = 14;

/// The largest payload of a control frame (RFC 6455 §5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode (RFC 6455 §5.2); the reserved ones are refused while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// Continues a fragmented message.
    Continuation,
    /// Starts a text message.
    Text,
    /// Starts a binary message.
    Binary,
    /// Starts the close handshake.
    Close,
    /// Asks for a pong.
    Ping,
    /// Answers a ping, or is unsolicited.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The four bits this opcode is written as.
    pub(crate) fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of its message.
    pub fin: bool,
    /// RSV1: with permessage-deflate (RFC 7692 §6), set on the first frame of
    /// a compressed message. Only data frames may carry it; whether it is
    /// allowed at all is the connection's rule, not the header's.
    pub rsv1: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key; clients must send one, servers never do.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
}

impl FrameHeader {
    /// Parses a header from the front of `buf`. `Ok(None)` means more bytes are
    /// needed; otherwise returns the header and how many bytes it took.
    ///
    /// Refuses RSV2 and RSV3, RSV1 on a control frame, reserved opcodes,
    /// non-minimal length encodings, a 64-bit length with its high bit set,
    /// and control frames that are fragmented or longer than 125 bytes.
    /// Whether a mask is required, and RSV1 on a data frame allowed, is the
    /// caller's rule.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        if b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode)?;
        let rsv1 = b0 & 0x40 != 0;
        // RFC 7692 §6: no extension defined here gives RSV1 a meaning on a control frame.
        if rsv1 && opcode.is_control() {
            return Err(ProtocolError::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        let (len, len_bytes) = match b1 & 0x7F {
            126 => {
                let Some(b) = buf.get(2..4) else { return Ok(None) };
                let len = u64::from(u16::from_be_bytes([b[0], b[1]]));
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 2)
            }
            127 => {
                let Some(b) = buf.get(2..10) else { return Ok(None) };
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthHighBit);
                }
                if len <= 0xFFFF {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 8)
            }
            n => (u64::from(n), 0),
        };
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlTooLong);
            }
        }
        let mut at = 2 + len_bytes;
        let mask = if masked {
            let Some(m) = buf.get(at..at + 4) else { return Ok(None) };
            at += 4;
            Some([m[0], m[1], m[2], m[3]])
        } else {
            None
        };
        Ok(Some((FrameHeader { fin, rsv1, opcode, mask, len }, at)))
    }

    /// Appends this header in its minimal encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let b0 = (u8::from(self.fin) << 7) | (u8::from(self.rsv1) << 6) | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        if self.len < 126 {
            // Fits in seven bits by the branch condition.
            out.extend_from_slice(&[b0, mask_bit | self.len as u8]);
        } else if let Ok(len) = u16::try_from(self.len) {
            out.extend_from_slice(&[b0, mask_bit | 126]);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.extend_from_slice(&[b0, mask_bit | 127]);
            out.extend_from_slice(&self.len.to_be_bytes());
        }
        if let Some(mask) = self.mask {
            out.extend_from_slice(&mask);
        }
    }
}

/// XORs `data` with `mask`, starting at byte `offset` of the mask's cycle.
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let key = u32::from_ne_bytes(rotate_mask(mask, offset));
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        // chunks_exact_mut yields exactly four bytes.
        let word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ key;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let rotated = rotate_mask(mask, offset);
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= rotated[i];
    }
}

fn rotate_mask(mask: [u8; 4], offset: usize) -> [u8; 4] {
    let o = offset % 4;
    [mask[o], mask[(o + 1) % 4], mask[(o + 2) % 4], mask[(o + 3) % 4]]
}

/// Appends one whole unmasked server frame whose payload is `parts`, joined.
pub(crate) fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, parts: &[&[u8]]) {
    let len = parts.iter().map(|p| p.len() as u64).sum();
    FrameHeader { fin: true, rsv1: false, opcode, mask: None, len }.encode(out);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Appends one whole unmasked server frame of a compressed message: RSV1
/// set, `deflated` its payload (RFC 7692 §7.2.1).
pub(crate) fn encode_compressed_frame(out: &mut Vec<u8>, opcode: OpCode, deflated: &[u8]) {
    FrameHeader { fin: true, rsv1: true, opcode, mask: None, len: deflated.len() as u64 }.encode(out);
    out.extend_from_slice(deflated);
}

/// What [`FrameDecoder::decode`] found in the bytes it consumed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameEvent {
    /// A frame header was read.
    Header(FrameHeader),
    /// This many payload bytes of the current frame were unmasked into the sink.
    Payload(usize),
    /// The current frame's payload is complete.
    End,
}

/// Streaming frame decoder: keeps at most one partial header, never the payload,
/// so the bytes it holds are bounded by [`MAX_HEADER_LEN`] whatever the chunking.
#[derive(Debug, Default)]
pub(crate) struct FrameDecoder {
    head: [u8; MAX_HEADER_LEN],
    head_len: usize,
    body: Option<Body>,
}

#[derive(Debug)]
struct Body {
    mask: Option<[u8; 4]>,
    remaining: u64,
    offset: usize,
}

impl OpCode {
    pub(crate) fn save(self, w: &mut Writer) {
        w.u8(self.bits());
    }

    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        Self::from_bits(r.u8()?).ok_or(ImportError::Corrupt("a reserved opcode"))
    }
}

impl FrameHeader {
    pub(crate) fn save(&self, w: &mut Writer) {
        w.bool(self.fin);
        w.bool(self.rsv1);
        self.opcode.save(w);
        w.opt(self.mask, |w, m| w.u32(u32::from_le_bytes(m)));
        w.u64(self.len);
    }

    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        Ok(Self {
            fin: r.bool()?,
            rsv1: r.bool()?,
            opcode: OpCode::load(r)?,
            mask: r.opt(|r| Ok(r.u32()?.to_le_bytes()))?,
            len: r.u64()?,
        })
    }
}

impl FrameDecoder {
    pub(crate) fn save(&self, w: &mut Writer) {
        w.bytes(&self.head[..self.head_len]);
        w.opt(self.body.as_ref(), |w, b| {
            w.opt(b.mask, |w, m| w.u32(u32::from_le_bytes(m)));
            w.u64(b.remaining);
            w.u8(b.offset as u8);
        });
    }

    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        let head = r.bytes()?;
        if head.len() >= MAX_HEADER_LEN {
            return Err(ImportError::Corrupt("a partial frame header as long as a whole one"));
        }
        let mut d = Self::default();
        d.head[..head.len()].copy_from_slice(head);
        d.head_len = head.len();
        d.body = r.opt(|r| {
            let mask = r.opt(|r| Ok(r.u32()?.to_le_bytes()))?;
            let (remaining, offset) = (r.u64()?, usize::from(r.u8()?));
            if offset > 3 {
                return Err(ImportError::Corrupt("a mask offset past the mask"));
            }
            Ok(Body { mask, remaining, offset })
        })?;
        Ok(d)
    }

    /// Consumes bytes from the front of `input`, unmasking payload bytes into
    /// `sink`. Returns how many bytes were consumed and what they completed;
    /// `None` means all of `input` was consumed and more is needed.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        sink: &mut Vec<u8>,
    ) -> Result<(usize, Option<FrameEvent>), ProtocolError> {
        if let Some(body) = &mut self.body {
            if body.remaining == 0 {
                self.body = None;
                return Ok((0, Some(FrameEvent::End)));
            }
            if input.is_empty() {
                return Ok((0, None));
            }
            let n = input.len().min(usize::try_from(body.remaining).unwrap_or(usize::MAX));
            let start = sink.len();
            sink.extend_from_slice(&input[..n]);
            if let Some(mask) = body.mask {
                apply_mask(&mut sink[start..], mask, body.offset);
            }
            body.offset = (body.offset + n) % 4;
            body.remaining -= n as u64;
            return Ok((n, Some(FrameEvent::Payload(n))));
        }
        // Copy only as much as the header can need, so we never consume payload here.
        let want = MAX_HEADER_LEN - self.head_len;
        let take = want.min(input.len());
        self.head[self.head_len..self.head_len + take].copy_from_slice(&input[..take]);
        let have = self.head_len + take;
        match FrameHeader::parse(&self.head[..have])? {
            None => {
                self.head_len = have;
                Ok((take, None))
            }
            Some((header, header_len)) => {
                let consumed = header_len - self.head_len;
                self.head_len = 0;
                self.body = Some(Body { mask: header.mask, remaining: header.len, offset: 0 });
                Ok((consumed, Some(FrameEvent::Header(header))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<(FrameHeader, Vec<u8>)>, ProtocolError> {
        let mut d = FrameDecoder::default();
        let mut out = Vec::new();
        let mut cur: Option<FrameHeader> = None;
        let mut payload = Vec::new();
        let mut rest = input;
        loop {
            let (n, ev) = d.decode(rest, &mut payload)?;
            rest = &rest[n..];
            match ev {
                Some(FrameEvent::Header(h)) => cur = Some(h),
                Some(FrameEvent::Payload(_)) => {}
                Some(FrameEvent::End) => out.push((cur.take().unwrap(), std::mem::take(&mut payload))),
                None => return Ok(out),
            }
        }
    }

    #[test]
    fn header_lengths_round_trip_in_minimal_form() {
        for len in [0u64, 125, 126, 0xFFFF, 0x1_0000, 1 << 40] {
            let h =
                FrameHeader { fin: true, rsv1: len % 2 == 0, opcode: OpCode::Binary, mask: Some([1, 2, 3, 4]), len };
            let mut buf = Vec::new();
            h.encode(&mut buf);
            assert_eq!(FrameHeader::parse(&buf).unwrap(), Some((h, buf.len())));
            for cut in 0..buf.len() {
                assert_eq!(FrameHeader::parse(&buf[..cut]).unwrap(), None);
            }
        }
    }

    #[test]
    fn refuses_what_rfc6455_forbids() {
        let cases: [(&[u8], ProtocolError); 9] = [
            (&[0x81 | 0x20, 0x80], ProtocolError::ReservedBits),
            (&[0x81 | 0x10, 0x80], ProtocolError::ReservedBits),
            (&[0x89 | 0x40, 0x80], ProtocolError::ReservedBits),
            (&[0x83, 0x80], ProtocolError::ReservedOpcode),
            (&[0x8B, 0x80], ProtocolError::ReservedOpcode),
            (&[0x82, 0xFE, 0x00, 0x7D], ProtocolError::NonMinimalLength),
            (&[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF], ProtocolError::NonMinimalLength),
            (&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], ProtocolError::LengthHighBit),
            (&[0x09, 0x80], ProtocolError::FragmentedControl),
        ];
        for (bytes, err) in cases {
            assert_eq!(FrameHeader::parse(bytes), Err(err), "{bytes:02x?}");
        }
        assert_eq!(FrameHeader::parse(&[0x89, 0xFE, 0, 126]), Err(ProtocolError::ControlTooLong));
        // RSV1 on a data frame is the connection's to judge (permessage-deflate).
        let (h, _) = FrameHeader::parse(&[0xC1, 0x80, 0, 0, 0, 0]).unwrap().unwrap();
        assert!(h.rsv1 && h.opcode == OpCode::Text);
    }

    #[test]
    fn mask_is_applied_with_offset() {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let plain: Vec<u8> = (0..23).collect();
        let mut whole = plain.clone();
        apply_mask(&mut whole, mask, 0);
        for split in 0..plain.len() {
            let mut parts = plain.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(parts, whole);
        }
    }

    #[test]
    fn decoding_is_the_same_at_every_split() {
        let mut wire = Vec::new();
        for (op, payload) in [(OpCode::Text, &b"hello"[..]), (OpCode::Ping, b""), (OpCode::Binary, &[7u8; 300])] {
            let h =
                FrameHeader { fin: true, rsv1: false, opcode: op, mask: Some([9, 8, 7, 6]), len: payload.len() as u64 };
            h.encode(&mut wire);
            let mut p = payload.to_vec();
            apply_mask(&mut p, [9, 8, 7, 6], 0);
            wire.extend_from_slice(&p);
        }
        let whole = decode_all(&wire).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].1, b"hello");
        assert_eq!(whole[2].1, vec![7u8; 300]);
        for split in 0..=wire.len() {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            let mut payload = Vec::new();
            let mut cur = None;
            for part in [&wire[..split], &wire[split..]] {
                let mut rest = part;
                loop {
                    let (n, ev) = d.decode(rest, &mut payload).unwrap();
                    rest = &rest[n..];
                    match ev {
                        Some(FrameEvent::Header(h)) => cur = Some(h),
                        Some(FrameEvent::Payload(_)) => {}
                        Some(FrameEvent::End) => got.push((cur.take().unwrap(), std::mem::take(&mut payload))),
                        None => break,
                    }
                }
            }
            assert_eq!(got, whole, "split at {split}");
        }
    }
}
