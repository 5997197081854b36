//! Saving one event: every check and every change in one transaction, under advisory locks
//! that serialise writers across processes and nodes.
//!
//! A save locks the event's id and, for a replaceable or addressable event, its address; a
//! NIP-09 deletion also locks every id and address it names. Locks are taken in ascending
//! key order, so two saves never wait on each other in a circle. Under the lock the
//! transaction sees every save committed before it, so "is a newer version stored?" and
//! "replace it" are one step on every node.

use std::collections::BTreeSet;

use deadpool_postgres::{ClientWrapper, Transaction};
use nostr::hashes::{sha256, Hash};
use nostr::{Event, EventId, JsonUtil, Kind, PublicKey};
use nostr_database::{RejectedReason, SaveEventStatus};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// Advisory lock key of a string: its SHA-256's first eight bytes. The same on every node
/// and build, as the lock must be. The store's locks and the cluster's
/// ([`crate::cluster::ClusterLocks`]) share it; their names never overlap.
pub(crate) fn lock_key(name: &str) -> i64 {
    let digest = sha256::Hash::hash(name.as_bytes()).to_byte_array();
    i64::from_be_bytes(digest[..8].try_into().expect("eight bytes"))
}

fn id_lock(id: &EventId) -> i64 {
    lock_key(&format!("grasp-event-id:{id}"))
}

fn address_lock(kind: Kind, author: &PublicKey, identifier: &str) -> i64 {
    lock_key(&format!("grasp-event-address:{}:{}:{identifier}", kind.as_u16(), author.to_hex()))
}

/// The `d` identifier that makes `event`'s address: `Some("")`-like for replaceable kinds
/// (none), the `d` tag for addressable ones; `None` when the event has no address.
fn address_of(event: &Event) -> Option<Option<&str>> {
    if event.kind.is_replaceable() {
        Some(None)
    } else if event.kind.is_addressable() {
        event.tags.identifier().map(Some)
    } else {
        None
    }
}

/// The identifier under which a coordinate deletion of `event`'s address is remembered:
/// `""` for replaceable kinds, the `d` tag (or `""`) for addressable ones.
fn deletable_address(event: &Event) -> Option<&str> {
    if event.kind.is_replaceable() {
        Some("")
    } else if event.kind.is_addressable() {
        Some(event.tags.identifier().unwrap_or(""))
    } else {
        None
    }
}

// Every statement here is prepared once per connection (deadpool's statement cache), so a
// save costs one round trip per statement, not two.

async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query_opt(&statement, params).await
}

async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query(&statement, params).await
}

async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, params).await
}

/// Saves `event` (already verified) with NIP-01 replacement and NIP-09 deletion.
/// A stored event is announced to the other nodes as saved by `node` ([`super::notify`]).
pub async fn save(
    client: &mut ClientWrapper,
    event: &Event,
    node: &str,
) -> Result<SaveEventStatus, tokio_postgres::Error> {
    if event.kind.is_ephemeral() {
        return Ok(SaveEventStatus::Rejected(RejectedReason::Ephemeral));
    }
    let tx = client.transaction().await?;
    lock(&tx, event).await?;
    let status = checked_save(&tx, event).await?;
    if status.is_success() {
        // Delivered to listeners when (and only if) the transaction commits.
        let payload = super::notify::payload(node, event);
        execute(&tx, "SELECT pg_notify($1, $2)", &[&super::notify::CHANNEL, &payload]).await?;
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(status)
}

/// Takes every advisory lock `event`'s save needs, in ascending order.
async fn lock(tx: &Transaction<'_>, event: &Event) -> Result<(), tokio_postgres::Error> {
    let mut keys = BTreeSet::from([id_lock(&event.id)]);
    if let Some(identifier) = address_of(event) {
        keys.insert(address_lock(event.kind, &event.pubkey, identifier.unwrap_or("")));
    }
    if event.kind == Kind::EventDeletion {
        keys.extend(event.tags.event_ids().map(id_lock));
        keys.extend(event.tags.coordinates().map(|c| address_lock(c.kind, &c.public_key, &c.identifier)));
    }
    for key in keys {
        execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&key]).await?;
    }
    Ok(())
}

