//! Operator curation and the GRASP-05 archive list as pure rules: lists and facts in, a
//! refusal (or not) out. The lists live in [`crate::curation`].
//!
//! - **deny** refuses (`blocked:`) every event a listed key signs, every event about a listed
//!   repository (its own `d` for announcements and states, `a`/`A`/`q` coordinates for the
//!   rest), and every push to a listed repository. It wins over everything else.
//! - **allow**, when not empty, decides who gets hosting here (`restricted:` for the rest):
//!   announcements that list this server, GRASP-06 pull requests and `/prs/` pushes. Events
//!   about repositories already hosted (issues, comments, states) are not restricted by it.
//! - **archive** (GRASP-05) names repositories taken read-only although their announcement
//!   does not list this server.

use nostr::nips::nip19::ToBech32;
use nostr::{Event, PublicKey};

use super::decide::ListsService;
use super::{Prefix, Verdict};
use crate::curation::{CurationLists, Selectors};
use crate::git::RepoRef;
use crate::nip34::{kinds, EventReferences, RepoAnnouncement};
use crate::origin::ServiceOrigin;

/// The repositories (owner, identifier) an event is about: its own for an announcement or a
/// state, and those its `a`/`A`/`q` coordinates name.
pub fn repositories_of(event: &Event) -> Vec<(PublicKey, String)> {
    let mut repos = Vec::new();
    if matches!(event.kind.as_u16(), kinds::REPO_ANNOUNCEMENT | kinds::REPO_STATE) {
        if let Some(d) = event.tags.identifier() {
            repos.push((event.pubkey, d.to_owned()));
        }
    }
    repos.extend(
        EventReferences::of(event)
            .coordinates
            .into_iter()
            .filter(|c| matches!(c.kind, kinds::REPO_ANNOUNCEMENT | kinds::REPO_STATE))
            .map(|c| (c.pubkey, c.identifier)),
    );
    repos
}

fn npub(pk: &PublicKey) -> String {
    pk.to_bech32().expect("a public key always encodes as npub")
}

/// The deny list: `author` signed the event, which is about `repositories`.
pub fn denied(
    lists: &CurationLists,
    author: &PublicKey,
    repositories: &[(PublicKey, String)],
) -> Option<Verdict> {
    if lists.deny.matches_pubkey(author) {
        return Some(Verdict::reject(
            Prefix::Blocked,
            "curation_denied",
            "events signed by this key are not accepted here (operator deny list)",
        ));
    }
    let (owner, d) = repositories.iter().find(|(owner, d)| lists.deny.matches_repo(owner, d))?;
    Some(Verdict::reject(
        Prefix::Blocked,
        "curation_denied",
        format!("repository '{d}' of {} is not accepted here (operator deny list)", npub(owner)),
    ))
}

/// The allow list, for something that would get hosting here: the repository `identifier`
/// of `owner`.
pub fn hosting_allowed(lists: &CurationLists, owner: &PublicKey, identifier: &str) -> Option<Verdict> {
    if lists.allow.is_empty() || lists.allow.matches_repo(owner, identifier) {
        return None;
    }
    Some(Verdict::reject(
        Prefix::Restricted,
        "curation_not_allowed",
        format!(
            "this server only hosts repositories the operator allows, and {}/{identifier} is not among them",
            npub(owner)
        ),
    ))
}

/// The allow list, for a GRASP-06 pull request: its signer, or a repository it tags, must be
/// allowed.
pub fn pull_request_allowed(
    lists: &CurationLists,
    author: &PublicKey,
    repositories: &[(PublicKey, String)],
) -> Option<Verdict> {
    let allowed = lists.allow.is_empty()
        || lists.allow.matches_pubkey(author)
        || repositories.iter().any(|(owner, d)| lists.allow.matches_repo(owner, d));
    (!allowed).then(|| {
        Verdict::reject(
            Prefix::Restricted,
            "curation_not_allowed",
            "this server only takes /prs/ pull requests from keys, or for repositories, the operator allows",
        )
    })
}

