//! Durability for a purgatory several nodes share (`database_backend = "postgres"`): the
//! journal's records in a PostgreSQL table instead of a file.
//!
//! Every node keeps its own in-memory index, replayed from `grasp_purgatory_log`. A change
//! runs in one transaction under a cluster-wide advisory lock: catch up with what other
//! nodes appended, decide against the caught-up index, append the change's records, commit.
//! So sequence numbers are handed out in commit order, and a reader that has seen record
//! `n` has seen every record before it. Other nodes learn of a change from
//! `NOTIFY grasp_purgatory` (and a periodic refresh); decisions that must see every node's
//! holds (push authorization, the git-data step, a new event) catch up first
//! ([`super::Purgatory::refresh`]).
//!
//! Compaction deletes records a later one supersedes and removal records, and moves
//! `compacted_through` past them; a node that read less than that reloads everything.

use deadpool_postgres::GenericClient;

use super::journal::{Record, Replayed};
use crate::store::postgres::PostgresDatabase;

/// Advisory lock key of purgatory changes ("grasp pg" in ASCII).
const LOCK: i64 = 0x6772_6173_7020_7067;

/// The channel a change is announced on (payload: the node that made it).
pub const CHANNEL: &str = "grasp_purgatory";

/// Records appended before a node compacts the log (when they outnumber the live ones too).
const COMPACT_AFTER: usize = 1024;

fn io(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}

/// What a record is about (one held event or one placeholder), and whether it keeps it.
fn key(record: &Record) -> (String, bool) {
    match record {
        Record::Hold { entry } => (format!("held:{}", entry.event.id), true),
        Record::Drop { id } => (format!("held:{id}"), false),
        Record::Placeholder { placeholder } => (format!("placeholder:{}", placeholder.event_id), true),
        Record::DropPlaceholder { id } => (format!("placeholder:{id}"), false),
    }
}

/// The log of one database, as one node reads and writes it.
#[derive(Debug)]
pub(super) struct SharedLog {
    db: PostgresDatabase,
    /// The last record this node applied; `None` when its index must be rebuilt (a change
    /// failed half-way). Locked for each catch-up and change, so they run one at a time.
    cursor: tokio::sync::Mutex<Option<i64>>,
    /// Records this node appended since it last compacted.
    appended: std::sync::atomic::AtomicUsize,
    /// When the last successful catch-up began (set while the cursor is locked): callers
    /// that asked before that need no catch-up of their own.
    caught_up: std::sync::Mutex<Option<std::time::Instant>>,
}

/// What reading the log brought.
pub(super) enum News {
    /// Records after the cursor, oldest first.
    Since(Vec<Record>),
    /// Everything (the index is rebuilt from it).
    All(Replayed),
}

impl SharedLog {
    pub(super) fn new(db: PostgresDatabase) -> Self {
        Self {
            db,
            cursor: tokio::sync::Mutex::new(None),
            appended: Default::default(),
            caught_up: Default::default(),
        }
    }

    /// True when a catch-up that began at or after `asked` has finished: it read everything
    /// committed before `asked`. Call with the cursor locked.
    pub(super) fn caught_up_since(&self, asked: std::time::Instant) -> bool {
        self.caught_up.lock().expect("catch-up time poisoned").is_some_and(|began| began >= asked)
    }

    /// Records a successful catch-up that began at `began` (`None`: the index may be off;
    /// the next caller must read). Call with the cursor locked.
    pub(super) fn caught_up_at(&self, began: Option<std::time::Instant>) {
        *self.caught_up.lock().expect("catch-up time poisoned") = began;
    }

    /// The database it lives in.
    pub(super) fn db(&self) -> &PostgresDatabase {
        &self.db
    }

