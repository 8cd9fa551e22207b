//! Which `Origin`s may open a connection: the defence against cross-site WebSocket
//! hijacking.
//!
//! Browsers let any page open a WebSocket to any server, with the user's cookies, and
//! send the page's origin in the `Origin` header; the server is the only one who can
//! refuse. The Go reference server answers 403 when `Origin` names another host than
//! `Host` (gorilla's `checkSameOrigin`, PROTOCOL.md §1.2), and so does this one by
//! default. Clients that are not browsers send no `Origin` and pass.

use tokio_tungstenite::tungstenite::http::{HeaderMap, header};

use crate::server::ConfigError;

/// The origins a server accepts upgrades from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origins {
    /// No `Origin`, or one whose host\[:port\] equals `Host` (ASCII case aside).
    SameHost,
    /// Those of `SameHost`, and these origins (`scheme://host[:port]`, lower case).
    Listed(Vec<Box<str>>),
    /// Every request: no check.
    Any,
}

impl Origins {
    /// Whether a request with these headers may be upgraded.
    pub(crate) fn allow(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            // Not a browser: it cannot be a page of another site.
            return true;
        };
        if *self == Origins::Any {
            return true;
        }
        // Not text: no host to compare, so not the same origin (nor a listed one).
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let same_host = match (host_of(origin), headers.get(header::HOST)) {
            (Some(host), Some(expected)) => expected
                .to_str()
                .is_ok_and(|expected| host.eq_ignore_ascii_case(expected)),
            _ => false,
        };
        same_host
            || match self {
                Origins::Listed(listed) => listed
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
                Origins::SameHost | Origins::Any => false,
            }
    }
}

/// The host\[:port\] of an origin (`scheme://host[:port]`), as Go's `url.Parse(..).Host`
/// reads it; `None` for an origin without one (`null`, sent by sandboxed frames and
/// `file:` pages).
fn host_of(origin: &str) -> Option<&str> {
    let (_scheme, rest) = origin.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // User information, which no browser sends, is not part of the host.
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (!host.is_empty()).then_some(host)
}

/// An origin for [`Origins::Listed`]: `scheme://host[:port]` (a trailing `/` is dropped),
/// in lower case; anything else (a path, no scheme, a `*` anywhere: no wildcards) is a
/// configuration error.
pub(crate) fn listed(origin: &str) -> Result<Box<str>, ConfigError> {
    let trimmed = origin.strip_suffix('/').unwrap_or(origin);
    let valid = trimmed.split_once("://").is_some_and(|(scheme, host)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            && !host.is_empty()
            // `*` included: origins are compared whole, so `https://*.example.com` would
            // pass the build and never match a request.
            && !host.contains(['/', '?', '#', '@', ' ', '*'])
    });
    if !valid {
        return Err(ConfigError::Origin(origin.to_owned()));
    }
    Ok(trimmed.to_ascii_lowercase().into())
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    use super::*;

    fn headers(host: Option<&'static str>, origin: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_static(host));
        }
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
        }
        headers
    }

    #[test]
    fn same_host_compares_host_and_port_ignoring_case_and_scheme() {
        let same = Origins::SameHost;
        assert!(same.allow(&headers(Some("example.com"), None)));
        assert!(same.allow(&headers(Some("Example.COM"), Some("https://example.com"))));
        assert!(same.allow(&headers(Some("a:8081"), Some("http://a:8081"))));
        assert!(!same.allow(&headers(Some("a:8081"), Some("http://a:8082"))));
        assert!(!same.allow(&headers(Some("a:8081"), Some("http://a"))));
        assert!(!same.allow(&headers(Some("bank.com"), Some("https://evil.com"))));
        assert!(!same.allow(&headers(Some("bank.com"), Some("null"))));
        assert!(!same.allow(&headers(None, Some("https://bank.com"))));
        assert!(!same.allow(&headers(
            Some("bank.com"),
            Some("https://bank.com.evil.com")
        )));
    }

    #[test]
    fn a_list_adds_origins_and_any_allows_all() {
        let listed = Origins::Listed(vec![listed("https://App.example.com/").unwrap()]);
        let request = |origin| headers(Some("backend:8081"), Some(origin));
        assert!(listed.allow(&request("https://app.example.com")));
        assert!(listed.allow(&request("HTTPS://APP.EXAMPLE.COM")));
        assert!(!listed.allow(&request("http://app.example.com")));
        assert!(!listed.allow(&request("https://evil.com")));
        assert!(listed.allow(&request("http://backend:8081")), "same host");
        assert!(Origins::Any.allow(&request("https://evil.com")));
    }

    #[test]
    fn listed_origins_are_checked() {
        assert_eq!(
            &*listed("https://a.example:8443").unwrap(),
            "https://a.example:8443"
        );
        for bad in [
            "*",
            "https://*.example.com",
            "https://app.example.*",
            "*://app.example.com",
            "a.example",
            "https://",
            "https://a/path",
            "://a",
            "https://u@a",
        ] {
            assert_eq!(
                listed(bad),
                Err(ConfigError::Origin(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_ipv6_origin_is_compared_with_its_brackets() {
        let same = Origins::SameHost;
        assert!(same.allow(&headers(Some("[::1]:8080"), Some("http://[::1]:8080"))));
        assert!(!same.allow(&headers(Some("[::1]:8080"), Some("http://[::1]:8081"))));
        assert!(!same.allow(&headers(Some("[::1]:8080"), Some("http://[::2]:8080"))));
        let listed = Origins::Listed(vec![listed("http://[::1]:3000").unwrap()]);
        assert!(listed.allow(&headers(Some("backend"), Some("http://[::1]:3000"))));
    }

    #[test]
    fn an_origin_with_a_path_is_read_for_its_host_but_never_equals_a_listed_one() {
        // Browsers send no path; Go's check reads the host only, and so does ours.
        let same = Origins::SameHost;
        assert!(same.allow(&headers(Some("a:8081"), Some("http://a:8081/page?x#y"))));
        assert!(!same.allow(&headers(Some("a:8081"), Some("http://b:8081/a:8081"))));
        let listed = Origins::Listed(vec![listed("https://app.example.com").unwrap()]);
        let request = headers(Some("backend"), Some("https://app.example.com/page"));
        assert!(!listed.allow(&request));
    }
}
