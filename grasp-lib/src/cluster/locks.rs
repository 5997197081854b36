//! Cross-node locks: a key's lock is a local mutex (so one node's waiters queue in memory)
//! and, on PostgreSQL, a session-level advisory lock on a connection of the lock pool,
//! held until the guard drops. A node that dies loses its connections, and PostgreSQL
//! releases its locks with them: a crashed push never blocks the repository.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::postgres::PostgresDatabase;

/// How long a caller waits for another node's hold on a lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// Locks by name, shared across the nodes of one database.
#[derive(Debug, Clone, Default)]
pub struct ClusterLocks {
    db: Option<PostgresDatabase>,
    local: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct ClusterGuard {
    local: Option<tokio::sync::OwnedMutexGuard<()>>,
    remote: Option<(deadpool_postgres::Object, i64)>,
    name: String,
    locks: ClusterLocks,
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if let Some((client, key)) = self.remote.take() {
            tokio::spawn(release(client, key));
        }
        self.local.take();
        let mut map = self.locks.map();
        if map.get(&self.name).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            map.remove(&self.name);
        }
    }
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The database is unreachable.
    #[error("cluster lock: {0}")]
    Database(String),
    /// Another node held it for longer than the wait allows.
    #[error("cluster lock {0}: another node held it for too long")]
    Timeout(String),
}

impl ClusterLocks {
    /// Locks shared through `db` (local only when `None`).
    pub fn new(db: Option<PostgresDatabase>) -> Self {
        Self { db, local: Arc::default() }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.local.lock().expect("lock map poisoned")
    }

    fn local(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.map().entry(name.to_owned()).or_default().clone()
    }

    /// Waits for the lock `name` (on this node, then across nodes).
    pub async fn lock(&self, name: &str) -> Result<ClusterGuard, LockError> {
        let local = self.local(name).lock_owned().await;
        let mut guard =
            ClusterGuard { local: Some(local), remote: None, name: name.to_owned(), locks: self.clone() };
        let Some(db) = &self.db else { return Ok(guard) };
        guard.remote =
            Some(remote_lock(db, name, true).await?.ok_or_else(|| LockError::Timeout(name.to_owned()))?);
        Ok(guard)
    }

    /// Takes the lock `name` when nobody holds it, anywhere; `None` when someone does.
    pub async fn try_lock(&self, name: &str) -> Result<Option<ClusterGuard>, LockError> {
        let Ok(local) = self.local(name).try_lock_owned() else { return Ok(None) };
        let mut guard =
            ClusterGuard { local: Some(local), remote: None, name: name.to_owned(), locks: self.clone() };
        let Some(db) = &self.db else { return Ok(Some(guard)) };
        match remote_lock(db, name, false).await? {
            Some(remote) => {
                guard.remote = Some(remote);
                Ok(Some(guard))
            }
            None => Ok(None),
        }
    }
}

/// Takes the advisory lock of `name` on a lock-pool connection (waiting up to [`LOCK_WAIT`]
/// when `wait`); `None` when it is held elsewhere (and not waited for, or not freed in time).
///
/// The statement runs in a task of its own: a caller that gives up (a client hanging up
/// while its push waits) drops only the answer, and a lock granted after that is released
/// at once instead of staying with a pooled connection forever.
async fn remote_lock(
    db: &PostgresDatabase,
    name: &str,
    wait: bool,
) -> Result<Option<(deadpool_postgres::Object, i64)>, LockError> {
    let client = db.lock_client().await.map_err(|e| LockError::Database(e.to_string()))?;
    let key = crate::store::postgres::save::lock_key(name);
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let taken = take(&client, key, wait).await;
        let outcome = match taken {
            Ok(true) => Ok(Some((client, key))),
            Ok(false) => Ok(None),
            Err(e) => {
                // The connection's state is unknown: close it rather than pool it.
                drop(deadpool_postgres::Object::take(client));
                Err(e)
            }
        };
        if let Err(Ok(Some((client, key)))) = answer.send(outcome) {
            release(client, key).await;
        }
    });
    answered.await.map_err(|_| LockError::Database("the lock task ended".to_owned()))?
}

/// `pg_advisory_lock` (bounded by `lock_timeout`) or `pg_try_advisory_lock`; true when taken.
async fn take(client: &deadpool_postgres::Object, key: i64, wait: bool) -> Result<bool, LockError> {
    let database = |e: tokio_postgres::Error| LockError::Database(e.to_string());
    if !wait {
        let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await.map_err(database)?;
        return Ok(row.get::<_, bool>(0));
    }
    // `lock_timeout` bounds the wait; it is reset right after.
    let timeout = format!("SET lock_timeout = '{}ms'", LOCK_WAIT.as_millis());
    client.batch_execute(&timeout).await.map_err(database)?;
    let locked = client.execute("SELECT pg_advisory_lock($1)", &[&key]).await;
    client.batch_execute("RESET lock_timeout").await.map_err(database)?;
    match locked {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => Ok(false),
        Err(e) => Err(database(e)),
    }
}

/// Releases a lock and returns its connection to the pool; a connection whose unlock failed
/// is closed instead (closing releases the lock too).
async fn release(client: deadpool_postgres::Object, key: i64) {
    if client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_lock_excludes_until_dropped_and_is_forgotten() {
        let locks = ClusterLocks::new(None);
        let held = locks.lock("r").await.unwrap();
        assert!(locks.try_lock("r").await.unwrap().is_none(), "held: a second taker is refused");
        assert!(locks.try_lock("other").await.unwrap().is_some(), "other names are free");
        drop(held);
        assert!(locks.try_lock("r").await.unwrap().is_some());
        assert!(locks.map().is_empty(), "nothing kept once nobody holds or waits");
    }
}