/// Why a push to `repo` is refused by the lists, if it is. The sentence starts with its
/// NIP-01-style prefix so the person pushing sees which rule applied.
pub fn push(lists: &CurationLists, repo: &RepoRef) -> Option<String> {
    let d = repo.identifier.as_str();
    // A `/prs/` push does not say whose repository it is for: only an entry for every
    // repository with the identifier applies (the pull request event meets the rest).
    let denied = if repo.is_prs() {
        lists.deny.matches_pubkey(&repo.owner) || lists.deny.matches_any_owner(d)
    } else {
        lists.deny.matches_repo(&repo.owner, d)
    };
    if denied {
        return Some(format!("blocked: {repo} is not accepted here (operator deny list)"));
    }
    let allowed = lists.allow.is_empty()
        || lists.allow.matches_repo(&repo.owner, d)
        || (repo.is_prs() && lists.allow.matches_identifier(d));
    (!allowed).then(|| {
        format!(
            "restricted: this server only hosts repositories the operator allows; {repo} is not among them"
        )
    })
}

/// Why a push to the repository of `announcement` (its owner's newest) is refused, if it
/// is archived here: its announcement does not list this server (GRASP-05, read-only).
pub fn read_only(announcement: &RepoAnnouncement, origin: &ServiceOrigin) -> Option<String> {
    if ListsService::of(announcement, origin).both() {
        return None;
    }
    Some(format!(
        "restricted: {}/{} is a read-only archive on this server (GRASP-05): its announcement does not list \
         this server in 'clone' and 'relays'; push to a server it lists, or add this one to both tags to host \
         it here",
        npub(&announcement.owner),
        announcement.identifier
    ))
}

