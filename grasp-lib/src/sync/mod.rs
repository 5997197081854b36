//! GRASP-02 relay sync: pull the events of hosted repositories from the other relays their
//! announcements list, both what happened before we connected and what happens after.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`peers`] | which relays are peers; canonical URLs; our own URL in every spelling |
//! | [`scope`] | what this server hosts, read from the store and purgatory |
//! | [`filters`] | the filters in layers, batched and consolidated to fit a peer |
//! | [`historic`] | negentropy reconciliation, or REQ pages with `until` |
//! | [`live`] | the live subscriptions of a connection |
//! | [`health`] | backoff, cool-down, dead peers, `since` catch-up, daily reconciliation |
//! | [`peer`] | one peer's task: connection, history, live, scope changes |
//! | [`remote`] | the [`remote::Remote`] trait and its nostr-sdk implementation |
//! | [`ingest`] | synced events into the relay's acceptance policy |
//! | [`rejected`] | the bounded memory of refused events (and decision 10) |
//! | [`metrics`] | `ngit_sync_*` / `grasp_sync_*` metrics |
//! | [`plus`] | GRASP-03 Sync Plus: the relays people use (NIP-65), followed as more peers |
//!
//! Sync only pulls. Every event a peer sends goes through the same acceptance policy as a
//! client's EVENT; duplicates are not stored or broadcast again, so two servers hosting the
//! same repository and syncing from each other stop as soon as both have every event.

pub mod filters;
pub mod health;
pub mod historic;
pub mod ingest;
pub mod live;
pub mod metrics;
#[cfg(test)]
mod mock;
pub mod peer;
pub mod peers;
pub mod plus;
pub mod rejected;
pub mod remote;
pub mod scope;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::{Client, ClientOptions, RelayOptions};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hosting::Hosting;
use crate::metrics::Metrics;
use crate::nip34::kinds;
use crate::relay::Relay;
use filters::{FilterPlan, SyncScope, ROOT_KINDS};
use ingest::{Refetch, SyncAdmission, SyncIngest};
use metrics::SyncMetrics;
use peer::{PeerCommand, PeerSession, PeerSettings};
use peers::{OwnUrls, PeerUrl};
use rejected::MemoryLimits;
use remote::{RemoteTimeouts, SdkRemote};

/// Every relay sync setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    /// Relays always synced with, whatever the announcements say.
    pub bootstrap: Vec<PeerUrl>,
    /// Most peers at once.
    pub max_peers: usize,
    /// How each peer session runs.
    pub peer: PeerSettings,
    /// Bounds of the memory of refused events.
    pub memory: MemoryLimits,
    /// How fast one peer's events are taken in.
    pub budgets: ingest::PeerBudgets,
    /// Connection and request timeouts.
    pub timeouts: RemoteTimeouts,
    /// How long to gather changes before re-reading the scope.
    pub debounce: Duration,
    /// Re-read the scope at least this often.
    pub refresh: Duration,
    /// GRASP-03 Sync Plus.
    pub plus: plus::PlusSettings,
    /// The key this server answers peers' NIP-42 challenges with (its owner key): private
    /// servers (GRASP-08) serve only members. `None`: challenges go unanswered.
    pub identity: Option<nostr::Keys>,
}

impl SyncSettings {
    /// The settings of a public server (no bootstrap relays), or the short timers a test
    /// suite runs with.
    pub fn for_mode(test_mode: bool) -> Self {
        let timers =
            if test_mode { health::HealthTimers::test_mode() } else { health::HealthTimers::default() };
        let memory =
            if test_mode { rejected::MemoryLimits::test_mode() } else { rejected::MemoryLimits::default() };
        let (debounce, refresh) = if test_mode { (100, 1) } else { (1000, 30) };
        Self {
            bootstrap: Vec::new(),
            max_peers: 50,
            peer: PeerSettings {
                historic: historic::HistoricSettings::default(),
                limits: filters::FilterLimits::default(),
                timers,
            },
            memory,
            budgets: ingest::PeerBudgets::default(),
            timeouts: remote::RemoteTimeouts::for_mode(test_mode),
            debounce: Duration::from_millis(debounce),
            refresh: Duration::from_secs(refresh),
            plus: plus::PlusSettings::for_mode(test_mode),
            identity: None,
        }
    }
}

/// A running relay sync; dropping it does not stop it, [`SyncHandle::stop`] does.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    stop: CancellationToken,
}

