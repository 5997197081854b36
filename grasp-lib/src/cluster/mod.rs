//! Several nodes on one PostgreSQL database and one repository directory: what they
//! coordinate through the database, with PostgreSQL's own primitives (no consensus of
//! ours).
//!
//! | Module | What it holds |
//! |---|---|
//! | [`node`] | this node's id, in logs, metrics and leases |
//! | [`locks`] | cross-node locks (advisory locks) on a repository's writes and its git-data step |
//! | [`lease`] | the lease that makes one node the one running cluster-wide singleton jobs |
//!
//! With the memory or LMDB backend there is one node: locks are local and the lease is
//! always held.

pub mod lease;
pub mod locks;
pub mod node;

pub use lease::Leadership;
pub use locks::{ClusterGuard, ClusterLocks};
