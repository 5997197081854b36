//! One conformance suite for every event store backend: memory, LMDB and PostgreSQL run the
//! same checks (each test loops over [`backends`]). PostgreSQL needs a server
//! (`GRASP_TEST_DATABASE_URL`, see `support/postgres.rs`); each test gets its own database.

mod support;

use std::collections::BTreeSet;

use grasp_lib::store::{EventStore, StoreBackend};
use nostr::{Event, EventBuilder, EventId, Filter, Keys, Kind, SingleLetterTag, Tag, Timestamp};
use nostr_database::{DatabaseEventStatus, RejectedReason, SaveEventStatus};
use support::postgres::{admin_url, TestDatabase};

/// One backend under test, and what to clean up after it.
struct Backend {
    name: &'static str,
    store: EventStore,
    _dir: Option<tempfile::TempDir>,
    database: Option<TestDatabase>,
}

impl Backend {
    async fn finish(self) {
        if let Some(db) = self.database {
            drop(self.store);
            db.drop_now().await;
        }
    }
}

/// Memory, LMDB and (when a server is configured) PostgreSQL, each fresh and empty.
async fn backends(test: &str) -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let lmdb = EventStore::open(StoreBackend::Lmdb, dir.path()).unwrap();
    let mut all = vec![
        Backend { name: "memory", store: EventStore::memory(), _dir: None, database: None },
        Backend { name: "lmdb", store: lmdb, _dir: Some(dir), database: None },
    ];
    if let Some(admin) = admin_url(test) {
        let db = TestDatabase::create(&admin).await;
        let store = EventStore::open_postgres(&db.url, 8).await.expect("open the PostgreSQL store");
        all.push(Backend { name: "postgres", store, _dir: None, database: Some(db) });
    }
    all
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from(secs)
}

fn signed(keys: &Keys, kind: u16, content: &str, created_at: u64, tags: Vec<Tag>) -> Event {
    EventBuilder::new(Kind::from(kind), content)
        .tags(tags)
        .custom_created_at(at(created_at))
        .sign_with_keys(keys)
        .unwrap()
}

fn tag(letter: char) -> SingleLetterTag {
    SingleLetterTag::from_char(letter).unwrap()
}

async fn ids(store: &EventStore, filter: Filter) -> Vec<EventId> {
    store.query(filter).await.unwrap().into_iter().map(|e| e.id).collect()
}

async fn save(store: &EventStore, event: &Event) -> SaveEventStatus {
    store.save(event).await.unwrap()
}

/// Two versions of one address signed in the same second, lower id first.
fn same_second_pair(keys: &Keys, kind: u16, created_at: u64) -> (Event, Event) {
    let mut pair: Vec<Event> = (0..2)
        .map(|i| signed(keys, kind, &format!("version {i}"), created_at, vec![Tag::identifier("repo")]))
        .collect();
    pair.sort_by_key(|e| e.id);
    let higher = pair.pop().unwrap();
    (pair.pop().unwrap(), higher)
}

