//! The memory of events sync brought that this server refused, so reconciliation does not
//! fetch and evaluate them again and again, bounded in size and time.
//!
//! - **Hot**: the full event, for a few minutes and within a byte budget: when what it
//!   depended on arrives (the issue a comment answers, the announcement that makes a
//!   state's author a maintainer), it is evaluated again at once. Past the budget (or for an
//!   event too large to keep) only the summary stays.
//! - **Cold**: a small summary (id, kind, time, the tags filters match on, the peer it came
//!   from) for days: negentropy counts it as "have", so it is not fetched again. When a
//!   dependency arrives after the event left the hot part, it is forgotten and fetched
//!   again from its peer.
//! - **Expired here** (decision 10): an event that waited in purgatory here until it
//!   expired is not admitted again from sync for 24 hours. This breaks the loop in which
//!   a peer keeps offering an event whose git data never comes.
//!
//! Every part has a capacity; the oldest entries go first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;
use nostr::{Event, EventId, Filter, PublicKey, SingleLetterTag, Timestamp};
use tokio::time::Instant;

use super::metrics::SyncMetrics;
use super::peers::PeerUrl;
use crate::metrics::kind_label;
use crate::nip34::{kinds, EventReferences, RepoCoordinate};

/// Bounds of the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// How long full events are kept.
    pub hot_ttl: Duration,
    /// Most full events kept.
    pub hot_capacity: usize,
    /// Most bytes of full events kept (their JSON).
    pub hot_max_bytes: usize,
    /// How long summaries are kept.
    pub cold_ttl: Duration,
    /// Most summaries kept (hot entries included).
    pub cold_capacity: usize,
    /// How long an event that expired here is refused from sync (decision 10: 24 h).
    pub expired_block: Duration,
    /// Most expired ids kept.
    pub expired_capacity: usize,
}

impl MemoryLimits {
    /// The limits a test suite runs with: refused events are kept whole for a minute.
    pub fn test_mode() -> Self {
        Self { hot_ttl: Duration::from_secs(60), ..Self::default() }
    }
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            hot_ttl: Duration::from_secs(10 * 60),
            hot_capacity: 10_000,
            hot_max_bytes: 4 * 1024 * 1024,
            cold_ttl: Duration::from_secs(7 * 24 * 3600),
            cold_capacity: 100_000,
            expired_block: Duration::from_secs(24 * 3600),
            expired_capacity: 100_000,
        }
    }
}

/// What a refused event waits for: the arrival of an event with this id, at this
/// coordinate, or an announcement with this identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DependencyKey {
    /// An event id (referenced, or the event's own id for events that reference it).
    Event(EventId),
    /// An addressable coordinate `<kind>:<pubkey>:<d>`.
    Coordinate(String),
    /// An announcement identifier (states and maintainer announcements depend on it).
    Identifier(String),
}

/// Most tags of a summary kept for filter matching.
const SUMMARY_TAGS: usize = 32;

/// Longest tag value a summary keeps (ids, coordinates, pubkeys fit; prose does not).
const SUMMARY_VALUE_BYTES: usize = 160;

/// What filters match on, without the event.
#[derive(Debug, Clone)]
struct Summary {
    kind: u16,
    created_at: Timestamp,
    author: PublicKey,
    tags: Vec<(SingleLetterTag, String)>,
}

impl Summary {
    fn of(event: &Event) -> Self {
        let tags = event
            .tags
            .iter()
            .filter_map(|t| {
                let s = t.as_slice();
                let letter = s.first().filter(|n| n.len() == 1)?.chars().next()?;
                let value = s.get(1).filter(|v| v.len() <= SUMMARY_VALUE_BYTES)?;
                Some((SingleLetterTag::from_char(letter).ok()?, value.clone()))
            })
            .take(SUMMARY_TAGS)
            .collect();
        Self { kind: event.kind.as_u16(), created_at: event.created_at, author: event.pubkey, tags }
    }

    /// Could an event with this summary match `filter` (ids are checked by the caller)?
    fn may_match(&self, filter: &Filter) -> bool {
        filter.kinds.as_ref().is_none_or(|k| k.iter().any(|k| k.as_u16() == self.kind))
            && filter.authors.as_ref().is_none_or(|a| a.contains(&self.author))
            && filter.since.is_none_or(|s| self.created_at >= s)
            && filter.until.is_none_or(|u| self.created_at <= u)
            && filter
                .generic_tags
                .iter()
                .all(|(letter, values)| self.tags.iter().any(|(l, v)| l == letter && values.contains(v)))
    }
}

