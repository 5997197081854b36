//! Event acceptance: which events this relay takes, holds or refuses, and why.
//!
//! [`decide`] holds the GRASP-01 rules as pure functions over facts and [`curate`] the
//! operator's lists; [`crate::ingest::Ingest`] gathers those facts from the store and
//! purgatory and applies them. The relay engine only sees the
//! [`EventPolicy`] trait, so other policies (or none, for benchmarks) plug in the same way.

pub mod curate;
pub mod decide;

use futures::future::BoxFuture;
use nostr::Event;

/// NIP-01 machine-readable prefix of an `OK false` / `CLOSED` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// The event is malformed or breaks a protocol rule.
    Invalid,
    /// The relay will not take this event (policy).
    Blocked,
    /// Only certain users may do this.
    Restricted,
    /// Slow down.
    RateLimited,
    /// The relay failed.
    Error,
}

impl Prefix {
    /// The wire form, without the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Invalid => "invalid",
            Prefix::Blocked => "blocked",
            Prefix::Restricted => "restricted",
            Prefix::RateLimited => "rate-limited",
            Prefix::Error => "error",
        }
    }
}

/// Why an event was refused: the prefix and sentence the client sees, and a short stable
/// code for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// NIP-01 prefix.
    pub prefix: Prefix,
    /// Stable, low-cardinality reason for the `reason` metric label.
    pub code: &'static str,
    /// What the client should know or do, without the prefix.
    pub message: String,
}

impl Rejection {
    /// Builds a rejection.
    pub fn new(prefix: Prefix, code: &'static str, message: impl Into<String>) -> Self {
        Self { prefix, code, message: message.into() }
    }

    /// `prefix: message`, as sent in `OK` and `CLOSED`.
    pub fn wire_message(&self) -> String {
        format!("{}: {}", self.prefix.as_str(), self.message)
    }
}

/// What the policy decided about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it and deliver it to subscribers.
    Accept,
    /// Refuse it (`OK false`).
    Reject(Rejection),
    /// Answer `OK true` with `message`, but neither store nor deliver it now: the policy
    /// keeps it (purgatory) and releases it later.
    Hold {
        /// The `OK` message, e.g. `purgatory: won't be served until git data arrives`.
        message: String,
    },
    /// The policy stored and delivered the event itself (its git data was already here);
    /// answer `OK true` and do nothing else.
    Released,
}

impl Verdict {
    /// Shorthand for [`Verdict::Reject`].
    pub fn reject(prefix: Prefix, code: &'static str, message: impl Into<String>) -> Self {
        Verdict::Reject(Rejection::new(prefix, code, message))
    }
}

/// Where an event came from. Acceptance is the same for every source; what differs is how
/// soon the server goes looking for the git data of a held event (a client that publishes
/// a state usually pushes right after; an event synced from another relay has no push
/// coming), and which per-address bounds it counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// Published by a client (on a websocket, or another frontend's client path) at this
    /// address, when known: what purgatory's per-address bounds count.
    Client(Option<std::net::IpAddr>),
    /// Copied from another relay by relay sync (GRASP-02).
    Sync,
}

impl Default for EventSource {
    /// A client whose address is not known (an embedding program).
    fn default() -> Self {
        EventSource::Client(None)
    }
}

impl EventSource {
    /// Lower-case name, for logs and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Client(_) => "client",
            EventSource::Sync => "sync",
        }
    }

    /// The client's address, for an event a client published.
    pub fn client_address(self) -> Option<std::net::IpAddr> {
        match self {
            EventSource::Client(address) => address,
            EventSource::Sync => None,
        }
    }
}

/// Decides about verified events and learns about the ones that were stored.
///
/// Both methods get events whose id and signature are already checked.
pub trait EventPolicy: Send + Sync + 'static {
    /// Decides whether the relay takes `event`, which arrived from `source`.
    fn evaluate<'a>(&'a self, event: &'a Event, source: EventSource) -> BoxFuture<'a, Verdict>;

    /// Called after an accepted event was stored (not for duplicates), so the policy can act
    /// on it (e.g. create the repository of an announcement).
    fn stored<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        let _ = event;
        Box::pin(async {})
    }
}

/// Accepts every valid event: the policy "switched off", for benchmarks and plain relays.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl EventPolicy for AcceptAll {
    fn evaluate<'a>(&'a self, _event: &'a Event, _source: EventSource) -> BoxFuture<'a, Verdict> {
        Box::pin(async { Verdict::Accept })
    }
}
