//! Baseline relay for the benchmarks: nostr-relay-builder 0.44 on the same LMDB backend,
//! with no write policy. Prints `listening on ws://127.0.0.1:<port>` once ready.
//!
//! Usage: relay-builder-baseline <lmdb dir> <port>

use nostr_lmdb::NostrLMDB;
use nostr_relay_builder::prelude::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: relay-builder-baseline <lmdb dir> <port>");
    let port: u16 = args.next().expect("port").parse()?;
    let database = NostrLMDB::open(&dir)?;
    let builder = RelayBuilder::default()
        .addr("127.0.0.1".parse()?)
        .port(port)
        .database(database)
        .max_filter_limit(500)
        .rate_limit(RateLimit { max_reqs: 10_000, notes_per_minute: u32::MAX });
    let relay = LocalRelay::new(builder);
    relay.run().await?;
    println!("listening on {}", relay.url().await);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