#[tokio::test]
async fn every_filter_field_selects_the_same_events() {
    for b in backends("every_filter_field_selects_the_same_events").await {
        let (alice, bob) = (Keys::generate(), Keys::generate());
        let root = signed(&alice, 1, "root note", 1_000, vec![Tag::hashtag("grasp")]);
        let reply =
            signed(&bob, 1, "a reply", 1_010, vec![Tag::event(root.id), Tag::public_key(alice.public_key())]);
        let repo = signed(&alice, 30617, "repo", 1_020, vec![Tag::identifier("tools"), Tag::hashtag("rust")]);
        for e in [&root, &reply, &repo] {
            assert!(save(&b.store, e).await.is_success(), "{}", b.name);
        }
        let n = b.name;
        assert_eq!(ids(&b.store, Filter::new().id(reply.id)).await, vec![reply.id], "{n}: ids");
        assert_eq!(
            ids(&b.store, Filter::new().author(bob.public_key())).await,
            vec![reply.id],
            "{n}: authors"
        );
        assert_eq!(ids(&b.store, Filter::new().kind(Kind::from(30617))).await, vec![repo.id], "{n}: kinds");
        assert_eq!(
            ids(&b.store, Filter::new().since(at(1_010))).await,
            vec![repo.id, reply.id],
            "{n}: since"
        );
        assert_eq!(
            ids(&b.store, Filter::new().until(at(1_010))).await,
            vec![reply.id, root.id],
            "{n}: until"
        );
        let window = Filter::new().since(at(1_005)).until(at(1_015));
        assert_eq!(ids(&b.store, window).await, vec![reply.id], "{n}: since and until");
        assert!(ids(&b.store, Filter::new().since(at(2)).until(at(1))).await.is_empty(), "{n}: empty window");
        assert_eq!(ids(&b.store, Filter::new().event(root.id)).await, vec![reply.id], "{n}: #e");
        assert_eq!(ids(&b.store, Filter::new().pubkey(alice.public_key())).await, vec![reply.id], "{n}: #p");
        assert_eq!(ids(&b.store, Filter::new().identifier("tools")).await, vec![repo.id], "{n}: #d");
        let hashtags = Filter::new().custom_tags(tag('t'), ["grasp", "rust"]);
        assert_eq!(ids(&b.store, hashtags).await, vec![repo.id, root.id], "{n}: #t, any of two values");
        let both = Filter::new().custom_tag(tag('t'), "rust").identifier("tools");
        assert_eq!(ids(&b.store, both).await, vec![repo.id], "{n}: two tags, both must match");
        let neither = Filter::new().custom_tag(tag('t'), "grasp").identifier("tools");
        assert!(ids(&b.store, neither).await.is_empty(), "{n}: two tags, one matches");
        let combined =
            Filter::new().author(alice.public_key()).kind(Kind::TextNote).custom_tag(tag('t'), "grasp");
        assert_eq!(ids(&b.store, combined).await, vec![root.id], "{n}: fields combine with AND");
        assert_eq!(b.store.event(&reply.id).await.unwrap().as_ref(), Some(&reply), "{n}: by id, as signed");
        assert_eq!(b.store.status(&reply.id).await.unwrap(), DatabaseEventStatus::Saved, "{n}");
        let unknown = signed(&alice, 1, "never saved", 1, vec![]);
        assert_eq!(b.store.status(&unknown.id).await.unwrap(), DatabaseEventStatus::NotExistent, "{n}");
        assert_eq!(save(&b.store, &root).await, SaveEventStatus::Rejected(RejectedReason::Duplicate), "{n}");
        let ephemeral = signed(&alice, 20_001, "ephemeral", 1_000, vec![]);
        assert_eq!(
            save(&b.store, &ephemeral).await,
            SaveEventStatus::Rejected(RejectedReason::Ephemeral),
            "{n}"
        );
        b.finish().await;
    }
}

#[tokio::test]
async fn limit_keeps_the_newest_and_breaks_ties_by_ascending_id() {
    for b in backends("limit_keeps_the_newest_and_breaks_ties_by_ascending_id").await {
        let keys = Keys::generate();
        let mut same_second: Vec<Event> =
            (0..4).map(|i| signed(&keys, 1, &format!("tie {i}"), 2_000, vec![])).collect();
        let older = signed(&keys, 1, "older", 1_000, vec![]);
        let newest = signed(&keys, 1, "newest", 3_000, vec![]);
        for e in same_second.iter().chain([&older, &newest]) {
            assert!(save(&b.store, e).await.is_success(), "{}", b.name);
        }
        same_second.sort_by_key(|e| e.id);
        let expected: Vec<EventId> = [newest.id, same_second[0].id, same_second[1].id].into();
        assert_eq!(ids(&b.store, Filter::new().limit(3)).await, expected, "{}", b.name);
        let all = ids(&b.store, Filter::new()).await;
        assert_eq!(all.len(), 6, "{}", b.name);
        assert_eq!(all.last(), Some(&older.id), "{}: oldest last", b.name);
        assert!(ids(&b.store, Filter::new().limit(0)).await.is_empty(), "{}: limit 0", b.name);
        b.finish().await;
    }
}

#[tokio::test]
async fn replaceable_and_addressable_events_keep_only_the_newest_version() {
    for b in backends("replaceable_and_addressable_events_keep_only_the_newest_version").await {
        let n = b.name;
        let keys = Keys::generate();
        for kind in [0, 3, 10_002, 30_617, 30_618] {
            let d = vec![Tag::identifier("repo")];
            let v1 = signed(&keys, kind, "v1", 1_000, d.clone());
            let v2 = signed(&keys, kind, "v2", 1_100, d.clone());
            let stale = signed(&keys, kind, "stale", 900, d.clone());
            assert!(save(&b.store, &v1).await.is_success(), "{n} {kind}");
            assert!(save(&b.store, &v2).await.is_success(), "{n} {kind}");
            assert_eq!(
                save(&b.store, &stale).await,
                SaveEventStatus::Rejected(RejectedReason::Replaced),
                "{n} {kind}"
            );
            let at_address = Filter::new().kind(Kind::from(kind)).author(keys.public_key());
            assert_eq!(ids(&b.store, at_address).await, vec![v2.id], "{n} {kind}: only the newest");
            assert_eq!(b.store.event(&v1.id).await.unwrap(), None, "{n} {kind}: the replaced one is gone");
        }
        // Another `d` is another address: both stay.
        let other = signed(&keys, 30_617, "other repo", 1_000, vec![Tag::identifier("other")]);
        assert!(save(&b.store, &other).await.is_success(), "{n}");
        assert_eq!(b.store.count(Filter::new().kind(Kind::from(30_617))).await.unwrap(), 2, "{n}");
        b.finish().await;
    }
}

