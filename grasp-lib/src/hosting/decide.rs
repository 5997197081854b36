//! The pure decisions of hosting: given what was read from the store, purgatory and the
//! repositories, what the git-data step does. Kept apart from the steps that read and write
//! so each rule is unit-tested without a repository.

use std::collections::HashSet;

use nostr::{Event, PublicKey};

use crate::authorization::Named;
use crate::git::RepoRef;
use crate::maintainers::{MaintainerModel, MaintainerSet};
use crate::nip34::{commit_tag, kinds, EventReferences, RepoAnnouncement, RepoIdentifier, RepoState};
use crate::purgatory::HeldEvent;

/// Held states a maintainer of one of the `hosted` repositories signed, oldest first: the
/// only ones whose data can release them (a state by anyone else waits until an
/// announcement makes its author a maintainer).
pub fn authorized_held_states(
    model: MaintainerModel,
    held: Vec<HeldEvent>,
    hosted: &[RepoRef],
    announcements: &[RepoAnnouncement],
) -> Vec<(HeldEvent, RepoState)> {
    let sets: Vec<MaintainerSet> =
        hosted.iter().map(|r| MaintainerSet::from_announcements(model, r.owner, announcements)).collect();
    let mut states: Vec<(HeldEvent, RepoState)> = held
        .into_iter()
        .filter_map(|e| RepoState::parse(&e.event).ok().map(|s| (e, s)))
        .filter(|(_, s)| sets.iter().any(|set| set.contains(&s.author)))
        .collect();
    // Same second: the lower id last, so it is the version that stays (decision 27).
    states.sort_by_key(|(_, s)| (s.created_at, std::cmp::Reverse(s.id)));
    states
}

/// Held states that a just promoted state of the same author and identifier supersedes:
/// they can never be served. The caller drops those whose data is not here (a state whose
/// data is here is left to the git-data step, which settles it like any other).
pub fn superseded_held_states(
    promoted: &[RepoState],
    held: Vec<(HeldEvent, RepoState)>,
) -> Vec<(HeldEvent, RepoState)> {
    held.into_iter()
        .filter(|(_, h)| {
            promoted.iter().any(|p| p.author == h.author && p.identifier == h.identifier && p.supersedes(h))
        })
        .collect()
}

/// Where a pull request's ref was found: the repository, the ref (served or waiting) and
/// the commit it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRef {
    /// The repository holding the ref.
    pub repo: RepoRef,
    /// `refs/nostr/<id>` or `refs/grasp/waiting/<id>`.
    pub name: String,
    /// The commit the ref points at.
    pub target: String,
}

/// What to do with the refs found for one held pull request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Refs holding the event's `c` commit where the event belongs, in the order to try as
    /// the one that is kept (the first that can be served is; the rest are deleted).
    pub candidates: Vec<FoundRef>,
    /// Refs holding another commit, or in a `/prs/` repository the event does not belong
    /// to: deleted, and the event keeps waiting.
    pub mismatched: Vec<FoundRef>,
}

/// Splits the refs found for pull request `event` into keepers and refs to delete. A ref in
/// a `/prs/` repository counts only when the event is the contributor's and names that
/// repository (GRASP-06); a malformed `c` matches nothing. Served refs come before waiting
/// ones, so a ref already served is kept rather than moved.
pub fn settle(event: &Event, found: Vec<FoundRef>) -> Settlement {
    let commit = commit_tag(event);
    let served = crate::git::refs::nostr_ref(&event.id);
    let mut settlement = Settlement::default();
    for found in found {
        let belongs =
            !found.repo.is_prs() || crate::authorization::prs::event_mismatch(&found.repo, event).is_none();
        if belongs && commit.as_deref() == Some(found.target.as_str()) {
            settlement.candidates.push(found);
        } else {
            settlement.mismatched.push(found);
        }
    }
    settlement.candidates.sort_by_key(|f| f.name != served);
    settlement
}

/// The fate of a waiting ref (`refs/grasp/waiting/<id>`) whose placeholder record was lost,
/// given what the event id names here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingFate {
    /// The event is unknown: record a placeholder so the ref expires like any other.
    Record,
    /// A pull request here names this commit: serve the ref at `refs/nostr/<id>`.
    Serve,
    /// A pull request naming another commit, another kind, or a deleted event: the ref goes.
    Delete,
}

/// See [`WaitingFate`].
pub fn waiting_fate(named: Option<&Named>, commit: &str) -> WaitingFate {
    match named {
        None => WaitingFate::Record,
        Some(Named::PullRequest(event)) if commit_tag(event).as_deref() == Some(commit) => WaitingFate::Serve,
        Some(_) => WaitingFate::Delete,
    }
}

