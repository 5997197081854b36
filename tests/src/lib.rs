//! Helpers for black-box tests: start the real binaries (`grasp-server`, or `grasp-proxy` in
//! front of nginx + fcgiwrap + `git http-backend`) on 127.0.0.1 with ephemeral ports and
//! temporary directories, build signed events, talk raw websocket, and poll for conditions
//! with a deadline instead of sleeping. [`frontend_tests!`] runs a test against both
//! frontends.

pub mod browser;
pub mod events;
pub mod frontend;
pub mod git;
pub mod hostile;
pub mod http;
pub mod layering;
pub mod memory;
pub mod metrics;
pub mod poll;
pub mod postgres;
pub mod process;
pub mod procfs;
pub mod raw;
pub mod relays;
pub mod remotes;
pub mod served;
pub mod server;
pub mod stock;
pub mod sync;
pub mod upstream;

pub use frontend::Frontend;
pub use poll::wait_until;
pub use raw::RawClient;
pub use server::{TestServer, TestServerBuilder};

use nostr_sdk::prelude::*;

/// Publishes with a nostr-sdk client; `Err` carries the relay's `OK false` message.
pub async fn publish(client: &Client, event: &Event) -> Result<(), String> {
    let output = client.send_event(event).await.map_err(|e| e.to_string())?;
    match output.failed.values().next() {
        Some(reason) => Err(reason.clone()),
        None if output.success.is_empty() => Err("no relay accepted the event".to_owned()),
        None => Ok(()),
    }
}

/// Fetches stored events with a nostr-sdk client (REQ until EOSE).
pub async fn fetch(client: &Client, filter: Filter) -> Vec<Event> {
    client
        .fetch_events(filter, std::time::Duration::from_secs(10))
        .await
        .expect("fetch events")
        .into_iter()
        .collect()
}

/// Makes `identifier` a served repository of `owner` on `server`: publishes the
/// announcement (held until git data arrives), a state for one commit, and pushes that
/// commit with the real git CLI, which releases both. Returns the repository coordinate.
pub async fn host_repository(
    server: &TestServer,
    client: &Client,
    owner: &Keys,
    identifier: &str,
    maintainers: &[PublicKey],
) -> String {
    let addr = &server.addr;
    publish(client, &events::announcement(owner, identifier, addr, maintainers))
        .await
        .expect("announcement accepted");
    let work = git::Workdir::new();
    let commit = work.commit("README", identifier.as_bytes());
    publish(client, &events::state(owner, identifier, &[("refs/heads/main", &commit)], Some("main")))
        .await
        .expect("state accepted");
    work.ok(&["push", &server.clone_url(&owner.public_key(), identifier), "main"]);
    events::coordinate(&owner.public_key(), identifier)
}