#[tokio::test]
async fn the_lower_id_wins_a_same_second_tie_in_either_order() {
    for b in backends("the_lower_id_wins_a_same_second_tie_in_either_order").await {
        for kind in [0, 10_317, 30_617, 30_618] {
            for lower_first in [true, false] {
                let keys = Keys::generate();
                let (lower, higher) = same_second_pair(&keys, kind, 1_700_000_000);
                let (first, second) = if lower_first { (&lower, &higher) } else { (&higher, &lower) };
                assert!(save(&b.store, first).await.is_success());
                let outcome = save(&b.store, second).await;
                let context = format!("{} kind {kind}, lower first: {lower_first}", b.name);
                assert_eq!(outcome.is_success(), !lower_first, "{context}");
                let stored =
                    ids(&b.store, Filter::new().kind(Kind::from(kind)).author(keys.public_key())).await;
                assert_eq!(stored, vec![lower.id], "{context}");
            }
        }
        b.finish().await;
    }
}

#[tokio::test]
async fn a_deletion_by_id_removes_the_event_and_refuses_it_again() {
    for b in backends("a_deletion_by_id_removes_the_event_and_refuses_it_again").await {
        let n = b.name;
        let (alice, mallory) = (Keys::generate(), Keys::generate());
        let note = signed(&alice, 1, "regret", 1_000, vec![]);
        assert!(save(&b.store, &note).await.is_success(), "{n}");
        let forged = signed(&mallory, 5, "", 1_010, vec![Tag::event(note.id)]);
        assert_eq!(
            save(&b.store, &forged).await,
            SaveEventStatus::Rejected(RejectedReason::InvalidDelete),
            "{n}"
        );
        assert!(b.store.event(&note.id).await.unwrap().is_some(), "{n}: another author cannot delete it");
        let deletion = signed(&alice, 5, "", 1_010, vec![Tag::event(note.id)]);
        assert!(save(&b.store, &deletion).await.is_success(), "{n}");
        assert_eq!(b.store.event(&note.id).await.unwrap(), None, "{n}");
        assert_eq!(b.store.status(&note.id).await.unwrap(), DatabaseEventStatus::Deleted, "{n}");
        assert_eq!(
            save(&b.store, &note).await,
            SaveEventStatus::Rejected(RejectedReason::Deleted),
            "{n}: re-save"
        );
        assert_eq!(ids(&b.store, Filter::new().kind(Kind::EventDeletion)).await, vec![deletion.id], "{n}");
        b.finish().await;
    }
}

#[tokio::test]
async fn a_deletion_by_coordinate_removes_versions_up_to_its_time() {
    for b in backends("a_deletion_by_coordinate_removes_versions_up_to_its_time").await {
        let n = b.name;
        let keys = Keys::generate();
        let d = vec![Tag::identifier("repo")];
        let announcement = signed(&keys, 30_617, "v1", 1_000, d.clone());
        let kept = signed(&keys, 30_617, "another repo", 1_000, vec![Tag::identifier("kept")]);
        assert!(save(&b.store, &announcement).await.is_success(), "{n}");
        assert!(save(&b.store, &kept).await.is_success(), "{n}");
        let coordinate = format!("30617:{}:repo", keys.public_key().to_hex());
        let a_tag = Tag::parse(["a", coordinate.as_str()]).unwrap();
        let forged = signed(&Keys::generate(), 5, "", 1_100, vec![a_tag.clone()]);
        assert_eq!(
            save(&b.store, &forged).await,
            SaveEventStatus::Rejected(RejectedReason::InvalidDelete),
            "{n}"
        );
        let deletion = signed(&keys, 5, "", 1_100, vec![a_tag]);
        assert!(save(&b.store, &deletion).await.is_success(), "{n}");
        assert_eq!(b.store.event(&announcement.id).await.unwrap(), None, "{n}: deleted");
        assert!(b.store.event(&kept.id).await.unwrap().is_some(), "{n}: another d stays");
        // nostr-database 0.44's memory store compares a deleted coordinate's time with the
        // clock, not with the event's created_at, so it takes back versions signed before the
        // deletion; LMDB and PostgreSQL refuse them, as NIP-09 asks.
        if n != "memory" {
            let resave = save(&b.store, &announcement).await;
            assert_eq!(resave, SaveEventStatus::Rejected(RejectedReason::Deleted), "{n}: re-save");
            let same_second = signed(&keys, 30_617, "v2", 1_100, d.clone());
            let outcome = save(&b.store, &same_second).await;
            assert_eq!(
                outcome,
                SaveEventStatus::Rejected(RejectedReason::Deleted),
                "{n}: signed with the deletion"
            );
        }
        let newer = signed(&keys, 30_617, "v3", 1_101, d);
        assert!(save(&b.store, &newer).await.is_success(), "{n}: a version signed after the deletion");
        b.finish().await;
    }
}

