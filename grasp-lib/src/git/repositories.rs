//! The directory of every hosted bare repository.

use std::path::{Path, PathBuf};

use nostr::PublicKey;

use super::error::{GitError, RepoPathError};
use super::refs;
use super::repo::{Namespace, RepoRef};
use crate::metrics::Metrics;
use crate::nip34::RepoIdentifier;

/// The directory holding every hosted bare repository.
#[derive(Debug, Clone)]
pub struct Repositories {
    root: PathBuf,
    metrics: Option<Metrics>,
}

impl Repositories {
    /// Repositories under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), metrics: None }
    }

    /// Counts the repositories on disk now into `ngit_repositories_total` and keeps the
    /// count as repositories are created and removed through this handle.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        super::metering::prime(&metrics);
        metrics.repositories.set(self.count_on_disk() as i64);
        self.metrics = Some(metrics);
        self
    }

    /// Bare repositories under the root (`<npub>/<identifier>.git` with a `HEAD`).
    pub fn count_on_disk(&self) -> usize {
        self.all().len()
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `repo` lives on disk (whether or not it exists).
    pub fn path(&self, repo: &RepoRef) -> PathBuf {
        repo.namespace
            .base(&self.root)
            .join(repo.owner_dir())
            .join(format!("{}.git", repo.identifier.as_str()))
    }

    /// True when the bare repository has been created.
    pub fn exists(&self, repo: &RepoRef) -> bool {
        self.path(repo).join("HEAD").is_file()
    }

    /// Creates the bare repository if it does not exist yet. Returns `true` when it was
    /// created by this call.
    pub async fn create(&self, repo: &RepoRef) -> Result<bool, GitError> {
        let path = self.path(repo);
        let created = tokio::task::spawn_blocking(move || refs::init_bare(&path)).await??;
        if let (true, Some(metrics)) = (created, &self.metrics) {
            metrics.repos_created.inc();
            metrics.repositories.inc();
        }
        Ok(created)
    }

    /// Deletes the repository from disk (and its owner directory when that is left empty).
    pub async fn remove(&self, repo: &RepoRef) -> std::io::Result<()> {
        let path = self.path(repo);
        tokio::fs::remove_dir_all(&path).await?;
        if let Some(metrics) = &self.metrics {
            metrics.repositories.dec();
        }
        if let Some(parent) = path.parent() {
            let _ = tokio::fs::remove_dir(parent).await; // only succeeds when empty
        }
        Ok(())
    }

    /// The repository at `path`, the inverse of [`Repositories::path`]: `path` must be
    /// `<root>/<npub>/<identifier>.git` (after resolving symbolic links and `..`). The
    /// directory name is the identifier verbatim, as [`Repositories::create`] writes it; it
    /// is not percent-decoded, because `%` is an ordinary identifier character on disk and
    /// decoding would let two identifiers share a directory.
    pub fn repo_at(&self, path: &Path) -> Result<RepoRef, RepoPathError> {
        let canonical = |p: &Path| {
            p.canonicalize().map_err(|e| RepoPathError::Unreadable(p.to_path_buf(), e.to_string()))
        };
        let root = canonical(&self.root)?;
        let path = canonical(path)?;
        let relative = path
            .strip_prefix(&root)
            .map_err(|_| RepoPathError::OutsideRoot { path: path.clone(), root: root.clone() })?;
        let mut parts = relative.components().map(|c| c.as_os_str().to_str());
        let (Some(Some(npub)), Some(Some(dir)), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(RepoPathError::Layout(relative.to_path_buf()));
        };
        let owner =
            crate::origin::parse_npub(npub).ok_or_else(|| RepoPathError::Layout(relative.to_path_buf()))?;
        let name = dir.strip_suffix(".git").ok_or_else(|| RepoPathError::Layout(relative.to_path_buf()))?;
        let identifier = RepoIdentifier::new(name).map_err(RepoPathError::Identifier)?;
        Ok(RepoRef::new(owner, identifier))
    }

    /// Every announced repository on disk (`<root>/<npub>/<identifier>.git`), in no
    /// particular order. Directories that are not a valid npub or identifier are skipped.
    pub fn all(&self) -> Vec<RepoRef> {
        self.all_in(Namespace::Announced)
    }

    /// Every repository of `namespace` on disk, in no particular order (blocking).
    pub fn all_in(&self, namespace: Namespace) -> Vec<RepoRef> {
        let Ok(owners) = std::fs::read_dir(namespace.base(&self.root)) else { return Vec::new() };
        let mut out = Vec::new();
        for owner_dir in owners.filter_map(Result::ok) {
            let Some(owner) = owner_dir.file_name().to_str().and_then(|n| namespace.owner_of_dir(n)) else {
                continue;
            };
            let Ok(repos) = std::fs::read_dir(owner_dir.path()) else { continue };
            for repo_dir in repos.filter_map(Result::ok) {
                let name = repo_dir.file_name();
                let Some(identifier) = name.to_str().and_then(|n| n.strip_suffix(".git")) else { continue };
                let Ok(identifier) = RepoIdentifier::new(identifier) else { continue };
                let repo = RepoRef { owner, identifier, namespace };
                if self.exists(&repo) {
                    out.push(repo);
                }
            }
        }
        out
    }

    /// Moves `/prs/` repositories from the npub directories earlier versions wrote
    /// (`<root>/prs/<npub>/…`) to the hex ones ([`Namespace::Prs`]); run once at start.
    /// A repository already at the new place is left where it is. Returns how many moved.
    pub fn migrate_prs_layout(&self) -> std::io::Result<usize> {
        let base = Namespace::Prs.base(&self.root);
        let Ok(owners) = std::fs::read_dir(&base) else { return Ok(0) };
        let mut moved = 0;
        for owner_dir in owners.filter_map(Result::ok) {
            let Some(owner) = owner_dir.file_name().to_str().and_then(crate::origin::parse_npub) else {
                continue;
            };
            let target = base.join(owner.to_hex());
            std::fs::create_dir_all(&target)?;
            for repo_dir in std::fs::read_dir(owner_dir.path())?.filter_map(Result::ok) {
                let destination = target.join(repo_dir.file_name());
                if !destination.exists() {
                    std::fs::rename(repo_dir.path(), destination)?;
                    moved += 1;
                }
            }
            // Left in place only when something could not move (it already existed).
            let _ = std::fs::remove_dir(owner_dir.path());
        }
        Ok(moved)
    }

    /// Every repository with `identifier`, across owners, that exists on disk.
    pub fn with_identifier(
        &self,
        owners: impl IntoIterator<Item = PublicKey>,
        identifier: &RepoIdentifier,
    ) -> Vec<RepoRef> {
        owners
            .into_iter()
            .map(|owner| RepoRef::new(owner, identifier.clone()))
            .filter(|repo| self.exists(repo))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;
    use crate::git::{is_zero_oid, ZERO_OID};

    #[test]
    fn paths_keep_identifier_verbatim_and_urls_encode_it() {
        let keys = Keys::generate();
        let repo = RepoRef::new(keys.public_key(), RepoIdentifier::new("my repo").unwrap());
        let repos = Repositories::new("/srv/git");
        let path = repos.path(&repo);
        assert!(path.ends_with(format!("{}/my repo.git", repo.npub())));
        assert_eq!(repo.url_path(), format!("/{}/my%20repo.git", repo.npub()));
        let prs = RepoRef::prs(keys.public_key(), RepoIdentifier::new("my repo").unwrap());
        assert!(
            repos.path(&prs).ends_with(format!("prs/{}/my repo.git", keys.public_key().to_hex())),
            "hex on disk"
        );
        assert_eq!(prs.url_path(), format!("/prs/{}/my%20repo.git", repo.npub()));
        assert_eq!(prs.to_string(), format!("prs/{}/my repo", repo.npub()));
        assert_ne!(prs, repo);
        assert!(is_zero_oid(ZERO_OID));
        assert!(!is_zero_oid("0000000000000000000000000000000000000001"));
    }

    #[test]
    fn repo_at_inverts_path_and_refuses_other_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repositories::new(dir.path());
        let owner = Keys::generate().public_key();
        for id in ["my repo", "a%20b", "émoji"] {
            let repo = RepoRef::new(owner, RepoIdentifier::new(id).unwrap());
            std::fs::create_dir_all(repos.path(&repo)).unwrap();
            assert_eq!(repos.repo_at(&repos.path(&repo)).unwrap(), repo, "{id}");
            // a relative path with `..` resolves to the same repository
            let npub_dir = repos.path(&repo).parent().unwrap().to_path_buf();
            let detour = npub_dir.join("..").join(repo.npub()).join(format!("{id}.git"));
            assert_eq!(repos.repo_at(&detour).unwrap(), repo);
        }
        let npub = RepoRef::new(owner, RepoIdentifier::new("x").unwrap()).npub();
        for bad in [
            dir.path().join(&npub).join("plain"),
            dir.path().join("npub1nope").join("x.git"),
            dir.path().join(&npub).join("x.git").join("deeper.git"),
            dir.path().join("x.git"),
        ] {
            std::fs::create_dir_all(&bad).unwrap();
            assert!(matches!(repos.repo_at(&bad), Err(RepoPathError::Layout(_))), "{}", bad.display());
        }
        let outside = tempfile::tempdir().unwrap();
        assert!(matches!(repos.repo_at(outside.path()), Err(RepoPathError::OutsideRoot { .. })));
        assert!(matches!(repos.repo_at(&dir.path().join("missing")), Err(RepoPathError::Unreadable(..))));
    }

    #[test]
    fn all_lists_hosted_repositories_only() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repositories::new(dir.path());
        let repo = RepoRef::new(Keys::generate().public_key(), RepoIdentifier::new("my repo").unwrap());
        refs::init_bare(&repos.path(&repo)).unwrap();
        refs::init_bare(&dir.path().join("npub1nonsense").join("x.git")).unwrap();
        std::fs::create_dir_all(dir.path().join(repo.npub()).join("no-head.git")).unwrap();
        assert_eq!(repos.all(), vec![repo]);
        assert_eq!(repos.count_on_disk(), 1, "counted: the repositories of all()");
    }

    #[tokio::test]
    async fn counts_repositories_on_disk_and_as_they_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let repo =
            |name: &str| RepoRef::new(Keys::generate().public_key(), RepoIdentifier::new(name).unwrap());
        let (a, b) = (repo("a"), repo("b"));
        Repositories::new(dir.path()).create(&a).await.unwrap();
        std::fs::create_dir_all(dir.path().join("npub1x").join("not-a-repo.git")).unwrap();
        let metrics = Metrics::new();
        let repos = Repositories::new(dir.path()).with_metrics(metrics.clone());
        assert_eq!(
            metrics.repositories.get(),
            1,
            "counted at start; a directory without HEAD is no repository"
        );
        assert!(repos.create(&b).await.unwrap());
        assert!(!repos.create(&b).await.unwrap(), "already there: not counted twice");
        assert_eq!((metrics.repositories.get(), metrics.repos_created.get()), (2, 1));
        repos.remove(&a).await.unwrap();
        assert_eq!(metrics.repositories.get(), 1);
        assert!(!dir.path().join(a.npub()).exists(), "the empty owner directory goes too");
    }

    #[tokio::test]
    async fn all_lists_the_repositories_on_disk_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repositories::new(dir.path());
        let a = RepoRef::new(Keys::generate().public_key(), RepoIdentifier::new("a b").unwrap());
        let b = RepoRef::new(a.owner, RepoIdentifier::new("c").unwrap());
        assert!(repos.create(&a).await.unwrap());
        assert!(repos.create(&b).await.unwrap());
        // Not repositories: a hunting quarantine, a staging directory, a directory without HEAD.
        std::fs::create_dir_all(dir.path().join(".hunt-quarantine/x.git")).unwrap();
        std::fs::create_dir_all(dir.path().join(a.npub()).join(".d.git.abc.tmp")).unwrap();
        std::fs::create_dir_all(dir.path().join(a.npub()).join("empty.git")).unwrap();
        let mut all = repos.all();
        all.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(all, expected);
    }
}
