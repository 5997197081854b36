//! Purgatory: events accepted with `OK true` but not served until their git data arrives,
//! and git data (pull request refs) that arrived before its event.
//!
//! - **Held events**: new announcements, states, pull requests and pull request updates
//!   whose git data is not here yet, plus events that only relate to a held repository
//!   ("dependents", released with it). They are invisible to REQ, COUNT and negentropy and
//!   are never broadcast until released.
//! - **Placeholders**: a `refs/nostr/<id>` push for an event we do not know yet.
//!
//! Everything has a wall-clock deadline. Entries are indexed in memory and written to an
//! append-only journal before a change is acknowledged, so a crash loses nothing and
//! deadlines survive restarts. Matching against git data is late-bound: held states are
//! compared with the refs at push time, never pre-computed.

pub mod bounds;
pub mod entries;
mod journal;
pub mod listing;
mod shared_log;

pub use entries::{
    now_ms, HeldEvent, HeldKind, HoldOutcome, Placeholder, PurgatoryCounts, PurgatoryError, PurgatoryTimers,
};

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr::{Event, EventId};

use crate::git::RepoRef;
use crate::nip34::RepoState;
use crate::store::postgres::PostgresDatabase;

use bounds::{CapExceeded, HeldCaps, HeldUsage, PlaceholderUsage};
use entries::held_bytes;
use journal::{Journal, Record};

/// In-memory indexes. Lookups by (identifier, kind) touch only that kind, so thousands of
/// held pull requests do not slow down looking at a repository's states; held states are
/// parsed once; `deadlines` orders everything by expiry so the sweeper finds the next
/// deadline and the expired entries without scanning.
#[derive(Debug, Default)]
struct Index {
    held: HashMap<EventId, HeldEvent>,
    by_identifier: HashMap<(String, HeldKind), BTreeSet<EventId>>,
    /// Parsed held states, shared with readers.
    states: HashMap<EventId, Arc<RepoState>>,
    counts: HashMap<HeldKind, usize>,
    /// Parent id -> held events waiting for it.
    dependents: HashMap<EventId, BTreeSet<EventId>>,
    placeholders: HashMap<EventId, Placeholder>,
    /// (deadline, is placeholder, id)
    deadlines: BTreeSet<(u64, bool, EventId)>,
    /// Bytes each held event counts as.
    sizes: HashMap<EventId, u64>,
    /// What is held, per client, author, identifier and in total.
    held_usage: HeldUsage,
    /// Placeholders per repository and per client.
    placeholder_usage: PlaceholderUsage,
}

impl Index {
    fn from_replayed(replayed: journal::Replayed) -> Self {
        let mut index = Index::default();
        for entry in replayed.held.into_values() {
            index.insert(entry);
        }
        for placeholder in replayed.placeholders.into_values() {
            index.insert_placeholder(placeholder);
        }
        index
    }

    fn insert(&mut self, entry: HeldEvent) {
        let id = entry.event.id;
        if let Some(old) = self.remove(&id) {
            self.deadlines.remove(&(old.expires_at, false, id));
        }
        self.by_identifier.entry((entry.identifier.clone(), entry.kind)).or_default().insert(id);
        self.deadlines.insert((entry.expires_at, false, id));
        let bytes = held_bytes(&entry.event);
        self.held_usage.add(&entry.keys(), bytes);
        self.sizes.insert(id, bytes);
        *self.counts.entry(entry.kind).or_default() += 1;
        if let Some(parent) = entry.waits_for {
            self.dependents.entry(parent).or_default().insert(id);
        }
        if entry.kind == HeldKind::State {
            if let Ok(state) = RepoState::parse(&entry.event) {
                self.states.insert(id, Arc::new(state));
            }
        }
        self.held.insert(id, entry);
    }