/// The repositories among `targets` an accepted pull request is offered in: announced
/// (never `/prs/`) repositories whose maintainer set contains a pubkey the event tags as a
/// repository with `identifier`.
pub fn offer_targets(
    model: MaintainerModel,
    event: &Event,
    identifier: &RepoIdentifier,
    targets: &[RepoRef],
    announcements: &[RepoAnnouncement],
) -> Vec<RepoRef> {
    let tagged: HashSet<PublicKey> = EventReferences::of(event)
        .coordinates
        .into_iter()
        .filter(|c| c.kind == kinds::REPO_ANNOUNCEMENT && c.identifier == identifier.as_str())
        .map(|c| c.pubkey)
        .collect();
    targets
        .iter()
        .filter(|t| !t.is_prs())
        .filter(|t| {
            let set = MaintainerSet::from_announcements(model, t.owner, announcements);
            tagged.iter().any(|pk| set.contains(pk))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Kind, Tag, Timestamp};

    use super::*;
    use crate::git::refs::{nostr_ref, waiting_ref};
    use crate::purgatory::HeldKind;

    const C1: &str = "1111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222";

    fn ident() -> RepoIdentifier {
        RepoIdentifier::new("repo").unwrap()
    }

    fn sign(keys: &Keys, kind: u16, tags: Vec<Vec<String>>, at: u64) -> Event {
        let tags = tags.into_iter().map(|t| Tag::parse(t).unwrap());
        EventBuilder::new(Kind::Custom(kind), "")
            .tags(tags)
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)
            .unwrap()
    }

    fn announcement(owner: &Keys, maintainers: &[&Keys]) -> RepoAnnouncement {
        let mut tags = vec![vec!["d".to_owned(), "repo".to_owned()]];
        if !maintainers.is_empty() {
            let mut m = vec!["maintainers".to_owned()];
            m.extend(maintainers.iter().map(|k| k.public_key().to_hex()));
            tags.push(m);
        }
        RepoAnnouncement::parse(&sign(owner, 30617, tags, 1)).unwrap()
    }

    fn held_state(author: &Keys, at: u64) -> HeldEvent {
        let tags =
            vec![vec!["d".to_owned(), "repo".to_owned()], vec!["refs/heads/main".to_owned(), C1.to_owned()]];
        HeldEvent {
            event: sign(author, 30618, tags, at),
            kind: HeldKind::State,
            identifier: "repo".to_owned(),
            received_at: 0,
            expires_at: u64::MAX,
            waits_for: None,
            created_repo: false,
            client: None,
        }
    }

    fn pull_request(author: &Keys, tagged: &Keys, commit: &str) -> Event {
        let a = format!("30617:{}:repo", tagged.public_key().to_hex());
        sign(author, 1618, vec![vec!["a".to_owned(), a], vec!["c".to_owned(), commit.to_owned()]], 1)
    }

    #[test]
    fn held_states_of_maintainers_only_oldest_first() {
        let (owner, maintainer, stranger) = (Keys::generate(), Keys::generate(), Keys::generate());
        let anns = vec![announcement(&owner, &[&maintainer]), announcement(&maintainer, &[&owner])];
        let hosted = vec![RepoRef::new(owner.public_key(), ident())];
        let held = vec![held_state(&maintainer, 30), held_state(&stranger, 10), held_state(&owner, 20)];
        let authorized = authorized_held_states(MaintainerModel::Reciprocal, held.clone(), &hosted, &anns);
        let authors: Vec<_> = authorized.iter().map(|(_, s)| s.author).collect();
        assert_eq!(authors, vec![owner.public_key(), maintainer.public_key()]);
        // Without the maintainer's acceptance, only the owner's state can be released.
        let invited = vec![announcement(&owner, &[&maintainer])];
        let authorized = authorized_held_states(MaintainerModel::Reciprocal, held, &hosted, &invited);
        assert_eq!(authorized.iter().map(|(_, s)| s.author).collect::<Vec<_>>(), vec![owner.public_key()]);
    }

    #[test]
    fn superseded_held_states_are_the_same_authors_older_ones() {
        let (owner, other) = (Keys::generate(), Keys::generate());
        let parse = |h: HeldEvent| {
            let s = RepoState::parse(&h.event).unwrap();
            (h, s)
        };
        let promoted = parse(held_state(&owner, 20)).1;
        let older = parse(held_state(&owner, 10));
        let newer = parse(held_state(&owner, 30));
        let others = parse(held_state(&other, 10));
        let held = vec![older.clone(), newer, others];
        let dropped = superseded_held_states(&[promoted.clone()], held);
        assert_eq!(dropped.iter().map(|(h, _)| h.event.id).collect::<Vec<_>>(), vec![older.0.event.id]);
        // Same second: only the one with the higher id is superseded.
        let twin = parse(held_state(&owner, 20));
        let dropped = superseded_held_states(&[promoted.clone()], vec![twin.clone()]);
        assert_eq!(dropped.len(), usize::from(twin.1.id > promoted.id));
    }

    #[test]
    fn held_states_need_a_hosted_repository() {
        let owner = Keys::generate();
        let anns = vec![announcement(&owner, &[])];
        assert!(authorized_held_states(MaintainerModel::Reciprocal, vec![held_state(&owner, 1)], &[], &anns)
            .is_empty());
    }

    #[test]
    fn settlement_keeps_matching_refs_served_first_and_deletes_the_rest() {
        let (author, owner) = (Keys::generate(), Keys::generate());
        let event = pull_request(&author, &owner, C1);
        let repo = RepoRef::new(owner.public_key(), ident());
        let other = RepoRef::new(Keys::generate().public_key(), ident());
        let waiting = FoundRef { repo: repo.clone(), name: waiting_ref(&event.id), target: C1.to_owned() };
        let served = FoundRef { repo: other.clone(), name: nostr_ref(&event.id), target: C1.to_owned() };
        let wrong = FoundRef { repo: repo.clone(), name: nostr_ref(&event.id), target: C2.to_owned() };
        let s = settle(&event, vec![waiting.clone(), wrong.clone(), served.clone()]);
        assert_eq!(s.candidates, vec![served, waiting]);
        assert_eq!(s.mismatched, vec![wrong]);
    }

    #[test]
    fn settlement_of_a_malformed_commit_deletes_everything() {
        let (author, owner) = (Keys::generate(), Keys::generate());
        let event = pull_request(&author, &owner, "abc");
        let found = FoundRef {
            repo: RepoRef::new(owner.public_key(), ident()),
            name: nostr_ref(&event.id),
            target: "abc".to_owned(),
        };
        let s = settle(&event, vec![found.clone()]);
        assert!(s.candidates.is_empty());
        assert_eq!(s.mismatched, vec![found]);
    }

    #[test]
    fn settlement_in_a_prs_repository_needs_the_contributor() {
        let (author, owner, someone) = (Keys::generate(), Keys::generate(), Keys::generate());
        let event = pull_request(&author, &owner, C1);
        let foreign = FoundRef {
            repo: RepoRef::prs(someone.public_key(), ident()),
            name: nostr_ref(&event.id),
            target: C1.to_owned(),
        };
        let s = settle(&event, vec![foreign.clone()]);
        assert!(s.candidates.is_empty());
        assert_eq!(s.mismatched, vec![foreign]);
    }

    #[test]
    fn waiting_refs_are_recorded_served_or_deleted() {
        let (author, owner) = (Keys::generate(), Keys::generate());
        let pr = Named::PullRequest(Box::new(pull_request(&author, &owner, C1)));
        assert_eq!(waiting_fate(None, C1), WaitingFate::Record);
        assert_eq!(waiting_fate(Some(&pr), C1), WaitingFate::Serve);
        assert_eq!(waiting_fate(Some(&pr), C2), WaitingFate::Delete);
        assert_eq!(waiting_fate(Some(&Named::Deleted), C1), WaitingFate::Delete);
        assert_eq!(waiting_fate(Some(&Named::Other(Kind::TextNote)), C1), WaitingFate::Delete);
    }

    #[test]
    fn pull_requests_are_offered_where_a_tagged_pubkey_maintains() {
        let (author, owner, maintainer, stranger) =
            (Keys::generate(), Keys::generate(), Keys::generate(), Keys::generate());
        // The event tags the maintainer's repository; the owner lists the maintainer.
        let event = pull_request(&author, &maintainer, C1);
        let anns = vec![
            announcement(&owner, &[&maintainer]),
            announcement(&maintainer, &[&owner]),
            announcement(&stranger, &[]),
        ];
        let owners = RepoRef::new(owner.public_key(), ident());
        let maintainers = RepoRef::new(maintainer.public_key(), ident());
        let strangers = RepoRef::new(stranger.public_key(), ident());
        let prs = RepoRef::prs(maintainer.public_key(), ident());
        let targets = vec![owners.clone(), maintainers.clone(), strangers, prs];
        let v3 = MaintainerModel::Reciprocal;
        assert_eq!(offer_targets(v3, &event, &ident(), &targets, &anns), vec![owners, maintainers]);
        let other = RepoIdentifier::new("other").unwrap();
        assert!(offer_targets(v3, &event, &other, &targets, &anns).is_empty());
    }
}
