//! Pull request refs: settling `refs/nostr/<id>` against its event, and offering an
//! accepted pull request to the other repositories it addresses.

use std::collections::HashSet;

use nostr::{Event, EventId};

use super::align::ProcessReport;
use super::decide::{self, FoundRef};
use super::hub::Hosting;
use crate::git::refs;
use crate::git::{prs, RepoRef};
use crate::nip34::{commit_tag, RepoAnnouncement, RepoIdentifier};
use crate::purgatory::HeldEvent;

impl Hosting {
    /// Given where the pull request's ref exists (`found`: served at `refs/nostr/<id>` or
    /// waiting at `refs/grasp/waiting/<id>`), releases the held pull request if one holds
    /// its `c` commit (a waiting ref moves to `refs/nostr/<id>`, and the ref is offered in
    /// the other repositories it addresses), and deletes refs holding another commit.
    pub(super) async fn settle_pull_request(
        &self,
        entry: HeldEvent,
        found: Vec<FoundRef>,
        hosted: &[RepoRef],
        all_anns: &[RepoAnnouncement],
        identifier: &RepoIdentifier,
        report: &mut ProcessReport,
    ) {
        // A malformed `c` matches no commit: every ref found is deleted and the event waits
        // until it expires.
        let id = entry.event.id;
        let served = refs::nostr_ref(&id);
        let decide::Settlement { candidates, mismatched } = decide::settle(&entry.event, found);
        let mut holder = None;
        let mut doomed = mismatched;
        for found in candidates {
            if holder.is_none()
                && (found.name == served
                    || self.move_ref(&found.repo, &found.name, &served, &found.target).await)
            {
                holder = Some(found.repo);
            } else {
                doomed.push(found);
            }
        }
        for FoundRef { repo, name, target } in doomed {
            // The pushed commit is not the one the event names (or is a second copy): the
            // ref goes, the event keeps waiting for the right commit.
            if let Err(e) = self.delete_ref(&repo, &name, Some(target.clone())).await {
                report.errors.push(format!("{repo}: {e}"));
            }
            tracing::info!(repo = %repo, event_id = %id, pushed = %target, "deleted mismatching pull request ref");
            report.deleted_refs.push((repo.clone(), name));
            self.drop_placeholders(&[id]).await;
            self.collect_if_empty(&repo).await;
        }
        let commit = commit_tag(&entry.event);
        let (Some(source), Some(commit)) = (holder, commit) else { return };
        self.release(entry.clone(), report).await;
        self.drop_placeholders(&[id]).await;
        // Offer the PR in every announced repository here whose maintainers the PR addresses
        // (for a `/prs/` source this is the one-way GRASP-06 mirror).
        let targets: Vec<RepoRef> = hosted.iter().filter(|r| **r != source).cloned().collect();
        self.offer_pull_request(&entry.event, &source, &commit, &targets, all_anns, identifier, report).await;
    }

    /// Copies the commit of the accepted pull request `event` (at `refs/nostr/<id>` in
    /// `source`) with that ref into each of the announced `targets` whose maintainers it
    /// tags and that lack the ref.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn offer_pull_request(
        &self,
        event: &Event,
        source: &RepoRef,
        commit: &str,
        targets: &[RepoRef],
        all_anns: &[RepoAnnouncement],
        identifier: &RepoIdentifier,
        report: &mut ProcessReport,
    ) {
        let name = refs::nostr_ref(&event.id);
        for target in &decide::offer_targets(self.maintainer_model, event, identifier, targets, all_anns) {
            if self.ref_target(target, &name).await.is_some() {
                continue;
            }
            let result = async {
                refs::copy_objects(&self.repos.path(source), &self.repos.path(target), &[commit.to_owned()])
                    .await?;
                let (path, name, commit) = (self.repos.path(target), name.clone(), commit.to_owned());
                self.blocking(move || {
                    refs::set_ref(&refs::open(&path)?, &name, &commit, "grasp: pull request")
                })
                .await
            }
            .await;
            match result {
                Ok(()) => report.copied_into.push(target.clone()),
                Err(e) => report.errors.push(format!("{target}: {e}")),
            }
        }
    }

    /// A repository just became served: pull requests accepted earlier through `/prs/`
    /// (GRASP-06) for its identifier are offered in it too.
    pub(super) async fn offer_earlier_prs(
        &self,
        target: &RepoRef,
        all_anns: &[RepoAnnouncement],
        identifier: &RepoIdentifier,
        report: &mut ProcessReport,
    ) {
        let (repos, d) = (self.repos.clone(), identifier.clone());
        let sources = self.blocking(move || Ok(prs::with_identifier(&repos, &d))).await.unwrap_or_default();
        for source in sources {
            // Refs still waiting for their event (placeholders) are not accepted yet.
            let accepted: Vec<(EventId, String)> = self
                .nostr_refs(&source)
                .await
                .into_iter()
                .filter(|(id, _)| self.purgatory.placeholder(id).is_none())
                .collect();
            let ids: Vec<EventId> = accepted.iter().map(|(id, _)| *id).collect();
            let Ok(events) = self.store.events_among(&ids).await else { continue };
            for event in events {
                let Some((_, commit)) = accepted.iter().find(|(id, _)| *id == event.id) else { continue };
                if commit_tag(&event).as_deref() == Some(commit.as_str()) {
                    self.offer_pull_request(
                        &event,
                        &source,
                        commit,
                        std::slice::from_ref(target),
                        all_anns,
                        identifier,
                        report,
                    )
                    .await;
                }
            }
        }
    }

    /// Where the commit of a pull request may be at `refs/nostr/<id>`: the announced
    /// repositories of its identifier, the `/prs/` repositories its `clone` tag names here,
    /// and wherever its commit was pushed before the event arrived (so a push that does not
    /// meet the event is found and deleted).
    pub(super) fn pull_request_repos(&self, event: &Event, hosted: &[RepoRef]) -> Vec<RepoRef> {
        let mut repos = hosted.to_vec();
        repos.extend(crate::authorization::prs::named_repositories(event, &self.origin));
        repos.extend(self.purgatory.placeholder(&event.id).and_then(|p| p.repo()));
        let mut seen = HashSet::new();
        repos.retain(|r| seen.insert(r.clone()) && self.repos.exists(r));
        repos
    }
}
