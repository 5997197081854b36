//! Which GRASP repository git runs the hook in.
//!
//! By default the repository's directory must be `<root>/<npub>/<identifier>.git`, the
//! layout the node creates (its `git_data_path`), and `--root` is the directory the git
//! server serves. Forges with their own layout name the repository explicitly, either as
//! `--owner` and `--identifier` (verbatim) or as the URL path `--url-path
//! /<npub>/<percent-encoded identifier>.git`; the node then checks that the directory it
//! hosts for that repository is the one git runs in (a symbolic link to it is fine).

use std::path::{Path, PathBuf};

use clap::Args;
use grasp_lib::git::Repositories;
use grasp_lib::local_api::RepositoryRef;
use grasp_lib::nip34::RepoIdentifier;
use grasp_lib::origin::parse_repo_path;

/// How the repository is named.
#[derive(Debug, Clone, Default, Args)]
pub struct RepositoryArgs {
    /// The directory the git server serves, laid out <root>/<npub>/<identifier>.git (the node's git_data_path)
    #[arg(long, env = "GRASP_HOOK_ROOT")]
    pub root: Option<PathBuf>,
    /// The repository owner's npub (or hex key), for layouts other than <root>/<npub>/<identifier>.git
    #[arg(long, env = "GRASP_HOOK_OWNER", requires = "identifier")]
    pub owner: Option<String>,
    /// The repository identifier verbatim (with --owner)
    #[arg(long, env = "GRASP_HOOK_IDENTIFIER", requires = "owner")]
    pub identifier: Option<String>,
    /// The repository's URL path /<npub>/<percent-encoded identifier>.git, instead of --owner and --identifier
    #[arg(long, env = "GRASP_HOOK_URL_PATH", conflicts_with_all = ["owner", "identifier"])]
    pub url_path: Option<String>,
}

/// The repository directory git runs the hook in: `$GIT_DIR` (relative to the working
/// directory, where git starts hooks), or the working directory itself.
pub fn git_dir() -> Result<PathBuf, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the working directory: {e}"))?;
    let dir = match std::env::var_os("GIT_DIR") {
        Some(dir) => cwd.join(dir),
        None => cwd,
    };
    dir.canonicalize().map_err(|e| format!("cannot resolve the repository directory {}: {e}", dir.display()))
}

impl RepositoryArgs {
    /// The repository at `git_dir`, named as configured.
    pub fn resolve(&self, git_dir: &Path) -> Result<RepositoryRef, String> {
        let named = |owner: String, identifier: String| RepositoryRef {
            owner,
            identifier,
            git_dir: Some(git_dir.to_path_buf()),
        };
        if let (Some(owner), Some(identifier)) = (&self.owner, &self.identifier) {
            RepoIdentifier::new(identifier).map_err(|e| format!("--identifier: {e}"))?;
            return Ok(named(owner.clone(), identifier.clone()));
        }
        if let Some(path) = &self.url_path {
            let (owner, identifier) = parse_repo_path(path).ok_or_else(|| {
                format!("--url-path {path:?} is not /<npub>/<percent-encoded identifier>.git")
            })?;
            return Ok(named(owner.to_hex(), identifier.as_str().to_owned()));
        }
        let Some(root) = &self.root else {
            return Err(
                "which repository is this? Set --root (GRASP_HOOK_ROOT) to the directory the git server \
                        serves, or --owner and --identifier"
                    .to_owned(),
            );
        };
        let repo = Repositories::new(root).repo_at(git_dir).map_err(|e| e.to_string())?;
        Ok(named(repo.npub(), repo.identifier.as_str().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NPUB: &str = "npub1sg6plzptd64u62a878hep2kev88swjh3tw00gjsfl8f237lmu63q0uf63m";

    #[test]
    fn names_come_from_the_layout_or_the_flags() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(NPUB).join("my%20repo.git");
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let args = RepositoryArgs { root: Some(root.path().into()), ..Default::default() };
        let repo = args.resolve(&dir).unwrap();
        // the directory name is the identifier verbatim
        assert_eq!((repo.owner.as_str(), repo.identifier.as_str()), (NPUB, "my%20repo"));
        assert_eq!(repo.git_dir.as_deref(), Some(dir.as_path()));

        // a URL path is percent-decoded, either hex case
        let args =
            RepositoryArgs { url_path: Some(format!("/{NPUB}/my%2frepo%2Fx.git")), ..Default::default() };
        assert!(args.resolve(&dir).unwrap_err().contains("not /<npub>"));
        let args =
            RepositoryArgs { url_path: Some(format!("/{NPUB}/my%20r%c3%a9po.git")), ..Default::default() };
        assert_eq!(args.resolve(&dir).unwrap().identifier, "my répo");

        let args =
            RepositoryArgs { owner: Some(NPUB.into()), identifier: Some("..".into()), ..Default::default() };
        assert!(args.resolve(&dir).unwrap_err().contains("--identifier"));
        assert!(RepositoryArgs::default().resolve(&dir).unwrap_err().contains("--root"));

        let elsewhere = tempfile::tempdir().unwrap();
        let args = RepositoryArgs { root: Some(root.path().into()), ..Default::default() };
        assert!(args.resolve(elsewhere.path()).unwrap_err().contains("not under the repository root"));
    }
}
