//! Push authorization: may this push land?
//!
//! The refs the repository would have after the push (its current `refs/heads/*` and
//! `refs/tags/*` with the pushed creates, moves and deletes applied) must equal exactly the
//! refs of a state event authored by a member of the URL owner's recursive maintainer set.
//! The newest such state wins, and it may not be older than the state the repository is
//! already aligned to (no rollbacks). `refs/nostr/<event id>` refs carry pull request
//! commits: a known PR or PR update must name the pushed commit in its `c` tag.
//!
//! [`decide`] is the pure rule; [`authorize_push`] gathers its inputs from the repository
//! on disk and an [`EventView`], which any frontend (inline server, proxy, git hook) can
//! provide.
//!
//! ```
//! # tokio_test::block_on(async {
//! use grasp_lib::authorization::{authorize_push, PushDecision};
//! use grasp_lib::git::{pktline::RefUpdate, RepoRef, Repositories};
//! use grasp_lib::nip34::RepoIdentifier;
//! use grasp_lib::store::EventStore;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let repos = Repositories::new(dir.path());
//! let owner = nostr::Keys::generate().public_key();
//! let repo = RepoRef::new(owner, RepoIdentifier::new("demo").unwrap());
//! repos.create(&repo).await.unwrap();
//!
//! let push = [RefUpdate {
//!     old: "0".repeat(40),
//!     new: "1".repeat(40),
//!     name: "refs/heads/main".into(),
//! }];
//! // An empty store holds no state event, so the push is refused with a reason for the user.
//! let decision = authorize_push(&repo, &repos.path(&repo), &push, &EventStore::memory()).await.unwrap();
//! match decision {
//!     PushDecision::Rejected { reason } => assert!(reason.contains("no state event")),
//!     PushDecision::Authorized { .. } => unreachable!(),
//! }
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use futures::future::BoxFuture;
use nostr::{Event, EventId, Filter, Kind, Timestamp};

use crate::git::pktline::RefUpdate;
use crate::git::{refs, GitError, RepoRef};
use crate::maintainers::MaintainerSet;
use crate::nip34::{is_object_id, kinds, raw_commit_tag, RepoAnnouncement, RepoState};
use crate::store::{EventStore, StoreError};

/// Read access to the events authorization depends on. The event store implements it;
/// purgatory adds held events on top.
pub trait EventView: Send + Sync {
    /// Every announcement with `identifier`, from any author.
    fn announcements<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RepoAnnouncement>, StoreError>>;

    /// Every state event with `identifier` that may authorize a push, from any author.
    fn states<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, Result<Vec<RepoState>, StoreError>>;

    /// The known pull requests (1618) and pull request updates (1619) among `ids`.
    fn pull_requests<'a>(
        &'a self,
        ids: &'a [EventId],
    ) -> BoxFuture<'a, Result<HashMap<EventId, Event>, StoreError>>;
}

/// True for a pull request (1618) or pull request update (1619).
pub fn is_pull_request(event: &Event) -> bool {
    matches!(event.kind.as_u16(), kinds::PULL_REQUEST | kinds::PULL_REQUEST_UPDATE)
}

impl EventView for EventStore {
    fn announcements<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RepoAnnouncement>, StoreError>> {
        Box::pin(EventStore::announcements(self, identifier))
    }

    fn states<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, Result<Vec<RepoState>, StoreError>> {
        Box::pin(async move {
            let filter = Filter::new().kind(Kind::Custom(kinds::REPO_STATE)).identifier(identifier);
            Ok(self.query(filter).await?.iter().filter_map(|e| RepoState::parse(e).ok()).collect())
        })
    }

    fn pull_requests<'a>(
        &'a self,
        ids: &'a [EventId],
    ) -> BoxFuture<'a, Result<HashMap<EventId, Event>, StoreError>> {
        Box::pin(async move {
            let found = self.events_among(ids).await?;
            Ok(found.into_iter().filter(is_pull_request).map(|e| (e.id, e)).collect())
        })
    }
}

