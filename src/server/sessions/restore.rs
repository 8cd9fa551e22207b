//! A restore (PROTOCOL.md §4.4): the key registered and looked up, the session attached
//! while its registration stands, then the `session_restored` hook, each locked step
//! noting the sessions the connection left for their hooks.

use super::*;

impl Sessions {
    /// Answers a restore request (§4.4) for `conn`.
    ///
    /// A connection that already holds a session and restores another one leaves the old
    /// one first, as a disconnect would (the old session stays stored and restorable); the
    /// reference keeps both registrations, a leak. Restoring the session it holds just
    /// answers with it again.
    pub(crate) async fn restore(&self, conn: &Connection, id: RequestId, key: Bytes) -> Message {
        if !self.enabled {
            return Message::ReplySessionsDisabled { id };
        }
        // Keys are untrusted bytes: one we could never have made is simply not found.
        let Some(key) = std::str::from_utf8(&key)
            .ok()
            .filter(|key| check_key(key).is_ok())
        else {
            return Message::ReplySessionNotFound { id };
        };
        // Each step under the connection's session lock notes the sessions the connection
        // left; their `session_left` hooks run once the lock is released (a hook may use the
        // connection's sessions), whichever way the step ended.
        let mut left = Vec::new();
        let attached = {
            let _op = conn.session_op().await;
            self.attach_stored(conn, id, key, &mut left).await
        };
        self.tell_left(conn, &left).await;
        let Restored {
            session,
            reply,
            already_held,
        } = match attached {
            Ok(restored) => restored,
            Err(reply) => return reply,
        };
        // The hook runs without the lock; a refusal takes the session off again before the
        // client hears of it.
        let refused = match catch_panic(self.events.restored(conn, &session)).await {
            Ok(Ok(())) => false,
            Ok(Err(RestoreRefused)) => true,
            Err(panic) => {
                tracing::error!(panic, "the session_restored hook panicked: restore refused");
                true
            }
        };
        let mut left = Vec::new();
        let kept = {
            let _op = conn.session_op().await;
            if refused {
                // A session the connection held before this restore was granted by an
                // earlier hook (`session_created` or `session_restored`): losing it is
                // leaving it.
                if self.disconnect_from(conn, key) && already_held {
                    left.push(key.to_owned());
                }
                false
            } else if !conn.holds_session(key) {
                // A revocation (or the connection's own logout) took the session while the
                // hook ran: it was not restored, and whatever the hook granted is undone
                // (its `session_left` may have run before the hook granted it).
                left.push(key.to_owned());
                false
            } else {
                true
            }
        };
        self.tell_left(conn, &left).await;
        if !kept {
            return Message::ReplySessionNotFound { id };
        }
        // Answered once what other nodes send the session reaches this one.
        self.remote.sync().await;
        reply
    }

    /// The locked part of a restore: the key registered (within the per-session limit),
    /// the session looked up and checked against this server's reply size, the session
    /// the connection held before left, and the one looked up attached, only while its
    /// registration stands. The sessions the connection left go into `left`; `Err` is the
    /// reply that ends the restore.
    async fn attach_stored(
        &self,
        conn: &Connection,
        id: RequestId,
        key: &str,
        left: &mut Vec<String>,
    ) -> Result<Restored, Message> {
        let current = conn.session();
        let already_held = current.as_ref().is_some_and(|session| session.key == key);
        let reservation = if already_held {
            None
        } else {
            if let Err(error) = self.registry.register(key, conn.id(), conn) {
                tracing::debug!(%error, "restore refused");
                return Err(Message::ReplyMaxSessConnsReached { id });
            }
            Some(Reservation {
                sessions: self,
                key,
                conn_id: conn.id(),
            })
        };
        let session = match self.store.lookup(key).await {
            Ok(Some(session)) => session,
            Ok(None) => {
                // Gone from the store (expired, removed by another server): a connection
                // that held it does not keep it either (unless a revocation took it during
                // the lookup, and ran `session_left` itself).
                if already_held && self.disconnect_from(conn, key) {
                    left.push(key.to_owned());
                }
                return Err(Message::ReplySessionNotFound { id });
            }
            Err(error) => {
                tracing::error!(%error, "the session store failed a lookup");
                return Err(Message::ReplyInternalError { id });
            }
        };
        // The key the client sent is the session's key, whatever the store returned.
        let session = Session {
            key: key.to_owned(),
            ..session
        };
        let reply = self.restore_reply(conn, id, &session)?;
        // The session it held is replaced: it leaves that one (none if a revocation took it
        // during the lookup and ran the hooks).
        if let Some(old) =
            current.filter(|old| !already_held && self.disconnect_from(conn, &old.key))
        {
            left.push(old.key);
        }
        // Attached only while still registered: a revocation that took the key's
        // registrations after the lookup found it wins, and the client is not told of a
        // session that no longer exists. (A session already held is replaced by the one
        // just looked up, with its new `last_lookup`.)
        let attached = self.registry.attach(key, conn.id(), || {
            conn.set_session(Some(session.clone()));
        });
        // The registration now belongs to the attached session (or was revoked with it).
        std::mem::forget(reservation);
        if !attached {
            if already_held {
                conn.take_session_if(key);
            }
            return Err(Message::ReplySessionNotFound { id });
        }
        Ok(Restored {
            session,
            reply,
            already_held,
        })
    }

    /// The reply that restores `session`, unless it cannot be written or is over this
    /// server's message size limit (a session saved by a server with a larger limit):
    /// refused before it is attached, not attached and then unanswerable.
    fn restore_reply(
        &self,
        conn: &Connection,
        id: RequestId,
        session: &Session,
    ) -> Result<Message, Message> {
        let json = session.to_json().map_err(|error| {
            tracing::error!(%error, "a stored session cannot be written as JSON");
            Message::ReplyInternalError { id }
        })?;
        let reply = Message::ReplyUtf8 { id, data: json };
        let limit = conn.max_message_size();
        if let Some(len) = reply.encoded_len().ok().filter(|&len| len > limit) {
            tracing::error!(
                len,
                limit,
                "a stored session is too large for a restore reply"
            );
            return Err(Message::ReplyInternalError { id });
        }
        Ok(reply)
    }
}

/// A session a restore attached, before the `session_restored` hook: its reply, and
/// whether the connection held it already.
struct Restored {
    session: Session,
    reply: Message,
    already_held: bool,
}
