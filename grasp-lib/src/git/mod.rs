//! Bare repositories on disk and the git operations GRASP needs on them.
//!
//! Layout: `<git_data_path>/<npub>/<identifier>.git` for announced repositories and
//! `<git_data_path>/prs/<npub>/<identifier>.git` for GRASP-06 contributor repositories
//! ([`prs`]), the identifier stored verbatim (it is validated to be a single safe path
//! component; `prs` cannot clash with an npub directory, which starts with `npub1`). Ref
//! reads and updates, object checks and HEAD go through `git2`; the wire protocol is served
//! by spawning `git` itself ([`smart_http`]), except ref advertisements, which are made
//! in-process exactly as git makes them whenever that can be done ([`advertise`]).

pub mod advertise;
pub mod error;
pub mod maintenance;
pub mod metering;
pub mod observe;
pub mod oid;
pub mod pack_cache;
pub mod pktline;
pub mod process;
pub mod prs;
pub mod refs;
pub mod repo;
pub mod repositories;
pub mod smart_http;

pub use error::{GitError, RepoPathError};
pub use metering::{Advertisement, Direction, OperationStatus, UploadPackMeter};
pub use oid::{is_zero_oid, ZERO_OID};
pub use process::{dies_with_server, dies_with_server_in_own_group, start_child_guard};
pub use repo::{Namespace, RepoRef};
pub use repositories::Repositories;
