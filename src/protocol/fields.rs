//! Validated header fields: request identifiers, names and error codes.

use std::fmt;

use bytes::Bytes;

use crate::protocol::{MessageType, ProtocolError};

/// The 8-byte identifier that pairs a reply with its request.
///
/// The server treats it as opaque and echoes it verbatim. Our client numbers its requests
/// with a `u64` counter written little-endian, as the Go client does (PROTOCOL.md §3).
///
/// ```
/// use tokio_webwire::protocol::RequestId;
///
/// let id = RequestId::from(1u64);
/// assert_eq!(id.as_bytes(), &[1, 0, 0, 0, 0, 0, 0, 0]);
/// assert_eq!(id.to_u64(), 1);
/// assert_eq!(id.to_string(), "0100000000000000");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RequestId([u8; 8]);

impl RequestId {
    /// An identifier with exactly these wire bytes.
    #[must_use]
    pub const fn new(bytes: [u8; 8]) -> Self {
        RequestId(bytes)
    }

    /// The wire bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// The wire bytes read as a little-endian `u64`.
    #[must_use]
    pub const fn to_u64(self) -> u64 {
        u64::from_le_bytes(self.0)
    }
}

impl From<u64> for RequestId {
    /// The little-endian encoding of `n`.
    fn from(n: u64) -> Self {
        RequestId(n.to_le_bytes())
    }
}

impl From<[u8; 8]> for RequestId {
    fn from(bytes: [u8; 8]) -> Self {
        RequestId(bytes)
    }
}

/// What `Debug` shows in place of a session key: that there is one, and its length, never
/// its bytes (a key in a log is a session for whoever reads the log).
#[derive(Clone, Copy)]
pub(crate) struct RedactedKey(pub(crate) usize);

impl fmt::Debug for RedactedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted: {} bytes>", self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

impl fmt::Display for RequestId {
    /// The wire bytes in hexadecimal, in wire order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The longest name or error code a one-byte length prefix can announce.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a name or error code: at most 255 bytes of printable ASCII (0x20..=0x7E).
///
/// The Go parser accepts any bytes here; PROTOCOL.md recommends the writers' rule for
/// parsers too, so a name is always a valid `&str`.
fn check_printable(
    bytes: &[u8],
    field: &'static str,
    message_type: Option<MessageType>,
) -> Result<(), ProtocolError> {
    if bytes.len() > MAX_NAME_LEN {
        return Err(ProtocolError::TooLong {
            field,
            len: bytes.len(),
        });
    }
    match bytes.iter().position(|b| !(0x20..=0x7e).contains(b)) {
        Some(index) => Err(ProtocolError::NonPrintable {
            message_type,
            field,
            byte: bytes[index],
            index,
        }),
        None => Ok(()),
    }
}

/// What [`Name`] and [`ErrorCode`] share: both wrap printable ASCII checked on construction.
macro_rules! printable_text {
    ($ty:ident, $what:literal) => {
        impl $ty {
            #[doc = concat!("The ", $what, " as text.")]
            #[must_use]
            pub fn as_str(&self) -> &str {
                // Construction admits only printable ASCII, which is always valid UTF-8.
                std::str::from_utf8(&self.0).unwrap_or_default()
            }

            #[doc = concat!("The ", $what, "'s bytes.")]
            #[must_use]
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.as_bytes() == other.as_bytes()
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_bytes() == other.as_bytes()
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = ProtocolError;
            /// Copies the text.
            fn try_from(text: &str) -> Result<Self, ProtocolError> {
                $ty::new(Bytes::copy_from_slice(text.as_bytes()))
            }
        }

        impl TryFrom<String> for $ty {
            type Error = ProtocolError;
            fn try_from(text: String) -> Result<Self, ProtocolError> {
                $ty::new(text)
            }
        }

        impl TryFrom<Bytes> for $ty {
            type Error = ProtocolError;
            fn try_from(bytes: Bytes) -> Result<Self, ProtocolError> {
                $ty::new(bytes)
            }
        }
    };
}

/// A literal name or error code as `Bytes`, panicking (at compile time in a `const`) unless
/// it is at most 255 bytes of printable ASCII.
const fn static_field(text: &'static str) -> Bytes {
    let bytes = text.as_bytes();
    assert!(
        bytes.len() <= MAX_NAME_LEN,
        "a WebWire name or error code is at most 255 bytes"
    );
    let mut i = 0;
    while i < bytes.len() {
        assert!(
            bytes[i] >= 0x20 && bytes[i] <= 0x7e,
            "a WebWire name or error code is printable ASCII (0x20..=0x7E)"
        );
        i += 1;
    }
    Bytes::from_static(bytes)
}

/// The name ("namespace") of a request or signal: 0 to 255 bytes of printable ASCII.
///
/// An empty name means "no name". A parsed name is a slice of the frame it came from.
///
/// ```
/// use tokio_webwire::protocol::Name;
///
/// let name = Name::new("auth").unwrap();
/// assert_eq!(name, "auth");
/// assert!(Name::new("tab\t").is_err());
/// assert!(Name::new("x".repeat(256)).is_err());
/// const ECHO: Name = Name::from_static("echo");
/// assert_eq!(ECHO.as_str(), "echo");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Name(Bytes);

impl Name {
    /// The empty name.
    #[must_use]
    pub const fn empty() -> Self {
        Name(Bytes::new())
    }

