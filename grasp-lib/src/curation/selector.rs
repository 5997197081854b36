//! Operator list entries: which pubkeys and repositories an entry names. The curation lists
//! and the archive list (GRASP-05) share this grammar:
//!
//! | Entry | Matches |
//! |---|---|
//! | `*` | everything |
//! | `npub1…` or 64 hex | the key: events it signs, repositories it owns |
//! | `npub1…/<identifier>` (or `<hex>/<identifier>`) | one repository |
//! | `<identifier>` | every repository with that identifier, whoever owns it |
//!
//! Identifiers are written as published (no percent-encoding); they cannot contain `/`.

use std::fmt;
use std::str::FromStr;

use nostr::nips::nip19::ToBech32;
use nostr::PublicKey;

use crate::nip34::RepoIdentifier;
use crate::origin::parse_npub;

/// One list entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RepoSelector {
    /// `*`: everything.
    Everything,
    /// A key: what it signs and every repository it owns.
    Pubkey(PublicKey),
    /// One repository of one owner.
    Repository(PublicKey, RepoIdentifier),
    /// Every repository with this identifier.
    Identifier(RepoIdentifier),
}

/// Why a list entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("list entry {entry:?}: {reason}")]
pub struct SelectorError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

fn parse_key(text: &str) -> Option<PublicKey> {
    if text.starts_with("npub1") {
        return parse_npub(text);
    }
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| PublicKey::from_hex(text).ok())
        .flatten()
}

impl FromStr for RepoSelector {
    type Err = SelectorError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let error = |reason: &str| SelectorError { entry: entry.to_owned(), reason: reason.to_owned() };
        let text = entry.trim();
        if text == "*" {
            return Ok(Self::Everything);
        }
        let identifier = |d: &str| RepoIdentifier::new(d).map_err(|e| error(&e.to_string()));
        if let Some((key, d)) = text.split_once('/') {
            let owner =
                parse_key(key).ok_or_else(|| error("before '/' must come an npub or a hex public key"))?;
            return Ok(Self::Repository(owner, identifier(d)?));
        }
        if text.starts_with("npub1") {
            return parse_key(text).map(Self::Pubkey).ok_or_else(|| error("not a valid npub"));
        }
        if let Some(key) = parse_key(text) {
            return Ok(Self::Pubkey(key));
        }
        Ok(Self::Identifier(identifier(text)?))
    }
}

impl fmt::Display for RepoSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let npub = |pk: &PublicKey| pk.to_bech32().expect("a public key always encodes as npub");
        match self {
            Self::Everything => f.write_str("*"),
            Self::Pubkey(pk) => f.write_str(&npub(pk)),
            Self::Repository(pk, d) => write!(f, "{}/{d}", npub(pk)),
            Self::Identifier(d) => f.write_str(d.as_str()),
        }
    }
}

impl RepoSelector {
    /// True when the entry names `pubkey` itself (or everything).
    pub fn matches_pubkey(&self, pubkey: &PublicKey) -> bool {
        match self {
            Self::Everything => true,
            Self::Pubkey(pk) => pk == pubkey,
            _ => false,
        }
    }

    /// True when the entry names the repository `identifier` of `owner`.
    pub fn matches_repo(&self, owner: &PublicKey, identifier: &str) -> bool {
        match self {
            Self::Everything => true,
            Self::Pubkey(pk) => pk == owner,
            Self::Repository(pk, d) => pk == owner && d.as_str() == identifier,
            Self::Identifier(d) => d.as_str() == identifier,
        }
    }

    /// True when the entry names a repository with `identifier`, of whatever owner.
    pub fn matches_identifier(&self, identifier: &str) -> bool {
        match self {
            Self::Everything => true,
            Self::Pubkey(_) => false,
            Self::Repository(_, d) | Self::Identifier(d) => d.as_str() == identifier,
        }
    }
}

/// A list of entries (empty: matches nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors(Vec<RepoSelector>);

