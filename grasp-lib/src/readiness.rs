//! `GET /ready`: whether this node can serve now, for a load balancer's health check. It
//! checks what a request needs beyond the process itself: the event store answers (a
//! PostgreSQL round trip; LMDB is in-process) and the repository directory takes writes
//! (a file created and removed; the free-disk floor).

use std::time::Duration;

use serde::Serialize;

use crate::Grasp;

/// Longest a readiness check may wait for one thing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer of `GET /ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// True when every check passed (answered with 200; 503 otherwise).
    pub ready: bool,
    /// This node's id.
    pub node: String,
    /// `ok`, or what is wrong with the event store.
    pub database: String,
    /// `ok`, or what is wrong with the repository directory.
    pub storage: String,
}

impl Grasp {
    /// Checks the event store and the repository storage (see the module documentation).
    pub async fn readiness(&self) -> Readiness {
        let database = match self.store().postgres() {
            Some(db) => match tokio::time::timeout(CHECK_TIMEOUT, db.ping()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer from {} within {CHECK_TIMEOUT:?}", db.target()),
            },
            None => "ok".to_owned(),
        };
        let root = self.repositories().root().to_path_buf();
        let limits = self.config().storage_limits();
        let storage = tokio::task::spawn_blocking(move || {
            // A name of its own (nodes on shared storage check at once), removed on drop.
            let probe = tempfile::Builder::new().prefix(".grasp-ready-").tempfile_in(&root);
            if let Err(e) = probe.and_then(|file| file.close()) {
                return format!("cannot write in {}: {e}", root.display());
            }
            match crate::limits::storage::below_floor(&limits, crate::limits::storage::free_bytes(&root)) {
                Some(reason) => reason,
                None => "ok".to_owned(),
            }
        });
        let storage = match tokio::time::timeout(CHECK_TIMEOUT, storage).await {
            Ok(Ok(storage)) => storage,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("the repository directory did not answer within {CHECK_TIMEOUT:?}"),
        };
        Readiness {
            ready: database == "ok" && storage == "ok",
            node: crate::cluster::node::id().to_owned(),
            database,
            storage,
        }
    }
}
