//! What purgatory holds: held events, placeholders, and the timers they wait by.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nostr::{Event, EventId, PublicKey};
use serde::{Deserialize, Serialize};

use super::bounds::{CapExceeded, HeldKeys};
use crate::git::{Namespace, RepoRef};
use crate::nip34::RepoIdentifier;

/// What kind of held event an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldKind {
    /// A new repository announcement (30617); its repository exists already.
    Announcement,
    /// A repository state (30618) whose objects are not here yet.
    State,
    /// A pull request (1618) or pull request update (1619) whose commit is not at
    /// `refs/nostr/<id>` yet.
    PullRequest,
    /// An event that relates only to a held event; released with it.
    Dependent,
}

impl HeldKind {
    /// Lower-case name, used in metrics labels and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            HeldKind::Announcement => "announcement",
            HeldKind::State => "state",
            HeldKind::PullRequest => "pull_request",
            HeldKind::Dependent => "dependent",
        }
    }

    /// Every kind, in listing order.
    pub const ALL: [HeldKind; 4] =
        [HeldKind::Announcement, HeldKind::State, HeldKind::PullRequest, HeldKind::Dependent];
}

/// One held event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldEvent {
    /// The event, exactly as received.
    pub event: Event,
    /// Why it is held.
    pub kind: HeldKind,
    /// The repository identifier it belongs to.
    pub identifier: String,
    /// When it arrived (ms since the Unix epoch).
    pub received_at: u64,
    /// When it is dropped if its data has not arrived (ms since the Unix epoch).
    pub expires_at: u64,
    /// For dependents: the held event they wait for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<EventId>,
    /// For announcements: the bare repository was created for this entry (and is removed
    /// if the entry expires).
    #[serde(default)]
    pub created_repo: bool,
    /// The address group ([`crate::rate_limit::address_group`]) of the client that
    /// published it, when a client did: what the per-address cap counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
}

impl HeldEvent {
    pub(super) fn keys(&self) -> HeldKeys<'_> {
        HeldKeys { client: self.client, pubkey: self.event.pubkey, identifier: &self.identifier }
    }
}

/// The bytes a held event counts as: its JSON.
pub(super) fn held_bytes(event: &Event) -> u64 {
    nostr::JsonUtil::as_json(event).len() as u64
}

/// A `refs/nostr/<id>` ref pushed before its pull request event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placeholder {
    /// The event id the ref is named after.
    pub event_id: EventId,
    /// The commit pushed.
    pub commit: String,
    /// The repository it was pushed to (owner and identifier).
    pub owner: PublicKey,
    /// The repository identifier.
    pub identifier: String,
    /// Whether it was pushed to the announced repository or to the contributor's `/prs/`
    /// one (GRASP-06).
    #[serde(default, skip_serializing_if = "Namespace::is_announced")]
    pub namespace: Namespace,
    /// When it was pushed (ms since the Unix epoch).
    pub created_at: u64,
    /// When the ref is deleted if no matching event arrived (ms since the Unix epoch).
    pub expires_at: u64,
    /// The address group of the client that pushed it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
}

impl Placeholder {
    /// The repository the ref was pushed to.
    pub fn repo(&self) -> Option<RepoRef> {
        let identifier = RepoIdentifier::new(&self.identifier).ok()?;
        Some(RepoRef { owner: self.owner, identifier, namespace: self.namespace })
    }
}

/// How long things wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgatoryTimers {
    /// Held events are dropped after this long without their git data.
    pub expiry: Duration,
    /// Unmatched `refs/nostr/<id>` refs are deleted after this long.
    pub pr_ref_expiry: Duration,
    /// A push that uses a held event makes sure it has at least this long left.
    pub push_extension: Duration,
}

impl Default for PurgatoryTimers {
    fn default() -> Self {
        Self {
            expiry: Duration::from_secs(30 * 60),
            pr_ref_expiry: Duration::from_secs(20 * 60),
            push_extension: Duration::from_secs(15 * 60),
        }
    }
}

impl PurgatoryTimers {
    /// The timers of a public server, or the short ones a test suite runs with.
    pub fn for_mode(test_mode: bool) -> Self {
        if !test_mode {
            return Self::default();
        }
        Self {
            expiry: Duration::from_secs(60),
            pr_ref_expiry: Duration::from_secs(40),
            push_extension: Duration::from_secs(30),
        }
    }
}

/// The answer to [`Purgatory::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Newly held.
    Held,
    /// Already held (same event id); nothing changed.
    Duplicate,
    /// Not held: a cap is full ([`bounds`]).
    Refused(CapExceeded),
}

/// Numbers for metrics and listings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgatoryCounts {
    /// Held events by kind.
    pub held: HashMap<&'static str, usize>,
    /// Placeholders.
    pub placeholders: usize,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// A failure to make a purgatory change durable.
#[derive(Debug, thiserror::Error)]
#[error("purgatory journal: {0}")]
pub struct PurgatoryError(#[from] std::io::Error);
