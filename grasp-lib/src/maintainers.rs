//! Who may publish authoritative states for a repository and authorize pushes to it: the
//! confirmed maintainer set of one selected coordinate (`30617:<owner>:<d>`).
//!
//! Maintainer model v3 (ngit 3, decision 4), from the announcements that share one `d`:
//!
//! 1. **Lead path.** From the selected owner's announcement, follow active `M` entries
//!    until one points at its own author: that lead roots the set. Without any active `M`,
//!    the selected author roots it while their own role is active. A missing announcement
//!    on the path, two active leads, a cycle, or a path that stops without a self-`M` grant
//!    nothing.
//! 2. **Reciprocity.** A pubkey a confirmed maintainer lists (active `M`/`m`, or the legacy
//!    `maintainers` tag of an announcement without role tags) is only *invited* until its
//!    own announcement for the same `d` keeps its own role active and lists back any
//!    confirmed maintainer. Confirmation repeats until nothing changes.
//! 3. Moderators (`o`) neither invite nor confirm, and never hold authority.
//!
//! [`MaintainerModel::Listed`] keeps the pre-v3 rule for operators who ask for it: everyone
//! an announcement in the set lists is in the set, without listing back.
//!
//! Both are capped at [`MAX_MAINTAINERS`], so a hostile chain cannot make every check
//! expensive. This is the one place the rule lives; every caller (state acceptance, push
//! authorization, hunting URLs, sync scope, the repository page) asks it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use nostr::PublicKey;
use serde::{Deserialize, Serialize};

use crate::nip34::RepoAnnouncement;

/// Most members a maintainer set may have; further members are ignored.
pub const MAX_MAINTAINERS: usize = 100;

/// Which maintainer rule the server applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaintainerModel {
    /// Maintainer model v3: role tags, lead path, reciprocal confirmation (the default).
    #[default]
    Reciprocal,
    /// The pre-v3 rule: being listed by a member is enough (no listing back).
    Listed,
}

/// Why a coordinate confers no authority (the set is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAuthority {
    /// The selected owner has no announcement with this identifier.
    SelectedAnnouncementMissing,
    /// The selected owner's own role is ended, deferred, malformed or moderator-only, and
    /// their announcement names no lead.
    SelectedAuthorInactive,
    /// An `M` entry on the lead path names a pubkey without an announcement.
    LeadAnnouncementMissing,
    /// An announcement on the lead path has no active `M` entry.
    LeadPathIncomplete,
    /// An announcement on the lead path has two or more active `M` targets.
    AmbiguousLeads,
    /// The lead path returns to a pubkey it passed.
    LeadCycle,
}

impl NoAuthority {
    /// A sentence for refusals and logs.
    pub fn describe(self) -> &'static str {
        match self {
            NoAuthority::SelectedAnnouncementMissing => "the repository owner has no announcement",
            NoAuthority::SelectedAuthorInactive => "the repository owner's own role tag has ended",
            NoAuthority::LeadAnnouncementMissing => {
                "an 'M' (lead) tag names a pubkey without an announcement"
            }
            NoAuthority::LeadPathIncomplete => {
                "the lead path stops at an announcement without an active 'M' tag"
            }
            NoAuthority::AmbiguousLeads => "an announcement has several active 'M' (lead) tags",
            NoAuthority::LeadCycle => "the 'M' (lead) tags form a cycle",
        }
    }
}

/// The confirmed maintainers of one selected coordinate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintainerSet {
    owner: PublicKey,
    members: BTreeSet<PublicKey>,
    invited: BTreeSet<PublicKey>,
    no_authority: Option<NoAuthority>,
}

impl MaintainerSet {
    /// The set of the coordinate `owner` selects, from the announcements of one identifier
    /// (stored and held; for each author the newest counts, the lower id on a tie).
    pub fn from_announcements(
        model: MaintainerModel,
        owner: PublicKey,
        announcements: &[RepoAnnouncement],
    ) -> Self {
        let by_author = preferred_by_author(announcements);
        match model {
            MaintainerModel::Reciprocal => reciprocal(owner, &by_author),
            MaintainerModel::Listed => listed(owner, &by_author),
        }
    }

    /// A set of the owner alone (an embedding program's own repository, tests).
    pub fn only(owner: PublicKey) -> Self {
        Self { owner, members: BTreeSet::from([owner]), invited: BTreeSet::new(), no_authority: None }
    }