/// The answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushDecision {
    /// Let git run.
    Authorized {
        /// The state the pushed branches and tags match (`None` when the push changes no
        /// branch or tag).
        state: Option<EventId>,
    },
    /// Refuse the whole push; `reason` is one line for the person pushing.
    Rejected {
        /// What went wrong and what to do.
        reason: String,
    },
}

/// Why authorization could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizationError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The repository could not be read.
    #[error(transparent)]
    Git(#[from] GitError),
}

/// Everything [`decide`] looks at besides the push itself.
#[derive(Debug, Clone, Copy)]
pub struct PushContext<'a> {
    /// The URL owner's recursive maintainer set.
    pub maintainers: &'a MaintainerSet,
    /// The repository's branches and tags now.
    pub current: &'a BTreeMap<String, String>,
    /// Candidate states (any author; only maintainers' count).
    pub states: &'a [RepoState],
    /// When the state the repository is aligned to was signed.
    pub applied: Option<Timestamp>,
    /// `c` tags of known PR / PR update events, by event id.
    pub pr_commits: &'a HashMap<EventId, String>,
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(7)]
}

fn reject(reason: impl Into<String>) -> PushDecision {
    PushDecision::Rejected { reason: reason.into() }
}

/// Why pushing `pushed` to the `refs/nostr/<id>` ref `name` does not meet the known pull
/// request event whose `c` tag is `commit` (as written), if it does not.
pub fn pull_request_commit_mismatch(name: &str, commit: Option<&str>, pushed: &str) -> Option<String> {
    let Some(commit) = commit else {
        return Some(format!("{name}: the pull request event has no 'c' tag naming its tip commit"));
    };
    if !is_object_id(commit) {
        return Some(format!(
            "{name}: the pull request event's 'c' tag ({commit:?}) is not a full commit id, so no push \
             can match it; publish a corrected event"
        ));
    }
    if !commit.eq_ignore_ascii_case(pushed) {
        return Some(format!(
            "{name}: the pull request event names commit {} but you pushed {}; push the commit in its 'c' tag",
            short(commit),
            short(pushed)
        ));
    }
    None
}

/// The event id of a `refs/nostr/<id>` ref, if the name has that shape.
pub fn nostr_ref_id(name: &str) -> Option<EventId> {
    let id = name.strip_prefix("refs/nostr/")?;
    let valid = id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then(|| EventId::from_hex(id).ok()).flatten()
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
        } else if name.starts_with("refs/nostr/") {
            let Some(id) = nostr_ref_id(name) else {
                return reject(format!(
                    "{name}: pull request refs must be refs/nostr/<64-character lowercase hex event id>"
                ));
            };
            if update.is_delete() {
                return reject(format!("{name}: pull request refs cannot be deleted by a push"));
            }
            if let Some(commit) = ctx.pr_commits.get(&id) {
                if let Some(why) = pull_request_commit_mismatch(name, Some(commit), &update.new) {
                    return reject(why);
                }
            }
        } else {
            return reject(format!(
                "{name}: only refs/heads/*, refs/tags/* and refs/nostr/<event id> can be pushed here"
            ));
        }
    }
    if branch_changes.is_empty() {
        return PushDecision::Authorized { state: None };
    }

    let mut would_be = ctx.current.clone();
    for update in branch_changes {
        if update.is_delete() {
            would_be.remove(&update.name);
        } else {
            would_be.insert(update.name.clone(), update.new.clone());
        }
    }
    let mut candidates: Vec<&RepoState> =
        ctx.states.iter().filter(|s| s.can_drive_refs() && ctx.maintainers.contains(&s.author)).collect();
    if candidates.is_empty() {
        return reject(
            "no state event (kind 30618) from a maintainer of this repository; publish one that lists the refs \
             you are pushing (ngit does this), then push again",
        );
    }
    candidates.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let Some(matching) = candidates.iter().find(|s| s.refs == would_be) else {
        let newest = candidates[0];
        return reject(format!(
            "the refs after this push do not match the latest state event of a maintainer: {}; publish a state \
             event with exactly these refs and push again",
            describe_difference(&would_be, &newest.refs)
        ));
    };
    if ctx.applied.is_some_and(|applied| matching.created_at < applied) {
        return reject(
            "this push matches a state event older than the one the repository already follows; publish a newer \
             state event to roll back",
        );
    }
    PushDecision::Authorized { state: Some(matching.id) }
}

