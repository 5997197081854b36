//! Sync peers: which relays this server pulls from, and how their URLs are spelled.
//!
//! Peers are the union of the `relays` tags of every announcement this server keeps
//! (stored or held: the maintainer sets of the repositories it hosts) plus the configured
//! bootstrap relays (decision 22). Announcements that arrive by sync add peers too, so
//! discovery is recursive. One relay has many spellings (`wss://Relay.example.com:443/`,
//! `https://relay.example.com`); each peer is kept once, in one canonical form, and this
//! server's own URL is never a peer, however it is written.

use std::collections::HashMap;
use std::net::SocketAddr;

use nostr::RelayUrl;
use url::Url;

use crate::nip34::RepoAnnouncement;
use crate::origin::ServiceOrigin;

/// A peer relay URL in canonical form: `ws` or `wss`, lower-case host without a trailing
/// dot, no default port, no trailing slash, no credentials, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerUrl(RelayUrl);

/// Why a relay URL cannot be a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a relay URL (ws://host[:port][/path] or wss://…)")]
pub struct InvalidPeerUrl(pub String);

impl PeerUrl {
    /// Parses a relay URL as written in an announcement. `http`/`https` count as their
    /// websocket twins (`ws`/`wss`); a missing scheme is read as for bootstrap relays.
    pub fn parse(value: &str) -> Result<Self, InvalidPeerUrl> {
        let bad = || InvalidPeerUrl(value.to_owned());
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(bad());
        }
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            let host = trimmed.split(['/', ':']).next().unwrap_or_default();
            let scheme = if is_loopback_host(host) { "ws" } else { "wss" };
            format!("{scheme}://{trimmed}")
        };
        let mut url = Url::parse(&with_scheme).map_err(|_| bad())?;
        let scheme = match url.scheme() {
            "ws" | "http" => "ws",
            "wss" | "https" => "wss",
            _ => return Err(bad()),
        };
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(bad());
        }
        let host = url.host_str().ok_or_else(bad)?.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad());
        }
        let port = url.port_or_known_default();
        let default_port = if scheme == "ws" { 80 } else { 443 };
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path("");
        let authority = match port {
            Some(p) if p != default_port => format!("{host}:{p}"),
            _ => host,
        };
        let canonical = format!("{scheme}://{authority}{path}");
        RelayUrl::parse(&canonical).map(Self).map_err(|_| bad())
    }

    /// The canonical URL.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URL as nostr-sdk takes it.
    pub fn relay_url(&self) -> &RelayUrl {
        &self.0
    }

    fn url(&self) -> Option<Url> {
        Url::parse(self.as_str()).ok()
    }
}

impl std::fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Recognizes this server's own relay, however a URL spells it: the public origin
/// (`domain`, see [`ServiceOrigin::is_own`]) and the address the server listens on.
#[derive(Debug, Clone)]
pub struct OwnUrls {
    origin: ServiceOrigin,
    listener: Option<ServiceOrigin>,
}

impl OwnUrls {
    /// `origin` is the configured domain; `bind` the listening address (ignored when its
    /// port is 0, i.e. chosen by the system; an unspecified IP means every loopback name).
    pub fn new(origin: ServiceOrigin, bind: SocketAddr) -> Self {
        let listener = (bind.port() != 0).then(|| {
            let ip = if bind.ip().is_unspecified() { "127.0.0.1".to_owned() } else { bind.ip().to_string() };
            let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
            ServiceOrigin::parse(&format!("{host}:{}", bind.port()))
        });
        Self { origin, listener: listener.and_then(Result::ok) }
    }

    /// True when `peer` is this server.
    pub fn is_own(&self, peer: &PeerUrl) -> bool {
        let Some(url) = peer.url() else { return false };
        self.origin.is_own(&url) || self.listener.as_ref().is_some_and(|l| l.is_own(&url))
    }
}

/// Relays one owner's announcements can make a peer.
pub const RELAYS_PER_OWNER: usize = 10;

