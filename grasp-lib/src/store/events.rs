//! The event store itself. A thin wrapper over `nostr-database` that (1) runs the synchronous LMDB read path on the
//! blocking pool so a large query never stalls the async workers (PostgreSQL reads are
//! awaited directly), and (2) offers the few lookups the acceptance policy needs, named
//! after what they answer.

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
    /// PostgreSQL at `database_url`: several nodes may share it.
    Postgres,
}

impl StoreBackend {
    /// The configuration value (`lmdb`, `memory`, `postgres`). The server keeps its
    /// node-local state (purgatory, hunt status, the `/prs/` template) in files under the
    /// relay data path with every backend but memory ([`StoreBackend::keeps_local_files`]).
    pub fn as_str(self) -> &'static str {
        match self {
            StoreBackend::Lmdb => "lmdb",
            StoreBackend::Memory => "memory",
            StoreBackend::Postgres => "postgres",
        }
    }

    /// True when the server keeps its node-local state in files (see above).
    pub fn keeps_local_files(self) -> bool {
        !matches!(self, StoreBackend::Memory)
    }
}

/// Errors from the underlying database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("event store: {0}")]
    Database(#[from] DatabaseError),
    /// The PostgreSQL store could not be opened.
    #[error(transparent)]
    Postgres(#[from] super::postgres::PostgresError),
    /// The backend needs settings that were not given.
    #[error("event store: {0}")]
    Config(&'static str),
    /// A blocking task panicked or was cancelled.
    #[error("event store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Every read slot for client queries stayed taken (a burst of REQ, COUNT, NEG-OPEN).
    #[error("event store busy: too many client queries at once")]
    Busy,
}

impl StoreError {
    /// The `CLOSED` / `NEG-ERR` reason a client gets for this error.
    pub fn client_message(&self) -> String {
        match self {
            StoreError::Busy => {
                "error: too many queries at once on this relay; try again in a moment".to_owned()
            }
            _ => "error: could not query the event store; try again later".to_owned(),
        }
    }
}

/// Reads at once of any kind: below LMDB's reader slots (126), so a read never fails for
/// want of one.
const READERS: usize = 100;

/// Of those, client queries (REQ, COUNT, NEG-OPEN) at once: the rest stay for pushes,
/// EVENTs and the git-data step, whatever clients ask.
const CLIENT_READERS: usize = 64;

/// How long a client query waits for a read slot before it is refused.
const CLIENT_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// LMDB's map size when none is configured: the largest the store may grow.
pub const DEFAULT_MAP_SIZE: u64 = 32 * 1024 * 1024 * 1024;

/// True when `kept` stays over `other` at one replaceable address: newer, or signed in the
/// same second with the lower id (NIP-01).
pub fn wins_over(kept: &Event, other: &Event) -> bool {
    (kept.created_at, std::cmp::Reverse(kept.id)) > (other.created_at, std::cmp::Reverse(other.id))
}

/// Shared handle to the event store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventStore {
    db: Arc<dyn NostrDatabase>,
    /// Serialises saves of replaceable and addressable events, so the tie-break check and
    /// the save are one step.
    replacing: Arc<tokio::sync::Mutex<()>>,
    /// Read slots ([`READERS`]) and client query slots ([`CLIENT_READERS`]).
    readers: Arc<tokio::sync::Semaphore>,
    client_readers: Arc<tokio::sync::Semaphore>,
    /// LMDB's data file and map size, for the fill gauge (none for memory).
    lmdb: Option<(std::path::PathBuf, u64)>,
    /// True for PostgreSQL: reads are awaited (not run on the blocking pool), and the
    /// replacement tie-break happens in the database's save transaction, which holds across
    /// processes, instead of under [`EventStore::replacing`].
    in_database: bool,
    /// The PostgreSQL store, for live delivery across nodes (none for LMDB and memory).
    postgres: Option<super::postgres::PostgresDatabase>,
}

impl EventStore {
    /// Opens (creating if needed) an LMDB store in `dir` that may grow to `map_size` bytes.
    pub fn open_lmdb(dir: &Path, map_size: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(DatabaseError::backend)?;
        let db = NostrLMDB::builder(dir).map_size(map_size as usize).max_readers(126).build()?;
        let mut store = Self::with_database(Arc::new(db));
        store.lmdb = Some((dir.join("data.mdb"), map_size));
        Ok(store)
    }

    /// The PostgreSQL store behind this one, if that is the backend.
    pub fn postgres(&self) -> Option<&super::postgres::PostgresDatabase> {
        self.postgres.as_ref()
    }

    /// `(bytes used, map size)` of an LMDB store (its data file grows as it fills).
    pub fn map_usage(&self) -> Option<(u64, u64)> {
        let (file, map_size) = self.lmdb.as_ref()?;
        Some((std::fs::metadata(file).ok()?.len(), *map_size))
    }

    /// A fresh, empty in-memory store.
    pub fn memory() -> Self {
        let opts = MemoryDatabaseOptions { events: true, max_events: None };
        Self::with_database(Arc::new(MemoryDatabase::with_opts(opts)))
    }

    fn with_database(db: Arc<dyn NostrDatabase>) -> Self {
        Self {
            db,
            replacing: Arc::default(),
            readers: Arc::new(tokio::sync::Semaphore::new(READERS)),
            client_readers: Arc::new(tokio::sync::Semaphore::new(CLIENT_READERS)),
            lmdb: None,
            in_database: false,
            postgres: None,
        }
    }

    /// Connects to PostgreSQL at `url` with up to `pool_size` connections and applies
    /// pending schema migrations.
    pub async fn open_postgres(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let db = super::postgres::PostgresDatabase::open(url, pool_size).await?;
        let mut store = Self::with_database(Arc::new(db.clone()));
        store.in_database = true;
        store.postgres = Some(db);
        Ok(store)
    }

    /// Opens the configured backend: LMDB in `dir` (up to `map_size` bytes), memory, or
    /// PostgreSQL at `postgres`'s `(url, pool size)`.
    pub async fn open_backend(
        backend: StoreBackend,
        dir: &Path,
        map_size: u64,
        postgres: Option<(&str, usize)>,
    ) -> Result<Self, StoreError> {
        match backend {
            StoreBackend::Postgres => {
                let (url, pool_size) =
                    postgres.ok_or(StoreError::Config("the postgres backend needs database_url"))?;
                Self::open_postgres(url, pool_size).await
            }
            other => Self::open_sized(other, dir, map_size),
        }
    }

    /// Opens the configured backend (LMDB with the default map size).
    pub fn open(backend: StoreBackend, dir: &Path) -> Result<Self, StoreError> {
        Self::open_sized(backend, dir, DEFAULT_MAP_SIZE)
    }

    /// Opens the configured backend; LMDB may grow to `map_size` bytes. PostgreSQL needs a
    /// URL and an async start: [`EventStore::open_backend`].
    pub fn open_sized(backend: StoreBackend, dir: &Path, map_size: u64) -> Result<Self, StoreError> {
        match backend {
            StoreBackend::Lmdb => Self::open_lmdb(dir, map_size),
            StoreBackend::Memory => Ok(Self::memory()),
            StoreBackend::Postgres => {
                Err(StoreError::Config("the postgres backend opens with EventStore::open_backend"))
            }
        }
    }

    /// Saves an already verified and accepted event (replaceable and deletion semantics are
    /// applied by the backend). For replaceable and addressable kinds the NIP-01 tie-break
    /// holds whatever the backend: of two versions signed in the same second, the lower id
    /// stays, in whichever order they arrive.
    pub async fn save(&self, event: &Event) -> Result<SaveEventStatus, StoreError> {
        if self.in_database || !(event.kind.is_replaceable() || event.kind.is_addressable()) {
            return Ok(self.db.save_event(event).await?);
        }
        let _one_at_a_time = self.replacing.lock().await;
        if let Some(stored) = self.current_version(event).await? {
            if stored.id != event.id && wins_over(&stored, event) {
                return Ok(SaveEventStatus::Rejected(nostr_database::RejectedReason::Replaced));
            }
        }
        Ok(self.db.save_event(event).await?)
    }

    /// The stored version at the replaceable or addressable address of `event`.
    async fn current_version(&self, event: &Event) -> Result<Option<Event>, StoreError> {
        let mut filter = Filter::new().kind(event.kind).author(event.pubkey).limit(1);
        if event.kind.is_addressable() {
            let Some(d) = event.tags.identifier() else { return Ok(None) };
            filter = filter.identifier(d);
        }
        Ok(self.query(filter).await?.into_iter().next())
    }

    /// Whether the id is stored, deleted or unknown.
    pub async fn status(&self, id: &EventId) -> Result<DatabaseEventStatus, StoreError> {
        Ok(self.db.check_id(id).await?)
    }

    /// One event by id.
    pub async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        Ok(self.db.event_by_id(id).await?)
    }

    /// Runs one read in a read slot: for LMDB on the blocking pool (its reads are
    /// synchronous), for PostgreSQL awaited here (its reads only wait on the network).
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(Arc<dyn NostrDatabase>) -> futures::future::BoxFuture<'static, Result<T, DatabaseError>>
            + Send
            + 'static,
    ) -> Result<T, StoreError> {
        let _slot = self.readers.acquire().await.expect("never closed");
        let db = self.db.clone();
        if self.in_database {
            return Ok(read(db).await?);
        }
        Ok(tokio::task::spawn_blocking(move || futures::executor::block_on(read(db))).await??)
    }

    /// A client query slot, or [`StoreError::Busy`] when none frees up in time.
    async fn client_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        tokio::time::timeout(CLIENT_READ_WAIT, self.client_readers.acquire())
            .await
            .map_err(|_| StoreError::Busy)?
            .map_err(|_| StoreError::Busy)
    }

    /// Events matching the filter, newest first.
    pub async fn query(&self, filter: Filter) -> Result<Vec<Event>, StoreError> {
        self.read(move |db| Box::pin(async move { Ok(db.query(filter).await?.into_iter().collect()) })).await
    }

    /// [`EventStore::query`] for a client's REQ: in a client query slot.
    pub async fn query_for_client(&self, filter: Filter) -> Result<Vec<Event>, StoreError> {
        let _slot = self.client_slot().await?;
        self.query(filter).await
    }

    /// Number of events matching the filter.
    pub async fn count(&self, filter: Filter) -> Result<usize, StoreError> {
        self.read(move |db| Box::pin(async move { db.count(filter).await })).await
    }

    /// `(id, created_at)` of every event matching the filter, for negentropy.
    pub async fn negentropy_items(&self, filter: Filter) -> Result<Vec<(EventId, Timestamp)>, StoreError> {
        self.read(move |db| Box::pin(async move { db.negentropy_items(filter).await })).await
    }

    /// [`EventStore::negentropy_items`] for a client's COUNT or NEG-OPEN: in a client query
    /// slot.
    pub async fn items_for_client(&self, filter: Filter) -> Result<Vec<(EventId, Timestamp)>, StoreError> {
        let _slot = self.client_slot().await?;
        self.negentropy_items(filter).await
    }

    /// Removes every stored event matching the filter (nothing is remembered as deleted).
    pub async fn delete(&self, filter: Filter) -> Result<(), StoreError> {
        Ok(self.db.delete(filter).await?)
    }

    /// Removes everything: events and the memory of deletions.
    pub async fn wipe(&self) -> Result<(), StoreError> {
        Ok(self.db.wipe().await?)
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

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Tag};

    use super::*;

    /// Two versions of one address signed in the same second, lower id first.
    fn same_second_pair(kind: u16) -> (Event, Event) {
        let keys = Keys::generate();
        let at = Timestamp::from(1_700_000_000);
        let mut versions: Vec<Event> = (0..2)
            .map(|i| {
                EventBuilder::new(Kind::Custom(kind), format!("version {i}"))
                    .tags([Tag::identifier("repo")])
                    .custom_created_at(at)
                    .sign_with_keys(&keys)
                    .unwrap()
            })
            .collect();
        versions.sort_by_key(|e| e.id);
        let higher = versions.pop().unwrap();
        (versions.pop().unwrap(), higher)
    }

    async fn stored_id(store: &EventStore, event: &Event) -> EventId {
        store.current_version(event).await.unwrap().expect("a version is stored").id
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_client_queries_gets_busy_and_other_reads_go_on() {
        let store = EventStore::memory();
        let _taken = store.client_readers.acquire_many(CLIENT_READERS as u32).await.unwrap();
        let busy = store.query_for_client(Filter::new().kind(Kind::TextNote)).await;
        assert!(matches!(busy, Err(StoreError::Busy)), "after waiting {CLIENT_READ_WAIT:?}");
        assert!(busy.unwrap_err().client_message().starts_with("error: too many queries"));
        // Reads for pushes and EVENTs do not wait for client slots.
        assert!(store.query(Filter::new().kind(Kind::TextNote)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_lower_id_wins_a_same_second_tie_in_either_order_on_every_backend() {
        for backend in [StoreBackend::Memory, StoreBackend::Lmdb] {
            for kind in [kinds::REPO_ANNOUNCEMENT, kinds::REPO_STATE, 10317] {
                for lower_first in [true, false] {
                    let dir = tempfile::tempdir().unwrap();
                    let store = EventStore::open(backend, dir.path()).unwrap();
                    let (lower, higher) = same_second_pair(kind);
                    let (first, second) = if lower_first { (&lower, &higher) } else { (&higher, &lower) };
                    assert!(store.save(first).await.unwrap().is_success());
                    let outcome = store.save(second).await.unwrap();
                    assert_eq!(
                        outcome.is_success(),
                        !lower_first,
                        "{backend:?} {kind} lower first: {lower_first}"
                    );
                    assert_eq!(stored_id(&store, &lower).await, lower.id, "{backend:?} {kind}");
                    let count = store.count(Filter::new().kind(Kind::Custom(kind))).await.unwrap();
                    assert_eq!(count, 1, "{backend:?} {kind}: one version at the address");
                }
            }
        }
    }
}
