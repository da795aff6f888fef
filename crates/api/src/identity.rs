//! Who is calling, as plain values that the [`crate::auth`] extractors, the [`crate::quota`] and
//! the [`crate::gate`] share: the [`Credential`] a request's `Authorization` header turned out to
//! be, the [`Caller`] (client address and credential, found once per request by the gate), the
//! client address ([`ClientAddrSource`], [`AddrKey`]) and which paths are tracked. It uses none
//! of the modules that use it.
//!
//! The client address is the socket's peer address. Behind a reverse proxy every request comes
//! from the proxy, so an operator can name a header the proxy sets (`X-Forwarded-For`,
//! `X-Real-IP`, `Forwarded`); its **last** entry is used, the one the trusted proxy itself added
//! (earlier entries come from the client and can be forged). Never configure a header that
//! clients can reach the service without passing through that proxy.

use axum::extract::{OriginalUri, Request};
use axum::http::header::InvalidHeaderName;
use axum::http::{Extensions, HeaderMap, HeaderName, Uri};
use bourse_store::users::User;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a request's `Authorization` header turned out to be.
#[derive(Debug, Clone)]
pub enum Credential {
    /// No `Authorization` header.
    Absent,
    /// Credentials of an active user.
    Valid(User),
    /// Credentials that identify no active user (a route that needs a user answers 401).
    Invalid,
    /// Not checked: the check failed for another reason (the database did not answer). The
    /// extractor checks again and reports that error.
    Unchecked,
    /// Not checked, and not to be: too many attempts (429) or no hashing slot (503), with the
    /// seconds to wait.
    Refused { busy: bool, retry_after: u64 },
}

/// How the request log names a caller without valid credentials (Django's name for it).
pub const ANONYMOUS: &str = "AnonymousUser";

/// The caller of one request, in its extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None` only when the server runs without connection info (in-process tests).
    pub addr: Option<IpAddr>,
    pub credential: Credential,
}

impl Caller {
    /// The user, when the credentials are valid.
    pub fn user(&self) -> Option<&User> {
        match &self.credential {
            Credential::Valid(user) => Some(user),
            _ => None,
        }
    }

    /// How the request log names the caller: the user's email, else the username, else
    /// `AnonymousUser` (also for invalid credentials).
    pub fn log_name(&self) -> &str {
        self.user().map_or(ANONYMOUS, |u| {
            u.email
                .as_deref()
                .filter(|e| !e.is_empty())
                .unwrap_or(&u.username)
        })
    }
}

/// Where the client address comes from: the socket, or a header set by a trusted proxy.
#[derive(Debug, Clone, Default)]
pub struct ClientAddrSource {
    trusted_header: Option<HeaderName>,
}

impl ClientAddrSource {
    /// The socket's peer address.
    pub fn socket() -> Self {
        Self::default()
    }

    /// The last address in `header` (set by a trusted proxy), else the socket's.
    pub fn header(name: &str) -> Result<Self, InvalidHeaderName> {
        Ok(Self {
            trusted_header: Some(HeaderName::try_from(name.trim())?),
        })
    }

    pub fn trusted_header(&self) -> Option<&HeaderName> {
        self.trusted_header.as_ref()
    }

    /// The client's address: from the trusted header when it is configured and holds a valid
    /// address, else the peer's.
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        let from_header = self.trusted_header.as_ref().and_then(|name| {
            // Several header lines are one comma-separated list; the last line is the proxy's.
            let last = headers.get_all(name).iter().next_back()?.to_str().ok()?;
            let entry = last.rsplit(',').next()?.trim();
            if name.as_str() == "forwarded" {
                forwarded_for(entry)
            } else {
                parse_addr(entry)
            }
        });
        from_header.or(peer).map(|ip| ip.to_canonical())
    }
}

/// The `for=` node of one RFC 7239 `Forwarded` element.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("for") {
            parse_addr(value.trim().trim_matches('"'))
        } else {
            None
        }
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_addr(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    text.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// The quota identity of a client address. An IPv6 client usually holds a whole /64 and can
/// pick any address in it, so IPv6 addresses are counted by their /64 network. A plain value
/// (no allocation), written `192.0.2.1`, `2001:db8:1:2::/64` or `unknown` in Redis keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrKey {
    V4(Ipv4Addr),
    /// The /64 network (the address with its last 64 bits zero).
    V6(Ipv6Addr),
    /// No address known (a server run without connection info, as in-process tests do).
    Unknown,
}

impl AddrKey {
    pub fn of(ip: Option<IpAddr>) -> AddrKey {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => AddrKey::V4(v4),
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                AddrKey::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            None => AddrKey::Unknown,
        }
    }
}

impl std::fmt::Display for AddrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddrKey::V4(v4) => write!(f, "{v4}"),
            AddrKey::V6(network) => write!(f, "{network}/64"),
            AddrKey::Unknown => f.write_str("unknown"),
        }
    }
}

