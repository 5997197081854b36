//! Historic sync: getting from a peer what it has and we lack, filter by filter.
//!
//! With NIP-77 negentropy the two sides compare fingerprints of their sets and only the
//! missing events travel. A peer without negentropy (or a filter it refuses to reconcile)
//! is paged instead: REQ + EOSE, newest first, each page ending `until` the oldest
//! timestamp seen, until a page brings nothing new. An operator can force the paging
//! (`sync_negentropy = false`).

use std::collections::HashSet;

use futures::future::BoxFuture;
use nostr::{EventId, Filter, Timestamp};

use super::filters::{self, LayeredFilter};
use super::metrics::SyncMetrics;
use super::remote::{Remote, RemoteError};

/// How historic sync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoricSettings {
    /// Use negentropy where the peer supports it.
    pub negentropy: bool,
    /// Events per REQ page.
    pub page_size: usize,
    /// Most pages per filter (a guard against a peer that never stops).
    pub max_pages: usize,
}

impl Default for HistoricSettings {
    fn default() -> Self {
        Self { negentropy: true, page_size: 250, max_pages: 10_000 }
    }
}

/// What we already have, for negentropy: stored, held and remembered events.
pub trait LocalItems: Send + Sync {
    /// `(id, created_at)` of what we have that may match `filter`.
    fn items(&self, filter: &Filter) -> BoxFuture<'_, Vec<(EventId, Timestamp)>>;
}

/// Whether a peer speaks negentropy, as far as we know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NegentropySupport {
    /// Not tried yet.
    #[default]
    Unknown,
    /// It answered a reconciliation.
    Yes,
    /// It did not; page with REQ.
    No,
}

/// The result of one historic sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoricReport {
    /// Filters synced.
    pub filters: usize,
    /// Filters that failed (refused or timed out), after the REQ fallback.
    pub failed: usize,
    /// Filters reconciled with negentropy.
    pub negentropy: usize,
    /// Filters paged with REQ.
    pub paged: usize,
}

/// Runs a historic sync of `filters` (restricted to `since` when given) against `remote`.
///
/// Returns `Err` only when the connection is lost or the peer rate-limits us: the caller
/// reconnects or cools down. Other failures are counted in the report and the remaining
/// filters still run.
pub async fn sync<R: Remote + ?Sized>(
    remote: &R,
    local: &dyn LocalItems,
    filters: &[LayeredFilter],
    since: Option<Timestamp>,
    settings: &HistoricSettings,
    support: &mut NegentropySupport,
    metrics: &SyncMetrics,
) -> Result<HistoricReport, RemoteError> {
    let mut report = HistoricReport::default();
    for layered in filters {
        report.filters += 1;
        let filter = filters::since(&layered.filter, since);
        if settings.negentropy && *support != NegentropySupport::No {
            let items = local.items(&filter).await;
            match remote.reconcile(filter.clone(), items).await {
                Ok(_) => {
                    *support = NegentropySupport::Yes;
                    report.negentropy += 1;
                    metrics.reconciliations.with_label_values(&["negentropy", "ok"]).inc();
                    continue;
                }
                Err(e @ (RemoteError::Disconnected | RemoteError::RateLimited(_))) => return Err(e),
                Err(RemoteError::NegentropyUnsupported | RemoteError::Timeout) => {
                    tracing::debug!(layer = layered.layer.as_str(), "peer lacks negentropy; paging with REQ");
                    *support = NegentropySupport::No;
                }
                Err(e) => {
                    // e.g. a filter matching more than the peer reconciles at once.
                    tracing::debug!(error = %e, "negentropy refused for one filter; paging it with REQ");
                }
            }
            metrics.reconciliations.with_label_values(&["negentropy", "error"]).inc();
        }
        match paginate(remote, &filter, settings).await {
            Ok(_) => {
                report.paged += 1;
                metrics.reconciliations.with_label_values(&["req", "ok"]).inc();
            }
            Err(e @ (RemoteError::Disconnected | RemoteError::RateLimited(_))) => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, layer = layered.layer.as_str(), "historic sync of a filter failed");
                report.failed += 1;
                metrics.reconciliations.with_label_values(&["req", "error"]).inc();
            }
        }
    }
    Ok(report)
}

/// Pages `filter` newest first with `until`, until a page brings no event not seen
/// before. Returns how many distinct events came.
///
/// Events sharing the oldest timestamp of a full page are asked for again (`until` is
/// inclusive); when a whole full page shares one timestamp, the next page starts a second
/// earlier so paging never stalls.
pub async fn paginate<R: Remote + ?Sized>(
    remote: &R,
    filter: &Filter,
    settings: &HistoricSettings,
) -> Result<usize, RemoteError> {
    let page_size = settings.page_size.max(1);
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut until = filter.until;
    for _ in 0..settings.max_pages.max(1) {
        let mut page_filter = filter.clone().limit(page_size);
        if let Some(at) = until {
            page_filter = page_filter.until(at);
        }
        let page = remote.fetch(page_filter).await?;
        let fresh = page.iter().filter(|(id, _)| seen.insert(*id)).count();
        if fresh == 0 {
            break;
        }
        let Some(oldest) = page.iter().map(|(_, at)| *at).min() else { break };
        let newest = page.iter().map(|(_, at)| *at).max().unwrap_or(oldest);
        if filter.since.is_some_and(|since| oldest <= since) {
            break;
        }
        until = Some(if newest == oldest && page.len() >= page_size {
            if oldest.as_secs() == 0 {
                break;
            }
            Timestamp::from(oldest.as_secs() - 1)
        } else {
            oldest
        });
    }
    Ok(seen.len())
}

#[cfg(test)]
mod tests {
    use nostr::Kind;

