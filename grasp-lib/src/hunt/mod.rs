//! Git-data hunting: fetch the missing git data of held events from the other clone URLs.
//!
//! Events often reach this server without a push to it: a maintainer pushed to another
//! GRASP server listed in the same announcement, or relay sync brought the event. While
//! such an event is held in purgatory, the hunter looks for its objects at the clone URLs
//! of the identifier's maintainers' announcements and the `clone` tags of held pull
//! requests, and runs the git-data step (the one a push runs) after every fetch that
//! brought something, so each event is released as soon as its own objects are here.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`queue`] | one entry per identifier: delays by event source, debounce, backoff |
//! | [`throttle`] | per-domain limits (in flight, per minute) and round-robin turns |
//! | [`scheduler`] | queue + throttles + each identifier's attempt, as a pure state machine |
//! | [`remote`] | the [`HuntRemote`] trait the scheduler's actions run against |
//! | [`hosting_remote`] | the real remote: purgatory, repositories, [`fetch`] |
//! | [`fetch`] | `git fetch` into a quarantine with a timeout and a size cap |
//! | [`urls`] | which URLs may be fetched, and their domain |
//! | [`status`] | what `grasp-server purgatory list` shows, written by the running server |
//! | [`metrics`] | `grasp_hunt_*` metrics |
//!
//! The [`Hunter`] task drives the scheduler: it sleeps until the next due time or until a
//! request or a result arrives (no polling), and runs fetches as separate tasks, so a dead
//! or slow remote never blocks anything else.

pub mod fetch;
pub mod hosting_remote;
pub mod metrics;
pub mod queue;
pub mod remote;
pub mod scheduler;
pub mod status;
pub mod throttle;
pub mod urls;

pub use hosting_remote::HostingRemote;
pub use remote::{FetchError, Fetched, HuntRemote, Wanted};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::policy::EventSource;
use crate::purgatory::now_ms;
use fetch::FetchLimits;
use metrics::HuntMetrics;
use queue::QueueTimers;
use scheduler::{Action, Scheduler};
use status::HuntStatus;
use throttle::ThrottleLimits;

/// Every hunting setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HuntSettings {
    /// Delays and backoff.
    pub timers: QueueTimers,
    /// Per-domain limits.
    pub limits: ThrottleLimits,
    /// Bounds of one fetch.
    pub fetch: FetchLimits,
    /// Caps on the URLs hunted.
    pub urls: hosting_remote::UrlCaps,
}

impl HuntSettings {
    /// The settings of a public server, or the short timers a test suite runs with.
    pub fn for_mode(test_mode: bool) -> Self {
        if !test_mode {
            return Self::default();
        }
        Self {
            timers: QueueTimers::test_mode(),
            limits: ThrottleLimits::default(),
            fetch: FetchLimits::test_mode(),
            urls: hosting_remote::UrlCaps::default(),
        }
    }
}

/// Asks the hunter to look for the git data of an identifier's held events. Cheap to clone;
/// does nothing when hunting is off.
#[derive(Debug, Clone)]
pub struct HuntRequests {
    tx: Option<mpsc::UnboundedSender<(String, EventSource)>>,
}

impl HuntRequests {
    /// Requests that go nowhere (hunting switched off).
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    /// Requests that arrive on the returned receiver instead of at a hunter here (a cluster
    /// node forwards them to the node that hunts).
    pub fn forwarding() -> (Self, mpsc::UnboundedReceiver<(String, EventSource)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx: Some(tx) }, rx)
    }

    /// An event of `identifier` that came from `source` is held: hunt for its data after
    /// the source's delay.
    pub fn enqueue(&self, identifier: &str, source: EventSource) {
        if let Some(tx) = &self.tx {
            // A closed channel means the server is shutting down: nothing to do.
            let _ = tx.send((identifier.to_owned(), source));
        }
    }
}

/// Where a restarted server resumes from.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Identifiers with held events, with the newest arrival time among them (ms).
    pub held: Vec<(String, u64)>,
    /// The status the previous run wrote.
    pub status: HuntStatus,
}

/// A result of work the hunter handed to a task.
enum Done {
    Planned {
        identifier: String,
        wanted: Wanted,
    },
    Fetched {
        identifier: String,
        url: String,
        domain: String,
        result: Result<Fetched, FetchError>,
        wanted: Wanted,
    },
}