impl SyncHandle {
    /// Stops every peer session and closes their connections.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

struct PeerTask {
    stop: CancellationToken,
    commands: mpsc::UnboundedSender<PeerCommand>,
}

/// Starts relay sync in the background: one task that follows what is hosted and
/// manages the peers, and one task per peer.
///
/// [`Grasp::open`](crate::Grasp::open) calls it when `sync` is on; an embedding program that
/// assembles its own node passes the same relay and hosting its clients use:
///
/// ```
/// # tokio_test::block_on(async {
/// use grasp_lib::sync::{self, peers::{OwnUrls, PeerUrl}, SyncSettings};
/// use grasp_lib::{config::Config, store::StoreBackend, Grasp};
///
/// let dir = tempfile::tempdir().unwrap();
/// let config = Config {
///     domain: Some("git.example.com".into()),
///     database_backend: StoreBackend::Memory,
///     git_data_path: dir.path().join("git"),
///     relay_data_path: dir.path().join("relay"),
///     sync: false,
///     ..Config::default()
/// };
/// let grasp = Grasp::open(config).await.unwrap();
/// let own = OwnUrls::new(grasp.origin().clone(), "127.0.0.1:7334".parse().unwrap());
/// let settings = SyncSettings {
///     // Synced with whatever the announcements say; nothing listens on port 9 here.
///     bootstrap: vec![PeerUrl::parse("ws://127.0.0.1:9").unwrap()],
///     ..SyncSettings::for_mode(true)
/// };
/// let policy = std::sync::Arc::new(grasp_lib::outbound::OutboundPolicy::new(grasp.origin().clone()));
/// // Sync Plus fills this with the people it follows; the acceptance policy may read it.
/// let followed = sync::plus::EligibleAuthors::default();
/// let handle = sync::start(
///     grasp.relay().clone(),
///     grasp.hosting().clone(),
///     own,
///     settings,
///     grasp.metrics(),
///     policy,
///     followed,
/// );
/// handle.stop();
/// # });
/// ```
pub fn start(
    relay: Arc<Relay>,
    hosting: Arc<Hosting>,
    own: OwnUrls,
    settings: SyncSettings,
    metrics: &Metrics,
    outbound: Arc<crate::outbound::OutboundPolicy>,
    followed: plus::EligibleAuthors,
) -> SyncHandle {
    let metrics = register_metrics(metrics.registry(), &settings);
    start_with_metrics(relay, hosting, own, settings, metrics, outbound, followed)
}

/// Registers the sync metrics in `registry` for a sync with `settings`: its bootstrap peers
/// named in labels, and the series of every purpose, lookup result and refusal source
/// present from the start.
pub fn register_metrics(registry: &prometheus::Registry, settings: &SyncSettings) -> SyncMetrics {
    let metrics = SyncMetrics::register(registry)
        .with_labelled(settings.bootstrap.iter().map(|p| p.as_str().to_owned()));
    for purpose in plus::coverage::Purpose::ALL {
        metrics.plus_events.with_label_values(&[purpose.as_str()]);
    }
    for result in ["found", "none", "error"] {
        metrics.plus_lookups.with_label_values(&[result]);
    }
    for source in ["peer", "sync_plus"] {
        metrics.budget_refusals.with_label_values(&[source]);
    }
    metrics
}

/// [`start`] with metrics registered before ([`register_metrics`]): a node that
/// stops syncing and starts again (a cluster node that lost the leader lease and took it
/// back) keeps reporting in the same series.
pub fn start_with_metrics(
    relay: Arc<Relay>,
    hosting: Arc<Hosting>,
    own: OwnUrls,
    settings: SyncSettings,
    metrics: SyncMetrics,
    outbound: Arc<crate::outbound::OutboundPolicy>,
    followed: plus::EligibleAuthors,
) -> SyncHandle {
    let stop = CancellationToken::new();
    let (refetch_tx, refetch_rx) = mpsc::unbounded_channel();
    let ingest = Arc::new(
        SyncIngest::new(relay.clone(), hosting.clone(), settings.memory, metrics.clone(), refetch_tx)
            .with_budgets(settings.budgets),
    );
    let dirty = Arc::new(Notify::new());
    // Sync must see every stored event: a budget far above a client connection's.
    let budget = crate::store::QueueBudget { events: 100_000, bytes: 64 * 1024 * 1024 };
    tokio::spawn(follow_stored(
        relay.subscribe_live_with(budget),
        ingest.clone(),
        dirty.clone(),
        settings.plus.enabled,
        stop.clone(),
    ));
    tokio::spawn(follow_expired(hosting.expired_events(), ingest.clone(), dirty.clone(), stop.clone()));
    tokio::spawn(follow_purgatory(hosting.clone(), dirty.clone(), stop.clone()));
    let supervisor = Supervisor {
        hosting,
        own,
        settings,
        metrics,
        ingest,
        dirty,
        peers: HashMap::new(),
        outbound,
        mailboxes: HashMap::new(),
        followed,
        identities: Arc::default(),
    };
    tokio::spawn(supervisor.run(refetch_rx, stop.clone()));
    SyncHandle { stop }
}

/// Every stored event: refused events that waited for it are evaluated again; new
/// repositories and roots change the scope.
async fn follow_stored(
    mut live: crate::store::LiveReceiver,
    ingest: Arc<SyncIngest>,
    dirty: Arc<Notify>,
    plus: bool,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            _ = stop.cancelled() => return,
        };
        match received {
            Ok(live) => {
                let kind = live.event.kind.as_u16();
                if kind == kinds::REPO_ANNOUNCEMENT || kind == kinds::DELETION || ROOT_KINDS.contains(&kind) {
                    dirty.notify_one();
                } else if plus && (kind == plus::RELAY_LIST || replies(&live.event)) {
                    // Sync Plus follows people's relay lists and thread participants.
                    dirty.notify_one();
                }
                if !live.event.kind.is_ephemeral() {
                    ingest.on_stored(&live.event).await;
                }
            }
            Err(crate::store::live::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "relay sync skipped stored events; evaluating refusals again");
                dirty.notify_one();
                ingest.on_feed_gap().await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// True when `event` references an event by id (`e`, `E`, `q`): it may take part in a
/// thread Sync Plus follows.
fn replies(event: &nostr::Event) -> bool {
    event.tags.iter().any(|t| matches!(t.as_slice().first().map(String::as_str), Some("e" | "E" | "q")))
}

/// Held events that expired: their synced copies are refused for a while (decision 10).
async fn follow_expired(
    mut expired: broadcast::Receiver<nostr::Event>,
    ingest: Arc<SyncIngest>,
    dirty: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            received = expired.recv() => received,
            _ = stop.cancelled() => return,
        };
        match received {
            Ok(event) => {
                ingest.on_expired(&event);
                if event.kind.as_u16() == kinds::REPO_ANNOUNCEMENT {
                    dirty.notify_one();
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "relay sync missed expired events; their copies may be held once more"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Purgatory changes (announcements held or dropped) change the scope.
async fn follow_purgatory(hosting: Arc<Hosting>, dirty: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = hosting.purgatory().changed_or(Duration::from_secs(3600)) => dirty.notify_one(),
            _ = stop.cancelled() => return,
        }
    }
}

struct Supervisor {
    hosting: Arc<Hosting>,
    own: OwnUrls,
    settings: SyncSettings,
    metrics: SyncMetrics,
    ingest: Arc<SyncIngest>,
    dirty: Arc<Notify>,
    peers: HashMap<PeerUrl, PeerTask>,
    outbound: Arc<crate::outbound::OutboundPolicy>,
    /// Sync Plus relays: a session each, with a plan of its own.
    mailboxes: HashMap<PeerUrl, (PeerTask, watch::Sender<Arc<FilterPlan>>)>,
    /// The people Sync Plus follows (shared with the acceptance policy).
    followed: plus::EligibleAuthors,
    /// Who was looked up on the index relays, and with what result.
    identities: Arc<plus::identity::IdentityBook>,
}

impl Supervisor {
    async fn run(mut self, mut refetch: mpsc::UnboundedReceiver<Refetch>, stop: CancellationToken) {
        // Every dial (reconnects too) goes through the outbound policy, pinned to the
        // addresses it vetted.
        let builder = Client::builder()
            .websocket_transport(crate::outbound::websocket::PinnedTransport::new(self.outbound.clone()))
            .admit_policy(SyncAdmission::new(self.ingest.clone()));
        // With an identity, peers that ask (private servers) get a NIP-42 answer, and
        // subscriptions they closed for want of it are opened again.
        let client = match self.settings.identity.clone() {
            Some(keys) => {
                builder.signer(keys).opts(ClientOptions::new().automatic_authentication(true)).build()
            }
            None => builder.opts(ClientOptions::new().automatic_authentication(false)).build(),
        };
        if self.settings.plus.enabled {
            tokio::spawn(plus::identity::run(
                client.clone(),
                self.settings.plus.clone(),
                self.followed.clone(),
                self.identities.clone(),
                self.dirty.clone(),
                self.metrics.clone(),
                stop.child_token(),
            ));
        }
        let (plans, _) =
            watch::channel(Arc::new(FilterPlan::new(SyncScope::default(), &self.settings.peer.limits)));
        let mut next_refresh = Instant::now();
        loop {
            self.rescan(&client, &plans, &stop).await;
            next_refresh = next_refresh.max(Instant::now() + self.settings.refresh);
            loop {
                tokio::select! {
                    _ = self.dirty.notified() => {
                        // Let a burst of changes settle into one rescan.
                        tokio::select! {
                            _ = tokio::time::sleep(self.settings.debounce) => {}
                            _ = stop.cancelled() => {}
                        }
                        break;
                    }
                    Some((peer, ids)) = refetch.recv() => {
                        let task = self.peers.get(&peer).or_else(|| self.mailboxes.get(&peer).map(|(t, _)| t));
                        if let Some(task) = task {
                            let _ = task.commands.send(PeerCommand::Refetch(ids));
                        }
                    }
                    _ = tokio::time::sleep_until(next_refresh) => {
                        next_refresh = Instant::now() + self.settings.refresh;
                        self.ingest.sweep();
                    }
                    _ = stop.cancelled() => break,
                }
            }
            if stop.is_cancelled() {
                break;
            }
        }
        for (_, task) in self.peers.drain() {
            task.stop.cancel();
        }
        for (_, (task, _)) in self.mailboxes.drain() {
            task.stop.cancel();
        }
        client.shutdown().await;
    }

    /// Re-reads the scope, tells the peers, and starts or stops peers.
    async fn rescan(
        &mut self,
        client: &Client,
        plans: &watch::Sender<Arc<FilterPlan>>,
        stop: &CancellationToken,
    ) {
        let hosted = match scope::gather(&self.hosting).await {
            Ok(hosted) => hosted,
            Err(e) => {
                tracing::warn!(error = %e, "relay sync could not read what is hosted");
                return;
            }
        };
        if plans.borrow().scope != hosted.scope {
            // One plan for every peer (with the configured limits); planning is not free.
            plans.send_replace(Arc::new(FilterPlan::new(hosted.scope.clone(), &self.settings.peer.limits)));
        }
        let outbound = &self.outbound;
        let wanted = peers::discover(
            &self.settings.bootstrap,
            &hosted.announcements,
            &self.own,
            self.settings.max_peers,
            |peer| outbound.check(crate::outbound::TargetKind::Relay, peer.as_str()).is_ok(),
        );
        let gone: Vec<PeerUrl> = self.peers.keys().filter(|p| !wanted.contains(p)).cloned().collect();
        for url in gone {
            if let Some(task) = self.peers.remove(&url) {
                tracing::info!(url = %url, "relay sync: no longer a peer");
                self.retire(client, url, task);
            }
        }
        for url in &wanted {
            if self.peers.contains_key(url) {
                continue;
            }
            // A Sync Plus relay that became a peer: the peer's session covers everything.
            if let Some((task, _)) = self.mailboxes.remove(url) {
                task.stop.cancel();
            }
            match self.spawn_session(client, url, plans.subscribe(), stop).await {
                Ok(task) => {
                    tracing::info!(url = %url, "relay sync: new peer");
                    self.peers.insert(url.clone(), task);
                }
                Err(e) => tracing::warn!(url = %url, error = %e, "relay sync cannot use this peer"),
            }
        }
        if self.settings.plus.enabled {
            self.rescan_plus(client, stop).await;
        }
    }

    /// Stops a session and, once it has closed its subscriptions, drops the connection.
    fn retire(&self, client: &Client, url: PeerUrl, task: PeerTask) {
        task.stop.cancel();
        let client = client.clone();
        tokio::spawn(async move {
            // Let the session close its subscriptions first.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = client.pool().force_remove_relay(url.relay_url()).await;
        });
    }

    /// Works out who Sync Plus follows and what each of their relays is asked for, and
    /// starts, updates or stops those sessions.
    async fn rescan_plus(&mut self, client: &Client, stop: &CancellationToken) {
        let inventory = match plus::inventory::gather(self.hosting.store()).await {
            Ok(inventory) => inventory,
            Err(e) => {
                tracing::warn!(error = %e, "sync plus could not read who to follow");
                return;
            }
        };
        let followed: HashSet<nostr::PublicKey> = inventory.authors().into_iter().collect();
        self.metrics.plus_authors.set(followed.len() as i64);
        self.followed.set(followed.clone());
        let lists = match self.relay_lists(&followed).await {
            Ok(lists) => lists,
            Err(e) => {
                tracing::warn!(error = %e, "sync plus could not read relay lists");
                return;
            }
        };
        let plus = &self.settings.plus;
        let coverage = plus::coverage::plan(
            &inventory,
            &lists,
            &self.identities.missing(),
            &plus.fallback,
            plus.private,
            |relay| self.peers.contains_key(relay) || self.own.is_own(relay),
            plus.max_relays,
        );
        self.metrics.plus_relays.set(coverage.scopes.len() as i64);
        self.metrics.plus_fallback_authors.set(coverage.fallback_authors as i64);
        self.metrics.set_plus_purposes(
            coverage
                .purposes
                .iter()
                .map(|(relay, purpose)| (relay.as_str().to_owned(), purpose.as_str()))
                .collect(),
        );
        let gone: Vec<PeerUrl> =
            self.mailboxes.keys().filter(|relay| !coverage.scopes.contains_key(*relay)).cloned().collect();
        for url in gone {
            if let Some((task, _)) = self.mailboxes.remove(&url) {
                tracing::info!(url = %url, "sync plus: no longer asked");
                self.retire(client, url, task);
            }
        }
        let limits = plus_limits(&self.settings.peer.limits);
        for (url, scope) in coverage.scopes {
            if let Some((_, plans)) = self.mailboxes.get(&url) {
                if plans.borrow().scope != scope {
                    plans.send_replace(Arc::new(FilterPlan::mailbox(scope, &limits)));
                }
                continue;
            }
            let (plans, plans_rx) = watch::channel(Arc::new(FilterPlan::mailbox(scope, &limits)));
            match self.spawn_session(client, &url, plans_rx, stop).await {
                Ok(task) => {
                    tracing::info!(url = %url, "sync plus: asking a relay people use");
                    self.mailboxes.insert(url, (task, plans));
                }
                Err(e) => tracing::warn!(url = %url, error = %e, "sync plus cannot use this relay"),
            }
        }
    }

    /// The relay lists (kind 10002) stored for `people`, read as inbox and mailbox relays
    /// that the outbound policy's URL checks let through.
    async fn relay_lists(
        &self,
        people: &HashSet<nostr::PublicKey>,
    ) -> Result<HashMap<nostr::PublicKey, plus::relay_list::RelayList>, crate::store::StoreError> {
        let mut lists = HashMap::new();
        let people: Vec<nostr::PublicKey> = people.iter().copied().collect();
        for chunk in people.chunks(500) {
            let filter = nostr::Filter::new().kind(nostr::Kind::RelayList).authors(chunk.iter().copied());
            for event in self.hosting.store().query(filter).await? {
                let list = plus::relay_list::RelayList::parse(&event, |relay| {
                    self.outbound.check(crate::outbound::TargetKind::Relay, relay.as_str()).is_ok()
                });
                lists.insert(event.pubkey, list);
            }
        }
        Ok(lists)
    }

    /// Starts a session with `url` following `plans`.
    async fn spawn_session(
        &self,
        client: &Client,
        url: &PeerUrl,
        plans: watch::Receiver<Arc<FilterPlan>>,
        stop: &CancellationToken,
    ) -> Result<PeerTask, nostr_sdk::pool::pool::Error> {
        // Read-only: nostr-sdk refuses to send an EVENT on this connection. Reconnects are
        // ours (see `health`), not the library's.
        let options = RelayOptions::new().write(false).reconnect(false).ping(true);
        client.pool().add_relay(url.relay_url(), options).await?;
        let relay = client.pool().relay(url.relay_url()).await?;
        let remote = SdkRemote::new(relay, self.settings.timeouts);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let session = PeerSession::new(
            url.clone(),
            remote,
            self.ingest.clone(),
            self.settings.peer,
            plans,
            commands_rx,
            self.metrics.clone(),
        );
        let peer_stop = stop.child_token();
        tokio::spawn(session.run(peer_stop.clone()));
        Ok(PeerTask { stop: peer_stop, commands })
    }
}

/// A Sync Plus relay is usually a busy public relay that allows about 20 subscriptions per
/// connection (negentropy sessions and one-off requests included): its live subscriptions
/// stay well below that.
fn plus_limits(peer: &filters::FilterLimits) -> filters::FilterLimits {
    filters::FilterLimits { max_subscriptions: peer.max_subscriptions.min(6), ..*peer }
}
