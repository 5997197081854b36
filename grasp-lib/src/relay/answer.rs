//! The stored events of one REQ, read from the store a page at a time and sent as they are
//! read, so a REQ never holds its whole answer in memory (16 filters × 500 events of up to
//! 512 KiB each would be gigabytes): the connection writes a page, and only then is the
//! next one read. The client sees one answer, newest first across all filters, each event
//! once, then `EOSE`.
//!
//! Each filter is paged on its own with `until`: a page asks for the newest events at or
//! before the oldest second already read, plus as many as were read in that second (they
//! come again and are skipped), so a page always brings new events or ends the filter,
//! however many events share one second. The filters' pages are merged by
//! `(created_at desc, id asc)`, the order a single-filter answer has.

use std::collections::{HashSet, VecDeque};

use nostr::{Event, EventId, Filter, JsonUtil, Timestamp};

use super::wire;
use crate::store::{EventStore, StoreError};

/// Events asked for at once over all filters of one REQ (each filter gets its share).
const EVENTS_PER_READ: usize = 256;

/// Fewest events one filter asks for at once.
const MIN_EVENTS_PER_FILTER: usize = 8;

/// Bytes of relay messages after which a page is handed to the connection to write.
const PAGE_BYTES: usize = 256 * 1024;

/// One filter of the REQ, as far as it has been read.
struct FilterPages {
    filter: Filter,
    /// Events this filter may still contribute (its clamped `limit`).
    remaining: usize,
    /// Read but not yet merged, newest first.
    buffer: VecDeque<Event>,
    /// The oldest second read so far, and the ids read in it.
    boundary: Option<(Timestamp, HashSet<EventId>)>,
    /// Nothing more to read.
    exhausted: bool,
}

impl FilterPages {
    fn new(filter: Filter) -> Self {
        let remaining = filter.limit.unwrap_or(0);
        Self { filter, remaining, buffer: VecDeque::new(), boundary: None, exhausted: remaining == 0 }
    }

    /// Reads the next page into the buffer (when it is empty and more may come).
    async fn fill(&mut self, store: &EventStore, per_read: usize) -> Result<(), StoreError> {
        if !self.buffer.is_empty() || self.exhausted {
            return Ok(());
        }
        let again = self.boundary.as_ref().map_or(0, |(_, ids)| ids.len());
        let asked = per_read.min(self.remaining) + again;
        let mut filter = self.filter.clone().limit(asked);
        if let Some((second, _)) = &self.boundary {
            filter = filter.until(*second);
        }
        let page = store.query_for_client(filter).await?;
        let read = page.len();
        for event in page {
            if self.remaining == 0 {
                break;
            }
            let seen = self
                .boundary
                .as_ref()
                .is_some_and(|(second, ids)| event.created_at == *second && ids.contains(&event.id));
            if seen {
                continue;
            }
            match &mut self.boundary {
                Some((second, ids)) if *second == event.created_at => {
                    ids.insert(event.id);
                }
                boundary => *boundary = Some((event.created_at, HashSet::from([event.id]))),
            }
            self.remaining -= 1;
            self.buffer.push_back(event);
        }
        // A short page is the end of the filter; so is a page with nothing new (it cannot
        // happen with a consistent store, but must not loop).
        if read < asked || self.remaining == 0 || self.buffer.is_empty() {
            self.exhausted = true;
        }
        Ok(())
    }
}

/// The newer of two events in answer order: later `created_at`, then lower id.
fn comes_first(a: &Event, b: &Event) -> bool {
    (std::cmp::Reverse(a.created_at), a.id) < (std::cmp::Reverse(b.created_at), b.id)
}

/// A REQ's answer from the store, being sent.
pub(super) struct Answer {
    subscription: String,
    filters: Vec<FilterPages>,
    per_read: usize,
    /// Ids sent (an event matching several filters is sent once).
    sent: HashSet<EventId>,
    /// Bytes of events sent so far, against `budget`.
    bytes: usize,
    budget: usize,
    /// Ids of events created since `recent_since` that were sent (live delivery skips them).
    recent: HashSet<EventId>,
    recent_since: u64,
    done: bool,
}

