//! The push rule: the refs after a push must equal a maintainer's state, and its
//! `refs/nostr` refs must follow their rules. [`decide`] is pure; [`authorize_push`] gathers
//! its inputs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use nostr::{Event, EventId, Timestamp};

use super::decision::{AuthorizationError, PushDecision};
use super::nostr_refs::{
    nostr_ref_id, nostr_ref_rules, nostr_updates, pull_request_commit_mismatch, NostrRefContext,
    PlaceholderCaps,
};
use super::view::{EventView, PlaceholderRoom};
use crate::git::pktline::RefUpdate;
use crate::git::{refs, GitError, RepoRef};
use crate::maintainers::MaintainerSet;
use crate::nip34::{raw_commit_tag, RepoState};

/// Everything [`decide`] looks at besides the push itself.
#[derive(Debug, Clone, Copy)]
pub struct PushContext<'a> {
    /// The URL owner's confirmed maintainer set.
    pub maintainers: &'a MaintainerSet,
    /// The repository's branches and tags now.
    pub current: &'a BTreeMap<String, String>,
    /// Candidate states (any author; only maintainers' count).
    pub states: &'a [RepoState],
    /// When the state the repository is aligned to was signed.
    pub applied: Option<Timestamp>,
    /// The `refs/nostr` rules' facts ([`NostrRefContext`]).
    pub nostr: NostrRefContext<'a>,
}

/// A push to be decided: where to, what it changes, and from which client address.
#[derive(Debug, Clone, Copy)]
pub struct PushRequest<'a> {
    /// The repository pushed to.
    pub repo: &'a RepoRef,
    /// Its bare repository on disk.
    pub path: &'a Path,
    /// The ref updates of the push.
    pub updates: &'a [RefUpdate],
    /// The client's address, when known (placeholders are bounded per address group).
    pub client: Option<IpAddr>,
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(7)]
}

/// Describes how `would_be` differs from `state`, for the rejection message.
fn describe_difference(would_be: &BTreeMap<String, String>, state: &BTreeMap<String, String>) -> String {
    let names: BTreeSet<&String> = would_be.keys().chain(state.keys()).collect();
    let diffs: Vec<String> = names
        .into_iter()
        .filter_map(|name| match (would_be.get(name), state.get(name)) {
            (Some(a), Some(b)) if a != b => {
                Some(format!("{name} would be at {} but the state says {}", short(a), short(b)))
            }
            (Some(_), None) => Some(format!("{name} is not in the state")),
            (None, Some(b)) => Some(format!("{name} is in the state (at {}) but would not exist", short(b))),
            _ => None,
        })
        .collect();
    let mut text = diffs.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if diffs.len() > 3 {
        text.push_str(&format!("; and {} more", diffs.len() - 3));
    }
    text
}

