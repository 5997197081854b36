//! The NIP-34 event model: repository announcements (30617), repository states (30618),
//! and the references every other event uses to point at them.
//!
//! Everything here is pure parsing of already-verified events; nothing touches storage.

mod identifier;
pub mod kinds;
mod references;
pub mod roles;

pub use identifier::{IdentifierError, RepoIdentifier, MAX_IDENTIFIER_BYTES};
pub use references::{EventReferences, RepoCoordinate, MAX_REFERENCES};
pub use roles::{Role, RoleEntry, RoleStatus, Roles};

use std::collections::BTreeMap;

use nostr::{Event, Kind, PublicKey};

/// Why an event is not a usable NIP-34 repository event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nip34Error {
    /// The event has a different kind.
    #[error("expected kind {expected}, got {actual}")]
    WrongKind {
        /// The kind the parser wanted.
        expected: u16,
        /// The kind the event has.
        actual: u16,
    },
    /// No `d` tag.
    #[error("missing 'd' tag (the repository identifier)")]
    MissingIdentifier,
    /// The `d` tag is not a hostable identifier.
    #[error(transparent)]
    Identifier(#[from] IdentifierError),
    /// A state names a ref git cannot have (`refs/heads/a..b`, a trailing `.lock`, ...):
    /// applying it would leave the repository half aligned.
    #[error("'{0}' is not a valid git ref name")]
    InvalidRefName(String),
}

fn identifier_of(event: &Event) -> Result<RepoIdentifier, Nip34Error> {
    let raw = event.tags.identifier().ok_or(Nip34Error::MissingIdentifier)?;
    Ok(RepoIdentifier::new(raw)?)
}

fn expect_kind(event: &Event, expected: u16) -> Result<(), Nip34Error> {
    let actual = event.kind.as_u16();
    if actual == expected {
        Ok(())
    } else {
        Err(Nip34Error::WrongKind { expected, actual })
    }
}

/// Values of every tag named `name`, flattened (NIP-34 wants one tag with many values; we
/// tolerate several tags and take their union).
fn tag_values<'a>(event: &'a Event, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    event
        .tags
        .iter()
        .filter_map(move |tag| {
            let slice = tag.as_slice();
            (slice.first().map(String::as_str) == Some(name)).then(|| slice[1..].iter().map(String::as_str))
        })
        .flatten()
}

/// A kind-30617 repository announcement.
#[derive(Debug, Clone)]
pub struct RepoAnnouncement {
    /// The announcement's event id (breaks ties between same-second announcements).
    pub id: nostr::EventId,
    /// The announcement author: the owner of the repository at `/<npub>/<identifier>.git`.
    pub owner: PublicKey,
    /// The `d` tag.
    pub identifier: RepoIdentifier,
    /// The `name` tag, if any.
    pub name: Option<String>,
    /// The `description` tag, if any.
    pub description: Option<String>,
    /// Union of all `clone` tag values.
    pub clone_urls: Vec<String>,
    /// Union of all `relays` tag values.
    pub relays: Vec<String>,
    /// Valid public keys from the legacy `maintainers` tags, the author left out (invalid
    /// entries are skipped). Ignored when role tags are present: ngit 3 still writes this
    /// tag next to them, invitees included.
    pub maintainers: Vec<PublicKey>,
    /// The role tags (`M`, `m`, `o`); empty for a legacy announcement.
    pub roles: Roles,
    /// When the announcement was signed.
    pub created_at: nostr::Timestamp,
}

impl RepoAnnouncement {
    /// Parses an announcement; fails when the kind or the `d` tag is wrong.
    pub fn parse(event: &Event) -> Result<Self, Nip34Error> {
        expect_kind(event, kinds::REPO_ANNOUNCEMENT)?;
        let identifier = identifier_of(event)?;
        let maintainers = tag_values(event, "maintainers")
            .filter_map(|v| PublicKey::from_hex(v.trim()).ok())
            .filter(|pk| *pk != event.pubkey)
            .collect();
        Ok(Self {
            id: event.id,
            owner: event.pubkey,
            identifier,
            name: tag_values(event, "name").next().map(str::to_owned),
            description: tag_values(event, "description").next().map(str::to_owned),
            clone_urls: tag_values(event, "clone").map(str::to_owned).collect(),
            relays: tag_values(event, "relays").map(str::to_owned).collect(),
            maintainers,
            roles: Roles::of(event),
            created_at: event.created_at,
        })
    }

    /// Whether the author holds a maintaining role by their own announcement: always for a
    /// legacy announcement, otherwise see [`Roles::author_active`].
    pub fn author_active(&self) -> bool {
        !self.roles.present() || self.roles.author_active(&self.owner)
    }

