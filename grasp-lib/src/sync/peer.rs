//! One peer's life: connect, subscribe live, catch up on history, follow scope changes,
//! reconcile fully once a day, and reconnect with backoff when the connection drops.
//!
//! Each peer runs in its own task, so a peer that is down or slow never delays the others.

use std::sync::Arc;

use nostr::{EventId, Filter, Timestamp};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::filters::{FilterLimits, FilterPlan, LayeredFilter};
use super::health::{CatchUp, HealthTimers, PeerHealth};
use super::historic::{self, HistoricSettings, LocalItems, NegentropySupport};
use super::live::{on_closed, ClosedAction, LiveSubscriptions};
use super::metrics::SyncMetrics;
use super::peers::PeerUrl;
use super::remote::{is_rate_limit, Remote, RemoteError, Signal};

/// How every peer session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerSettings {
    /// Historic sync.
    pub historic: HistoricSettings,
    /// Filter and subscription limits (adapted per peer when it refuses them).
    pub limits: FilterLimits,
    /// Reconnects, cool-down, dead peers, catch-up.
    pub timers: HealthTimers,
}

/// Something the rest of sync asks of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCommand {
    /// Fetch these events again (refused before, and what they depended on arrived).
    Refetch(Vec<EventId>),
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Disconnected,
    RateLimited,
    Shutdown,
}

impl From<RemoteError> for End {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::RateLimited(_) => End::RateLimited,
            _ => End::Disconnected,
        }
    }
}

/// One peer and everything sync knows about it.
pub struct PeerSession<R: Remote> {
    url: PeerUrl,
    remote: R,
    local: Arc<dyn LocalItems>,
    settings: PeerSettings,
    limits: FilterLimits,
    health: PeerHealth,
    support: NegentropySupport,
    live: LiveSubscriptions,
    plans: watch::Receiver<Arc<FilterPlan>>,
    commands: mpsc::UnboundedReceiver<PeerCommand>,
    metrics: SyncMetrics,
}

fn jitter_seed(url: &PeerUrl) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    url.hash(&mut hasher);
    hasher.finish()
}

impl<R: Remote> PeerSession<R> {
    /// A session for `url` over `remote`, following `plans` (made with
    /// `settings.limits`; a peer that refuses those limits gets its own).
    pub fn new(
        url: PeerUrl,
        remote: R,
        local: Arc<dyn LocalItems>,
        settings: PeerSettings,
        plans: watch::Receiver<Arc<FilterPlan>>,
        commands: mpsc::UnboundedReceiver<PeerCommand>,
        metrics: SyncMetrics,
    ) -> Self {
        let health = PeerHealth::new(settings.timers, jitter_seed(&url));
        Self {
            url,
            remote,
            local,
            limits: settings.limits,
            settings,
            health,
            support: NegentropySupport::Unknown,
            live: LiveSubscriptions::default(),
            plans,
            commands,
            metrics,
        }
    }

    /// Publishes the peer's state.
    fn report(&self) {
        let now = Instant::now();
        self.metrics.report_peer(
            self.url.as_str(),
            self.health.state() as i64,
            self.health.status(now) as i64,
            i64::from(self.health.failures()),
        );
    }

    fn attempt(&self, result: &str) {
        self.metrics
            .connection_attempts
            .with_label_values(&[self.metrics.label(self.url.as_str()), result])
            .inc();
    }

    /// Events this peer brought that were newly accepted so far.
    fn accepted_so_far(&self) -> u64 {
        self.metrics.peer(self.url.as_str()).accepted
    }

