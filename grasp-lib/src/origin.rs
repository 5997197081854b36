//! The public origin of this server (`domain` in the configuration, and `base_path` when the
//! service is mounted under a path) and whether a URL in an announcement points at it.
//!
//! URLs are parsed, never substring-matched: `https://evil.example/?x=our.domain` does not
//! list us. The host compares case-insensitively; a domain without a port matches only the
//! scheme's default port (80 for http/ws, 443 for https/wss). Under a base path `/b`, clone
//! URLs are `http(s)://<domain>/b/<npub>/<id>.git` and the relay is `ws(s)://<domain>/b`.

use nostr::PublicKey;
use url::Url;

use crate::nip34::RepoIdentifier;

/// Where this server is reachable, as written in announcements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOrigin {
    host: String,
    port: Option<u16>,
    /// The mount path without a trailing slash; empty at the root.
    base: String,
}

/// Why a configured base path is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "base path '{0}' must be '/' or an absolute path without a trailing slash, empty, '.' or '..' segments, \
     query or fragment, percent-encoded as a URL path would be (like '/services/grasp')"
)]
pub struct InvalidBasePath(pub String);

/// Checks a `base_path` value; returns the mount path without a trailing slash (empty for
/// `/`). Values are refused rather than rewritten, so the path a client sees is the one
/// configured.
pub fn parse_base_path(value: &str) -> Result<String, InvalidBasePath> {
    let bad = || InvalidBasePath(value.to_owned());
    if value == "/" {
        return Ok(String::new());
    }
    if !value.starts_with('/') || value.ends_with('/') || value.contains(['?', '#']) {
        return Err(bad());
    }
    if value[1..].split('/').any(|segment| matches!(segment, "" | "." | "..")) {
        return Err(bad());
    }
    let canonical = Url::parse(&format!("https://x.invalid{value}")).map_err(|_| bad())?;
    if canonical.path() != value {
        return Err(bad());
    }
    Ok(value.to_owned())
}

/// Why a configured domain is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("domain '{0}' must be a host name with an optional port, like 'git.example.com' or '127.0.0.1:7334'")]
pub struct InvalidDomain(pub String);

impl ServiceOrigin {
    /// Parses `host[:port]`. A scheme, path or credentials are refused.
    pub fn parse(domain: &str) -> Result<Self, InvalidDomain> {
        let bad = || InvalidDomain(domain.to_owned());
        if domain.is_empty() || domain.contains("://") || domain.contains(['/', '@', '?', '#']) {
            return Err(bad());
        }
        let url = Url::parse(&format!("http://{domain}")).map_err(|_| bad())?;
        let host = url.host_str().ok_or_else(bad)?.to_owned();
        // `Url` forgets an explicit default port; remember it if the operator wrote one.
        let explicit_port = domain.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
        let port = url.port().or(explicit_port.filter(|_| !domain.ends_with(']')));
        Ok(Self { host, port, base: String::new() })
    }

    /// The same origin with the service mounted under `base` (a value [`parse_base_path`]
    /// returned).
    pub fn with_base_path(mut self, base: String) -> Self {
        self.base = base;
        self
    }

    /// The mount path without a trailing slash; empty when the service is at the root.
    pub fn base_path(&self) -> &str {
        &self.base
    }