    /// The pubkeys this announcement lists as maintainers, the author left out: active `M`
    /// and `m` entries when role tags are present, else the legacy `maintainers` tag.
    pub fn listed(&self) -> Vec<PublicKey> {
        if self.roles.present() {
            self.roles.maintainers().into_iter().filter(|pk| *pk != self.owner).collect()
        } else {
            self.maintainers.clone()
        }
    }

    /// True when this announcement gives `pubkey` a role: an active `M`, `m` or `o` entry,
    /// or (without role tags) the legacy `maintainers` tag.
    pub fn names(&self, pubkey: &PublicKey) -> bool {
        if self.roles.present() {
            self.roles.entries.iter().any(|e| e.active_subject().as_ref() == Some(pubkey))
        } else {
            self.maintainers.contains(pubkey)
        }
    }

    /// The active lead pointers (`M` entries), in tag order; empty for a legacy
    /// announcement.
    pub fn leads(&self) -> Vec<PublicKey> {
        self.roles.leads()
    }

    /// The `30617:<owner>:<d>` coordinate other events use to tag this repository.
    pub fn coordinate(&self) -> RepoCoordinate {
        RepoCoordinate::announcement(self.owner, self.identifier.as_str())
    }
}

/// A kind-30618 repository state: the refs the maintainers say the repo has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoState {
    /// The state event's id.
    pub id: nostr::EventId,
    /// The state author (must be a maintainer to matter).
    pub author: PublicKey,
    /// The `d` tag.
    pub identifier: RepoIdentifier,
    /// `refs/heads/*` and `refs/tags/*` to object id (lowercase hex), peeled `^{}` entries
    /// dropped.
    pub refs: BTreeMap<String, String>,
    /// `refs/heads/*` and `refs/tags/*` names whose value is not a full object id (short,
    /// non-hex). Git data for them can never arrive, so such a state is held until it
    /// expires: never served, applied or used to authorize a push (decision 15b).
    pub malformed_refs: Vec<String>,
    /// The branch `HEAD` points at (`refs/heads/x`), if the event names one.
    pub head: Option<String>,
    /// When the state was signed.
    pub created_at: nostr::Timestamp,
}

