//! [`RedisHistory`]: topic histories in Redis, shared by every node of a backplane, so that
//! every node gives a topic's publications the same positions and a client resumes on any
//! node.
//!
//! Per topic, two keys with the topic as their hash tag (one slot):
//! - `<prefix>{<topic>}:m`, a hash: `e` the epoch (8 random bytes), `o` the last offset,
//!   `b` the bytes of signals kept;
//! - `<prefix>{<topic>}:s`, a stream: one entry per kept publication, its ID
//!   `<offset>-0`, its fields `f` (the encoded signal and, after it, the 32-byte tag it
//!   travels with between nodes: `docs/backplane.md`) and `t` (Redis's time, ms).
//!
//! A publish is one Lua script, so one round trip, atomic: the epoch (`HSETNX`: a new
//! random one when the hash is gone), the offset (`HINCRBY`), the entry (`XADD`), the
//! trimming of the oldest entries beyond the history's count, bytes and age (`XTRIM
//! MINID`), and the `PUBLISH` to the other nodes with the position, on the topic's channel
//! (`<channel prefix>t:{<topic>}`, the same hash tag, so on a Redis Cluster the same slot:
//! there the script's keys and its `SPUBLISH` to that channel are on one master): kept
//! iff sent. A
//! resume is one script too: the epoch, the last offset, and `XRANGE` from the first
//! offset missed. If the keys were flushed or evicted (or only the stream), the next
//! script starts a new epoch: a client's older position is then "not recovered", never
//! answered with a gap.

use std::sync::Mutex;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::connection::Connection;
use super::sanitized;
use crate::backplane::{HistoryError, SharedStore, Snapshot, random_epoch};
use crate::protocol::topics::Position;
use crate::server::History;
use crate::sync;

/// What both scripts start with: the keys, the topic's epoch (a new one if the hash is
/// gone, or if the stream is gone while the hash says something was kept), Redis's time.
const PRELUDE: &str = r"
local meta, stream = KEYS[1], KEYS[2]
if redis.call('HEXISTS', meta, 'e') == 1
    and tonumber(redis.call('HGET', meta, 'o') or '0') > 0
    and redis.call('EXISTS', stream) == 0 then
  redis.call('DEL', meta)
end
if redis.call('HSETNX', meta, 'e', ARGV[1]) == 1 then
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'o', 0, 'b', 0)
end
local epoch = redis.call('HGET', meta, 'e')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function offset_of(id) return tonumber(string.match(id, '^%d+')) end
";

/// `PUBLISH` is the command that sends to the other nodes: `PUBLISH` on one Redis,
/// `SPUBLISH` (sharded pub/sub) on a Redis Cluster.
/// ARGV: new epoch, signal and its tag, max count, max bytes, max age in ms (0: none),
/// channel, envelope header. Returns {epoch, offset}. The bytes counted against the
/// history's bound are the signals', without their 32-byte tags.
const APPEND: &str = r"
local frame = ARGV[2]
local max_len, max_bytes, max_age = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local offset = redis.call('HINCRBY', meta, 'o', 1)
redis.call('XADD', stream, string.format('%d-0', offset), 'f', frame, 't', now)
local bytes = redis.call('HINCRBY', meta, 'b', #frame - 32)
local len = redis.call('XLEN', stream)
local cursor, cut = '-', nil
while len > 0 do
  local entry = redis.call('XRANGE', stream, cursor, '+', 'COUNT', 1)[1]
  if not entry then break end
  if len > max_len or bytes > max_bytes or (max_age > 0 and now - tonumber(entry[2][4]) > max_age) then
    len = len - 1
    bytes = bytes - (#entry[2][2] - 32)
    cut = entry[1]
    cursor = '(' .. entry[1]
  else
    break
  end
end
if cut then
  redis.call('XTRIM', stream, 'MINID', string.format('%d-0', offset_of(cut) + 1))
  redis.call('HSET', meta, 'b', bytes)
end
local o, le = offset, {}
for i = 1, 8 do
  le[i] = string.char(o % 256)
  o = math.floor(o / 256)
end
redis.call(PUBLISH, ARGV[6], ARGV[7] .. epoch .. table.concat(le) .. frame)
return {epoch, offset}
";

/// ARGV: new epoch, after ('' for no entries), until ('' for the last), max age in ms
/// (0: none). Returns {epoch, last offset, {{offset, signal}, ...}}.
const READ: &str = r"
local last = tonumber(redis.call('HGET', meta, 'o'))
local out = {}
if ARGV[2] ~= '' and tonumber(ARGV[2]) < last then
  local stop = '+'
  if ARGV[3] ~= '' then stop = ARGV[3] .. '-0' end
  local max_age = tonumber(ARGV[4])
  local entries = redis.call('XRANGE', stream, string.format('%d-0', tonumber(ARGV[2]) + 1), stop)
  for _, entry in ipairs(entries) do
    if max_age == 0 or now - tonumber(entry[2][4]) <= max_age then
      table.insert(out, {offset_of(entry[1]), entry[2][2]})
    end
  end
end
return {epoch, last, out}
";

/// A Lua script and its SHA1 on the Redis it was loaded into.
struct Script {
    body: String,
    sha: Mutex<String>,
}

/// Topic histories in Redis: the shared engine of a [`RedisBackplane`](super::RedisBackplane).
pub(crate) struct RedisHistory {
    conn: Connection,
    prefix: String,
    /// The backplane's channel prefix: a publication goes to its topic's channel.
    channels: String,
    append: Script,
    read: Script,
}

impl RedisHistory {
    /// Loads the scripts through `conn` (which must reach Redis now; on a cluster, every
    /// master: `SCRIPT LOAD` goes to all of them). A publication goes to the other nodes
    /// with `SPUBLISH` on a cluster, `PUBLISH` on one Redis.
    pub(crate) async fn new(
        conn: Connection,
        prefix: String,
        channels: String,
    ) -> Result<Self, redis::RedisError> {
        let history = RedisHistory {
            conn: conn.clone(),
            prefix,
            channels,
            append: Script::new(APPEND, &conn),
            read: Script::new(READ, &conn),
        };
        for script in [&history.append, &history.read] {
            script.load(&mut history.conn.clone()).await?;
        }
        Ok(history)
    }

    fn keys(&self, topic: &str) -> [String; 2] {
        let prefix = &self.prefix;
        [
            format!("{prefix}{{{topic}}}:m"),
            format!("{prefix}{{{topic}}}:s"),
        ]
    }
}

impl Script {
    fn new(body: &str, conn: &Connection) -> Self {
        let publish = match conn {
            Connection::Single(_) => "PUBLISH",
            Connection::Cluster(_) => "SPUBLISH",
        };
        Script {
            body: format!("local PUBLISH = '{publish}'\n{PRELUDE}{body}"),
            sha: Mutex::new(String::new()),
        }
    }

    async fn load(&self, conn: &mut Connection) -> Result<String, redis::RedisError> {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(&self.body)
            .query_async(conn)
            .await?;
        *sync::lock(&self.sha) = sha.clone();
        Ok(sha)
    }

    /// `EVALSHA` with two keys and `args`; the script is loaded again once if Redis lost
    /// it (a restart), so a publish is one round trip but right after that.
    async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &Connection,
        keys: &[String; 2],
        args: &[&[u8]],
    ) -> Result<T, HistoryError> {
        let mut conn = conn.clone();
        let sha = sync::lock(&self.sha).clone();
        let call = |sha: &str| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha).arg(2).arg(&keys[..]);
            for arg in args {
                cmd.arg(*arg);
            }
            cmd
        };
        let result = match call(&sha).query_async(&mut conn).await {
            Err(err) if err.code() == Some("NOSCRIPT") => {
                let sha = self.load(&mut conn).await.map_err(error)?;
                call(&sha).query_async(&mut conn).await
            }
            other => other,
        };
        result.map_err(error)
    }
}