/// One page of an answer.
pub(super) struct Page {
    /// Relay messages to write, in order (the last page ends with `EOSE`).
    pub messages: Vec<String>,
    /// True for the last page.
    pub done: bool,
}

impl Answer {
    /// An answer to `filters` (clamped already) within `budget` bytes of events; ids of
    /// events created since `recent_since` (seconds) are collected for live delivery.
    pub(super) fn new(subscription: String, filters: Vec<Filter>, budget: usize, recent_since: u64) -> Self {
        let per_read = (EVENTS_PER_READ / filters.len().max(1)).max(MIN_EVENTS_PER_FILTER);
        Self {
            subscription,
            filters: filters.into_iter().map(FilterPages::new).collect(),
            per_read,
            sent: HashSet::new(),
            bytes: 0,
            budget,
            recent: HashSet::new(),
            recent_since,
            done: false,
        }
    }

    /// The subscription this answers.
    pub(super) fn subscription(&self) -> &str {
        &self.subscription
    }

    /// Ids of recent events sent.
    pub(super) fn into_recent(self) -> HashSet<EventId> {
        self.recent
    }

    /// Reads and formats the next page.
    pub(super) async fn next_page(&mut self, store: &EventStore) -> Result<Page, StoreError> {
        let mut messages = Vec::new();
        let mut page_bytes = 0;
        while !self.done && page_bytes < PAGE_BYTES {
            let Some(event) = self.next_event(store).await? else {
                self.done = true;
                break;
            };
            let json = event.as_json();
            // The first event always goes, whatever its size; then the budget decides.
            if self.bytes + json.len() > self.budget && !self.sent.is_empty() {
                self.done = true;
                break;
            }
            self.bytes += json.len();
            self.sent.insert(event.id);
            if event.created_at.as_secs() >= self.recent_since {
                self.recent.insert(event.id);
            }
            let message = wire::event(&self.subscription, &json);
            page_bytes += message.len();
            messages.push(message);
        }
        if self.done {
            messages.push(wire::eose(&self.subscription));
        }
        Ok(Page { messages, done: self.done })
    }

    /// The next event of the merged answer not sent yet, or `None` at the end.
    async fn next_event(&mut self, store: &EventStore) -> Result<Option<Event>, StoreError> {
        loop {
            for pages in &mut self.filters {
                pages.fill(store, self.per_read).await?;
            }
            let newest = self
                .filters
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.buffer.front().map(|e| (i, e)))
                .reduce(|a, b| if comes_first(b.1, a.1) { b } else { a })
                .map(|(i, _)| i);
            let Some(i) = newest else { return Ok(None) };
            let event = self.filters[i].buffer.pop_front().expect("the front was there");
            if !self.sent.contains(&event.id) {
                return Ok(Some(event));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Kind};

    use super::*;

    /// The same events in a memory and an LMDB store (their orders within one second may
    /// differ; answers must be right on both).
    async fn stores_with(events: &[Event]) -> (Vec<EventStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let stores = vec![EventStore::memory(), EventStore::open_lmdb(dir.path(), 1 << 30).unwrap()];
        for store in &stores {
            for event in events {
                store.save(event).await.unwrap();
            }
        }
        (stores, dir)
    }

    fn note(keys: &Keys, kind: u16, at: u64, text: &str) -> Event {
        EventBuilder::new(Kind::Custom(kind), text)
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)
            .unwrap()
    }

    async fn answer(
        store: &EventStore,
        filters: Vec<Filter>,
        budget: usize,
    ) -> (Vec<Event>, Vec<String>, usize) {
        let mut answer = Answer::new("s".into(), filters, budget, 0);
        let mut messages = Vec::new();
        let mut pages = 0;
        loop {
            let page = answer.next_page(store).await.unwrap();
            pages += 1;
            messages.extend(page.messages);
            if page.done {
                let events = messages
                    .iter()
                    .map(|m| serde_json::from_str::<serde_json::Value>(m).unwrap())
                    .filter(|v| v[0] == "EVENT")
                    .map(|v| serde_json::from_value::<Event>(v[2].clone()).unwrap())
                    .collect();
                return (events, messages, pages);
            }
        }
    }

