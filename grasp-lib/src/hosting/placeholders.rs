//! `refs/nostr/<id>` refs for events not known here: recorded as placeholders and moved out
//! of the served namespace, and the serving settings that hide them.

use std::net::IpAddr;

use nostr::EventId;
use nostr_database::DatabaseEventStatus;

use super::decide::{self, WaitingFate};
use super::hub::Hosting;
use crate::authorization::{nostr_ref_id, EventView};
use crate::git::pktline::RefUpdate;
use crate::git::refs;
use crate::git::{is_zero_oid, RepoRef};
use crate::purgatory::{now_ms, Placeholder};

impl Hosting {
    /// After a successful push from `client` (its address, when known): each
    /// `refs/nostr/<id>` ref for an event not known here becomes a placeholder and moves out
    /// of the served namespace to `refs/grasp/waiting/<id>`, where it waits for its event.
    /// Returns how many refs moved.
    pub async fn record_placeholders(
        &self,
        repo: &RepoRef,
        updates: &[RefUpdate],
        client: Option<IpAddr>,
    ) -> usize {
        let client = client.map(crate::rate_limit::address_group);
        let now = now_ms();
        let expires_at = now + self.purgatory.timers().pr_ref_expiry.as_millis() as u64;
        let mut placeholders = Vec::new();
        for update in updates.iter().filter(|u| !is_zero_oid(&u.new) && !u.is_noop()) {
            let Some(id) = nostr_ref_id(&update.name) else { continue };
            let known = self.purgatory.contains(&id)
                || !matches!(self.store.status(&id).await, Ok(DatabaseEventStatus::NotExistent));
            if !known {
                placeholders.push(Placeholder {
                    event_id: id,
                    commit: update.new.clone(),
                    owner: repo.owner,
                    identifier: repo.identifier.as_str().to_owned(),
                    namespace: repo.namespace,
                    created_at: now,
                    expires_at,
                    client,
                });
            }
        }
        if placeholders.is_empty() {
            return 0;
        }
        // Recorded first (one journal write), so a crash before the move leaves a ref that
        // startup recovery moves; then moved out of the served namespace.
        if let Err(e) = self.purgatory.add_placeholders(placeholders.clone()).await {
            tracing::warn!(repo = %repo, error = %e, "recording pull request placeholders failed");
            return 0;
        }
        let moves: Vec<(String, String, String)> = placeholders
            .iter()
            .map(|p| (refs::nostr_ref(&p.event_id), refs::waiting_ref(&p.event_id), p.commit.clone()))
            .collect();
        let path = self.repos.path(repo);
        let parked = match self.blocking(move || refs::move_refs(&refs::open(&path)?, &moves)).await {
            Ok(moved) => moved,
            Err(e) => {
                tracing::warn!(repo = %repo, error = %e, "moving pull request refs failed");
                0
            }
        };
        if parked > 0 {
            tracing::debug!(repo = %repo, parked, "pull request refs wait for their event");
            // A stock git server serving this repository must hide them as well (a
            // repository made by another program may lack the setting); many loose refs
            // are packed by the background maintenance.
            self.configure_for_serving(repo).await;
            if !repo.is_prs() {
                self.maintenance.schedule(self.repos.path(repo));
            }
        }
        self.update_gauges();
        parked
    }

    /// Waiting refs (`refs/grasp/waiting/<id>`, with their commits) that have no placeholder
    /// (its record was lost): for an event still unknown a placeholder is recorded, so the
    /// ref expires like any other; a pull request here that names the commit gets its ref
    /// served (the git-data step then settles it); anything else is deleted. Returns how many
    /// refs were handled.
    pub async fn adopt_waiting_refs(&self, repo: &RepoRef, waiting: Vec<(EventId, String)>) -> usize {
        if waiting.is_empty() {
            return 0;
        }
        let ids: Vec<EventId> = waiting.iter().map(|(id, _)| *id).collect();
        let named = match EventView::named_events(self, &ids).await {
            Ok(named) => named,
            Err(e) => {
                tracing::warn!(repo = %repo, error = %e, "reading the events of waiting refs failed");
                return 0;
            }
        };
        let now = now_ms();
        let expires_at = now + self.purgatory.timers().pr_ref_expiry.as_millis() as u64;
        let mut placeholders = Vec::new();
        for (id, commit) in &waiting {
            let waiting_name = refs::waiting_ref(id);
            match decide::waiting_fate(named.get(id), commit) {
                WaitingFate::Record => placeholders.push(Placeholder {
                    event_id: *id,
                    commit: commit.clone(),
                    owner: repo.owner,
                    identifier: repo.identifier.as_str().to_owned(),
                    namespace: repo.namespace,
                    created_at: now,
                    expires_at,
                    client: None,
                }),
                WaitingFate::Serve => {
                    self.move_ref(repo, &waiting_name, &refs::nostr_ref(id), commit).await;
                }
                WaitingFate::Delete => {
                    if let Err(e) = self.delete_ref(repo, &waiting_name, Some(commit.clone())).await {
                        tracing::warn!(repo = %repo, error = %e, "deleting a stale waiting ref failed");
                    }
                }
            }
        }
        if let Err(e) = self.purgatory.add_placeholders(placeholders).await {
            tracing::warn!(repo = %repo, error = %e, "recording placeholders of waiting refs failed");
        }
        self.update_gauges();
        waiting.len()
    }

    /// Takes placeholders out of purgatory (their ref was matched or deleted).
    pub(super) async fn drop_placeholders(&self, ids: &[EventId]) {
        if let Err(e) = self.purgatory.remove_placeholders(ids).await {
            tracing::warn!(error = %e, "removing placeholders failed");
        }
    }

    /// Writes the repository's serving settings ([`refs::SERVING_SETTINGS`]) into its git
    /// config, so any other server of the directory (`git http-backend` behind grasp-proxy,
    /// a forge behind grasp-hook) serves it as this process does. A failure is logged: this
    /// process passes the settings to git itself regardless.
    pub async fn configure_for_serving(&self, repo: &RepoRef) {
        let path = self.repos.path(repo);
        if let Err(e) = self.blocking(move || refs::configure_for_serving(&path)).await {
            tracing::warn!(repo = %repo, error = %e, "writing the repository's serving config failed");
        }
    }

    /// [`Hosting::configure_for_serving`] for every repository on disk: for a frontend whose
    /// git server reads the repositories' own config, at start (repositories made by older
    /// versions).
    pub async fn configure_all_for_serving(&self) {
        let repos = self.repos.clone();
        let all = self.blocking(move || Ok(repos.all())).await.unwrap_or_default();
        for repo in &all {
            self.configure_for_serving(repo).await;
        }
        tracing::info!(repositories = all.len(), "repository serving config written");
    }
}
