//! # grasp-lib
//!
//! The protocol core of a GRASP server (Git Relays Authorized via Signed-Nostr Proofs).
//! A GRASP server is one origin that serves a Nostr relay at `/` and git smart-HTTP at
//! `/<npub>/<identifier>.git`; write permission comes from signed Nostr events.
//!
//! Frontends (the inline warp server, a proxy, git hooks) stay thin: they turn their input
//! into calls on a [`Grasp`] handle, which owns the configuration, the event store, the
//! relay engine and the metrics.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`nip34`] | the event model: announcements, states, coordinates, identifiers |
//! | [`policy`] | which events are accepted, held or rejected (GRASP-01/05/06, curation) |
//! | [`curation`] | the operator's allow / deny lists, reloaded while the server runs |
//! | [`maintainers`] | the confirmed maintainer set (maintainer model v3) |
//! | [`origin`] | this server's public origin and URL matching |
//! | [`store`] | the event store (LMDB, PostgreSQL or memory) |
//! | [`git`] | bare repositories, pkt-lines, smart HTTP by spawning git |
//! | [`authorization`] | may this push land? (state events, `refs/nostr`) |
//! | [`alignment`] | the ref changes that make a repository follow a state |
//! | [`purgatory`] | events held until their git data arrives (durable) |
//! | [`hosting`] | repositories + events + purgatory: the git-data step, releases, expiry |
//! | [`hunt`] | fetching the missing git data of held events from other clone URLs |
//! | [`fetch`] | ref advertisement and upload-pack (clone, fetch), metered |
//! | [`push`] | a receive-pack request end to end; the pre- and post-push steps every frontend runs |
//! | `local_api` | the node's Unix-socket API for git hooks (`grasp-hook`) on the same machine |
//! | [`recovery`] | finishing at start what a crash interrupted |
//! | [`relay`] | the transport-agnostic Nostr relay engine (NIP-01/45/77) |
//! | [`sync`] | GRASP-02 relay sync: pulling hosted repositories' events from peer relays |
//! | [`nip11`] | the relay information document |
//! | [`identity`] | the relay's own kind 0, kind 10002 and NIP-05 document (with an owner key) |
//! | [`config`] | configuration from file, environment and CLI |
//! | [`metrics`] | Prometheus metrics |
//! | [`limits`] | timeouts, connection caps and the open-file limit every frontend applies |
//! | [`web`] | routing, CORS, pages, NIP-11 and `/metrics` responses, hosting a relay connection |
//! | [`cli`] | a frontend binary's command line and one-line failures |
//!
//! ```
//! # tokio_test::block_on(async {
//! use grasp_lib::{config::Config, store::StoreBackend, Grasp};
//!
//! let config = Config {
//!     domain: Some("git.example.com".into()),
//!     database_backend: StoreBackend::Memory,
//!     ..Config::default()
//! };
//! let grasp = Grasp::open(config).await.unwrap();
//! let mut session = grasp.relay().session("127.0.0.1".parse().unwrap());
//! let replies = session.handle(r#"["REQ","sub",{"kinds":[30617]}]"#).await;
//! assert_eq!(replies, vec![r#"["EOSE","sub"]"#.to_string()]);
//! # });
//! ```

#![deny(missing_docs, unsafe_code)]

pub mod access;
pub mod alignment;
pub mod authorization;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crash;
pub mod curation;
pub mod fetch;
pub mod git;
pub mod hosting;
pub mod hunt;
pub mod identity;
pub mod ingest;
pub mod limits;
#[cfg(unix)]
pub mod local_api;
pub mod logging;
pub mod maintainers;
pub mod metrics;
pub mod mirrors;
pub mod nip11;
pub mod nip34;
pub mod origin;
pub mod outbound;
pub mod policy;
pub mod purgatory;
pub mod push;
pub mod rate_limit;
pub mod readiness;
pub mod recovery;
pub mod relay;
pub mod store;
pub mod summary;
pub mod sync;
pub mod web;

use std::sync::Arc;

