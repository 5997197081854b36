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

/// Where `refs/nostr/<id>` pushes for events not known here wait for their event
/// (placeholders): `refs/grasp/waiting/<id>`. They are moved there as soon as the push
/// lands, so the served namespace never holds them; when the event arrives and names the
/// commit, the ref moves back to `refs/nostr/<id>`.
pub const WAITING_PREFIX: &str = "refs/grasp/waiting/";

/// Refs under this prefix are the server's own bookkeeping: upload-pack never advertises
/// them and receive-pack never lets a client touch them (`uploadpack.hideRefs`,
/// `receive.hideRefs`). One prefix, however many refs wait: git compares every ref with
/// every hide pattern, so one pattern per waiting ref made the advertisement quadratic.
pub const HIDDEN_PREFIX: &str = "refs/grasp/";

/// Settings every hosted repository carries in its own config, so a stock git server
/// (`git daemon`, `git http-backend` behind `grasp-proxy` or `grasp-hook`, a forge's ssh)
/// serving it behaves as grasp-server does:
/// - upload-pack lets clients fetch exactly what GRASP clients ask for: commits named by a
///   state event or a pull request (`allowTipSHA1InWant`, `allowReachableSHA1InWant`) and
///   partial clones (`allowFilter`), and never shows the refs under [`HIDDEN_PREFIX`];
/// - receive-pack checks every pushed object (`fsckObjects`, git's default severities), so a
///   malformed tree or commit never lands; it skips `git gc --auto` after a push
///   (`receive.autogc`): the server repacks every pushed repository in the background
///   ([`super::maintenance`]), so the check would only add latency to every push; and it
///   refuses updates to the refs under [`HIDDEN_PREFIX`].
///
/// The inline server passes the same settings on its command line.
pub const SERVING_SETTINGS: [(&str, &str); 7] = [
    ("uploadpack.allowTipSHA1InWant", "true"),
    ("uploadpack.allowReachableSHA1InWant", "true"),
    ("uploadpack.allowFilter", "true"),
    ("uploadpack.hideRefs", HIDDEN_PREFIX),
    ("receive.fsckObjects", "true"),
    ("receive.autogc", "false"),
    ("receive.hideRefs", HIDDEN_PREFIX),
];

