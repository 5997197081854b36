//! A 200 MB push and clone stream through the server: its memory does not grow with the
//! pack size.

use grasp_tests::events;
use grasp_tests::git::Workdir;
use grasp_tests::memory::{peak_rss, rss, write_random_file};
use grasp_tests::{frontend_tests, publish, Frontend};
use nostr_sdk::prelude::*;

const SIZE: u64 = 200 * 1024 * 1024;
const LIMIT: u64 = 100 * 1024 * 1024;

async fn large_push_and_clone_keep_server_memory_flat(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, "big", &server.addr, &[])).await.unwrap();
    let url = server.clone_url(&owner.public_key(), "big");

    let work = Workdir::new();
    write_random_file(&work.path().join("random.bin"), SIZE);
    // Random data does not compress: skip zlib work on both ends.
    work.ok(&["-c", "core.looseCompression=0", "add", "random.bin"]);
    work.ok(&["commit", "-q", "-m", "200 MB of random data"]);
    let c1 = work.rev("HEAD");
    publish(&client, &events::state(&owner, "big", &[("refs/heads/main", &c1)], Some("main"))).await.unwrap();

    let idle = rss(server.pid());
    work.ok(&["-c", "pack.compression=0", "push", &url, "main"]);
    let after_push = peak_rss(server.pid());
    let clone = Workdir::clone_from(&url, &["--no-checkout"]);
    assert_eq!(clone.rev("HEAD"), c1);
    let after_clone = peak_rss(server.pid());

    let growth = after_clone.saturating_sub(idle);
    println!(
        "server RSS: idle {} MiB; peak after 200 MiB push {} MiB; peak after clone {} MiB; growth {} MiB (limit {} MiB)",
        idle >> 20,
        after_push >> 20,
        after_clone >> 20,
        growth >> 20,
        LIMIT >> 20
    );
    assert!(growth < LIMIT, "server memory grew by {} MiB", growth >> 20);
}

frontend_tests!(large_push_and_clone_keep_server_memory_flat,);