/// Milliseconds since the Unix epoch, advancing with Tokio's clock (so tests can pause it).
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall: u64,
    start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Self { wall: now_ms(), start: tokio::time::Instant::now() }
    }

    fn now(&self) -> u64 {
        self.wall + u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The task that drives the [`Scheduler`].
///
/// A node starts it with [`HostingRemote`]; any [`HuntRemote`] works, which is how the
/// scheduler is tested and how an embedding program can hunt from its own storage:
///
/// ```
/// # tokio_test::block_on(async {
/// use std::sync::{Arc, Mutex};
///
/// use futures::future::BoxFuture;
/// use grasp_lib::hunt::metrics::HuntMetrics;
/// use grasp_lib::hunt::{FetchError, Fetched, HuntRemote, HuntSettings, Hunter, Resume, Wanted};
/// use grasp_lib::policy::EventSource;
///
/// /// One object is missing for `repo`; fetching from the one URL brings it.
/// #[derive(Default)]
/// struct OneObject {
///     landed: Mutex<bool>,
///     released: tokio::sync::Notify,
/// }
///
/// impl HuntRemote for OneObject {
///     fn wanted<'a>(&'a self, _identifier: &'a str) -> BoxFuture<'a, Wanted> {
///         let missing = !*self.landed.lock().unwrap();
///         let oids = if missing { ["a".repeat(40)].into() } else { Default::default() };
///         let urls = vec!["https://other.example/x.git".into()];
///         Box::pin(async move { Wanted { held: true, oids, urls, scoped: Default::default() } })
///     }
///     fn fetch<'a>(&'a self, _: &'a str, _url: &'a str, oids: &'a [String]) -> BoxFuture<'a, Result<Fetched, FetchError>> {
///         *self.landed.lock().unwrap() = true;
///         Box::pin(async move { Ok(Fetched { landed: oids.to_vec(), new_objects: 1, bytes: 100 }) })
///     }
///     fn process<'a>(&'a self, _identifier: &'a str) -> BoxFuture<'a, usize> {
///         self.released.notify_one();
///         Box::pin(async { 1 })
///     }
/// }
///
/// let remote = Arc::new(OneObject::default());
/// let metrics = HuntMetrics::register(&prometheus::Registry::new());
/// let hunt = Hunter::start(remote.clone(), HuntSettings::for_mode(true), Resume::default(), None, metrics);
/// // A synced event for `repo` was held: hunting starts after its short delay.
/// hunt.enqueue("repo", EventSource::Sync);
/// remote.released.notified().await;
/// assert!(*remote.landed.lock().unwrap());
/// # });
/// ```
pub struct Hunter {
    scheduler: Scheduler,
    remote: Arc<dyn HuntRemote>,
    metrics: HuntMetrics,
    clock: Clock,
    done_tx: mpsc::UnboundedSender<Done>,
    status: Option<watch::Sender<HuntStatus>>,
    published: HuntStatus,
}

impl Hunter {
    /// Starts hunting (inside a Tokio runtime): resumes from `resume`, writes its status to
    /// `status_path` when given, and returns the handle the policy enqueues with. The task
    /// ends when every handle is dropped.
    pub fn start(
        remote: Arc<dyn HuntRemote>,
        settings: HuntSettings,
        resume: Resume,
        status_path: Option<PathBuf>,
        metrics: HuntMetrics,
    ) -> HuntRequests {
        let clock = Clock::new();
        let mut scheduler = Scheduler::new(settings.timers, settings.limits);
        let now = clock.now();
        for (identifier, received_at) in &resume.held {
            match resume.status.identifiers.get(identifier) {
                Some(hunt) => scheduler.restore(identifier, hunt),
                // Not yet attempted before the restart: count its delay from its arrival.
                None => scheduler.enqueue(identifier, EventSource::Client(None), (*received_at).min(now)),
            }
        }
        if !resume.held.is_empty() {
            tracing::info!(identifiers = resume.held.len(), "hunting resumed for held events");
        }
        let status = status_path.map(|path| {
            let (tx, rx) = watch::channel(HuntStatus::default());
            tokio::spawn(write_status(path, rx));
            tx
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let hunter = Self {
            scheduler,
            remote,
            metrics,
            clock,
            done_tx,
            status,
            published: HuntStatus { identifiers: Default::default() },
        };
        tokio::spawn(hunter.run(rx, done_rx));
        HuntRequests { tx: Some(tx) }
    }

    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<(String, EventSource)>,
        mut done: mpsc::UnboundedReceiver<Done>,
    ) {
        self.publish(true);
        loop {
            let actions = self.scheduler.due(self.clock.now());
            self.perform(actions);
            self.publish(false);
            let wake = self
                .scheduler
                .next_wakeup()
                .map(|at| Duration::from_millis(at.saturating_sub(self.clock.now())));
            tokio::select! {
                request = requests.recv() => match request {
                    Some((identifier, source)) => {
                        tracing::debug!(%identifier, source = source.as_str(), "queued for hunting");
                        self.scheduler.enqueue(&identifier, source, self.clock.now());
                    }
                    None => return,
                },
                Some(result) = done.recv() => self.handle(result),
                _ = sleep(wake) => {}
            }
        }
    }

    fn handle(&mut self, done: Done) {
        let now = self.clock.now();
        let actions = match done {
            Done::Planned { identifier, wanted } => {
                if wanted.is_done() {
                    tracing::debug!(%identifier, "nothing to hunt for");
                    self.metrics.attempts.with_label_values(&["done"]).inc();
                }
                self.scheduler.planned(&identifier, wanted, now)
            }
            Done::Fetched { identifier, url, domain, result, wanted } => {
                self.metrics.in_flight.dec();
                let label = match &result {
                    Ok(f) if f.landed.is_empty() => "nothing",
                    Ok(_) => "objects",
                    Err(e) => e.label(),
                };
                self.metrics.fetches.with_label_values(&[label]).inc();
                match &result {
                    Ok(f) => {
                        tracing::debug!(%identifier, %url, landed = f.landed.len(), new_objects = f.new_objects, "fetched")
                    }
                    Err(e) => tracing::warn!(%identifier, %url, error = %e, "fetching git data failed"),
                }
                let done = wanted.is_done();
                let missing = wanted.oids.len();
                let actions = self.scheduler.fetched(&identifier, &url, &domain, &result, wanted, now);
                if done {
                    tracing::info!(%identifier, "hunting complete: nothing missing any more");
                    self.metrics.attempts.with_label_values(&["done"]).inc();
                } else if let Some(entry) = self.scheduler.entry(&identifier).filter(|e| !e.running) {
                    let next_in_ms = entry.next_attempt.saturating_sub(now);
                    tracing::debug!(%identifier, missing, next_in_ms, "hunting attempt ended; backing off");
                    self.metrics.attempts.with_label_values(&["waiting"]).inc();
                }
                actions
            }
        };
        self.perform(actions);
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            let remote = self.remote.clone();
            let done = self.done_tx.clone();
            match action {
                Action::Plan { identifier } => {
                    tokio::spawn(async move {
                        let wanted = remote.wanted(&identifier).await;
                        let _ = done.send(Done::Planned { identifier, wanted });
                    });
                }
                Action::Fetch { identifier, url, domain, oids } => {
                    self.metrics.started.inc();
                    self.metrics.in_flight.inc();
                    tracing::debug!(%identifier, %url, missing = oids.len(), "fetching");
                    tokio::spawn(async move {
                        let result = remote.fetch(&identifier, &url, &oids).await;
                        if result.as_ref().is_ok_and(|f| !f.landed.is_empty()) {
                            remote.process(&identifier).await;
                        }
                        let wanted = remote.wanted(&identifier).await;
                        let _ = done.send(Done::Fetched { identifier, url, domain, result, wanted });
                    });
                }
            }
        }
    }

    /// Updates the queue gauge and hands a changed status to the writer.
    fn publish(&mut self, force: bool) {
        self.metrics.queue_size.set(self.scheduler.queue_len() as i64);
        let Some(tx) = &self.status else { return };
        let status = self.scheduler.status();
        if force || status != self.published {
            self.published = status.clone();
            let _ = tx.send(status);
        }
    }
}

async fn sleep(wake: Option<Duration>) {
    match wake {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Writes the newest status whenever it changes (intermediate versions may be skipped).
async fn write_status(path: PathBuf, mut rx: watch::Receiver<HuntStatus>) {
    while rx.changed().await.is_ok() {
        let status = rx.borrow_and_update().clone();
        let path = path.clone();
        let written = tokio::task::spawn_blocking(move || status.write(&path)).await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "writing the hunt status failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::remote::mock::MockRemote;
    use super::*;

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_hunter_waits_for_the_client_delay_then_fetches_and_processes() {
        let remote = Arc::new(
            MockRemote::new()
                .needs("r", &["x"], &["https://b.example/r.git"])
                .serves("https://b.example/r.git", &["x"]),
        );
        let registry = prometheus::Registry::new();
        let metrics = HuntMetrics::register(&registry);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hunt.json");
        let hunt = Hunter::start(
            remote.clone(),
            HuntSettings::default(),
            Resume::default(),
            Some(path.clone()),
            metrics.clone(),
        );
        hunt.enqueue("r", EventSource::Client(None));
        settle().await;
        tokio::time::sleep(Duration::from_secs(179)).await;
        settle().await;
        assert!(remote.fetches().is_empty(), "a push may still come");
        assert_eq!(metrics.queue_size.get(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(remote.fetches(), vec![("r".to_owned(), "https://b.example/r.git".to_owned())]);
        assert_eq!(remote.processed(), vec!["r"]);
        assert_eq!(metrics.queue_size.get(), 0);
        assert_eq!(metrics.fetches.with_label_values(&["objects"]).get(), 1);
        assert_eq!(metrics.started.get(), 1);
        assert_eq!(metrics.in_flight.get(), 0);
        drop(hunt);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_resumes_held_identifiers() {
        let remote = Arc::new(
            MockRemote::new()
                .needs("r", &["x"], &["https://b.example/r.git"])
                .serves("https://b.example/r.git", &["x"]),
        );
        let metrics = HuntMetrics::register(&prometheus::Registry::new());
        // Held before the restart and never attempted: its delay counts from its arrival.
        let resume =
            Resume { held: vec![("r".to_owned(), now_ms() - 170_000)], status: HuntStatus::default() };
        let _hunt = Hunter::start(remote.clone(), HuntSettings::default(), resume, None, metrics);
        settle().await;
        tokio::time::sleep(Duration::from_secs(9)).await;
        settle().await;
        assert!(remote.fetches().is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(remote.processed(), vec!["r"]);
    }
}