    /// A name from text or bytes, checked: at most 255 bytes, each in 0x20..=0x7E.
    ///
    /// Takes what converts into [`Bytes`] without a copy (`String`, `Vec<u8>`,
    /// `&'static str`); for a borrowed `&str` use `Name::try_from(s)`, which copies.
    pub fn new(name: impl Into<Bytes>) -> Result<Self, ProtocolError> {
        Self::checked(name.into(), None)
    }

    /// A name from a string literal, checked at compile time when used in a `const`.
    ///
    /// # Panics
    /// If `name` is longer than 255 bytes or has a byte outside 0x20..=0x7E: a programming
    /// error, never caused by a peer.
    #[must_use]
    pub const fn from_static(name: &'static str) -> Self {
        Name(static_field(name))
    }

    pub(crate) fn checked(
        bytes: Bytes,
        message_type: Option<MessageType>,
    ) -> Result<Self, ProtocolError> {
        check_printable(&bytes, "name", message_type)?;
        Ok(Name(bytes))
    }

    /// The length in bytes (0..=255).
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether this is the empty name ("no name").
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

printable_text!(Name, "name");

/// Something a request or signal name can be made from: [`Name`], `&Name`, `&str`,
/// `String`, `&String` or [`Bytes`]. Text and bytes are checked (0..=255 bytes of printable
/// ASCII) when the request is made; a borrowed `&str` is copied, so a `const` name from
/// [`Name::from_static`] is the cheapest.
///
/// ```
/// use tokio_webwire::protocol::{IntoName, Name};
///
/// assert_eq!("echo".into_name().unwrap(), Name::from_static("echo"));
/// assert!("tab\t".into_name().is_err());
/// ```
pub trait IntoName {
    /// The checked name.
    fn into_name(self) -> Result<Name, ProtocolError>;
}

impl IntoName for Name {
    fn into_name(self) -> Result<Name, ProtocolError> {
        Ok(self)
    }
}

impl IntoName for &Name {
    fn into_name(self) -> Result<Name, ProtocolError> {
        Ok(self.clone())
    }
}

impl IntoName for &str {
    fn into_name(self) -> Result<Name, ProtocolError> {
        Name::try_from(self)
    }
}

impl IntoName for String {
    fn into_name(self) -> Result<Name, ProtocolError> {
        Name::new(self)
    }
}

impl IntoName for &String {
    fn into_name(self) -> Result<Name, ProtocolError> {
        Name::try_from(self.as_str())
    }
}

impl IntoName for Bytes {
    fn into_name(self) -> Result<Name, ProtocolError> {
        Name::new(self)
    }
}

/// The code of an error reply: 1 to 255 bytes of printable ASCII.
///
/// ```
/// use tokio_webwire::protocol::ErrorCode;
///
/// let code = ErrorCode::new("WRONG_CREDENTIALS").unwrap();
/// assert_eq!(code.as_str(), "WRONG_CREDENTIALS");
/// assert!(ErrorCode::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(Bytes);

impl ErrorCode {
    /// An error code from text or bytes, checked: 1..=255 bytes, each in 0x20..=0x7E.
    ///
    /// Takes what converts into [`Bytes`] without a copy; for a borrowed `&str` use
    /// `ErrorCode::try_from(s)`, which copies.
    pub fn new(code: impl Into<Bytes>) -> Result<Self, ProtocolError> {
        Self::checked(code.into(), None)
    }

