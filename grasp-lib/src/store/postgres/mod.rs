//! The PostgreSQL event store (`database_backend = "postgres"`): nostr-database's
//! [`NostrDatabase`] on `tokio-postgres` with a `deadpool-postgres` pool, so several
//! grasp-server processes can share one database.
//!
//! - [`schema`]: tables and versioned migrations (applied at open, once across nodes).
//! - [`save`]: one transaction per save: NIP-01 replacement with the lower-id tie-break and
//!   NIP-09 deletions, under advisory locks that hold across nodes.
//! - [`query`]: a filter as SQL, shared by query, count, negentropy items and delete.
//! - [`notify`] and [`fanout`]: live delivery of events other nodes stored (NOTIFY from the
//!   save, LISTEN on every node).

pub mod fanout;
pub mod listen;
pub mod notify;
pub mod query;
pub mod save;
pub mod schema;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use nostr::util::BoxedFuture;
use nostr::{Event, EventId, Filter, JsonUtil, Timestamp};
use nostr_database::{Backend, DatabaseError, DatabaseEventStatus, Events, NostrDatabase, SaveEventStatus};
use tokio_postgres::NoTls;

/// Connections in the pool when none is configured.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long opening a connection may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// Why the PostgreSQL store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The URL does not parse as a libpq connection string or URL.
    #[error("database_url is not a valid PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// No connection could be made.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// Host, port and database (never the password).
        target: String,
        /// Why the pool has no connection: the innermost cause (refused, timed out, the
        /// server's own message such as a failed password).
        reason: String,
    },
    /// A statement failed.
    #[error("PostgreSQL: {0}")]
    Sql(#[from] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("PostgreSQL pool: {0}")]
    Pool(String),
}

/// The event store in PostgreSQL. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresDatabase {
    pool: Pool,
    /// Connections that hold cross-node locks ([`crate::cluster::locks`]), apart from the
    /// pool queries use, so waiting for a lock never starves the queries its holder makes.
    lock_pool: Pool,
    target: String,
    /// For the live-delivery listener's own connection (holds the password: never logged).
    config: tokio_postgres::Config,
    /// This process's name in change notifications, so it skips its own.
    node: String,
}

impl std::fmt::Debug for PostgresDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDatabase").field("target", &self.target).finish_non_exhaustive()
    }
}

/// The innermost cause of a pool error, which says what went wrong (the outer layers only
/// say "creating a connection failed").
fn root_cause(error: &deadpool_postgres::PoolError) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Where a config connects, without its password, for logs and errors.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{}:{port}/{}", hosts.join(","), config.get_dbname().unwrap_or("(default)"))
}

impl PostgresDatabase {
    /// Connects a pool of up to `pool_size` connections to `url` (checking one connection
    /// now) without touching the schema.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, PostgresError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(PostgresError::Url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("grasp-server");
        }
        let target = describe(&config);
        let build = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                NoTls,
                ManagerConfig { recycling_method: RecyclingMethod::Fast },
            );
            Pool::builder(manager)
                .max_size(size.max(1))
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| PostgresError::Pool(e.to_string()))
        };
        let pool = build(pool_size)?;
        let lock_pool = build((pool_size / 2).max(2))?;
        let db = Self { pool, lock_pool, target, config, node: crate::cluster::node::random_hex() };
        let _checked = db.pool.get().await.map_err(|source| PostgresError::Connect {
            target: db.target.clone(),
            reason: root_cause(&source),
        })?;
        Ok(db)
    }

    /// Connects and applies pending migrations (see [`schema`]).
    pub async fn open(url: &str, pool_size: usize) -> Result<Self, PostgresError> {
        let db = Self::connect(url, pool_size).await?;
        let applied = db.migrate().await?;
        if !applied.is_empty() {
            tracing::info!(?applied, target = %db.target, "applied event store migrations");
        }
        Ok(db)
    }

    /// Applies pending migrations; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<i32>, PostgresError> {
        let mut client = self.client().await?;
        Ok(schema::migrate(&mut client).await?)
    }

    /// This process's name in the notifications it sends (random per process), so it can
    /// skip its own.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where this store connects (host, port, database; never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// One round trip to the database (readiness checks).
    pub async fn ping(&self) -> Result<(), PostgresError> {
        self.client().await?.batch_execute("SELECT 1").await?;
        Ok(())
    }

    /// Sends `payload` on `channel` to every node listening.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), PostgresError> {
        let client = self.client().await?;
        client.execute("SELECT pg_notify($1, $2)", &[&channel, &payload]).await?;
        Ok(())
    }

    /// A connection of the lock pool.
    pub(crate) async fn lock_client(&self) -> Result<deadpool_postgres::Object, PostgresError> {
        self.lock_pool.get().await.map_err(|source| PostgresError::Connect {
            target: self.target.clone(),
            reason: root_cause(&source),
        })
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, PostgresError> {
        self.pool.get().await.map_err(|source| PostgresError::Connect {
            target: self.target.clone(),
            reason: root_cause(&source),
        })
    }

    /// `SELECT <columns> <filter SQL>` rows, or none when the filter cannot match.
    async fn select(
        &self,
        columns: &str,
        filter: &Filter,
    ) -> Result<Vec<tokio_postgres::Row>, PostgresError> {
        let Some(sql) = query::filter_sql(filter) else { return Ok(Vec::new()) };
        let client = self.client().await?;
        let statement = client.prepare_cached(&format!("SELECT {columns} {}", sql.from)).await?;
        Ok(client.query(&statement, &sql.refs()).await?)
    }
}