    /// The selected owner the set was resolved for.
    pub fn owner(&self) -> PublicKey {
        self.owner
    }

    /// True when `pubkey` may publish authoritative states for the owner's repository.
    pub fn contains(&self, pubkey: &PublicKey) -> bool {
        self.members.contains(pubkey)
    }

    /// All confirmed members (the owner among them only when confirmed).
    pub fn members(&self) -> impl Iterator<Item = &PublicKey> {
        self.members.iter()
    }

    /// Pubkeys a confirmed maintainer lists that have not listed back (yet).
    pub fn invited(&self) -> impl Iterator<Item = &PublicKey> {
        self.invited.iter()
    }

    /// Why the coordinate confers no authority, when the set is empty because of a
    /// broken lead path.
    pub fn no_authority(&self) -> Option<NoAuthority> {
        self.no_authority
    }

    fn none(owner: PublicKey, reason: NoAuthority) -> Self {
        Self { owner, members: BTreeSet::new(), invited: BTreeSet::new(), no_authority: Some(reason) }
    }
}

/// True when `pubkey` is confirmed through the coordinate of any announcement in
/// `announcements` (all with one identifier): the state acceptance rule.
pub fn is_maintainer_of_any(
    model: MaintainerModel,
    pubkey: &PublicKey,
    announcements: &[RepoAnnouncement],
) -> bool {
    let owners: BTreeSet<PublicKey> = announcements.iter().map(|a| a.owner).collect();
    owners
        .into_iter()
        .any(|owner| MaintainerSet::from_announcements(model, owner, announcements).contains(pubkey))
}

fn preferred_by_author(announcements: &[RepoAnnouncement]) -> HashMap<PublicKey, &RepoAnnouncement> {
    let mut by_author: HashMap<PublicKey, &RepoAnnouncement> = HashMap::new();
    for ann in announcements {
        let replace = by_author.get(&ann.owner).is_none_or(|kept| {
            (ann.created_at, std::cmp::Reverse(ann.id)) > (kept.created_at, std::cmp::Reverse(kept.id))
        });
        if replace {
            by_author.insert(ann.owner, ann);
        }
    }
    by_author
}

/// Follows active `M` entries from `selected` to the root of its authority.
fn lead_root(
    selected: PublicKey,
    by_author: &HashMap<PublicKey, &RepoAnnouncement>,
) -> Result<PublicKey, NoAuthority> {
    let mut current = selected;
    let mut visited = HashSet::new();
    loop {
        if !visited.insert(current) {
            return Err(NoAuthority::LeadCycle);
        }
        let followed = current != selected;
        let Some(ann) = by_author.get(&current) else {
            return Err(if followed {
                NoAuthority::LeadAnnouncementMissing
            } else {
                NoAuthority::SelectedAnnouncementMissing
            });
        };
        match ann.leads().as_slice() {
            [] if followed => return Err(NoAuthority::LeadPathIncomplete),
            [] if ann.author_active() => return Ok(current),
            [] => return Err(NoAuthority::SelectedAuthorInactive),
            [lead] if *lead == current => return Ok(current),
            [lead] => current = *lead,
            _ => return Err(NoAuthority::AmbiguousLeads),
        }
    }
}

fn reciprocal(selected: PublicKey, by_author: &HashMap<PublicKey, &RepoAnnouncement>) -> MaintainerSet {
    let root = match lead_root(selected, by_author) {
        Ok(root) => root,
        Err(reason) => return MaintainerSet::none(selected, reason),
    };
    let mut members = BTreeSet::from([root]);
    loop {
        let candidates: BTreeSet<PublicKey> = members
            .iter()
            .filter_map(|m| by_author.get(m))
            .flat_map(|a| a.listed())
            .filter(|pk| !members.contains(pk))
            .collect();
        let confirmed: Vec<PublicKey> = candidates
            .iter()
            .filter(|pk| {
                by_author.get(*pk).is_some_and(|own| {
                    own.author_active() && own.listed().iter().any(|l| members.contains(l))
                })
            })
            .copied()
            .collect();
        if confirmed.is_empty() || members.len() >= MAX_MAINTAINERS {
            // Invited: listed, not confirmed, and not someone whose own announcement left.
            let invited = candidates
                .into_iter()
                .filter(|pk| by_author.get(pk).is_none_or(|own| own.author_active()))
                .collect();
            return MaintainerSet { owner: selected, members, invited, no_authority: None };
        }
        for pk in confirmed {
            if members.len() >= MAX_MAINTAINERS {
                break;
            }
            members.insert(pk);
        }
    }
}

