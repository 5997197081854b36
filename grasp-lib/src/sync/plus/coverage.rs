//! Which relay Sync Plus asks for what: the people of the [`Inventory`], their
//! [`RelayList`]s (or the fallback relays when the index relays have none), worked out into
//! one [`SyncScope`] per relay. Pure: unit-tested without a network.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use nostr::PublicKey;

use super::inventory::Inventory;
use super::relay_list::{RelayList, PER_PURPOSE};
use crate::sync::filters::SyncScope;
use crate::sync::peers::PeerUrl;

/// Why a relay is asked (for metrics; a relay with several purposes counts under the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// A root author's inbox: replies to their issues and pull requests.
    RootInbox,
    /// An owner's or maintainer's inbox: events about their repositories.
    RepositoryInbox,
    /// A participant's mailbox: what they wrote in the threads they took part in.
    ParticipantMailbox,
    /// A fallback relay, for people without a relay list.
    Fallback,
}

impl Purpose {
    /// Every purpose (metric label values).
    pub const ALL: [Purpose; 4] =
        [Purpose::RootInbox, Purpose::RepositoryInbox, Purpose::ParticipantMailbox, Purpose::Fallback];

    /// Lower-case name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::RootInbox => "root_inbox",
            Purpose::RepositoryInbox => "repository_inbox",
            Purpose::ParticipantMailbox => "participant_mailbox",
            Purpose::Fallback => "fallback",
        }
    }
}

/// What each Sync Plus relay is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// The scope of each relay, at most `max_relays` of them.
    pub scopes: BTreeMap<PeerUrl, SyncScope>,
    /// Each relay's first purpose.
    pub purposes: BTreeMap<PeerUrl, Purpose>,
    /// People covered through the fallback relays.
    pub fallback_authors: usize,
}

/// Works out the coverage. `lists` has the relay lists found; `missing` the people the
/// index relays answered for without one (they get the `fallback` relays); people in
/// neither are not looked up yet and get nothing. `private`: repositories are never named
/// to other relays (GRASP-08). `excluded` relays (this server, GRASP-02 peers, which sync
/// everything anyway) are left out; of the rest, the `max_relays` used by most people stay.
pub fn plan(
    inventory: &Inventory,
    lists: &HashMap<PublicKey, RelayList>,
    missing: &HashSet<PublicKey>,
    fallback: &[PeerUrl],
    private: bool,
    excluded: impl Fn(&PeerUrl) -> bool,
    max_relays: usize,
) -> Coverage {
    let fallback_list = RelayList {
        inbox: fallback.iter().take(PER_PURPOSE).cloned().collect(),
        mailbox: fallback.iter().take(PER_PURPOSE).cloned().collect(),
    };
    let mut scopes: BTreeMap<PeerUrl, SyncScope> = BTreeMap::new();
    let mut purposes: BTreeMap<PeerUrl, Purpose> = BTreeMap::new();
    let mut users: BTreeMap<PeerUrl, BTreeSet<PublicKey>> = BTreeMap::new();
    let mut fallback_authors = 0;
    for author in inventory.authors() {
        let (list, via_fallback) = match lists.get(&author) {
            Some(list) => (list, false),
            None if missing.contains(&author) && !fallback.is_empty() => (&fallback_list, true),
            None => continue,
        };
        fallback_authors += usize::from(via_fallback);
        let mut add = |relay: &PeerUrl, purpose: Purpose, scope: &dyn Fn(&mut SyncScope)| {
            let purpose = if via_fallback { Purpose::Fallback } else { purpose };
            scope(scopes.entry(relay.clone()).or_default());
            let first = purposes.entry(relay.clone()).or_insert(purpose);
            *first = (*first).min(purpose);
            users.entry(relay.clone()).or_default().insert(author);
        };
        if let Some(roots) = inventory.authored.get(&author) {
            for relay in &list.inbox {
                add(relay, Purpose::RootInbox, &|s| s.roots.extend(roots.iter().copied()));
            }
        }
        if let Some(repositories) = inventory.repositories.get(&author) {
            let roots: BTreeSet<_> = repositories.iter().flat_map(|c| inventory.roots_of(c)).collect();
            for relay in &list.inbox {
                add(relay, Purpose::RepositoryInbox, &|s| {
                    if !private {
                        s.served_coordinates.extend(repositories.iter().cloned());
                    }
                    s.roots.extend(roots.iter().copied());
                });
            }
        }
        if let Some(roots) = inventory.participated.get(&author) {
            let repositories: BTreeSet<String> = roots
                .iter()
                .flat_map(|r| inventory.root_repositories.get(r).into_iter().flatten().cloned())
                .collect();
            for relay in &list.mailbox {
                add(relay, Purpose::ParticipantMailbox, &|s| {
                    s.roots.extend(roots.iter().copied());
                    if !private {
                        s.served_coordinates.extend(repositories.iter().cloned());
                    }
                });
            }
        }
    }
    scopes.retain(|relay, scope| {
        !excluded(relay) && (!scope.roots.is_empty() || !scope.served_coordinates.is_empty())
    });
    if scopes.len() > max_relays {
        let mut ranked: Vec<(usize, PeerUrl)> =
            scopes.keys().map(|r| (users.get(r).map_or(0, BTreeSet::len), r.clone())).collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let kept: HashSet<PeerUrl> = ranked.into_iter().take(max_relays).map(|(_, r)| r).collect();
        scopes.retain(|relay, _| kept.contains(relay));
    }
    purposes.retain(|relay, _| scopes.contains_key(relay));
    Coverage { scopes, purposes, fallback_authors }
}