#[tokio::test]
async fn count_and_negentropy_items_follow_the_filter() {
    for b in backends("count_and_negentropy_items_follow_the_filter").await {
        let n = b.name;
        let keys = Keys::generate();
        let events: Vec<Event> =
            (0..5).map(|i| signed(&keys, 1, &format!("n{i}"), 1_000 + i, vec![Tag::hashtag("x")])).collect();
        for e in &events {
            assert!(save(&b.store, e).await.is_success(), "{n}");
        }
        assert_eq!(b.store.count(Filter::new()).await.unwrap(), 5, "{n}");
        assert_eq!(b.store.count(Filter::new().since(at(1_003))).await.unwrap(), 2, "{n}");
        assert_eq!(b.store.count(Filter::new().custom_tag(tag('t'), "x").limit(3)).await.unwrap(), 3, "{n}");
        assert_eq!(b.store.count(Filter::new().kind(Kind::Metadata)).await.unwrap(), 0, "{n}");
        let items: BTreeSet<(EventId, Timestamp)> =
            b.store.negentropy_items(Filter::new().until(at(1_001))).await.unwrap().into_iter().collect();
        let expected: BTreeSet<(EventId, Timestamp)> =
            events[..2].iter().map(|e| (e.id, e.created_at)).collect();
        assert_eq!(items, expected, "{n}");
        b.finish().await;
    }
}

#[tokio::test]
async fn delete_by_filter_and_wipe_remove_events() {
    for b in backends("delete_by_filter_and_wipe_remove_events").await {
        let n = b.name;
        let (alice, bob) = (Keys::generate(), Keys::generate());
        let a = signed(&alice, 1, "a", 1_000, vec![Tag::hashtag("x")]);
        let b1 = signed(&bob, 1, "b", 1_001, vec![]);
        for e in [&a, &b1] {
            assert!(save(&b.store, e).await.is_success(), "{n}");
        }
        b.store.delete(Filter::new().author(alice.public_key())).await.unwrap();
        assert_eq!(ids(&b.store, Filter::new()).await, vec![b1.id], "{n}: delete(filter)");
        assert!(ids(&b.store, Filter::new().custom_tag(tag('t'), "x")).await.is_empty(), "{n}: its tags too");
        b.store.wipe().await.unwrap();
        assert_eq!(b.store.count(Filter::new()).await.unwrap(), 0, "{n}: wipe");
        assert!(save(&b.store, &a).await.is_success(), "{n}: saves work after a wipe");
        b.finish().await;
    }
}

/// Competing versions of one address, all saved at once; exactly the winner (newest, then
/// lowest id) stays. For PostgreSQL, through two stores with their own pools on one
/// database, as two nodes would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_racing_on_one_address_leave_exactly_the_winner() {
    for b in backends("concurrent_writers_racing_on_one_address_leave_exactly_the_winner").await {
        let second = match &b.database {
            Some(db) => EventStore::open_postgres(&db.url, 8).await.unwrap(),
            None => b.store.clone(),
        };
        for round in 0..3 {
            let keys = Keys::generate();
            // Versions over three seconds, several per second: ties and plain replacements.
            let versions: Vec<Event> = (0..24)
                .map(|i| {
                    signed(
                        &keys,
                        30_618,
                        &format!("state {round} {i}"),
                        5_000 + i % 3,
                        vec![Tag::identifier("race")],
                    )
                })
                .collect();
            let winner = versions.iter().max_by_key(|e| (e.created_at, std::cmp::Reverse(e.id))).unwrap().id;
            let tasks: Vec<_> = versions
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let store = if i % 2 == 0 { b.store.clone() } else { second.clone() };
                    let e = e.clone();
                    tokio::spawn(async move { store.save(&e).await.unwrap() })
                })
                .collect();
            let mut stored = 0;
            for task in tasks {
                stored += usize::from(task.await.unwrap().is_success());
            }
            assert!(stored >= 1, "{}: the winner was stored", b.name);
            let filter = Filter::new().kind(Kind::from(30_618)).author(keys.public_key()).identifier("race");
            assert_eq!(ids(&b.store, filter.clone()).await, vec![winner], "{} round {round}", b.name);
            assert_eq!(ids(&second, filter).await, vec![winner], "{} round {round}: the other store", b.name);
        }
        drop(second);
        b.finish().await;
    }
}