/// The pure push rule. See the module documentation.
pub fn decide(updates: &[RefUpdate], ctx: &PushContext<'_>) -> PushDecision {
    let changes: Vec<&RefUpdate> = updates.iter().filter(|u| !u.is_noop()).collect();
    let mut branch_changes = Vec::new();
    for update in &changes {
        let name = update.name.as_str();
        if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
            branch_changes.push(*update);
        } else if !name.starts_with("refs/nostr/") {
            return PushDecision::rejected(format!(
                "{name}: only refs/heads/*, refs/tags/* and refs/nostr/<event id> can be pushed here"
            ));
        }
    }
    let commit_mismatch = |name: &str, event: &Event, update: &RefUpdate| {
        pull_request_commit_mismatch(name, raw_commit_tag(event), &update.new)
    };
    if let Some(refusal) = nostr_ref_rules(&nostr_updates(updates), &ctx.nostr, commit_mismatch) {
        return refusal;
    }
    if branch_changes.is_empty() {
        return PushDecision::Authorized { state: None };
    }

    let mut would_be = ctx.current.clone();
    let mut tags_set = BTreeSet::new();
    for update in &branch_changes {
        if update.is_delete() {
            would_be.remove(&update.name);
        } else {
            would_be.insert(update.name.clone(), update.new.clone());
            if update.name.starts_with("refs/tags/") {
                tags_set.insert(update.name.clone());
            }
        }
    }
    // Tags a state does not declare are checked only where the push creates or moves them
    // (refused: the state must name them). One it leaves alone (a forge's own, in hook
    // mode) or deletes is not the push's business.
    let compared = |state: &RepoState| -> BTreeMap<String, String> {
        would_be
            .iter()
            .filter(|(name, _)| {
                !name.starts_with("refs/tags/") || state.refs.contains_key(*name) || tags_set.contains(*name)
            })
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect()
    };
    let mut candidates: Vec<&RepoState> =
        ctx.states.iter().filter(|s| s.can_drive_refs() && ctx.maintainers.contains(&s.author)).collect();
    if candidates.is_empty() {
        return PushDecision::rejected(
            "no state event (kind 30618) from a maintainer of this repository; publish one that lists the refs \
             you are pushing (ngit does this), then push again",
        );
    }
    candidates.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let undeclared_tag_deletion = |u: &&RefUpdate| {
        u.is_delete() && u.name.starts_with("refs/tags/") && !candidates[0].refs.contains_key(&u.name)
    };
    if branch_changes.iter().all(undeclared_tag_deletion) {
        // Only deletes tags the newest state does not declare: nothing a state governs moves.
        return PushDecision::Authorized { state: None };
    }
    let Some(matching) = candidates.iter().find(|s| s.refs == compared(s)) else {
        let newest = candidates[0];
        return PushDecision::rejected(format!(
            "the refs after this push do not match the latest state event of a maintainer: {}; publish a state \
             event with exactly these refs and push again",
            describe_difference(&compared(newest), &newest.refs)
        ));
    };
    if ctx.applied.is_some_and(|applied| matching.created_at < applied) {
        return PushDecision::rejected(
            "this push matches a state event older than the one the repository already follows; publish a newer \
             state event to roll back",
        );
    }
    PushDecision::Authorized { state: Some(matching.id) }
}

/// Decides about `request`, reading the repository's current refs from disk and events and
/// placeholders from `view`; `caps` bound the placeholders a push may make.
pub async fn authorize_push(
    request: &PushRequest<'_>,
    view: &dyn EventView,
    caps: PlaceholderCaps,
) -> Result<PushDecision, AuthorizationError> {
    let (repo, updates) = (request.repo, request.updates);
    let nostr = nostr_updates(updates);
    // Counted before anything is looked up, so a flood costs no lookups.
    if nostr.len() > caps.per_push {
        let room = PlaceholderRoom::default();
        let ctx = NostrRefContext { named: &HashMap::new(), room: &room, caps };
        return Ok(nostr_ref_rules(&nostr, &ctx, |_, _, _| None).expect("over the per-push cap"));
    }
    let ids: Vec<EventId> = nostr.iter().filter_map(|u| nostr_ref_id(&u.name)).collect();
    let named = if ids.is_empty() { HashMap::new() } else { view.named_events(&ids).await? };
    let client = request.client.map(crate::rate_limit::address_group);
    let room =
        if ids.is_empty() { PlaceholderRoom::default() } else { view.placeholders(repo, client, &ids) };
    let nostr = NostrRefContext { named: &named, room: &room, caps };
    if repo.is_prs() {
        return Ok(super::prs::decide_push(repo, updates, &nostr));
    }
    let d = repo.identifier.as_str();
    let path = request.path.to_path_buf();
    let (current, applied) = tokio::task::spawn_blocking(move || -> Result<_, GitError> {
        let git = refs::open(&path)?;
        Ok((refs::branches_and_tags(&git)?, refs::applied_state(&git).map(|(_, at)| at)))
    })
    .await
    .map_err(GitError::from)??;
    let announcements = view.announcements(d).await?;
    let maintainers = MaintainerSet::from_announcements(view.maintainer_model(), repo.owner, &announcements);
    let states = view.states(d).await?;
    let ctx = PushContext { maintainers: &maintainers, current: &current, states: &states, applied, nostr };
    Ok(decide(updates, &ctx))
}