impl Selectors {
    /// Parses every entry; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, SelectorError> {
        entries.iter().map(|e| e.as_ref().parse()).collect::<Result<Vec<_>, _>>().map(Self)
    }

    /// The entries.
    pub fn entries(&self) -> &[RepoSelector] {
        &self.0
    }

    /// True when the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the list is `*` (possibly among others).
    pub fn is_everything(&self) -> bool {
        self.0.contains(&RepoSelector::Everything)
    }

    /// Some entry names `pubkey` itself.
    pub fn matches_pubkey(&self, pubkey: &PublicKey) -> bool {
        self.0.iter().any(|s| s.matches_pubkey(pubkey))
    }

    /// Some entry names the repository `identifier` of `owner`.
    pub fn matches_repo(&self, owner: &PublicKey, identifier: &str) -> bool {
        self.0.iter().any(|s| s.matches_repo(owner, identifier))
    }

    /// Some entry names a repository with `identifier`, of whatever owner.
    pub fn matches_identifier(&self, identifier: &str) -> bool {
        self.0.iter().any(|s| s.matches_identifier(identifier))
    }

    /// Some entry names every repository with `identifier` (`*` or the bare identifier).
    pub fn matches_any_owner(&self, identifier: &str) -> bool {
        self.0.iter().any(|s| match s {
            RepoSelector::Everything => true,
            RepoSelector::Identifier(d) => d.as_str() == identifier,
            _ => false,
        })
    }

    /// A short summary for humans: "2 pubkeys, 1 repository, 1 identifier" or "everything".
    pub fn summary(&self) -> String {
        if self.is_everything() {
            return "everything".to_owned();
        }
        let count = |f: fn(&RepoSelector) -> bool| self.0.iter().filter(|s| f(s)).count();
        let parts = [
            (count(|s| matches!(s, RepoSelector::Pubkey(_))), "pubkey", "pubkeys"),
            (count(|s| matches!(s, RepoSelector::Repository(..))), "repository", "repositories"),
            (count(|s| matches!(s, RepoSelector::Identifier(_))), "identifier", "identifiers"),
        ];
        let text: Vec<String> = parts
            .into_iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
            .collect();
        if text.is_empty() {
            "nothing".to_owned()
        } else {
            text.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    #[test]
    fn parses_every_form_and_refuses_bad_ones() {
        let keys = Keys::generate();
        let pk = keys.public_key();
        let npub = pk.to_bech32().unwrap();
        let d = |s: &str| RepoIdentifier::new(s).unwrap();
        assert_eq!("*".parse::<RepoSelector>().unwrap(), RepoSelector::Everything);
        assert_eq!(npub.parse::<RepoSelector>().unwrap(), RepoSelector::Pubkey(pk));
        assert_eq!(pk.to_hex().parse::<RepoSelector>().unwrap(), RepoSelector::Pubkey(pk));
        assert_eq!(
            format!(" {npub}/my repo ").parse::<RepoSelector>().unwrap(),
            RepoSelector::Repository(pk, d("my repo"))
        );
        assert_eq!(
            format!("{}/x", pk.to_hex()).parse::<RepoSelector>().unwrap(),
            RepoSelector::Repository(pk, d("x"))
        );
        assert_eq!("ngit".parse::<RepoSelector>().unwrap(), RepoSelector::Identifier(d("ngit")));
        for bad in
            ["npub1nope", "npub1nope/x", "nothex/x", "", "..", &format!("{npub}/"), &format!("{npub}/a/b")]
        {
            assert!(bad.parse::<RepoSelector>().is_err(), "{bad:?}");
        }
        let round = RepoSelector::Repository(pk, d("r"));
        assert_eq!(round.to_string().parse::<RepoSelector>().unwrap(), round);
    }

    #[test]
    fn matching() {
        let (a, b) = (Keys::generate().public_key(), Keys::generate().public_key());
        let list =
            Selectors::parse(&[a.to_hex(), format!("{}/one", b.to_hex()), "shared".to_owned()]).unwrap();
        assert!(list.matches_pubkey(&a) && !list.matches_pubkey(&b));
        assert!(list.matches_repo(&a, "anything"));
        assert!(list.matches_repo(&b, "one") && !list.matches_repo(&b, "two"));
        assert!(list.matches_repo(&b, "shared"));
        assert!(list.matches_identifier("one") && list.matches_identifier("shared"));
        assert!(!list.matches_identifier("anything"), "a pubkey entry names no identifier");
        assert_eq!(list.summary(), "1 pubkey, 1 repository, 1 identifier");
        assert!(!Selectors::default().matches_repo(&a, "x"));
        assert_eq!(Selectors::default().summary(), "nothing");
        let all = Selectors::parse(&["*"]).unwrap();
        assert!(all.matches_repo(&b, "x") && all.is_everything() && all.summary() == "everything");
    }
}