/// True when the announcement of `identifier` by `owner`, which does not list this server,
/// is to be archived (GRASP-05).
pub fn archived(archive: &Selectors, owner: &PublicKey, identifier: &str) -> bool {
    archive.matches_repo(owner, identifier)
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Kind, Tag};

    use super::*;
    use crate::nip34::RepoIdentifier;
    use crate::policy::Rejection;

    fn lists(allow: &[String], deny: &[String]) -> CurationLists {
        CurationLists { allow: Selectors::parse(allow).unwrap(), deny: Selectors::parse(deny).unwrap() }
    }

    fn rejection(v: Option<Verdict>) -> Rejection {
        match v {
            Some(Verdict::Reject(r)) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn repositories_of_events() {
        let keys = Keys::generate();
        let owner = Keys::generate().public_key();
        let ann = EventBuilder::new(Kind::Custom(30617), "")
            .tag(Tag::identifier("r"))
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(repositories_of(&ann), vec![(keys.public_key(), "r".to_owned())]);
        let issue = EventBuilder::new(Kind::Custom(1621), "")
            .tag(Tag::parse(["a", &format!("30617:{}:x", owner.to_hex())]).unwrap())
            .tag(Tag::parse(["a", &format!("30023:{}:article", owner.to_hex())]).unwrap())
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(repositories_of(&issue), vec![(owner, "x".to_owned())]);
    }

    #[test]
    fn deny_wins_and_names_what_it_matched() {
        let (spammer, owner, other) =
            (Keys::generate().public_key(), Keys::generate().public_key(), Keys::generate().public_key());
        let l = lists(&[], &[spammer.to_hex(), format!("{}/bad", owner.to_hex()), "casino".to_owned()]);
        let r = rejection(denied(&l, &spammer, &[]));
        assert_eq!((r.prefix, r.code), (Prefix::Blocked, "curation_denied"));
        let r = rejection(denied(&l, &other, &[(owner, "bad".to_owned())]));
        assert!(r.message.contains("repository 'bad'"), "{}", r.message);
        assert!(denied(&l, &other, &[(other, "casino".to_owned())]).is_some());
        assert!(denied(&l, &other, &[(owner, "good".to_owned())]).is_none());
        assert!(
            denied(&l, &other, &[(spammer, "their-repo".to_owned())]).is_some(),
            "a denied key's repositories"
        );
    }

    #[test]
    fn allow_restricts_hosting_only_when_set() {
        let (alice, bob) = (Keys::generate().public_key(), Keys::generate().public_key());
        assert!(hosting_allowed(&lists(&[], &[]), &bob, "x").is_none());
        let l = lists(&[alice.to_hex(), format!("{}/one", bob.to_hex())], &[]);
        assert!(hosting_allowed(&l, &alice, "any").is_none());
        assert!(hosting_allowed(&l, &bob, "one").is_none());
        let r = rejection(hosting_allowed(&l, &bob, "two"));
        assert_eq!((r.prefix, r.code), (Prefix::Restricted, "curation_not_allowed"));
        // GRASP-06: the signer or a tagged repository must be allowed
        assert!(pull_request_allowed(&l, &alice, &[]).is_none());
        assert!(
            pull_request_allowed(&l, &Keys::generate().public_key(), &[(bob, "one".to_owned())]).is_none()
        );
        assert!(
            pull_request_allowed(&l, &Keys::generate().public_key(), &[(bob, "two".to_owned())]).is_some()
        );
    }

    #[test]
    fn pushes_follow_both_lists() {
        let (alice, bob) = (Keys::generate().public_key(), Keys::generate().public_key());
        let d = |s: &str| RepoIdentifier::new(s).unwrap();
        let l = lists(&[alice.to_hex(), "shared".to_owned()], &[format!("{}/leak", alice.to_hex())]);
        assert!(push(&l, &RepoRef::new(alice, d("ok"))).is_none());
        assert!(push(&l, &RepoRef::new(alice, d("leak"))).unwrap().starts_with("blocked: "));
        assert!(push(&l, &RepoRef::new(bob, d("x"))).unwrap().starts_with("restricted: "));
        assert!(push(&l, &RepoRef::new(bob, d("shared"))).is_none());
        // a contributor's /prs/ repository: allowed key, or an allowed identifier
        assert!(push(&l, &RepoRef::prs(bob, d("shared"))).is_none());
        assert!(push(&l, &RepoRef::prs(bob, d("x"))).is_some());
        assert!(push(&l, &RepoRef::prs(alice, d("x"))).is_none());
        let not_denied = push(&l, &RepoRef::prs(bob, d("leak"))).unwrap();
        assert!(not_denied.starts_with("restricted: "), "only alice's 'leak' is denied: {not_denied}");
        let l = lists(&[], &["casino".to_owned(), bob.to_hex()]);
        assert!(push(&l, &RepoRef::prs(alice, d("casino"))).is_some());
        assert!(push(&l, &RepoRef::prs(bob, d("x"))).is_some());
    }

    #[test]
    fn archived_repositories_are_read_only() {
        let origin = ServiceOrigin::parse("127.0.0.1:7334").unwrap();
        let keys = Keys::generate();
        let npub = keys.public_key().to_bech32().unwrap();
        let ann = |clone: &str, relay: &str| {
            let tags = [
                Tag::identifier("r"),
                Tag::parse(["clone", clone]).unwrap(),
                Tag::parse(["relays", relay]).unwrap(),
            ];
            let ev = EventBuilder::new(Kind::Custom(30617), "").tags(tags).sign_with_keys(&keys).unwrap();
            RepoAnnouncement::parse(&ev).unwrap()
        };
        let ours = ann(&format!("http://127.0.0.1:7334/{npub}/r.git"), "ws://127.0.0.1:7334");
        assert!(read_only(&ours, &origin).is_none());
        let elsewhere = ann(&format!("http://127.0.0.1:9/{npub}/r.git"), "ws://127.0.0.1:9");
        let reason = read_only(&elsewhere, &origin).unwrap();
        assert!(reason.starts_with("restricted: ") && reason.contains("read-only archive"), "{reason}");
    }

    #[test]
    fn archive_matching() {
        let (alice, bob) = (Keys::generate().public_key(), Keys::generate().public_key());
        let archive = Selectors::parse(&[alice.to_hex(), "ngit".to_owned()]).unwrap();
        assert!(archived(&archive, &alice, "x"));
        assert!(archived(&archive, &bob, "ngit"));
        assert!(!archived(&archive, &bob, "x"));
        assert!(!archived(&Selectors::default(), &alice, "x"));
    }
}