#[cfg(test)]
mod tests {
    use nostr::{EventId, Keys};

    use super::*;

    fn url(name: &str) -> PeerUrl {
        PeerUrl::parse(&format!("wss://{name}.example")).unwrap()
    }

    fn id(n: u8) -> EventId {
        EventId::from_byte_array([n; 32])
    }

    struct World {
        owner: PublicKey,
        author: PublicKey,
        participant: PublicKey,
        inventory: Inventory,
    }

    fn world() -> World {
        let (owner, author, participant) =
            (Keys::generate().public_key(), Keys::generate().public_key(), Keys::generate().public_key());
        let repo = format!("30617:{}:r", owner.to_hex());
        let mut inventory = Inventory::default();
        inventory.repositories.insert(owner, BTreeSet::from([repo.clone()]));
        inventory.authored.insert(author, BTreeSet::from([id(1)]));
        inventory.participated.insert(participant, BTreeSet::from([id(1)]));
        inventory.root_repositories.insert(id(1), BTreeSet::from([repo]));
        World { owner, author, participant, inventory }
    }

    fn list(inbox: &[&str], mailbox: &[&str]) -> RelayList {
        RelayList {
            inbox: inbox.iter().map(|n| url(n)).collect(),
            mailbox: mailbox.iter().map(|n| url(n)).collect(),
        }
    }

    #[test]
    fn each_person_is_asked_for_where_their_conversations_land() {
        let w = world();
        let lists = HashMap::from([
            (w.owner, list(&["owner-in"], &["owner-out"])),
            (w.author, list(&["author-in"], &["author-out"])),
            (w.participant, list(&["p-in"], &["p-out"])),
        ]);
        let c = plan(&w.inventory, &lists, &HashSet::new(), &[], false, |_| false, 50);
        let repo = format!("30617:{}:r", w.owner.to_hex());
        // The root author's inbox: their root.
        assert_eq!(c.scopes[&url("author-in")].roots, BTreeSet::from([id(1)]));
        assert!(c.scopes[&url("author-in")].served_coordinates.is_empty());
        // The owner's inbox: the repository and its roots.
        assert_eq!(c.scopes[&url("owner-in")].served_coordinates, BTreeSet::from([repo.clone()]));
        assert_eq!(c.scopes[&url("owner-in")].roots, BTreeSet::from([id(1)]));
        // The participant's mailbox: the root and its repository.
        assert_eq!(c.scopes[&url("p-out")].served_coordinates, BTreeSet::from([repo]));
        // Nobody's outbox is asked for replies to others, nor the participant's inbox.
        for unused in ["author-out", "owner-out", "p-in"] {
            assert!(!c.scopes.contains_key(&url(unused)), "{unused}");
        }
        assert_eq!(c.purposes[&url("author-in")], Purpose::RootInbox);
        assert_eq!(c.fallback_authors, 0);
    }

    #[test]
    fn people_without_a_list_use_the_fallback_once_looked_up() {
        let w = world();
        let fallback = vec![url("fallback")];
        let not_yet = plan(&w.inventory, &HashMap::new(), &HashSet::new(), &fallback, false, |_| false, 50);
        assert!(not_yet.scopes.is_empty(), "nobody looked up yet");
        let missing = HashSet::from([w.author]);
        let c = plan(&w.inventory, &HashMap::new(), &missing, &fallback, false, |_| false, 50);
        assert_eq!(c.scopes[&url("fallback")].roots, BTreeSet::from([id(1)]));
        assert_eq!(c.purposes[&url("fallback")], Purpose::Fallback);
        assert_eq!(c.fallback_authors, 1);
    }

    #[test]
    fn private_servers_never_name_repositories_and_excluded_relays_are_left_out() {
        let w = world();
        let lists = HashMap::from([(w.owner, list(&["owner-in"], &[])), (w.author, list(&["peer"], &[]))]);
        let c = plan(&w.inventory, &lists, &HashSet::new(), &[], true, |r| *r == url("peer"), 50);
        assert!(c.scopes[&url("owner-in")].served_coordinates.is_empty());
        assert_eq!(c.scopes[&url("owner-in")].roots, BTreeSet::from([id(1)]));
        assert!(!c.scopes.contains_key(&url("peer")));
    }

    #[test]
    fn the_relays_most_people_use_are_kept() {
        let mut inventory = Inventory::default();
        let mut lists = HashMap::new();
        for n in 0..10u8 {
            let author = Keys::generate().public_key();
            inventory.authored.insert(author, BTreeSet::from([id(n)]));
            let own = format!("own{n}");
            lists.insert(author, list(&["shared", &own], &[]));
        }
        let c = plan(&inventory, &lists, &HashSet::new(), &[], false, |_| false, 3);
        assert_eq!(c.scopes.len(), 3);
        assert_eq!(c.scopes[&url("shared")].roots.len(), 10);
    }
}
