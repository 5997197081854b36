//! What authorization answers, and why it could not answer.

use nostr::EventId;

use crate::git::GitError;
use crate::store::StoreError;

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
        /// The abuse bound the push ran into, if that is why (counted in
        /// `grasp_push_refused_total`).
        bound: Option<PushBound>,
    },
}

impl PushDecision {
    /// A refusal for `reason` that is not an abuse bound (no signed state matches, a ref
    /// outside the namespaces, ...).
    pub fn rejected(reason: impl Into<String>) -> Self {
        PushDecision::Rejected { reason: reason.into(), bound: None }
    }

    /// A refusal because the push ran into `bound`.
    pub fn bounded(bound: PushBound, reason: impl Into<String>) -> Self {
        PushDecision::Rejected { reason: reason.into(), bound: Some(bound) }
    }
}

/// The bounds on what an anonymous push can make the server hold (decision 29).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushBound {
    /// `refs/nostr` refs in one push (`max_nostr_refs_per_push`).
    NostrRefsPerPush,
    /// Placeholders waiting in one repository (`max_placeholders_per_repository`).
    PlaceholdersPerRepository,
    /// Placeholders of one client address (`max_placeholders_per_client`).
    PlaceholdersPerClient,
    /// Pushes per minute from one client address (`pushes_per_minute`).
    PushRate,
    /// Pushes to `/prs/` per minute from one client address (`prs_pushes_per_minute`).
    PrsPushRate,
    /// The free-disk floor (`min_free_disk_bytes`).
    DiskFloor,
    /// The repository data of one owner (`repository_quota_bytes`).
    Quota,
}

impl PushBound {
    /// Every bound, for priming metric labels.
    pub const ALL: [PushBound; 7] = [
        PushBound::NostrRefsPerPush,
        PushBound::PlaceholdersPerRepository,
        PushBound::PlaceholdersPerClient,
        PushBound::PushRate,
        PushBound::PrsPushRate,
        PushBound::DiskFloor,
        PushBound::Quota,
    ];

    /// The `bound` label of `grasp_push_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushBound::NostrRefsPerPush => "nostr_refs_per_push",
            PushBound::PlaceholdersPerRepository => "placeholders_per_repository",
            PushBound::PlaceholdersPerClient => "placeholders_per_client",
            PushBound::PushRate => "push_rate",
            PushBound::PrsPushRate => "prs_push_rate",
            PushBound::DiskFloor => "disk_floor",
            PushBound::Quota => "quota",
        }
    }
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