async fn checked_save(tx: &Transaction<'_>, event: &Event) -> Result<SaveEventStatus, tokio_postgres::Error> {
    let id = event.id.as_bytes().as_slice();
    let author = event.pubkey.to_bytes();
    let author = author.as_slice();
    let kind = i32::from(event.kind.as_u16());
    let created_at = event.created_at.as_secs() as i64;
    if query_opt(tx, "SELECT 1 FROM events WHERE id = $1", &[&id]).await?.is_some() {
        return Ok(SaveEventStatus::Rejected(RejectedReason::Duplicate));
    }
    if query_opt(tx, "SELECT 1 FROM deleted_ids WHERE id = $1", &[&id]).await?.is_some() {
        return Ok(SaveEventStatus::Rejected(RejectedReason::Deleted));
    }
    let address = address_of(event);
    if let Some(identifier) = deletable_address(event) {
        let deleted = query_opt(
            tx,
            "SELECT until FROM deleted_coordinates WHERE pubkey = $1 AND kind = $2 AND identifier = $3",
            &[&author, &kind, &identifier],
        )
        .await?;
        if deleted.is_some_and(|row| created_at <= row.get::<_, i64>(0)) {
            return Ok(SaveEventStatus::Rejected(RejectedReason::Deleted));
        }
    }
    if let Some(identifier) = address {
        let stored = query(
            tx,
            "SELECT id, created_at FROM events \
                 WHERE pubkey = $1 AND kind = $2 AND identifier IS NOT DISTINCT FROM $3",
            &[&author, &kind, &identifier],
        )
        .await?;
        // NIP-01: the newer version stays; of two signed in the same second, the lower id.
        let newer_stored = stored.iter().any(|row| {
            let (stored_id, stored_at): (&[u8], i64) = (row.get(0), row.get(1));
            stored_at > created_at || (stored_at == created_at && stored_id < id)
        });
        if newer_stored {
            return Ok(SaveEventStatus::Rejected(RejectedReason::Replaced));
        }
        execute(
            tx,
            "DELETE FROM events WHERE pubkey = $1 AND kind = $2 AND identifier IS NOT DISTINCT FROM $3",
            &[&author, &kind, &identifier],
        )
        .await?;
    }
    if event.kind == Kind::EventDeletion && !apply_deletion(tx, event).await? {
        return Ok(SaveEventStatus::Rejected(RejectedReason::InvalidDelete));
    }
    insert(tx, event, address.flatten()).await?;
    Ok(SaveEventStatus::Success)
}

/// Applies a NIP-09 request: deletes (and remembers) the ids and coordinates it names.
/// False when it names another author's event or coordinate (nothing is applied then:
/// the caller rolls back).
async fn apply_deletion(tx: &Transaction<'_>, event: &Event) -> Result<bool, tokio_postgres::Error> {
    let author = event.pubkey.to_bytes();
    let author = author.as_slice();
    let created_at = event.created_at.as_secs() as i64;
    let mut targets: Vec<&[u8]> = Vec::new();
    for id in event.tags.event_ids() {
        let id = id.as_bytes().as_slice();
        if let Some(row) = query_opt(tx, "SELECT pubkey FROM events WHERE id = $1", &[&id]).await? {
            if row.get::<_, &[u8]>(0) != author {
                return Ok(false);
            }
            targets.push(id);
        }
    }
    if event.tags.coordinates().any(|c| c.public_key != event.pubkey) {
        return Ok(false);
    }
    for id in targets {
        execute(tx, "INSERT INTO deleted_ids (id) VALUES ($1) ON CONFLICT DO NOTHING", &[&id]).await?;
        execute(tx, "DELETE FROM events WHERE id = $1", &[&id]).await?;
    }
    for coordinate in event.tags.coordinates() {
        let kind = i32::from(coordinate.kind.as_u16());
        let identifier = coordinate.identifier.as_str();
        execute(
            tx,
            "INSERT INTO deleted_coordinates (pubkey, kind, identifier, until) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pubkey, kind, identifier) \
             DO UPDATE SET until = GREATEST(deleted_coordinates.until, EXCLUDED.until)",
            &[&author, &kind, &identifier, &created_at],
        )
        .await?;
        let stored_identifier = coordinate.kind.is_addressable().then_some(identifier);
        if coordinate.kind.is_replaceable() || coordinate.kind.is_addressable() {
            execute(
                tx,
                "DELETE FROM events WHERE pubkey = $1 AND kind = $2 \
                 AND identifier IS NOT DISTINCT FROM $3 AND created_at <= $4",
                &[&author, &kind, &stored_identifier, &created_at],
            )
            .await?;
        }
    }
    Ok(true)
}

/// Inserts the event row and its single-letter tag index rows.
async fn insert(
    tx: &Transaction<'_>,
    event: &Event,
    identifier: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let id = event.id.as_bytes().as_slice();
    let author = event.pubkey.to_bytes();
    execute(
        tx,
        "INSERT INTO events (id, pubkey, created_at, kind, identifier, content, json) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &id,
            &author.as_slice(),
            &(event.created_at.as_secs() as i64),
            &i32::from(event.kind.as_u16()),
            &identifier,
            &event.content,
            &event.as_json(),
        ],
    )
    .await?;
    let tags: BTreeSet<(String, String)> = event
        .tags
        .iter()
        .filter_map(|tag| Some((tag.single_letter_tag()?.as_char().to_string(), tag.content()?.to_owned())))
        .collect();
    if tags.is_empty() {
        return Ok(());
    }
    let (names, values): (Vec<String>, Vec<String>) = tags.into_iter().unzip();
    execute(
        tx,
        "INSERT INTO event_tags (event_id, name, value) \
         SELECT $1, n, v FROM UNNEST($2::text[], $3::text[]) AS t (n, v) ON CONFLICT DO NOTHING",
        &[&id, &names, &values],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("a"), lock_key("a"));
        assert_ne!(lock_key("a"), lock_key("b"));
        // SHA-256("a") starts ca978112ca1bbdca.
        assert_eq!(lock_key("a"), i64::from_be_bytes([0xca, 0x97, 0x81, 0x12, 0xca, 0x1b, 0xbd, 0xca]));
    }
}
