//! Why a repository operation failed.

use std::path::PathBuf;

/// Errors from repository operations.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 failed.
    #[error("git: {0}")]
    Git2(#[from] git2::Error),
    /// A filesystem or process error.
    #[error("git: {0}")]
    Io(#[from] std::io::Error),
    /// A `git` command exited with an error.
    #[error("git {command} failed: {stderr}")]
    Command {
        /// What ran.
        command: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
    /// Git refused the client's request (the repository itself is fine).
    #[error("git refused the request: {0}")]
    BadRequest(String),
    /// A blocking task panicked.
    #[error("git task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why a directory is not a hosted repository (see [`Repositories::repo_at`]).
#[derive(Debug, thiserror::Error)]
pub enum RepoPathError {
    /// The path or the root cannot be resolved.
    #[error("cannot resolve {0}: {1}")]
    Unreadable(PathBuf, String),
    /// The path is not under the repository root.
    #[error("{path} is not under the repository root {root}")]
    OutsideRoot {
        /// The repository path (resolved).
        path: PathBuf,
        /// The root (resolved).
        root: PathBuf,
    },
    /// The path under the root is not `<npub>/<identifier>.git`.
    #[error("{0} is not <npub>/<identifier>.git under the repository root")]
    Layout(PathBuf),
    /// The directory name is not a valid identifier.
    #[error(transparent)]
    Identifier(crate::nip34::IdentifierError),
}