use authorization::EventView;
use config::Config;
use git::{RepoRef, Repositories};
use hosting::Hosting;
use ingest::Ingest;
use metrics::Metrics;
use origin::ServiceOrigin;
use purgatory::{Purgatory, PurgatoryError};
use relay::Relay;
use store::Publisher;
use store::{EventStore, StoreBackend, StoreError};

/// Starts relay sync (GRASP-02) when it is on.
/// Runs relay sync while this node leads (always, for a single node): on a cluster the
/// leader syncs for everyone, and a node that loses the lease stops, so two nodes never
/// sync at once for long.
async fn sync_while_leading(
    config: Config,
    origin: ServiceOrigin,
    relay: Arc<Relay>,
    hosting: Arc<Hosting>,
    metrics: Metrics,
    outbound: Arc<outbound::OutboundPolicy>,
    followed: sync::plus::EligibleAuthors,
) {
    if !config.sync {
        tracing::info!("relay sync is off: events arrive only from clients");
        return;
    }
    let leadership = hosting.leadership().clone();
    let own = sync::peers::OwnUrls::new(origin, config.bind_address);
    // Registered once, when sync first starts, so a restart reports in the same series.
    let mut sync_metrics = None;
    loop {
        leadership.acquired().await;
        let settings = config.sync_settings();
        let registered =
            sync_metrics.get_or_insert_with(|| sync::register_metrics(metrics.registry(), &settings)).clone();
        let running = sync::start_with_metrics(
            relay.clone(),
            hosting.clone(),
            own.clone(),
            settings,
            registered,
            outbound.clone(),
            followed.clone(),
        );
        leadership.lost().await;
        tracing::info!("relay sync stopped: this node no longer holds the leader lease");
        running.stop();
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// `domain` was not set (frontends that bind a socket default it to the bound address).
    #[error("bad configuration: domain: must be set to the public host[:port] of this server")]
    MissingDomain,
    /// The event store could not be opened.
    #[error("cannot open the event store {location}: {error}")]
    Store {
        /// Where the store lives (`at <relay_data_path>`, or `in PostgreSQL`).
        location: String,
        /// The store error (in the message, not repeated as a source).
        error: StoreError,
    },
    /// The `/prs/` directory could not be prepared.
    #[error("cannot prepare the /prs/ repositories: {0}")]
    Prs(git::GitError),
    /// The listener could not be bound.
    #[error("cannot listen on {address}: {error}")]
    Listen {
        /// The configured `bind_address`.
        address: std::net::SocketAddr,
        /// The error (in the message, not a separate source, so it is printed once).
        error: std::io::Error,
    },
    /// The purgatory journal could not be opened.
    #[error("cannot open purgatory at {path}: {source}")]
    Purgatory {
        /// Where the journal lives.
        path: std::path::PathBuf,
        /// The error.
        source: PurgatoryError,
    },
}

/// Starts the hunter for `hosting` (when `hunting` is on), resuming what purgatory holds.
/// On a cluster the leader hunts for every node: the others forward their requests to it
/// ([`cluster_hunting`]).
fn start_hunting(
    config: &Config,
    hosting: &Arc<Hosting>,
    metrics: &Metrics,
    outbound: &Arc<outbound::OutboundPolicy>,
    private_peers: Option<Arc<access::PrivatePeers>>,
) -> hunt::HuntRequests {
    if !config.hunting {
        tracing::info!("hunting is off: held events wait for a push");
        return hunt::HuntRequests::disabled();
    }
    let quarantine = hunt::fetch::quarantine_root(&config.git_data_path);
    hunt::fetch::sweep(&quarantine);
    let settings = config.hunt_settings();
    let hunt_metrics = hunt::metrics::HuntMetrics::register(metrics.registry());
    let remote = Arc::new(
        hunt::HostingRemote::new(
            hosting.clone(),
            quarantine,
            settings.fetch,
            config.storage_limits(),
            hunt_metrics.clone(),
        )
        .with_policy(outbound.clone())
        .with_url_caps(settings.urls)
        .with_private_peers(private_peers),
    );
    let status_path = config
        .database_backend
        .keeps_local_files()
        .then(|| hunt::status::HuntStatus::path(&config.relay_data_path));
    let start = {
        let hosting = hosting.clone();
        move || {
            let status =
                status_path.as_deref().map(hunt::status::HuntStatus::read).transpose().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "the hunt status is unreadable; starting afresh");
                    None
                });
            let mut held: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
            for entry in hosting
                .purgatory()
                .all_held()
                .into_iter()
                .filter(|e| e.kind != purgatory::HeldKind::Dependent)
            {
                let at = held.entry(entry.identifier).or_default();
                *at = (*at).max(entry.received_at);
            }
            let resume =
                hunt::Resume { held: held.into_iter().collect(), status: status.unwrap_or_default() };
            hunt::Hunter::start(remote.clone(), settings, resume, status_path.clone(), hunt_metrics.clone())
        }
    };
    match hosting.store().postgres() {
        Some(db) => cluster_hunting(db.clone(), hosting.clone(), start),
        None => start(),
    }
}