/// Decides about a push to `repo` (whose bare repository is at `repo_path`), reading the
/// repository's current refs from disk and events from `view`.
pub async fn authorize_push(
    repo: &RepoRef,
    repo_path: &Path,
    updates: &[RefUpdate],
    view: &dyn EventView,
) -> Result<PushDecision, AuthorizationError> {
    let pr_ids: Vec<EventId> = updates.iter().filter_map(|u| nostr_ref_id(&u.name)).collect();
    let pull_requests = if pr_ids.is_empty() { HashMap::new() } else { view.pull_requests(&pr_ids).await? };
    if repo.is_prs() {
        return Ok(crate::git::prs::decide_push(repo, updates, &pull_requests));
    }
    let d = repo.identifier.as_str();
    let path = repo_path.to_path_buf();
    let (current, applied) = tokio::task::spawn_blocking(move || -> Result<_, GitError> {
        let git = refs::open(&path)?;
        Ok((refs::branches_and_tags(&git)?, refs::applied_state(&git).map(|(_, at)| at)))
    })
    .await
    .map_err(GitError::from)??;
    let announcements = view.announcements(d).await?;
    let maintainers = MaintainerSet::from_announcements(repo.owner, &announcements);
    let states = view.states(d).await?;
    let pr_commits: HashMap<EventId, String> = pull_requests
        .values()
        .filter_map(|e| raw_commit_tag(e).map(|c| (e.id, c.to_ascii_lowercase())))
        .collect();
    let ctx = PushContext {
        maintainers: &maintainers,
        current: &current,
        states: &states,
        applied,
        pr_commits: &pr_commits,
    };
    Ok(decide(updates, &ctx))
}

#[cfg(test)]
mod tests {
    use nostr::{Keys, PublicKey};

    use super::*;
    use crate::nip34::RepoIdentifier;

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
        prs: HashMap<EventId, String>,
    }

    impl World {
        fn new() -> Self {
            let owner = Keys::generate().public_key();
            let set = MaintainerSet::resolve(owner, |_| None);
            Self { owner, set, current: BTreeMap::new(), states: vec![], applied: None, prs: HashMap::new() }
        }
        fn decide(&self, updates: &[RefUpdate]) -> PushDecision {
            let ctx = PushContext {
                maintainers: &self.set,
                current: &self.current,
                states: &self.states,
                applied: self.applied,
                pr_commits: &self.prs,
            };
            decide(updates, &ctx)
        }
    }

    fn rejected(d: PushDecision) -> String {
        match d {
            PushDecision::Rejected { reason } => reason,
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
        let id = "cd".repeat(32);
        w.prs.insert(EventId::from_hex(&id).unwrap(), "abc123".into());
        let reason = rejected(w.decide(&[upd(&format!("refs/nostr/{id}"), Z, A)]));
        assert!(reason.contains("not a full commit id"), "{reason}");
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
        let id = "ab".repeat(32);
        let name = format!("refs/nostr/{id}");
        // unknown PR: accepted
        assert_eq!(w.decide(&[upd(&name, Z, A)]), PushDecision::Authorized { state: None });
        // known PR: commit must match
        w.prs.insert(EventId::from_hex(&id).unwrap(), A.into());
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
