//! The service's secret and what it makes: the tag every envelope carries, the keyed hash
//! that names a session's route, and a revocation's session key, encrypted.
//!
//! Three keys are derived from the secret, one per use, as `HMAC-SHA256(secret, label)`
//! (so that no output of one use is ever an input of another):
//!
//! | key | label | used for |
//! |---|---|---|
//! | tag | `webwire backplane tag` | `HMAC-SHA256(tag key, signed bytes)`, 32 bytes, on every envelope |
//! | route | `webwire session route` | a session's route: the first 16 bytes of `HMAC-SHA256(route key, session key)`, as 32 lowercase hex digits |
//! | seal | `webwire revocation seal` | a revocation's session key: ChaCha20 (RFC 8439) with a random 12-byte nonce; the tag covers the nonce and the ciphertext |
//!
//! `docs/backplane.md` is the specification, with golden messages.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The length of a tag.
pub(crate) const TAG_LEN: usize = 32;

/// The length of a ChaCha20 nonce.
pub(crate) const NONCE_LEN: usize = 12;

/// The shortest secret a server accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// The keys a service's secret gives. Debug shows none of them.
#[derive(Clone)]
pub(crate) struct Seal {
    tag: HmacSha256,
    route: HmacSha256,
    seal: [u8; 32],
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(<redacted>)")
    }
}

/// `HMAC-SHA256(key, data)`.
fn hmac(key: &[u8], data: &[&[u8]]) -> [u8; 32] {
    let mut mac = keyed(key);
    for part in data {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// An HMAC-SHA256 state with `key` (HMAC takes a key of any length).
fn keyed(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC hashes a long key and pads a short one: no length is refused.
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

impl Seal {
    /// The keys of `secret`.
    pub(crate) fn new(secret: &[u8]) -> Self {
        Seal {
            tag: keyed(&hmac(secret, &[b"webwire backplane tag"])),
            route: keyed(&hmac(secret, &[b"webwire session route"])),
            seal: hmac(secret, &[b"webwire revocation seal"]),
        }
    }

    /// The tag of the concatenation of `parts`.
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut mac = self.tag.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of the concatenation of `parts`, compared in constant time.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.tag.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }

    /// The name of the route of the session `key`: 32 lowercase hex digits.
    pub(crate) fn session_route(&self, key: &str) -> String {
        let mut mac = self.route.clone();
        mac.update(key.as_bytes());
        let digest: [u8; 32] = mac.finalize().into_bytes().into();
        let mut name = String::with_capacity(32);
        for byte in &digest[..16] {
            name.push(char::from(HEX[usize::from(byte >> 4)]));
            name.push(char::from(HEX[usize::from(byte & 15)]));
        }
        name
    }

    /// `key` encrypted under a new random nonce: the nonce, then the ciphertext.
    pub(crate) fn encrypt(&self, key: &[u8]) -> Vec<u8> {
        self.encrypt_with(crate::random::random_bytes(), key)
    }

    pub(crate) fn encrypt_with(&self, nonce: [u8; NONCE_LEN], key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + key.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(key);
        let mut cipher = ChaCha20::new(&self.seal.into(), &nonce.into());
        cipher.apply_keystream(&mut out[NONCE_LEN..]);
        out
    }

    /// The key in `sealed` (a nonce, then the ciphertext); `None` if it is shorter than a
    /// nonce. (Its tag was checked first: only a sealed key of this service gets here.)
    pub(crate) fn decrypt(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = sealed.get(..NONCE_LEN)?.try_into().ok()?;
        let mut key = sealed[NONCE_LEN..].to_vec();
        let mut cipher = ChaCha20::new(&self.seal.into(), &nonce.into());
        cipher.apply_keystream(&mut key);
        Some(key)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let tag = hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn chacha20_matches_rfc_8439_section_2_4_2() {
        // RFC 8439 §2.4.2: key 00..1f, nonce 00 00 00 00 00 00 00 4a 00 00 00 00, counter 1.
        // Our stream starts at counter 0, so the test encrypts 64 bytes of padding first.
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let nonce = [0, 0, 0, 0, 0, 0, 0, 0x4a, 0, 0, 0, 0];
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut data = vec![0u8; 64];
        data.extend_from_slice(plain);
        let mut cipher = ChaCha20::new(&key.into(), &nonce.into());
        cipher.apply_keystream(&mut data);
        let start: String = data[64..80].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(start, "6e2e359a2568f98041ba0728dd0d6981");
    }

    #[test]
    fn a_sealed_key_opens_with_the_same_secret_only() {
        let seal = Seal::new(b"a service secret, 32 bytes long!");
        let sealed = seal.encrypt(b"the-session-key");
        assert_ne!(&sealed[NONCE_LEN..], b"the-session-key");
        assert_eq!(
            seal.decrypt(&sealed).as_deref(),
            Some(&b"the-session-key"[..])
        );
        let other = Seal::new(b"another service's secret, 32 b!!");
        assert_ne!(
            other.decrypt(&sealed).as_deref(),
            Some(&b"the-session-key"[..])
        );
        assert_eq!(seal.decrypt(&sealed[..NONCE_LEN - 1]), None);
        // Two seals of one key differ (a nonce each).
        assert_ne!(seal.encrypt(b"k"), seal.encrypt(b"k"));
    }

    #[test]
    fn tags_and_routes_depend_on_the_secret() {
        let a = Seal::new(b"secret number one, long enough");
        let b = Seal::new(b"secret number two, long enough");
        let tag = a.tag(&[b"abc", b"def"]);
        assert!(a.verify(&[b"abcdef"], &tag), "the parts are concatenated");
        assert!(!b.verify(&[b"abcdef"], &tag));
        assert!(!a.verify(&[b"abcdeg"], &tag));
        assert!(!a.verify(&[b"abcdef"], &tag[..31]));
        let route = a.session_route("key");
        assert_eq!(route.len(), 32);
        assert!(route.bytes().all(|c| HEX.contains(&c)));
        assert_eq!(route, a.session_route("key"));
        assert_ne!(route, b.session_route("key"));
        assert_ne!(route, a.session_route("kez"));
        assert!(!format!("{a:?}").contains(&route));
    }
}