#[derive(Debug)]
struct Entry {
    rejected_at: Instant,
    summary: Summary,
    peer: PeerUrl,
    event: Option<Box<Event>>,
    /// JSON bytes of `event` while it is kept.
    bytes: usize,
    keys: Vec<DependencyKey>,
}

/// What [`RejectedMemory::recall`] knows about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recall {
    /// Never refused (or forgotten): evaluate it.
    Unknown,
    /// Refused before and nothing it depends on arrived since: skip it.
    Rejected,
    /// It expired here less than the block time ago: refuse it (decision 10).
    ExpiredHere,
}

/// Refused events to evaluate again because what they depended on arrived.
#[derive(Debug, Default)]
pub struct Invalidated {
    /// Full events still in memory, with the peer they came from: evaluate them now.
    pub hot: Vec<(PeerUrl, Event)>,
    /// Events only summarized: fetch them again from their peer.
    pub cold: Vec<(PeerUrl, EventId)>,
}

/// The keys under which a refused event waits.
fn dependency_keys(event: &Event) -> Vec<DependencyKey> {
    let refs = EventReferences::of(event);
    let mut keys = vec![DependencyKey::Event(event.id)];
    if let Some(c) = RepoCoordinate::of_event(event) {
        keys.push(DependencyKey::Coordinate(c.to_string()));
    }
    if matches!(event.kind.as_u16(), kinds::REPO_ANNOUNCEMENT | kinds::REPO_STATE) {
        if let Some(d) = event.tags.identifier() {
            keys.push(DependencyKey::Identifier(d.to_owned()));
        }
    }
    keys.extend(refs.event_ids.into_iter().map(DependencyKey::Event));
    keys.extend(refs.coordinates.iter().map(|c| DependencyKey::Coordinate(c.to_string())));
    keys.dedup();
    keys
}

/// The keys a newly stored event satisfies: its id and coordinate (for events that
/// reference it), what it references (for events it answers), and for an announcement
/// its identifier.
fn satisfied_keys(stored: &Event) -> Vec<DependencyKey> {
    dependency_keys(stored)
}

/// Refused synced events (see the module documentation).
pub struct RejectedMemory {
    limits: MemoryLimits,
    entries: LruCache<EventId, Entry>,
    hot_order: VecDeque<(Instant, EventId)>,
    hot: usize,
    hot_bytes: usize,
    expired: LruCache<EventId, (Instant, Summary)>,
    by_key: HashMap<DependencyKey, HashSet<EventId>>,
    metrics: SyncMetrics,
}

impl std::fmt::Debug for RejectedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectedMemory")
            .field("hot", &self.hot)
            .field("cold", &self.entries.len())
            .field("expired", &self.expired.len())
            .finish()
    }
}

fn capacity(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).expect("at least one")
}

impl RejectedMemory {
    /// An empty memory.
    pub fn new(limits: MemoryLimits, metrics: SyncMetrics) -> Self {
        Self {
            entries: LruCache::new(capacity(limits.cold_capacity)),
            expired: LruCache::new(capacity(limits.expired_capacity)),
            hot_order: VecDeque::new(),
            hot: 0,
            hot_bytes: 0,
            by_key: HashMap::new(),
            limits,
            metrics,
        }
    }

    fn label(kind: u16) -> [&'static str; 1] {
        [kind_label(kind)]
    }

