//! What names a hosted repository: its owner, identifier and namespace.

use std::fmt;
use std::path::{Path, PathBuf};

use nostr::nips::nip19::ToBech32;
use nostr::PublicKey;

use crate::nip34::RepoIdentifier;

/// Which of the two repository namespaces of a GRASP server a repository lives in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Namespace {
    /// `/<npub>/<identifier>.git`: a repository announced (kind 30617) by its owner, whose
    /// branches and tags follow the maintainers' state events (GRASP-01).
    #[default]
    Announced,
    /// `/prs/<npub>/<identifier>.git`: where a contributor pushes pull request commits to
    /// `refs/nostr/<event id>` without announcing a repository (GRASP-06). Never announced,
    /// never synced, never aligned to a state. On disk under the contributor's hex pubkey
    /// (`<root>/prs/<hex>/<identifier>.git`), where ngit's test harness and the peer server
    /// look.
    Prs,
}

impl Namespace {
    /// True for [`Namespace::Announced`] (lets serde skip the default).
    pub fn is_announced(&self) -> bool {
        *self == Namespace::Announced
    }

    /// The owner named by a directory under [`Namespace::base`]: an `npub1…` for announced
    /// repositories, 64 lowercase hex digits for `/prs/` ones; `None` for anything else.
    pub fn owner_of_dir(&self, name: &str) -> Option<nostr::PublicKey> {
        match self {
            Namespace::Announced => crate::origin::parse_npub(name),
            Namespace::Prs => (name.len() == 64
                && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| nostr::PublicKey::from_hex(name).ok())
            .flatten(),
        }
    }

    /// The directory of this namespace's repositories under the repository root:
    /// `<root>` itself, or `<root>/prs`.
    pub fn base(&self, root: &Path) -> PathBuf {
        match self {
            Namespace::Announced => root.to_path_buf(),
            Namespace::Prs => root.join(PRS_SEGMENT),
        }
    }
}

/// The URL path segment (and directory) of the `/prs/` namespace.
pub const PRS_SEGMENT: &str = "prs";

/// A hosted repository: who owns it, what it is called, and which namespace it is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoRef {
    /// The npub in the URL: the announcement author, or for a `/prs/` repository the
    /// contributor whose pull requests it carries.
    pub owner: PublicKey,
    /// The repository identifier (`d` tag).
    pub identifier: RepoIdentifier,
    /// Announced repository or GRASP-06 `/prs/` repository.
    pub namespace: Namespace,
}

impl RepoRef {
    /// The announced repository of `owner` named `identifier`.
    pub fn new(owner: PublicKey, identifier: RepoIdentifier) -> Self {
        Self { owner, identifier, namespace: Namespace::Announced }
    }

    /// The GRASP-06 repository `/prs/<npub of contributor>/<identifier>.git`.
    pub fn prs(contributor: PublicKey, identifier: RepoIdentifier) -> Self {
        Self { owner: contributor, identifier, namespace: Namespace::Prs }
    }

    /// True for a GRASP-06 `/prs/` repository.
    pub fn is_prs(&self) -> bool {
        self.namespace == Namespace::Prs
    }

    /// The directory name of the owner on disk: the `npub1…` of an announced repository,
    /// the lowercase hex pubkey of a `/prs/` one.
    pub fn owner_dir(&self) -> String {
        match self.namespace {
            Namespace::Announced => self.npub(),
            Namespace::Prs => self.owner.to_hex(),
        }
    }

    /// The owner's `npub1…`.
    pub fn npub(&self) -> String {
        self.owner.to_bech32().expect("a public key always encodes as npub")
    }

    /// `[/prs]/<npub>/<percent-encoded identifier>.git`, the URL path of the repository.
    pub fn url_path(&self) -> String {
        let prefix = if self.is_prs() { "/prs" } else { "" };
        format!("{prefix}/{}/{}.git", self.npub(), self.identifier.url_encoded())
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_prs() {
            f.write_str("prs/")?;
        }
        write!(f, "{}/{}", self.npub(), self.identifier)
    }
}