#[cfg(test)]
mod tests {
    use nostr::{Keys, PublicKey};

    use super::*;
    use crate::authorization::Named;
    use crate::nip34::kinds;
    use crate::nip34::RepoIdentifier;
    use nostr::Kind;

    const Z: &str = "0000000000000000000000000000000000000000";
    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    fn upd(name: &str, old: &str, new: &str) -> RefUpdate {
        RefUpdate { old: old.into(), new: new.into(), name: name.into() }
    }

    fn state(author: PublicKey, refs: &[(&str, &str)], at: u64) -> RepoState {
        RepoState {
            id: EventId::from_byte_array([at as u8; 32]),
            author,
            identifier: RepoIdentifier::new("r").unwrap(),
            refs: refs.iter().map(|(n, o)| (n.to_string(), o.to_string())).collect(),
            malformed_refs: Vec::new(),
            head: None,
            created_at: Timestamp::from(at),
        }
    }

    struct World {
        owner: PublicKey,
        set: MaintainerSet,
        current: BTreeMap<String, String>,
        states: Vec<RepoState>,
        applied: Option<Timestamp>,
        named: HashMap<EventId, Named>,
        room: PlaceholderRoom,
        caps: PlaceholderCaps,
    }

    impl World {
        fn new() -> Self {
            let owner = Keys::generate().public_key();
            let set = MaintainerSet::only(owner);
            Self {
                owner,
                set,
                current: BTreeMap::new(),
                states: vec![],
                applied: None,
                named: HashMap::new(),
                room: PlaceholderRoom { of_client: Some(0), ..PlaceholderRoom::default() },
                caps: PlaceholderCaps::default(),
            }
        }
        fn decide(&self, updates: &[RefUpdate]) -> PushDecision {
            let nostr = NostrRefContext { named: &self.named, room: &self.room, caps: self.caps };
            let ctx = PushContext {
                maintainers: &self.set,
                current: &self.current,
                states: &self.states,
                applied: self.applied,
                nostr,
            };
            decide(updates, &ctx)
        }
        /// A pull request naming `commit`, known here; its `refs/nostr` name.
        fn pull_request(&mut self, commit: &str) -> String {
            let event = nostr::EventBuilder::new(Kind::Custom(kinds::PULL_REQUEST), "")
                .tags([nostr::Tag::parse(["c", commit]).unwrap()])
                .sign_with_keys(&Keys::generate())
                .unwrap();
            let name = format!("refs/nostr/{}", event.id.to_hex());
            self.named.insert(event.id, Named::PullRequest(Box::new(event)));
            name
        }
    }

    fn nostr_name(i: u32) -> String {
        format!("refs/nostr/{:064x}", i)
    }

