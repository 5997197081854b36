//! GRASP-08 private service: the whole server is for its members only. A websocket client
//! proves who it is with NIP-42 before the relay answers anything, a git client sends a
//! NIP-98 credential with every request, and only members get through. Membership grants
//! reading (and publishing events); pushes are still authorized by signed states.
//!
//! This module holds the member set and the two checks as functions of their input, so the
//! relay session and both HTTP frontends decide alike; discovering the owners of other
//! private servers (private-to-private mirroring) is [`crate::mirrors`].

pub mod members;
pub mod nip42;
pub mod nip98;
pub mod peers;

use nostr::PublicKey;
use url::Url;

pub use members::Members;
pub use peers::PrivatePeers;

use crate::git::RepoRef;
use crate::origin::ServiceOrigin;

/// A member key as configured: an npub (or a hex public key).
pub fn parse_member(value: &str) -> Option<PublicKey> {
    PublicKey::parse(value.trim()).ok()
}

/// The public origin option: an `http(s)://host[:port]` URL without path, query, fragment
/// or credentials. Returns `host[:port]`.
pub fn parse_public_origin(value: &str) -> Result<String, String> {
    let url = Url::parse(value.trim()).map_err(|e| format!("'{value}' is not a URL ({e})"))?;
    let bare = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !bare {
        return Err(format!(
            "'{value}' must be an http(s) origin without a path, query, fragment or credentials, \
             e.g. https://git.example.com"
        ));
    }
    let host = url.host_str().expect("checked");
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// Who may use a private service, and how they prove it.
#[derive(Debug)]
pub struct PrivateAccess {
    members: Members,
    /// Where the relay is (`relay` tags of NIP-42 events name it).
    origin: ServiceOrigin,
    /// Where clients reach the git repositories (`u` tags of NIP-98 credentials name it).
    public: ServiceOrigin,
}

impl PrivateAccess {
    /// Access to the service at `origin` (and, when clients reach it elsewhere, at
    /// `public`) for `members`.
    pub fn new(members: Members, origin: ServiceOrigin, public: Option<ServiceOrigin>) -> Self {
        let public = public.unwrap_or_else(|| origin.clone());
        Self { members, origin, public }
    }

    /// The members (configured and learned).
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// True when `pubkey` is a member now.
    pub fn is_member(&self, pubkey: &PublicKey) -> bool {
        self.members.contains(pubkey)
    }

    /// Checks a NIP-42 `AUTH` event answering `challenge`: the member it proves, or why not
    /// (see [`nip42::Refusal`]).
    pub fn authenticate(&self, event: &nostr::Event, challenge: &str) -> Result<PublicKey, nip42::Refusal> {
        let pubkey = nip42::verify(event, challenge, &self.origin, nostr::Timestamp::now())?;
        if self.is_member(&pubkey) {
            Ok(pubkey)
        } else {
            Err(nip42::Refusal::NotMember)
        }
    }

    /// True when the `Authorization` header carries a NIP-98 credential of a member for
    /// `repo`. Every failure looks the same to the client ([`nip98::unauthorized`]).
    pub fn admits_git(&self, authorization: Option<&str>, repo: &RepoRef) -> bool {
        let Some(event) = authorization.and_then(nip98::credential) else { return false };
        nip98::verify(&event, repo, &self.public, nostr::Timestamp::now())
            .is_ok_and(|pubkey| self.is_member(&pubkey))
    }

    /// The realm of `WWW-Authenticate` challenges: the service's address.
    pub fn realm(&self) -> String {
        self.origin.service_address()
    }
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::ToBech32;
    use nostr::Keys;

    use super::*;

    #[test]
    fn member_keys_and_public_origins_parse_or_say_why() {
        let keys = Keys::generate();
        let npub = keys.public_key().to_bech32().unwrap();
        assert_eq!(parse_member(&npub), Some(keys.public_key()));
        assert_eq!(parse_member(&format!(" {} ", keys.public_key().to_hex())), Some(keys.public_key()));
        assert_eq!(parse_member("npub1nope"), None);
        assert_eq!(parse_public_origin("https://git.example.com").unwrap(), "git.example.com");
        assert_eq!(parse_public_origin("http://127.0.0.1:8080/").unwrap(), "127.0.0.1:8080");
        for bad in [
            "git.example.com",
            "ftp://x.example",
            "https://x.example/base",
            "https://u:p@x.example",
            "https://x.example/?q",
        ] {
            assert!(parse_public_origin(bad).is_err(), "{bad}");
        }
    }
}
