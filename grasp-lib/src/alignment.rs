//! What "align a repository with a state" means, as a pure plan.
//!
//! Every `refs/heads/*` and `refs/tags/*` ref absent from the state is deleted, every ref in
//! the state is created or moved to the state's object, and HEAD points at the state's
//! branch when the state names one that it also lists. A state with no refs is never
//! applied (it would delete every branch). Other ref namespaces are not touched.

use std::collections::BTreeMap;

use crate::nip34::RepoState;

/// The changes that make a repository's branches and tags equal a state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlignmentPlan {
    /// Refs to create: (name, object id).
    pub create: Vec<(String, String)>,
    /// Refs to move: (name, old id, new id).
    pub update: Vec<(String, String, String)>,
    /// Refs to delete: (name, old id).
    pub delete: Vec<(String, String)>,
    /// Branch HEAD should point at (`refs/heads/x`).
    pub head: Option<String>,
}

impl AlignmentPlan {
    /// Plans the alignment of `current` (the repository's branches and tags) with `state`.
    pub fn new(current: &BTreeMap<String, String>, state: &RepoState) -> Self {
        if state.refs.is_empty() {
            return Self::default();
        }
        let mut plan = Self::default();
        for (name, oid) in &state.refs {
            match current.get(name) {
                None => plan.create.push((name.clone(), oid.clone())),
                Some(old) if old != oid => plan.update.push((name.clone(), old.clone(), oid.clone())),
                Some(_) => {}
            }
        }
        for (name, oid) in current {
            if !state.refs.contains_key(name) {
                plan.delete.push((name.clone(), oid.clone()));
            }
        }
        plan.head = state.head.clone().filter(|h| state.refs.contains_key(h));
        plan
    }

    /// Object ids the repository must have before the plan can be applied.
    pub fn required_objects(&self) -> impl Iterator<Item = &String> {
        self.create.iter().map(|(_, oid)| oid).chain(self.update.iter().map(|(_, _, oid)| oid))
    }

    /// True when refs are already aligned (HEAD may still need setting).
    pub fn refs_aligned(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use nostr::{Keys, Timestamp};

    use super::*;
    use crate::nip34::RepoIdentifier;

    fn state(refs: &[(&str, &str)], head: Option<&str>) -> RepoState {
        RepoState {
            id: nostr::EventId::all_zeros(),
            author: Keys::generate().public_key(),
            identifier: RepoIdentifier::new("r").unwrap(),
            refs: refs.iter().map(|(n, o)| (n.to_string(), o.to_string())).collect(),
            malformed_refs: Vec::new(),
            head: head.map(str::to_owned),
            created_at: Timestamp::now(),
        }
    }

    fn current(refs: &[(&str, &str)]) -> BTreeMap<String, String> {
        refs.iter().map(|(n, o)| (n.to_string(), o.to_string())).collect()
    }

    #[test]
    fn creates_moves_deletes_and_sets_head() {
        let plan = AlignmentPlan::new(
            &current(&[("refs/heads/main", "a"), ("refs/heads/old", "b"), ("refs/tags/v1", "c")]),
            &state(
                &[("refs/heads/main", "d"), ("refs/heads/new", "e"), ("refs/tags/v1", "c")],
                Some("refs/heads/new"),
            ),
        );
        assert_eq!(plan.create, vec![("refs/heads/new".into(), "e".into())]);
        assert_eq!(plan.update, vec![("refs/heads/main".into(), "a".into(), "d".into())]);
        assert_eq!(plan.delete, vec![("refs/heads/old".into(), "b".into())]);
        assert_eq!(plan.head.as_deref(), Some("refs/heads/new"));
        assert_eq!(plan.required_objects().collect::<Vec<_>>(), vec!["e", "d"]);
    }

    #[test]
    fn empty_state_is_never_applied_and_unknown_head_is_left_alone() {
        assert_eq!(
            AlignmentPlan::new(&current(&[("refs/heads/main", "a")]), &state(&[], None)),
            AlignmentPlan::default()
        );
        let plan =
            AlignmentPlan::new(&current(&[]), &state(&[("refs/heads/main", "a")], Some("refs/heads/gone")));
        assert_eq!(plan.head, None);
        let aligned = AlignmentPlan::new(
            &current(&[("refs/heads/main", "a")]),
            &state(&[("refs/heads/main", "a")], None),
        );
        assert!(aligned.refs_aligned());
    }
}