/// The channel hunting requests travel on between the nodes of a cluster (payload:
/// `<source>\t<identifier>`).
const HUNT_CHANNEL: &str = "grasp_hunt";

/// Hunting on a cluster: every node's requests go to [`HUNT_CHANNEL`]; the node that holds
/// the leader lease runs the hunter (started by `start`, resuming from the shared
/// purgatory) and feeds it what arrives there. A new leader resumes everything held, so a
/// request in flight when the leader changed is not lost.
fn cluster_hunting(
    db: store::postgres::PostgresDatabase,
    hosting: Arc<Hosting>,
    start: impl Fn() -> hunt::HuntRequests + Send + 'static,
) -> hunt::HuntRequests {
    let (requests, mut outgoing) = hunt::HuntRequests::forwarding();
    let sender = db.clone();
    tokio::spawn(async move {
        while let Some((identifier, source)) = outgoing.recv().await {
            let payload = format!("{}\t{identifier}", source.as_str());
            if let Err(e) = sender.notify(HUNT_CHANNEL, &payload).await {
                tracing::warn!(error = %e, identifier, "forwarding a hunt request failed");
            }
        }
    });
    let hunter: Arc<std::sync::Mutex<Option<hunt::HuntRequests>>> = Arc::default();
    let feed = hunter.clone();
    tokio::spawn(store::postgres::listen::listen(db, HUNT_CHANNEL, move |payload| {
        let feed = feed.clone();
        async move {
            let Some((source, identifier)) = payload.split_once('\t') else { return };
            let source =
                if source == "sync" { policy::EventSource::Sync } else { policy::EventSource::Client(None) };
            if let Some(hunter) = feed.lock().expect("hunter slot poisoned").as_ref() {
                hunter.enqueue(identifier, source);
            }
        }
    }));
    tokio::spawn(async move {
        let leadership = hosting.leadership().clone();
        loop {
            leadership.acquired().await;
            hosting.catch_up().await;
            *hunter.lock().expect("hunter slot poisoned") = Some(start());
            tracing::info!("hunting for the cluster");
            leadership.lost().await;
            // Dropping the last request handle ends the hunter.
            hunter.lock().expect("hunter slot poisoned").take();
        }
    });
    requests
}

/// Moves what a node's purgatory journal held (from before purgatory was shared in
/// PostgreSQL) into the shared purgatory, once: the journal is renamed afterwards.
async fn import_local_purgatory(purgatory: &Purgatory, relay_data_path: &std::path::Path) {
    let dir = Purgatory::directory(relay_data_path);
    let Ok((held, placeholders)) = Purgatory::read(&dir) else { return };
    if held.is_empty() && placeholders.is_empty() {
        return;
    }
    let (events, waiting) = (held.len(), placeholders.len());
    for entry in held {
        if let Err(e) = purgatory.hold(entry).await {
            tracing::warn!(error = %e, "importing the local purgatory journal failed; it stays for the next start");
            return;
        }
    }
    if let Err(e) = purgatory.add_placeholders(placeholders).await {
        tracing::warn!(error = %e, "importing the local purgatory journal failed; it stays for the next start");
        return;
    }
    let journal = dir.join("purgatory.jsonl");
    if let Err(e) = std::fs::rename(&journal, journal.with_extension("jsonl.imported")) {
        tracing::warn!(error = %e, "renaming the imported purgatory journal failed");
    }
    tracing::info!(
        held = events,
        placeholders = waiting,
        "moved the local purgatory journal into the shared purgatory"
    );
}