fn listed(selected: PublicKey, by_author: &HashMap<PublicKey, &RepoAnnouncement>) -> MaintainerSet {
    let mut members = BTreeSet::new();
    let mut queue = VecDeque::from([selected]);
    while let Some(pk) = queue.pop_front() {
        if members.len() >= MAX_MAINTAINERS {
            break;
        }
        if !members.insert(pk) {
            continue;
        }
        if let Some(ann) = by_author.get(&pk) {
            queue.extend(ann.listed().into_iter().filter(|m| !members.contains(m)));
        }
    }
    MaintainerSet { owner: selected, members, invited: BTreeSet::new(), no_authority: None }
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Kind, Tag, Timestamp};

    use super::*;

    /// Four people; `ann(i, tags)` is person i's announcement with those tags, where
    /// `"A"`..`"D"` in a tag stand for their hex pubkeys.
    struct People([Keys; 4]);

    impl People {
        fn new() -> Self {
            Self([Keys::generate(), Keys::generate(), Keys::generate(), Keys::generate()])
        }
        fn pk(&self, name: char) -> PublicKey {
            self.0[(name as u8 - b'A') as usize].public_key()
        }
        fn ann(&self, author: char, tags: &[&[&str]]) -> RepoAnnouncement {
            self.ann_in(author, "repo", tags)
        }
        fn ann_in(&self, author: char, d: &str, tags: &[&[&str]]) -> RepoAnnouncement {
            let expand = |v: &str| match v {
                "A" | "B" | "C" | "D" => self.pk(v.chars().next().unwrap()).to_hex(),
                other => other.to_owned(),
            };
            let mut all = vec![Tag::parse(["d", d]).unwrap()];
            all.extend(tags.iter().map(|t| Tag::parse(t.iter().map(|v| expand(v))).unwrap()));
            let keys = &self.0[(author as u8 - b'A') as usize];
            let event = EventBuilder::new(Kind::Custom(30617), "")
                .tags(all)
                .custom_created_at(Timestamp::from(1_700_000_000))
                .sign_with_keys(keys)
                .unwrap();
            RepoAnnouncement::parse(&event).unwrap()
        }
        fn names(&self, keys: impl Iterator<Item = PublicKey>) -> String {
            let mut names: Vec<char> = keys
                .map(|k| (b'A' + self.0.iter().position(|p| p.public_key() == k).unwrap() as u8) as char)
                .collect();
            names.sort();
            names.into_iter().collect()
        }
    }

    /// The table of cases: (announcements, selected owner, confirmed, invited).
    #[test]
    fn confirmed_sets() {
        type Anns<'a> = &'a [(char, &'a [&'a [&'a str]])];
        let cases: &[(&str, Anns, char, &str, &str)] = &[
            ("owner only", &[('A', &[])], 'A', "A", ""),
            (
                "owner + invited m",
                &[('A', &[&["M", "A"], &["m", "B", "100"], &["maintainers", "A", "B"]])],
                'A',
                "A",
                "B",
            ),
            (
                "invited who accepted",
                &[
                    ('A', &[&["M", "A"], &["m", "B", "100"]]),
                    ('B', &[&["M", "A", "200"], &["m", "B", "200"]]),
                ],
                'A',
                "AB",
                "",
            ),
            (
                "an acceptance that only names oneself does not list back",
                &[('A', &[&["M", "A"], &["m", "B"]]), ('B', &[&["m", "B"]])],
                'A',
                "A",
                "B",
            ),
            (
                "assignment ended by the lead",
                &[('A', &[&["M", "A"], &["m", "B", "100", "200"]]), ('B', &[&["M", "A"], &["m", "B"]])],
                'A',
                "A",
                "",
            ),
            (
                "accepted then left",
                &[('A', &[&["M", "A"], &["m", "B"]]), ('B', &[&["M", "A"], &["m", "B", "0", "1700000000"]])],
                'A',
                "A",
                "",
            ),
            (
                "restarted interval is active",
                &[
                    ('A', &[&["M", "A"], &["m", "B", "100", "200", "300"]]),
                    ('B', &[&["M", "A"], &["m", "B"]]),
                ],
                'A',
                "AB",
                "",
            ),
            (
                "lead handover via M",
                &[('A', &[&["M", "B"], &["m", "A"]]), ('B', &[&["M", "B"], &["m", "A"]])],
                'A',
                "AB",
                "",
            ),
            ("two active leads", &[('A', &[&["M", "A"], &["M", "B"]]), ('B', &[&["M", "B"]])], 'A', "", ""),
            (
                "lead cycle",
                &[('A', &[&["M", "B"], &["m", "A"]]), ('B', &[&["M", "A"], &["m", "B"]])],
                'A',
                "",
                "",
            ),
            ("missing lead announcement", &[('A', &[&["M", "B"], &["m", "A"]])], 'A', "", ""),
            ("lead without a self-M", &[('A', &[&["M", "B"], &["m", "A"]]), ('B', &[])], 'A', "", ""),
            (
                "a former maintainer's coordinate roots at the lead",
                &[('B', &[&["M", "A"], &["m", "B"]]), ('A', &[&["M", "A"]])],
                'B',
                "A",
                "",
            ),
            (
                "moderator-only author",
                &[('A', &[&["o", "A"], &["m", "B"]]), ('B', &[&["M", "A"], &["m", "B"]])],
                'A',
                "",
                "",
            ),
            (
                "moderators neither invite nor confirm",
                &[('A', &[&["M", "A"], &["o", "B"]]), ('B', &[&["o", "A"], &["o", "B"]])],
                'A',
                "A",
                "",
            ),
            ("implicit author, leadless", &[('A', &[&["m", "B"]]), ('B', &[&["m", "A"]])], 'A', "AB", ""),
            (
                "legacy maintainers, reciprocal",
                &[('A', &[&["maintainers", "B"]]), ('B', &[&["maintainers", "A"]])],
                'A',
                "AB",
                "",
            ),
            (
                "legacy without listing back",
                &[('A', &[&["maintainers", "B"]]), ('B', &[&["maintainers", "C"]])],
                'A',
                "A",
                "B",
            ),
            (
                "recursive: C lists B, not A",
                &[
                    ('A', &[&["maintainers", "B"]]),
                    ('B', &[&["maintainers", "A", "C"]]),
                    ('C', &[&["maintainers", "B"]]),
                ],
                'A',
                "ABC",
                "",
            ),
            (
                "a clique nobody confirmed lists stays out",
                &[
                    ('A', &[&["maintainers", "B"]]),
                    ('B', &[&["maintainers", "C"]]),
                    ('C', &[&["maintainers", "B"]]),
                ],
                'A',
                "A",
                "B",
            ),
            (
                "a legacy invitee lists back",
                &[('A', &[&["M", "A"], &["m", "B"]]), ('B', &[&["maintainers", "A"]])],
                'A',
                "AB",
                "",
            ),
            (
                "role tags with a stale maintainers listing an invitee",
                &[('A', &[&["M", "A"], &["maintainers", "A", "B"]]), ('B', &[&["M", "A"], &["m", "B"]])],
                'A',
                "A",
                "",
            ),
            ("malformed self-entry", &[('A', &[&["M", "A", "wss://relay.example"]])], 'A', "", ""),
        ];
        for (name, anns, selected, confirmed, invited) in cases {
            let people = People::new();
            let anns: Vec<RepoAnnouncement> = anns.iter().map(|(who, tags)| people.ann(*who, tags)).collect();
            let set =
                MaintainerSet::from_announcements(MaintainerModel::Reciprocal, people.pk(*selected), &anns);
            assert_eq!(people.names(set.members().copied()), *confirmed, "{name}: confirmed");
            assert_eq!(people.names(set.invited().copied()), *invited, "{name}: invited");
            assert_eq!(set.no_authority().is_some(), confirmed.is_empty(), "{name}: reason");
        }
    }

    #[test]
    fn the_reasons_of_no_authority() {
        let p = People::new();
        let set = |anns: &[RepoAnnouncement]| {
            MaintainerSet::from_announcements(MaintainerModel::Reciprocal, p.pk('A'), anns).no_authority()
        };
        assert_eq!(set(&[]), Some(NoAuthority::SelectedAnnouncementMissing));
        assert_eq!(set(&[p.ann('A', &[&["m", "A", "1", "2"]])]), Some(NoAuthority::SelectedAuthorInactive));
        assert_eq!(set(&[p.ann('A', &[&["M", "B"]])]), Some(NoAuthority::LeadAnnouncementMissing));
        assert_eq!(
            set(&[p.ann('A', &[&["M", "B"]]), p.ann('B', &[])]),
            Some(NoAuthority::LeadPathIncomplete)
        );
        assert_eq!(set(&[p.ann('A', &[&["M", "B"], &["M", "C"]])]), Some(NoAuthority::AmbiguousLeads));
        assert_eq!(
            set(&[p.ann('A', &[&["M", "B"]]), p.ann('B', &[&["M", "A"]])]),
            Some(NoAuthority::LeadCycle)
        );
    }

    #[test]
    fn another_identifier_never_counts() {
        let p = People::new();
        let anns =
            [p.ann('A', &[&["M", "A"], &["m", "B"]]), p.ann_in('B', "other", &[&["M", "A"], &["m", "B"]])];
        // Callers pass one identifier's announcements; B's is for another and must not confirm.
        let same_d: Vec<_> = anns.iter().filter(|a| a.identifier.as_str() == "repo").cloned().collect();
        let set = MaintainerSet::from_announcements(MaintainerModel::Reciprocal, p.pk('A'), &same_d);
        assert_eq!(p.names(set.members().copied()), "A");
    }

    #[test]
    fn the_listed_model_keeps_the_old_closure() {
        let p = People::new();
        let anns = [p.ann('A', &[&["M", "A"], &["m", "B"]]), p.ann('B', &[&["maintainers", "C"]])];
        let set = MaintainerSet::from_announcements(MaintainerModel::Listed, p.pk('A'), &anns);
        assert_eq!(p.names(set.members().copied()), "ABC");
        let reciprocal = MaintainerSet::from_announcements(MaintainerModel::Reciprocal, p.pk('A'), &anns);
        assert_eq!(p.names(reciprocal.members().copied()), "A");
    }

    #[test]
    fn state_acceptance_tries_every_coordinate() {
        let p = People::new();
        // B is only invited to A's repository but roots their own.
        let anns = [p.ann('A', &[&["M", "A"], &["m", "B"]]), p.ann('B', &[&["M", "B"]])];
        assert!(is_maintainer_of_any(MaintainerModel::Reciprocal, &p.pk('B'), &anns));
        let a = MaintainerSet::from_announcements(MaintainerModel::Reciprocal, p.pk('A'), &anns);
        assert!(!a.contains(&p.pk('B')));
        assert!(!is_maintainer_of_any(MaintainerModel::Reciprocal, &p.pk('C'), &anns));
    }

    #[test]
    fn the_newest_announcement_of_an_author_counts() {
        let p = People::new();
        let old = p.ann('B', &[&["M", "A"], &["m", "B"]]);
        let mut newer = p.ann('B', &[&["m", "B", "1", "2"]]);
        newer.created_at = Timestamp::from(old.created_at.as_secs() + 1);
        let anns = [p.ann('A', &[&["M", "A"], &["m", "B"]]), old, newer];
        let set = MaintainerSet::from_announcements(MaintainerModel::Reciprocal, p.pk('A'), &anns);
        assert_eq!(p.names(set.members().copied()), "A", "B left in their newest announcement");
    }

    #[test]
    fn is_capped() {
        let keys: Vec<Keys> = (0..MAX_MAINTAINERS + 10).map(|_| Keys::generate()).collect();
        let sign = |k: &Keys, listed: &[PublicKey]| {
            let mut tags = vec![Tag::parse(["d", "repo"]).unwrap()];
            let mut m = vec!["maintainers".to_owned()];
            m.extend(listed.iter().map(|pk| pk.to_hex()));
            tags.push(Tag::parse(m).unwrap());
            RepoAnnouncement::parse(
                &EventBuilder::new(Kind::Custom(30617), "").tags(tags).sign_with_keys(k).unwrap(),
            )
            .unwrap()
        };
        let root = keys[0].public_key();
        let everyone: Vec<PublicKey> = keys[1..].iter().map(Keys::public_key).collect();
        let mut anns = vec![sign(&keys[0], &everyone)];
        anns.extend(keys[1..].iter().map(|k| sign(k, &[root])));
        for model in [MaintainerModel::Reciprocal, MaintainerModel::Listed] {
            let set = MaintainerSet::from_announcements(model, root, &anns);
            assert_eq!(set.members().count(), MAX_MAINTAINERS, "{model:?}");
        }
    }
}
