//! RFC 6455 frames: the header read from and written into a buffer, and the mask. Pure: no
//! I/O, no state beyond one header; [`Socket`](super::Socket) does the reading and writing.
//!
//! ```text
//!  byte 0: FIN | RSV1 RSV2 RSV3 | opcode (4 bits)
//!  byte 1: MASK | length (7 bits: 0–125, or 126: a u16 follows, 127: a u64 follows)
//!  then the extended length (big-endian), then the 4-byte masking key if MASK is set
//! ```

use bytes::BufMut;

/// The most a header takes: 2 bytes, an 8-byte length and a 4-byte masking key.
pub(crate) const MAX_HEADER_LEN: usize = 14;

/// The longest payload a control frame (close, ping, pong) may carry (RFC 6455 §5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// What a frame is (RFC 6455 §5.2); the opcodes this side does not know are refused when the
/// header is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes, allowed between the
    /// fragments of a message.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The last frame of its message.
    pub(crate) fin: bool,
    pub(crate) opcode: Opcode,
    /// The masking key: every frame from a client has one, no frame from a server.
    pub(crate) mask: Option<[u8; 4]>,
    /// The payload's length in bytes.
    pub(crate) len: u64,
}

/// A header that breaks RFC 6455: the connection is closed with 1002 (protocol error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadHeader {
    /// A reserved bit is set, and no extension was negotiated that would give it a meaning.
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    UnknownOpcode,
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControl,
    /// A 64-bit length with its most significant bit set.
    BadLength,
}

