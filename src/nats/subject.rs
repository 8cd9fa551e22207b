//! NATS subjects of the routes: `<prefix>.t.<escaped topic>`, `<prefix>.s.<hex>`,
//! `<prefix>.all`, and the checks a prefix must pass.

use std::fmt::Write as _;

use crate::backplane::{Route, RouteKind};

/// The subject a route travels on under `prefix`.
pub(super) fn of(prefix: &str, route: &Route) -> String {
    match route.kind() {
        RouteKind::Topic => format!("{prefix}.t.{}", escaped(route.name())),
        // 32 lowercase hex digits, made by the server: escaping changes nothing, and keeps
        // a subject valid whatever a future route name holds.
        RouteKind::Session => format!("{prefix}.s.{}", escaped(route.name())),
        RouteKind::Service => format!("{prefix}.all"),
    }
}

/// `name` as one subject token: every byte that is not printable ASCII, and `.` (the
/// token separator), `*` and `>` (wildcards) and `%` (the escape itself), as `%XX` (two
/// uppercase hex digits). So `room/1` stays `room/1`, `a.b` is `a%2Eb`, `héllo wörld`
/// is `h%C3%A9llo%20w%C3%B6rld`; the mapping is one to one, so no two topics share a
/// subject. A name of 1 024 bytes (the longest topic) is at most 3 072 bytes escaped.
pub(super) fn escaped(name: &str) -> String {
    let mut token = String::with_capacity(name.len());
    for &byte in name.as_bytes() {
        if byte.is_ascii_graphic() && !matches!(byte, b'.' | b'*' | b'>' | b'%') {
            token.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(token, "%{byte:02X}");
        }
    }
    token
}

/// The longest prefix: a subject must fit in NATS's control line (4 096 bytes unless the
/// server's `max_control_line` says otherwise; a longer line makes the server close the
/// connection) with the longest topic escaped (3 072 bytes) and the rest of a `PUB` line.
pub(super) const MAX_PREFIX_LEN: usize = 256;

/// Why `prefix` cannot start the backplane's subjects, if it cannot: it must be one or
/// more tokens separated by `.`, each non-empty, of printable ASCII without wildcards
/// (`*`, `>`), at most [`MAX_PREFIX_LEN`] bytes.
pub(super) fn invalid_prefix(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        return Some("it is empty");
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Some("it is longer than 256 bytes");
    }
    if prefix.split('.').any(str::is_empty) {
        return Some("it has an empty token (a leading, trailing or doubled '.')");
    }
    if !prefix.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Some("it holds a space, a control character or non-ASCII text");
    }
    if prefix.contains(['*', '>']) {
        return Some("it holds a wildcard ('*' or '>')");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_topics_stay_readable() {
        assert_eq!(escaped("room/1"), "room/1");
        assert_eq!(escaped("news:eu-west_2"), "news:eu-west_2");
    }

    #[test]
    fn what_a_subject_cannot_carry_is_escaped() {
        assert_eq!(escaped("a.b"), "a%2Eb");
        assert_eq!(escaped("*"), "%2A");
        assert_eq!(escaped(">"), "%3E");
        assert_eq!(escaped("50%"), "50%25");
        assert_eq!(escaped("a b\tc\r\n"), "a%20b%09c%0D%0A");
        assert_eq!(escaped("héllo"), "h%C3%A9llo");
        assert_eq!(escaped("{x}"), "{x}");
    }

    #[test]
    fn distinct_topics_get_distinct_tokens() {
        // The escape character is escaped itself, so an escaped-looking name cannot take
        // another's subject.
        assert_ne!(escaped("a.b"), escaped("a%2Eb"));
        assert_eq!(escaped("a%2Eb"), "a%252Eb");
    }

    #[test]
    fn every_escaped_token_is_a_valid_subject_token() {
        let names = [
            "a.b.c", "*", ">", " ", "\u{a0}", "\u{2028}", "\0", "x>y*z", "%%",
        ];
        for name in names {
            let token = escaped(name);
            assert!(!token.is_empty());
            assert!(
                token
                    .bytes()
                    .all(|byte| byte.is_ascii_graphic() && !matches!(byte, b'.' | b'*' | b'>')),
                "{name:?} gave {token:?}"
            );
        }
    }

    #[test]
    fn the_longest_topic_fits() {
        let longest = "é".repeat(512); // 1 024 bytes, each escaped
        assert_eq!(escaped(&longest).len(), 3 * 1024);
    }

    #[test]
    fn subjects_of_routes() {
        let topic = Route::topic("chat.room 1").expect("a valid topic");
        assert_eq!(of("webwire", &topic), "webwire.t.chat%2Eroom%201");
        assert_eq!(of("shop.bus", &Route::service()), "shop.bus.all");
    }

    #[test]
    fn prefixes() {
        for good in ["webwire", "shop.bus", "a-b_c.d1", "$X"] {
            assert_eq!(invalid_prefix(good), None, "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a.*", "a.>", "x>y", "é"] {
            assert!(invalid_prefix(bad).is_some(), "{bad:?}");
        }
        assert_eq!(invalid_prefix(&"p".repeat(MAX_PREFIX_LEN)), None);
        assert!(invalid_prefix(&"p".repeat(MAX_PREFIX_LEN + 1)).is_some());
        // The longest subject fits in the default control line with room for the rest of
        // a PUB line ("PUB ", a reply subject none, the size, CRLF).
        let longest = format!(
            "{}.t.{}",
            "p".repeat(MAX_PREFIX_LEN),
            escaped(&"é".repeat(512))
        );
        assert!(longest.len() + 32 < 4096, "{}", longest.len());
    }
}