    /// Runs until `stop` is cancelled.
    pub async fn run(mut self, stop: CancellationToken) {
        self.report();
        loop {
            if let Some(at) = self.health.retry_at() {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = stop.cancelled() => break,
                }
            }
            self.health.connecting(Instant::now());
            self.report();
            let connected = tokio::select! {
                result = self.remote.connect() => result,
                _ = stop.cancelled() => break,
            };
            if let Err(e) = connected {
                tracing::debug!(url = %self.url, error = %e, "sync peer unreachable");
                self.attempt("failure");
                self.health.connect_failed(Instant::now());
                self.report();
                continue;
            }
            self.attempt("success");
            let catch_up = self.health.connected(Instant::now());
            tracing::info!(url = %self.url, ?catch_up, "sync peer connected");
            self.report();
            let end = {
                let serve = self.serve(catch_up);
                tokio::select! {
                    end = serve => end,
                    _ = stop.cancelled() => End::Shutdown,
                }
            };
            self.live.close_all(&self.remote).await;
            self.remote.disconnect().await;
            let now = Instant::now();
            match end {
                End::Shutdown => break,
                End::RateLimited => {
                    tracing::warn!(url = %self.url, "sync peer rate-limited us; cooling down");
                    self.budget_refused();
                    self.health.rate_limited(now);
                }
                End::Disconnected => tracing::info!(url = %self.url, "sync peer disconnected"),
            }
            self.health.disconnected(now, Timestamp::now());
            self.report();
        }
        self.metrics.forget_relay(self.url.as_str());
    }

    /// Counts a refusal that made us ask less (fewer subscriptions or filters, a cool-down).
    fn budget_refused(&self) {
        let source = if self.metrics.is_plus_relay(self.url.as_str()) { "sync_plus" } else { "peer" };
        self.metrics.budget_refusals.with_label_values(&[source]).inc();
    }

    fn plan(&self) -> Arc<FilterPlan> {
        let shared = self.plans.borrow().clone();
        if self.limits == self.settings.limits {
            shared
        } else {
            Arc::new(shared.replan(&self.limits))
        }
    }

    async fn historic(&mut self, filters: &[LayeredFilter], since: Option<Timestamp>) -> Result<bool, End> {
        let report = historic::sync(
            &self.remote,
            self.local.as_ref(),
            filters,
            since,
            &self.settings.historic,
            &mut self.support,
            &self.metrics,
        )
        .await?;
        Ok(report.failed == 0)
    }

    /// One connection, until it ends.
    async fn serve(&mut self, catch_up: CatchUp) -> End {
        self.plans.mark_unchanged();
        let mut plan = self.plan();
        if let Err(e) = self.live.apply(&self.remote, &plan.subscriptions).await {
            return e.into();
        }
        let since = match catch_up {
            CatchUp::Full => None,
            CatchUp::Since(at) => Some(at),
        };
        let before = self.accepted_so_far();
        let ok = match self.historic(&plan.filters, since).await {
            Ok(ok) => ok,
            Err(end) => return end,
        };
        if since.is_some() {
            self.metrics.gap_events.inc_by(self.accepted_so_far().saturating_sub(before));
        }
        self.health.historic_done(Instant::now(), since.is_none(), !ok);
        self.report();
        let next_full = |health: &PeerHealth| {
            health.next_full_sync().unwrap_or_else(|| Instant::now() + health.full_interval())
        };
        let mut full_at = next_full(&self.health);
        loop {
            tokio::select! {
                changed = self.plans.changed() => {
                    if changed.is_err() {
                        return End::Shutdown;
                    }
                    let next = self.plan();
                    if let Err(e) = self.live.apply(&self.remote, &next.subscriptions).await {
                        return e.into();
                    }
                    let catch_up = next.catch_up_filters(&plan);
                    plan = next;
                    if !catch_up.is_empty() {
                        if let Err(end) = self.historic(&catch_up, None).await {
                            return end;
                        }
                    }
                }
                Some(command) = self.commands.recv() => match command {
                    PeerCommand::Refetch(ids) => {
                        let filter = Filter::new().ids(ids);
                        match self.remote.fetch(filter).await {
                            Ok(_) => {}
                            Err(e @ (RemoteError::Disconnected | RemoteError::RateLimited(_))) => return e.into(),
                            Err(e) => tracing::debug!(url = %self.url, error = %e, "refetch failed"),
                        }
                    }
                },
                _ = tokio::time::sleep_until(full_at) => {
                    tracing::info!(url = %self.url, "full reconciliation");
                    let ok = match self.historic(&plan.filters, None).await {
                        Ok(ok) => ok,
                        Err(end) => return end,
                    };
                    self.health.historic_done(Instant::now(), true, !ok);
                    self.report();
                    full_at = next_full(&self.health);
                }
                signal = self.remote.next_signal() => match signal {
                    Signal::Disconnected => return End::Disconnected,
                    Signal::Notice(message) if is_rate_limit(&message) => return End::RateLimited,
                    Signal::Notice(message) => tracing::debug!(url = %self.url, %message, "notice from sync peer"),
                    Signal::Closed { subscription, message } if self.live.owns(&subscription) => {
                        tracing::info!(url = %self.url, %subscription, %message, "sync peer closed a live subscription");
                        match on_closed(&message) {
                            ClosedAction::CoolDown => return End::RateLimited,
                            ClosedAction::FewerSubscriptions { cool_down } => {
                                self.limits.max_subscriptions = (self.live.len() / 2).max(1);
                                if !cool_down {
                                    self.budget_refused();
                                }
                                if cool_down {
                                    return End::RateLimited;
                                }
                                plan = self.plan();
                                if let Err(e) = self.live.apply(&self.remote, &plan.subscriptions).await {
                                    return e.into();
                                }
                            }
                            ClosedAction::FewerFilters if self.limits.filters_per_req > 1 => {
                                self.limits.filters_per_req /= 2;
                                self.budget_refused();
                                self.live.close_all(&self.remote).await;
                                plan = self.plan();
                                if let Err(e) = self.live.apply(&self.remote, &plan.subscriptions).await {
                                    return e.into();
                                }
                            }
                            ClosedAction::FewerFilters | ClosedAction::Reconnect => return End::Disconnected,
                        }
                    }
                    // A refused history request (negentropy's fetch of what is missing).
                    Signal::Closed { message, .. } if is_rate_limit(&message) => return End::RateLimited,
                    Signal::Closed { .. } => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sync::filters::SyncScope;
    use crate::sync::mock::{MockRemote, NoItems};

    const URL: &str = "ws://127.0.0.1:7001";

    fn plan(scope: SyncScope) -> Arc<FilterPlan> {
        Arc::new(FilterPlan::new(scope, &FilterLimits::default()))
    }

    /// A session running against a scripted peer whose connection attempts end as
    /// `connects` says.
    struct Running {
        peer: Arc<MockRemote>,
        plans: watch::Sender<Arc<FilterPlan>>,
        commands: mpsc::UnboundedSender<PeerCommand>,
        metrics: SyncMetrics,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        fn start(connects: Vec<Result<(), RemoteError>>, scope: SyncScope) -> Self {
            let peer = Arc::new(MockRemote::new(Vec::new()));
            peer.connects.lock().unwrap().extend(connects);
            let (plans, plans_rx) = watch::channel(plan(scope));
            let (commands, commands_rx) = mpsc::unbounded_channel();
            let metrics = SyncMetrics::register(&prometheus::Registry::new()).with_labelled([URL.to_owned()]);
            let session = PeerSession::new(
                PeerUrl::parse(URL).unwrap(),
                peer.clone(),
                Arc::new(NoItems),
                PeerSettings::default(),
                plans_rx,
                commands_rx,
                metrics.clone(),
            );
            let stop = CancellationToken::new();
            let task = tokio::spawn(session.run(stop.clone()));
            Self { peer, plans, commands, metrics, stop, task }
        }

        /// Waits (in virtual time) until the peer logged `n` calls starting with `entry`.
        async fn wait_count(&self, entry: &str, n: usize) {
            // 200 000 × 10 ms covers the longest cool-down.
            for _ in 0..200_000 {
                if self.peer.calls().iter().filter(|e| e.starts_with(entry)).count() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never logged {entry} {n} times: {:?}", self.peer.calls());
        }

        async fn wait_for(&self, entry: &str) {
            self.wait_count(entry, 1).await;
        }

        fn attempts(&self, result: &str) -> u64 {
            self.metrics.connection_attempts.with_label_values(&[URL, result]).get()
        }

        /// Stops the session; returns the peer's log.
        async fn finish(self) -> Vec<String> {
            self.stop.cancel();
            self.task.await.unwrap();
            self.peer.calls()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_peers_are_retried_with_growing_waits() {
        let started = Instant::now();
        let run = Running::start(
            vec![Err(RemoteError::Timeout), Err(RemoteError::Timeout), Ok(())],
            SyncScope::default(),
        );
        run.wait_for("subscribe grasp-sync-0").await;
        let waited = started.elapsed();
        // 5 s then 10 s (±10 %).
        assert!(
            waited >= Duration::from_millis(13_500) && waited <= Duration::from_millis(16_500),
            "{waited:?}"
        );
        assert_eq!((run.attempts("failure"), run.attempts("success")), (2, 1));
        run.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn live_first_then_history_then_scope_changes() {
        let run = Running::start(vec![Ok(())], SyncScope::default());
        run.wait_for("reconcile since=None").await;
        let mut bigger = SyncScope::default();
        bigger.state_identifiers.insert("repo".into());
        run.plans.send(plan(bigger)).unwrap();
        run.wait_count("reconcile", 2).await;
        run.commands.send(PeerCommand::Refetch(vec![EventId::all_zeros()])).unwrap();
        run.wait_for("fetch ids=1").await;
        let log = run.finish().await;
        assert_eq!(&log[..3], ["connect ok", "subscribe grasp-sync-0 1", "reconcile since=None"], "{log:?}");
        // the new state filter: resubscribed, then only the new values caught up
        assert_eq!(log.iter().filter(|l| l.starts_with("reconcile")).count(), 2, "{log:?}");
        assert!(log.ends_with(&["unsubscribe grasp-sync-0".to_owned(), "disconnect".to_owned()]), "{log:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_disconnect_catches_up_with_since() {
        let run = Running::start(vec![Ok(()), Ok(())], SyncScope::default());
        run.wait_for("reconcile since=None").await;
        run.peer.signal(Signal::Disconnected);
        run.wait_for("disconnect").await;
        run.wait_for("reconcile since=Some").await;
        run.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_rate_limits_us_is_left_alone_for_the_cool_down() {
        let started = Instant::now();
        let run = Running::start(vec![Ok(()), Ok(())], SyncScope::default());
        run.peer.signal(Signal::Closed {
            subscription: "grasp-sync-0".into(),
            message: "rate-limited: slow down".into(),
        });
        run.wait_for("disconnect").await;
        assert_eq!(run.metrics.relay_status.with_label_values(&[URL]).get(), 5);
        run.wait_count("connect ok", 2).await;
        assert!(started.elapsed() >= HealthTimers::default().rate_limit_cooldown);
        run.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_connected_peer_is_reconciled_fully_once_a_day() {
        let run = Running::start(vec![Ok(())], SyncScope::default());
        run.wait_for("reconcile since=None").await;
        let day = HealthTimers::default().full_interval;
        tokio::time::advance(day - Duration::from_secs(60)).await;
        tokio::task::yield_now().await;
        assert_eq!(run.peer.calls().iter().filter(|c| c.starts_with("reconcile")).count(), 1, "not yet");
        tokio::time::advance(Duration::from_secs(60)).await;
        run.wait_count("reconcile since=None", 2).await;
        run.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_refusing_many_filters_per_req_gets_fewer() {
        let mut scope = SyncScope::default();
        for n in 0..4u8 {
            scope.served_coordinates.insert(format!("30617:{n:064x}:r{n}"));
            scope.roots.insert(EventId::from_byte_array([n; 32]));
        }
        // Announcements, then 3 tag letters for the coordinates and 3 for the roots: one REQ
        // of 7 filters.
        let run = Running::start(vec![Ok(())], scope);
        run.wait_for("reconcile").await;
        assert!(run.peer.calls().contains(&"subscribe grasp-sync-0 7".to_owned()), "{:?}", run.peer.calls());
        run.peer.signal(Signal::Closed {
            subscription: "grasp-sync-0".into(),
            message: "invalid: too many filters (7, at most 5)".into(),
        });
        run.wait_for("subscribe grasp-sync-1 2").await;
        let log = run.finish().await;
        assert!(log.contains(&"subscribe grasp-sync-0 5".to_owned()), "{log:?}");
    }
}
