//! [`PayloadError`]: why a payload's text conversion failed.
//!
//! The codec's errors are [`ProtocolError`](crate::ProtocolError), in `protocol/error.rs`.
//! Both are cheap to clone and compare, so tests can assert on the exact failure.

/// Why a payload could not be turned into a Rust `String`.
///
/// ```
/// use tokio_webwire::{Payload, PayloadError};
///
/// // A lone high surrogate is not text.
/// let payload = Payload::utf16_units(vec![0x00, 0xd8]).unwrap();
/// assert_eq!(payload.to_text(), Err(PayloadError::UnpairedSurrogate { index: 0 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// A UTF-8 (or binary) payload that is not valid UTF-8.
    #[error("invalid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 {
        /// How many leading bytes are valid UTF-8.
        valid_up_to: usize,
    },
    /// A UTF-16 payload with an odd number of bytes.
    #[error("UTF-16 payload of {len} bytes is not a whole number of code units")]
    OddUtf16Length {
        /// The payload length in bytes.
        len: usize,
    },
    /// A UTF-16 payload was asked for as borrowed UTF-8 text; decode it with `to_text`.
    #[error("a UTF-16 payload cannot be borrowed as UTF-8 text; decode it with to_text")]
    Utf16NotBorrowable,
    /// A UTF-16 payload with a surrogate that has no partner.
    #[error("unpaired UTF-16 surrogate at code unit {index}")]
    UnpairedSurrogate {
        /// The index of the offending code unit.
        index: usize,
    },
}
