//! Fuzzes the WebWire v2.0 codec: `Message::parse` on arbitrary bytes, then the round trip.
//!
//! For every input:
//!
//! 1. `Message::parse` must not panic (any `Err` is fine).
//! 2. If it parses, `Message::encode` must succeed, with as many bytes as `encoded_len` says. Every frame the parser accepts describes
//!    a message the writer rules of PROTOCOL.md §2.5 allow (the parser's length rules already
//!    imply a non-empty session JSON and session key, a name or a payload for signals and
//!    requests, whole UTF-16 code units, at least one code unit in a UTF-16 signal, and a read
//!    timeout that fits in a `u32` of milliseconds), so there is no legitimate encode failure
//!    to tolerate.
//! 3. The encoded frame must equal the input, normalized in exactly the two ways the writer
//!    is allowed to differ from what a peer sent: special replies `01`..`05` are written as
//!    their first 9 bytes (parsers ignore trailing bytes, §2.3), and a UTF-16 header padding
//!    byte is written as `00` (parsers ignore its value, §2.2).
//! 4. Parsing the encoded frame must give back a message equal to the first parse result,
//!    and encoding that again must give the same bytes (the writer's output is canonical).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tokio_webwire::protocol::{Message, MessageType};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };

    let encoded = match msg.encode() {
        Ok(encoded) => encoded,
        Err(err) => panic!("encode failed on a parsed message: {err:?}\nmessage: {msg:?}"),
    };

    assert_eq!(
        msg.encoded_len(),
        Ok(encoded.len()),
        "encoded_len disagrees with encode"
    );

    let expected = normalized(data, &msg);
    assert_eq!(
        &encoded[..],
        &expected[..],
        "re-encoding differs from the normalized input\nmessage: {msg:?}"
    );

    let reparsed = match Message::parse(encoded.clone()) {
        Ok(reparsed) => reparsed,
        Err(err) => panic!("the encoded frame does not parse: {err:?}\nmessage: {msg:?}"),
    };
    assert_eq!(reparsed, msg, "parse(encode(parse(x))) != parse(x)");

    let again = reparsed
        .encode()
        .expect("encode failed on a re-parsed message");
    assert_eq!(again, encoded, "encoding is not stable across a round trip");
});

/// The input as the writer is expected to reproduce it: special replies cut to type +
/// identifier, and the UTF-16 header padding byte (if this message has one) set to `00`.
fn normalized(data: &[u8], msg: &Message) -> Vec<u8> {
    use MessageType as T;
    let mut expected = data.to_vec();
    let padding_at = match msg.message_type() {
        T::ReplyShutdown
        | T::ReplyInternalError
        | T::ReplySessionNotFound
        | T::ReplyMaxSessConnsReached
        | T::ReplySessionsDisabled => {
            expected.truncate(9);
            None
        }
        // Padding follows an odd name: type, length byte, name.
        T::SignalUtf16 => odd_name_len(msg).map(|len| 2 + len),
        // Padding follows an odd name: type, identifier, length byte, name.
        T::RequestUtf16 => odd_name_len(msg).map(|len| 10 + len),
        // Padding always sits right after the identifier.
        T::ReplyUtf16 => Some(9),
        _ => None,
    };
    if let Some(at) = padding_at {
        expected[at] = 0;
    }
    expected
}

fn odd_name_len(msg: &Message) -> Option<usize> {
    let len = msg.name().map_or(0, |name| name.len());
    (len % 2 == 1).then_some(len)
}
