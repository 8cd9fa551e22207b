//! Parsing allocates nothing; encoding allocates exactly once.
//!
//! Heap blocks are counted by dhat's allocator; one `#[test]` in this file, so that no
//! other test allocates while it counts.

use bytes::Bytes;
use tokio_webwire::Payload;
use tokio_webwire::protocol::{Message, Name, RequestId};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Heap blocks allocated while `f` runs.
fn blocks_allocated<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = dhat::HeapStats::get().total_blocks;
    let out = f();
    (dhat::HeapStats::get().total_blocks - before, out)
}

/// A frame as the WebSocket layer hands it over: a shared buffer, so that slicing it only
/// bumps a reference count. (The first clone of a `Bytes` made from a `Vec` allocates its
/// shared header once; that is the frame's cost, not the parser's, so it is paid here.)
fn shared_frame(message: &Message) -> Bytes {
    let frame = message.encode().expect("valid message");
    drop(frame.clone());
    frame
}

#[test]
fn parse_allocates_nothing_and_encode_allocates_once() {
    let _profiler = dhat::Profiler::builder().testing().build();

    let payload = Payload::binary(vec![7u8; 4096]);
    let messages = [
        Message::request(
            RequestId::from(1),
            Name::from_static("echo"),
            payload.clone(),
        ),
        Message::request(
            RequestId::from(2),
            Name::from_static("odd"),
            Payload::utf16("text"),
        ),
        Message::signal(Name::from_static("event"), payload.clone()),
        Message::signal(Name::empty(), Payload::utf16("x")),
        Message::reply(RequestId::from(1), payload.clone()),
        Message::reply(RequestId::from(3), Payload::utf16("")),
    ];
    for message in &messages {
        let frame = shared_frame(message);
        let (blocks, parsed) = blocks_allocated(|| Message::parse(frame.clone()));
        assert_eq!(parsed.as_ref(), Ok(message));
        dhat::assert_eq!(blocks, 0, "parsing {:?} allocated", message.message_type());
        // The parsed payload is the frame's memory, not a copy.
        if let Some(p) = parsed
            .ok()
            .and_then(|m| m.payload())
            .filter(|p| !p.is_empty())
        {
            let frame_range = frame.as_ptr_range();
            assert!(frame_range.contains(&p.data.as_ptr()), "payload copied");
        }

        let (blocks, encoded) = blocks_allocated(|| message.encode());
        assert_eq!(encoded.as_ref().map(|b| b.len()), Ok(frame.len()));
        dhat::assert_eq!(blocks, 1, "encoding {:?}", message.message_type());
    }
}
