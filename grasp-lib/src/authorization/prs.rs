//! GRASP-06's rules for `/prs/<npub>/<identifier>.git`: a contributor pushes pull request
//! commits there without announcing a repository.
//!
//! - Only `refs/nostr/<event id>` may be pushed ([`decide_push`]); any other ref refuses the
//!   whole push, so a mixed push lands nothing. When the pull request event is already known,
//!   the push must meet it: signed by the npub in the URL, an `a` tag with the URL
//!   identifier, and a `c` tag naming the pushed commit ([`event_mismatch`]).
//! - What happens next lives with the other pull request steps: an unmatched ref waits for
//!   its event and is deleted after the 20-minute rule, a matched one releases the event and
//!   is mirrored into the announced repository of the same identifier here
//!   ([`crate::hosting::Hosting::process`]), and a repository left without refs is removed.

use nostr::Event;

use super::decision::PushDecision;
use super::nostr_refs::{nostr_ref_id, nostr_ref_rules, pull_request_commit_mismatch, NostrRefContext};
use crate::git::pktline::RefUpdate;
use crate::git::RepoRef;
use crate::nip34::{clone_tag_urls, kinds, raw_commit_tag, EventReferences};
use crate::origin::ServiceOrigin;

/// The identifiers of the repositories (kind 30617 coordinates) an event tags with `a`.
pub fn tagged_identifiers(event: &Event) -> Vec<String> {
    EventReferences::of(event)
        .coordinates
        .into_iter()
        .filter(|c| c.kind == kinds::REPO_ANNOUNCEMENT)
        .map(|c| c.identifier)
        .collect()
}

/// Why a pull request event and a `/prs/` repository do not belong together, if they do not:
/// the event must be signed by the npub in the URL and tag a repository (`a`) with the URL
/// identifier.
pub fn event_mismatch(repo: &RepoRef, event: &Event) -> Option<String> {
    if event.pubkey != repo.owner {
        let signer = RepoRef::prs(event.pubkey, repo.identifier.clone());
        return Some(format!(
            "the pull request event is signed by another key than the npub in this URL; push to {} instead",
            signer.url_path()
        ));
    }
    if !tagged_identifiers(event).iter().any(|d| d == repo.identifier.as_str()) {
        return Some(format!(
            "the pull request event tags no repository named '{}' ('a' tag 30617:<owner>:<identifier>)",
            repo.identifier
        ));
    }
    None
}

/// The `/prs/` repositories of this server that a pull request event's `clone` tag names and
/// that belong to it (see [`event_mismatch`]): where its commit may be pushed.
pub fn named_repositories(event: &Event, origin: &ServiceOrigin) -> Vec<RepoRef> {
    let mut repos: Vec<RepoRef> = clone_tag_urls(event)
        .iter()
        .filter_map(|url| origin.prs_clone_url(url))
        .map(|(contributor, identifier)| RepoRef::prs(contributor, identifier))
        .filter(|repo| event_mismatch(repo, event).is_none())
        .collect();
    repos.sort();
    repos.dedup();
    repos
}