    fn drop_entry(&mut self, id: &EventId, entry: &Entry) {
        for key in &entry.keys {
            if let Some(ids) = self.by_key.get_mut(key) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        let label = Self::label(entry.summary.kind);
        if entry.event.is_some() {
            self.hot -= 1;
            self.hot_bytes -= entry.bytes;
            self.metrics.rejected_hot_current.with_label_values(&label).dec();
        }
        self.metrics.rejected_cold_current.with_label_values(&label).dec();
    }

    /// Takes an entry out (no metrics for expiry; the caller counts).
    fn take(&mut self, id: &EventId) -> Option<Entry> {
        let entry = self.entries.pop(id)?;
        self.drop_entry(id, &entry);
        Some(entry)
    }

    /// Remembers that `event`, which came from `peer`, was refused.
    pub fn remember(&mut self, event: &Event, peer: &PeerUrl, now: Instant) {
        self.take(&event.id);
        let keys = dependency_keys(event);
        for key in &keys {
            self.by_key.entry(key.clone()).or_default().insert(event.id);
        }
        let summary = Summary::of(event);
        let label = Self::label(summary.kind);
        let bytes = nostr::JsonUtil::as_json(event).len();
        // One event may take at most a quarter of the budget; a larger one is summarized.
        let keep = bytes <= self.limits.hot_max_bytes / 4;
        let entry = Entry {
            rejected_at: now,
            summary,
            peer: peer.clone(),
            event: keep.then(|| Box::new(event.clone())),
            bytes: if keep { bytes } else { 0 },
            keys,
        };
        if keep {
            self.hot += 1;
            self.hot_bytes += bytes;
            self.metrics.rejected_hot_current.with_label_values(&label).inc();
            self.hot_order.push_back((now, event.id));
        }
        self.metrics.rejected_cold_current.with_label_values(&label).inc();
        if let Some((old_id, old)) = self.entries.push(event.id, entry) {
            if old_id != event.id {
                self.drop_entry(&old_id, &old);
                self.metrics.rejected_cold_expired.with_label_values(&Self::label(old.summary.kind)).inc();
            }
        }
        self.sweep(now);
    }

    /// Remembers that a held event expired here without its git data (decision 10).
    pub fn expired_here(&mut self, event: &Event, now: Instant) {
        self.expired.push(event.id, (now, Summary::of(event)));
    }

    /// What the memory says about an incoming event.
    pub fn recall(&mut self, event: &Event, now: Instant) -> Recall {
        self.sweep(now);
        let label = Self::label(event.kind.as_u16());
        if self.expired.peek(&event.id).is_some() {
            return Recall::ExpiredHere;
        }
        match self.entries.peek(&event.id) {
            Some(entry) if entry.event.is_some() => {
                self.metrics.rejected_hot_hits.with_label_values(&label).inc();
                Recall::Rejected
            }
            Some(_) => {
                self.metrics.rejected_hot_misses.with_label_values(&label).inc();
                self.metrics.rejected_cold_hits.with_label_values(&label).inc();
                Recall::Rejected
            }
            None => {
                self.metrics.rejected_hot_misses.with_label_values(&label).inc();
                Recall::Unknown
            }
        }
    }

    /// Forgets the refused events that `stored` (just saved here) may make acceptable and
    /// returns them. `stored` itself is forgotten too.
    pub fn invalidated_by(&mut self, stored: &Event, now: Instant) -> Invalidated {
        self.sweep(now);
        self.take(&stored.id);
        let mut ids: Vec<EventId> = Vec::new();
        for key in satisfied_keys(stored) {
            if let Some(found) = self.by_key.get(&key) {
                ids.extend(found.iter().copied());
            }
        }
        ids.sort();
        ids.dedup();
        let mut out = Invalidated::default();
        for id in ids {
            let Some(entry) = self.take(&id) else { continue };
            self.metrics.rejected_invalidated.with_label_values(&Self::label(entry.summary.kind)).inc();
            match entry.event {
                Some(event) => out.hot.push((entry.peer, *event)),
                None => out.cold.push((entry.peer, id)),
            }
        }
        out
    }

    /// Every full event still in memory, taken out (after the live feed of stored events
    /// was interrupted and dependencies may have been missed).
    pub fn take_all_hot(&mut self) -> Vec<(PeerUrl, Event)> {
        let ids: Vec<EventId> =
            self.entries.iter().filter(|(_, e)| e.event.is_some()).map(|(id, _)| *id).collect();
        ids.iter().filter_map(|id| self.take(id)).filter_map(|e| Some((e.peer, *e.event?))).collect()
    }

    /// `(id, created_at)` of remembered events that may match `filter`: negentropy counts
    /// them as present, so they are not fetched again.
    pub fn negentropy_items(&self, filter: &Filter) -> Vec<(EventId, Timestamp)> {
        let ids_ok = |id: &EventId| filter.ids.as_ref().is_none_or(|ids| ids.contains(id));
        let entries = self
            .entries
            .iter()
            .filter(|(id, e)| ids_ok(id) && e.summary.may_match(filter))
            .map(|(id, e)| (*id, e.summary.created_at));
        let expired = self
            .expired
            .iter()
            .filter(|(id, (_, s))| ids_ok(id) && s.may_match(filter))
            .map(|(id, (_, s))| (*id, s.created_at));
        entries.chain(expired).collect()
    }

    /// Drops what is past its time or over capacity.
    pub fn sweep(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.hot_order.front() {
            let over = self.hot > self.limits.hot_capacity || self.hot_bytes > self.limits.hot_max_bytes;
            if !over && now.duration_since(at) < self.limits.hot_ttl {
                break;
            }
            self.hot_order.pop_front();
            if let Some(entry) = self.entries.peek_mut(&id) {
                if entry.rejected_at == at && entry.event.is_some() {
                    entry.event = None;
                    let label = Self::label(entry.summary.kind);
                    self.hot -= 1;
                    self.hot_bytes -= std::mem::take(&mut entry.bytes);
                    self.metrics.rejected_hot_current.with_label_values(&label).dec();
                    self.metrics.rejected_hot_expired.with_label_values(&label).inc();
                }
            }
        }
        while let Some((id, entry)) = self.entries.peek_lru() {
            if now.duration_since(entry.rejected_at) < self.limits.cold_ttl {
                break;
            }
            let id = *id;
            if let Some(entry) = self.take(&id) {
                self.metrics.rejected_cold_expired.with_label_values(&Self::label(entry.summary.kind)).inc();
            }
        }
        while let Some((_, (at, _))) = self.expired.peek_lru() {
            if now.duration_since(*at) < self.limits.expired_block {
                break;
            }
            self.expired.pop_lru();
        }
    }

    /// Entries kept: (hot, cold, expired here).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize, usize) {
        (self.hot, self.entries.len(), self.expired.len())
    }

