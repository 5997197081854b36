//! The event store's schema and its migrations.
//!
//! Every migration has a version; `grasp_schema_migrations` records the ones applied. All
//! pending migrations run in one transaction that first takes a transaction-scoped advisory
//! lock, so nodes starting at once apply them exactly once: the others wait on the lock and
//! then find nothing left to do.

use tokio_postgres::Client;

/// Advisory lock key of the migration step ("grasp mg" in ASCII).
const MIGRATION_LOCK: i64 = 0x6772_6173_7020_6d67;

/// `(version, SQL)` of every migration, oldest first. Applied ones are never edited: a
/// change is a new version.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE events (
        id          BYTEA PRIMARY KEY,
        pubkey      BYTEA NOT NULL,
        created_at  BIGINT NOT NULL,
        kind        INTEGER NOT NULL,
        -- The `d` identifier of an addressable event (NULL for other kinds).
        identifier  TEXT,
        content     TEXT NOT NULL,
        -- The whole signed event as JSON, as it is served.
        json        TEXT NOT NULL
    );
    CREATE INDEX events_newest ON events (created_at DESC, id);
    CREATE INDEX events_by_author ON events (pubkey, created_at DESC);
    CREATE INDEX events_by_kind ON events (kind, created_at DESC);
    CREATE INDEX events_by_address ON events (pubkey, kind, identifier);

    -- The first value of every single-letter tag, for `#x` filters.
    CREATE TABLE event_tags (
        event_id    BYTEA NOT NULL REFERENCES events (id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        value       TEXT NOT NULL,
        PRIMARY KEY (name, value, event_id)
    );
    CREATE INDEX event_tags_by_event ON event_tags (event_id);

    -- Ids deleted by NIP-09 requests: never stored again.
    CREATE TABLE deleted_ids (
        id          BYTEA PRIMARY KEY
    );

    -- Coordinates deleted by NIP-09 requests: versions signed up to `until` are refused.
    CREATE TABLE deleted_coordinates (
        kind        INTEGER NOT NULL,
        pubkey      BYTEA NOT NULL,
        identifier  TEXT NOT NULL,
        until       BIGINT NOT NULL,
        PRIMARY KEY (pubkey, kind, identifier)
    );
    "#,
    ),
    (
        2,
        r#"
    -- Purgatory, shared by every node: an append-only log of changes (a held event, a
    -- placeholder, or the removal of one), replayed by each node into its in-memory index.
    -- `key` names what a record is about, so compaction can drop superseded records.
    CREATE TABLE grasp_purgatory_log (
        seq     BIGSERIAL PRIMARY KEY,
        key     TEXT NOT NULL,
        -- False for a removal: such records are dropped by compaction.
        live    BOOLEAN NOT NULL,
        record  TEXT NOT NULL
    );
    CREATE INDEX grasp_purgatory_log_by_key ON grasp_purgatory_log (key, seq);
    -- How far the log was compacted: a node that last read an older record reloads it all.
    CREATE TABLE grasp_purgatory_meta (
        one                 BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
        compacted_through   BIGINT NOT NULL
    );
    INSERT INTO grasp_purgatory_meta (compacted_through) VALUES (0);

    -- Leases of the jobs that run on one node of the cluster at a time.
    CREATE TABLE grasp_leases (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        expires_at  TIMESTAMPTZ NOT NULL
    );
    "#,
    ),
];

/// The newest schema version this build knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0)
}

/// Applies every pending migration in one transaction; returns the versions applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS grasp_schema_migrations (
             version     INTEGER PRIMARY KEY,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM grasp_schema_migrations", &[]).await?.get(0);
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO grasp_schema_migrations (version) VALUES ($1)", &[version]).await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}

/// The schema version recorded in the database (0 before the first migration).
pub async fn current_version(client: &Client) -> Result<i32, tokio_postgres::Error> {
    let exists: bool =
        client.query_one("SELECT to_regclass('grasp_schema_migrations') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client.query_one("SELECT COALESCE(MAX(version), 0) FROM grasp_schema_migrations", &[]).await?.get(0))
}