    use super::*;
    use crate::sync::filters::Layer;
    use crate::sync::mock::{MockRemote, NoItems};

    fn events(times: &[u64]) -> Vec<(EventId, Timestamp)> {
        times
            .iter()
            .enumerate()
            .map(|(n, t)| {
                let mut bytes = [0u8; 32];
                bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
                (EventId::from_byte_array(bytes), Timestamp::from(*t))
            })
            .collect()
    }

    fn settings(page_size: usize, negentropy: bool) -> HistoricSettings {
        HistoricSettings { negentropy, page_size, max_pages: 1000 }
    }

    fn metrics() -> SyncMetrics {
        SyncMetrics::register(&prometheus::Registry::new())
    }

    fn one_filter() -> Vec<LayeredFilter> {
        vec![LayeredFilter { layer: Layer::Anchors, filter: Filter::new().kind(Kind::Custom(30617)) }]
    }

    #[tokio::test]
    async fn paging_gets_every_event_across_pages() {
        let times: Vec<u64> = (1..=1000).map(|n| 1_000 + n * 7 % 300).collect();
        let peer = MockRemote::new(events(&times));
        let n = paginate(&peer, &Filter::new(), &settings(100, false)).await.unwrap();
        assert_eq!(n, 1000);
        let pages = peer.pages.lock().unwrap();
        assert!(pages.len() >= 10 && pages.len() < 60, "{} pages", pages.len());
        assert!(pages.iter().all(|f| f.limit == Some(100)));
    }

    #[tokio::test]
    async fn paging_does_not_stall_on_one_busy_second() {
        let mut times = vec![500u64; 250];
        times.extend([400, 300, 200]);
        let peer = MockRemote::new(events(&times));
        assert_eq!(paginate(&peer, &Filter::new(), &settings(100, false)).await.unwrap(), 103);
        // Only the first 100 of the busy second fit one page: a peer returning more than
        // `limit` per second cannot be paged completely, but paging moves on.
    }

    #[tokio::test]
    async fn paging_follows_a_peer_that_caps_the_limit() {
        let times: Vec<u64> = (0..300).map(|n| 10_000 - n).collect();
        let mut peer = MockRemote::new(events(&times));
        peer.cap = 40;
        assert_eq!(paginate(&peer, &Filter::new(), &settings(250, false)).await.unwrap(), 300);
    }

    #[tokio::test]
    async fn paging_honours_since() {
        let times: Vec<u64> = (0..100).map(|n| 1000 + n).collect();
        let peer = MockRemote::new(events(&times));
        let filter = Filter::new().since(Timestamp::from(1090));
        assert_eq!(paginate(&peer, &filter, &settings(3, false)).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn negentropy_is_used_when_the_peer_supports_it() {
        let peer = MockRemote::new(events(&[1, 2, 3]));
        let mut support = NegentropySupport::Unknown;
        let report =
            sync(&peer, &NoItems, &one_filter(), None, &settings(10, true), &mut support, &metrics())
                .await
                .unwrap();
        assert_eq!((report.negentropy, report.paged), (1, 0));
        assert_eq!(support, NegentropySupport::Yes);
        assert!(peer.pages.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_negentropy_support_it_falls_back_to_paging_and_remembers() {
        let mut peer = MockRemote::new(events(&[1, 2, 3]));
        peer.negentropy = Err(RemoteError::NegentropyUnsupported);
        let mut support = NegentropySupport::Unknown;
        let filters = [one_filter(), one_filter()].concat();
        let report = sync(&peer, &NoItems, &filters, None, &settings(10, true), &mut support, &metrics())
            .await
            .unwrap();
        assert_eq!((report.negentropy, report.paged, report.failed), (0, 2, 0));
        assert_eq!(support, NegentropySupport::No);
        assert_eq!(peer.reconciled.lock().unwrap().len(), 1, "not tried again after it failed");
    }

    #[tokio::test]
    async fn the_switch_forces_paging() {
        let peer = MockRemote::new(events(&[1, 2, 3]));
        let mut support = NegentropySupport::Yes;
        let report =
            sync(&peer, &NoItems, &one_filter(), None, &settings(10, false), &mut support, &metrics())
                .await
                .unwrap();
        assert_eq!((report.negentropy, report.paged), (0, 1));
        assert!(peer.reconciled.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_refused_reconciliation_pages_that_filter_only() {
        let mut peer = MockRemote::new(events(&[1]));
        peer.negentropy = Err(RemoteError::Refused("blocked: too many".into()));
        let mut support = NegentropySupport::Unknown;
        let report =
            sync(&peer, &NoItems, &one_filter(), None, &settings(10, true), &mut support, &metrics())
                .await
                .unwrap();
        assert_eq!(report.paged, 1);
        assert_eq!(support, NegentropySupport::Unknown);
    }

    #[tokio::test]
    async fn losing_the_connection_or_being_rate_limited_stops_the_sync() {
        for error in [RemoteError::Disconnected, RemoteError::RateLimited("rate-limited: x".into())] {
            let mut peer = MockRemote::new(events(&[1]));
            peer.negentropy = Err(error.clone());
            let mut support = NegentropySupport::Unknown;
            let result =
                sync(&peer, &NoItems, &one_filter(), None, &settings(10, true), &mut support, &metrics())
                    .await;
            assert_eq!(result, Err(error));
        }
    }

    #[tokio::test]
    async fn since_is_applied_to_every_filter() {
        let peer = MockRemote::new(events(&[1]));
        let mut support = NegentropySupport::Unknown;
        let at = Timestamp::from(77);
        sync(&peer, &NoItems, &one_filter(), Some(at), &settings(10, true), &mut support, &metrics())
            .await
            .unwrap();
        assert_eq!(peer.reconciled.lock().unwrap()[0].since, Some(at));
    }
}
