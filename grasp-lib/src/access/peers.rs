//! The other private servers this one mirrors with (GRASP-08), and the credential it shows
//! their git servers: a NIP-98 event signed by this relay's owner key for the repository
//! being fetched. Credentials go only to servers known to be private, never to any host an
//! event names.

use std::collections::HashSet;
use std::sync::RwLock;

use nostr::Keys;
use url::Url;

/// `host:port` (lower case, the scheme's default port spelled out) of a URL: a relay
/// (`ws`/`wss`) and a git URL (`http`/`https`) of one server have the same.
pub fn authority_of(url: &str) -> Option<String> {
    let url = Url::parse(url.trim()).ok()?;
    let port = url.port_or_known_default()?;
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    Some(format!("{host}:{port}"))
}

/// Private servers known by their authority, and the key that signs for this one.
#[derive(Debug, Default)]
pub struct PrivatePeers {
    keys: Option<Keys>,
    authorities: RwLock<HashSet<String>>,
}

impl PrivatePeers {
    /// Peers this server signs for with `keys` (none: it never sends credentials).
    pub fn new(keys: Option<Keys>) -> Self {
        Self { keys, authorities: RwLock::default() }
    }

    /// The key credentials are signed with.
    pub fn keys(&self) -> Option<&Keys> {
        self.keys.as_ref()
    }

    /// Replaces the known private servers (by [`authority_of`] their relay URL).
    pub fn set(&self, authorities: HashSet<String>) {
        *self.authorities.write().expect("peers poisoned") = authorities;
    }

    /// True when the server at `url` is a known private one.
    pub fn is_private(&self, url: &str) -> bool {
        authority_of(url).is_some_and(|a| self.authorities.read().expect("peers poisoned").contains(&a))
    }

    /// The `Authorization` header value for fetching `git_url`, when it is on a known
    /// private server and this server has a key.
    pub fn authorization_for(&self, git_url: &str) -> Option<String> {
        let keys = self.keys.as_ref()?;
        self.is_private(git_url).then(|| super::nip98::header_for(keys, git_url)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_known_private_servers() {
        let keys = Keys::generate();
        let peers = PrivatePeers::new(Some(keys.clone()));
        let url = "http://127.0.0.1:7001/npub1x/r.git";
        assert!(peers.authorization_for(url).is_none());
        peers.set(HashSet::from([authority_of("ws://127.0.0.1:7001").unwrap()]));
        let header = peers.authorization_for(url).unwrap();
        assert_eq!(super::super::nip98::credential(&header).unwrap().pubkey, keys.public_key());
        assert!(peers.authorization_for("http://127.0.0.1:7002/npub1x/r.git").is_none());
        assert!(PrivatePeers::new(None).authorization_for(url).is_none());
        assert_eq!(authority_of("wss://Relay.Example."), Some("relay.example:443".to_owned()));
        assert_eq!(authority_of("https://relay.example/x.git"), Some("relay.example:443".to_owned()));
    }
}
