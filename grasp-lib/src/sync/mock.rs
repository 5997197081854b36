//! A scripted peer for unit tests of the sync logic (the real one is [`super::remote::SdkRemote`]).

use std::collections::VecDeque;
use std::sync::Mutex;

use futures::future::BoxFuture;
use nostr::{EventId, Filter, Timestamp};
use tokio::sync::Notify;

use super::historic::LocalItems;
use super::remote::{Remote, RemoteError, Signal};

/// A peer holding `events`; it answers REQ pages newest first (honouring `since`, `until`
/// and `limit`, capped at `cap`), answers negentropy with `negentropy`, connects as
/// `connects` says (then fails), emits `signals` when told, and logs every call.
pub(crate) struct MockRemote {
    pub events: Vec<(EventId, Timestamp)>,
    pub cap: usize,
    pub negentropy: Result<usize, RemoteError>,
    pub connects: Mutex<VecDeque<Result<(), RemoteError>>>,
    signals: Mutex<VecDeque<Signal>>,
    signal_ready: Notify,
    pub log: Mutex<Vec<String>>,
    pub pages: Mutex<Vec<Filter>>,
    pub reconciled: Mutex<Vec<Filter>>,
}

impl MockRemote {
    pub(crate) fn new(events: Vec<(EventId, Timestamp)>) -> Self {
        Self {
            events,
            cap: usize::MAX,
            negentropy: Ok(0),
            connects: Mutex::new(VecDeque::new()),
            signals: Mutex::new(VecDeque::new()),
            signal_ready: Notify::new(),
            log: Mutex::new(Vec::new()),
            pages: Mutex::new(Vec::new()),
            reconciled: Mutex::new(Vec::new()),
        }
    }

    /// The peer does `signal` on its own.
    pub(crate) fn signal(&self, signal: Signal) {
        self.signals.lock().unwrap().push_back(signal);
        self.signal_ready.notify_one();
    }

    fn record(&self, entry: String) {
        self.log.lock().unwrap().push(entry);
    }

    /// The log so far.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Remote for MockRemote {
    fn connect(&self) -> BoxFuture<'_, Result<(), RemoteError>> {
        let result = self.connects.lock().unwrap().pop_front().unwrap_or(Err(RemoteError::Timeout));
        self.record(if result.is_ok() { "connect ok" } else { "connect failed" }.to_owned());
        Box::pin(async move { result })
    }

    fn disconnect(&self) -> BoxFuture<'_, ()> {
        self.record("disconnect".to_owned());
        Box::pin(async {})
    }

    fn reconcile(
        &self,
        filter: Filter,
        _: Vec<(EventId, Timestamp)>,
    ) -> BoxFuture<'_, Result<usize, RemoteError>> {
        self.record(format!("reconcile since={:?}", filter.since.map(|s| s.as_secs())));
        self.reconciled.lock().unwrap().push(filter);
        let result = self.negentropy.clone();
        Box::pin(async move { result })
    }

    fn fetch(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<(EventId, Timestamp)>, RemoteError>> {
        self.record(format!("fetch ids={}", filter.ids.as_ref().map_or(0, |i| i.len())));
        self.pages.lock().unwrap().push(filter.clone());
        let mut matching: Vec<(EventId, Timestamp)> = self
            .events
            .iter()
            .filter(|(_, at)| filter.until.is_none_or(|u| *at <= u) && filter.since.is_none_or(|s| *at >= s))
            .copied()
            .collect();
        matching.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        matching.truncate(filter.limit.unwrap_or(usize::MAX).min(self.cap));
        Box::pin(async move { Ok(matching) })
    }

    fn subscribe(&self, id: String, filters: Vec<Filter>) -> BoxFuture<'_, Result<(), RemoteError>> {
        self.record(format!("subscribe {id} {}", filters.len()));
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, id: String) -> BoxFuture<'_, ()> {
        self.record(format!("unsubscribe {id}"));
        Box::pin(async {})
    }

    fn next_signal(&self) -> BoxFuture<'_, Signal> {
        Box::pin(async move {
            loop {
                if let Some(signal) = self.signals.lock().unwrap().pop_front() {
                    return signal;
                }
                self.signal_ready.notified().await;
            }
        })
    }
}

/// A server that has nothing yet.
pub(crate) struct NoItems;

impl LocalItems for NoItems {
    fn items(&self, _: &Filter) -> BoxFuture<'_, Vec<(EventId, Timestamp)>> {
        Box::pin(async { Vec::new() })
    }
}
