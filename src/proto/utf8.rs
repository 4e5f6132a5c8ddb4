//! Incremental UTF-8 validation, so a text message split across frames or reads
//! is refused at the first byte that cannot be part of valid UTF-8 (fail fast).

use super::error::ProtocolError;
use super::state::{ImportError, Reader, Writer};

/// Validates UTF-8 fed in pieces, holding at most one incomplete code point.
#[derive(Clone, Debug, Default)]
pub(crate) struct Utf8Validator {
    partial: [u8; 4],
    len: usize,
}

impl Utf8Validator {
    /// Checks the next piece; `Err` as soon as the bytes so far cannot be a
    /// prefix of valid UTF-8.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), ProtocolError> {
        if self.len > 0 {
            let width = sequence_width(self.partial[0]);
            while self.len < width && !data.is_empty() {
                self.partial[self.len] = data[0];
                self.len += 1;
                data = &data[1..];
            }
            match std::str::from_utf8(&self.partial[..self.len]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &data[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.len = tail.len();
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Ends the text: `Err` if it stopped inside a code point.
    pub(crate) fn finish(&mut self) -> Result<(), ProtocolError> {
        let complete = self.len == 0;
        self.len = 0;
        if complete {
            Ok(())
        } else {
            Err(ProtocolError::InvalidUtf8)
        }
    }
}

impl Utf8Validator {
    pub(crate) fn save(&self, w: &mut Writer) {
        w.bytes(&self.partial[..self.len]);
    }

    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        let partial = r.bytes()?;
        // An unfinished code point is at most three bytes; more would have completed it.
        if partial.len() > 3 {
            return Err(ImportError::Corrupt("an unfinished code point of four bytes"));
        }
        let mut v = Self::default();
        v.partial[..partial.len()].copy_from_slice(partial);
        v.len = partial.len();
        Ok(v)
    }
}

fn sequence_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split(bytes: &[u8]) -> Vec<bool> {
        (0..=bytes.len())
            .map(|i| {
                let mut v = Utf8Validator::default();
                v.feed(&bytes[..i]).is_ok() && v.feed(&bytes[i..]).is_ok() && v.finish().is_ok()
            })
            .collect()
    }

    #[test]
    fn agrees_with_std_at_every_split() {
        let samples: [&[u8]; 7] = [
            "κόσμε".as_bytes(),
            "𝄞 clef".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf4\x90\x80\x80",
            b"\xe2\x82",
            b"ok\xff",
            b"",
        ];
        for s in samples {
            let want = std::str::from_utf8(s).is_ok();
            assert!(check_split(s).iter().all(|&ok| ok == want), "{s:02x?}");
        }
    }

    #[test]
    fn fails_fast_inside_a_code_point() {
        let mut v = Utf8Validator::default();
        assert!(v.feed(b"\xe0").is_ok());
        // E0 must be followed by A0..BF: 0x80 is refused before the code point ends.
        assert!(v.feed(b"\x80").is_err());
    }
}
