//! Payloads: the bytes a request, reply or signal carries, tagged with their encoding.

use bytes::Bytes;

use crate::error::PayloadError;

/// How a payload's bytes are to be read. On the wire it is carried only by the type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// Opaque bytes.
    #[default]
    Binary,
    /// UTF-8 text (not validated on receipt; see [`Payload::to_text`]).
    Utf8,
    /// UTF-16 text: little-endian 16-bit code units, no byte-order mark.
    Utf16,
}

/// The data of a request, reply or signal, with its [`Encoding`].
///
/// Cloning is cheap: `data` is a reference-counted [`Bytes`]. A payload parsed from a frame
/// is a slice of that frame, not a copy.
///
/// ```
/// use tokio_webwire::{Encoding, Payload};
///
/// let p = Payload::utf16("héllo 🦀");
/// assert_eq!(p.encoding, Encoding::Utf16);
/// assert_eq!(p.to_text().unwrap(), "héllo 🦀");
///
/// let p: Payload = "plain text".into();
/// assert_eq!(p.encoding, Encoding::Utf8);
/// assert_eq!(p.as_str().unwrap(), "plain text");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Payload {
    /// How to read `data`.
    pub encoding: Encoding,
    /// The raw bytes as they travel on the wire (UTF-16 as little-endian code units).
    pub data: Bytes,
}

impl Payload {
    /// An empty binary payload.
    #[must_use]
    pub const fn empty() -> Self {
        Payload {
            encoding: Encoding::Binary,
            data: Bytes::new(),
        }
    }

    /// A binary payload.
    ///
    /// ```
    /// # use tokio_webwire::Payload;
    /// let p = Payload::binary(vec![1, 2, 3]);
    /// assert_eq!(&p.data[..], &[1, 2, 3]);
    /// ```
    #[must_use]
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Payload {
            encoding: Encoding::Binary,
            data: data.into(),
        }
    }

    /// A UTF-8 payload holding `text`. A `String` is moved in without a copy.
    #[must_use]
    pub fn utf8(text: impl Into<String>) -> Self {
        Payload {
            encoding: Encoding::Utf8,
            data: Bytes::from(text.into()),
        }
    }

    /// A UTF-16 payload holding `text`, encoded as little-endian code units.
    ///
    /// ```
    /// # use tokio_webwire::Payload;
    /// assert_eq!(&Payload::utf16("hi").data[..], &[b'h', 0, b'i', 0]);
    /// ```
    #[must_use]
    pub fn utf16(text: &str) -> Self {
        let mut data = Vec::with_capacity(text.len() * 2);
        for unit in text.encode_utf16() {
            data.extend_from_slice(&unit.to_le_bytes());
        }
        Payload {
            encoding: Encoding::Utf16,
            data: Bytes::from(data),
        }
    }

    /// A UTF-16 payload from raw little-endian code units, as a peer would send them.
    ///
    /// Fails when `data` has an odd length. The units are not checked for unpaired
    /// surrogates; [`Payload::to_text`] does that.
    pub fn utf16_units(data: impl Into<Bytes>) -> Result<Self, PayloadError> {
        let data = data.into();
        if data.len() % 2 != 0 {
            return Err(PayloadError::OddUtf16Length { len: data.len() });
        }
        Ok(Payload {
            encoding: Encoding::Utf16,
            data,
        })
    }

    /// A UTF-8 payload holding `value` serialised as JSON.
    ///
    /// ```
    /// # use tokio_webwire::Payload;
    /// let p = Payload::json(&serde_json::json!({"x": 1})).unwrap();
    /// assert_eq!(p.as_str().unwrap(), r#"{"x":1}"#);
    /// let back: serde_json::Value = p.parse_json().unwrap();
    /// assert_eq!(back["x"], 1);
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Payload {
            encoding: Encoding::Utf8,
            data: Bytes::from(serde_json::to_vec(value)?),
        })
    }

    /// Deserialises the payload's text as JSON (UTF-16 payloads are decoded first).
    pub fn parse_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match self.encoding {
            Encoding::Binary | Encoding::Utf8 => serde_json::from_slice(&self.data),
            Encoding::Utf16 => {
                let text = self.to_text().map_err(serde::de::Error::custom)?;
                serde_json::from_str(&text)
            }
        }
    }

    /// The number of payload bytes on the wire.
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the payload has no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Borrows a binary or UTF-8 payload as `&str` without copying.
    ///
    /// A UTF-16 payload cannot be borrowed as UTF-8 text and reports
    /// [`PayloadError::Utf16NotBorrowable`] (its bytes may well be valid UTF-8, `"h\0i\0"`,
    /// which is not the text); [`Payload::to_text`] decodes every encoding.
    ///
    /// ```
    /// # use tokio_webwire::{Payload, PayloadError};
    /// assert_eq!(Payload::utf8("hi").as_str(), Ok("hi"));
    /// assert_eq!(Payload::utf16("hi").as_str(), Err(PayloadError::Utf16NotBorrowable));
    /// ```
    pub fn as_str(&self) -> Result<&str, PayloadError> {
        if self.encoding == Encoding::Utf16 {
            return Err(PayloadError::Utf16NotBorrowable);
        }
        utf8(&self.data)
    }

    /// Decodes the payload into a `String`, losslessly.
    ///
    /// Binary and UTF-8 payloads must be valid UTF-8; UTF-16 payloads are decoded from
    /// little-endian code units, surrogate pairs included. Invalid input is an error, never
    /// a replacement character.
    pub fn to_text(&self) -> Result<String, PayloadError> {
        match self.encoding {
            Encoding::Binary | Encoding::Utf8 => utf8(&self.data).map(str::to_owned),
            Encoding::Utf16 => decode_utf16_le(&self.data),
        }
    }
}

