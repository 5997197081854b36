//! Deadlines: what expires, what a deletion removes, and the held events a push keeps
//! alive.

use std::sync::Arc;
use std::time::Duration;

use nostr::{Event, EventId};

use super::hub::Hosting;
use crate::authorization::{nostr_ref_id, PushDecision};
use crate::git::pktline::RefUpdate;
use crate::git::refs;
use crate::git::RepoRef;
use crate::nip34::{commit_tag, RepoCoordinate, RepoIdentifier};
use crate::purgatory::{now_ms, HeldEvent, HeldKind};

/// How long a held event whose fetch is running stays past its deadline before the next
/// check: short, so it expires soon after a fetch that brought nothing.
fn fetch_grace(timers: crate::purgatory::PurgatoryTimers) -> Duration {
    timers.push_extension.min(Duration::from_secs(60))
}

impl Hosting {
    /// Removes a repository that was created only for a held announcement, unless it got
    /// refs or a stored announcement meanwhile.
    pub(super) async fn remove_repo_if_unused(&self, repo: &RepoRef) {
        if matches!(self.store.announcements(repo.identifier.as_str()).await, Ok(a) if a.iter().any(|a| a.owner == repo.owner))
        {
            return;
        }
        let probe = self.repos.path(repo);
        let empty =
            self.blocking(move || Ok(refs::branches_and_tags(&refs::open(&probe)?)?.is_empty())).await;
        if !matches!(empty, Ok(true)) {
            return;
        }
        match self.repos.remove(repo).await {
            Ok(()) => tracing::info!(repo = %repo, "removed repository of an expired announcement"),
            Err(e) => tracing::warn!(repo = %repo, error = %e, "removing repository failed"),
        }
    }

    /// Cleans up after held entries that were taken out of purgatory without being
    /// released: what waited for them goes too, and a repository created only for an
    /// announcement among them is removed.
    pub async fn discard(&self, entries: Vec<HeldEvent>) {
        self.drop_entries(entries, false).await;
        self.update_gauges();
    }

    pub(super) async fn drop_entries(&self, entries: Vec<HeldEvent>, expired: bool) {
        let mut queue = entries;
        while let Some(entry) = queue.pop() {
            if expired {
                // Nobody listening (sync off) is fine.
                let _ = self.expired.send(entry.event.clone());
                self.metrics.purgatory_expired.with_label_values(&[entry.kind.as_str()]).inc();
                tracing::info!(event_id = %entry.event.id, kind = entry.kind.as_str(), "purgatory entry expired");
            }
            let dependents: Vec<EventId> =
                self.purgatory.dependents_of(&entry.event.id).iter().map(|e| e.event.id).collect();
            if let Ok(removed) = self.purgatory.remove(&dependents).await {
                queue.extend(removed);
            }
            if entry.kind == HeldKind::Announcement && entry.created_repo {
                if let Ok(identifier) = RepoIdentifier::new(&entry.identifier) {
                    self.remove_repo_if_unused(&RepoRef::new(entry.event.pubkey, identifier)).await;
                }
            }
        }
    }