/// The push rule of a `/prs/` repository: only `refs/nostr/<id>` refs, under the same rules
/// as everywhere ([`nostr_ref_rules`]), and a known pull request must also belong to the
/// repository ([`event_mismatch`]).
pub fn decide_push(repo: &RepoRef, updates: &[RefUpdate], nostr: &NostrRefContext<'_>) -> PushDecision {
    let changes: Vec<&RefUpdate> = updates.iter().filter(|u| !u.is_noop()).collect();
    for update in &changes {
        let name = update.name.as_str();
        if nostr_ref_id(name).is_none() {
            return PushDecision::rejected(format!(
                "{name}: a /prs/ repository only takes pull request commits at refs/nostr/<64-character \
                 lowercase hex event id>; nothing was pushed"
            ));
        }
    }
    let mismatch = |name: &str, event: &Event, update: &RefUpdate| {
        if let Some(why) = event_mismatch(repo, event) {
            return Some(format!("{name}: {why}"));
        }
        pull_request_commit_mismatch(name, raw_commit_tag(event), &update.new)
    };
    nostr_ref_rules(&changes, nostr, mismatch).unwrap_or(PushDecision::Authorized { state: None })
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::ToBech32;
    use nostr::{EventBuilder, Keys, Kind, Tag};

    use super::*;
    use crate::authorization::{Named, PlaceholderCaps, PlaceholderRoom};
    use crate::nip34::RepoIdentifier;

    const Z: &str = "0000000000000000000000000000000000000000";
    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn upd(name: &str, old: &str, new: &str) -> RefUpdate {
        RefUpdate { old: old.into(), new: new.into(), name: name.into() }
    }

    fn pr(keys: &Keys, d: &str, commit: &str) -> Event {
        let owner = Keys::generate().public_key().to_hex();
        let tags =
            [Tag::parse(["a", &format!("30617:{owner}:{d}")]).unwrap(), Tag::parse(["c", commit]).unwrap()];
        EventBuilder::new(Kind::Custom(1618), "").tags(tags).sign_with_keys(keys).unwrap()
    }

    fn rejected(d: PushDecision) -> String {
        match d {
            PushDecision::Rejected { reason, .. } => reason,
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    /// [`decide_push`] with the events in `known` and room for every placeholder.
    fn decide(repo: &RepoRef, updates: &[RefUpdate], known: &[Event]) -> PushDecision {
        let named = known.iter().map(|e| (e.id, Named::of(e.clone()))).collect();
        let room = PlaceholderRoom::default();
        let caps = PlaceholderCaps::default();
        decide_push(repo, updates, &NostrRefContext { named: &named, room: &room, caps })
    }

    #[test]
    fn only_nostr_refs_and_a_mixed_push_is_refused_whole() {
        let keys = Keys::generate();
        let repo = RepoRef::prs(keys.public_key(), RepoIdentifier::new("r").unwrap());
        let nostr = format!("refs/nostr/{}", "ab".repeat(32));
        assert_eq!(decide(&repo, &[upd(&nostr, Z, A)], &[]), PushDecision::Authorized { state: None });
        assert_eq!(decide(&repo, &[], &[]), PushDecision::Authorized { state: None });
        for other in ["refs/heads/main", "refs/tags/v1", "HEAD", "refs/nostr/xyz"] {
            let reason = rejected(decide(&repo, &[upd(&nostr, Z, A), upd(other, Z, A)], &[]));
            assert!(reason.starts_with(other) && reason.contains("only takes"), "{reason}");
        }
        assert!(rejected(decide(&repo, &[upd(&nostr, A, Z)], &[])).contains("cannot be deleted"));
    }
    #[test]
    fn named_repositories_are_ours_and_meet_the_event() {
        let origin = ServiceOrigin::parse("127.0.0.1:7334").unwrap();
        let (contributor, other) = (Keys::generate(), Keys::generate());
        let npub = contributor.public_key().to_bech32().unwrap();
        let other_npub = other.public_key().to_bech32().unwrap();
        let owner = Keys::generate().public_key().to_hex();
        let clone = [
            "clone".to_owned(),
            format!("http://127.0.0.1:7334/prs/{npub}/r.git"),
            format!("http://127.0.0.1:7334/prs/{npub}/r.git/"),
            format!("http://127.0.0.1:7334/prs/{npub}/untagged.git"),
            format!("http://127.0.0.1:7334/prs/{other_npub}/r.git"),
            format!("http://127.0.0.1:9999/prs/{npub}/r.git"),
            format!("http://127.0.0.1:7334/{npub}/r.git"),
        ];
        let tags = [
            Tag::parse(["a", &format!("30617:{owner}:r")]).unwrap(),
            Tag::parse(["c", A]).unwrap(),
            Tag::parse(clone).unwrap(),
        ];
        let event =
            EventBuilder::new(Kind::Custom(1618), "").tags(tags).sign_with_keys(&contributor).unwrap();
        let named = named_repositories(&event, &origin);
        assert_eq!(named, vec![RepoRef::prs(contributor.public_key(), RepoIdentifier::new("r").unwrap())]);
    }
    #[test]
    fn a_known_event_must_meet_the_push() {
        let (contributor, other) = (Keys::generate(), Keys::generate());
        let repo = RepoRef::prs(contributor.public_key(), RepoIdentifier::new("r").unwrap());
        let check = |event: Event, pushed: &str| {
            let name = format!("refs/nostr/{}", event.id.to_hex());
            decide(&repo, &[upd(&name, Z, pushed)], &[event])
        };
        assert!(matches!(check(pr(&contributor, "r", A), A), PushDecision::Authorized { .. }));
        let reason = rejected(check(pr(&other, "r", A), A));
        assert!(reason.contains("signed by another key") && reason.contains("/prs/npub1"), "{reason}");
        assert!(rejected(check(pr(&contributor, "other", A), A)).contains("tags no repository named 'r'"));
        assert!(rejected(check(pr(&contributor, "r", A), B)).contains("'c' tag"));
    }
}
