//! Cross-node locks on PostgreSQL: a lock one node holds keeps the others out until it is
//! dropped, and a caller that gives up waiting (a client hanging up while its push waits)
//! leaves no lock behind.

mod support;

use std::time::Duration;

use grasp_lib::cluster::ClusterLocks;
use grasp_lib::store::postgres::PostgresDatabase;
use support::postgres::{admin_url, TestDatabase};

async fn node(url: &str) -> ClusterLocks {
    ClusterLocks::new(Some(PostgresDatabase::open(url, 4).await.expect("open PostgreSQL")))
}

/// Polls `check` every 20 ms until it holds, for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_lock_keeps_other_nodes_out_and_a_given_up_wait_leaves_nothing_behind() {
    let Some(admin) = admin_url("a_lock_keeps_other_nodes_out_and_a_given_up_wait_leaves_nothing_behind")
    else {
        return;
    };
    let db = TestDatabase::create(&admin).await;
    let (a, b, c) = (node(&db.url).await, node(&db.url).await, node(&db.url).await);
    let held = a.lock("push:r").await.unwrap();
    assert!(b.try_lock("push:r").await.unwrap().is_none(), "B is kept out while A holds it");
    assert!(b.try_lock("push:other").await.unwrap().is_some(), "other names are free");

    // B waits, then gives up while PostgreSQL still has its request queued.
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.lock("push:r").await.map(|_| ()) }
    });
    let (watcher, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    eventually("B's request is queued in PostgreSQL", || async {
        let row = watcher
            .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", &[])
            .await
            .unwrap();
        row.get::<_, i64>(0) == 1
    })
    .await;
    waiting.abort();
    drop(held);
    // The abandoned request is granted once A lets go, and released at once.
    eventually("C takes the lock nobody holds any more", || async {
        c.try_lock("push:r").await.unwrap().is_some()
    })
    .await;
    db.drop_now().await;
}
