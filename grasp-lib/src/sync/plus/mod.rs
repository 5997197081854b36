//! GRASP-03 Sync Plus: find a repository's conversations where their authors put them.
//! People publish replies to their own relays and to the inboxes of whom they answer
//! (NIP-65's outbox model), which no announcement names; relay sync (GRASP-02) only asks
//! the relays announcements list. Sync Plus follows the people of each hosted repository:
//!
//! | Who | Their relays (from their kind 10002) | Asked for |
//! |---|---|---|
//! | root authors (issues, patches, pull requests) | inbox: `read` and unmarked | their roots: replies land there |
//! | thread participants | mailbox: `write` and unmarked, then `read` | the roots they took part in and those repositories |
//! | owners and listed maintainers | inbox | their repositories (not on a private server) and their roots |
//! | anyone whose list the index relays do not have | the fallback relays | all of the above |
//!
//! The relay lists (and profiles) come from the user-index relays ([`identity`]); what to
//! ask which relay is worked out from the store ([`inventory`], [`coverage`]); each relay
//! is then one more sync session with a scope of its own and the same acceptance path.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`relay_list`] | a kind 10002 read as inbox and mailbox relays |
//! | [`inventory`] | the people of the hosted repositories and their roots, from the store |
//! | [`coverage`] | which relay is asked for what (pure) |
//! | [`identity`] | fetching relay lists from the index relays, one batch at a time |

pub mod coverage;
pub mod identity;
pub mod inventory;
pub mod relay_list;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nostr::PublicKey;

use super::peers::PeerUrl;

/// Where people's relay lists are looked up by default (public indexers, as ngit-grasp).
pub const DEFAULT_USER_INDEX_RELAYS: [&str; 3] =
    ["wss://purplepag.es", "wss://index.hzrd149.com", "wss://indexer.coracle.social"];

/// Where people without a relay list are looked for by default.
pub const DEFAULT_FALLBACK_RELAYS: [&str; 4] =
    ["wss://relay.ditto.pub", "wss://relay.damus.io", "wss://nos.lol", "wss://relay.primal.net"];

/// How Sync Plus runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlusSettings {
    /// Off: only GRASP-02.
    pub enabled: bool,
    /// Relays asked for people's relay lists (operator-configured, trusted).
    pub index: Vec<PeerUrl>,
    /// Relays used for people the index relays have no list for (trusted).
    pub fallback: Vec<PeerUrl>,
    /// Most relays asked at once for Sync Plus (the most used first).
    pub max_relays: usize,
    /// People looked up per query.
    pub batch: usize,
    /// How long a found list is used before it is asked for again.
    pub refresh: Duration,
    /// How long until someone without a list is asked for again.
    pub retry: Duration,
    /// How long an index relay that failed is left alone (doubling, up to an hour).
    pub source_backoff: Duration,
    /// Time limit of one lookup.
    pub timeout: Duration,
    /// A private server (GRASP-08) never names its repositories to other relays.
    pub private: bool,
}

impl PlusSettings {
    /// Production timings and the public index and fallback relays, or short timings and
    /// no relays in test mode (a test suite must never dial public relays).
    pub fn for_mode(test_mode: bool) -> Self {
        let relays = |list: &[&str]| -> Vec<PeerUrl> {
            if test_mode {
                Vec::new()
            } else {
                list.iter().filter_map(|r| PeerUrl::parse(r).ok()).collect()
            }
        };
        let (refresh, retry, backoff) = if test_mode {
            (Duration::from_secs(2), Duration::from_millis(500), Duration::from_millis(500))
        } else {
            (Duration::from_secs(24 * 3600), Duration::from_secs(300), Duration::from_secs(300))
        };
        Self {
            enabled: true,
            index: relays(&DEFAULT_USER_INDEX_RELAYS),
            fallback: relays(&DEFAULT_FALLBACK_RELAYS),
            max_relays: 50,
            batch: 100,
            refresh,
            retry,
            source_backoff: backoff,
            timeout: Duration::from_secs(if test_mode { 5 } else { 30 }),
            private: false,
        }
    }
}

/// The people Sync Plus follows now: their profiles (kind 0) and relay lists (kind 10002)
/// are the only ones this relay stores, since nothing else makes those kinds relevant.
/// Shared by relay sync (which works it out) and the acceptance policy (which reads it).
#[derive(Debug, Clone, Default)]
pub struct EligibleAuthors(Arc<RwLock<HashSet<PublicKey>>>);

impl EligibleAuthors {
    /// True when `pubkey` is followed.
    pub fn contains(&self, pubkey: &PublicKey) -> bool {
        self.0.read().expect("eligible authors poisoned").contains(pubkey)
    }

    /// Replaces the set.
    pub fn set(&self, authors: HashSet<PublicKey>) {
        *self.0.write().expect("eligible authors poisoned") = authors;
    }

    /// A copy of the set.
    pub fn snapshot(&self) -> HashSet<PublicKey> {
        self.0.read().expect("eligible authors poisoned").clone()
    }

    /// How many are followed.
    pub fn len(&self) -> usize {
        self.0.read().expect("eligible authors poisoned").len()
    }

    /// True when nobody is followed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// NIP-65 relay list metadata.
pub const RELAY_LIST: u16 = 10002;
