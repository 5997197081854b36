//! GRASP-01 acceptance rules as pure functions: facts in, [`Verdict`] out. No I/O here, so
//! every rule is unit-tested directly; [`crate::ingest`] gathers the facts from the store
//! and purgatory and acts on the verdict.
//!
//! ```
//! use grasp_lib::maintainers::MaintainerModel;
//! use grasp_lib::nip34::{RepoAnnouncement, RepoState};
//! use grasp_lib::policy::{decide, Verdict};
//! use nostr::{EventBuilder, Keys, Kind, Tag};
//!
//! let sign = |keys: &Keys, kind: u16, tags: &[&[&str]]| {
//!     let tags = tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap());
//!     EventBuilder::new(Kind::Custom(kind), "").tags(tags).sign_with_keys(keys).unwrap()
//! };
//! let (owner, stranger) = (Keys::generate(), Keys::generate());
//! let announcement = RepoAnnouncement::parse(&sign(&owner, 30617, &[&["d", "repo"]])).unwrap();
//! let head = "0123456789abcdef0123456789abcdef01234567";
//! let state_of = |keys: &Keys| {
//!     RepoState::parse(&sign(keys, 30618, &[&["d", "repo"], &["refs/heads/main", head]])).unwrap()
//! };
//!
//! // The owner's state is authoritative; a stranger's is refused with a reason.
//! let model = MaintainerModel::default();
//! assert_eq!(decide::state(model, &state_of(&owner), &[announcement.clone()], None), Verdict::Accept);
//! let Verdict::Reject(refused) = decide::state(model, &state_of(&stranger), &[announcement], None) else {
//!     panic!("a stranger's state is refused")
//! };
//! assert!(refused.wire_message().starts_with("invalid: author not authorized"));
//! ```

use nostr::{Event, EventId, PublicKey, Timestamp};

use super::{Prefix, Verdict};
use crate::maintainers::{is_maintainer_of_any, MaintainerModel};
use crate::nip34::{kinds, RepoAnnouncement, RepoCoordinate, RepoState};
use crate::origin::ServiceOrigin;

/// How far in the future `created_at` may be (clock skew allowance).
pub const MAX_FUTURE_SECS: u64 = 15 * 60;

/// Checks every event gets before its kind-specific rule: protected events (NIP-70) need
/// authentication we do not offer, and far-future timestamps would pin replaceable events.
pub fn preliminary(event: &Event, now: Timestamp) -> Option<Verdict> {
    if event.tags.iter().any(|t| t.as_slice().len() == 1 && t.as_slice()[0] == "-") {
        return Some(Verdict::reject(
            Prefix::Restricted,
            "protected",
            "protected events (NIP-70 '-' tag) need NIP-42 authentication, which this relay does not offer",
        ));
    }
    if event.created_at.as_secs() > now.as_secs() + MAX_FUTURE_SECS {
        return Some(Verdict::reject(
            Prefix::Invalid,
            "future",
            format!(
                "created_at is more than {} minutes in the future; check your clock",
                MAX_FUTURE_SECS / 60
            ),
        ));
    }
    None
}

/// GRASP-08 rules for events of kind `kind` on a private service (`member`: whether the
/// author is a member; `None` on a public service): repositories are announced only by
/// members, and a member's private list of repository servers (kind 10318, encrypted) is
/// kept as it is.
pub fn private_service(kind: u16, member: Option<bool>) -> Option<Verdict> {
    match (kind, member?) {
        (kinds::REPO_ANNOUNCEMENT, false) => Some(Verdict::reject(
            Prefix::Restricted,
            "private",
            "this is a private service: only its members announce repositories here",
        )),
        (kinds::PRIVATE_GRASP_LIST, true) => Some(Verdict::Accept),
        _ => None,
    }
}

/// Profiles (kind 0) and relay lists (kind 10002) are taken only from people Sync Plus
/// follows (`followed`): the owners, maintainers and conversation participants of hosted
/// repositories, whose relay lists say where to look for their replies.
pub fn identity(kind: u16, followed: bool) -> Option<Verdict> {
    (followed && matches!(kind, 0 | 10002)).then_some(Verdict::Accept)
}

/// Which of the two tags of an announcement point at this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListsService {
    /// Some `clone` value is `http(s)://<us>/<npub>/<id>.git`.
    pub clone: bool,
    /// Some `relays` value is `ws(s)://<us>`.
    pub relays: bool,
}