    /// What one query per filter gives, deduplicated: the answer's events, as a set.
    async fn one_query_each(store: &EventStore, filters: &[Filter]) -> HashSet<EventId> {
        let mut ids = HashSet::new();
        for filter in filters {
            ids.extend(store.query(filter.clone()).await.unwrap().into_iter().map(|e| e.id));
        }
        ids
    }

    fn newest_first_once(events: &[Event]) {
        assert!(events.windows(2).all(|w| w[0].created_at >= w[1].created_at), "newest first");
        let ids: HashSet<EventId> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), events.len(), "each event once");
    }

    #[tokio::test]
    async fn pages_give_the_same_answer_as_one_query_even_within_one_second() {
        let keys = Keys::generate();
        // 700 events: 300 of them in one second, the rest spread over 50 seconds, two kinds.
        let mut events = Vec::new();
        for i in 0..700u64 {
            let at = if i < 300 { 1_700_000_000 } else { 1_700_000_000 - 1 - (i % 50) };
            events.push(note(&keys, if i % 2 == 0 { 1 } else { 7 }, at, &format!("{i}")));
        }
        let (stores, _dir) = stores_with(&events).await;
        let filters = vec![
            Filter::new().kind(Kind::Custom(1)).limit(500),
            Filter::new().kind(Kind::Custom(7)).limit(40),
            Filter::new().kind(Kind::Custom(7)).since(Timestamp::from(1_700_000_000 - 10)).limit(200),
        ];
        for store in &stores {
            let (got, messages, _) = answer(store, filters.clone(), usize::MAX).await;
            newest_first_once(&got);
            assert_eq!(
                got.iter().map(|e| e.id).collect::<HashSet<_>>(),
                one_query_each(store, &filters).await
            );
            assert_eq!(messages.last().unwrap(), &wire::eose("s"));
        }
    }

    #[tokio::test]
    async fn an_event_matching_two_filters_is_sent_once() {
        let keys = Keys::generate();
        let events: Vec<Event> = (0..20).map(|i| note(&keys, 1, 1_700_000_000 + i, "x")).collect();
        let (stores, _dir) = stores_with(&events).await;
        let filters = vec![
            Filter::new().kind(Kind::Custom(1)).limit(15),
            Filter::new().author(keys.public_key()).limit(10),
        ];
        for store in &stores {
            let (got, _, _) = answer(store, filters.clone(), usize::MAX).await;
            assert_eq!(got.len(), 15);
            newest_first_once(&got);
            assert_eq!(got[0].created_at, Timestamp::from(1_700_000_019));
        }
    }

    #[tokio::test]
    async fn large_answers_come_in_several_pages_and_stop_at_the_budget() {
        let keys = Keys::generate();
        let big = "x".repeat(20_000);
        let events: Vec<Event> = (0..100).map(|i| note(&keys, 1, 1_700_000_000 + i, &big)).collect();
        let (stores, _dir) = stores_with(&events).await;
        let filters = vec![Filter::new().kind(Kind::Custom(1)).limit(500)];
        for store in &stores {
            let (got, _, pages) = answer(store, filters.clone(), usize::MAX).await;
            assert_eq!(got.len(), 100);
            assert!(pages >= 5, "2 MB of events in pages of 256 KiB: {pages} pages");
            let (got, _, _) = answer(store, filters.clone(), 200_000).await;
            assert!((5..=10).contains(&got.len()), "{} events within 200 kB", got.len());
            assert_eq!(got[0].created_at, Timestamp::from(1_700_000_099), "the newest first");
            newest_first_once(&got);
        }
    }

    #[tokio::test]
    async fn a_limit_of_zero_or_no_match_is_just_eose() {
        let (stores, _dir) = stores_with(&[]).await;
        for store in &stores {
            let (_, messages, _) =
                answer(store, vec![Filter::new().kind(Kind::Custom(1)).limit(0)], usize::MAX).await;
            assert_eq!(messages, vec![wire::eose("s")]);
            let (_, messages, _) =
                answer(store, vec![Filter::new().kind(Kind::Custom(1)).limit(10)], usize::MAX).await;
            assert_eq!(messages, vec![wire::eose("s")]);
        }
    }
}
