//! How much purgatory holds for whom: the caps that keep one client, one key or one
//! repository from filling it (decision 29), and the running totals they are checked
//! against.
//!
//! Held events are counted in events and in bytes (their JSON) four ways: per client address
//! group ([`crate::rate_limit::address_group`]), per author, per repository identifier, and
//! in total. Placeholders (`refs/nostr/<id>` pushes waiting for their event) are counted per
//! repository and per client address group; their caps are checked where a push is
//! authorized ([`crate::authorization::PlaceholderCaps`]).

use std::collections::HashMap;
use std::net::IpAddr;

use nostr::PublicKey;

use crate::git::RepoRef;
use crate::limits::storage::human_bytes;

/// A cap in events and in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Most held events.
    pub events: usize,
    /// Most bytes of held events (their JSON).
    pub bytes: u64,
}

/// The caps on held events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldCaps {
    /// Per client address group (events published by clients only).
    pub per_client: Cap,
    /// Per author.
    pub per_pubkey: Cap,
    /// Per repository identifier.
    pub per_identifier: Cap,
    /// Everything held.
    pub total: Cap,
}

impl Default for HeldCaps {
    /// One client gets a small share of the whole: 200 events / 50 MiB per address and per
    /// key, 2,000 / 256 MiB per repository, 100,000 / 2 GiB in all.
    fn default() -> Self {
        Self {
            per_client: Cap { events: 200, bytes: 50 * MIB },
            per_pubkey: Cap { events: 200, bytes: 50 * MIB },
            per_identifier: Cap { events: 2_000, bytes: 256 * MIB },
            total: Cap { events: 100_000, bytes: 2 * 1024 * MIB },
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Which cap refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapKind {
    /// Held events of one client address group.
    Client,
    /// Held events of one author.
    Pubkey,
    /// Held events of one repository identifier.
    Identifier,
    /// Everything held.
    Total,
}

impl CapKind {
    /// Every cap, for priming metric labels.
    pub const ALL: [CapKind; 4] = [CapKind::Client, CapKind::Pubkey, CapKind::Identifier, CapKind::Total];

    /// The `cap` label of `grasp_purgatory_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            CapKind::Client => "client",
            CapKind::Pubkey => "pubkey",
            CapKind::Identifier => "identifier",
            CapKind::Total => "total",
        }
    }
}

/// Why an event was not held: the cap and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapExceeded {
    /// The cap that is full.
    pub kind: CapKind,
    /// What it allows.
    pub cap: Cap,
}

impl CapExceeded {
    /// The sentence for the client (after a `rate-limited:` or `restricted:` prefix).
    pub fn message(&self) -> String {
        let what = match self.kind {
            CapKind::Client => "events published from your address",
            CapKind::Pubkey => "events signed by this key",
            CapKind::Identifier => "events for this repository",
            CapKind::Total => "events in all",
        };
        format!(
            "this server already holds the most {what} it keeps waiting for git data ({} events / {}); \
             push the git data of the waiting ones or try again after they expire",
            self.cap.events,
            human_bytes(self.cap.bytes)
        )
    }

    /// `restricted` when the whole server is full (nothing the client can do), otherwise
    /// `rate-limited` (it frees up as held events are released or expire).
    pub fn is_server_wide(&self) -> bool {
        self.kind == CapKind::Total
    }
}

/// Events and bytes counted under one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    events: usize,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.events += 1;
        self.bytes += bytes;
    }

    fn sub(&mut self, bytes: u64) {
        self.events = self.events.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// True when one more event of `bytes` fits under `cap`.
    fn admits(&self, cap: Cap, bytes: u64) -> bool {
        self.events < cap.events && self.bytes + bytes <= cap.bytes
    }
}

/// What is held, counted per key.
#[derive(Debug, Default)]
pub(super) struct HeldUsage {
    per_client: HashMap<IpAddr, Tally>,
    per_pubkey: HashMap<PublicKey, Tally>,
    per_identifier: HashMap<String, Tally>,
    total: Tally,
}

/// The keys one held event counts under.
pub(super) struct HeldKeys<'a> {
    pub client: Option<IpAddr>,
    pub pubkey: PublicKey,
    pub identifier: &'a str,
}

fn add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Tally>, key: K, bytes: u64) {
    map.entry(key).or_default().add(bytes);
}

fn sub<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Tally>, key: &K, bytes: u64) {
    if let Some(tally) = map.get_mut(key) {
        tally.sub(bytes);
        if tally.events == 0 {
            map.remove(key);
        }
    }
}

impl HeldUsage {
    pub(super) fn add(&mut self, keys: &HeldKeys<'_>, bytes: u64) {
        if let Some(client) = keys.client {
            add(&mut self.per_client, client, bytes);
        }
        add(&mut self.per_pubkey, keys.pubkey, bytes);
        add(&mut self.per_identifier, keys.identifier.to_owned(), bytes);
        self.total.add(bytes);
    }