    fn remove(&mut self, id: &EventId) -> Option<HeldEvent> {
        let entry = self.held.remove(id)?;
        self.deadlines.remove(&(entry.expires_at, false, *id));
        let bytes = self.sizes.remove(id).unwrap_or_default();
        self.held_usage.sub(&entry.keys(), bytes);
        self.states.remove(id);
        if let Some(parent) = entry.waits_for {
            if let Some(children) = self.dependents.get_mut(&parent) {
                children.remove(id);
                if children.is_empty() {
                    self.dependents.remove(&parent);
                }
            }
        }
        if let Some(n) = self.counts.get_mut(&entry.kind) {
            *n = n.saturating_sub(1);
        }
        let key = (entry.identifier.clone(), entry.kind);
        if let Some(ids) = self.by_identifier.get_mut(&key) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_identifier.remove(&key);
            }
        }
        Some(entry)
    }

    fn ids(&self, identifier: &str, kind: HeldKind) -> impl Iterator<Item = &EventId> {
        self.by_identifier.get(&(identifier.to_owned(), kind)).into_iter().flatten()
    }

    fn insert_placeholder(&mut self, placeholder: Placeholder) {
        self.remove_placeholder(&placeholder.event_id);
        self.deadlines.insert((placeholder.expires_at, true, placeholder.event_id));
        self.placeholder_usage.add(placeholder.repo(), placeholder.client);
        self.placeholders.insert(placeholder.event_id, placeholder);
    }

    fn remove_placeholder(&mut self, id: &EventId) -> Option<Placeholder> {
        let placeholder = self.placeholders.remove(id)?;
        self.deadlines.remove(&(placeholder.expires_at, true, *id));
        self.placeholder_usage.sub(placeholder.repo(), placeholder.client);
        Some(placeholder)
    }

    /// Applies a record another node wrote.
    fn apply(&mut self, record: Record) {
        match record {
            Record::Hold { entry } => self.insert(*entry),
            Record::Drop { id } => {
                self.remove(&id);
            }
            Record::Placeholder { placeholder } => self.insert_placeholder(placeholder),
            Record::DropPlaceholder { id } => {
                self.remove_placeholder(&id);
            }
        }
    }

    /// Applies what reading the shared log brought; true when anything changed.
    fn catch_up(&mut self, news: shared_log::News) -> bool {
        match news {
            shared_log::News::Since(records) if records.is_empty() => false,
            shared_log::News::Since(records) => {
                records.into_iter().for_each(|r| self.apply(r));
                true
            }
            shared_log::News::All(replayed) => {
                *self = Index::from_replayed(replayed);
                true
            }
        }
    }
}

/// The purgatory of one server. Reads are in memory; changes are journaled first.
///
/// ```
/// # tokio_test::block_on(async {
/// use grasp_lib::purgatory::{HeldKind, HoldOutcome, Purgatory, PurgatoryTimers};
/// use nostr::{EventBuilder, Keys, Kind, Tag};
///
/// let dir = tempfile::tempdir().unwrap();
/// let purgatory = Purgatory::open(dir.path(), PurgatoryTimers::default()).unwrap();
/// let tags = [Tag::parse(["d", "repo"]).unwrap()];
/// let state = EventBuilder::new(Kind::Custom(30618), "").tags(tags).sign_with_keys(&Keys::generate()).unwrap();
///
/// // Held until its git data arrives (or it expires); durable across restarts.
/// let entry = purgatory.entry(state.clone(), HeldKind::State, "repo");
/// assert!(matches!(purgatory.hold(entry).await.unwrap(), HoldOutcome::Held));
/// drop(purgatory);
/// let reopened = Purgatory::open(dir.path(), PurgatoryTimers::default()).unwrap();
/// assert!(reopened.contains(&state.id));
/// assert_eq!(reopened.held_for("repo", HeldKind::State).len(), 1);
/// # });
/// ```
#[derive(Debug)]
pub struct Purgatory {
    shared: Arc<Shared>,
    timers: PurgatoryTimers,
    caps: HeldCaps,
    changed: tokio::sync::Notify,
}

#[derive(Debug)]
struct Shared {
    index: Mutex<Index>,
    /// Where changes are made durable: a journal file, a log in PostgreSQL shared with
    /// other nodes, or nowhere (memory).
    journal: Option<Mutex<Journal>>,
    log: Option<shared_log::SharedLog>,
}

impl Shared {
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("purgatory index poisoned")
    }
}

