//! What purgatory holds and why, for operators (`grasp-server purgatory list`).

use std::path::Path;

use nostr::nips::nip19::ToBech32;
use serde::Serialize;

use super::{now_ms, HeldEvent, HeldKind, Placeholder, Purgatory, PurgatoryError};
use crate::hunt::status::{HuntStatus, TriedUrl};
use crate::nip34::{commit_tag, raw_commit_tag, RepoState};

/// One line of the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListingEntry {
    /// `announcement`, `state`, `pull_request`, `dependent` or `placeholder`.
    pub kind: String,
    /// The held event's id (for placeholders: the id in `refs/nostr/<id>`).
    pub event_id: String,
    /// Nostr event kind (absent for placeholders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_kind: Option<u16>,
    /// Repository identifier.
    pub identifier: String,
    /// Author npub (placeholders: the repository owner).
    pub author: String,
    /// When it arrived, ms since the Unix epoch.
    pub received_at: u64,
    /// When it expires, ms since the Unix epoch.
    pub expires_at: u64,
    /// Seconds left (0 when overdue).
    pub expires_in_secs: u64,
    /// What would release it.
    pub waiting_for: String,
    /// When the server next looks for the git data at other clone URLs (ms since the Unix
    /// epoch); absent when the repository is not queued for hunting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hunt_at: Option<u64>,
    /// Seconds until then (0 when due or running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hunt_in_secs: Option<u64>,
    /// Hunting attempts for this repository since its last new event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_attempts: Option<u32>,
    /// Clone URLs already tried for this repository, with their latest result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried_urls: Vec<TriedUrl>,
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(7)]
}

fn waiting_for(entry: &HeldEvent) -> String {
    match entry.kind {
        HeldKind::Announcement => "a push matching a maintainer's state for this repository".to_owned(),
        HeldKind::State => match RepoState::parse(&entry.event) {
            Ok(state) if !state.is_well_formed() => format!(
                "nothing that can arrive: {} not a full object id; expires unserved",
                state.malformed_refs.join(", ")
            ),
            Ok(state) if state.refs.is_empty() => {
                "nothing (empty state; released on the next git-data step)".to_owned()
            }
            Ok(state) => {
                let refs: Vec<String> =
                    state.refs.iter().map(|(name, oid)| format!("{name}={}", short(oid))).collect();
                format!("git objects for {}", refs.join(", "))
            }
            Err(_) => "git objects".to_owned(),
        },
        HeldKind::PullRequest => match (commit_tag(&entry.event), raw_commit_tag(&entry.event)) {
            (Some(c), _) => format!("commit {} at refs/nostr/{}", short(&c), entry.event.id.to_hex()),
            (None, Some(raw)) => {
                format!("nothing that can arrive: 'c' tag {raw:?} is not a full commit id; expires unserved")
            }
            (None, None) => "its commit".to_owned(),
        },
        HeldKind::Dependent => match entry.waits_for {
            Some(id) => format!("release of held event {}", id.to_hex()),
            None => "release of the event it references".to_owned(),
        },
    }
}

/// What purgatory in `relay_data_path` holds now, with the hunting status beside each
/// entry: the journal and the status file as the running server wrote them (safe while it
/// runs; without a status file, nothing was hunted yet).
pub fn read(relay_data_path: &Path) -> Result<Vec<ListingEntry>, PurgatoryError> {
    let (held, placeholders) = Purgatory::read(&Purgatory::directory(relay_data_path))?;
    let hunt = HuntStatus::read(&HuntStatus::path(relay_data_path)).unwrap_or_default();
    Ok(listing(&held, &placeholders, &hunt))
}