impl RepoState {
    /// Parses a state event, tolerating extra tag elements, peeled entries and `HEAD`
    /// without the `ref: ` prefix.
    pub fn parse(event: &Event) -> Result<Self, Nip34Error> {
        expect_kind(event, kinds::REPO_STATE)?;
        let identifier = identifier_of(event)?;
        let mut refs = BTreeMap::new();
        let mut malformed_refs = Vec::new();
        let mut head = None;
        for tag in event.tags.iter() {
            let slice = tag.as_slice();
            let (Some(name), Some(value)) = (slice.first(), slice.get(1)) else {
                continue;
            };
            if name == "HEAD" {
                let target = value.strip_prefix("ref:").map(str::trim).unwrap_or(value.trim());
                if target.starts_with("refs/heads/") {
                    head = Some(target.to_owned());
                }
            } else if (name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
                && !name.ends_with("^{}")
            {
                if !git2::Reference::is_valid_name(name) {
                    return Err(Nip34Error::InvalidRefName(name.clone()));
                }
                if is_object_id(value) {
                    refs.insert(name.clone(), value.to_ascii_lowercase());
                } else {
                    malformed_refs.push(name.clone());
                }
            }
        }
        Ok(Self {
            id: event.id,
            author: event.pubkey,
            identifier,
            refs,
            malformed_refs,
            head,
            created_at: event.created_at,
        })
    }

    /// False when a ref value is not a full object id: the state waits for data that can
    /// never arrive.
    pub fn is_well_formed(&self) -> bool {
        self.malformed_refs.is_empty()
    }

    /// True when this state replaces `other` at one address: newer, or signed in the same
    /// second with the lower id (NIP-01, decision 27).
    pub fn supersedes(&self, other: &RepoState) -> bool {
        (self.created_at, std::cmp::Reverse(self.id)) > (other.created_at, std::cmp::Reverse(other.id))
    }

    /// True when this state may drive a repository (authorize a push, be applied): it is
    /// well formed and names at least one ref. A state with no refs is stored but never
    /// applied (decision 15), so it cannot delete every branch.
    pub fn can_drive_refs(&self) -> bool {
        self.is_well_formed() && !self.refs.is_empty()
    }
}

/// The commit a pull request (1618) or pull request update (1619) names in its `c` tag,
/// when it is a full object id.
pub fn commit_tag(event: &Event) -> Option<String> {
    raw_commit_tag(event).filter(|c| is_object_id(c)).map(str::to_ascii_lowercase)
}

/// The first `c` tag value as written, well formed or not. A pull request whose `c` is not a
/// full object id waits for data that can never arrive: it is held until it expires, and a
/// push to its `refs/nostr/<id>` is refused.
pub fn raw_commit_tag(event: &Event) -> Option<&str> {
    tag_values(event, "c").next()
}

/// The URLs in an event's `clone` tags (a pull request names where its commits are).
pub fn clone_tag_urls(event: &Event) -> Vec<String> {
    tag_values(event, "clone").map(str::to_owned).collect()
}

/// True for a 40-hex (SHA-1) or 64-hex (SHA-256) git object id.
pub fn is_object_id(value: &str) -> bool {
    (value.len() == 40 || value.len() == 64) && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// True when `kind` is one of the repository anchor kinds (30617 / 30618).
pub fn is_repo_kind(kind: Kind) -> bool {
    matches!(kind.as_u16(), kinds::REPO_ANNOUNCEMENT | kinds::REPO_STATE)
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Tag};

    use super::*;

    fn sign(kind: u16, tags: Vec<Vec<&str>>) -> Event {
        let tags = tags.into_iter().map(|t| Tag::parse(t).unwrap());
        EventBuilder::new(Kind::Custom(kind), "").tags(tags).sign_with_keys(&Keys::generate()).unwrap()
    }

    #[test]
    fn announcement_unions_clone_and_relays_and_skips_bad_maintainers() {
        let m = Keys::generate().public_key().to_hex();
        let ev = sign(
            30617,
            vec![
                vec!["d", "repo"],
                vec!["clone", "https://a/x.git", "https://b/x.git"],
                vec!["clone", "https://c/x.git"],
                vec!["relays", "wss://a"],
                vec!["maintainers", &m, "not-a-key"],
            ],
        );
        let ann = RepoAnnouncement::parse(&ev).unwrap();
        assert_eq!(ann.clone_urls.len(), 3);
        assert_eq!(ann.relays, vec!["wss://a"]);
        assert_eq!(ann.maintainers.len(), 1);
        assert_eq!(ann.coordinate().to_string(), format!("30617:{}:repo", ev.pubkey));
    }

    #[test]
    fn announcement_needs_valid_identifier() {
        assert_eq!(RepoAnnouncement::parse(&sign(30617, vec![])).unwrap_err(), Nip34Error::MissingIdentifier);
        assert!(RepoAnnouncement::parse(&sign(30617, vec![vec!["d", ".."]])).is_err());
        assert!(RepoAnnouncement::parse(&sign(1, vec![vec!["d", "x"]])).is_err());
    }

    #[test]
    fn state_parses_refs_head_variants_and_ignores_peeled() {
        let c = "a".repeat(40);
        let ev = sign(
            30618,
            vec![
                vec!["d", "repo"],
                vec!["refs/heads/main", &c, "extra"],
                vec!["refs/tags/v1", &c],
                vec!["refs/tags/v1^{}", &c],
                vec!["refs/notes/x", &c],
                vec!["refs/heads/bad", "zz"],
                vec!["HEAD", "ref: refs/heads/main"],
            ],
        );
        let st = RepoState::parse(&ev).unwrap();
        assert_eq!(st.refs.keys().collect::<Vec<_>>(), vec!["refs/heads/main", "refs/tags/v1"]);
        assert_eq!(st.malformed_refs, vec!["refs/heads/bad"]);
        assert!(!st.is_well_formed() && !st.can_drive_refs());
        assert_eq!(st.head.as_deref(), Some("refs/heads/main"));

        let bare = sign(30618, vec![vec!["d", "repo"], vec!["HEAD", "refs/heads/dev"]]);
        let bare = RepoState::parse(&bare).unwrap();
        assert_eq!(bare.head.as_deref(), Some("refs/heads/dev"));
        assert!(bare.is_well_formed() && !bare.can_drive_refs(), "no refs: stored, never applied");

        for bad in
            ["refs/heads/a..b", "refs/heads/x.lock", "refs/tags/a b", "refs/heads/-/x/", "refs/heads/@{x}"]
        {
            let invalid = sign(30618, vec![vec!["d", "repo"], vec![bad, &c]]);
            assert_eq!(RepoState::parse(&invalid).unwrap_err(), Nip34Error::InvalidRefName(bad.to_owned()));
        }

        for value in ["abc123", &"g".repeat(40), &"a".repeat(41)] {
            let short = sign(30618, vec![vec!["d", "repo"], vec!["refs/heads/main", value]]);
            let short = RepoState::parse(&short).unwrap();
            assert!(short.refs.is_empty() && !short.is_well_formed(), "{value} is not an object id");
        }
    }
}