    /// Locks the cursor (see [`SharedLog::cursor`]).
    pub(super) async fn cursor(&self) -> tokio::sync::MutexGuard<'_, Option<i64>> {
        self.cursor.lock().await
    }

    /// A pooled connection.
    pub(super) async fn client(&self) -> std::io::Result<deadpool_postgres::Object> {
        self.db.client().await.map_err(io)
    }

    /// Everything the log holds now (for operator tools).
    pub(super) async fn read_all(db: &PostgresDatabase) -> std::io::Result<Replayed> {
        let client = db.client().await.map_err(io)?;
        let (_, rows) = fetch(&client, None).await?;
        Ok(replay(rows))
    }

    /// What was appended after `cursor` (everything when `cursor` is `None` or the log was
    /// compacted past it); moves `cursor` to the newest record read.
    pub(super) async fn news(client: &impl GenericClient, cursor: &mut Option<i64>) -> std::io::Result<News> {
        if let Some(after) = *cursor {
            let (compacted_through, rows) = fetch(client, Some(after)).await?;
            if compacted_through <= after {
                if let Some((seq, _)) = rows.last() {
                    *cursor = Some(*seq);
                }
                return Ok(News::Since(rows.into_iter().map(|(_, r)| r).collect()));
            }
        }
        let (compacted_through, rows) = fetch(client, None).await?;
        *cursor = Some(rows.last().map_or(compacted_through, |(seq, _)| (*seq).max(compacted_through)));
        Ok(News::All(replay(rows)))
    }

    /// Begins a change: takes the cluster-wide lock for the rest of `tx`.
    pub(super) async fn lock(tx: &deadpool_postgres::Transaction<'_>) -> std::io::Result<()> {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await.map_err(io)?;
        Ok(())
    }

    /// Appends `records` in `tx` (which holds the lock), announces the change and compacts
    /// now and then; returns the sequence number of the last record.
    pub(super) async fn append(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        records: &[Record],
        live: usize,
    ) -> std::io::Result<i64> {
        let insert = tx
            .prepare_cached(
                "INSERT INTO grasp_purgatory_log (key, live, record) VALUES ($1, $2, $3) RETURNING seq",
            )
            .await
            .map_err(io)?;
        let mut last = 0;
        for record in records {
            let (key, keeps) = key(record);
            let json = serde_json::to_string(record).map_err(io)?;
            last = tx.query_one(&insert, &[&key, &keeps, &json]).await.map_err(io)?.get(0);
        }
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &self.db.node()]).await.map_err(io)?;
        use std::sync::atomic::Ordering;
        let appended = self.appended.fetch_add(records.len(), Ordering::Relaxed) + records.len();
        if appended > COMPACT_AFTER && appended > 2 * live {
            self.appended.store(0, Ordering::Relaxed);
            compact(tx, last).await?;
        }
        Ok(last)
    }
}

/// `compacted_through` and the records after `after` (all when `None`), in one snapshot.
async fn fetch(
    client: &impl GenericClient,
    after: Option<i64>,
) -> std::io::Result<(i64, Vec<(i64, Record)>)> {
    let rows = client
        .query(
            "SELECT m.compacted_through, l.seq, l.record FROM grasp_purgatory_meta m \
             LEFT JOIN grasp_purgatory_log l ON l.seq > $1 ORDER BY l.seq",
            &[&after.unwrap_or(-1)],
        )
        .await
        .map_err(io)?;
    let compacted_through = rows.first().map_or(0, |row| row.get(0));
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(seq) = row.get::<_, Option<i64>>(1) else { continue };
        let text: &str = row.get(2);
        match serde_json::from_str::<Record>(text) {
            Ok(record) => records.push((seq, record)),
            Err(e) => tracing::warn!(seq, error = %e, "skipping an unreadable purgatory record"),
        }
    }
    Ok((compacted_through, records))
}

fn replay(rows: Vec<(i64, Record)>) -> Replayed {
    let mut replayed = Replayed::default();
    for (_, record) in rows {
        super::journal::apply(&mut replayed, record);
    }
    replayed
}

/// Drops superseded and removal records up to `through` and says so in the meta row.
async fn compact(tx: &deadpool_postgres::Transaction<'_>, through: i64) -> std::io::Result<()> {
    let superseded = tx
        .execute(
            "DELETE FROM grasp_purgatory_log l USING grasp_purgatory_log newer \
             WHERE newer.key = l.key AND newer.seq > l.seq AND l.seq <= $1",
            &[&through],
        )
        .await
        .map_err(io)?;
    let removals = tx
        .execute("DELETE FROM grasp_purgatory_log WHERE NOT live AND seq <= $1", &[&through])
        .await
        .map_err(io)?;
    tx.execute("UPDATE grasp_purgatory_meta SET compacted_through = $1", &[&through]).await.map_err(io)?;
    tracing::debug!(superseded, removals, "compacted the shared purgatory log");
    Ok(())
}
