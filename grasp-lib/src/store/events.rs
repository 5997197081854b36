//! The event store itself. A thin wrapper over `nostr-database` that (1) runs the synchronous LMDB read path on the
//! blocking pool so a large query never stalls the async workers, and (2) offers the few
//! lookups the acceptance policy needs, named after what they answer.

use std::path::Path;
use std::sync::Arc;

use nostr::{Event, EventId, Filter, Kind, PublicKey, SingleLetterTag, Timestamp};
use nostr_database::{
    DatabaseError, DatabaseEventStatus, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase, SaveEventStatus,
};
use nostr_lmdb::NostrLMDB;

use crate::nip34::{kinds, RepoAnnouncement, RepoCoordinate};

/// Which backend holds the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// LMDB under the relay data path (the default; survives restarts).
    Lmdb,
    /// In memory only (tests, throw-away instances).
    Memory,
}

/// Errors from the underlying database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("event store: {0}")]
    Database(#[from] DatabaseError),
    /// A blocking task panicked or was cancelled.
    #[error("event store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Shared handle to the event store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventStore {
    db: Arc<dyn NostrDatabase>,
}

impl EventStore {
    /// Opens (creating if needed) an LMDB store in `dir`.
    pub fn open_lmdb(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(DatabaseError::backend)?;
        Ok(Self { db: Arc::new(NostrLMDB::open(dir)?) })
    }

    /// A fresh, empty in-memory store.
    pub fn memory() -> Self {
        let opts = MemoryDatabaseOptions { events: true, max_events: None };
        Self { db: Arc::new(MemoryDatabase::with_opts(opts)) }
    }

    /// Opens the configured backend.
    pub fn open(backend: StoreBackend, dir: &Path) -> Result<Self, StoreError> {
        match backend {
            StoreBackend::Lmdb => Self::open_lmdb(dir),
            StoreBackend::Memory => Ok(Self::memory()),
        }
    }

    /// Saves an already verified and accepted event (replaceable and deletion semantics are
    /// applied by the backend).
    pub async fn save(&self, event: &Event) -> Result<SaveEventStatus, StoreError> {
        Ok(self.db.save_event(event).await?)
    }

    /// Whether the id is stored, deleted or unknown.
    pub async fn status(&self, id: &EventId) -> Result<DatabaseEventStatus, StoreError> {
        Ok(self.db.check_id(id).await?)
    }

    /// One event by id.
    pub async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        Ok(self.db.event_by_id(id).await?)
    }

    /// Events matching the filter, newest first.
    pub async fn query(&self, filter: Filter) -> Result<Vec<Event>, StoreError> {
        let db = self.db.clone();
        let events = tokio::task::spawn_blocking(move || {
            futures::executor::block_on(db.query(filter)).map(|e| e.into_iter().collect::<Vec<_>>())
        })
        .await??;
        Ok(events)
    }

    /// Number of events matching the filter.
    pub async fn count(&self, filter: Filter) -> Result<usize, StoreError> {
        let db = self.db.clone();
        Ok(tokio::task::spawn_blocking(move || futures::executor::block_on(db.count(filter))).await??)
    }

    /// `(id, created_at)` of every event matching the filter, for negentropy.
    pub async fn negentropy_items(&self, filter: Filter) -> Result<Vec<(EventId, Timestamp)>, StoreError> {
        let db = self.db.clone();
        Ok(tokio::task::spawn_blocking(move || futures::executor::block_on(db.negentropy_items(filter)))
            .await??)
    }

    /// Every stored announcement (30617) with identifier `d`, from any author.
    pub async fn announcements(&self, d: &str) -> Result<Vec<RepoAnnouncement>, StoreError> {
        let filter = Filter::new().kind(Kind::Custom(kinds::REPO_ANNOUNCEMENT)).identifier(d);
        Ok(self.query(filter).await?.iter().filter_map(|e| RepoAnnouncement::parse(e).ok()).collect())
    }

    /// The stored event at an addressable/replaceable coordinate, if any.
    pub async fn at_coordinate(&self, c: &RepoCoordinate) -> Result<Option<Event>, StoreError> {
        let mut filter = Filter::new().kind(c.kind()).author(c.pubkey).limit(1);
        if c.kind().is_addressable() {
            filter = filter.identifier(c.identifier.clone());
        }
        Ok(self.query(filter).await?.into_iter().next())
    }

    /// Stored events among `ids`.
    pub async fn events_among(&self, ids: &[EventId]) -> Result<Vec<Event>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.query(Filter::new().ids(ids.iter().copied())).await
    }

    /// True when some stored event references `id` with an `e`, `E` or `q` tag, or (when
    /// `coordinate` is given) references it with an `a`, `A` or `q` tag.
    pub async fn is_referenced(
        &self,
        id: &EventId,
        coordinate: Option<&RepoCoordinate>,
    ) -> Result<bool, StoreError> {
        let mut lookups: Vec<(char, String)> =
            ['e', 'E', 'q'].into_iter().map(|c| (c, id.to_hex())).collect();
        if let Some(coord) = coordinate {
            lookups.extend(['a', 'A', 'q'].into_iter().map(|c| (c, coord.to_string())));
        }
        for (letter, value) in lookups {
            let tag = SingleLetterTag::from_char(letter).expect("ASCII letter");
            if !self.query(Filter::new().custom_tag(tag, value).limit(1)).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The newest stored state (30618) of `author` for identifier `d`.
    pub async fn latest_state_by(&self, author: PublicKey, d: &str) -> Result<Option<Event>, StoreError> {
        let filter =
            Filter::new().kind(Kind::Custom(kinds::REPO_STATE)).author(author).identifier(d).limit(1);
        Ok(self.query(filter).await?.into_iter().next())
    }
}