impl Purgatory {
    /// A purgatory that forgets everything on exit (memory store, tests).
    pub fn in_memory(timers: PurgatoryTimers) -> Self {
        let shared = Arc::new(Shared { index: Mutex::default(), journal: None, log: None });
        Self { shared, timers, caps: HeldCaps::default(), changed: tokio::sync::Notify::new() }
    }

    /// A durable purgatory journaled in `dir`, with everything it held before.
    pub fn open(dir: &Path, timers: PurgatoryTimers) -> Result<Self, PurgatoryError> {
        let (journal, replayed) = Journal::open(dir)?;
        if replayed.skipped > 0 {
            tracing::warn!(skipped = replayed.skipped, "purgatory journal had unreadable lines (torn write)");
        }
        let index = Index::from_replayed(replayed);
        tracing::info!(held = index.held.len(), placeholders = index.placeholders.len(), "purgatory loaded");
        let shared =
            Arc::new(Shared { index: Mutex::new(index), journal: Some(Mutex::new(journal)), log: None });
        Ok(Self { shared, timers, caps: HeldCaps::default(), changed: tokio::sync::Notify::new() })
    }

    /// The purgatory every node sharing `db` shares (see [`shared_log`]), with what it holds.
    pub async fn shared(db: PostgresDatabase, timers: PurgatoryTimers) -> Result<Self, PurgatoryError> {
        let log = shared_log::SharedLog::new(db);
        let shared = Arc::new(Shared { index: Mutex::default(), journal: None, log: Some(log) });
        let purgatory =
            Self { shared, timers, caps: HeldCaps::default(), changed: tokio::sync::Notify::new() };
        purgatory.refresh().await?;
        let index = purgatory.index();
        tracing::info!(
            held = index.held.len(),
            placeholders = index.placeholders.len(),
            "shared purgatory loaded"
        );
        drop(index);
        Ok(purgatory)
    }