fn backend_error(e: PostgresError) -> DatabaseError {
    DatabaseError::backend(e)
}

fn event_id(bytes: &[u8]) -> Result<EventId, DatabaseError> {
    EventId::from_slice(bytes).map_err(DatabaseError::backend)
}

impl NostrDatabase for PostgresDatabase {
    fn backend(&self) -> Backend {
        Backend::Custom("postgres".to_owned())
    }

    fn save_event<'a>(&'a self, event: &'a Event) -> BoxedFuture<'a, Result<SaveEventStatus, DatabaseError>> {
        Box::pin(async move {
            let mut client = self.client().await.map_err(backend_error)?;
            save::save(&mut client, event, &self.node).await.map_err(DatabaseError::backend)
        })
    }

    fn check_id<'a>(
        &'a self,
        event_id: &'a EventId,
    ) -> BoxedFuture<'a, Result<DatabaseEventStatus, DatabaseError>> {
        Box::pin(async move {
            let client = self.client().await.map_err(backend_error)?;
            let id = event_id.as_bytes().as_slice();
            let statement = client
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM deleted_ids WHERE id = $1), \
                            EXISTS (SELECT 1 FROM events WHERE id = $1)",
                )
                .await
                .map_err(DatabaseError::backend)?;
            let row = client.query_one(&statement, &[&id]).await.map_err(DatabaseError::backend)?;
            Ok(match (row.get::<_, bool>(0), row.get::<_, bool>(1)) {
                (true, _) => DatabaseEventStatus::Deleted,
                (false, true) => DatabaseEventStatus::Saved,
                (false, false) => DatabaseEventStatus::NotExistent,
            })
        })
    }

    fn event_by_id<'a>(
        &'a self,
        event_id: &'a EventId,
    ) -> BoxedFuture<'a, Result<Option<Event>, DatabaseError>> {
        Box::pin(async move {
            let client = self.client().await.map_err(backend_error)?;
            let id = event_id.as_bytes().as_slice();
            let statement = client
                .prepare_cached("SELECT json FROM events WHERE id = $1")
                .await
                .map_err(DatabaseError::backend)?;
            let row = client.query_opt(&statement, &[&id]).await.map_err(DatabaseError::backend)?;
            row.map(|row| Event::from_json(row.get::<_, &str>(0)).map_err(DatabaseError::backend)).transpose()
        })
    }

    fn count(&self, filter: Filter) -> BoxedFuture<'_, Result<usize, DatabaseError>> {
        Box::pin(async move {
            let Some(sql) = query::filter_sql(&filter) else { return Ok(0) };
            let client = self.client().await.map_err(backend_error)?;
            let statement = client
                .prepare_cached(&format!("SELECT count(*) FROM (SELECT 1 {}) AS matching", sql.from))
                .await
                .map_err(DatabaseError::backend)?;
            let count: i64 =
                client.query_one(&statement, &sql.refs()).await.map_err(DatabaseError::backend)?.get(0);
            Ok(count as usize)
        })
    }

    fn query(&self, filter: Filter) -> BoxedFuture<'_, Result<Events, DatabaseError>> {
        Box::pin(async move {
            let rows = self.select("e.json", &filter).await.map_err(backend_error)?;
            let mut events = Events::new(&filter);
            for row in rows {
                events.insert(Event::from_json(row.get::<_, &str>(0)).map_err(DatabaseError::backend)?);
            }
            Ok(events)
        })
    }

    fn negentropy_items(
        &self,
        filter: Filter,
    ) -> BoxedFuture<'_, Result<Vec<(EventId, Timestamp)>, DatabaseError>> {
        Box::pin(async move {
            let rows = self.select("e.id, e.created_at", &filter).await.map_err(backend_error)?;
            rows.iter()
                .map(|row| Ok((event_id(row.get(0))?, Timestamp::from(row.get::<_, i64>(1) as u64))))
                .collect()
        })
    }

    fn delete(&self, filter: Filter) -> BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move {
            let Some(sql) = query::filter_sql(&filter) else { return Ok(()) };
            let client = self.client().await.map_err(backend_error)?;
            let statement = format!("DELETE FROM events WHERE id IN (SELECT e.id {})", sql.from);
            client.execute(&statement, &sql.refs()).await.map_err(DatabaseError::backend)?;
            Ok(())
        })
    }

    fn wipe(&self) -> BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move {
            let client = self.client().await.map_err(backend_error)?;
            client
                .batch_execute("TRUNCATE events, event_tags, deleted_ids, deleted_coordinates")
                .await
                .map_err(DatabaseError::backend)
        })
    }
}