    /// An error code from a string literal, checked at compile time when used in a `const`.
    ///
    /// # Panics
    /// If `code` is empty, longer than 255 bytes or has a byte outside 0x20..=0x7E.
    #[must_use]
    pub const fn from_static(code: &'static str) -> Self {
        assert!(!code.is_empty(), "a WebWire error code is not empty");
        ErrorCode(static_field(code))
    }

    pub(crate) fn checked(
        bytes: Bytes,
        message_type: Option<MessageType>,
    ) -> Result<Self, ProtocolError> {
        if bytes.is_empty() {
            return Err(ProtocolError::EmptyField {
                field: "error code",
            });
        }
        check_printable(&bytes, "error code", message_type)?;
        Ok(ErrorCode(bytes))
    }
}

printable_text!(ErrorCode, "error code");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_exactly_printable_ascii() {
        for b in 0..=255u8 {
            let ok = (0x20..=0x7e).contains(&b);
            assert_eq!(Name::new(vec![b]).is_ok(), ok, "byte 0x{b:02x}");
        }
        assert_eq!(
            Name::new(vec![b'a', 0x7f]),
            Err(ProtocolError::NonPrintable {
                message_type: None,
                field: "name",
                byte: 0x7f,
                index: 1
            })
        );
    }

    #[test]
    fn names_are_limited_to_255_bytes() {
        assert_eq!(Name::new("n".repeat(255)).map(|n| n.len()), Ok(255));
        assert_eq!(
            Name::new("n".repeat(256)),
            Err(ProtocolError::TooLong {
                field: "name",
                len: 256
            })
        );
    }

    #[test]
    fn error_codes_must_not_be_empty() {
        assert_eq!(
            ErrorCode::new(""),
            Err(ProtocolError::EmptyField {
                field: "error code"
            })
        );
        assert!(ErrorCode::new("\u{e9}").is_err());
        assert_eq!(
            ErrorCode::try_from("E").map(|c| c.to_string()),
            Ok("E".to_owned())
        );
    }

    #[test]
    fn request_ids_are_little_endian() {
        let id = RequestId::from(0x0102_0304_0506_0708u64);
        assert_eq!(id.as_bytes(), &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(
            RequestId::new(*id.as_bytes()).to_u64(),
            0x0102_0304_0506_0708
        );
    }

    #[test]
    fn names_from_every_kind_of_text() {
        let expected = Name::from_static("n");
        assert_eq!("n".into_name(), Ok(expected.clone()));
        assert_eq!(String::from("n").into_name(), Ok(expected.clone()));
        assert_eq!((&String::from("n")).into_name(), Ok(expected.clone()));
        assert_eq!(Bytes::from_static(b"n").into_name(), Ok(expected.clone()));
        assert_eq!((&expected).into_name(), Ok(expected.clone()));
        assert!(String::from("\u{e9}").into_name().is_err());
    }
}