impl Header {
    /// Reads a header from the start of `buf`: `Ok(None)` while `buf` holds only part of it,
    /// else the header and how many bytes it took.
    pub(crate) fn read(buf: &[u8]) -> Result<Option<(Header, usize)>, BadHeader> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(BadHeader::ReservedBits);
        }
        let opcode = Opcode::from_bits(first & 0x0F).ok_or(BadHeader::UnknownOpcode)?;
        let fin = first & 0x80 != 0;
        let masked = second & 0x80 != 0;
        let (len, mut at) = match second & 0x7F {
            126 => match buf.get(2..4) {
                Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(bytes) => {
                    let mut wide = [0; 8];
                    wide.copy_from_slice(bytes);
                    let len = u64::from_be_bytes(wide);
                    if len >> 63 != 0 {
                        return Err(BadHeader::BadLength);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if opcode.is_control() && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
            return Err(BadHeader::BadControl);
        }
        let mask = if masked {
            match buf.get(at..at + 4) {
                Some(&[a, b, c, d]) => {
                    at += 4;
                    Some([a, b, c, d])
                }
                _ => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some((
            Header {
                fin,
                opcode,
                mask,
                len,
            },
            at,
        )))
    }

    /// Writes the header of a final (unfragmented) frame into `out`.
    pub(crate) fn write(opcode: Opcode, len: usize, mask: Option<[u8; 4]>, out: &mut impl BufMut) {
        out.put_u8(0x80 | opcode.bits());
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        if len < 126 {
            // `len < 126` fits the 7 bits.
            out.put_u8(mask_bit | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            out.put_u8(mask_bit | 126);
            out.put_u16(short);
        } else {
            out.put_u8(mask_bit | 127);
            out.put_u64(len as u64);
        }
        if let Some(key) = mask {
            out.put_slice(&key);
        }
    }

    /// The length of the header [`write`](Self::write) writes.
    pub(crate) fn len_for(len: usize, masked: bool) -> usize {
        let base = match len {
            0..126 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        base + if masked { 4 } else { 0 }
    }
}

/// Masking keys for a client's frames (RFC 6455 §5.3: each from a strong source of
/// entropy), drawn from the thread's CSPRNG sixteen at a time: one draw per frame costs a
/// lookup of the thread's generator each, 4 % of a small request's client-side CPU.
#[derive(Debug)]
pub(crate) struct MaskKeys {
    keys: [u8; 64],
    /// The first byte of `keys` not handed out yet.
    next: usize,
}

impl MaskKeys {
    pub(crate) fn new() -> Self {
        MaskKeys {
            keys: [0; 64],
            next: 64,
        }
    }

    /// A fresh key, never handed out before.
    pub(crate) fn next_key(&mut self) -> [u8; 4] {
        if self.next + 4 > self.keys.len() {
            rand::fill(&mut self.keys[..]);
            self.next = 0;
        }
        let mut key = [0; 4];
        key.copy_from_slice(&self.keys[self.next..self.next + 4]);
        self.next += 4;
        key
    }
}

/// XORs `buf` with the masking key, as a frame's payload is masked and unmasked (RFC 6455
/// §5.3), eight bytes at a time.
pub(crate) fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Whole chunks are a multiple of four bytes long: the rest starts at the key's start.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> Result<Option<(Header, usize)>, BadHeader> {
        Header::read(bytes)
    }

    #[test]
    fn mask_keys_are_drawn_afresh_past_a_batch() {
        let mut keys = MaskKeys::new();
        let drawn: Vec<[u8; 4]> = (0..40).map(|_| keys.next_key()).collect();
        // 40 keys span three draws of 16; random keys of 32 bits repeat with a chance of
        // about 2e-7 here, while a batch handed out twice (or never filled) repeats always.
        let distinct: std::collections::HashSet<_> = drawn.iter().collect();
        assert_eq!(distinct.len(), drawn.len(), "{drawn:?}");
    }

    #[test]
    fn reads_every_length_form() {
        // RFC 6455 §5.7: a single unmasked text frame "Hello".
        let (h, at) = header(&[0x81, 0x05]).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.len, at),
            (true, Opcode::Text, None, 5, 2)
        );
        // The masked "Hello" of §5.7.
        let (h, at) = header(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!((h.mask, h.len, at), (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6));
        // 256 bytes in one unmasked binary message (§5.7).
        let (h, at) = header(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.opcode, h.len, at), (Opcode::Binary, 256, 4));
        // 64 KiB (§5.7).
        let (h, at) = header(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.len, at), (65536, 10));
        // A fragment: FIN clear.
        let (h, _) = header(&[0x01, 0x03]).unwrap().unwrap();
        assert!(!h.fin);
    }

    #[test]
    fn a_partial_header_asks_for_more() {
        for partial in [
            &[][..],
            &[0x82],
            &[0x82, 0x7E, 0x01],
            &[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2],
        ] {
            assert_eq!(header(partial), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        assert_eq!(header(&[0xC2, 0x00]), Err(BadHeader::ReservedBits));
        assert_eq!(header(&[0x83, 0x00]), Err(BadHeader::UnknownOpcode));
        assert_eq!(header(&[0x8B, 0x00]), Err(BadHeader::UnknownOpcode));
        // A fragmented ping, a 126-byte ping.
        assert_eq!(header(&[0x09, 0x00]), Err(BadHeader::BadControl));
        assert_eq!(
            header(&[0x89, 0x7E, 0x00, 0x7E]),
            Err(BadHeader::BadControl)
        );
        assert_eq!(
            header(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(BadHeader::BadLength)
        );
    }

    #[test]
    fn writes_what_it_reads() {
        for len in [0, 1, 125, 126, 65535, 65536, 1 << 20] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = Vec::new();
                Header::write(Opcode::Binary, len, mask, &mut out);
                assert_eq!(out.len(), Header::len_for(len, mask.is_some()));
                let (h, at) = header(&out).unwrap().unwrap();
                assert_eq!(
                    (h.fin, h.opcode, h.mask, h.len, at),
                    (true, Opcode::Binary, mask, len as u64, out.len())
                );
            }
        }
    }

    #[test]
    fn masking_twice_gives_the_payload_back_at_every_length() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut hello = *b"Hello";
        apply_mask(&mut hello, key);
        // §5.7's masked "Hello".
        assert_eq!(hello, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        for len in 0..40 {
            let original: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut bytes = original.clone();
            apply_mask(&mut bytes, key);
            let expected: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(bytes, expected, "{len}");
            apply_mask(&mut bytes, key);
            assert_eq!(bytes, original);
        }
    }
}