    /// Drops everything past its deadline: held events (and their dependents; the bare
    /// repository of an announcement that never got data) and unmatched `refs/nostr` refs.
    pub async fn sweep(&self) {
        self.retry_failed_releases().await;
        self.keep_fetching_alive().await;
        let (held, placeholders) = match self.purgatory.take_expired(now_ms()).await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(error = %e, "purgatory sweep failed");
                return;
            }
        };
        self.drop_entries(held, true).await;
        for placeholder in placeholders {
            self.metrics.purgatory_placeholders_expired.inc();
            let Some(repo) = placeholder.repo() else { continue };
            let name = refs::waiting_ref(&placeholder.event_id);
            match self.delete_ref(&repo, &name, Some(placeholder.commit.clone())).await {
                Ok(true) => tracing::info!(repo = %repo, %name, "deleted unmatched pull request ref"),
                Ok(false) => {}
                Err(e) => tracing::warn!(repo = %repo, %name, error = %e, "deleting unmatched ref failed"),
            }
            self.collect_if_empty(&repo).await;
        }
        self.update_gauges();
    }

    /// Held events whose release failed (the store refused them) are released again; those
    /// that still cannot be are kept past their deadline: their data is here, so dropping
    /// them would lose what a client pushed.
    async fn retry_failed_releases(&self) {
        let failed: Vec<(EventId, String)> = self
            .release_failed
            .lock()
            .expect("release_failed poisoned")
            .iter()
            .map(|(id, d)| (*id, d.clone()))
            .collect();
        if failed.is_empty() {
            return;
        }
        let mut identifiers: Vec<&String> = failed.iter().map(|(_, d)| d).collect();
        identifiers.sort();
        identifiers.dedup();
        for identifier in identifiers {
            if let Ok(identifier) = RepoIdentifier::new(identifier) {
                self.process(&identifier, super::hub::Arrival::GitData(None)).await;
            }
        }
        let still: Vec<EventId> = {
            let mut failed = self.release_failed.lock().expect("release_failed poisoned");
            failed.retain(|id, _| self.purgatory.contains(id));
            failed.keys().copied().collect()
        };
        if !still.is_empty() {
            if let Err(e) = self.purgatory.extend(&still, fetch_grace(self.purgatory.timers())).await {
                tracing::warn!(error = %e, "keeping held events whose release failed");
            }
        }
    }

    /// True when some held event's release failed and waits for the next attempt.
    pub(super) fn has_failed_releases(&self) -> bool {
        !self.release_failed.lock().expect("release_failed poisoned").is_empty()
    }

    /// Held events of identifiers with a hunted fetch running are not due: they get a short
    /// grace instead, renewed at each sweep while the fetch runs.
    async fn keep_fetching_alive(&self) {
        let fetching = self.fetching_identifiers();
        if fetching.is_empty() {
            return;
        }
        let now = now_ms();
        let due: Vec<EventId> = self
            .purgatory
            .all_held()
            .into_iter()
            .filter(|e| e.expires_at <= now && fetching.contains(&e.identifier))
            .map(|e| e.event.id)
            .collect();
        if due.is_empty() {
            return;
        }
        tracing::debug!(held = due.len(), "held events kept while their data is being fetched");
        if let Err(e) = self.purgatory.extend(&due, fetch_grace(self.purgatory.timers())).await {
            tracing::warn!(error = %e, "extending held events during a fetch failed");
        }
    }

    /// Runs [`Hosting::sweep`] at every deadline, for as long as the server runs.
    /// On a cluster, only the leader sweeps (each entry is taken out by one node anyway:
    /// [`Purgatory::take_expired`] decides under the cluster-wide lock).
    pub async fn run_expiry(self: Arc<Self>) {
        loop {
            self.leadership.acquired().await;
            let now = now_ms();
            match self.purgatory.next_deadline() {
                Some(deadline) if deadline <= now => self.sweep().await,
                next => {
                    // A failed release is tried again soon, whatever the deadlines.
                    let longest = if self.has_failed_releases() { 5_000 } else { 60_000 };
                    if longest == 5_000 {
                        self.retry_failed_releases().await;
                    }
                    let wait = next.map_or(longest, |d| (d - now).min(longest));
                    self.purgatory.changed_or(Duration::from_millis(wait)).await;
                }
            }
        }
    }

    /// A NIP-09 deletion also removes the author's matching held events.
    pub async fn purge_deleted(&self, deletion: &Event) {
        let by_id = deletion.tags.event_ids().filter_map(|id| self.purgatory.get(id));
        let by_coordinate = deletion
            .tags
            .coordinates()
            .map(|c| RepoCoordinate {
                kind: c.kind.as_u16(),
                pubkey: c.public_key,
                identifier: c.identifier.clone(),
            })
            .flat_map(|c| self.held_at(&c))
            .filter(|e| e.event.created_at <= deletion.created_at);
        let mut targets: Vec<EventId> = by_id
            .chain(by_coordinate)
            .filter(|e| e.event.pubkey == deletion.pubkey)
            .map(|e| e.event.id)
            .collect();
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return;
        }
        match self.purgatory.remove(&targets).await {
            Ok(removed) => {
                tracing::info!(deleted = removed.len(), "deletion request removed held events");
                self.drop_entries(removed, false).await;
            }
            Err(e) => tracing::warn!(error = %e, "removing deleted held events failed"),
        }
        self.update_gauges();
    }

    /// A push is about to use held events: the state it matched (with the owner's held
    /// announcement, which that state releases) and the held pull requests whose commit it
    /// pushes must not expire while it lands. Nothing else is extended: naming an id in a
    /// ref is not matching it (decision 30).
    pub async fn extend_for_push(&self, repo: &RepoRef, decision: &PushDecision, updates: &[RefUpdate]) {
        let PushDecision::Authorized { state } = decision else { return };
        let mut ids: Vec<EventId> = updates
            .iter()
            .filter(|u| !u.is_noop() && !u.is_delete())
            .filter_map(|u| Some((nostr_ref_id(&u.name)?, u.new.as_str())))
            .filter_map(|(id, pushed)| {
                let entry = self.purgatory.get(&id).filter(|e| e.kind == HeldKind::PullRequest)?;
                (commit_tag(&entry.event).as_deref() == Some(pushed)).then_some(id)
            })
            .collect();
        if let Some(id) = state {
            ids.push(*id);
            ids.extend(
                self.held_announcements(repo.identifier.as_str())
                    .into_iter()
                    .filter(|(_, a)| a.owner == repo.owner)
                    .map(|(e, _)| e.event.id),
            );
        }
        ids.retain(|id| self.purgatory.contains(id));
        if !ids.is_empty() {
            if let Err(e) = self.purgatory.extend(&ids, self.purgatory.timers().push_extension).await {
                tracing::warn!(error = %e, "extending held events failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Kind, Tag};

    use super::*;
    use crate::git::Repositories;
    use crate::metrics::Metrics;
    use crate::origin::ServiceOrigin;
    use crate::purgatory::{Purgatory, PurgatoryTimers};
    use crate::store::{EventStore, Publisher};

    fn hosting(dir: &std::path::Path, timers: PurgatoryTimers) -> Hosting {
        let store = EventStore::memory();
        let metrics = Metrics::new();
        Hosting::new(
            store.clone(),
            Arc::new(Purgatory::in_memory(timers)),
            Repositories::new(dir),
            Publisher::new(store, metrics.clone(), crate::store::QueueBudget::default()),
            ServiceOrigin::parse("127.0.0.1:1").unwrap(),
            metrics,
        )
    }

    #[tokio::test]
    async fn a_running_fetch_keeps_its_held_events_past_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let timers = PurgatoryTimers {
            expiry: Duration::from_millis(1),
            pr_ref_expiry: Duration::from_secs(60),
            push_extension: Duration::from_millis(300),
        };
        let hosting = hosting(dir.path(), timers);
        let state = |d: &str| {
            EventBuilder::new(Kind::Custom(30618), "")
                .tags([Tag::identifier(d)])
                .sign_with_keys(&Keys::generate())
                .unwrap()
        };
        let (fetched, idle) = (state("fetched"), state("idle"));
        for (event, d) in [(&fetched, "fetched"), (&idle, "idle")] {
            hosting.purgatory.hold(hosting.purgatory.entry(event.clone(), HeldKind::State, d)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;

        let running = hosting.fetch_in_progress("fetched");
        hosting.sweep().await;
        assert!(hosting.purgatory.contains(&fetched.id), "kept while its fetch runs");
        assert!(!hosting.purgatory.contains(&idle.id), "the other identifier expired");

        drop(running);
        hosting.sweep().await;
        assert!(hosting.purgatory.contains(&fetched.id), "a short grace after the fetch");
        tokio::time::sleep(Duration::from_millis(350)).await;
        hosting.sweep().await;
        assert!(!hosting.purgatory.contains(&fetched.id), "then it expires like any other");
    }
}
