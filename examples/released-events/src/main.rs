//! React to events released from purgatory.
//!
//! A GRASP node holds a new repository announcement and its state event until the git data
//! they describe arrives. A forge embedding grasp-lib often wants to know the moment such
//! an event becomes public (show the repository, notify followers, mirror it): subscribe to
//! `Grasp::released_events()`.
//!
//! This program runs a node in memory, publishes an announcement and a state (both held),
//! then plays the part of a forge whose own git server stored a push: it writes the commit
//! into the bare repository with plain `git push` and tells grasp-lib with
//! `Grasp::push_received`, the same call a `post-receive` hook makes through the local API.
//! Each released event is printed as it arrives; the program exits once both are out.
//!
//! Run it: `cargo run -p example-released-events`

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use grasp_lib::config::Config;
use grasp_lib::git::pktline::RefUpdate;
use grasp_lib::git::{RepoRef, ZERO_OID};
use grasp_lib::nip34::RepoIdentifier;
use grasp_lib::store::StoreBackend;
use grasp_lib::Grasp;
use nostr::nips::nip19::ToBech32;
use nostr::{EventBuilder, Keys, Kind, Tag};

/// The public host this demo node pretends to have (events are never fetched from it).
const DOMAIN: &str = "127.0.0.1:7334";

fn git(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "demo")
        .env("GIT_AUTHOR_EMAIL", "demo@example.invalid")
        .env("GIT_COMMITTER_NAME", "demo")
        .env("GIT_COMMITTER_EMAIL", "demo@example.invalid")
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn tag(values: &[&str]) -> anyhow::Result<Tag> {
    Ok(Tag::parse(values.iter().copied())?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = Config {
        domain: Some(DOMAIN.into()),
        database_backend: StoreBackend::Memory,
        git_data_path: dir.path().join("repos"),
        ..Config::default()
    };
    let grasp = Grasp::open(config).await?;
    // Subscribe before anything can be released.
    let mut released = grasp.released_events();

    let owner = Keys::generate();
    let npub = owner.public_key().to_bech32()?;
    let announcement = EventBuilder::new(Kind::Custom(30617), "")
        .tags([
            tag(&["d", "demo"])?,
            tag(&["clone", &format!("http://{DOMAIN}/{npub}/demo.git")])?,
            tag(&["relays", &format!("ws://{DOMAIN}")])?,
        ])
        .sign_with_keys(&owner)?;
    let outcome = grasp.relay().ingest(announcement).await;
    println!("announcement: OK {} {:?}", outcome.accepted, outcome.message);

    let work = dir.path().join("work");
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "-q", "-b", "main"])?;
    std::fs::write(work.join("README"), "hello")?;
    git(&work, &["add", "README"])?;
    git(&work, &["commit", "-q", "-m", "first"])?;
    let commit = git(&work, &["rev-parse", "HEAD"])?;
    let state = EventBuilder::new(Kind::Custom(30618), "")
        .tags([
            tag(&["d", "demo"])?,
            tag(&["refs/heads/main", &commit])?,
            tag(&["HEAD", "ref: refs/heads/main"])?,
        ])
        .sign_with_keys(&owner)?;
    let outcome = grasp.relay().ingest(state).await;
    println!("state: OK {} {:?}", outcome.accepted, outcome.message);

    // The forge's git stored the push (its own authorization already ran)...
    let repo = RepoRef::new(owner.public_key(), RepoIdentifier::new("demo")?);
    let bare = grasp.repositories().path(&repo);
    git(&work, &["push", "-q", &bare.display().to_string(), "main"])?;
    // ...and tells grasp-lib, which releases what the new data satisfies.
    let update = RefUpdate { old: ZERO_OID.into(), new: commit, name: "refs/heads/main".into() };
    let report = grasp.push_received(&repo, &[update], None).await;
    println!("push processed: {} released, {} aligned", report.released.len(), report.aligned.len());

    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), released.recv())
            .await
            .context("no released event within 10 s")??;
        println!("released {} {} ({})", event.kind.as_str(), event.event.id, event.identifier);
        kinds.push(event.kind.as_str());
    }
    kinds.sort();
    if kinds != ["announcement", "state"] {
        bail!("expected the announcement and the state to be released, got {kinds:?}");
    }
    Ok(())
}
