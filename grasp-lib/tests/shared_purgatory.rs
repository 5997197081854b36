//! Purgatory shared by nodes on one PostgreSQL database: what one node holds or drops, the
//! others see once they catch up; two nodes racing to hold one event hold it once; a node
//! that joins after the log was compacted loads what is live.

mod support;

use grasp_lib::purgatory::{HeldKind, HoldOutcome, Purgatory, PurgatoryTimers};
use grasp_lib::store::postgres::PostgresDatabase;
use nostr::{EventBuilder, Keys};
use support::postgres::{admin_url, TestDatabase};

async fn node(url: &str) -> Purgatory {
    let db = PostgresDatabase::open(url, 4).await.expect("open PostgreSQL");
    Purgatory::shared(db, PurgatoryTimers::default()).await.expect("shared purgatory")
}

fn note(i: usize) -> nostr::Event {
    EventBuilder::text_note(format!("held {i}")).sign_with_keys(&Keys::generate()).unwrap()
}

#[tokio::test]
async fn nodes_see_each_others_holds_and_drops_after_catching_up() {
    let Some(admin) = admin_url("nodes_see_each_others_holds_and_drops_after_catching_up") else { return };
    let db = TestDatabase::create(&admin).await;
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    let event = note(0);
    assert_eq!(a.hold(a.entry(event.clone(), HeldKind::State, "r")).await.unwrap(), HoldOutcome::Held);
    b.refresh().await.unwrap();
    assert!(b.contains(&event.id), "B sees what A holds");
    assert_eq!(b.held_states("r").len(), 0, "a text note parses as no state");
    // B decides against the caught-up index: the same event is a duplicate there too.
    assert_eq!(b.hold(b.entry(event.clone(), HeldKind::State, "r")).await.unwrap(), HoldOutcome::Duplicate);
    assert_eq!(b.remove(&[event.id]).await.unwrap().len(), 1, "B takes it out");
    assert!(a.remove(&[event.id]).await.unwrap().is_empty(), "A catches up first: nothing left to remove");
    assert!(!a.contains(&event.id));
    db.drop_now().await;
}

#[tokio::test]
async fn racing_holds_of_one_event_hold_it_once() {
    let Some(admin) = admin_url("racing_holds_of_one_event_hold_it_once") else { return };
    let db = TestDatabase::create(&admin).await;
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    for i in 0..20 {
        let event = note(i);
        let (x, y) = tokio::join!(
            a.hold(a.entry(event.clone(), HeldKind::State, "r")),
            b.hold(b.entry(event.clone(), HeldKind::State, "r"))
        );
        let mut outcomes = [x.unwrap(), y.unwrap()];
        outcomes.sort_by_key(|o| matches!(o, HoldOutcome::Duplicate));
        assert_eq!(outcomes, [HoldOutcome::Held, HoldOutcome::Duplicate], "event {i}");
        // Taken out once, by one of them.
        let (x, y) = tokio::join!(a.take_expired(u64::MAX), b.take_expired(u64::MAX));
        assert_eq!(x.unwrap().0.len() + y.unwrap().0.len(), 1, "event {i} expires once");
    }
    db.drop_now().await;
}

#[tokio::test]
async fn a_node_joining_after_compaction_loads_what_is_live() {
    let Some(admin) = admin_url("a_node_joining_after_compaction_loads_what_is_live") else { return };
    let db = TestDatabase::create(&admin).await;
    let a = node(&db.url).await;
    let lagging = node(&db.url).await;
    let kept = note(9999);
    a.hold(a.entry(kept.clone(), HeldKind::State, "r")).await.unwrap();
    lagging.refresh().await.unwrap();
    // Enough holds and drops (1,200 records) to compact the log.
    for i in 0..600 {
        let event = note(i);
        a.hold(a.entry(event.clone(), HeldKind::PullRequest, "r")).await.unwrap();
        a.remove(&[event.id]).await.unwrap();
    }
    let last = note(10_000);
    a.hold(a.entry(last.clone(), HeldKind::State, "r")).await.unwrap();
    let joined = node(&db.url).await;
    lagging.refresh().await.unwrap();
    for (name, view) in [("a joining node", &joined), ("a lagging node", &lagging)] {
        assert!(view.contains(&kept.id) && view.contains(&last.id), "{name} has what is live");
        assert_eq!(view.all_held().len(), 2, "{name} has nothing that was dropped");
    }
    db.drop_now().await;
}