impl ListsService {
    /// Checks an announcement against our origin.
    pub fn of(ann: &RepoAnnouncement, origin: &ServiceOrigin) -> Self {
        Self {
            clone: ann.clone_urls.iter().any(|u| origin.is_clone_url(u)),
            relays: ann.relays.iter().any(|u| origin.is_relay_url(u)),
        }
    }

    /// Both tags list us: we host this repository.
    pub fn both(self) -> bool {
        self.clone && self.relays
    }
}

/// True when another author's announcement in `announcements` lists `pubkey` as a
/// maintainer (an invitation counts: its acceptance is how the server learns it).
pub fn listed_by_another(pubkey: &PublicKey, announcements: &[RepoAnnouncement]) -> bool {
    announcements.iter().any(|a| a.owner != *pubkey && a.listed().contains(pubkey))
}

/// True when another author's announcement in `announcements` gives `pubkey` any role
/// (maintainer, invitee or moderator): whose announcements carry the repository's
/// governance, and so are kept without listing this server.
pub fn named_by_another(pubkey: &PublicKey, announcements: &[RepoAnnouncement]) -> bool {
    announcements.iter().any(|a| a.owner != *pubkey && a.names(pubkey))
}

/// The rule for kind 30617. `stored` are the stored announcements with the same identifier.
///
/// Accepted when it lists this server in both `clone` and `relays`, or when another stored
/// announcement with that identifier gives its author a role (a "maintainer companion":
/// confirmed maintainers', invitees' and moderators' announcements carry the maintainer
/// chain; no repository is created). The author's own older announcement does not vouch
/// for the new one.
pub fn announcement(new: &RepoAnnouncement, origin: &ServiceOrigin, stored: &[RepoAnnouncement]) -> Verdict {
    let lists = ListsService::of(new, origin);
    if lists.both() || named_by_another(&new.owner, stored) {
        return Verdict::Accept;
    }
    let missing = match (lists.clone, lists.relays) {
        (false, false) => "'clone' and 'relays' tags do",
        (false, true) => "'clone' tag does",
        _ => "'relays' tag does",
    };
    let authority = origin.service_address();
    Verdict::reject(
        Prefix::Blocked,
        "not_listing_service",
        format!(
            "announcement not hosted: its {missing} not list this server; add \
             'http(s)://{authority}/<npub>/<identifier>.git' to 'clone' and 'ws(s)://{authority}' to 'relays'"
        ),
    )
}

/// The rule for kind 30618. `stored` are the stored announcements with the state's
/// identifier; `latest_own` is (created_at, id) of the author's newest stored state for it.
/// Replaceable semantics keep the newest and, on a tie, the lowest id.
pub fn state(
    model: MaintainerModel,
    state: &RepoState,
    stored: &[RepoAnnouncement],
    latest_own: Option<(Timestamp, EventId)>,
) -> Verdict {
    let d = state.identifier.as_str();
    if stored.is_empty() {
        return Verdict::reject(
            Prefix::Invalid,
            "no_announcement",
            format!("no announcement exists for repository '{d}'; publish the kind 30617 announcement first"),
        );
    }
    if !is_maintainer_of_any(model, &state.author, stored) {
        let invited = listed_by_another(&state.author, stored);
        let what_to_do = if invited {
            "you are invited: publish your own announcement for this repository that lists a maintainer back \
             (ngit: accept the invitation), then publish the state again"
        } else {
            "ask a maintainer to add you to their announcement, then accept the invitation"
        };
        return Verdict::reject(
            Prefix::Invalid,
            "unauthorized_state",
            format!(
                "author not authorized for repository '{d}': not a confirmed maintainer of any announcement with \
                 this identifier; {what_to_do}"
            ),
        );
    }
    if latest_own.is_some_and(|(at, id)| at > state.created_at || (at == state.created_at && id < state.id)) {
        return Verdict::reject(
            Prefix::Invalid,
            "stale_state",
            format!(
                "a newer state for '{d}' from this author is already stored (or one signed in the same second \
                 that wins the tie); sign a newer one"
            ),
        );
    }
    Verdict::Accept
}

/// What the store knows about the references of an event (and references to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelationFacts {
    /// Some `a`/`A`/`q` coordinate names a stored repository or other stored event.
    pub tags_stored_coordinate: bool,
    /// Some `e`/`E`/`q` id names a stored event.
    pub tags_stored_event: bool,
    /// A stored event tags this event (by id, or by coordinate for addressable kinds).
    pub tagged_by_stored: bool,
}

