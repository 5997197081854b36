//! The GRASP-06 `/prs/` namespace: where a contributor pushes pull request commits without
//! announcing a repository of their own.
//!
//! - **Where**: `/prs/<npub>/<identifier>.git` in URLs, `<git_data_path>/prs/<npub>/<identifier>.git`
//!   on disk. A repository is created by the first push that is let in, never by a probe:
//!   until then every well-formed path answers as an empty repository, served from one
//!   shared empty repository ([`EmptyRepository`]).
//! - **What may be pushed**: only `refs/nostr/<event id>` ([`decide_push`]); any other ref
//!   refuses the whole push, so a mixed push lands nothing. When the pull request event is
//!   already known, the push must meet it: signed by the npub in the URL, an `a` tag with
//!   the URL identifier, and a `c` tag naming the pushed commit.
//! - **What happens next** lives with the other pull request rules: an unmatched ref waits
//!   (hidden) for its event and is deleted after the 20-minute rule, a matched one releases
//!   the event and is mirrored into the announced repository of the same identifier here
//!   ([`crate::hosting::Hosting::process`]), and a repository left without refs is removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nostr::{Event, PublicKey};

use super::pktline::RefUpdate;
use crate::authorization::{nostr_ref_rules, pull_request_commit_mismatch, NostrRefContext, PushDecision};
use crate::git::{GitError, RepoRef};
use crate::nip34::{clone_tag_urls, kinds, raw_commit_tag, EventReferences, RepoIdentifier};
use crate::origin::{parse_repo_path, ServiceOrigin};

/// The URL path segment (and directory) of the namespace.
pub const SEGMENT: &str = "prs";

/// `<git_data_path>/prs`: the directory of every `/prs/` repository.
pub fn root(git_data_path: &Path) -> PathBuf {
    git_data_path.join(SEGMENT)
}

