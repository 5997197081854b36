//! The GRASP-06 `/prs/` namespace: where a contributor pushes pull request commits without
//! announcing a repository of their own.
//!
//! - **Where**: `/prs/<npub>/<identifier>.git` in URLs, `<git_data_path>/prs/<hex pubkey>/<identifier>.git`
//!   on disk (where ngit's harness and the peer server look). A repository is created by the first push that is let in, never by a probe:
//!   until then every well-formed path answers as an empty repository, served from one
//!   shared empty repository ([`EmptyRepository`]).
//! - **What may be pushed** is a GRASP rule and lives with the others
//!   (`crate::authorization`): only `refs/nostr/<event id>`, meeting a known pull request.
//! - **What is here**: the namespace's directories, the shared empty repository, and the
//!   removal of repositories left without refs ([`Collector`]), kept away from pushes
//!   landing in them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::error::GitError;
use super::repo::{Namespace, RepoRef};
use super::repositories::Repositories;
use crate::nip34::RepoIdentifier;

/// `<git_data_path>/prs`: the directory of every `/prs/` repository.
pub fn root(git_data_path: &Path) -> PathBuf {
    Namespace::Prs.base(git_data_path)
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
pub fn with_identifier(repos: &Repositories, identifier: &RepoIdentifier) -> Vec<RepoRef> {
    let contributors = std::fs::read_dir(root(repos.root())).into_iter().flatten().flatten();
    let mut found: Vec<RepoRef> = contributors
        .filter_map(|dir| Namespace::Prs.owner_of_dir(dir.file_name().to_str()?))
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
        .filter(|dir| dir.file_name().to_str().and_then(|n| Namespace::Prs.owner_of_dir(n)).is_some())
        .flat_map(|dir| std::fs::read_dir(dir.path()).into_iter().flatten().flatten());
    repos.filter(|repo| remove_if_empty(&repo.path()).unwrap_or(false)).count()
}

#[cfg(test)]
mod tests {

    use super::*;
    use nostr::Keys;

    #[test]
    fn a_temporary_empty_repository_goes_with_its_owner() {
        let temporary = EmptyRepository::temporary().unwrap();
        let path = temporary.path().to_path_buf();
        assert!(path.join("HEAD").is_file());
        drop(temporary);
        assert!(!path.exists());
    }

    #[test]
    fn empty_repositories_are_removed_with_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let npub = Keys::generate().public_key().to_hex();
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
}