fn utf8(data: &[u8]) -> Result<&str, PayloadError> {
    std::str::from_utf8(data).map_err(|e| PayloadError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// Decodes little-endian UTF-16, refusing odd lengths and unpaired surrogates.
fn decode_utf16_le(data: &[u8]) -> Result<String, PayloadError> {
    if data.len() % 2 != 0 {
        return Err(PayloadError::OddUtf16Length { len: data.len() });
    }
    let units = data
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    let mut text = String::with_capacity(data.len() / 2);
    // `decode_utf16` yields one item per scalar value; count code units to report where an
    // unpaired surrogate sits.
    let mut index = 0;
    for decoded in char::decode_utf16(units) {
        match decoded {
            Ok(c) => {
                text.push(c);
                index += c.len_utf16();
            }
            Err(_) => return Err(PayloadError::UnpairedSurrogate { index }),
        }
    }
    Ok(text)
}

impl From<&str> for Payload {
    /// A UTF-8 payload (copies the text).
    fn from(text: &str) -> Self {
        Payload::utf8(text)
    }
}

impl From<String> for Payload {
    /// A UTF-8 payload (takes the `String` without copying).
    fn from(text: String) -> Self {
        Payload::utf8(text)
    }
}

impl From<Vec<u8>> for Payload {
    /// A binary payload.
    fn from(data: Vec<u8>) -> Self {
        Payload::binary(data)
    }
}

impl From<&'static [u8]> for Payload {
    /// A binary payload borrowing static bytes.
    fn from(data: &'static [u8]) -> Self {
        Payload::binary(data)
    }
}

impl From<Bytes> for Payload {
    /// A binary payload.
    fn from(data: Bytes) -> Self {
        Payload::binary(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_round_trips_surrogate_pairs() {
        let text = "a\u{1F980}z\u{FFFF}\u{10000}";
        let p = Payload::utf16(text);
        assert_eq!(p.len(), 2 * text.encode_utf16().count());
        assert_eq!(p.to_text().as_deref(), Ok(text));
    }

    #[test]
    fn utf16_reports_unpaired_surrogates_where_they_are() {
        // "A", a high surrogate followed by "B" (not a low surrogate).
        let p = Payload::utf16_units(vec![0x41, 0, 0x3d, 0xd8, 0x42, 0]).unwrap();
        assert_eq!(
            p.to_text(),
            Err(PayloadError::UnpairedSurrogate { index: 1 })
        );
        // A trailing lone high surrogate.
        let p = Payload::utf16_units(vec![0x41, 0, 0x3d, 0xd8]).unwrap();
        assert_eq!(
            p.to_text(),
            Err(PayloadError::UnpairedSurrogate { index: 1 })
        );
        // A lone low surrogate after a pair.
        let p = Payload::utf16_units(vec![0x3d, 0xd8, 0x80, 0xdc, 0x80, 0xdc]).unwrap();
        assert_eq!(
            p.to_text(),
            Err(PayloadError::UnpairedSurrogate { index: 2 })
        );
    }

    #[test]
    fn utf16_refuses_odd_lengths() {
        assert_eq!(
            Payload::utf16_units(vec![1, 2, 3]),
            Err(PayloadError::OddUtf16Length { len: 3 })
        );
        let odd = Payload {
            encoding: Encoding::Utf16,
            data: Bytes::from_static(b"abc"),
        };
        assert_eq!(odd.to_text(), Err(PayloadError::OddUtf16Length { len: 3 }));
    }

    #[test]
    fn utf8_is_validated_only_on_conversion() {
        let p = Payload {
            encoding: Encoding::Utf8,
            data: Bytes::from_static(b"ok\xff"),
        };
        assert_eq!(
            p.to_text(),
            Err(PayloadError::InvalidUtf8 { valid_up_to: 2 })
        );
        assert_eq!(
            p.as_str(),
            Err(PayloadError::InvalidUtf8 { valid_up_to: 2 })
        );
    }

    #[test]
    fn json_helpers_work_for_every_text_encoding() {
        let value = serde_json::json!({"user": "zoë", "n": [1, 2]});
        let utf8 = Payload::json(&value).unwrap();
        assert_eq!(utf8.encoding, Encoding::Utf8);
        assert_eq!(utf8.parse_json::<serde_json::Value>().unwrap(), value);
        let utf16 = Payload::utf16(utf8.as_str().unwrap());
        assert_eq!(utf16.parse_json::<serde_json::Value>().unwrap(), value);
    }

    #[test]
    fn conversions_pick_the_expected_encoding() {
        assert_eq!(Payload::from("x").encoding, Encoding::Utf8);
        assert_eq!(Payload::from(String::from("x")).encoding, Encoding::Utf8);
        assert_eq!(Payload::from(vec![1u8]).encoding, Encoding::Binary);
        assert_eq!(Payload::from(&b"x"[..]).encoding, Encoding::Binary);
        assert_eq!(
            Payload::from(Bytes::from_static(b"x")).encoding,
            Encoding::Binary
        );
        assert!(Payload::empty().is_empty());
    }
}