    /// Bytes of full events kept.
    pub fn hot_bytes(&self) -> usize {
        self.hot_bytes
    }
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Kind, Tag};

    use super::*;

    fn memory(limits: MemoryLimits) -> RejectedMemory {
        RejectedMemory::new(limits, SyncMetrics::register(&prometheus::Registry::new()))
    }

    fn peer() -> PeerUrl {
        PeerUrl::parse("ws://127.0.0.1:7001").unwrap()
    }

    fn event(kind: u16, tags: &[[&str; 2]]) -> Event {
        EventBuilder::new(Kind::Custom(kind), "x")
            .tags(tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap()))
            .sign_with_keys(&Keys::generate())
            .unwrap()
    }

    #[test]
    fn refused_events_are_recalled_until_they_expire() {
        let limits = MemoryLimits::default();
        let mut m = memory(limits);
        let t0 = Instant::now();
        let comment = event(1111, &[["E", &EventId::all_zeros().to_hex()]]);
        assert_eq!(m.recall(&comment, t0), Recall::Unknown);
        m.remember(&comment, &peer(), t0);
        assert_eq!(m.recall(&comment, t0), Recall::Rejected);
        assert_eq!(m.sizes(), (1, 1, 0));
        let after_hot = t0 + limits.hot_ttl;
        assert_eq!(m.recall(&comment, after_hot), Recall::Rejected, "still in the cold index");
        assert_eq!(m.sizes(), (0, 1, 0));
        assert_eq!(m.recall(&comment, t0 + limits.cold_ttl), Recall::Unknown);
        assert_eq!(m.sizes(), (0, 0, 0));
    }

    #[test]
    fn full_events_are_kept_within_a_byte_budget() {
        let big = |n: usize| {
            EventBuilder::new(Kind::Custom(1), "x".repeat(n)).sign_with_keys(&Keys::generate()).unwrap()
        };
        let limits = MemoryLimits { hot_max_bytes: 40_000, ..Default::default() };
        let mut m = memory(limits);
        let t0 = Instant::now();
        let events: Vec<Event> = (0..10).map(|_| big(5_000)).collect();
        for e in &events {
            m.remember(e, &peer(), t0);
        }
        assert!(m.hot_bytes() <= 40_000, "{} bytes kept", m.hot_bytes());
        let (hot, cold, _) = m.sizes();
        assert!(hot < 10 && cold == 10, "the oldest full events became summaries: {hot} hot, {cold} cold");
        // One event over a quarter of the budget is only summarized.
        let huge = big(20_000);
        m.remember(&huge, &peer(), t0);
        assert_eq!(m.recall(&huge, t0), Recall::Rejected);
        assert!(m.entries.peek(&huge.id).is_some_and(|e| e.event.is_none()));
        // Prose in tags is not kept in summaries.
        let long = event(1, &[["t", &"y".repeat(1000)], ["e", &EventId::all_zeros().to_hex()]]);
        m.remember(&long, &peer(), t0);
        assert_eq!(m.entries.peek(&long.id).unwrap().summary.tags.len(), 1);
    }

    #[test]
    fn capacities_bound_the_memory() {
        let limits =
            MemoryLimits { hot_capacity: 3, cold_capacity: 5, expired_capacity: 2, ..Default::default() };
        let mut m = memory(limits);
        let t0 = Instant::now();
        let events: Vec<Event> = (0..10).map(|_| event(1, &[])).collect();
        for e in &events {
            m.remember(e, &peer(), t0);
            m.expired_here(e, t0);
        }
        assert_eq!(m.sizes(), (3, 5, 2));
        assert_eq!(m.recall(&events[0], t0), Recall::Unknown, "oldest went first");
        assert_eq!(m.recall(&events[9], t0), Recall::ExpiredHere);
        assert!(m.by_key.values().all(|ids| ids.iter().all(|id| m.entries.contains(id))));
    }

    #[test]
    fn an_arriving_dependency_invalidates_what_waited_for_it() {
        let mut m = memory(MemoryLimits::default());
        let t0 = Instant::now();
        let issue = event(1621, &[]);
        let comment = event(1111, &[["E", &issue.id.to_hex()]]);
        let unrelated = event(1111, &[["E", &EventId::all_zeros().to_hex()]]);
        m.remember(&comment, &peer(), t0);
        m.remember(&unrelated, &peer(), t0);
        let found = m.invalidated_by(&issue, t0);
        assert_eq!(found.hot.iter().map(|(_, e)| e.id).collect::<Vec<_>>(), [comment.id]);
        assert!(found.cold.is_empty());
        assert_eq!(m.recall(&comment, t0), Recall::Unknown, "forgotten, so evaluated again");
        assert_eq!(m.recall(&unrelated, t0), Recall::Rejected);
    }

    #[test]
    fn cold_entries_are_fetched_again_from_their_peer() {
        let limits = MemoryLimits::default();
        let mut m = memory(limits);
        let t0 = Instant::now();
        let owner = Keys::generate();
        let state = EventBuilder::new(Kind::Custom(30618), "")
            .tag(Tag::identifier("repo"))
            .sign_with_keys(&owner)
            .unwrap();
        m.remember(&state, &peer(), t0);
        let later = t0 + limits.hot_ttl;
        let announcement = EventBuilder::new(Kind::Custom(30617), "")
            .tag(Tag::identifier("repo"))
            .sign_with_keys(&owner)
            .unwrap();
        let found = m.invalidated_by(&announcement, later);
        assert!(found.hot.is_empty());
        assert_eq!(found.cold, [(peer(), state.id)]);
    }

    #[test]
    fn an_event_tagged_by_a_stored_one_is_invalidated() {
        let mut m = memory(MemoryLimits::default());
        let t0 = Instant::now();
        let orphan = event(1, &[]);
        m.remember(&orphan, &peer(), t0);
        let referrer = event(1111, &[["q", &orphan.id.to_hex()]]);
        assert_eq!(m.invalidated_by(&referrer, t0).hot.len(), 1);
    }

    #[test]
    fn negentropy_items_follow_the_filter() {
        let mut m = memory(MemoryLimits::default());
        let t0 = Instant::now();
        let issue = event(1621, &[["a", "30617:abc:repo"]]);
        let note = event(1, &[]);
        m.remember(&issue, &peer(), t0);
        m.remember(&note, &peer(), t0);
        let expired = event(30618, &[["d", "repo"]]);
        m.expired_here(&expired, t0);
        let by_tag = Filter::new().custom_tag(SingleLetterTag::from_char('a').unwrap(), "30617:abc:repo");
        assert_eq!(m.negentropy_items(&by_tag), [(issue.id, issue.created_at)]);
        let states = Filter::new().kind(Kind::Custom(30618)).identifier("repo");
        assert_eq!(m.negentropy_items(&states), [(expired.id, expired.created_at)]);
        assert_eq!(m.negentropy_items(&Filter::new().kind(Kind::Custom(1))).len(), 1);
        assert!(m.negentropy_items(&Filter::new().kind(Kind::Custom(7))).is_empty());
    }

    #[test]
    fn expired_here_blocks_for_a_day() {
        let limits = MemoryLimits::default();
        let mut m = memory(limits);
        let t0 = Instant::now();
        let state = event(30618, &[["d", "repo"]]);
        m.expired_here(&state, t0);
        assert_eq!(m.recall(&state, t0 + Duration::from_secs(23 * 3600)), Recall::ExpiredHere);
        assert_eq!(m.recall(&state, t0 + limits.expired_block), Recall::Unknown);
    }
}
