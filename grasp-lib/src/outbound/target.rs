//! The check every URL an event names goes through before the server dials it (hunting's
//! git fetches, relay sync's websockets): the URL itself, then every address its name
//! resolves to. What passes is a [`Vetted`] target, pinned to the addresses that were
//! checked, so a second DNS answer (rebinding) cannot redirect the connection.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use prometheus::IntCounterVec;
use url::{Host, Url};

use super::address;
use crate::origin::ServiceOrigin;

/// Longest URL taken from an event that is dialed.
pub const MAX_URL_BYTES: usize = 2048;

/// What dials a target: which schemes it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// A git remote (`http`, `https`): hunting fetches, pull request clone URLs.
    Git,
    /// A relay (`ws`, `wss`): relay sync.
    Relay,
}

impl TargetKind {
    /// Lower-case name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Git => "git",
            TargetKind::Relay => "relay",
        }
    }

    fn allows(self, scheme: &str) -> bool {
        match self {
            TargetKind::Git => matches!(scheme, "http" | "https"),
            TargetKind::Relay => matches!(scheme, "ws" | "wss"),
        }
    }
}

/// Why a target is not dialed: a short stable label (for metrics) and a sentence (for logs
/// and the purgatory listing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    /// One of [`Refused::LABELS`].
    pub label: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl Refused {
    /// Every label a refusal can carry (the metric's label values).
    pub const LABELS: [&'static str; 8] = [
        "not_a_url",
        "too_long",
        "scheme",
        "credentials",
        "local_name",
        "non_global_address",
        "own_service",
        "dns",
    ];

    fn new(label: &'static str, reason: impl Into<String>) -> Self {
        Self { label, reason: reason.into() }
    }
}

/// Names that only mean something on a local network (or nowhere).
const LOCAL_SUFFIXES: [&str; 13] = [
    ".localhost",
    ".local",
    ".localdomain",
    ".internal",
    ".intranet",
    ".private",
    ".lan",
    ".home",
    ".corp",
    ".home.arpa",
    ".onion",
    ".test",
    ".invalid",
];

/// Why a host name is local, if it is.
fn local_name(host: &str) -> Option<&'static str> {
    let dotted = format!(".{host}");
    if host == "localhost" {
        Some("'localhost'")
    } else if !host.contains('.') {
        Some("a single-label name (resolved by local search domains)")
    } else if LOCAL_SUFFIXES.iter().any(|s| dotted.ends_with(s)) || dotted.ends_with(".arpa") {
        Some("a name of a local or special-use domain")
    } else {
        None
    }
}

/// Resolves a host name to addresses: the system resolver, or a fixed table in tests.
pub trait Resolve: Send + Sync + std::fmt::Debug {
    /// Every address `host` resolves to for `port`.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (`getaddrinfo`, through Tokio).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A fixed table of names (test mode only: `test_resolve`), so tests can make a name
/// resolve to loopback without touching `/etc/hosts`. Names not in the table fail.
#[derive(Debug, Default)]
pub struct TableResolver {
    names: Vec<(String, IpAddr)>,
}

impl TableResolver {
    /// From `name=ip` entries.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut names = Vec::new();
        for entry in entries {
            let (name, ip) = entry.split_once('=').ok_or_else(|| format!("'{entry}' is not name=ip"))?;
            let ip = ip.trim().parse().map_err(|_| format!("'{ip}' is not an IP address"))?;
            names.push((name.trim().to_ascii_lowercase(), ip));
        }
        Ok(Self { names })
    }
}

impl Resolve for TableResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        let found: Vec<SocketAddr> =
            self.names.iter().filter(|(n, _)| n == host).map(|(_, ip)| SocketAddr::new(*ip, port)).collect();
        Box::pin(async move {
            if found.is_empty() {
                Err(std::io::Error::new(std::io::ErrorKind::NotFound, "not in the test resolver table"))
            } else {
                Ok(found)
            }
        })
    }
}

/// A target that passed the policy: the URL, and the addresses the connection must use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vetted {
    /// The URL as parsed.
    pub url: Url,
    /// The host, lower case, without brackets or a trailing dot.
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
    /// Addresses to connect to; empty when non-global targets are allowed (then the
    /// system resolver is used as is).
    pub addresses: Vec<SocketAddr>,
    /// True when the host is a name (not an IP literal).
    pub is_name: bool,
}