/// What the purgatory `config` describes holds now: the journal in its data path, or the
/// log shared in PostgreSQL (read without taking part in changes; safe while servers run).
/// The error names where it looked.
pub async fn read_configured(config: &crate::config::Config) -> Result<Vec<ListingEntry>, String> {
    let Some((url, _)) = config.postgres() else {
        let dir = Purgatory::directory(&config.relay_data_path);
        return read(&config.relay_data_path)
            .map_err(|e| format!("cannot read purgatory in {}: {e}", dir.display()));
    };
    let db = crate::store::postgres::PostgresDatabase::connect(url, 1).await.map_err(|e| e.to_string())?;
    let (held, placeholders) = Purgatory::read_shared(&db)
        .await
        .map_err(|e| format!("cannot read purgatory in {}: {e}", db.target()))?;
    let hunt = HuntStatus::read(&HuntStatus::path(&config.relay_data_path)).unwrap_or_default();
    Ok(listing(&held, &placeholders, &hunt))
}

/// Builds the listing of `held` and `placeholders`, soonest deadline first, with the
/// hunting status of each held event's repository (dependents follow the event they wait
/// for, so they show none).
pub fn listing(held: &[HeldEvent], placeholders: &[Placeholder], hunt: &HuntStatus) -> Vec<ListingEntry> {
    let now = now_ms();
    let mut out: Vec<ListingEntry> = held
        .iter()
        .map(|e| {
            let hunting = hunt.identifiers.get(&e.identifier).filter(|_| e.kind != HeldKind::Dependent);
            (e, hunting)
        })
        .map(|(e, hunting)| ListingEntry {
            kind: e.kind.as_str().to_owned(),
            event_id: e.event.id.to_hex(),
            event_kind: Some(e.event.kind.as_u16()),
            identifier: e.identifier.clone(),
            author: e.event.pubkey.to_bech32().unwrap_or_default(),
            received_at: e.received_at,
            expires_at: e.expires_at,
            expires_in_secs: e.expires_at.saturating_sub(now) / 1000,
            waiting_for: waiting_for(e),
            next_hunt_at: hunting.map(|h| h.next_attempt),
            next_hunt_in_secs: hunting.map(|h| {
                if h.running {
                    0
                } else {
                    h.next_attempt.saturating_sub(now) / 1000
                }
            }),
            hunt_attempts: hunting.map(|h| h.attempts),
            tried_urls: hunting.map(|h| h.tried.clone()).unwrap_or_default(),
        })
        .chain(placeholders.iter().map(|p| ListingEntry {
            kind: "placeholder".to_owned(),
            event_id: p.event_id.to_hex(),
            event_kind: None,
            identifier: p.identifier.clone(),
            author: p.owner.to_bech32().unwrap_or_default(),
            received_at: p.created_at,
            expires_at: p.expires_at,
            expires_in_secs: p.expires_at.saturating_sub(now) / 1000,
            waiting_for: format!(
                "a pull request event with this id and 'c' = {} (refs/nostr/{} in {} is hidden until then)",
                short(&p.commit),
                p.event_id.to_hex(),
                p.repo().map(|r| r.to_string()).unwrap_or_else(|| p.identifier.clone()),
            ),
            next_hunt_at: None,
            next_hunt_in_secs: None,
            hunt_attempts: None,
            tried_urls: Vec::new(),
        }))
        .collect();
    out.sort_by_key(|e| e.expires_at);
    out
}

/// The listing as an aligned text table.
pub fn render_table(entries: &[ListingEntry]) -> String {
    if entries.is_empty() {
        return "purgatory is empty\n".to_owned();
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{:<13} {:<16} {:<20} {:>9} {:>9}  {}\n",
        "KIND", "EVENT", "REPOSITORY", "EXPIRES", "NEXT HUNT", "WAITING FOR"
    ));
    for e in entries {
        let repo: String = e.identifier.chars().take(20).collect();
        let hunt = e.next_hunt_in_secs.map_or("-".to_owned(), |s| format!("{s}s"));
        out.push_str(&format!(
            "{:<13} {:<16} {:<20} {:>8}s {:>9}  {}\n",
            e.kind,
            &e.event_id[..16],
            repo,
            e.expires_in_secs,
            hunt,
            e.waiting_for
        ));
        for tried in &e.tried_urls {
            out.push_str(&format!("{:>14}tried {}: {}\n", "", tried.url, tried.result));
        }
    }
    out
}
