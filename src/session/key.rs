//! Session keys: the [`SessionKeyGenerator`] trait, the default generator, and the check
//! every generated key passes before it goes on the wire (PROTOCOL.md §4.2).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng;
use rand::rngs::SysRng;

use super::SessionError;

/// The longest session key, in bytes, that a server creates.
///
/// Keys travel in NotifySessionCreated and restore requests and may name files in a store;
/// a kilobyte is far more than any sensible key needs.
pub const MAX_KEY_LEN: usize = 1024;

/// Makes the keys of new sessions.
///
/// A key must be unguessable: whoever knows it can restore the session. It must also be
/// 1 to [`MAX_KEY_LEN`] bytes of printable ASCII without spaces (`0x21..=0x7E`): session
/// creation fails with [`SessionError::InvalidKey`] for anything else.
///
/// Any `Fn() -> String + Send + Sync + 'static` is a generator:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tokio_webwire::session::SessionKeyGenerator;
///
/// let counter = AtomicU64::new(0);
/// // Guessable: for tests only.
/// let generator = move || format!("test-{}", counter.fetch_add(1, Ordering::Relaxed));
/// assert_eq!(generator.generate(), "test-0");
/// assert_eq!(generator.generate(), "test-1");
/// ```
pub trait SessionKeyGenerator: Send + Sync + 'static {
    /// A new key, different from every key made before.
    fn generate(&self) -> String;
}

impl<F> SessionKeyGenerator for F
where
    F: Fn() -> String + Send + Sync + 'static,
{
    fn generate(&self) -> String {
        self()
    }
}

/// The default generator: 256 bits from the operating system's CSPRNG, written as URL-safe
/// base64 without padding, so 43 characters of `A-Z a-z 0-9 - _`.
///
/// (The Go server makes 384-bit keys of 64 characters; clients treat keys as opaque, and 256
/// bits are as far beyond guessing.)
///
/// ```
/// use tokio_webwire::session::{DefaultKeyGenerator, SessionKeyGenerator};
///
/// let key = DefaultKeyGenerator.generate();
/// assert_eq!(key.len(), 43);
/// assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
/// assert_ne!(key, DefaultKeyGenerator.generate());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultKeyGenerator;

/// The random bytes in a default key.
const KEY_BYTES: usize = 32;

impl SessionKeyGenerator for DefaultKeyGenerator {
    /// A fresh key. Should the OS ever fail to supply randomness, the key is empty, which
    /// session creation rejects as [`SessionError::InvalidKey`]: an error, never a panic and
    /// never a weak key.
    fn generate(&self) -> String {
        let mut bytes = [0u8; KEY_BYTES];
        match SysRng.try_fill_bytes(&mut bytes) {
            Ok(()) => URL_SAFE_NO_PAD.encode(bytes),
            Err(err) => {
                tracing::error!(%err, "the OS random number generator failed");
                String::new()
            }
        }
    }
}

/// Checks that `key` is 1 to [`MAX_KEY_LEN`] bytes of printable ASCII without spaces.
///
/// The server runs it on every generated key; a key that fails cannot be created (a custom
/// generator's bug becomes an error, not a panic or a key the JS client refuses).
pub(crate) fn check_key(key: &str) -> Result<(), SessionError> {
    let reason = if key.is_empty() {
        "empty"
    } else if key.len() > MAX_KEY_LEN {
        "longer than MAX_KEY_LEN bytes"
    } else if !key.bytes().all(|b| matches!(b, 0x21..=0x7E)) {
        "contains a byte outside printable ASCII 0x21..=0x7E"
    } else {
        return Ok(());
    };
    Err(SessionError::InvalidKey { reason })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn default_keys_are_43_url_safe_chars_of_256_bits() {
        let key = DefaultKeyGenerator.generate();
        assert_eq!(key.len(), 43);
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(&key).unwrap().len(), 32);
        check_key(&key).unwrap();
    }

    #[test]
    fn default_keys_differ() {
        let keys: HashSet<String> = (0..1000).map(|_| DefaultKeyGenerator.generate()).collect();
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn default_keys_use_every_bit() {
        // Each of the 256 bit positions is set in some of 64 keys and clear in others;
        // a constant or truncated source would fail (chance of a false alarm: ~2^-55).
        let keys: Vec<Vec<u8>> = (0..64)
            .map(|_| {
                URL_SAFE_NO_PAD
                    .decode(DefaultKeyGenerator.generate())
                    .unwrap()
            })
            .collect();
        for bit in 0..KEY_BYTES * 8 {
            let ones = keys
                .iter()
                .filter(|k| k[bit / 8] & (1 << (bit % 8)) != 0)
                .count();
            assert!(ones > 0 && ones < keys.len(), "bit {bit} never changes");
        }
    }

    #[test]
    fn closures_are_generators() {
        let generator: Box<dyn SessionKeyGenerator> = Box::new(|| "fixed-key".to_owned());
        assert_eq!(generator.generate(), "fixed-key");
    }

    #[test]
    fn check_key_accepts_printable_ascii() {
        check_key("a").unwrap();
        check_key("!~azAZ09-_.:/").unwrap();
        check_key(&"k".repeat(MAX_KEY_LEN)).unwrap();
    }

    #[test]
    fn check_key_rejects_bad_keys() {
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        for key in [
            "",
            " ",
            "a b",
            "a\tb",
            "a\0b",
            "a\nb",
            "\x7f",
            "ключ",
            "é",
            too_long.as_str(),
        ] {
            assert!(
                matches!(check_key(key), Err(SessionError::InvalidKey { .. })),
                "{key:?} accepted"
            );
        }
    }

    #[test]
    fn check_key_errors_never_show_the_key() {
        let err = check_key("secret\u{1}").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}