    /// `path` relative to the mount (`/` for the mount itself, with or without a trailing
    /// slash); `None` when it lies outside.
    pub fn strip_base<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.base.is_empty() {
            return Some(path);
        }
        match path.strip_prefix(self.base.as_str())? {
            "" => Some("/"),
            rest if rest.starts_with('/') => Some(rest),
            _ => None,
        }
    }

    /// `host[:port]` and the base path: how announcements name this service without a
    /// scheme.
    pub fn service_address(&self) -> String {
        format!("{}{}", self.authority(), self.base)
    }

    /// `host[:port]` as configured.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// The http URL of the relay and git service (with the base path), for pages and NIP-11.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.service_address())
    }

    fn matches_authority(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        if !host.eq_ignore_ascii_case(&self.host) {
            return false;
        }
        match self.port {
            Some(port) => url.port_or_known_default() == Some(port),
            None => url.port().is_none(),
        }
    }

    /// The path of `value` when it is an http(s) URL on this server without query or
    /// fragment (a trailing slash removed).
    fn own_http_path(&self, value: &str) -> Option<String> {
        let url = Url::parse(value.trim()).ok()?;
        let ours = matches!(url.scheme(), "http" | "https")
            && url.query().is_none()
            && url.fragment().is_none()
            && self.matches_authority(&url);
        let path = url.path().trim_end_matches('/');
        // Under a base path the repository path follows it.
        ours.then(|| self.strip_base(path).filter(|p| *p != "/").map(str::to_owned)).flatten()
    }

    /// True when `value` is an http(s) git URL on this server:
    /// `/<valid npub>/<percent-encoded identifier>.git`, an optional trailing slash allowed.
    pub fn is_clone_url(&self, value: &str) -> bool {
        self.own_http_path(value).is_some_and(|path| parse_repo_path(&path).is_some())
    }

    /// The contributor and identifier of `value` when it is a GRASP-06 clone URL on this
    /// server: `http(s)://<us>/prs/<valid npub>/<percent-encoded identifier>.git`.
    pub fn prs_clone_url(&self, value: &str) -> Option<(PublicKey, RepoIdentifier)> {
        parse_prs_path(&self.own_http_path(value)?)
    }

    /// True when `url` (any scheme, any path) addresses this server, however it is spelled:
    /// host case, a trailing dot, numeric IPv4 forms, explicit default ports. When this
    /// server is on a loopback address or `localhost`, every loopback spelling with the
    /// same port counts too. Used to never fetch git data from ourselves.
    pub fn is_own(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let host = normalize_host(host);
        let ours = normalize_host(&self.host);
        let same_host = host == ours || (is_loopback(&host) && is_loopback(&ours));
        if !same_host {
            return false;
        }
        let port = url.port_or_known_default();
        match self.port {
            Some(p) => port == Some(p),
            // No port configured: the server answers on the scheme's default port.
            None => url.port().is_none() || matches!(port, Some(80 | 443)),
        }
    }

    /// True when `value` is a ws(s) URL of the relay on this server: the base path (`/` or
    /// empty at the root), a trailing slash allowed.
    pub fn is_relay_url(&self, value: &str) -> bool {
        let Ok(url) = Url::parse(value.trim()) else { return false };
        matches!(url.scheme(), "ws" | "wss")
            && url.query().is_none()
            && url.fragment().is_none()
            && url.path().trim_end_matches('/') == self.base
            && self.matches_authority(&url)
    }
}

/// Lower case, without the brackets of an IPv6 literal or a trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
            std::net::IpAddr::V4(v4) => v4.is_loopback(),
            std::net::IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        })
}

/// Splits a GRASP-06 URL path `/prs/<npub>/<pct-identifier>.git` into contributor and
/// identifier.
pub fn parse_prs_path(path: &str) -> Option<(PublicKey, RepoIdentifier)> {
    parse_repo_path(path.strip_prefix("/prs")?)
}

/// Splits a URL path `/<npub>/<pct-identifier>.git` into its owner and identifier.
pub fn parse_repo_path(path: &str) -> Option<(PublicKey, RepoIdentifier)> {
    let rest = path.strip_prefix('/')?;
    let (npub, repo) = rest.split_once('/')?;
    let owner = parse_npub(npub)?;
    let identifier = RepoIdentifier::from_url_segment(repo.strip_suffix(".git")?).ok()?;
    Some((owner, identifier))
}