/// Operational paths that are never counted against a quota nor logged as API requests (docs/api.md, "Quotas"):
/// health, readiness, metrics, the docs and their `openapi.json`, the dashboard's own files,
/// and the live stream.
pub fn is_untracked(path: &str) -> bool {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    matches!(
        path,
        "/" | "/_healthcheck"
            | "/readyz"
            | "/metrics"
            | "/openapi.json"
            | "/favicon.ico"
            | "/stocks/stream"
    ) || ["/docs", "/dashboard", "/static", "/assets"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// The path the client asked for (before any nesting stripped a prefix), without query.
pub fn request_path(req: &Request) -> &str {
    path_of(req.uri(), req.extensions())
}

/// [`request_path`] from a request's parts.
pub fn path_of<'a>(uri: &'a Uri, extensions: &'a Extensions) -> &'a str {
    extensions
        .get::<OriginalUri>()
        .map_or_else(|| uri.path(), |original| original.0.path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use bourse_store::users::Role;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_socket_address_unless_a_trusted_header_is_configured() {
        let peer = Some(ip("10.0.0.7"));
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            ClientAddrSource::socket().client_ip(&spoofed, peer),
            peer,
            "headers are ignored unless configured"
        );
        let xff = ClientAddrSource::header("X-Forwarded-For").unwrap();
        assert_eq!(
            xff.client_ip(
                &headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9")]),
                peer
            ),
            Some(ip("203.0.113.9")),
            "the entry the proxy appended"
        );
        assert_eq!(
            xff.client_ip(
                &headers(&[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "198.51.100.1:4711")
                ]),
                peer
            ),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            xff.client_ip(&headers(&[("x-forwarded-for", "garbage")]), peer),
            peer,
            "unparsable: the socket"
        );
        assert_eq!(xff.client_ip(&HeaderMap::new(), peer), peer);
        let real = ClientAddrSource::header("x-real-ip").unwrap();
        assert_eq!(
            real.client_ip(&headers(&[("x-real-ip", "[2001:db8::1]:443")]), peer),
            Some(ip("2001:db8::1"))
        );
        let fwd = ClientAddrSource::header("Forwarded").unwrap();
        assert_eq!(
            fwd.client_ip(
                &headers(&[(
                    "forwarded",
                    "for=6.6.6.6, for=\"[2001:db8::2]:80\";proto=https;by=10.0.0.1"
                )]),
                peer
            ),
            Some(ip("2001:db8::2"))
        );
        assert!(ClientAddrSource::header("bad header").is_err());
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        assert_eq!(
            ClientAddrSource::socket().client_ip(&HeaderMap::new(), Some(ip("::ffff:192.0.2.1"))),
            Some(ip("192.0.2.1"))
        );
    }

    #[test]
    fn address_keys_group_ipv6_by_network() {
        let key = |ip: Option<IpAddr>| AddrKey::of(ip).to_string();
        assert_eq!(key(Some(ip("192.0.2.1"))), "192.0.2.1");
        assert_eq!(key(Some(ip("::ffff:192.0.2.1"))), "192.0.2.1");
        assert_eq!(key(Some(ip("2001:db8:1:2:aaaa::1"))), "2001:db8:1:2::/64");
        assert_eq!(
            key(Some(ip("2001:db8:1:2:bbbb::9"))),
            key(Some(ip("2001:db8:1:2::1")))
        );
        assert_eq!(key(None), "unknown");
    }

    #[test]
    fn operational_paths_are_untracked() {
        for path in [
            "/",
            "/_healthcheck",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/docs",
            "/docs/",
            "/docs/index.html",
            "/stocks/stream",
            "/api/v1/stocks/stream",
            "/static/app.js",
            "/dashboard/app.js",
        ] {
            assert!(is_untracked(path), "{path}");
        }
        for path in [
            "/stocks",
            "/api/v1/symbol/ibm/",
            "/register",
            "/docsx",
            "/dashboardx",
            "/stocks/stream/x",
            "/metrics/x",
            "/nope",
        ] {
            assert!(!is_untracked(path), "{path}");
        }
    }

    #[test]
    fn log_names() {
        let user = |email: Option<&str>| User {
            id: uuid::Uuid::new_v4(),
            username: "dave".into(),
            email: email.map(String::from),
            role: Role::User,
            active: true,
            token_version: 0,
        };
        let caller = |credential| Caller {
            addr: None,
            credential,
        };
        assert_eq!(
            caller(Credential::Valid(user(Some("user@example.com")))).log_name(),
            "user@example.com"
        );
        assert_eq!(caller(Credential::Valid(user(None))).log_name(), "dave");
        assert_eq!(caller(Credential::Valid(user(Some("")))).log_name(), "dave");
        for credential in [
            Credential::Absent,
            Credential::Invalid,
            Credential::Unchecked,
        ] {
            assert_eq!(caller(credential).log_name(), ANONYMOUS);
        }
    }
}
