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

use crate::protocol::ProtocolError;
use crate::session::{Session, SessionInfo};

#[derive(Serialize)]
struct WireOut<'a> {
    k: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    c: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    l: OffsetDateTime,
    #[serde(skip_serializing_if = "SortedMap::is_empty")]
    i: SortedMap<'a>,
}

#[derive(Deserialize)]
struct WireIn {
    /// Read as any value: serde's error for a string of the wrong type would quote the
    /// value, and errors end up in logs.
    k: Value,
    #[serde(with = "time::serde::rfc3339")]
    c: OffsetDateTime,
    /// Both reference clients ignore `l`, and Go reads a missing one as the zero time; we
    /// read it as `c`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    l: Option<OffsetDateTime>,
    #[serde(default)]
    i: Option<Map<String, Value>>,
}

/// An object written with its keys sorted at every level, as Go writes maps. serde_json's
/// `Map` sorts only while its `preserve_order` feature is off, and any crate in a build can
/// switch that on.
struct SortedMap<'a>(&'a Map<String, Value>);

impl SortedMap<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for SortedMap<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<_> = self.0.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        serializer.collect_map(entries.into_iter().map(|(k, v)| (k, Sorted(v))))
    }
}

struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => SortedMap(map).serialize(serializer),
            Value::Array(items) => serializer.collect_seq(items.iter().map(Sorted)),
            scalar => scalar.serialize(serializer),
        }
    }
}

impl Session {
    /// The session's JSON wire form, as NotifySessionCreated and a restore reply carry it.
    ///
    /// Fails only for timestamps RFC 3339 cannot express: years outside 0..=9999, and UTC
    /// offsets with a seconds part (historical local mean times; Go would drop the seconds
    /// and so write a different instant).
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
            i: SortedMap(self.info.as_map()),
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
        let Value::String(key) = wire.k else {
            return Err(ProtocolError::SessionJson {
                reason: "the key \"k\" is not a string".to_owned(),
            });
        };
        Ok(Session {
            key,
            created: wire.c,
            last_lookup: wire.l.unwrap_or(wire.c),
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
        let back = Session::from_json(&json).unwrap();
        assert_eq!(back, session);
        // `OffsetDateTime` equality ignores the offset; the wire form must keep it.
        assert_eq!(back.created.offset(), session.created.offset());
        assert_eq!(back.last_lookup.offset(), session.last_lookup.offset());
    }

    #[test]
    fn nested_objects_are_written_sorted() {
        let info: Map<String, Value> =
            serde_json::from_str(r#"{"b":[{"y":1,"x":2}],"a":{"d":1,"c":{"f":0,"e":0}}}"#).unwrap();
        let session = Session {
            key: "k".into(),
            created: datetime!(2019-01-04 21:19:06 UTC),
            last_lookup: datetime!(2019-01-04 21:19:06 UTC),
            info: SessionInfo::from(info),
        };
        let json = session.to_json().unwrap();
        assert!(
            std::str::from_utf8(&json)
                .unwrap()
                .ends_with(r#""i":{"a":{"c":{"e":0,"f":0},"d":1},"b":[{"x":2,"y":1}]}}"#),
            "{json:?}"
        );
    }

    #[test]
    fn a_missing_last_lookup_reads_as_the_creation_time() {
        let s = Session::from_json(br#"{"k":"x","c":"2019-01-04T21:19:06+01:00"}"#).unwrap();
        assert_eq!(s.last_lookup, s.created);
        let s = Session::from_json(br#"{"k":"x","c":"2019-01-04T21:19:06Z","l":null}"#).unwrap();
        assert_eq!(s.last_lookup, s.created);
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
            r#"{"k":"x","l":"2019-01-04T21:19:06Z"}"#,
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
    fn errors_never_quote_a_key() {
        for json in [
            r#"{"k":4711081542,"c":"2019-01-04T21:19:06Z"}"#,
            r#"{"k":["4711081542"],"c":"2019-01-04T21:19:06Z"}"#,
            r#"{"k":{"4711081542":1},"c":"2019-01-04T21:19:06Z"}"#,
            r#"{"k":"4711081542","c":"2019-01-04T21:19:06Z","i":"x"}"#,
            r#"{"k":"4711081542","c":"4711081542"}"#,
        ] {
            let err = Session::from_json(json.as_bytes()).expect_err(json);
            assert!(!err.to_string().contains("4711081542"), "{err}");
            assert!(!format!("{err:?}").contains("4711081542"), "{err:?}");
        }
        let err = Session::from_json(br#"{"k":1,"c":"2019-01-04T21:19:06Z"}"#).unwrap_err();
        assert!(err.to_string().contains("\"k\" is not a string"), "{err}");
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