impl Vetted {
    /// The `http.curloptResolve` value that pins git (libcurl) to the vetted addresses:
    /// `host:port:addr[,addr]`. Only for names: an IP literal needs no pin (curl refuses
    /// one for a bracketed IPv6 host anyway).
    pub fn curl_resolve(&self) -> Option<String> {
        if !self.is_name || self.addresses.is_empty() {
            return None;
        }
        let addresses: Vec<String> = self
            .addresses
            .iter()
            .map(|a| match a.ip() {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            })
            .collect();
        Some(format!("{}:{}:{}", self.host, self.port, addresses.join(",")))
    }
}

/// Registers `grasp_outbound_refused_total{kind,reason}` in `registry`.
pub fn refused_metric(registry: &prometheus::Registry) -> IntCounterVec {
    let metric = IntCounterVec::new(
        prometheus::Opts::new(
            "grasp_outbound_refused_total",
            "Targets named by events that the outbound policy refused to dial, by kind and reason",
        ),
        &["kind", "reason"],
    )
    .expect("valid metric");
    crate::metrics::register_collector(registry, metric)
}

/// The outbound target policy of one server (decision 28).
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    allow_non_global: bool,
    origin: Option<ServiceOrigin>,
    own_addresses: Vec<SocketAddr>,
    trusted: Arc<HashSet<String>>,
    resolver: Arc<dyn Resolve>,
    refused: Option<IntCounterVec>,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        Self {
            allow_non_global: false,
            origin: None,
            own_addresses: Vec::new(),
            trusted: Arc::default(),
            resolver: Arc::new(SystemResolver),
            refused: None,
        }
    }
}

impl OutboundPolicy {
    /// A strict policy for the service at `origin`: only global addresses.
    pub fn new(origin: ServiceOrigin) -> Self {
        Self { origin: Some(origin), ..Self::default() }
    }

    /// Allows loopback, private and other non-global targets (tests, closed networks).
    /// Scheme, credential and own-service checks stay.
    pub fn allow_non_global(mut self, allow: bool) -> Self {
        self.allow_non_global = allow;
        self
    }

    /// Addresses this node serves or trusts that must never be dialed because an event
    /// named them: its own listener, grasp-proxy's upstream. An unspecified IP matches any
    /// address with that port.
    pub fn with_own_addresses(mut self, addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.own_addresses.extend(addresses);
        self
    }

    /// URLs the operator configured (bootstrap relays): dialed without these checks.
    pub fn with_trusted(mut self, urls: impl IntoIterator<Item = String>) -> Self {
        self.trusted = Arc::new(urls.into_iter().map(|u| canonical(&u)).collect());
        self
    }

    /// Resolves names with `resolver` instead of the system's.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Counts refusals in `metric` (labels: kind, reason).
    pub fn with_metric(mut self, metric: IntCounterVec) -> Self {
        for kind in [TargetKind::Git, TargetKind::Relay] {
            for label in Refused::LABELS {
                metric.with_label_values(&[kind.as_str(), label]);
            }
        }
        self.refused = Some(metric);
        self
    }

    /// True when non-global targets are allowed.
    pub fn allows_non_global(&self) -> bool {
        self.allow_non_global
    }

    /// True when the operator configured `url` (it is dialed without checks).
    pub fn is_trusted(&self, url: &str) -> bool {
        self.trusted.contains(&canonical(url))
    }

    /// The checks that need no DNS: the URL, its scheme and credentials, local names, IP
    /// literals, this service.
    pub fn check(&self, kind: TargetKind, url: &str) -> Result<Vetted, Refused> {
        let result = self.check_syntax(kind, url);
        self.count(kind, &result);
        result
    }

    /// [`OutboundPolicy::check`], then every address the name resolves to: one that is not
    /// global (unless allowed) or is this node's refuses the whole target, and so does a
    /// name that does not resolve.
    pub async fn resolve(&self, kind: TargetKind, url: &str) -> Result<Vetted, Refused> {
        let result = match self.check_syntax(kind, url) {
            Ok(target) => self.resolve_addresses(target).await,
            Err(refused) => Err(refused),
        };
        self.count(kind, &result);
        result
    }

    fn count(&self, kind: TargetKind, result: &Result<Vetted, Refused>) {
        if let (Err(refused), Some(metric)) = (result, &self.refused) {
            metric.with_label_values(&[kind.as_str(), refused.label]).inc();
            tracing::debug!(kind = kind.as_str(), reason = %refused.reason, "outbound target refused");
        }
    }

