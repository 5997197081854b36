//! NIP-34 events as GRASP reads them: announcements, states, pull request tags, references,
//! and the pure acceptance rules over them.

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use grasp_lib::alignment::AlignmentPlan;
use grasp_lib::maintainers::{MaintainerModel, MaintainerSet};
use grasp_lib::nip34::{
    commit_tag, is_object_id, raw_commit_tag, EventReferences, RepoAnnouncement, RepoCoordinate, RepoState,
    MAX_REFERENCES,
};
use grasp_lib::origin::ServiceOrigin;
use grasp_lib::policy::decide;
use nostr::secp256k1::schnorr::Signature;
use nostr::{Event, EventId, Keys, Kind, PublicKey, Tag, Timestamp};

/// The fuzzer's description of an event (signatures are not checked by these parsers).
#[derive(Debug, Arbitrary)]
struct FuzzEvent {
    kind: KindChoice,
    author: u8,
    created_at: u32,
    tags: Vec<Vec<String>>,
    /// Branches the repository has now, for the alignment plan.
    current: Vec<(String, String)>,
}

#[derive(Debug, Arbitrary)]
enum KindChoice {
    Announcement,
    State,
    PullRequest,
    PullRequestUpdate,
    Deletion,
    Other(u16),
}

impl KindChoice {
    fn kind(&self) -> Kind {
        Kind::Custom(match self {
            KindChoice::Announcement => 30617,
            KindChoice::State => 30618,
            KindChoice::PullRequest => 1618,
            KindChoice::PullRequestUpdate => 1619,
            KindChoice::Deletion => 5,
            KindChoice::Other(k) => *k,
        })
    }
}

/// A few fixed authors, so maintainer chains between fuzzed events can form.
fn author(n: u8) -> PublicKey {
    const SECRETS: [&str; 3] = [
        "0000000000000000000000000000000000000000000000000000000000000001",
        "0000000000000000000000000000000000000000000000000000000000000002",
        "0000000000000000000000000000000000000000000000000000000000000003",
    ];
    Keys::parse(SECRETS[usize::from(n) % SECRETS.len()]).expect("valid secret").public_key()
}

/// Builds an event from fuzzer bytes and runs every NIP-34 parser and pure rule on it.
pub fn nip34_event(data: &[u8]) {
    let Ok(input) = FuzzEvent::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let tags: Vec<Tag> =
        input.tags.iter().filter_map(|t| Tag::parse(t.iter().map(String::as_str)).ok()).collect();
    let event = Event::new(
        EventId::all_zeros(),
        author(input.author),
        Timestamp::from(u64::from(input.created_at)),
        input.kind.kind(),
        tags,
        "",
        Signature::from_slice(&[7u8; 64]).expect("64 bytes"),
    );
    let origin = ServiceOrigin::parse("git.example.com").expect("valid domain");
    let _ = decide::preliminary(&event, Timestamp::from(1_700_000_000));

    let announcement = RepoAnnouncement::parse(&event).ok();
    if let Some(ann) = &announcement {
        assert!(!ann.maintainers.contains(&ann.owner), "the owner is not listed as their own maintainer");
        assert_eq!(RepoCoordinate::parse(&ann.coordinate().to_string()), Some(ann.coordinate()));
        let _ = decide::announcement(ann, &origin, std::slice::from_ref(ann));
        let alone = std::slice::from_ref(ann);
        let listed = MaintainerSet::from_announcements(MaintainerModel::Listed, ann.owner, alone);
        assert!(listed.contains(&ann.owner));
        // Alone, an announcement confirms at most its author, and only while its own role is
        // active and its lead pointers (if any) end at itself.
        let v3 = MaintainerSet::from_announcements(MaintainerModel::Reciprocal, ann.owner, alone);
        assert!(v3.members().all(|m| *m == ann.owner));
        assert_eq!(v3.contains(&ann.owner), v3.no_authority().is_none());
        let leads = ann.leads();
        let rooted = if leads.is_empty() { ann.author_active() } else { leads == [ann.owner] };
        assert_eq!(v3.contains(&ann.owner), rooted);
    }

    if let Ok(state) = RepoState::parse(&event) {
        for (name, oid) in &state.refs {
            assert!(name.starts_with("refs/heads/") || name.starts_with("refs/tags/"), "{name}");
            assert!(!name.ends_with("^{}"));
            assert!(is_object_id(oid) && oid.bytes().all(|b| !b.is_ascii_uppercase()), "{oid}");
        }
        assert_eq!(state.is_well_formed(), state.malformed_refs.is_empty());
        if state.can_drive_refs() {
            assert!(!state.refs.is_empty());
        }
        if let Some(head) = &state.head {
            assert!(head.starts_with("refs/heads/"));
        }
        let announcements: Vec<RepoAnnouncement> = announcement.into_iter().collect();
        let _ = decide::state(MaintainerModel::Reciprocal, &state, &announcements, None);
        let current: BTreeMap<String, String> = input.current.into_iter().collect();
        let plan = AlignmentPlan::new(&current, &state);
        if !state.refs.is_empty() {
            // Applying the plan to `current` gives exactly the state's refs.
            let mut after = current.clone();
            for (name, oid) in &plan.create {
                assert!(after.insert(name.clone(), oid.clone()).is_none(), "create of an existing ref");
            }
            for (name, old, new) in &plan.update {
                assert_eq!(after.insert(name.clone(), new.clone()).as_ref(), Some(old));
            }
            for (name, old) in &plan.delete {
                assert_eq!(after.remove(name).as_ref(), Some(old));
            }
            assert_eq!(after, state.refs, "the plan does not lead to the state");
        } else {
            assert_eq!(plan, AlignmentPlan::default(), "an empty state is never applied");
        }
    }

    if let Some(commit) = commit_tag(&event) {
        assert!(is_object_id(&commit) && raw_commit_tag(&event).is_some());
    }
    let refs = EventReferences::of(&event);
    assert!(refs.coordinates.len() <= MAX_REFERENCES && refs.event_ids.len() <= MAX_REFERENCES);
    let _ = RepoCoordinate::of_event(&event);
}