/// What the read script answers: the epoch, the last offset, the entries asked for.
type ReadReply = (Vec<u8>, u64, Vec<(u64, Vec<u8>)>);

fn error(err: redis::RedisError) -> HistoryError {
    HistoryError::new(sanitized(err))
}

/// The epoch a script answered: its 8 bytes.
fn epoch(bytes: &[u8]) -> Result<u64, HistoryError> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| HistoryError::new("Redis holds an epoch that is not 8 bytes"))?;
    Ok(u64::from_le_bytes(bytes))
}

fn age_ms(history: History) -> String {
    history
        .max_age_kept()
        .map_or(0, |age| age.as_millis().max(1))
        .to_string()
}

impl SharedStore for RedisHistory {
    fn append<'a>(
        &'a self,
        topic: &'a str,
        history: History,
        envelope: Bytes,
        signed: Bytes,
    ) -> BoxFuture<'a, Result<Position, HistoryError>> {
        Box::pin(async move {
            let keys = self.keys(topic);
            let new_epoch = random_epoch().to_le_bytes();
            let len = history.max_len().to_string();
            let bytes = history.max_bytes_kept().to_string();
            let age = age_ms(history);
            let channel = super::channel::channel_of(
                &self.channels,
                &crate::backplane::Route::topic_checked(topic),
            );
            let args: [&[u8]; 7] = [
                &new_epoch,
                &signed,
                len.as_bytes(),
                bytes.as_bytes(),
                age.as_bytes(),
                channel.as_bytes(),
                &envelope,
            ];
            let (e, offset): (Vec<u8>, u64) = self.append.run(&self.conn, &keys, &args).await?;
            Ok(Position {
                epoch: epoch(&e)?,
                offset,
            })
        })
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        history: History,
        after: Option<u64>,
        until: Option<u64>,
    ) -> BoxFuture<'a, Result<Snapshot, HistoryError>> {
        Box::pin(async move {
            let keys = self.keys(topic);
            let new_epoch = random_epoch().to_le_bytes();
            let after = after.map(|a| a.to_string()).unwrap_or_default();
            let until = until.map(|u| u.to_string()).unwrap_or_default();
            let age = age_ms(history);
            let args: [&[u8]; 4] = [
                &new_epoch,
                after.as_bytes(),
                until.as_bytes(),
                age.as_bytes(),
            ];
            let (e, last, entries): ReadReply = self.read.run(&self.conn, &keys, &args).await?;
            Ok(Snapshot {
                epoch: epoch(&e)?,
                last,
                entries: entries
                    .into_iter()
                    .map(|(offset, plain)| (offset, Bytes::from(plain)))
                    .collect(),
            })
        })
    }
}