    fn check_syntax(&self, kind: TargetKind, raw: &str) -> Result<Vetted, Refused> {
        let raw = raw.trim();
        if raw.len() > MAX_URL_BYTES {
            return Err(Refused::new("too_long", format!("URL longer than {MAX_URL_BYTES} bytes")));
        }
        let url = Url::parse(raw).map_err(|e| Refused::new("not_a_url", format!("not a URL ({e})")))?;
        if !kind.allows(url.scheme()) {
            let wanted = if kind == TargetKind::Git { "http or https" } else { "ws or wss" };
            return Err(Refused::new("scheme", format!("scheme '{}' (only {wanted})", url.scheme())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::new("credentials", "URLs with credentials are never dialed"));
        }
        let port = url.port_or_known_default().ok_or_else(|| Refused::new("not_a_url", "no port"))?;
        if self.origin.as_ref().is_some_and(|o| o.is_own(&url)) {
            return Err(Refused::new("own_service", "this server itself"));
        }
        let (host, is_name) = match url.host() {
            Some(Host::Domain(name)) => (name.trim_end_matches('.').to_ascii_lowercase(), true),
            Some(Host::Ipv4(ip)) => (ip.to_string(), false),
            Some(Host::Ipv6(ip)) => (ip.to_string(), false),
            None => return Err(Refused::new("not_a_url", "no host")),
        };
        if host.is_empty() {
            return Err(Refused::new("not_a_url", "no host"));
        }
        if !self.allow_non_global {
            if is_name {
                if let Some(why) = local_name(&host) {
                    return Err(Refused::new("local_name", format!("{host}: {why}")));
                }
            } else if let Some(why) = host.parse::<IpAddr>().ok().and_then(address::refusal) {
                return Err(Refused::new("non_global_address", format!("{host}: {why}")));
            }
        }
        let addresses = if is_name {
            Vec::new()
        } else {
            vec![SocketAddr::new(host.parse().expect("an IP literal"), port)]
        };
        let target = Vetted { url, host, port, addresses, is_name };
        self.refuse_own_addresses(&target)?;
        Ok(target)
    }

    async fn resolve_addresses(&self, mut target: Vetted) -> Result<Vetted, Refused> {
        if !target.is_name || self.allow_non_global {
            // An IP literal was checked already; permissive mode keeps the system resolver
            // (own addresses are still refused where they can be known).
            return Ok(target);
        }
        let found = self
            .resolver
            .resolve(&target.host, target.port)
            .await
            .map_err(|e| Refused::new("dns", format!("{}: does not resolve ({e})", target.host)))?;
        if found.is_empty() {
            return Err(Refused::new("dns", format!("{}: no addresses", target.host)));
        }
        for address in &found {
            if let Some(why) = address::refusal(address.ip()) {
                return Err(Refused::new(
                    "non_global_address",
                    format!("{} resolves to {} ({why})", target.host, address.ip()),
                ));
            }
        }
        target.addresses = found;
        self.refuse_own_addresses(&target)?;
        Ok(target)
    }

    fn refuse_own_addresses(&self, target: &Vetted) -> Result<(), Refused> {
        let own = |a: &SocketAddr| {
            self.own_addresses.iter().any(|o| {
                o.port() == a.port()
                    && (o.ip() == a.ip() || (o.ip().is_unspecified() && !address::is_global(a.ip())))
            })
        };
        if target.addresses.iter().any(own) {
            return Err(Refused::new("own_service", "an address this node serves or forwards to"));
        }
        Ok(())
    }
}

/// A URL as compared with operator-configured ones: parsed, without a trailing slash.
fn canonical(url: &str) -> String {
    Url::parse(url.trim())
        .map(|u| u.to_string())
        .unwrap_or_else(|_| url.trim().to_owned())
        .trim_end_matches('/')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> OutboundPolicy {
        OutboundPolicy::new(ServiceOrigin::parse("git.example.com").unwrap())
    }

    fn label(result: Result<Vetted, Refused>) -> &'static str {
        result.expect_err("refused").label
    }

