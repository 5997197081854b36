//! The recursive maintainer set of a repository.
//!
//! Starting from the owner, follow the `maintainers` tag of each member's own announcement
//! with the same `d`. Being listed is enough (non-reciprocal); cycles are harmless and the
//! set is capped so a hostile chain cannot make every check expensive. This is the single
//! place that rule lives, so a reciprocal mode can be added here later.

use std::collections::{BTreeSet, HashMap, VecDeque};

use nostr::PublicKey;

use crate::nip34::RepoAnnouncement;

/// Most members a maintainer set may have; further members are ignored.
pub const MAX_MAINTAINERS: usize = 100;

/// Members of one owner's recursive maintainer set for one identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintainerSet {
    owner: PublicKey,
    members: BTreeSet<PublicKey>,
}

impl MaintainerSet {
    /// Resolves the set of `owner` given each pubkey's declared maintainers (from that
    /// pubkey's own announcement with the identifier; `None` when it has none).
    pub fn resolve<'a, F>(owner: PublicKey, mut maintainers_of: F) -> Self
    where
        F: FnMut(&PublicKey) -> Option<&'a [PublicKey]>,
    {
        let mut members = BTreeSet::new();
        let mut queue = VecDeque::from([owner]);
        while let Some(pk) = queue.pop_front() {
            if members.len() >= MAX_MAINTAINERS {
                break;
            }
            if !members.insert(pk) {
                continue;
            }
            if let Some(listed) = maintainers_of(&pk) {
                queue.extend(listed.iter().filter(|m| !members.contains(*m)).copied());
            }
        }
        Self { owner, members }
    }

    /// Resolves the set from a list of announcements that share one identifier.
    pub fn from_announcements(owner: PublicKey, announcements: &[RepoAnnouncement]) -> Self {
        let by_author: HashMap<PublicKey, &[PublicKey]> =
            announcements.iter().map(|a| (a.owner, a.maintainers.as_slice())).collect();
        Self::resolve(owner, |pk| by_author.get(pk).copied())
    }

    /// The repository owner the set was resolved from.
    pub fn owner(&self) -> PublicKey {
        self.owner
    }

    /// True when `pubkey` may publish authoritative states for the owner's repository.
    pub fn contains(&self, pubkey: &PublicKey) -> bool {
        self.members.contains(pubkey)
    }

    /// All members, the owner included.
    pub fn members(&self) -> impl Iterator<Item = &PublicKey> {
        self.members.iter()
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    fn pks(n: usize) -> Vec<PublicKey> {
        (0..n).map(|_| Keys::generate().public_key()).collect()
    }

    #[test]
    fn follows_chain_and_survives_cycles() {
        let p = pks(4);
        let lists: HashMap<PublicKey, Vec<PublicKey>> =
            HashMap::from([(p[0], vec![p[1]]), (p[1], vec![p[2], p[0]]), (p[2], vec![p[1]])]);
        let set = MaintainerSet::resolve(p[0], |pk| lists.get(pk).map(Vec::as_slice));
        assert!(set.contains(&p[0]) && set.contains(&p[1]) && set.contains(&p[2]));
        assert!(!set.contains(&p[3]));
        assert_eq!(set.members().count(), 3);
    }

    #[test]
    fn listed_maintainer_without_announcement_is_member_but_adds_nobody() {
        let p = pks(3);
        let lists = HashMap::from([(p[0], vec![p[1]])]);
        let set = MaintainerSet::resolve(p[0], |pk| lists.get(pk).map(Vec::as_slice));
        assert!(set.contains(&p[1]));
        assert!(!set.contains(&p[2]));
    }

    #[test]
    fn is_capped() {
        let p = pks(MAX_MAINTAINERS + 10);
        let lists = HashMap::from([(p[0], p[1..].to_vec())]);
        let set = MaintainerSet::resolve(p[0], |pk| lists.get(pk).map(Vec::as_slice));
        assert_eq!(set.members().count(), MAX_MAINTAINERS);
    }
}