/// Writes [`SERVING_SETTINGS`] into the repository's own config, replacing whatever those
/// keys held before (older versions listed one `uploadpack.hideRefs` per waiting ref).
/// Writes nothing when the config already says so.
pub fn configure_for_serving(path: &Path) -> Result<(), GitError> {
    let repo = open(path)?;
    let mut config = repo.config()?.open_level(git2::ConfigLevel::Local)?;
    for (key, value) in SERVING_SETTINGS {
        let mut current = Vec::new();
        if let Ok(entries) = config.multivar(key, None) {
            entries.for_each(|entry| current.extend(entry.value().map(str::to_owned)))?;
        }
        if current == [value] {
            continue;
        }
        if !current.is_empty() {
            config.remove_multivar(key, ".*")?;
        }
        config.set_str(key, value)?;
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
    // A short name: the repository's own may already use most of the 255 bytes a file
    // name can have.
    let staging = tempfile::Builder::new().prefix(".init-").suffix(".tmp").tempdir_in(parent)?;
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
    configure_for_serving(staging.path())?;
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

/// Applies `plan` as one ref transaction: every ref to create, move or delete is locked
/// first and all of them change together (or none does, when one cannot), then HEAD is
/// re-pointed. The caller has made sure every target object exists.
pub fn apply(repo: &Repository, plan: &AlignmentPlan) -> Result<AppliedChanges, GitError> {
    let mut changes = AppliedChanges::default();
    let names = plan.create.iter().map(|(n, _)| n).chain(plan.update.iter().map(|(n, _, _)| n));
    if let Some(bad) =
        names.chain(plan.delete.iter().map(|(n, _)| n)).find(|n| !git2::Reference::is_valid_name(n))
    {
        // (States with such names are refused when they are parsed; libgit2's transaction
        // would write the file regardless.)
        return Err(GitError::Git2(git2::Error::from_str(&format!("'{bad}' is not a valid ref name"))));
    }
    let existing: Vec<&String> =
        plan.delete.iter().map(|(name, _)| name).filter(|name| repo.find_reference(name).is_ok()).collect();
    if !(plan.create.is_empty() && plan.update.is_empty() && existing.is_empty()) {
        let sets: Vec<(&String, Oid)> = plan
            .create
            .iter()
            .map(|(name, oid)| (name, oid))
            .chain(plan.update.iter().map(|(name, _, oid)| (name, oid)))
            .map(|(name, oid)| Ok((name, Oid::from_str(oid)?)))
            .collect::<Result<_, git2::Error>>()?;
        let mut transaction = repo.transaction()?;
        for name in sets.iter().map(|(name, _)| *name).chain(existing.iter().copied()) {
            transaction.lock_ref(name)?;
        }
        for (name, oid) in &sets {
            transaction.set_target(name, *oid, None, "grasp: align to state")?;
        }
        for name in &existing {
            transaction.remove(name)?;
        }
        transaction.commit()?;
        changes.created = plan.create.len();
        changes.updated = plan.update.len();
        changes.deleted = existing.len();
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

/// `refs/grasp/waiting/<id>`, where a placeholder for event `id` waits.
pub fn waiting_ref(id: &EventId) -> String {
    format!("{WAITING_PREFIX}{}", id.to_hex())
}

/// `refs/nostr/<id>`, where the commit of pull request `id` is served.
pub fn nostr_ref(id: &EventId) -> String {
    format!("refs/nostr/{}", id.to_hex())
}

/// Every ref under `prefix` (`refs/nostr/`, [`WAITING_PREFIX`]) whose last component is an
/// event id, with the object it points at.
pub fn event_refs(repo: &Repository, prefix: &str) -> Result<Vec<(EventId, String)>, GitError> {
    let mut out = Vec::new();
    for reference in repo.references_glob(&format!("{prefix}*"))? {
        let reference = reference?;
        let (Ok(name), Some(target)) = (reference.name(), reference.target()) else { continue };
        let Some(id) = name.strip_prefix(prefix) else { continue };
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            if let Ok(id) = EventId::from_hex(id) {
                out.push((id, target.to_string()));
            }
        }
    }
    Ok(out)
}

/// Moves the ref `from` to `to` in one transaction, if `from` still points at `commit`
/// (when it points elsewhere, someone pushed again meanwhile and nothing changes). `to` is
/// created or overwritten. Returns whether it moved.
pub fn move_ref(repo: &Repository, from: &str, to: &str, commit: &str) -> Result<bool, GitError> {
    let oid = Oid::from_str(commit)?;
    let mut transaction = repo.transaction()?;
    transaction.lock_ref(from)?;
    transaction.lock_ref(to)?;
    if repo.find_reference(from).ok().and_then(|r| r.target()) != Some(oid) {
        return Ok(false);
    }
    transaction.set_target(to, oid, None, "grasp: pull request ref")?;
    transaction.remove(from)?;
    transaction.commit()?;
    Ok(true)
}

/// True when the repository has `commit` as a commit.
pub fn has_commit(repo: &Repository, commit: &str) -> bool {
    Oid::from_str(commit).is_ok_and(|oid| repo.find_commit(oid).is_ok())
}

/// Points the ref `name` at `commit` (creating or moving it).
pub fn set_ref(repo: &Repository, name: &str, commit: &str, message: &str) -> Result<(), GitError> {
    repo.reference(name, Oid::from_str(commit)?, true, message)?;
    Ok(())
}

/// Creates the ref `name` at `commit` unless it exists or the commit is missing; returns
/// whether it was created.
pub fn create_ref_if_absent(
    repo: &Repository,
    name: &str,
    commit: &str,
    message: &str,
) -> Result<bool, GitError> {
    if repo.find_reference(name).is_ok() || !has_commit(repo, commit) {
        return Ok(false);
    }
    repo.reference(name, Oid::from_str(commit)?, false, message)?;
    Ok(true)
}

/// Deletes the ref `name` when it exists and (with `expected`) still points there; returns
/// whether it was deleted.
pub fn delete_ref(repo: &Repository, name: &str, expected: Option<&str>) -> Result<bool, GitError> {
    let Ok(mut reference) = repo.find_reference(name) else { return Ok(false) };
    if expected.is_some_and(|e| reference.target().map(|t| t.to_string()).as_deref() != Some(e)) {
        return Ok(false);
    }
    reference.delete()?;
    Ok(true)
}

/// [`move_ref`] for each `(from, to, commit)`, one transaction each; returns how many moved.
pub fn move_refs(repo: &Repository, moves: &[(String, String, String)]) -> Result<usize, GitError> {
    let mut moved = 0;
    for (from, to, commit) in moves {
        moved += usize::from(move_ref(repo, from, to, commit)?);
    }
    Ok(moved)
}

/// Copies objects (and everything they reach) from the repository at `from` into the one at
/// `to`, by running `git fetch` between the two local paths. No refs are written. The
/// objects are checked as a push's are (`fetch.fsckObjects`), so a copy never spreads
/// a malformed object to another repository.
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
            "-c",
            "fetch.fsckObjects=true",
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

    fn git_config(path: &Path, key: &str) -> String {
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(path)
            .args(["config", "--get-all", key])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn serving_settings_live_in_the_repository_config_and_replace_old_hidden_refs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.git");
        assert!(init_bare(&path).unwrap());
        assert_eq!(git_config(&path, "uploadpack.hideRefs"), "refs/grasp/\n");
        assert_eq!(git_config(&path, "receive.hideRefs"), "refs/grasp/\n");
        assert_eq!(git_config(&path, "receive.fsckObjects"), "true\n");
        // An older version listed every waiting ref.
        for id in ["a", "b"] {
            let value = format!("refs/nostr/{}", id.repeat(64));
            let status = std::process::Command::new("git")
                .arg("--git-dir")
                .arg(&path)
                .args(["config", "--add", "uploadpack.hideRefs", &value])
                .status()
                .unwrap();
            assert!(status.success());
        }
        configure_for_serving(&path).unwrap();
        assert_eq!(git_config(&path, "uploadpack.hideRefs"), "refs/grasp/\n");
        assert_eq!(git_config(&path, "uploadpack.allowFilter"), "true\n", "the settings stay");
        assert_eq!(git_config(&path, "receive.autogc"), "false\n");
    }

    fn commit_in(path: &Path, message: &str) -> String {
        let repo = open(path).unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        repo.commit(None, &sig, &sig, message, &tree, &[]).unwrap().to_string()
    }

    #[test]
    fn a_waiting_ref_moves_in_one_step_and_only_when_it_still_holds_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.git");
        init_bare(&path).unwrap();
        let (c1, c2) = (commit_in(&path, "one"), commit_in(&path, "two"));
        let repo = open(&path).unwrap();
        let id = EventId::all_zeros();
        repo.reference(&nostr_ref(&id), Oid::from_str(&c1).unwrap(), false, "push").unwrap();
        assert!(!move_ref(&repo, &nostr_ref(&id), &waiting_ref(&id), &c2).unwrap(), "pushed again meanwhile");
        assert!(move_ref(&repo, &nostr_ref(&id), &waiting_ref(&id), &c1).unwrap());
        assert_eq!(ref_target(&repo, &nostr_ref(&id)), None);
        assert_eq!(event_refs(&repo, WAITING_PREFIX).unwrap(), vec![(id, c1.clone())]);
        assert!(move_ref(&repo, &waiting_ref(&id), &nostr_ref(&id), &c1).unwrap());
        assert_eq!(event_refs(&repo, "refs/nostr/").unwrap(), vec![(id, c1)]);
        assert!(event_refs(&repo, WAITING_PREFIX).unwrap().is_empty());
    }

    #[test]
    fn an_alignment_changes_every_ref_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.git");
        init_bare(&path).unwrap();
        let c = commit_in(&path, "c");
        let repo = open(&path).unwrap();
        let plan = AlignmentPlan {
            create: vec![("refs/heads/a".into(), c.clone()), ("refs/heads/a..b".into(), c.clone())],
            ..AlignmentPlan::default()
        };
        assert!(apply(&repo, &plan).is_err(), "a..b is no ref name");
        assert!(branches_and_tags(&repo).unwrap().is_empty(), "so refs/heads/a was not created either");
        // Another writer holds refs/heads/b: nothing changes, not even refs/heads/a.
        std::fs::create_dir_all(path.join("refs/heads")).unwrap();
        std::fs::write(path.join("refs/heads/b.lock"), "").unwrap();
        let plan = AlignmentPlan {
            create: vec![("refs/heads/a".into(), c.clone()), ("refs/heads/b".into(), c.clone())],
            ..AlignmentPlan::default()
        };
        assert!(apply(&repo, &plan).is_err(), "refs/heads/b is locked");
        assert!(
            branches_and_tags(&repo).unwrap().is_empty(),
            "one transaction: refs/heads/a was not created"
        );
        std::fs::remove_file(path.join("refs/heads/b.lock")).unwrap();
        let plan = AlignmentPlan {
            create: vec![("refs/heads/a".into(), c.clone()), ("refs/tags/v1".into(), c.clone())],
            ..AlignmentPlan::default()
        };
        let changes = apply(&repo, &plan).unwrap();
        assert_eq!((changes.created, changes.updated, changes.deleted), (2, 0, 0));
        let plan = AlignmentPlan { delete: vec![("refs/tags/v1".into(), c)], ..AlignmentPlan::default() };
        assert_eq!(apply(&repo, &plan).unwrap().deleted, 1);
        assert_eq!(branches_and_tags(&repo).unwrap().len(), 1);
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
            assert_eq!(config.get_string(key).unwrap(), value, "{key}");
        }
        let id = EventId::all_zeros();
        record_applied_state(&repo, &id, Timestamp::from(42)).unwrap();
        assert_eq!(applied_state(&repo), Some((id, Timestamp::from(42))));
        assert_eq!(missing_objects(&repo, &["a".repeat(40)]).unwrap().len(), 1);
    }
}