/// The channel a node that reloads its curation lists tells the others on (payload: the
/// node's notification name).
const CURATION_CHANNEL: &str = "grasp_curation";

/// Re-reads the curation file off the async threads; the lists in force stay when it does
/// not parse.
async fn reload_curation_file(curation: Arc<curation::Curation>) -> curation::Reload {
    tokio::task::spawn_blocking(move || curation.reload_and_log())
        .await
        .unwrap_or(curation::Reload::Unchanged)
}

/// How often a node catches up with a shared purgatory without being told to (a missed
/// notification costs at most this much delay in what it shows; decisions catch up first).
const SHARED_PURGATORY_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// Share of the LMDB map at which the fill is logged as a warning.
const STORE_FILL_WARNING: f64 = 0.8;

/// Publishes how full the LMDB store is, every minute, and warns from 80 % (a full map
/// refuses new events until `lmdb_map_size` is raised).
async fn watch_store_fill(store: EventStore, metrics: Metrics) {
    let mut warned = false;
    loop {
        if let Some((used, size)) = store.map_usage() {
            metrics.store_used.set(used as i64);
            metrics.store_map_size.set(size as i64);
            let full = used as f64 / size.max(1) as f64;
            if full >= STORE_FILL_WARNING && !warned {
                tracing::warn!(
                    used,
                    map_size = size,
                    "the event store is {:.0} % full: raise lmdb_map_size and restart",
                    full * 100.0
                );
            }
            warned = full >= STORE_FILL_WARNING;
        }
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

/// Runs [`recovery::recover`] and logs what it did.
async fn recover_in_background(hosting: Arc<Hosting>) {
    let report = recovery::recover(&hosting).await;
    for error in &report.errors {
        tracing::warn!(%error, "startup recovery");
    }
    tracing::info!(
        repositories = report.repositories,
        released = report.released,
        aligned = report.aligned,
        placeholders = report.placeholders,
        quarantines_removed = report.quarantines_removed,
        "startup recovery finished"
    );
}

/// Makes `/prs/` ready: the shared empty repository that answers for paths nobody pushed
/// to (next to the event store, or temporary with the memory store), and no empty
/// repositories left over from a crash.
async fn prepare_prs(config: &Config) -> Result<git::prs::EmptyRepository, OpenError> {
    let root = config.git_data_path.clone();
    let store_dir = config.database_backend.keeps_local_files().then(|| config.relay_data_path.clone());
    let prepared = tokio::task::spawn_blocking(move || {
        let empty = match &store_dir {
            Some(dir) => git::prs::EmptyRepository::in_dir(dir)?,
            None => git::prs::EmptyRepository::temporary()?,
        };
        let removed = git::prs::remove_empty_repositories(&root);
        if removed > 0 {
            tracing::info!(removed, "removed empty /prs/ repositories");
        }
        Ok::<_, git::GitError>(empty)
    })
    .await
    .map_err(git::GitError::from)
    .and_then(|r| r);
    prepared.map_err(OpenError::Prs)
}

/// The shared service handle: everything a frontend needs, cheap to clone.
#[derive(Debug, Clone)]
pub struct Grasp {
    config: Arc<Config>,
    origin: ServiceOrigin,
    store: EventStore,
    relay: Arc<Relay>,
    metrics: Metrics,
    hosting: Arc<Hosting>,
    curation: Arc<curation::Curation>,
    archive: Arc<curation::Selectors>,
    prs_push_limit: Arc<rate_limit::PerIpLimit>,
    push_limit: Arc<rate_limit::PerIpLimit>,
    prs_empty: Option<Arc<git::prs::EmptyRepository>>,
    git_slots: limits::GitSlots,
    access: Option<Arc<access::PrivateAccess>>,
    /// Whole upload-pack answers kept for repeated fetches (with the pack cache).
    responses: Option<Arc<git::pack_cache::response::ResponseCache>>,
}

impl Grasp {
    /// Validates `config`, opens the store and purgatory, builds the relay and starts the
    /// purgatory expiry task and the startup recovery ([`recovery`]), so it must run inside
    /// a Tokio runtime.
    pub async fn open(config: Config) -> Result<Self, OpenError> {
        config.validate()?;
        config.domain.as_deref().ok_or(OpenError::MissingDomain)?;
        rate_limit::set_ipv6_client_prefix(config.ipv6_client_prefix);
        let origin: ServiceOrigin = config.service_origin().expect("validated domain and base path");
        let store = EventStore::open_backend(
            config.database_backend,
            &config.relay_data_path,
            config.lmdb_map_size,
            config.postgres(),
        )
        .await
        .map_err(|error| OpenError::Store {
            location: match config.database_backend {
                StoreBackend::Postgres => "in PostgreSQL".to_owned(),
                _ => format!("at {}", config.relay_data_path.display()),
            },
            error,
        })?;
        let node = cluster::node::set(config.node_id.as_deref());
        let metrics = Metrics::new();
        metrics.node_info.with_label_values(&[node]).set(1);
        Metrics::prime(&metrics.push_refused, authorization::PushBound::ALL.iter().map(|b| b.as_str()));
        Metrics::prime(&metrics.git_busy, ["total", "per_client"]);
        let responses = config.pack_cache_settings().and_then(|cache| {
            git::pack_cache::open_for_serving(&cache, metrics.registry());
            git::pack_cache::response::ResponseCache::open(cache)
        });
        let outbound = Arc::new(
            config
                .outbound_policy(origin.clone())
                .with_metric(outbound::target::refused_metric(metrics.registry())),
        );
        if config.allow_non_global_targets {
            tracing::warn!(
                "allow_non_global_targets: events can make this server dial loopback and private addresses"
            );
        }
        let timers = config.purgatory_timers();
        let purgatory = match (config.database_backend, store.postgres()) {
            (StoreBackend::Memory, _) => Purgatory::in_memory(timers),
            // Every node sharing the database shares purgatory too.
            (_, Some(db)) => Purgatory::shared(db.clone(), timers)
                .await
                .map_err(|source| OpenError::Purgatory { path: db.target().into(), source })?,
            _ => {
                let dir = Purgatory::directory(&config.relay_data_path);
                Purgatory::open(&dir, timers).map_err(|source| OpenError::Purgatory { path: dir, source })?
            }
        }
        .with_caps(config.purgatory_caps());
        let purgatory = Arc::new(purgatory);
        if store.postgres().is_some() {
            import_local_purgatory(&purgatory, &config.relay_data_path).await;
        }
        purgatory.clone().follow_other_nodes(SHARED_PURGATORY_REFRESH).await;
        let limits = config.relay_limits();
        let publisher = Publisher::new(store.clone(), metrics.clone(), limits.queue_budget());
        if let Some(db) = store.postgres() {
            // Events other nodes store reach this node's live subscribers too.
            let local = publisher.clone();
            store::postgres::fanout::start(db.clone(), move |event| local.broadcast(event)).await;
        }
        let repositories = Repositories::new(&config.git_data_path);
        match repositories.migrate_prs_layout() {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "moved /prs/ repositories to their hex-pubkey directories"),
            Err(e) => {
                tracing::warn!(error = %e, "moving /prs/ repositories to their hex-pubkey directories failed")
            }
        }
        let hosting = Hosting::new(
            store.clone(),
            purgatory,
            repositories.with_metrics(metrics.clone()),
            publisher.clone(),
            origin.clone(),
            metrics.clone(),
        )
        .with_maintainer_model(config.maintainer_model());
        let hosting = Arc::new(match store.postgres() {
            Some(db) => {
                let leadership =
                    cluster::Leadership::compete(db.clone(), node.to_owned(), config.leader_lease_term());
                hosting.in_cluster(cluster::ClusterLocks::new(Some(db.clone())), leadership)
            }
            None => hosting,
        });
        if let Some(keys) = config.owner_keys() {
            for event in identity::events(&keys, &origin, &config.relay_name) {
                if let Err(e) = publisher.publish(&event).await {
                    tracing::warn!(error = %e, kind = event.kind.as_u16(), "storing the relay's own identity event failed");
                }
            }
        }
        let curation =
            Arc::new(curation::Curation::load(config.curation_file.as_deref()).map_err(|e| {
                config::ConfigError::Invalid { option: "curation_file", reason: e.to_string() }
            })?);
        let archive = Arc::new(config.archive_selectors());
        let archive_followed = config.sync && config.hunting;
        if !archive.is_empty() && !archive_followed {
            tracing::warn!(
                "archive is set but relay sync or hunting is off: archived repositories only follow \
                 the states clients publish here, and only when their data can be found"
            );
        }
        let prs_push_limit = Arc::new(rate_limit::PerIpLimit::per_minute(config.prs_pushes_per_minute));
        let push_limit = Arc::new(rate_limit::PerIpLimit::per_minute(config.pushes_per_minute));
        let prs_empty = match config.prs_hosting {
            true => Some(Arc::new(prepare_prs(&config).await?)),
            false => None,
        };
        // The people Sync Plus follows: their profiles and relay lists are stored.
        let followed = sync::plus::EligibleAuthors::default();
        let access = config.private_access(&origin).map(Arc::new);
        let private_peers = access.as_ref().map(|_| Arc::new(access::PrivatePeers::new(config.owner_keys())));
        if access.is_some() && config.owner_keys().is_none() {
            tracing::warn!(
                "private_mode without relay_owner_nsec: other private servers cannot mirror with this one \
                 (it has no key to authenticate with)"
            );
        }
        let policy: Arc<dyn policy::EventPolicy> = match config.event_policy {
            config::EventPolicyChoice::Grasp => {
                let hunt = start_hunting(&config, &hosting, &metrics, &outbound, private_peers.clone());
                Arc::new(
                    Ingest::new(hosting.clone())
                        .with_hunting(hunt)
                        .with_prs_hosting(config.prs_hosting)
                        .with_curation(curation.clone())
                        .with_archive(archive.clone())
                        .with_access(access.clone())
                        .with_followed(followed.clone()),
                )
            }
            config::EventPolicyChoice::AcceptAll => {
                tracing::warn!("event_policy = accept-all: every valid event is stored (benchmark mode)");
                Arc::new(policy::AcceptAll)
            }
        };
        let mut relay = Relay::new(publisher, policy, limits, metrics.clone());
        if let Some(access) = &access {
            relay = relay.with_access(access.clone());
        }
        let relay = Arc::new(relay);
        tokio::spawn(hosting.clone().run_expiry());
        tokio::spawn(watch_store_fill(store.clone(), metrics.clone()));
        tokio::spawn(sync_while_leading(
            config.clone(),
            origin.clone(),
            relay.clone(),
            hosting.clone(),
            metrics.clone(),
            outbound.clone(),
            followed,
        ));
        if let (Some(access), Some(peers)) = (&access, &private_peers) {
            mirrors::start(
                hosting.clone(),
                access.clone(),
                peers.clone(),
                outbound.clone(),
                sync::peers::OwnUrls::new(origin.clone(), config.bind_address),
                mirrors::MirrorSettings::for_mode(config.test_mode),
            );
        }
        tokio::spawn(recover_in_background(hosting.clone()));
        tokio::spawn(curation.clone().watch(config.curation_reload_interval()));
        if let Some(db) = store.postgres() {
            // Another node was asked to reload (SIGHUP): this one re-reads its file too.
            let (own, curation) = (db.node().to_owned(), curation.clone());
            store::postgres::listen::listen(db.clone(), CURATION_CHANNEL, move |node| {
                let reload = (node != own).then(|| reload_curation_file(curation.clone()));
                async move {
                    if let Some(reload) = reload {
                        reload.await;
                    }
                }
            })
            .await;
        }
        let git_slots = limits::GitSlots::new(config.git_slot_limits());
        Ok(Self {
            config: Arc::new(config),
            origin,
            store,
            relay,
            metrics,
            hosting,
            curation,
            archive,
            prs_push_limit,
            push_limit,
            prs_empty,
            git_slots,
            access,
            responses,
        })
    }

    /// The cache of whole upload-pack answers, when the pack cache is on.
    pub(crate) fn responses(&self) -> Option<&Arc<git::pack_cache::response::ResponseCache>> {
        self.responses.as_ref()
    }

    /// Who may use this service, when it is private (GRASP-08).
    pub fn access(&self) -> Option<&Arc<access::PrivateAccess>> {
        self.access.as_ref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This server's public origin.
    pub fn origin(&self) -> &ServiceOrigin {
        &self.origin
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The relay engine.
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The hosted bare repositories.
    pub fn repositories(&self) -> &Repositories {
        self.hosting.repos()
    }

    /// Where git reads `repo` from to serve it, or `None` when it is not served (404). A
    /// `/prs/` path nobody has pushed to is answered from one shared empty repository, so a
    /// probe creates nothing on disk; with GRASP-06 off, `/prs/` is not served at all.
    pub fn serving_path(&self, repo: &RepoRef) -> Option<std::path::PathBuf> {
        if repo.is_prs() && !self.config.prs_hosting {
            return None;
        }
        if self.repositories().exists(repo) {
            return Some(self.repositories().path(repo));
        }
        let empty = self.prs_empty.as_ref().filter(|_| repo.is_prs())?;
        Some(empty.path().to_path_buf())
    }

    /// Repositories, events and purgatory together.
    pub fn hosting(&self) -> &Arc<Hosting> {
        &self.hosting
    }

    /// Events held until their git data arrives.
    pub fn purgatory(&self) -> &Purgatory {
        self.hosting.purgatory()
    }

    /// Events released from purgatory from now on (their git data arrived; they are stored
    /// and served). See [`hosting::Hosting::subscribe_released`].
    pub fn released_events(&self) -> tokio::sync::broadcast::Receiver<hosting::ReleasedEvent> {
        self.hosting.subscribe_released()
    }

    /// What push authorization reads: stored events and held ones.
    pub fn event_view(&self) -> &dyn EventView {
        self.hosting.as_ref()
    }

    /// The NIP-11 document (with the curation lists in force now).
    pub fn nip11(&self) -> serde_json::Value {
        nip11::document(&self.config, &self.origin, &self.curation.lists())
    }

    /// The operator's curation lists and where they come from.
    pub fn curation(&self) -> &Arc<curation::Curation> {
        &self.curation
    }

    /// Re-reads the curation file now (what a frontend does on `SIGHUP`); the lists in force
    /// stay when it does not parse. Blocking file I/O runs off the async threads.
    /// On a cluster, the other nodes are told to re-read theirs too ([`CURATION_CHANNEL`]).
    pub async fn reload_curation(&self) -> curation::Reload {
        if let Some(db) = self.store.postgres() {
            if let Err(e) = db.notify(CURATION_CHANNEL, db.node()).await {
                tracing::warn!(error = %e, "telling the other nodes to reload curation failed");
            }
        }
        reload_curation_file(self.curation.clone()).await
    }

    /// Pushes to `/prs/` per client address (`prs_pushes_per_minute`).
    pub fn prs_push_limit(&self) -> &rate_limit::PerIpLimit {
        &self.prs_push_limit
    }

    /// The archive list (GRASP-05): what is taken read-only although it does not list us.
    pub fn archive(&self) -> &curation::Selectors {
        &self.archive
    }
}