    /// Keeps a [shared](Purgatory::shared) purgatory current: catches up whenever another
    /// node announces a change, and every `every` in case an announcement was missed.
    pub async fn follow_other_nodes(self: Arc<Self>, every: Duration) {
        let Some(log) = &self.shared.log else { return };
        let (db, own) = (log.db().clone(), log.db().node().to_owned());
        let notified = self.clone();
        crate::store::postgres::listen::listen(db, shared_log::CHANNEL, move |node| {
            let (purgatory, own) = (notified.clone(), own.clone());
            async move {
                if node != own {
                    if let Err(e) = purgatory.refresh().await {
                        tracing::warn!(error = %e, "catching up with the shared purgatory failed");
                    }
                }
            }
        })
        .await;
        let weak = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(purgatory) = weak.upgrade() else { return };
                if let Err(e) = purgatory.refresh().await {
                    tracing::warn!(error = %e, "catching up with the shared purgatory failed");
                }
            }
        });
    }

    /// Catches up with changes other nodes made to a [shared](Purgatory::shared) purgatory
    /// (nothing to do for one in a file or in memory). Decisions that must see what every
    /// node holds call it first.
    pub async fn refresh(&self) -> Result<(), PurgatoryError> {
        let Some(log) = &self.shared.log else { return Ok(()) };
        let asked = std::time::Instant::now();
        let mut cursor = log.cursor().await;
        // Concurrent callers share one catch-up: one that began while they waited covers them.
        if log.caught_up_since(asked) {
            return Ok(());
        }
        let began = std::time::Instant::now();
        let client = log.client().await?;
        let news = shared_log::SharedLog::news(&client, &mut cursor).await?;
        log.caught_up_at(Some(began));
        if self.index().catch_up(news) {
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// [`Purgatory::change`] for a shared purgatory: in one transaction under the
    /// cluster-wide lock, catch up, decide, append.
    async fn change_shared<T, F>(&self, log: &shared_log::SharedLog, change: F) -> Result<T, PurgatoryError>
    where
        F: FnOnce(&mut Index) -> (T, Vec<Record>),
    {
        let mut cursor = log.cursor().await;
        let mut client = log.client().await?;
        let result = async {
            let tx = client.transaction().await.map_err(std::io::Error::other)?;
            shared_log::SharedLog::lock(&tx).await?;
            let began = std::time::Instant::now();
            let news = shared_log::SharedLog::news(&tx, &mut cursor).await?;
            log.caught_up_at(Some(began));
            self.index().catch_up(news);
            let (out, records) = change(&mut self.index());
            if !records.is_empty() {
                let live = {
                    let index = self.index();
                    index.held.len() + index.placeholders.len()
                };
                let last = log.append(&tx, &records, live).await?;
                tx.commit().await.map_err(std::io::Error::other)?;
                *cursor = Some(last);
            }
            Ok::<T, std::io::Error>(out)
        }
        .await;
        if result.is_err() {
            // The index may hold a change that was never committed: rebuild it next time.
            *cursor = None;
            log.caught_up_at(None);
            if let Ok(news) = shared_log::SharedLog::news(&client, &mut cursor).await {
                self.index().catch_up(news);
            }
        }
        Ok(result?)
    }

    /// The same purgatory with these caps on what it holds (default: [`HeldCaps::default`]).
    /// Entries held before (replayed from the journal) stay, whatever the caps.
    pub fn with_caps(mut self, caps: HeldCaps) -> Self {
        self.caps = caps;
        self
    }

    /// The caps on held events.
    pub fn caps(&self) -> HeldCaps {
        self.caps
    }

    /// Where the journal of a store in `relay_data_path` lives.
    pub fn directory(relay_data_path: &Path) -> PathBuf {
        relay_data_path.join("purgatory")
    }

    /// Reads what the purgatory shared in `db` holds (operator tools; safe while servers run).
    pub async fn read_shared(
        db: &PostgresDatabase,
    ) -> Result<(Vec<HeldEvent>, Vec<Placeholder>), PurgatoryError> {
        let replayed = shared_log::SharedLog::read_all(db).await?;
        Ok((replayed.held.into_values().collect(), replayed.placeholders.into_values().collect()))
    }

    /// Reads what a journal directory holds, without opening it for writing (operator tools;
    /// safe while a server runs).
    pub fn read(dir: &Path) -> Result<(Vec<HeldEvent>, Vec<Placeholder>), PurgatoryError> {
        let replayed = Journal::replay(&dir.join("purgatory.jsonl"))?;
        Ok((replayed.held.into_values().collect(), replayed.placeholders.into_values().collect()))
    }

    /// The configured timers.
    pub fn timers(&self) -> PurgatoryTimers {
        self.timers
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.shared.index()
    }

    /// Applies `change` to the index and journals the records it returns, in one order for
    /// both. The journal write (with its fsync) runs on the blocking pool; the change is
    /// acknowledged only once it is on disk.
    async fn change<T, F>(&self, change: F) -> Result<T, PurgatoryError>
    where
        F: FnOnce(&mut Index) -> (T, Vec<Record>) + Send + 'static,
        T: Send + 'static,
    {
        if let Some(log) = &self.shared.log {
            let out = self.change_shared(log, change).await;
            self.changed.notify_waiters();
            return out;
        }
        let shared = self.shared.clone();
        let apply = move || -> Result<T, PurgatoryError> {
            let Some(journal) = &shared.journal else {
                return Ok(change(&mut shared.index()).0);
            };
            let mut journal = journal.lock().expect("purgatory journal poisoned");
            let (out, records) = change(&mut shared.index());
            if let Err(e) = journal.append(&records) {
                // Not durable, so not done: put the index back to what the journal holds.
                match Journal::replay(journal.path()) {
                    Ok(replayed) => *shared.index() = Index::from_replayed(replayed),
                    Err(reread) => tracing::warn!(error = %reread, "could not re-read the purgatory journal"),
                }
                return Err(e.into());
            }
            let index = shared.index();
            if journal.wants_compaction(index.held.len() + index.placeholders.len()) {
                if let Err(e) = journal.compact(&index.held, &index.placeholders) {
                    tracing::warn!(error = %e, "purgatory journal compaction failed");
                }
            }
            Ok(out)
        };
        let out = if self.shared.journal.is_some() {
            tokio::task::spawn_blocking(apply).await.map_err(std::io::Error::other)??
        } else {
            apply()?
        };
        self.changed.notify_waiters();
        Ok(out)
    }

    /// Holds `entry` unless an event with the same id is held already or a cap is full.
    pub async fn hold(&self, entry: HeldEvent) -> Result<HoldOutcome, PurgatoryError> {
        let caps = self.caps;
        self.change(move |index| {
            if index.held.contains_key(&entry.event.id) {
                return (HoldOutcome::Duplicate, Vec::new());
            }
            if let Some(full) = index.held_usage.check(&caps, &entry.keys(), held_bytes(&entry.event)) {
                return (HoldOutcome::Refused(full), Vec::new());
            }
            let record = Record::Hold { entry: Box::new(entry.clone()) };
            index.insert(entry);
            (HoldOutcome::Held, vec![record])
        })
        .await
    }

    /// The cap that would refuse `entry` now, if any (a check before costly work; [`Purgatory::hold`]
    /// checks again).
    pub fn cap_refusing(&self, entry: &HeldEvent) -> Option<CapExceeded> {
        self.index().held_usage.check(&self.caps, &entry.keys(), held_bytes(&entry.event))
    }

    /// Removes held events; returns those that were held.
    pub async fn remove(&self, ids: &[EventId]) -> Result<Vec<HeldEvent>, PurgatoryError> {
        let ids = ids.to_vec();
        self.change(move |index| {
            let removed: Vec<HeldEvent> = ids.iter().filter_map(|id| index.remove(id)).collect();
            let records = removed.iter().map(|e| Record::Drop { id: e.event.id }).collect();
            (removed, records)
        })
        .await
    }

    /// Makes sure each of `ids` has at least `min_remaining` left before it expires.
    pub async fn extend(&self, ids: &[EventId], min_remaining: Duration) -> Result<(), PurgatoryError> {
        let ids = ids.to_vec();
        let until = now_ms() + min_remaining.as_millis() as u64;
        self.change(move |index| {
            let mut records = Vec::new();
            for id in &ids {
                if let Some(mut entry) = index.held.get(id).cloned() {
                    if entry.expires_at < until {
                        entry.expires_at = until;
                        records.push(Record::Hold { entry: Box::new(entry.clone()) });
                        index.insert(entry);
                    }
                }
            }
            ((), records)
        })
        .await
    }

    /// Records a git-first `refs/nostr/<id>` push. A second push for the same id replaces
    /// the commit but keeps the first one's deadline: pushing again renews nothing.
    pub async fn add_placeholder(&self, placeholder: Placeholder) -> Result<(), PurgatoryError> {
        self.add_placeholders(vec![placeholder]).await
    }

    /// [`Purgatory::add_placeholder`] for several, journaled at once.
    pub async fn add_placeholders(&self, placeholders: Vec<Placeholder>) -> Result<(), PurgatoryError> {
        self.change(move |index| {
            let mut records = Vec::with_capacity(placeholders.len());
            for mut placeholder in placeholders {
                if let Some(old) = index.placeholders.get(&placeholder.event_id) {
                    placeholder.created_at = old.created_at;
                    placeholder.expires_at = old.expires_at;
                }
                records.push(Record::Placeholder { placeholder: placeholder.clone() });
                index.insert_placeholder(placeholder);
            }
            ((), records)
        })
        .await
    }

    /// Removes placeholders; returns those that existed.
    pub async fn remove_placeholders(&self, ids: &[EventId]) -> Result<Vec<Placeholder>, PurgatoryError> {
        let ids = ids.to_vec();
        self.change(move |index| {
            let removed: Vec<Placeholder> =
                ids.iter().filter_map(|id| index.remove_placeholder(id)).collect();
            let records = removed.iter().map(|p| Record::DropPlaceholder { id: p.event_id }).collect();
            (removed, records)
        })
        .await
    }

    /// Takes out everything whose deadline is at or before `now`.
    pub async fn take_expired(&self, now: u64) -> Result<(Vec<HeldEvent>, Vec<Placeholder>), PurgatoryError> {
        self.change(move |index| {
            let due: Vec<(u64, bool, EventId)> =
                index.deadlines.iter().take_while(|(at, _, _)| *at <= now).copied().collect();
            let held: Vec<HeldEvent> =
                due.iter().filter(|(_, p, _)| !p).filter_map(|(_, _, id)| index.remove(id)).collect();
            let placeholders: Vec<Placeholder> = due
                .iter()
                .filter(|(_, p, _)| *p)
                .filter_map(|(_, _, id)| index.remove_placeholder(id))
                .collect();
            let records = held
                .iter()
                .map(|e| Record::Drop { id: e.event.id })
                .chain(placeholders.iter().map(|p| Record::DropPlaceholder { id: p.event_id }))
                .collect();
            ((held, placeholders), records)
        })
        .await
    }

    /// A held event by id.
    pub fn get(&self, id: &EventId) -> Option<HeldEvent> {
        self.index().held.get(id).cloned()
    }

    /// True when the event is held.
    pub fn contains(&self, id: &EventId) -> bool {
        self.index().held.contains_key(id)
    }

    /// Held events of one kind for a repository identifier.
    pub fn held_for(&self, identifier: &str, kind: HeldKind) -> Vec<HeldEvent> {
        let index = self.index();
        index.ids(identifier, kind).filter_map(|id| index.held.get(id).cloned()).collect()
    }

    /// Held events of one kind, for every identifier.
    pub fn held_of_kind(&self, kind: HeldKind) -> Vec<HeldEvent> {
        self.index().held.values().filter(|e| e.kind == kind).cloned().collect()
    }

    /// `(id, created_at)` of held events matching `filter` (relay sync counts them as
    /// present, so it does not fetch them again).
    pub fn held_items_matching(&self, filter: &nostr::Filter) -> Vec<(EventId, nostr::Timestamp)> {
        let options = nostr::filter::MatchEventOptions::new();
        self.index()
            .held
            .values()
            .filter(|e| filter.match_event(&e.event, options))
            .map(|e| (e.event.id, e.event.created_at))
            .collect()
    }

    /// Held states of a repository identifier, parsed (cheap: shared, parsed once).
    pub fn held_states(&self, identifier: &str) -> Vec<Arc<RepoState>> {
        let index = self.index();
        index.ids(identifier, HeldKind::State).filter_map(|id| index.states.get(id).cloned()).collect()
    }

    /// Every held event (to resume work on them after a restart).
    pub fn all_held(&self) -> Vec<HeldEvent> {
        self.index().held.values().cloned().collect()
    }

    /// Held events waiting for `id` to be released.
    pub fn dependents_of(&self, id: &EventId) -> Vec<HeldEvent> {
        let index = self.index();
        index.dependents.get(id).into_iter().flatten().filter_map(|d| index.held.get(d).cloned()).collect()
    }

    /// The placeholder for `id`, if any.
    pub fn placeholder(&self, id: &EventId) -> Option<Placeholder> {
        self.index().placeholders.get(id).cloned()
    }

    /// Placeholders in one repository.
    pub fn placeholders_in(&self, repo: &RepoRef) -> Vec<Placeholder> {
        self.index()
            .placeholders
            .values()
            .filter(|p| {
                p.owner == repo.owner
                    && p.identifier == repo.identifier.as_str()
                    && p.namespace == repo.namespace
            })
            .cloned()
            .collect()
    }

    /// How many placeholders wait in `repo`.
    pub fn placeholder_count_in(&self, repo: &RepoRef) -> usize {
        self.index().placeholder_usage.in_repository(repo)
    }

    /// How many placeholders the client address group `client` has waiting.
    pub fn placeholder_count_of(&self, client: &IpAddr) -> usize {
        self.index().placeholder_usage.of_client(client)
    }

    /// Every placeholder.
    pub fn placeholders(&self) -> Vec<Placeholder> {
        self.index().placeholders.values().cloned().collect()
    }

    /// Counts by kind.
    pub fn counts(&self) -> PurgatoryCounts {
        let index = self.index();
        let held =
            HeldKind::ALL.iter().map(|k| (k.as_str(), index.counts.get(k).copied().unwrap_or(0))).collect();
        PurgatoryCounts { held, placeholders: index.placeholders.len() }
    }

    /// The earliest deadline of anything in purgatory.
    pub fn next_deadline(&self) -> Option<u64> {
        self.index().deadlines.first().map(|(at, _, _)| *at)
    }

    /// Waits until something changes (or `timeout` passes): lets the expiry sweeper sleep
    /// until the next deadline yet notice new, earlier ones.
    pub async fn changed_or(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }

    /// A new held entry for `event` with the default deadline from now.
    pub fn entry(&self, event: Event, kind: HeldKind, identifier: &str) -> HeldEvent {
        let now = now_ms();
        HeldEvent {
            event,
            kind,
            identifier: identifier.to_owned(),
            received_at: now,
            expires_at: now + self.timers.expiry.as_millis() as u64,
            waits_for: None,
            created_repo: false,
            client: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys};

    use super::*;
    use crate::git::Namespace;
    use crate::nip34::RepoIdentifier;

    fn event() -> Event {
        EventBuilder::text_note("x").sign_with_keys(&Keys::generate()).unwrap()
    }

    #[tokio::test]
    async fn survives_reopen_with_deadlines_and_drops() {
        let dir = tempfile::tempdir().unwrap();
        let timers = PurgatoryTimers::default();
        let (a, b) = (event(), event());
        {
            let p = Purgatory::open(dir.path(), timers).unwrap();
            let mut ea = p.entry(a.clone(), HeldKind::State, "r");
            ea.expires_at = 1234;
            assert_eq!(p.hold(ea).await.unwrap(), HoldOutcome::Held);
            assert_eq!(
                p.hold(p.entry(a.clone(), HeldKind::State, "r")).await.unwrap(),
                HoldOutcome::Duplicate
            );
            p.hold(p.entry(b.clone(), HeldKind::PullRequest, "r")).await.unwrap();
            p.remove(&[b.id]).await.unwrap();
            p.add_placeholder(Placeholder {
                event_id: b.id,
                commit: "c".repeat(40),
                owner: a.pubkey,
                identifier: "r".into(),
                namespace: Namespace::Prs,
                created_at: 1,
                expires_at: 2,
                client: None,
            })
            .await
            .unwrap();
        }
        let p = Purgatory::open(dir.path(), timers).unwrap();
        assert_eq!(p.get(&a.id).unwrap().expires_at, 1234);
        assert!(!p.contains(&b.id));
        assert_eq!(p.placeholder(&b.id).unwrap().commit, "c".repeat(40));
        let prs = RepoRef::prs(a.pubkey, RepoIdentifier::new("r").unwrap());
        assert_eq!(p.placeholders_in(&prs).len(), 1, "the namespace survives the journal");
        assert!(p.placeholders_in(&RepoRef::new(a.pubkey, RepoIdentifier::new("r").unwrap())).is_empty());
        assert_eq!(p.held_for("r", HeldKind::State).len(), 1);
        assert_eq!(p.held_for("r", HeldKind::PullRequest).len(), 0);
        assert_eq!(p.next_deadline(), Some(2));
        let (held, placeholders) = p.take_expired(2000).await.unwrap();
        assert_eq!((held.len(), placeholders.len()), (1, 1));
        drop(p);
        let p = Purgatory::open(dir.path(), timers).unwrap();
        assert_eq!(p.counts().held["state"], 0);
        assert!(p.placeholders().is_empty());
    }

    #[tokio::test]
    async fn a_full_cap_refuses_and_a_release_or_expiry_makes_room() {
        use bounds::{Cap, CapKind};
        let roomy = Cap { events: 1000, bytes: 1 << 30 };
        let caps = HeldCaps {
            per_client: Cap { events: 2, bytes: 1 << 30 },
            ..HeldCaps { per_client: roomy, per_pubkey: roomy, per_identifier: roomy, total: roomy }
        };
        let p = Purgatory::in_memory(PurgatoryTimers::default()).with_caps(caps);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let from = |client: Option<IpAddr>| {
            let mut entry = p.entry(event(), HeldKind::State, "r");
            entry.client = client;
            entry
        };
        let first = from(Some(client));
        let first_id = first.event.id;
        assert_eq!(p.hold(first).await.unwrap(), HoldOutcome::Held);
        assert_eq!(p.hold(from(Some(client))).await.unwrap(), HoldOutcome::Held);
        let refused = p.hold(from(Some(client))).await.unwrap();
        assert!(matches!(refused, HoldOutcome::Refused(full) if full.kind == CapKind::Client), "{refused:?}");
        assert_eq!(p.hold(from(None)).await.unwrap(), HoldOutcome::Held, "a synced event has no address");
        p.remove(&[first_id]).await.unwrap();
        assert_eq!(p.hold(from(Some(client))).await.unwrap(), HoldOutcome::Held, "released: room again");
        // Bytes count too: a total cap smaller than one event refuses it.
        let tiny = Purgatory::in_memory(PurgatoryTimers::default())
            .with_caps(HeldCaps { total: Cap { events: 10, bytes: 100 }, ..caps });
        let refused = tiny.hold(tiny.entry(event(), HeldKind::State, "r")).await.unwrap();
        assert!(
            matches!(refused, HoldOutcome::Refused(full) if full.kind == CapKind::Total && full.is_server_wide())
        );
    }

    #[tokio::test]
    async fn pushing_a_placeholder_again_keeps_its_deadline() {
        let p = Purgatory::in_memory(PurgatoryTimers::default());
        let id = event().id;
        let owner = Keys::generate().public_key();
        let placeholder = |commit: &str, expires_at| Placeholder {
            event_id: id,
            commit: commit.into(),
            owner,
            identifier: "r".into(),
            namespace: Namespace::Announced,
            created_at: 1,
            expires_at,
            client: Some("192.0.2.1".parse().unwrap()),
        };
        p.add_placeholder(placeholder(&"a".repeat(40), 1000)).await.unwrap();
        p.add_placeholder(placeholder(&"b".repeat(40), 999_999)).await.unwrap();
        let kept = p.placeholder(&id).unwrap();
        assert_eq!(
            (kept.commit, kept.expires_at),
            ("b".repeat(40), 1000),
            "the new commit, the old deadline"
        );
        let repo = RepoRef::new(owner, RepoIdentifier::new("r").unwrap());
        assert_eq!(p.placeholder_count_in(&repo), 1);
        assert_eq!(p.placeholder_count_of(&"192.0.2.1".parse().unwrap()), 1);
        p.remove_placeholders(&[id]).await.unwrap();
        assert_eq!(
            (p.placeholder_count_in(&repo), p.placeholder_count_of(&"192.0.2.1".parse().unwrap())),
            (0, 0)
        );
    }

    #[tokio::test]
    async fn torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = event();
        {
            let p = Purgatory::open(dir.path(), PurgatoryTimers::default()).unwrap();
            p.hold(p.entry(a.clone(), HeldKind::State, "r")).await.unwrap();
        }
        let path = dir.path().join("purgatory.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"op\":\"hold\",\"entry\":{\"ev");
        std::fs::write(&path, text).unwrap();
        let p = Purgatory::open(dir.path(), PurgatoryTimers::default()).unwrap();
        assert!(p.contains(&a.id));
        let (held, _) = Purgatory::read(dir.path()).unwrap();
        assert_eq!(held.len(), 1);
    }

    #[tokio::test]
    async fn extend_only_moves_deadlines_later() {
        let p = Purgatory::in_memory(PurgatoryTimers::default());
        let a = event();
        let mut entry = p.entry(a.clone(), HeldKind::State, "r");
        entry.expires_at = now_ms() + 1000;
        p.hold(entry).await.unwrap();
        p.extend(&[a.id], Duration::from_secs(600)).await.unwrap();
        let after = p.get(&a.id).unwrap().expires_at;
        assert!(after >= now_ms() + 590_000);
        p.extend(&[a.id], Duration::from_secs(1)).await.unwrap();
        assert_eq!(p.get(&a.id).unwrap().expires_at, after);
        assert_eq!(p.dependents_of(&a.id).len(), 0);
        let child = event();
        let mut dependent = p.entry(child.clone(), HeldKind::Dependent, "r");
        dependent.waits_for = Some(a.id);
        p.hold(dependent).await.unwrap();
        assert_eq!(p.dependents_of(&a.id)[0].event.id, child.id);
        p.remove(&[child.id]).await.unwrap();
        assert!(p.dependents_of(&a.id).is_empty());
    }
}
