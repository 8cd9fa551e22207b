//! [`RedisConnectError`]: why connecting to Redis failed, naming the URL or the address.

/// Why [`RedisStore::connect`](super::RedisStore::connect) or
/// [`RedisBackplane::connect`](super::RedisBackplane::connect) (and their `from_client`,
/// and the `connect_cluster` of both) failed: a URL that does not parse, or a Redis that
/// cannot be reached at its address (for a cluster, none of its seed nodes). The message
/// names Redis and the URL or addresses, never a password.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tokio_webwire::redis::RedisStore;
///
/// let error = RedisStore::connect("redis://user:secret@127.0.0.1:6379 x").await.unwrap_err();
/// assert!(error.to_string().starts_with("invalid Redis URL \"redis://***@127.0.0.1:6379 x\""));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConnectError {
    /// The URL does not parse, or names no Redis this build can speak to (`rediss://`).
    #[error(
        "invalid Redis URL {url:?} (expected redis://[user:password@]host[:port][/db]): {source}"
    )]
    InvalidUrl {
        /// The URL, with its user and password replaced by `***`.
        url: String,
        /// What redis-rs reported.
        source: redis::RedisError,
    },
    /// Redis did not answer at the address (down, another port, a firewall) or refused
    /// the connection (a wrong password); for a cluster, no seed node did, or the cluster
    /// does not serve every slot.
    #[error("cannot connect to Redis at {addr}: {source}")]
    Unreachable {
        /// The address (`127.0.0.1:6379`); for a cluster, its seed nodes' addresses
        /// (`127.0.0.1:7000, 127.0.0.1:7001`).
        addr: String,
        /// What redis-rs reported.
        source: redis::RedisError,
    },
}

impl RedisConnectError {
    /// The `Unreachable` error of `client`'s address.
    pub(super) fn unreachable(
        client: &redis::Client,
    ) -> impl FnOnce(redis::RedisError) -> Self + use<> {
        let addr = client.get_connection_info().addr().to_string();
        move |source| RedisConnectError::Unreachable { addr, source }
    }
}

impl RedisConnectError {
    /// The `InvalidUrl` error of `url`, its password hidden.
    pub(super) fn invalid_url(url: &str, source: redis::RedisError) -> Self {
        RedisConnectError::InvalidUrl {
            url: redacted(url),
            source,
        }
    }
}

/// Opens a client for `url`, or says which URL is wrong.
pub(super) fn open(url: &str) -> Result<redis::Client, RedisConnectError> {
    redis::Client::open(url).map_err(|source| RedisConnectError::invalid_url(url, source))
}

/// `url` with whatever comes between the scheme and the last `@` (a user, a password)
/// replaced by `***`.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redacted("redis://u:p@h:1/2"), "redis://***@h:1/2");
        assert_eq!(redacted("redis://h:1/"), "redis://h:1/");
        assert_eq!(redacted("nonsense@x"), "nonsense@x");
    }
}