/// Decodes an `npub1…` path segment.
pub fn parse_npub(segment: &str) -> Option<PublicKey> {
    use nostr::nips::nip19::FromBech32;
    if !segment.starts_with("npub1") {
        return None;
    }
    PublicKey::from_bech32(segment).ok()
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::ToBech32;
    use nostr::Keys;

    use super::*;

    #[test]
    fn prs_paths_parse_only_under_prs() {
        let keys = Keys::generate();
        let npub = keys.public_key().to_bech32().unwrap();
        let (pk, d) = parse_prs_path(&format!("/prs/{npub}/my%20repo.git")).unwrap();
        assert_eq!((pk, d.as_str()), (keys.public_key(), "my repo"));
        for bad in [
            format!("/{npub}/r.git"),
            format!("/prs/{npub}/r"),
            format!("/prs/{npub}/%2e%2e.git"),
            format!("/prs/{npub}/a/b.git"),
            "/prs/npub1bad/r.git".to_owned(),
            "/prsx/r.git".to_owned(),
        ] {
            assert!(parse_prs_path(&bad).is_none(), "{bad}");
        }
    }

    fn npub() -> String {
        Keys::generate().public_key().to_bech32().unwrap()
    }

    #[test]
    fn domain_parsing() {
        assert_eq!(ServiceOrigin::parse("Git.Example.com").unwrap().authority(), "git.example.com");
        assert_eq!(ServiceOrigin::parse("127.0.0.1:7334").unwrap().authority(), "127.0.0.1:7334");
        assert_eq!(ServiceOrigin::parse("example.com:80").unwrap().authority(), "example.com:80");
        for bad in ["", "https://x", "x/y", "a@b", "x:notaport"] {
            assert!(ServiceOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clone_urls_match_host_port_and_path_shape() {
        let o = ServiceOrigin::parse("git.example.com").unwrap();
        let n = npub();
        assert!(o.is_clone_url(&format!("https://git.example.com/{n}/repo.git")));
        assert!(o.is_clone_url(&format!("http://GIT.example.com/{n}/my%20repo.git/")));
        assert!(o.is_clone_url(&format!("https://git.example.com:443/{n}/repo.git")));
        assert!(!o.is_clone_url(&format!("https://git.example.com:8443/{n}/repo.git")));
        assert!(!o.is_clone_url(&format!("https://evil.example/?x=git.example.com/{n}/repo.git")));
        assert!(!o.is_clone_url(&format!("https://git.example.com.evil/{n}/repo.git")));
        assert!(!o.is_clone_url(&format!("https://git.example.com/{n}/repo")));
        assert!(!o.is_clone_url("https://git.example.com/npub1bad/repo.git"));
        assert!(!o.is_clone_url(&format!("https://git.example.com/{n}/a/b.git")));
        assert!(!o.is_clone_url(&format!("ssh://git.example.com/{n}/repo.git")));
        assert!(!o.is_clone_url(&format!("https://git.example.com/{n}/%2e%2e.git")));
    }

    #[test]
    fn prs_clone_urls_are_ours_and_well_formed() {
        let o = ServiceOrigin::parse("git.example.com").unwrap();
        let keys = Keys::generate();
        let n = keys.public_key().to_bech32().unwrap();
        let (pk, d) = o.prs_clone_url(&format!("https://GIT.example.com/prs/{n}/my%20repo.git/")).unwrap();
        assert_eq!((pk, d.as_str()), (keys.public_key(), "my repo"));
        assert!(!o.is_clone_url(&format!("https://git.example.com/prs/{n}/r.git")), "not an announced URL");
        for bad in [
            format!("https://other.example/prs/{n}/r.git"),
            format!("https://git.example.com/prs/{n}/r.git?x=1"),
            format!("https://git.example.com/{n}/r.git"),
            format!("ssh://git.example.com/prs/{n}/r.git"),
            format!("https://git.example.com/prs/{n}/a/b.git"),
        ] {
            assert!(o.prs_clone_url(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn explicit_port_must_match() {
        let o = ServiceOrigin::parse("127.0.0.1:7334").unwrap();
        let n = npub();
        assert!(o.is_clone_url(&format!("http://127.0.0.1:7334/{n}/r.git")));
        assert!(!o.is_clone_url(&format!("http://127.0.0.1/{n}/r.git")));
        assert!(o.is_relay_url("ws://127.0.0.1:7334"));
        assert!(o.is_relay_url("wss://127.0.0.1:7334/"));
        assert!(!o.is_relay_url("ws://127.0.0.1:7335"));
        assert!(!o.is_relay_url("ws://127.0.0.1:7334/other"));
        assert!(!o.is_relay_url("http://127.0.0.1:7334"));
    }

    #[test]
    fn base_paths_are_checked_not_rewritten() {
        assert_eq!(parse_base_path("/").unwrap(), "");
        assert_eq!(parse_base_path("/services/grasp").unwrap(), "/services/grasp");
        for bad in [
            "",
            "grasp",
            "/grasp/",
            "/grasp//relay",
            "/grasp/../relay",
            "/grasp/%2e%2e/relay",
            "/grasp?x",
            "/g#r",
            "/a b",
        ] {
            assert!(parse_base_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn under_a_base_path_urls_carry_it() {
        let o = ServiceOrigin::parse("127.0.0.1:7334").unwrap().with_base_path("/services/grasp".into());
        let n = npub();
        assert!(o.is_clone_url(&format!("http://127.0.0.1:7334/services/grasp/{n}/r.git")));
        assert!(!o.is_clone_url(&format!("http://127.0.0.1:7334/{n}/r.git")), "not at the root");
        assert!(!o.is_clone_url(&format!("http://127.0.0.1:7334/services/graspy/{n}/r.git")));
        assert!(o.is_relay_url("ws://127.0.0.1:7334/services/grasp"));
        assert!(o.is_relay_url("wss://127.0.0.1:7334/services/grasp/"));
        assert!(!o.is_relay_url("ws://127.0.0.1:7334"));
        assert!(!o.is_relay_url("ws://127.0.0.1:7334/services"));
        assert_eq!(o.http_url(), "http://127.0.0.1:7334/services/grasp");
        assert_eq!(o.strip_base("/services/grasp"), Some("/"));
        assert_eq!(o.strip_base("/services/grasp/"), Some("/"));
        assert_eq!(o.strip_base("/services/grasp/metrics"), Some("/metrics"));
        assert_eq!(o.strip_base("/services/graspy"), None);
        assert_eq!(o.strip_base("/"), None);
        let keys = Keys::generate();
        let pn = keys.public_key().to_bech32().unwrap();
        assert!(o.prs_clone_url(&format!("http://127.0.0.1:7334/services/grasp/prs/{pn}/r.git")).is_some());
    }

    #[test]
    fn own_urls_in_every_spelling() {
        let own =
            |domain: &str, url: &str| ServiceOrigin::parse(domain).unwrap().is_own(&Url::parse(url).unwrap());
        assert!(own("git.example.com", "https://git.example.com/x.git"));
        assert!(own("git.example.com", "http://GIT.Example.COM./x.git"));
        assert!(own("git.example.com", "https://git.example.com:443/x"));
        assert!(own("git.example.com", "http://git.example.com:80/x"));
        assert!(!own("git.example.com", "https://git.example.com:8443/x"));
        assert!(!own("git.example.com", "https://git.example.com.evil/x"));
        assert!(!own("git.example.com", "https://evil.example/?git.example.com"));
        assert!(own("127.0.0.1:7334", "http://127.0.0.1:7334/x.git"));
        assert!(own("127.0.0.1:7334", "http://localhost:7334/x.git"));
        assert!(own("127.0.0.1:7334", "http://LOCALHOST.:7334/x.git"));
        assert!(own("127.0.0.1:7334", "http://[::1]:7334/x.git"));
        assert!(own("127.0.0.1:7334", "http://0x7f.1:7334/x.git"), "numeric IPv4 forms");
        assert!(own("127.0.0.1:7334", "http://2130706433:7334/x.git"));
        assert!(own("127.0.0.1:7334", "http://127.1.2.3:7334/x.git"));
        assert!(own("localhost:7334", "http://127.0.0.1:7334/x.git"));
        assert!(own("127.0.0.1:7334", "http://user@127.0.0.1:7334/x.git"));
        assert!(!own("127.0.0.1:7334", "http://127.0.0.1:7335/x.git"));
        assert!(!own("127.0.0.1:7334", "http://10.0.0.1:7334/x.git"));
    }

    #[test]
    fn repo_path_parsing() {
        let keys = Keys::generate();
        let n = keys.public_key().to_bech32().unwrap();
        let (pk, id) = parse_repo_path(&format!("/{n}/a%20b.git")).unwrap();
        assert_eq!(pk, keys.public_key());
        assert_eq!(id.as_str(), "a b");
        assert!(parse_repo_path(&format!("/{n}/..git")).is_none()); // identifier "."
        assert!(parse_repo_path(&format!("/{n}/.git")).is_none());
        assert!(parse_repo_path("/nsec1xyz/a.git").is_none());
    }
}
