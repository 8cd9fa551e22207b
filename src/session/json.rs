//! The session's JSON wire form, `{"k":…,"c":…,"l":…,"i":{…}}` (PROTOCOL.md §4.1).
//!
//! Written byte for byte as Go's `encoding/json` writes it: fields in the order `k`, `c`,
//! `l`, `i`; `i` left out when empty; keys inside `i` sorted; timestamps in RFC 3339 with up
//! to nine fraction digits and trailing zeros removed; `<`, `>`, `&`, U+2028 and U+2029
//! escaped as `\uXXXX`. Read leniently: any field order, `i` absent or `null`.

use std::io;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::ProtocolError;
use crate::session::{Session, SessionInfo};

#[derive(Serialize)]
struct WireOut<'a> {
    k: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    c: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    l: OffsetDateTime,
    #[serde(skip_serializing_if = "Map::is_empty")]
    i: &'a Map<String, Value>,
}

#[derive(Deserialize)]
struct WireIn {
    k: String,
    #[serde(with = "time::serde::rfc3339")]
    c: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    l: OffsetDateTime,
    #[serde(default)]
    i: Option<Map<String, Value>>,
}

impl Session {
    /// The session's JSON wire form, as NotifySessionCreated and a restore reply carry it.
    ///
    /// Fails only for timestamps RFC 3339 cannot express (years outside 0..=9999).
    ///
    /// ```
    /// use tokio_webwire::{Session, SessionInfo};
    /// use time::macros::datetime;
    ///
    /// let session = Session {
    ///     key: "testsessionkey".into(),
    ///     created: datetime!(2019-01-04 21:19:06 UTC),
    ///     last_lookup: datetime!(2019-01-05 08:00:00.5 UTC),
    ///     info: SessionInfo::new(),
    /// };
    /// assert_eq!(
    ///     &session.to_json().unwrap()[..],
    ///     br#"{"k":"testsessionkey","c":"2019-01-04T21:19:06Z","l":"2019-01-05T08:00:00.5Z"}"#,
    /// );
    /// ```
    pub fn to_json(&self) -> Result<Bytes, ProtocolError> {
        let wire = WireOut {
            k: &self.key,
            c: self.created,
            l: self.last_lookup,
            i: self.info.as_map(),
        };
        let mut out = Vec::with_capacity(128);
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoEscapes);
        wire.serialize(&mut serializer).map_err(json_error)?;
        Ok(Bytes::from(out))
    }

    /// Reads a session from its JSON wire form.
    ///
    /// ```
    /// use tokio_webwire::Session;
    ///
    /// let s = Session::from_json(br#"{"i":{"uid":42},"l":"2019-01-04T21:19:06+01:00","k":"x","c":"2019-01-04T21:19:06.123456789+01:00"}"#).unwrap();
    /// assert_eq!(s.key, "x");
    /// assert_eq!(s.created.nanosecond(), 123_456_789);
    /// assert_eq!(s.info.get::<u32>("uid").unwrap(), Some(42));
    /// ```
    pub fn from_json(json: &[u8]) -> Result<Session, ProtocolError> {
        let wire: WireIn = serde_json::from_slice(json).map_err(json_error)?;
        Ok(Session {
            key: wire.k,
            created: wire.c,
            last_lookup: wire.l,
            info: SessionInfo::from(wire.i.unwrap_or_default()),
        })
    }
}

fn json_error(err: serde_json::Error) -> ProtocolError {
    ProtocolError::SessionJson {
        reason: err.to_string(),
    }
}

/// serde_json's compact output plus the extra escapes Go's `encoding/json` applies, so that
/// our bytes equal the Go server's.
struct GoEscapes;

impl serde_json::ser::Formatter for GoEscapes {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(['<', '>', '&', '\u{2028}', '\u{2029}']) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(writer, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn writes_go_escapes_and_sorted_info() {
        let mut info = SessionInfo::new();
        info.insert("z", &"a<b>&c\u{2028}\u{2029}").unwrap();
        info.insert("a", &1).unwrap();
        let session = Session {
            key: "k&".into(),
            created: datetime!(2019-01-04 21:19:06.1 +01:00),
            last_lookup: datetime!(2019-01-04 21:19:06.000000001 -05:30),
            info,
        };
        let json = session.to_json().unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"k":"k\u0026","c":"2019-01-04T21:19:06.1+01:00","l":"2019-01-04T21:19:06.000000001-05:30","i":{"a":1,"z":"a\u003cb\u003e\u0026c\u2028\u2029"}}"#
        );
        assert_eq!(Session::from_json(&json).unwrap(), session);
    }

    #[test]
    fn null_or_missing_info_reads_as_empty() {
        for json in [
            r#"{"k":"x","c":"2019-01-04T21:19:06Z","l":"2019-01-04T21:19:06Z"}"#,
            r#"{"k":"x","c":"2019-01-04T21:19:06Z","l":"2019-01-04T21:19:06Z","i":null}"#,
        ] {
            assert!(Session::from_json(json.as_bytes()).unwrap().info.is_empty());
        }
    }

    #[test]
    fn rejects_what_is_not_a_session() {
        for json in [
            "",
            "[]",
            r#"{"k":"x","c":"yesterday","l":"2019-01-04T21:19:06Z"}"#,
            r#"{"k":"x","c":"2019-01-04T21:19:06Z"}"#,
            r#"{"k":1,"c":"2019-01-04T21:19:06Z","l":"2019-01-04T21:19:06Z"}"#,
            r#"{"k":"x","c":"2019-01-04T21:19:06Z","l":"2019-01-04T21:19:06Z","i":[1]}"#,
        ] {
            assert!(
                matches!(
                    Session::from_json(json.as_bytes()),
                    Err(ProtocolError::SessionJson { .. })
                ),
                "{json}"
            );
        }
    }

    #[test]
    fn refuses_years_rfc3339_cannot_write() {
        let mut session = Session::new("x", SessionInfo::new());
        session.created = datetime!(-0001-01-01 0:00 UTC);
        assert!(matches!(
            session.to_json(),
            Err(ProtocolError::SessionJson { .. })
        ));
    }
}
