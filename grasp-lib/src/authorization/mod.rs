//! Push authorization: may this push land?
//!
//! The refs the repository would have after the push (its current `refs/heads/*` and
//! `refs/tags/*` with the pushed creates, moves and deletes applied) must equal exactly the
//! refs of a state event authored by a member of the URL owner's confirmed maintainer set.
//! The newest such state wins, and it may not be older than the state the repository is
//! already aligned to (no rollbacks). `refs/nostr/<event id>` refs carry pull request
//! commits (decision 11): a known PR or PR update must name the pushed commit in its `c` tag;
//! an id that names any other known event is refused; an unknown id becomes a placeholder
//! waiting for its event, and placeholders are bounded per push, per repository and per
//! client address. A GRASP-06 `/prs/` repository takes only `refs/nostr` refs ([`prs`]).
//!
//! | Module | What it holds |
//! |---|---|
//! | [`decide`] | the pure rule ([`decide()`]) and [`authorize_push`], which gathers its inputs |
//! | [`nostr_refs`] | the `refs/nostr/<id>` rules and the placeholder caps |
//! | [`prs`] | the GRASP-06 `/prs/` rules |
//! | [`view`] | what authorization reads ([`EventView`]): stored events, and held ones on top |
//! | [`decision`] | the answer ([`PushDecision`]) and the abuse bounds it names |
//!
//! Any frontend (inline server, proxy, git hook) can provide the [`EventView`].
//!
//! ```
//! # tokio_test::block_on(async {
//! use grasp_lib::authorization::{authorize_push, PlaceholderCaps, PushDecision, PushRequest};
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
//! let request = PushRequest { repo: &repo, path: &repos.path(&repo), updates: &push, client: None };
//! let decision = authorize_push(&request, &EventStore::memory(), PlaceholderCaps::default()).await.unwrap();
//! match decision {
//!     PushDecision::Rejected { reason, .. } => assert!(reason.contains("no state event")),
//!     PushDecision::Authorized { .. } => unreachable!(),
//! }
//! # });
//! ```

pub mod decide;
pub mod decision;
pub mod nostr_refs;
pub mod prs;
pub mod view;

pub use decide::{authorize_push, decide, PushContext, PushRequest};
pub use decision::{AuthorizationError, PushBound, PushDecision};
pub use nostr_refs::{
    nostr_ref_id, nostr_ref_rules, pull_request_commit_mismatch, NostrRefContext, PlaceholderCaps,
};
pub use view::{is_pull_request, EventView, Named, PlaceholderRoom};