/// The peers to sync with: the bootstrap relays first, then the relays of `announcements`
/// ranked by how many distinct owners list them (one owner with many repositories counts
/// once), owners taking turns within a rank, each relay once, never this server, only those
/// `allowed` (the outbound policy's URL checks), at most `max_peers`.
///
/// At most [`RELAYS_PER_OWNER`] relays count from one owner, so one key listing hundreds of
/// relays cannot fill the peer list; relays that cannot be parsed are skipped.
pub fn discover<'a>(
    bootstrap: &[PeerUrl],
    announcements: impl IntoIterator<Item = &'a RepoAnnouncement>,
    own: &OwnUrls,
    max_peers: usize,
    allowed: impl Fn(&PeerUrl) -> bool,
) -> Vec<PeerUrl> {
    // Each owner's relays, in listing order, without repeats.
    let mut by_owner: std::collections::BTreeMap<nostr::PublicKey, Vec<PeerUrl>> = Default::default();
    for announcement in announcements {
        let relays = by_owner.entry(announcement.owner).or_default();
        for value in &announcement.relays {
            let Ok(peer) = PeerUrl::parse(value) else { continue };
            if relays.len() < RELAYS_PER_OWNER
                && !relays.contains(&peer)
                && !own.is_own(&peer)
                && allowed(&peer)
            {
                relays.push(peer);
            }
        }
    }
    let mut owners_of: HashMap<PeerUrl, usize> = HashMap::new();
    for relays in by_owner.values() {
        for peer in relays {
            *owners_of.entry(peer.clone()).or_default() += 1;
        }
    }
    let mut ranks: Vec<usize> = owners_of.values().copied().collect();
    ranks.sort_unstable_by(|a, b| b.cmp(a));
    ranks.dedup();
    let mut peers: Vec<PeerUrl> = Vec::new();
    let full = |peers: &Vec<PeerUrl>| peers.len() >= max_peers;
    for peer in bootstrap {
        if !full(&peers) && !own.is_own(peer) && !peers.contains(peer) {
            peers.push(peer.clone());
        }
    }
    for rank in ranks {
        // Owners take turns: each gives its next relay of this rank not taken yet.
        let mut cursors = vec![0usize; by_owner.len()];
        loop {
            let mut took = false;
            for (relays, cursor) in by_owner.values().zip(cursors.iter_mut()) {
                while let Some(peer) = relays.get(*cursor) {
                    *cursor += 1;
                    if owners_of[peer] == rank && !peers.contains(peer) {
                        if full(&peers) {
                            return peers;
                        }
                        peers.push(peer.clone());
                        took = true;
                        break;
                    }
                }
            }
            if !took {
                break;
            }
        }
    }
    peers
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Kind, Tag};

    use super::*;

    fn canonical(value: &str) -> String {
        PeerUrl::parse(value).unwrap().as_str().to_owned()
    }

    #[test]
    fn spellings_of_one_relay_are_one_peer() {
        for spelling in [
            "wss://relay.example.com",
            "wss://relay.example.com/",
            "WSS://Relay.Example.COM",
            "wss://relay.example.com:443",
            "wss://relay.example.com.",
            "https://relay.example.com/",
            "relay.example.com",
            " relay.example.com/ ",
        ] {
            assert_eq!(canonical(spelling), "wss://relay.example.com", "{spelling}");
        }
        assert_eq!(canonical("ws://relay.example.com:80/"), "ws://relay.example.com");
        assert_eq!(canonical("http://relay.example.com"), "ws://relay.example.com");
        assert_eq!(canonical("wss://relay.example.com:7777/nostr/"), "wss://relay.example.com:7777/nostr");
    }

    #[test]
    fn bootstrap_scheme_is_optional() {
        assert_eq!(canonical("relay.example.com"), "wss://relay.example.com");
        assert_eq!(canonical("127.0.0.1:7000"), "ws://127.0.0.1:7000");
        assert_eq!(canonical("localhost:7000/"), "ws://localhost:7000");
        assert_eq!(canonical("ws://127.0.0.1:7000"), "ws://127.0.0.1:7000");
    }

    #[test]
    fn non_relay_urls_are_refused() {
        for bad in [
            "",
            "ftp://relay.example.com",
            "wss://user:pw@relay.example.com",
            "wss://relay.example.com/?x=1",
            "wss://relay.example.com/#f",
            "wss://",
            "git@relay.example.com:x.git",
        ] {
            assert!(PeerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    fn own(domain: &str, bind: &str) -> OwnUrls {
        OwnUrls::new(ServiceOrigin::parse(domain).unwrap(), bind.parse().unwrap())
    }

    #[test]
    fn own_url_is_recognized_in_every_spelling() {
        let ours = own("127.0.0.1:7334", "127.0.0.1:0");
        for spelling in [
            "ws://127.0.0.1:7334",
            "ws://127.0.0.1:7334/",
            "wss://127.0.0.1:7334",
            "http://127.0.0.1:7334",
            "https://127.0.0.1:7334/",
            "127.0.0.1:7334",
            "ws://localhost:7334",
            "ws://LOCALHOST:7334",
            "ws://[::1]:7334",
        ] {
            assert!(ours.is_own(&PeerUrl::parse(spelling).unwrap()), "{spelling}");
        }
        for other in ["ws://127.0.0.1:7335", "ws://10.0.0.1:7334", "wss://relay.example.com"] {
            assert!(!ours.is_own(&PeerUrl::parse(other).unwrap()), "{other}");
        }
    }

    #[test]
    fn own_url_without_port_means_default_ports() {
        let ours = own("git.example.com", "0.0.0.0:7334");
        for spelling in [
            "wss://git.example.com",
            "wss://GIT.example.com:443/",
            "ws://git.example.com:80",
            "https://git.example.com",
            "git.example.com",
            "git.example.com.",
        ] {
            assert!(ours.is_own(&PeerUrl::parse(spelling).unwrap()), "{spelling}");
        }
        assert!(!ours.is_own(&PeerUrl::parse("wss://git.example.com:8443").unwrap()));
        assert!(!ours.is_own(&PeerUrl::parse("wss://git.example.com.evil").unwrap()));
        // The listener itself, reached on loopback.
        assert!(ours.is_own(&PeerUrl::parse("ws://127.0.0.1:7334").unwrap()));
        assert!(ours.is_own(&PeerUrl::parse("ws://localhost:7334/").unwrap()));
        assert!(!ours.is_own(&PeerUrl::parse("ws://127.0.0.1:7335").unwrap()));
    }

    fn announcement(relays: &[&str]) -> RepoAnnouncement {
        let mut tag = vec!["relays".to_owned()];
        tag.extend(relays.iter().map(|r| r.to_string()));
        let event = EventBuilder::new(Kind::Custom(30617), "")
            .tags([Tag::identifier("r"), Tag::parse(tag).unwrap()])
            .sign_with_keys(&Keys::generate())
            .unwrap();
        RepoAnnouncement::parse(&event).unwrap()
    }

    #[test]
    fn discovery_is_bootstrap_then_most_listed_without_us() {
        let ours = own("127.0.0.1:7000", "127.0.0.1:0");
        let anns = [
            announcement(&["ws://127.0.0.1:7000", "ws://127.0.0.1:7002", "ws://127.0.0.1:7001/"]),
            announcement(&["ws://127.0.0.1:7001", "ws://127.0.0.1:7001", "not a url"]),
            announcement(&["ws://LOCALHOST:7000/"]),
        ];
        let bootstrap =
            [PeerUrl::parse("127.0.0.1:7009").unwrap(), PeerUrl::parse("127.0.0.1:7000").unwrap()];
        let peers: Vec<String> =
            discover(&bootstrap, &anns, &ours, 10, |_| true).iter().map(|p| p.as_str().to_owned()).collect();
        assert_eq!(peers, ["ws://127.0.0.1:7009", "ws://127.0.0.1:7001", "ws://127.0.0.1:7002"]);
        let capped = discover(&bootstrap, &anns, &ours, 2, |_| true);
        assert_eq!(capped.len(), 2);
        let refused = discover(&[], &anns, &ours, 10, |p| p.as_str() != "ws://127.0.0.1:7001");
        assert_eq!(refused.iter().map(|p| p.as_str()).collect::<Vec<_>>(), ["ws://127.0.0.1:7002"]);
    }

    #[test]
    fn relays_rank_by_distinct_owners_and_one_owner_cannot_fill_the_list() {
        let ours = own("127.0.0.1:7000", "127.0.0.1:0");
        let shared = "wss://shared.example";
        // One key with two repositories listing many relays of its own...
        let flood: Vec<String> = (0..40).map(|i| format!("wss://r{i}.evil.example")).collect();
        let flood: Vec<&str> = flood.iter().map(String::as_str).collect();
        let keys = Keys::generate();
        let of = |keys: &Keys, relays: &[&str], d: &str| {
            let mut tag = vec!["relays".to_owned()];
            tag.extend(relays.iter().map(|r| r.to_string()));
            let event = EventBuilder::new(Kind::Custom(30617), "")
                .tags([Tag::identifier(d), Tag::parse(tag).unwrap()])
                .sign_with_keys(keys)
                .unwrap();
            RepoAnnouncement::parse(&event).unwrap()
        };
        let mut anns = vec![of(&keys, &flood, "a"), of(&keys, &flood, "b")];
        // ...and two owners who share one relay.
        anns.push(of(&Keys::generate(), &[shared, "wss://alice.example"], "c"));
        anns.push(of(&Keys::generate(), &[shared, "wss://bob.example"], "d"));
        let peers = discover(&[], &anns, &ours, 50, |_| true);
        assert_eq!(peers[0].as_str(), shared, "listed by two owners ranks first");
        let evil = peers.iter().filter(|p| p.as_str().ends_with(".evil.example")).count();
        assert_eq!(evil, RELAYS_PER_OWNER, "one owner counts at most {RELAYS_PER_OWNER} relays");
        let capped = discover(&[], &anns, &ours, 3, |_| true);
        let names: Vec<&str> = capped.iter().map(|p| p.as_str()).collect();
        assert!(
            names.contains(&"wss://alice.example") || names.contains(&"wss://bob.example"),
            "owners take turns: {names:?}"
        );
    }
}
