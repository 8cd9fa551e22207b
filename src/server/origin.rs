//! Which `Origin`s may open a connection: the defence against cross-site WebSocket
//! hijacking.
//!
//! Browsers let any page open a WebSocket to any server, with the user's cookies, and
//! send the page's origin in the `Origin` header; the server is the only one who can
//! refuse. The Go reference server answers 403 when `Origin` names another host than
//! `Host` (gorilla's `checkSameOrigin`, PROTOCOL.md §1.2), and so does this one by
//! default. Clients that are not browsers send no `Origin` and pass.
//!
//! Host and port are compared as an origin's are: a port left out is the scheme's
//! default, so the page `https://a` is the same origin as `Host: a:443` (a proxy or a
//! client may write the default port; browsers leave it out of `Origin`), and
//! `http://a` is not. An `Origin` with user information (`http://evil@a`) is no
//! browser's (an origin has none) and is refused, as the Go reference does.

use tokio_tungstenite::tungstenite::http::{HeaderMap, header};

/// The origins a server accepts upgrades from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origins {
    /// No `Origin`, or one whose host and port equal `Host`'s (ASCII case aside; a port
    /// left out on either side is the `Origin` scheme's default).
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
        let same_host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .is_some_and(|host| same_host(origin, host));
        same_host
            || match self {
                Origins::Listed(listed) => listed
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
                Origins::SameHost | Origins::Any => false,
            }
    }
}

/// Whether the origin `origin` (`scheme://host[:port]`) is the server's own, whose `Host`
/// header is `host`: the same host (ASCII case aside) and the same port, a port left out
/// on either side being the scheme's default. Never for an origin without a host
/// (`null`, sent by sandboxed frames and `file:` pages), with user information, or with a
/// port that is no number.
fn same_host(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    // A path is read past, as Go reads the host alone (browsers send none).
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // User information: no origin has any (browsers never send it); a check that read
    // past it would take `http://evil@bank` for the page `http://bank`.
    if authority.contains('@') {
        return false;
    }
    let (Some((origin_host, origin_port)), Some((host, port))) =
        (host_and_port(authority), host_and_port(host))
    else {
        return false;
    };
    let default = default_port(scheme);
    origin_host.eq_ignore_ascii_case(host) && origin_port.or(default) == port.or(default)
}

/// An authority's host (an IPv6 address with its brackets) and its port, `None` when left
/// out (or empty: RFC 3986 §6.2.3, the default); `None` for an empty host or a port that
/// is not a number up to 65535.
fn host_and_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(inside) => {
            let end = inside.find(']')? + 2;
            let (host, after) = authority.split_at(end);
            match after {
                "" => (host, ""),
                after => (host, after.strip_prefix(':')?),
            }
        }
        None => authority.split_once(':').unwrap_or((authority, "")),
    };
    if host.is_empty() || !port.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let port = match port {
        "" => None,
        digits => Some(digits.parse().ok()?),
    };
    Some((host, port))
}

/// The port an origin of `scheme` has when it names none: 80 for `http` (and `ws`), 443
/// for `https` (and `wss`); none for other schemes (their ports are compared as written).
fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else {
        None
    }
}

/// An origin for [`Origins::Listed`]: `scheme://host[:port]` (a trailing `/` is dropped),
/// in lower case; anything else (a path, no scheme, a `*` anywhere: no wildcards) is not
/// one (`None`: the builder refuses it).
pub(crate) fn listed(origin: &str) -> Option<Box<str>> {
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
    valid.then(|| trimmed.to_ascii_lowercase().into())
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
    fn a_default_port_on_one_side_only_is_the_same_origin() {
        let same = Origins::SameHost;
        assert!(same.allow(&headers(Some("a:443"), Some("https://a"))));
        assert!(same.allow(&headers(Some("a:80"), Some("http://a"))));
        assert!(same.allow(&headers(Some("a"), Some("https://a:443"))));
        assert!(same.allow(&headers(Some("a:443"), Some("wss://a"))));
        assert!(same.allow(&headers(Some("a:"), Some("http://a"))), "empty");
        assert!(!same.allow(&headers(Some("a:443"), Some("http://a"))));
        assert!(!same.allow(&headers(Some("a:80"), Some("https://a"))));
        assert!(!same.allow(&headers(Some("a"), Some("https://a:8443"))));
        // No default for other schemes: ports as written.
        assert!(same.allow(&headers(Some("a"), Some("app://a"))));
        assert!(!same.allow(&headers(Some("a:443"), Some("app://a"))));
        // Ports that are no number, and hosts that are no host.
        for (host, origin) in [
            ("a:443", "https://a:x"),
            ("a:x", "https://a"),
            ("a:+443", "https://a"),
            ("a:70000", "https://a:70000"),
            ("a:1:2", "https://a:1:2"),
            (":443", "https://:443"),
            ("[::1", "https://[::1"),
            ("[::1]x", "https://[::1]x"),
        ] {
            assert!(
                !same.allow(&headers(Some(host), Some(origin))),
                "{host} {origin}"
            );
        }
    }

    #[test]
    fn an_origin_with_user_information_is_not_the_same_host() {
        let same = Origins::SameHost;
        assert!(!same.allow(&headers(Some("a"), Some("http://evil@a"))));
        assert!(!same.allow(&headers(Some("a:80"), Some("http://u:p@a:80"))));
        assert!(!same.allow(&headers(Some("a"), Some("http://@a"))));
        let listed = Origins::Listed(vec![listed("https://app.example.com").unwrap()]);
        let request = headers(Some("backend"), Some("https://x@app.example.com"));
        assert!(!listed.allow(&request));
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
            assert_eq!(listed(bad), None, "{bad}");
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