/// The rule for every kind without a rule of its own: it must relate to what we host.
pub fn related(facts: RelationFacts) -> Verdict {
    if facts.tags_stored_coordinate || facts.tags_stored_event || facts.tagged_by_stored {
        Verdict::Accept
    } else {
        Verdict::reject(
            Prefix::Blocked,
            "unrelated",
            "event must reference a repository hosted here ('a'/'A'/'q' tag 30617:<owner>:<identifier>) \
             or an event stored here ('e'/'E'/'q' tag)",
        )
    }
}

/// What this server knows about a pull request (1618) or pull request update (1619).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullRequestFacts {
    /// The identifier of a repository hosted here (stored or held announcement) that an `a`
    /// tag names: GRASP-01 takes the event.
    pub hosted: Option<String>,
    /// GRASP-06 `/prs/` hosting is on.
    pub prs_hosting: bool,
    /// The identifier of a `/prs/` repository of this server the `clone` tag names
    /// (`/prs/<signer npub>/<d>.git`, with `d` among the `a`-tag identifiers).
    pub prs: Option<String>,
    /// A `c` tag is present (well formed or not).
    pub has_commit: bool,
}

/// The rule for pull requests and pull request updates: the identifier they are held under
/// (until their commit is here at `refs/nostr/<id>`), or why they are refused.
///
/// GRASP-01 takes them when they tag a repository hosted here; GRASP-06 takes the ones it
/// would reject when their `clone` tag names this server's `/prs/<signer npub>/<d>.git` for
/// a repository `d` they tag.
pub fn pull_request(facts: &PullRequestFacts) -> Result<String, Verdict> {
    let prs = facts.prs.as_ref().filter(|_| facts.prs_hosting);
    let Some(identifier) = facts.hosted.as_ref().or(prs) else {
        let hint = if facts.prs_hosting {
            " or name this server's http(s)://<host>/prs/<your npub>/<identifier>.git in its 'clone' tag \
             (GRASP-06)"
        } else {
            ""
        };
        return Err(Verdict::reject(
            Prefix::Blocked,
            "unrelated",
            format!(
                "pull request must tag a repository hosted here ('a' tag 30617:<owner>:<identifier>){hint}"
            ),
        ));
    };
    // A `c` that is present but not a full commit id is held like any pull request whose
    // data is missing (it can never arrive, so it expires unserved); no `c` at all is refused.
    if !facts.has_commit {
        return Err(Verdict::reject(
            Prefix::Invalid,
            "malformed",
            "pull request needs a 'c' tag naming its tip commit (40 or 64 hex characters)",
        ));
    }
    Ok(identifier.clone())
}

/// What a kind-5 deletion request points at.
#[derive(Debug, Clone, Default)]
pub struct DeletionFacts {
    /// Authors of the stored events named by `e` tags.
    pub stored_target_authors: Vec<PublicKey>,
    /// Coordinates named by `a` tags, and whether an event is stored there.
    pub coordinates: Vec<(RepoCoordinate, bool)>,
}