    fn rejected(d: PushDecision) -> String {
        match d {
            PushDecision::Rejected { reason, .. } => reason,
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn exact_match_with_current_refs_applied() {
        let mut w = World::new();
        w.current.insert("refs/heads/main".into(), A.into());
        w.states.push(state(w.owner, &[("refs/heads/main", B), ("refs/tags/v1", C)], 10));
        // pushing only the changed refs is enough
        let push = [upd("refs/heads/main", A, B), upd("refs/tags/v1", Z, C)];
        assert_eq!(w.decide(&push), PushDecision::Authorized { state: Some(w.states[0].id) });
        // a missing tag makes it differ
        let reason = rejected(w.decide(&[upd("refs/heads/main", A, B)]));
        assert!(reason.contains("refs/tags/v1 is in the state"), "{reason}");
        // an extra branch too
        let reason = rejected(w.decide(&[
            upd("refs/heads/main", A, B),
            upd("refs/tags/v1", Z, C),
            upd("refs/heads/x", Z, A),
        ]));
        assert!(reason.contains("refs/heads/x is not in the state"), "{reason}");
    }

    #[test]
    fn undeclared_tags_are_refused_where_pushed_and_ignored_or_deletable_elsewhere() {
        let mut w = World::new();
        w.current =
            [("refs/heads/main".to_owned(), A.to_owned()), ("refs/tags/forge".to_owned(), A.to_owned())]
                .into();
        w.states.push(state(w.owner, &[("refs/heads/main", B)], 10));
        // The undeclared tag the repository already has does not block a matching push.
        assert!(matches!(w.decide(&[upd("refs/heads/main", A, B)]), PushDecision::Authorized { .. }));
        // Deleting it is allowed, alone or with the branch.
        assert!(matches!(w.decide(&[upd("refs/tags/forge", A, Z)]), PushDecision::Authorized { .. }));
        // Creating or moving a tag the state does not declare is refused, naming it.
        let reason = rejected(w.decide(&[upd("refs/heads/main", A, B), upd("refs/tags/v9", Z, B)]));
        assert!(reason.contains("refs/tags/v9 is not in the state"), "{reason}");
        let reason = rejected(w.decide(&[upd("refs/heads/main", A, B), upd("refs/tags/forge", A, B)]));
        assert!(reason.contains("refs/tags/forge is not in the state"), "{reason}");
        // Undeclared branches still count: the branches must equal the state.
        w.current.insert("refs/heads/extra".to_owned(), A.to_owned());
        let reason = rejected(w.decide(&[upd("refs/heads/main", A, B)]));
        assert!(reason.contains("refs/heads/extra is not in the state"), "{reason}");
    }

    #[test]
    fn deletion_and_newest_matching_state() {
        let mut w = World::new();
        w.current.insert("refs/heads/main".into(), A.into());
        w.current.insert("refs/heads/old".into(), B.into());
        w.states.push(state(w.owner, &[("refs/heads/main", A)], 10));
        w.states.push(state(w.owner, &[("refs/heads/main", A)], 20));
        assert_eq!(
            w.decide(&[upd("refs/heads/old", B, Z)]),
            PushDecision::Authorized { state: Some(w.states[1].id) }
        );
    }

    #[test]
    fn no_state_or_non_maintainer_state_is_rejected() {
        let mut w = World::new();
        assert!(rejected(w.decide(&[upd("refs/heads/main", Z, A)])).contains("no state event"));
        w.states.push(state(Keys::generate().public_key(), &[("refs/heads/main", A)], 10));
        assert!(rejected(w.decide(&[upd("refs/heads/main", Z, A)])).contains("no state event"));
        // an empty state never authorizes
        w.states.push(state(w.owner, &[], 11));
        assert!(rejected(w.decide(&[upd("refs/heads/main", Z, A)])).contains("no state event"));
    }

    #[test]
    fn a_state_with_a_malformed_ref_value_never_authorizes() {
        let mut w = World::new();
        // The well-formed part matches the push, but the state also names a short id.
        let mut s = state(w.owner, &[("refs/heads/main", A)], 10);
        s.malformed_refs.push("refs/heads/dev".into());
        w.states.push(s);
        assert!(rejected(w.decide(&[upd("refs/heads/main", Z, A)])).contains("no state event"));
    }

    #[test]
    fn a_pull_request_with_a_malformed_commit_refuses_its_ref() {
        let mut w = World::new();
        let name = w.pull_request("abc123");
        let reason = rejected(w.decide(&[upd(&name, Z, A)]));
        assert!(reason.contains("not a full commit id"), "{reason}");
    }

    #[test]
    fn refs_nostr_under_the_id_of_another_kind_of_event_or_a_deleted_one_are_refused() {
        let mut w = World::new();
        let (ann, deleted) = (EventId::from_byte_array([1; 32]), EventId::from_byte_array([2; 32]));
        w.named.insert(ann, Named::Other(Kind::Custom(kinds::REPO_ANNOUNCEMENT)));
        w.named.insert(deleted, Named::Deleted);
        let reason = rejected(w.decide(&[upd(&format!("refs/nostr/{}", ann.to_hex()), Z, A)]));
        assert!(reason.contains("kind 30617 event here, not a pull request"), "{reason}");
        let reason = rejected(w.decide(&[upd(&format!("refs/nostr/{}", deleted.to_hex()), Z, A)]));
        assert!(reason.contains("deleted"), "{reason}");
    }

    #[test]
    fn placeholders_are_bounded_per_push_per_repository_and_per_client() {
        let mut w = World::new();
        w.caps = PlaceholderCaps { per_push: 3, per_repository: 5, per_client: 4 };
        let push =
            |n: u32, from: u32| (from..from + n).map(|i| upd(&nostr_name(i), Z, A)).collect::<Vec<_>>();
        assert!(matches!(w.decide(&push(3, 0)), PushDecision::Authorized { .. }));
        let reason = rejected(w.decide(&push(4, 0)));
        assert!(reason.contains("carries 4 refs/nostr refs") && reason.contains("at most 3"), "{reason}");
        // no-ops do not count
        let mut noops = push(3, 0);
        noops.push(upd(&nostr_name(9), A, A));
        assert!(matches!(w.decide(&noops), PushDecision::Authorized { .. }));

        w.room.of_client = Some(2);
        let reason = rejected(w.decide(&push(3, 0)));
        assert!(reason.contains("your address already has 2"), "{reason}");
        w.room.of_client = None;
        assert!(matches!(w.decide(&push(3, 0)), PushDecision::Authorized { .. }), "address unknown");

        w.room.in_repository = 3;
        w.room.waiting = (0..3).map(|i| EventId::from_hex(&format!("{i:064x}")).unwrap()).collect();
        assert!(
            matches!(w.decide(&push(3, 0)), PushDecision::Authorized { .. }),
            "pushed again: nothing new"
        );
        assert!(matches!(w.decide(&push(2, 2)), PushDecision::Authorized { .. }), "3 + 1 new fits in 5");
        let reason = rejected(w.decide(&push(3, 3)));
        assert!(reason.contains("repository already has 3") && reason.contains("at most 5"), "{reason}");
        // A known pull request makes no placeholder.
        let name = w.pull_request(A);
        let mut with_pr = push(2, 3);
        with_pr.push(upd(&name, Z, A));
        assert!(matches!(w.decide(&with_pr), PushDecision::Authorized { .. }));
    }

    #[test]
    fn rollback_to_an_older_state_is_rejected() {
        let mut w = World::new();
        w.current.insert("refs/heads/main".into(), B.into());
        w.states.push(state(w.owner, &[("refs/heads/main", A)], 10));
        w.applied = Some(Timestamp::from(20));
        assert!(rejected(w.decide(&[upd("refs/heads/main", B, A)])).contains("older"));
        w.applied = Some(Timestamp::from(10));
        assert!(matches!(w.decide(&[upd("refs/heads/main", B, A)]), PushDecision::Authorized { .. }));
    }

    #[test]
    fn noop_and_nostr_refs() {
        let mut w = World::new();
        assert_eq!(w.decide(&[]), PushDecision::Authorized { state: None });
        assert_eq!(w.decide(&[upd("refs/heads/main", A, A)]), PushDecision::Authorized { state: None });
        // unknown PR: accepted
        assert_eq!(w.decide(&[upd(&nostr_name(7), Z, A)]), PushDecision::Authorized { state: None });
        // known PR: commit must match
        let name = w.pull_request(A);
        assert!(matches!(w.decide(&[upd(&name, Z, A)]), PushDecision::Authorized { .. }));
        assert!(rejected(w.decide(&[upd(&name, Z, B)])).contains("'c' tag"));
        assert!(rejected(w.decide(&[upd(&name, A, Z)])).contains("cannot be deleted"));
        for bad in ["refs/nostr/xyz", &format!("refs/nostr/{}", "AB".repeat(32)), "refs/nostr/"] {
            assert!(rejected(w.decide(&[upd(bad, Z, A)])).contains("64-character"), "{bad}");
        }
        assert!(rejected(w.decide(&[upd("refs/notes/commits", Z, A)])).contains("only refs/heads"));
        assert!(rejected(w.decide(&[upd("HEAD", Z, A)])).contains("only refs/heads"));
    }
}
