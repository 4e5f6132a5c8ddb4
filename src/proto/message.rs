//! Frames into messages: fragmentation with interleaved control frames, the
//! size and fragment limits (checked from the header, before buffering),
//! incremental UTF-8 validation of text, and close-frame validation. With
//! permessage-deflate, a message whose first frame has RSV1 set is inflated
//! as its payload arrives, the limit applying to what it inflates to.

use super::config::MessageLimits;
use super::deflate::{compressed_limit, Agreed, Inflater};
use super::error::ProtocolError;
use super::frame::{FrameDecoder, FrameEvent, FrameHeader, OpCode};
use super::state::{ImportError, Reader, Writer};
use super::utf8::Utf8Validator;

/// A message buffer that held more than this gives its memory back once the
/// message is handled, so a client that sent one large message and went quiet
/// does not pin it.
const KEEP_CAPACITY: usize = 4 * 1024;

/// A complete message, borrowed from the decoder until its next call. The
/// client side has its own owned form, [`Received`](crate::client::Received),
/// which also carries the HTTP status a client sees first.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// A text message; the bytes are valid UTF-8.
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping and its payload.
    Ping(&'a [u8]),
    /// A pong and its payload.
    Pong(&'a [u8]),
    /// A close frame: `None` if it carried no code.
    Close(Option<(u16, &'a str)>),
}

/// Turns client bytes into [`Message`]s, whatever way they are chunked.
#[derive(Debug)]
pub(crate) struct MessageDecoder {
    frames: FrameDecoder,
    limits: MessageLimits,
    current: Option<FrameHeader>,
    data: Vec<u8>,
    data_opcode: Option<OpCode>,
    fragments: usize,
    utf8: Utf8Validator,
    control: Vec<u8>,
    returned: bool,
    /// permessage-deflate's inflater, once the upgrade agreed to it.
    inflate: Option<Box<Inflater>>,
    /// The data message in progress is compressed (RSV1 on its first frame).
    compressed: bool,
    /// The message last returned was compressed, until asked.
    inflated: bool,
}

impl MessageDecoder {
    /// A decoder for frames from a client: every frame must be masked.
    pub(crate) fn new(limits: MessageLimits) -> Self {
        Self {
            frames: FrameDecoder::default(),
            limits,
            current: None,
            data: Vec::new(),
            data_opcode: None,
            fragments: 0,
            utf8: Utf8Validator::default(),
            control: Vec::new(),
            returned: false,
            inflate: None,
            compressed: false,
            inflated: false,
        }
    }

    /// True if the message last returned arrived compressed; asking forgets it.
    pub(crate) fn take_inflated(&mut self) -> bool {
        std::mem::take(&mut self.inflated)
    }

    /// From now on, RSV1 on a message's first frame means compressed
    /// (RFC 7692 §6): the connection agreed to permessage-deflate.
    pub(crate) fn set_deflate(&mut self, agreed: Agreed) {
        self.inflate = Some(Box::new(Inflater::new(agreed)));
    }

    /// Consumes bytes from the front of `input` until a message is complete or
    /// the input runs out. Returns the bytes consumed and the message, if any.
    /// After an error the decoder must not be used again.
    pub(crate) fn decode(&mut self, mut input: &[u8]) -> Result<(usize, Option<Message<'_>>), ProtocolError> {
        if std::mem::take(&mut self.returned) {
            self.data.clear();
        }
        let total = input.len();
        let done = loop {
            let control = self.current.is_some_and(|h| h.opcode.is_control());
            let inflate = self.inflate.as_deref_mut().filter(|_| !control && self.compressed);
            let sink = match (control, inflate) {
                (true, _) => &mut self.control,
                // Compressed payload waits in the inflater, which fills the message.
                (false, Some(inflate)) => inflate.input(),
                (false, None) => &mut self.data,
            };
            let (n, event) = self.frames.decode(input, sink)?;
            input = &input[n..];
            match event {
                None => return Ok((total - input.len(), None)),
                Some(FrameEvent::Header(h)) => self.start_frame(h)?,
                Some(FrameEvent::Payload(n)) => {
                    let text = self.data_opcode == Some(OpCode::Text);
                    match self.inflate.as_deref_mut().filter(|_| !control && self.compressed) {
                        Some(inflate) => {
                            let utf8 = &mut self.utf8;
                            let mut check = |new: &[u8]| if text { utf8.feed(new) } else { Ok(()) };
                            inflate.inflate(&mut self.data, self.limits.max_message, &mut check)?;
                        }
                        None if !control && text => {
                            let new = &self.data[self.data.len() - n..];
                            self.utf8.feed(new)?;
                        }
                        None => {}
                    }
                }
                Some(FrameEvent::End) => {
                    if let Some(done) = self.end_frame()? {
                        break done;
                    }
                }
            }
        };
        let consumed = total - input.len();
        let message = match done {
            OpCode::Text => Message::Text(&self.data),
            OpCode::Binary => Message::Binary(&self.data),
            OpCode::Ping => Message::Ping(&self.control),
            OpCode::Pong => Message::Pong(&self.control),
            OpCode::Close => Message::Close(parse_close(&self.control)?),
            OpCode::Continuation => unreachable!("end_frame never completes a continuation"),
        };
        Ok((consumed, Some(message)))
    }

    /// Gives back the memory of the message last returned if it was large;
    /// call once the input at hand is used up.
    pub(crate) fn trim(&mut self) {
        if std::mem::take(&mut self.returned) {
            self.data.clear();
            if self.data.capacity() > KEEP_CAPACITY {
                self.data = Vec::new();
            }
        }
    }

    /// Memory held, for `/metrics`.
    pub(crate) fn capacity(&self) -> usize {
        self.data.capacity() + self.control.capacity()
    }

    /// Memory the inflater holds, for `/metrics`.
    pub(crate) fn inflate_memory(&self) -> usize {
        self.inflate.as_ref().map_or(0, |i| i.memory())
    }

    pub(crate) fn save(&self, w: &mut Writer) {
        self.frames.save(w);
        w.opt(self.current.as_ref(), |w, h| h.save(w));
        // A message already returned is gone as far as the decoder's next call is concerned.
        w.bytes(if self.returned { &[] } else { &self.data });
        w.opt(self.data_opcode, |w, op| op.save(w));
        w.len(self.fragments);
        self.utf8.save(w);
        w.bytes(&self.control);
        w.bool(self.compressed);
        w.opt(self.inflate.as_deref(), |w, i| i.save(w));
    }

    /// A decoder with `limits`, and the permessage-deflate its connection
    /// agreed to, where the saved one left off.
    pub(crate) fn load(
        r: &mut Reader<'_>,
        limits: MessageLimits,
        deflate: Option<Agreed>,
    ) -> Result<Self, ImportError> {
        let frames = FrameDecoder::load(r)?;
        let current = r.opt(FrameHeader::load)?;
        let data = r.bytes()?.to_vec();
        let data_opcode = r.opt(OpCode::load)?;
        let fragments = r.index()?;
        let utf8 = Utf8Validator::load(r)?;
        let control = r.bytes()?.to_vec();
        if control.len() > super::frame::MAX_CONTROL_PAYLOAD {
            return Err(ImportError::Corrupt("a control frame over 125 bytes"));
        }
        let compressed = r.bool()?;
        let inflate = match (r.bool()?, deflate) {
            (false, _) => None,
            (true, Some(agreed)) => {
                let so_far = if compressed { &data[..] } else { &[] };
                Some(Box::new(Inflater::load(r, agreed, so_far, limits.max_message)?))
            }
            (true, None) => return Err(ImportError::Corrupt("an inflater on a connection without deflate")),
        };
        if compressed && (inflate.is_none() || data_opcode.is_none()) {
            return Err(ImportError::Corrupt("a compressed message without an inflater"));
        }
        let (returned, inflated) = (false, false);
        Ok(Self {
            frames,
            limits,
            current,
            data,
            data_opcode,
            fragments,
            utf8,
            control,
            returned,
            inflate,
            compressed,
            inflated,
        })
    }

    fn start_frame(&mut self, h: FrameHeader) -> Result<(), ProtocolError> {
        if h.mask.is_none() {
            return Err(ProtocolError::UnmaskedFrame);
        }
        match h.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.data_opcode.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if h.rsv1 {
                    // RFC 7692 §6: RSV1 on a message's first frame means compressed, once agreed.
                    let Some(inflate) = self.inflate.as_deref_mut() else { return Err(ProtocolError::ReservedBits) };
                    inflate.begin();
                }
                self.compressed = h.rsv1;
                self.data_opcode = Some(h.opcode);
                self.fragments = 0;
            }
            OpCode::Continuation => {
                if self.data_opcode.is_none() {
                    return Err(ProtocolError::UnexpectedContinuation);
                }
                // RFC 7692 §6.1: only the first frame of a message carries RSV1.
                if h.rsv1 {
                    return Err(ProtocolError::ReservedBits);
                }
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                self.control.clear();
                self.current = Some(h);
                return Ok(());
            }
        }
        self.fragments += 1;
        if self.fragments > self.limits.max_fragments {
            return Err(ProtocolError::TooManyFragments);
        }
        // Checked from the header, but memory is taken as the payload arrives:
        // a header alone claiming a large frame costs nothing. A compressed
        // message is checked again as it inflates.
        let (so_far, limit) = match self.inflate.as_deref().filter(|_| self.compressed) {
            Some(inflate) => (inflate.compressed_len(), compressed_limit(self.limits.max_message)),
            None => (self.data.len(), self.limits.max_message),
        };
        if (so_far as u64).saturating_add(h.len) > limit as u64 {
            return Err(ProtocolError::MessageTooBig);
        }
        self.current = Some(h);
        Ok(())
    }

    /// The opcode of the message the frame just ended completes, if it completes one.
    fn end_frame(&mut self) -> Result<Option<OpCode>, ProtocolError> {
        let h = self.current.take().expect("End follows the Header that set the current frame");
        Ok(match h.opcode {
            OpCode::Ping | OpCode::Pong | OpCode::Close => Some(h.opcode),
            _ if !h.fin => None,
            _ => {
                let opcode = self.data_opcode.take();
                self.returned = true;
                if let Some(inflate) = self.inflate.as_deref_mut().filter(|_| self.compressed) {
                    self.compressed = false;
                    self.inflated = true;
                    let utf8 = &mut self.utf8;
                    let text = opcode == Some(OpCode::Text);
                    let mut check = |new: &[u8]| if text { utf8.feed(new) } else { Ok(()) };
                    inflate.finish(&mut self.data, self.limits.max_message, &mut check)?;
                }
                if opcode == Some(OpCode::Text) {
                    self.utf8.finish()?;
                    Some(OpCode::Text)
                } else {
                    Some(OpCode::Binary)
                }
            }
        })
    }
}

/// Parses and validates a close frame's payload (RFC 6455 §5.5.1, §7.4).
pub(crate) fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::InvalidCloseCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Codes a peer may put in a close frame: the registered ones, less those
/// reserved for local use (1004-1006, 1015), plus the private ranges.
pub(crate) fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Decodes `pieces` in order into owned messages, with the error that
/// stopped them, if any: the oracle of the decoder's tests and fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode_all<'a>(
    limits: MessageLimits,
    deflate: Option<Agreed>,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<crate::client::Received>, Option<ProtocolError>) {
    use crate::client::Received;
    let mut decoder = MessageDecoder::new(limits);
    if let Some(agreed) = deflate {
        decoder.set_deflate(agreed);
    }
    let mut got = Vec::new();
    for piece in pieces {
        let mut rest = piece;
        loop {
            match decoder.decode(rest) {
                Err(e) => return (got, Some(e)),
                Ok((n, message)) => {
                    rest = &rest[n..];
                    let Some(message) = message else { break };
                    got.push(match message {
                        Message::Text(t) => {
                            Received::Text(String::from_utf8(t.to_vec()).expect("text messages are UTF-8"))
                        }
                        Message::Binary(b) => Received::Binary(b.to_vec()),
                        Message::Ping(p) => Received::Ping(p.to_vec()),
                        Message::Pong(p) => Received::Pong(p.to_vec()),
                        Message::Close(c) => Received::Close(c.map(|(c, r)| (c, r.to_owned()))),
                    });
                }
            }
        }
    }
    (got, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{masked_frame, Received as Owned};

    const LIMITS: MessageLimits = MessageLimits { max_message: 1000, max_fragments: 4 };

    fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        masked_frame(&mut out, fin, opcode, payload, [0xA1, 0xB2, 0xC3, 0xD4]);
        out
    }

    fn run(chunks: &[&[u8]]) -> (Vec<Owned>, Option<ProtocolError>) {
        decode_all(LIMITS, None, chunks.iter().copied())
    }

    fn byte_by_byte(wire: &[u8]) -> (Vec<Owned>, Option<ProtocolError>) {
        decode_all(LIMITS, None, wire.chunks(1))
    }

    #[test]
    fn memory_is_taken_as_payload_arrives_and_given_back_after() {
        let mut d = MessageDecoder::new(MessageLimits { max_message: 1 << 20, max_fragments: 4 });
        let big = client_frame(true, OpCode::Binary, &[1; 64 * 1024]);
        // A header claiming 64 KiB holds nothing until the payload comes.
        let (used, msg) = d.decode(&big[..14]).unwrap();
        assert_eq!((used, msg), (14, None));
        assert_eq!(d.capacity(), 0);
        let (_, msg) = d.decode(&big[14..]).unwrap();
        assert!(matches!(msg, Some(Message::Binary(b)) if b.len() == 64 * 1024));
        d.trim();
        assert_eq!(d.capacity(), 0, "a large message's buffer is given back");
        let small = client_frame(true, OpCode::Text, b"* report {}");
        d.decode(&small).unwrap();
        d.trim();
        assert!(d.capacity() > 0 && d.capacity() <= KEEP_CAPACITY, "a small one is kept for the next");
    }

    #[test]
    fn fragments_with_a_ping_between() {
        let mut wire = client_frame(false, OpCode::Text, "hé".as_bytes()[..2].as_ref());
        wire.extend(client_frame(true, OpCode::Ping, b"p"));
        wire.extend(client_frame(true, OpCode::Continuation, &"hé".as_bytes()[2..]));
        let want = vec![Owned::Ping(b"p".to_vec()), Owned::Text("hé".into())];
        assert_eq!(run(&[&wire]), (want, None));
        let want = vec![Owned::Ping(b"p".to_vec()), Owned::Text("hé".into())];
        assert_eq!(byte_by_byte(&wire), (want, None));
    }

    #[test]
    fn fragmentation_rules() {
        let cont = client_frame(true, OpCode::Continuation, b"x");
        assert_eq!(run(&[&cont]).1, Some(ProtocolError::UnexpectedContinuation));
        let mut two = client_frame(false, OpCode::Text, b"a");
        two.extend(client_frame(true, OpCode::Binary, b"b"));
        assert_eq!(run(&[&two]).1, Some(ProtocolError::ExpectedContinuation));
        let mut four = client_frame(false, OpCode::Binary, b"a");
        for _ in 0..2 {
            four.extend(client_frame(false, OpCode::Continuation, b"a"));
        }
        let mut five = four.clone();
        four.extend(client_frame(true, OpCode::Continuation, b"a"));
        assert_eq!(run(&[&four]), (vec![Owned::Binary(b"aaaa".to_vec())], None));
        five.extend(client_frame(false, OpCode::Continuation, b"a"));
        five.extend(client_frame(true, OpCode::Continuation, b"a"));
        assert_eq!(run(&[&five]).1, Some(ProtocolError::TooManyFragments));
    }

    #[test]
    fn size_is_checked_from_the_header() {
        let mut header = Vec::new();
        FrameHeader { fin: true, rsv1: false, opcode: OpCode::Binary, mask: Some([0; 4]), len: 1001 }
            .encode(&mut header);
        // Only the header is sent: the refusal does not wait for the payload.
        assert_eq!(run(&[&header]).1, Some(ProtocolError::MessageTooBig));
        let mut split = client_frame(false, OpCode::Binary, &[0; 600]);
        split.extend(client_frame(true, OpCode::Continuation, &[0; 401])[..8].to_vec());
        assert_eq!(run(&[&split]).1, Some(ProtocolError::MessageTooBig));
    }

    #[test]
    fn utf8_fails_fast_across_fragments() {
        let mut wire = client_frame(false, OpCode::Text, b"ok\xe0");
        wire.extend(client_frame(false, OpCode::Continuation, b"\x80"));
        assert_eq!(run(&[&wire]).1, Some(ProtocolError::InvalidUtf8));
        let cut = client_frame(true, OpCode::Text, b"ok\xe2\x82");
        assert_eq!(byte_by_byte(&cut).1, Some(ProtocolError::InvalidUtf8));
        // Binary is not text: any bytes go.
        assert_eq!(run(&[&client_frame(true, OpCode::Binary, b"\xff")]).0, vec![Owned::Binary(vec![0xff])]);
    }

    #[test]
    fn close_frames_are_validated() {
        let ok = client_frame(true, OpCode::Close, b"\x03\xe8bye");
        assert_eq!(run(&[&ok]).0, vec![Owned::Close(Some((1000, "bye".into())))]);
        assert_eq!(run(&[&client_frame(true, OpCode::Close, b"")]).0, vec![Owned::Close(None)]);
        assert_eq!(run(&[&client_frame(true, OpCode::Close, b"\x03")]).1, Some(ProtocolError::CloseTooShort));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let f = client_frame(true, OpCode::Close, &code.to_be_bytes());
            assert_eq!(run(&[&f]).1, Some(ProtocolError::InvalidCloseCode), "{code}");
        }
        let bad = client_frame(true, OpCode::Close, b"\x03\xe8\xff");
        assert_eq!(run(&[&bad]).1, Some(ProtocolError::InvalidCloseReason));
    }

    #[test]
    fn unmasked_frames_are_refused() {
        let mut f = Vec::new();
        encode_unmasked(&mut f);
        assert_eq!(run(&[&f]).1, Some(ProtocolError::UnmaskedFrame));
    }

    fn encode_unmasked(out: &mut Vec<u8>) {
        crate::proto::frame::encode_frame(out, OpCode::Text, &[b"hi"]);
    }
}
