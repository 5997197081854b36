//! Ref, object and HEAD operations on one bare repository (blocking; call from
//! `spawn_blocking`), and object copies between repositories on this server.

use std::collections::BTreeMap;
use std::path::Path;

use git2::{Oid, Repository};
use nostr::{EventId, Timestamp};

use super::GitError;
use crate::alignment::AlignmentPlan;

/// Git config key where we remember which state event a repository was last aligned to,
/// so an older state can never roll it back.
const APPLIED_STATE_KEY: &str = "grasp.appliedState";

/// Settings every hosted repository carries in its own config, so a stock git server
/// (`git daemon`, `git http-backend` behind `grasp-proxy` or `grasp-hook`, a forge's ssh)
/// serving it behaves as grasp-server does:
/// - upload-pack lets clients fetch exactly what GRASP clients ask for: commits named by a
///   state event or a pull request (`allowTipSHA1InWant`, `allowReachableSHA1InWant`) and
///   partial clones (`allowFilter`);
/// - receive-pack skips `git gc --auto` after a push (`receive.autogc`): the server
///   repacks every pushed repository in the background ([`super::maintenance`]), so the
///   check would only add latency to every push.
///
/// The inline server passes the same settings on its command line. The refs upload-pack
/// hides (`uploadpack.hideRefs`) are written by [`configure_for_serving`].
pub const SERVING_SETTINGS: [(&str, bool); 4] = [
    ("uploadpack.allowTipSHA1InWant", true),
    ("uploadpack.allowReachableSHA1InWant", true),
    ("uploadpack.allowFilter", true),
    ("receive.autogc", false),
];

/// The config key listing refs upload-pack does not advertise.
const HIDE_REFS_KEY: &str = "uploadpack.hideRefs";

/// Writes what serving needs into the repository's own config: [`SERVING_SETTINGS`] and
/// exactly `hidden` as `uploadpack.hideRefs` (pull request refs waiting for their event).
/// Writes nothing when the config already says so.
pub fn configure_for_serving(path: &Path, hidden: &[String]) -> Result<(), GitError> {
    let repo = open(path)?;
    let mut config = repo.config()?.open_level(git2::ConfigLevel::Local)?;
    for (key, value) in SERVING_SETTINGS {
        if config.get_bool(key).ok() != Some(value) {
            config.set_bool(key, value)?;
        }
    }
    let mut current = Vec::new();
    if let Ok(entries) = config.multivar(HIDE_REFS_KEY, None) {
        entries.for_each(|entry| current.extend(entry.value().map(str::to_owned)))?;
    }
    if current != hidden {
        if !current.is_empty() {
            config.remove_multivar(HIDE_REFS_KEY, ".*")?;
        }
        for name in hidden {
            // A pattern that matches no value appends one.
            config.set_multivar(HIDE_REFS_KEY, "^$", name)?;
        }
    }
    Ok(())
}