    pub(super) fn sub(&mut self, keys: &HeldKeys<'_>, bytes: u64) {
        if let Some(client) = keys.client {
            sub(&mut self.per_client, &client, bytes);
        }
        sub(&mut self.per_pubkey, &keys.pubkey, bytes);
        sub(&mut self.per_identifier, &keys.identifier.to_owned(), bytes);
        self.total.sub(bytes);
    }

    /// The first cap one more event of `bytes` under `keys` would break, if any: the
    /// narrowest first, so a client over its own share hears about that share.
    pub(super) fn check(&self, caps: &HeldCaps, keys: &HeldKeys<'_>, bytes: u64) -> Option<CapExceeded> {
        let get = |tally: Option<&Tally>| tally.copied().unwrap_or_default();
        let client = keys.client.map(|c| get(self.per_client.get(&c)));
        let checks = [
            (CapKind::Client, caps.per_client, client),
            (CapKind::Pubkey, caps.per_pubkey, Some(get(self.per_pubkey.get(&keys.pubkey)))),
            (CapKind::Identifier, caps.per_identifier, Some(get(self.per_identifier.get(keys.identifier)))),
            (CapKind::Total, caps.total, Some(self.total)),
        ];
        checks.into_iter().find_map(|(kind, cap, tally)| {
            let tally = tally?;
            (!tally.admits(cap, bytes)).then_some(CapExceeded { kind, cap })
        })
    }
}

/// Placeholders counted per repository and per client address group.
#[derive(Debug, Default)]
pub(super) struct PlaceholderUsage {
    per_repository: HashMap<RepoRef, usize>,
    per_client: HashMap<IpAddr, usize>,
}

fn count_up<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    *map.entry(key).or_default() += 1;
}

fn count_down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl PlaceholderUsage {
    pub(super) fn add(&mut self, repo: Option<RepoRef>, client: Option<IpAddr>) {
        if let Some(repo) = repo {
            count_up(&mut self.per_repository, repo);
        }
        if let Some(client) = client {
            count_up(&mut self.per_client, client);
        }
    }

    pub(super) fn sub(&mut self, repo: Option<RepoRef>, client: Option<IpAddr>) {
        if let Some(repo) = repo {
            count_down(&mut self.per_repository, &repo);
        }
        if let Some(client) = client {
            count_down(&mut self.per_client, &client);
        }
    }

    pub(super) fn in_repository(&self, repo: &RepoRef) -> usize {
        self.per_repository.get(repo).copied().unwrap_or(0)
    }

    pub(super) fn of_client(&self, client: &IpAddr) -> usize {
        self.per_client.get(client).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    fn caps(events: usize, bytes: u64) -> HeldCaps {
        let cap = Cap { events, bytes };
        HeldCaps {
            per_client: cap,
            per_pubkey: Cap { events: 100, bytes: 10_000 },
            per_identifier: cap,
            total: cap,
        }
    }

    #[test]
    fn the_narrowest_full_cap_refuses_and_releasing_frees_it() {
        let mut usage = HeldUsage::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let pubkey = Keys::generate().public_key();
        let keys = |client| HeldKeys { client, pubkey, identifier: "r" };
        let caps = HeldCaps { per_identifier: Cap { events: 3, bytes: 1000 }, ..caps(2, 1000) };
        usage.add(&keys(Some(a)), 10);
        usage.add(&keys(Some(a)), 10);
        assert_eq!(usage.check(&caps, &keys(Some(a)), 10).map(|c| c.kind), Some(CapKind::Client));
        assert_eq!(usage.check(&caps, &keys(Some(b)), 10).map(|c| c.kind), Some(CapKind::Total));
        let roomy = HeldCaps { total: Cap { events: 10, bytes: 1000 }, ..caps };
        assert_eq!(usage.check(&roomy, &keys(Some(b)), 10), None, "another address still fits");
        assert_eq!(
            usage.check(&roomy, &keys(None), 995).map(|c| c.kind),
            Some(CapKind::Identifier),
            "bytes count"
        );
        usage.sub(&keys(Some(a)), 10);
        assert_eq!(usage.check(&roomy, &keys(Some(a)), 10), None, "a release frees the share");
        usage.sub(&keys(Some(a)), 10);
        assert!(
            usage.per_client.is_empty() && usage.per_identifier.is_empty(),
            "empty tallies are forgotten"
        );
    }

    #[test]
    fn refusals_say_which_share_is_full() {
        let full = CapExceeded { kind: CapKind::Client, cap: Cap { events: 200, bytes: 50 * MIB } };
        assert!(full.message().contains("your address") && full.message().contains("200 events / 50 MiB"));
        assert!(!full.is_server_wide());
        assert!(CapExceeded { kind: CapKind::Total, cap: full.cap }.is_server_wide());
    }
}