/// The shared empty bare repository that answers for `/prs/` paths nobody has pushed to.
/// It lives outside the tree of served repositories (so no git server or `grasp-hook
/// install` mistakes it for one): next to the event store, or in a temporary directory
/// removed when the server ends (memory store).
#[derive(Debug)]
pub struct EmptyRepository {
    path: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl EmptyRepository {
    /// `<dir>/prs-empty.git`, created if needed.
    pub fn in_dir(dir: &Path) -> Result<Self, GitError> {
        let path = dir.join("prs-empty.git");
        super::refs::init_bare(&path)?;
        Ok(Self { path, _temporary: None })
    }

    /// One in a new temporary directory, removed when this is dropped.
    pub fn temporary() -> Result<Self, GitError> {
        let dir = tempfile::Builder::new().prefix("grasp-prs-empty-").tempdir()?;
        let path = dir.path().join("prs-empty.git");
        super::refs::init_bare(&path)?;
        Ok(Self { path, _temporary: Some(dir) })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Splits a URL path `/prs/<npub>/<pct-identifier>.git` into contributor and identifier.
pub fn parse_path(path: &str) -> Option<(PublicKey, RepoIdentifier)> {
    parse_repo_path(path.strip_prefix("/prs")?)
}

/// The identifiers of the repositories (kind 30617 coordinates) an event tags with `a`.
pub fn tagged_identifiers(event: &Event) -> Vec<String> {
    EventReferences::of(event)
        .coordinates
        .into_iter()
        .filter(|c| c.kind == kinds::REPO_ANNOUNCEMENT)
        .map(|c| c.identifier)
        .collect()
}

/// Why a pull request event and a `/prs/` repository do not belong together, if they do not:
/// the event must be signed by the npub in the URL and tag a repository (`a`) with the URL
/// identifier.
pub fn event_mismatch(repo: &RepoRef, event: &Event) -> Option<String> {
    if event.pubkey != repo.owner {
        let signer = RepoRef::prs(event.pubkey, repo.identifier.clone());
        return Some(format!(
            "the pull request event is signed by another key than the npub in this URL; push to {} instead",
            signer.url_path()
        ));
    }
    if !tagged_identifiers(event).iter().any(|d| d == repo.identifier.as_str()) {
        return Some(format!(
            "the pull request event tags no repository named '{}' ('a' tag 30617:<owner>:<identifier>)",
            repo.identifier
        ));
    }
    None
}

/// The `/prs/` repositories of this server that a pull request event's `clone` tag names and
/// that belong to it (see [`event_mismatch`]): where its commit may be pushed.
pub fn named_repositories(event: &Event, origin: &ServiceOrigin) -> Vec<RepoRef> {
    let mut repos: Vec<RepoRef> = clone_tag_urls(event)
        .iter()
        .filter_map(|url| origin.prs_clone_url(url))
        .map(|(contributor, identifier)| RepoRef::prs(contributor, identifier))
        .filter(|repo| event_mismatch(repo, event).is_none())
        .collect();
    repos.sort();
    repos.dedup();
    repos
}

/// Removal of `/prs/` repositories left without refs, kept away from repositories a push
/// is landing in (git writes the pack before the refs, so an empty repository may be busy).
#[derive(Debug, Clone, Default)]
pub struct Collector {
    landing: Arc<Mutex<HashMap<PathBuf, usize>>>,
}

/// The repository at a path is being pushed to until this is dropped.
#[derive(Debug)]
pub struct PushGuard {
    collector: Collector,
    path: PathBuf,
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        let mut landing = self.collector.landing();
        if let Some(n) = landing.get_mut(&self.path) {
            *n -= 1;
            if *n == 0 {
                landing.remove(&self.path);
            }
        }
    }
}

impl Collector {
    fn landing(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, usize>> {
        self.landing.lock().expect("prs collector poisoned")
    }

    /// Marks the repository at `path` as being pushed to until the guard is dropped.
    pub fn push_started(&self, path: &Path) -> PushGuard {
        *self.landing().entry(path.to_path_buf()).or_default() += 1;
        PushGuard { collector: self.clone(), path: path.to_path_buf() }
    }

    /// [`remove_if_empty`], unless a push is landing in the repository. No push can start
    /// meanwhile. Blocking.
    pub fn remove_if_empty(&self, path: &Path) -> Result<bool, GitError> {
        let landing = self.landing();
        if landing.contains_key(path) {
            return Ok(false);
        }
        remove_if_empty(path)
    }
}

/// Removes the bare repository at `path` when it has no refs at all, then its contributor
/// directory when that is left empty. Returns whether it was removed. Blocking.
pub fn remove_if_empty(path: &Path) -> Result<bool, GitError> {
    if !path.join("HEAD").is_file() {
        return Ok(false);
    }
    if super::refs::open(path)?.references()?.next().is_some() {
        return Ok(false);
    }
    // A reader (a fetch of the empty repository) may still be creating files in it.
    let mut attempts = 0;
    while let Err(e) = std::fs::remove_dir_all(path) {
        attempts += 1;
        if attempts == 3 || e.kind() == std::io::ErrorKind::NotFound {
            return if e.kind() == std::io::ErrorKind::NotFound { Ok(false) } else { Err(e.into()) };
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if let Some(parent) = path.parent() {
        let _ = std::fs::remove_dir(parent); // only succeeds when empty
    }
    Ok(true)
}

/// The `/prs/` repositories with `identifier` on disk, of every contributor. Blocking.
pub fn with_identifier(repos: &super::Repositories, identifier: &RepoIdentifier) -> Vec<RepoRef> {
    let contributors = std::fs::read_dir(root(repos.root())).into_iter().flatten().flatten();
    let mut found: Vec<RepoRef> = contributors
        .filter_map(|dir| crate::origin::parse_npub(dir.file_name().to_str()?))
        .map(|contributor| RepoRef::prs(contributor, identifier.clone()))
        .filter(|repo| repos.exists(repo))
        .collect();
    found.sort();
    found
}

/// Removes every `/prs/` repository without refs (left behind by a crash between creating
/// a repository and the push landing). Blocking; returns how many were removed.
pub fn remove_empty_repositories(git_data_path: &Path) -> usize {
    let contributors = std::fs::read_dir(root(git_data_path)).into_iter().flatten().flatten();
    let repos = contributors
        .filter(|dir| dir.file_name().to_str().is_some_and(|n| n.starts_with("npub1")))
        .flat_map(|dir| std::fs::read_dir(dir.path()).into_iter().flatten().flatten());
    repos.filter(|repo| remove_if_empty(&repo.path()).unwrap_or(false)).count()
}

fn reject(reason: String) -> PushDecision {
    PushDecision::rejected(reason)
}

/// The push rule of a `/prs/` repository: only `refs/nostr/<id>` refs, under the same rules
/// as everywhere ([`nostr_ref_rules`]), and a known pull request must also belong to the
/// repository ([`event_mismatch`]).
pub fn decide_push(repo: &RepoRef, updates: &[RefUpdate], nostr: &NostrRefContext<'_>) -> PushDecision {
    let changes: Vec<&RefUpdate> = updates.iter().filter(|u| !u.is_noop()).collect();
    for update in &changes {
        let name = update.name.as_str();
        if crate::authorization::nostr_ref_id(name).is_none() {
            return reject(format!(
                "{name}: a /prs/ repository only takes pull request commits at refs/nostr/<64-character \
                 lowercase hex event id>; nothing was pushed"
            ));
        }
    }
    let mismatch = |name: &str, event: &Event, update: &RefUpdate| {
        if let Some(why) = event_mismatch(repo, event) {
            return Some(format!("{name}: {why}"));
        }
        pull_request_commit_mismatch(name, raw_commit_tag(event), &update.new)
    };
    nostr_ref_rules(&changes, nostr, mismatch).unwrap_or(PushDecision::Authorized { state: None })
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::ToBech32;
    use nostr::{EventBuilder, Keys, Kind, Tag};

    use super::*;

    const Z: &str = "0000000000000000000000000000000000000000";
    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn upd(name: &str, old: &str, new: &str) -> RefUpdate {
        RefUpdate { old: old.into(), new: new.into(), name: name.into() }
    }

    fn pr(keys: &Keys, d: &str, commit: &str) -> Event {
        let owner = Keys::generate().public_key().to_hex();
        let tags =
            [Tag::parse(["a", &format!("30617:{owner}:{d}")]).unwrap(), Tag::parse(["c", commit]).unwrap()];
        EventBuilder::new(Kind::Custom(1618), "").tags(tags).sign_with_keys(keys).unwrap()
    }

    fn rejected(d: PushDecision) -> String {
        match d {
            PushDecision::Rejected { reason, .. } => reason,
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    /// [`decide_push`] with the events in `known` and room for every placeholder.
    fn decide(repo: &RepoRef, updates: &[RefUpdate], known: &[Event]) -> PushDecision {
        let named = known.iter().map(|e| (e.id, crate::authorization::Named::of(e.clone()))).collect();
        let room = crate::authorization::PlaceholderRoom::default();
        let caps = crate::purgatory::bounds::PlaceholderCaps::default();
        decide_push(repo, updates, &NostrRefContext { named: &named, room: &room, caps })
    }

    #[test]
    fn paths_parse_only_under_prs() {
        let keys = Keys::generate();
        let npub = keys.public_key().to_bech32().unwrap();
        let (pk, d) = parse_path(&format!("/prs/{npub}/my%20repo.git")).unwrap();
        assert_eq!((pk, d.as_str()), (keys.public_key(), "my repo"));
        for bad in [
            format!("/{npub}/r.git"),
            format!("/prs/{npub}/r"),
            format!("/prs/{npub}/%2e%2e.git"),
            format!("/prs/{npub}/a/b.git"),
            "/prs/npub1bad/r.git".to_owned(),
            "/prsx/r.git".to_owned(),
        ] {
            assert!(parse_path(&bad).is_none(), "{bad}");
        }
        let temporary = EmptyRepository::temporary().unwrap();
        let path = temporary.path().to_path_buf();
        assert!(path.join("HEAD").is_file());
        drop(temporary);
        assert!(!path.exists(), "a temporary empty repository goes with its owner");
    }

    #[test]
    fn empty_repositories_are_removed_with_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let npub = Keys::generate().public_key().to_bech32().unwrap();
        let empty = root(dir.path()).join(&npub).join("a.git");
        let full = root(dir.path()).join(&npub).join("b.git");
        for path in [&empty, &full] {
            super::super::refs::init_bare(path).unwrap();
        }
        let git = super::super::refs::open(&full).unwrap();
        let tree = git.treebuilder(None).unwrap().write().unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let commit = git.commit(None, &sig, &sig, "c", &git.find_tree(tree).unwrap(), &[]).unwrap();
        git.reference(&format!("refs/nostr/{}", "ab".repeat(32)), commit, false, "test").unwrap();
        assert_eq!(remove_empty_repositories(dir.path()), 1);
        assert!(!empty.exists() && full.exists());
        git.find_reference(&format!("refs/nostr/{}", "ab".repeat(32))).unwrap().delete().unwrap();
        assert!(remove_if_empty(&full).unwrap());
        assert!(!root(dir.path()).join(&npub).exists(), "the contributor directory goes too");
    }

    #[test]
    fn a_repository_a_push_lands_in_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("npub1x").join("r.git");
        super::super::refs::init_bare(&path).unwrap();
        let collector = Collector::default();
        let first = collector.push_started(&path);
        let second = collector.push_started(&path);
        drop(first);
        assert!(!collector.remove_if_empty(&path).unwrap(), "one push is still landing");
        drop(second);
        assert!(collector.remove_if_empty(&path).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn only_nostr_refs_and_a_mixed_push_is_refused_whole() {
        let keys = Keys::generate();
        let repo = RepoRef::prs(keys.public_key(), RepoIdentifier::new("r").unwrap());
        let nostr = format!("refs/nostr/{}", "ab".repeat(32));
        assert_eq!(decide(&repo, &[upd(&nostr, Z, A)], &[]), PushDecision::Authorized { state: None });
        assert_eq!(decide(&repo, &[], &[]), PushDecision::Authorized { state: None });
        for other in ["refs/heads/main", "refs/tags/v1", "HEAD", "refs/nostr/xyz"] {
            let reason = rejected(decide(&repo, &[upd(&nostr, Z, A), upd(other, Z, A)], &[]));
            assert!(reason.starts_with(other) && reason.contains("only takes"), "{reason}");
        }
        assert!(rejected(decide(&repo, &[upd(&nostr, A, Z)], &[])).contains("cannot be deleted"));
    }

    #[test]
    fn named_repositories_are_ours_and_meet_the_event() {
        let origin = ServiceOrigin::parse("127.0.0.1:7334").unwrap();
        let (contributor, other) = (Keys::generate(), Keys::generate());
        let npub = contributor.public_key().to_bech32().unwrap();
        let other_npub = other.public_key().to_bech32().unwrap();
        let owner = Keys::generate().public_key().to_hex();
        let clone = [
            "clone".to_owned(),
            format!("http://127.0.0.1:7334/prs/{npub}/r.git"),
            format!("http://127.0.0.1:7334/prs/{npub}/r.git/"),
            format!("http://127.0.0.1:7334/prs/{npub}/untagged.git"),
            format!("http://127.0.0.1:7334/prs/{other_npub}/r.git"),
            format!("http://127.0.0.1:9999/prs/{npub}/r.git"),
            format!("http://127.0.0.1:7334/{npub}/r.git"),
        ];
        let tags = [
            Tag::parse(["a", &format!("30617:{owner}:r")]).unwrap(),
            Tag::parse(["c", A]).unwrap(),
            Tag::parse(clone).unwrap(),
        ];
        let event =
            EventBuilder::new(Kind::Custom(1618), "").tags(tags).sign_with_keys(&contributor).unwrap();
        let named = named_repositories(&event, &origin);
        assert_eq!(named, vec![RepoRef::prs(contributor.public_key(), RepoIdentifier::new("r").unwrap())]);
    }

    #[test]
    fn a_known_event_must_meet_the_push() {
        let (contributor, other) = (Keys::generate(), Keys::generate());
        let repo = RepoRef::prs(contributor.public_key(), RepoIdentifier::new("r").unwrap());
        let check = |event: Event, pushed: &str| {
            let name = format!("refs/nostr/{}", event.id.to_hex());
            decide(&repo, &[upd(&name, Z, pushed)], &[event])
        };
        assert!(matches!(check(pr(&contributor, "r", A), A), PushDecision::Authorized { .. }));
        let reason = rejected(check(pr(&other, "r", A), A));
        assert!(reason.contains("signed by another key") && reason.contains("/prs/npub1"), "{reason}");
        assert!(rejected(check(pr(&contributor, "other", A), A)).contains("tags no repository named 'r'"));
        assert!(rejected(check(pr(&contributor, "r", A), B)).contains("'c' tag"));
    }
}