    #[test]
    fn urls_are_checked_before_any_lookup() {
        let p = strict();
        assert!(p.check(TargetKind::Git, "https://other.example/npub1x/r.git").is_ok());
        assert!(p.check(TargetKind::Relay, "wss://relay.example").is_ok());
        assert_eq!(label(p.check(TargetKind::Git, "wss://relay.example")), "scheme");
        assert_eq!(label(p.check(TargetKind::Relay, "https://relay.example")), "scheme");
        assert_eq!(label(p.check(TargetKind::Git, "file:///etc/passwd")), "scheme");
        assert_eq!(label(p.check(TargetKind::Git, "ext::sh -c x")), "scheme");
        assert_eq!(label(p.check(TargetKind::Git, "not a url")), "not_a_url");
        assert_eq!(label(p.check(TargetKind::Git, "https://u:p@other.example/r.git")), "credentials");
        assert_eq!(label(p.check(TargetKind::Git, "https://127.0.0.1:443@other.example/")), "credentials");
        assert_eq!(
            label(p.check(TargetKind::Git, &format!("https://a.example/{}", "x".repeat(3000)))),
            "too_long"
        );
        assert_eq!(label(p.check(TargetKind::Git, "https://GIT.example.com./npub1x/r.git")), "own_service");
        for local in [
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://a.localhost/",
            "http://printer/",
            "http://nas.local/",
            "http://x.internal/",
            "http://router.home.arpa/",
            "http://x.onion/",
            "http://1.0.0.127.in-addr.arpa/",
        ] {
            assert_eq!(label(p.check(TargetKind::Git, local)), "local_name", "{local}");
        }
        for literal in [
            "http://127.0.0.1:9/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.1.2.3/",
            "ws://192.168.0.1:7777",
        ] {
            let kind = if literal.starts_with("ws") { TargetKind::Relay } else { TargetKind::Git };
            assert_eq!(label(p.check(kind, literal)), "non_global_address", "{literal}");
        }
    }

    #[test]
    fn the_permissive_switch_keeps_scheme_credentials_and_own_checks() {
        let p = strict().allow_non_global(true).with_own_addresses(["127.0.0.1:7334".parse().unwrap()]);
        assert!(p.check(TargetKind::Git, "http://127.0.0.1:9000/r.git").is_ok());
        assert!(p.check(TargetKind::Relay, "ws://localhost:9000").is_ok());
        assert_eq!(label(p.check(TargetKind::Git, "file:///x")), "scheme");
        assert_eq!(label(p.check(TargetKind::Git, "http://u@127.0.0.1:9000/")), "credentials");
        assert_eq!(label(p.check(TargetKind::Git, "http://127.0.0.1:7334/r.git")), "own_service");
    }

    #[tokio::test]
    async fn every_resolved_address_is_vetted_and_names_are_pinned() {
        let table = TableResolver::parse(&[
            "good.example=93.184.216.34".into(),
            "mixed.example=93.184.216.34".into(),
            "mixed.example=127.0.0.1".into(),
            "v6.example=2606:4700:4700::1111".into(),
            "meta.example=169.254.169.254".into(),
        ])
        .unwrap();
        let p = strict().with_resolver(Arc::new(table));
        let good = p.resolve(TargetKind::Git, "https://good.example/r.git").await.unwrap();
        assert_eq!(good.curl_resolve().as_deref(), Some("good.example:443:93.184.216.34"));
        let v6 = p.resolve(TargetKind::Git, "http://v6.example:8080/r.git").await.unwrap();
        assert_eq!(v6.curl_resolve().as_deref(), Some("v6.example:8080:[2606:4700:4700::1111]"));
        assert_eq!(label(p.resolve(TargetKind::Git, "https://mixed.example/").await), "non_global_address");
        assert_eq!(label(p.resolve(TargetKind::Relay, "wss://meta.example").await), "non_global_address");
        assert_eq!(label(p.resolve(TargetKind::Git, "https://unknown.example/").await), "dns");
        let literal = p.resolve(TargetKind::Git, "https://93.184.216.34/r.git").await.unwrap();
        assert_eq!(literal.curl_resolve(), None, "IP literals need no pin");
    }

    #[test]
    fn operator_targets_are_trusted_by_their_spelling() {
        let p = strict().with_trusted(["ws://127.0.0.1:7000/".to_owned()]);
        assert!(p.is_trusted("ws://127.0.0.1:7000"));
        assert!(!p.is_trusted("ws://localhost:7000"));
    }
}
