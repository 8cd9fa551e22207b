//! [`Link`]: what requests and signals see of a live connection.

use std::sync::atomic::AtomicBool;

use bytes::Bytes;

use crate::client::RequestError;
use crate::client::queue::{FrameQueue, Refused};
use crate::protocol::AcceptConf;

/// What requests and signals see of a live connection: where to put frames, and the
/// server's parameters. Replaced in the client's state when the connection changes.
#[derive(Debug)]
pub(crate) struct Link {
    /// Counts the client's connections from 1; pending requests remember theirs.
    pub(crate) generation: u64,
    /// Encoded frames for the driver.
    pub(crate) queue: FrameQueue,
    /// The server's AcceptConf.
    pub(crate) conf: AcceptConf,
    /// The handler has been told of this connection (`connected` is queued): until then
    /// the driver holds server signals back, so that none reaches the handler before it.
    pub(crate) announced: AtomicBool,
}

impl Link {
    /// The largest message the server accepts.
    pub(crate) fn limit(&self) -> usize {
        usize::try_from(self.conf.message_buffer_size).unwrap_or(usize::MAX)
    }

    /// Refuses a message of `len` bytes that the server would not accept.
    pub(crate) fn check_size(&self, len: usize) -> Result<(), RequestError> {
        let limit = self.limit();
        if len > limit {
            return Err(RequestError::PayloadTooLarge { len, limit });
        }
        Ok(())
    }

    /// Queues `frame` if there is room right now; hands it back otherwise.
    pub(crate) fn try_push(&self, frame: Bytes) -> Result<(), (Bytes, Refused)> {
        self.queue.try_push(frame)
    }

    /// Queues `frame`, waiting for room. `Err` hands it back if the connection ended
    /// before the driver took it: nothing was sent.
    pub(crate) async fn push(&self, frame: Bytes) -> Result<(), Bytes> {
        if !self.reserve().await {
            return Err(frame);
        }
        self.push_reserved(frame)
    }

    /// Waits for room for one frame and takes it; false if the connection ended. Cancel
    /// safe: dropped while waiting, it takes nothing.
    pub(crate) async fn reserve(&self) -> bool {
        self.queue.reserve().await
    }

    /// Queues `frame` in room taken by [`reserve`](Self::reserve); hands it back if the
    /// connection ended.
    pub(crate) fn push_reserved(&self, frame: Bytes) -> Result<(), Bytes> {
        self.queue.push_reserved(frame)
    }
}