/// NIP-09: a deletion may only name the author's own events, and must name something here.
pub fn deletion(author: &PublicKey, facts: &DeletionFacts) -> Verdict {
    let foreign = facts.stored_target_authors.iter().any(|a| a != author)
        || facts.coordinates.iter().any(|(c, _)| c.pubkey != *author);
    if foreign {
        return Verdict::reject(
            Prefix::Invalid,
            "foreign_deletion",
            "a deletion request may only name events signed by its own author (NIP-09)",
        );
    }
    if facts.stored_target_authors.is_empty() && !facts.coordinates.iter().any(|(_, stored)| *stored) {
        return Verdict::reject(
            Prefix::Blocked,
            "unrelated",
            "deletion request names no event stored on this relay",
        );
    }
    Verdict::Accept
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::ToBech32;
    use nostr::{EventBuilder, Keys, Kind, Tag};

    use super::*;
    use crate::policy::Rejection;

    const DOMAIN: &str = "127.0.0.1:7334";

    fn origin() -> ServiceOrigin {
        ServiceOrigin::parse(DOMAIN).unwrap()
    }

    fn ann(keys: &Keys, d: &str, listing: bool, maintainers: &[PublicKey]) -> RepoAnnouncement {
        let npub = keys.public_key().to_bech32().unwrap();
        let mut tags = vec![Tag::parse(["d", d]).unwrap()];
        if listing {
            tags.push(Tag::parse(["clone", &format!("http://{DOMAIN}/{npub}/{d}.git")]).unwrap());
            tags.push(Tag::parse(["relays", &format!("ws://{DOMAIN}")]).unwrap());
        }
        let mut m = vec!["maintainers".to_owned()];
        m.extend(maintainers.iter().map(|pk| pk.to_hex()));
        tags.push(Tag::parse(m).unwrap());
        let ev = EventBuilder::new(Kind::Custom(30617), "").tags(tags).sign_with_keys(keys).unwrap();
        RepoAnnouncement::parse(&ev).unwrap()
    }

    fn st(keys: &Keys, d: &str) -> RepoState {
        let ev =
            EventBuilder::new(Kind::Custom(30618), "").tag(Tag::identifier(d)).sign_with_keys(keys).unwrap();
        RepoState::parse(&ev).unwrap()
    }

    fn code(v: Verdict) -> &'static str {
        match v {
            Verdict::Reject(Rejection { code, .. }) => code,
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn announcement_listing_us_is_accepted() {
        let a = Keys::generate();
        assert_eq!(announcement(&ann(&a, "r", true, &[]), &origin(), &[]), Verdict::Accept);
    }

    #[test]
    fn announcement_listing_only_one_tag_is_rejected_with_what_is_missing() {
        let a = Keys::generate();
        let mut only_clone = ann(&a, "r", true, &[]);
        only_clone.relays.clear();
        match announcement(&only_clone, &origin(), &[]) {
            Verdict::Reject(r) => {
                assert_eq!(r.prefix, Prefix::Blocked);
                assert!(r.message.contains("'relays' tag does not list"), "{}", r.message);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn companion_announcement_needs_a_listing_by_another_stored_announcement() {
        let (owner, m1, m2, stranger) =
            (Keys::generate(), Keys::generate(), Keys::generate(), Keys::generate());
        let owner_ann = ann(&owner, "r", true, &[m1.public_key()]);
        let m1_ann = ann(&m1, "r", false, &[m2.public_key()]);
        // listed (invited or confirmed: the acceptance is how we learn it)
        assert_eq!(announcement(&m1_ann, &origin(), &[owner_ann.clone()]), Verdict::Accept);
        // listed by m1's stored announcement
        let m2_ann = ann(&m2, "r", false, &[]);
        assert_eq!(announcement(&m2_ann, &origin(), &[owner_ann.clone(), m1_ann.clone()]), Verdict::Accept);
        // not without m1's announcement
        assert_eq!(code(announcement(&m2_ann, &origin(), &[owner_ann.clone()])), "not_listing_service");
        // stranger
        assert_eq!(
            code(announcement(&ann(&stranger, "r", false, &[]), &origin(), &[owner_ann.clone()])),
            "not_listing_service"
        );
        // other identifier does not count (caller passes only same-d announcements, none here)
        assert_eq!(code(announcement(&ann(&m1, "other", false, &[]), &origin(), &[])), "not_listing_service");
    }

    #[test]
    fn owner_dropping_us_is_not_its_own_companion() {
        let owner = Keys::generate();
        let old = ann(&owner, "r", true, &[]);
        let new = ann(&owner, "r", false, &[]);
        assert_eq!(code(announcement(&new, &origin(), &[old])), "not_listing_service");
    }

    #[test]
    fn state_rules() {
        let (owner, m1, m2, stranger) =
            (Keys::generate(), Keys::generate(), Keys::generate(), Keys::generate());
        let (v3, listed) = (MaintainerModel::Reciprocal, MaintainerModel::Listed);
        // m1 is invited by the owner and has no announcement of their own.
        let invited = vec![ann(&owner, "r", true, &[m1.public_key()])];
        assert_eq!(state(v3, &st(&owner, "r"), &invited, None), Verdict::Accept);
        match state(v3, &st(&m1, "r"), &invited, None) {
            Verdict::Reject(r) => assert!(r.message.contains("you are invited"), "{}", r.message),
            other => panic!("{other:?}"),
        }
        assert_eq!(state(listed, &st(&m1, "r"), &invited, None), Verdict::Accept, "the old rule");
        // m1's own announcement lists m2 but not the owner: m1 roots their own coordinate
        // (their state is accepted for it), m2 is only invited there.
        let own = vec![ann(&owner, "r", true, &[m1.public_key()]), ann(&m1, "r", false, &[m2.public_key()])];
        assert_eq!(state(v3, &st(&m1, "r"), &own, None), Verdict::Accept);
        assert_eq!(code(state(v3, &st(&m2, "r"), &own, None)), "unauthorized_state");
        assert_eq!(state(listed, &st(&m2, "r"), &own, None), Verdict::Accept, "the old rule");
        // Once m1 lists the owner back, m1 is confirmed; m2 still has not accepted.
        let accepted = vec![
            ann(&owner, "r", true, &[m1.public_key()]),
            ann(&m1, "r", false, &[owner.public_key(), m2.public_key()]),
        ];
        assert_eq!(state(v3, &st(&m1, "r"), &accepted, None), Verdict::Accept);
        assert_eq!(code(state(v3, &st(&m2, "r"), &accepted, None)), "unauthorized_state");
        assert_eq!(code(state(v3, &st(&stranger, "r"), &accepted, None)), "unauthorized_state");
        assert_eq!(code(state(v3, &st(&owner, "r"), &[], None)), "no_announcement");
        let s = st(&owner, "r");
        let later = Timestamp::from(s.created_at.as_secs() + 10);
        assert_eq!(code(state(v3, &s, &accepted, Some((later, EventId::all_zeros())))), "stale_state");
        let lower = EventId::all_zeros();
        let higher = EventId::from_byte_array([0xff; 32]);
        assert_eq!(code(state(v3, &s, &accepted, Some((s.created_at, lower)))), "stale_state", "tie lost");
        assert_eq!(state(v3, &s, &accepted, Some((s.created_at, higher))), Verdict::Accept, "tie won");
    }

    #[test]
    fn related_needs_any_relation() {
        assert_eq!(code(related(RelationFacts::default())), "unrelated");
        for facts in [
            RelationFacts { tags_stored_coordinate: true, ..Default::default() },
            RelationFacts { tags_stored_event: true, ..Default::default() },
            RelationFacts { tagged_by_stored: true, ..Default::default() },
        ] {
            assert_eq!(related(facts), Verdict::Accept);
        }
    }

    #[test]
    fn pull_requests_through_grasp01_or_grasp06() {
        let hosted = PullRequestFacts { hosted: Some("r".into()), has_commit: true, ..Default::default() };
        assert_eq!(pull_request(&hosted), Ok("r".to_owned()));
        let prs = PullRequestFacts {
            prs_hosting: true,
            prs: Some("p".into()),
            has_commit: true,
            ..Default::default()
        };
        assert_eq!(pull_request(&prs), Ok("p".to_owned()));
        // GRASP-01 wins when both apply
        assert_eq!(
            pull_request(&PullRequestFacts { hosted: Some("r".into()), ..prs.clone() }),
            Ok("r".to_owned())
        );
        // switched off: the /prs/ clone tag does not count
        let off = PullRequestFacts { prs_hosting: false, ..prs.clone() };
        match pull_request(&off) {
            Err(Verdict::Reject(r)) => assert!(r.code == "unrelated" && !r.message.contains("GRASP-06")),
            other => panic!("{other:?}"),
        }
        match pull_request(&PullRequestFacts { prs: None, ..prs.clone() }) {
            Err(Verdict::Reject(r)) => assert!(r.code == "unrelated" && r.message.contains("/prs/")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            code(pull_request(&PullRequestFacts { has_commit: false, ..prs }).unwrap_err()),
            "malformed"
        );
    }

    #[test]
    fn deletion_rules() {
        let (a, b) = (Keys::generate().public_key(), Keys::generate().public_key());
        let own = DeletionFacts { stored_target_authors: vec![a], coordinates: vec![] };
        assert_eq!(deletion(&a, &own), Verdict::Accept);
        assert_eq!(code(deletion(&b, &own)), "foreign_deletion");
        let coord = RepoCoordinate::announcement(a, "r");
        let by_coord =
            DeletionFacts { stored_target_authors: vec![], coordinates: vec![(coord.clone(), true)] };
        assert_eq!(deletion(&a, &by_coord), Verdict::Accept);
        assert_eq!(code(deletion(&b, &by_coord)), "foreign_deletion");
        let unknown = DeletionFacts { stored_target_authors: vec![], coordinates: vec![(coord, false)] };
        assert_eq!(code(deletion(&a, &unknown)), "unrelated");
    }

    #[test]
    fn preliminary_checks() {
        let keys = Keys::generate();
        let now = Timestamp::now();
        let protected = EventBuilder::new(Kind::Custom(1), "")
            .tag(Tag::parse(["-"]).unwrap())
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(code(preliminary(&protected, now).unwrap()), "protected");
        let future = EventBuilder::new(Kind::Custom(1), "")
            .custom_created_at(Timestamp::from(now.as_secs() + 3600))
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(code(preliminary(&future, now).unwrap()), "future");
        let ok = EventBuilder::new(Kind::Custom(1), "").sign_with_keys(&keys).unwrap();
        assert!(preliminary(&ok, now).is_none());
    }
}