/// Creates a bare repository at `path` (parents included) exactly as `git init --bare` on
/// this machine makes it: HEAD names git's `init.defaultBranch` when the operator configured
/// one, otherwise git's built-in default, and the operator's templates apply. Clients that
/// clone the still-empty repository then see what any stock git server shows them (an
/// unborn default branch), until a state event sets HEAD. It carries
/// [`SERVING_SETTINGS`]. Returns `false` when a repository already existed.
///
/// The repository is made in a temporary sibling directory and renamed into place, so a
/// failure half-way (a full disk) never leaves a half-made repository at `path`.
pub fn init_bare(path: &Path) -> Result<bool, GitError> {
    if path.join("HEAD").is_file() {
        return Ok(false);
    }
    let parent =
        path.parent().ok_or_else(|| GitError::Io(std::io::Error::other("repository path has no parent")))?;
    std::fs::create_dir_all(parent)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempdir_in(parent)?;
    let output = std::process::Command::new("git")
        .args(["init", "--bare", "--quiet"])
        .arg(staging.path())
        // A server started from inside a git hook or work tree must not init that one.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env_remove("GIT_INDEX_FILE")
        .stdin(std::process::Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(GitError::Command {
            command: format!("init --bare {}", path.display()),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    configure_for_serving(staging.path(), &[])?;
    // A leftover directory without HEAD is not a repository: make way.
    if path.is_dir() && !path.join("HEAD").is_file() {
        let _ = std::fs::remove_dir_all(path);
    }
    match std::fs::rename(staging.path(), path) {
        Ok(()) => {
            // The staging directory is now the repository; nothing to clean up.
            let _ = staging.keep();
            Ok(true)
        }
        // Created meanwhile by someone else.
        Err(_) if path.join("HEAD").is_file() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Opens a bare repository.
pub fn open(path: &Path) -> Result<Repository, GitError> {
    Ok(Repository::open_bare(path)?)
}

/// Every `refs/heads/*` and `refs/tags/*` ref and the object it points at (symbolic refs
/// are skipped).
pub fn branches_and_tags(repo: &Repository) -> Result<BTreeMap<String, String>, GitError> {
    let mut out = BTreeMap::new();
    for reference in repo.references()? {
        let reference = reference?;
        let (Ok(name), Some(target)) = (reference.name(), reference.target()) else { continue };
        if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
            out.insert(name.to_owned(), target.to_string());
        }
    }
    Ok(out)
}

/// The object a ref points at, if the ref exists.
pub fn ref_target(repo: &Repository, name: &str) -> Option<String> {
    repo.find_reference(name).ok()?.target().map(|oid| oid.to_string())
}

/// Those of `oids` that are not in the repository's object database.
pub fn missing_objects<'a>(
    repo: &Repository,
    oids: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<String>, GitError> {
    let odb = repo.odb()?;
    Ok(oids
        .into_iter()
        .filter(|oid| Oid::from_str(oid).map(|o| !odb.exists(o)).unwrap_or(true))
        .cloned()
        .collect())
}

/// What applying an [`AlignmentPlan`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedChanges {
    /// Refs created.
    pub created: usize,
    /// Refs moved.
    pub updated: usize,
    /// Refs deleted.
    pub deleted: usize,
    /// Whether HEAD was re-pointed.
    pub head_changed: bool,
}

/// Applies `plan`: creates and moves refs (forcing), deletes refs, re-points HEAD. The
/// caller has made sure every target object exists.
pub fn apply(repo: &Repository, plan: &AlignmentPlan) -> Result<AppliedChanges, GitError> {
    let mut changes = AppliedChanges::default();
    for (name, oid) in &plan.create {
        repo.reference(name, Oid::from_str(oid)?, true, "grasp: align to state")?;
        changes.created += 1;
    }
    for (name, _, new) in &plan.update {
        repo.reference(name, Oid::from_str(new)?, true, "grasp: align to state")?;
        changes.updated += 1;
    }
    for (name, _) in &plan.delete {
        if let Ok(mut reference) = repo.find_reference(name) {
            reference.delete()?;
            changes.deleted += 1;
        }
    }
    if let Some(head) = &plan.head {
        let current = repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_owned));
        if current.as_deref() != Some(head.as_str()) {
            repo.set_head(head)?;
            changes.head_changed = true;
        }
    }
    Ok(changes)
}

/// The state event a repository was last aligned to: (id, created_at).
pub fn applied_state(repo: &Repository) -> Option<(EventId, Timestamp)> {
    let value = repo.config().ok()?.get_string(APPLIED_STATE_KEY).ok()?;
    let (id, at) = value.split_once(' ')?;
    Some((EventId::from_hex(id).ok()?, Timestamp::from(at.parse::<u64>().ok()?)))
}

/// Remembers that the repository is aligned to state `id` signed at `created_at`.
pub fn record_applied_state(repo: &Repository, id: &EventId, created_at: Timestamp) -> Result<(), GitError> {
    repo.config()?.set_str(APPLIED_STATE_KEY, &format!("{} {}", id.to_hex(), created_at.as_secs()))?;
    Ok(())
}

/// Copies objects (and everything they reach) from the repository at `from` into the one at
/// `to`, by running `git fetch` between the two local paths. No refs are written.
pub async fn copy_objects(from: &Path, to: &Path, oids: &[String]) -> Result<(), GitError> {
    if oids.is_empty() {
        return Ok(());
    }
    // git runs inside `to` (`-C`), so a relative `from` (the default `./data/repos` is one)
    // would be looked up from there.
    let from = std::path::absolute(from)?;
    let output = super::dies_with_server(&mut tokio::process::Command::new("git"))
        .arg("-C")
        .arg(to)
        .args([
            "-c",
            "protocol.file.allow=always",
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--upload-pack=git -c uploadpack.allowAnySHA1InWant=true upload-pack",
        ])
        .arg(&from)
        .args(oids)
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true)
        .output()
        .await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(GitError::Command {
            command: format!("fetch {} -> {}", from.display(), to.display()),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_refs_live_in_the_repository_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.git");
        assert!(init_bare(&path).unwrap());
        let read = |key: &str| {
            let out = std::process::Command::new("git")
                .arg("--git-dir")
                .arg(&path)
                .args(["config", "--get-all", key])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(read("uploadpack.hideRefs"), "");
        let (a, b) = (format!("refs/nostr/{}", "a".repeat(64)), format!("refs/nostr/{}", "b".repeat(64)));
        configure_for_serving(&path, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(read("uploadpack.hideRefs"), format!("{a}\n{b}\n"));
        configure_for_serving(&path, &[b.clone()]).unwrap();
        assert_eq!(read("uploadpack.hideRefs"), format!("{b}\n"));
        configure_for_serving(&path, &[]).unwrap();
        assert_eq!(read("uploadpack.hideRefs"), "");
        assert_eq!(read("uploadpack.allowFilter"), "true\n", "the settings stay");
        assert_eq!(read("receive.autogc"), "false\n");
    }

    #[test]
    fn init_is_idempotent_and_applied_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("npub1x").join("a b.git");
        assert!(init_bare(&path).unwrap());
        assert!(!init_bare(&path).unwrap());
        let repo = open(&path).unwrap();
        assert!(branches_and_tags(&repo).unwrap().is_empty());
        // HEAD is whatever `git init --bare` gives on this machine.
        let reference = dir.path().join("reference.git");
        let status =
            std::process::Command::new("git").args(["init", "--bare", "-q"]).arg(&reference).status();
        assert!(status.unwrap().success());
        let head = |p: &Path| std::fs::read_to_string(p.join("HEAD")).unwrap();
        assert_eq!(head(&path), head(&reference));
        assert_eq!(applied_state(&repo), None);
        let config = repo.config().unwrap();
        for (key, value) in SERVING_SETTINGS {
            assert_eq!(config.get_bool(key).unwrap(), value, "{key}");
        }
        let id = EventId::all_zeros();
        record_applied_state(&repo, &id, Timestamp::from(42)).unwrap();
        assert_eq!(applied_state(&repo), Some((id, Timestamp::from(42))));
        assert_eq!(missing_objects(&repo, &["a".repeat(40)]).unwrap().len(), 1);
    }
}
