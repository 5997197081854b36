//! The members of a private service: the keys the operator configured, and the keys learned
//! while the server runs (the owners of other private servers that hosted repositories name,
//! so those servers can mirror ours). The learned part is replaced as a whole each time it
//! is worked out again, so a server that stops qualifying stops being a member.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use nostr::PublicKey;

/// The member set, shared by every connection (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Members {
    configured: Arc<HashSet<PublicKey>>,
    learned: Arc<RwLock<HashSet<PublicKey>>>,
}

impl Members {
    /// The operator's members.
    pub fn new(configured: impl IntoIterator<Item = PublicKey>) -> Self {
        Self { configured: Arc::new(configured.into_iter().collect()), learned: Arc::default() }
    }

    /// True when `pubkey` is a member now.
    pub fn contains(&self, pubkey: &PublicKey) -> bool {
        self.configured.contains(pubkey) || self.learned.read().expect("members poisoned").contains(pubkey)
    }

    /// Replaces the learned members; returns true when the set changed.
    pub fn set_learned(&self, learned: HashSet<PublicKey>) -> bool {
        let mut current = self.learned.write().expect("members poisoned");
        let changed = *current != learned;
        *current = learned;
        changed
    }

    /// The learned members now.
    pub fn learned(&self) -> HashSet<PublicKey> {
        self.learned.read().expect("members poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    #[test]
    fn configured_members_stay_and_learned_ones_follow_the_latest_set() {
        let (a, b, c) =
            (Keys::generate().public_key(), Keys::generate().public_key(), Keys::generate().public_key());
        let members = Members::new([a]);
        assert!(members.contains(&a) && !members.contains(&b));
        assert!(members.set_learned(HashSet::from([b])));
        assert!(members.contains(&b));
        assert!(!members.set_learned(HashSet::from([b])), "same set");
        assert!(members.set_learned(HashSet::from([c])));
        assert!(!members.contains(&b) && members.contains(&c) && members.contains(&a));
    }
}
