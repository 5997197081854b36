//! Role tags of an announcement (maintainer model v3): `["M", <hex pubkey>, <boundaries>…]`
//! for a lead, `["m", …]` for a co-maintainer, `["o", …]` for a moderator.
//!
//! After the pubkey, a tag may carry alternating start/end timestamps. An entry is active
//! when it has none or its last one is a start. `defer` may stand only as the final *end*
//! boundary (a copy of someone's history that they own). Anything else after the pubkey
//! (a relay hint, a word, a negative number) makes the entry malformed, and a malformed
//! entry grants nothing. History only ever ends a role; it never grants one back in time.
//!
//! Pure parsing: who is confirmed is decided in [`crate::maintainers`].

use nostr::{Event, PublicKey};

/// The three roles an announcement can assign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `M`: the lead; authority is rooted at the lead a chain of `M` entries ends at.
    Lead,
    /// `m`: a co-maintainer.
    Maintainer,
    /// `o`: a moderator (no authority over states or pushes).
    Moderator,
}

impl Role {
    fn from_letter(letter: &str) -> Option<Self> {
        match letter {
            "M" => Some(Role::Lead),
            "m" => Some(Role::Maintainer),
            "o" => Some(Role::Moderator),
            _ => None,
        }
    }

    /// True for `M` and `m`: roles that may publish authoritative states.
    pub fn maintains(self) -> bool {
        matches!(self, Role::Lead | Role::Maintainer)
    }
}

/// One role tag as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleEntry {
    /// Which role.
    pub role: Role,
    /// The pubkey it names, when the second value is a hex pubkey.
    pub subject: Option<PublicKey>,
    /// Whether the entry grants the role now.
    pub status: RoleStatus,
}

/// What a role entry's boundaries say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleStatus {
    /// No boundaries, or the last is a start.
    Active,
    /// The last boundary is an end (a timestamp or `defer`).
    Ended,
    /// Something after the pubkey is neither a timestamp nor a final `defer` in an end
    /// position, or the pubkey itself is not one.
    Malformed,
}

impl RoleEntry {
    /// Parses one tag; `None` when it is not a role tag at all.
    pub fn parse(tag: &[String]) -> Option<Self> {
        let role = Role::from_letter(tag.first()?)?;
        let subject = tag.get(1).and_then(|v| parse_hex_pubkey(v));
        let status = if subject.is_none() { RoleStatus::Malformed } else { boundaries_status(&tag[2..]) };
        Some(Self { role, subject, status })
    }

    /// The pubkey this entry makes active in its role, if any.
    pub fn active_subject(&self) -> Option<PublicKey> {
        (self.status == RoleStatus::Active).then_some(self.subject).flatten()
    }
}

/// Only lowercase or uppercase hex, exactly 64 digits: what ngit writes. An npub here would
/// be one more spelling to compare, so it is refused.
fn parse_hex_pubkey(value: &str) -> Option<PublicKey> {
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| PublicKey::from_hex(value).ok())
        .flatten()
}

fn boundaries_status(boundaries: &[String]) -> RoleStatus {
    let last = boundaries.len().checked_sub(1);
    for (i, value) in boundaries.iter().enumerate() {
        let is_end_position = i % 2 == 1;
        let ok = if value == "defer" {
            Some(i) == last && is_end_position
        } else {
            !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value.parse::<u64>().is_ok()
        };
        if !ok {
            return RoleStatus::Malformed;
        }
    }
    // None, or an odd count (the last is a start): active. An even count ends with an end.
    if !boundaries.is_empty() && boundaries.len().is_multiple_of(2) {
        RoleStatus::Ended
    } else {
        RoleStatus::Active
    }
}

/// The role tags of one announcement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    /// Every role tag, in tag order. Empty for a legacy announcement.
    pub entries: Vec<RoleEntry>,
}

impl Roles {
    /// Reads the role tags of `event`.
    pub fn of(event: &Event) -> Self {
        Self { entries: event.tags.iter().filter_map(|t| RoleEntry::parse(t.as_slice())).collect() }
    }

    /// True when any role tag is present (even an unusable one): then the legacy
    /// `maintainers` tag is ignored.
    pub fn present(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Whether `author` (the announcement's signer) holds a maintaining role by this
    /// announcement: implicitly when no entry names them, otherwise only while one of their
    /// own `M`/`m` entries is active. An ended, deferred, malformed or moderator-only
    /// self-entry makes the author inactive.
    pub fn author_active(&self, author: &PublicKey) -> bool {
        let own: Vec<&RoleEntry> =
            self.entries.iter().filter(|e| e.subject.as_ref() == Some(author)).collect();
        own.is_empty() || own.iter().any(|e| e.role.maintains() && e.status == RoleStatus::Active)
    }

    /// Pubkeys with an active `M` or `m` entry, in tag order, without repeats.
    pub fn maintainers(&self) -> Vec<PublicKey> {
        distinct(self.entries.iter().filter(|e| e.role.maintains()).filter_map(RoleEntry::active_subject))
    }

    /// Pubkeys with an active `M` entry (lead pointers), in tag order, without repeats.
    pub fn leads(&self) -> Vec<PublicKey> {
        distinct(self.entries.iter().filter(|e| e.role == Role::Lead).filter_map(RoleEntry::active_subject))
    }
}

fn distinct(keys: impl Iterator<Item = PublicKey>) -> Vec<PublicKey> {
    let mut out: Vec<PublicKey> = Vec::new();
    for key in keys {
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn pk() -> String {
        nostr::Keys::generate().public_key().to_hex()
    }

    #[test]
    fn boundaries_decide_activity() {
        let k = pk();
        let cases: &[(&[&str], RoleStatus)] = &[
            (&[], RoleStatus::Active),
            (&["100"], RoleStatus::Active),
            (&["100", "200"], RoleStatus::Ended),
            (&["100", "200", "300"], RoleStatus::Active),
            (&["100", "defer"], RoleStatus::Ended),
            (&["defer"], RoleStatus::Malformed),
            (&["100", "defer", "300"], RoleStatus::Malformed),
            (&["wss://relay.example"], RoleStatus::Malformed),
            (&["-1"], RoleStatus::Malformed),
            (&[""], RoleStatus::Malformed),
            (&["99999999999999999999999"], RoleStatus::Malformed),
        ];
        for (boundaries, want) in cases {
            let mut values = vec!["m", k.as_str()];
            values.extend_from_slice(boundaries);
            assert_eq!(RoleEntry::parse(&tag(&values)).unwrap().status, *want, "{boundaries:?}");
        }
    }

    #[test]
    fn only_hex_pubkeys_name_someone() {
        let npub = "npub1sn0wdenkukak0d9dfczzeacvhkrgz92ak56egt7vdgzn8pv2wfqqhrjdv9";
        for subject in [npub, "zz", ""] {
            let entry = RoleEntry::parse(&tag(&["M", subject])).unwrap();
            assert_eq!(entry.subject, None);
            assert_eq!(entry.status, RoleStatus::Malformed);
        }
        assert!(RoleEntry::parse(&tag(&["M"])).unwrap().subject.is_none());
        assert!(RoleEntry::parse(&tag(&["x", &pk()])).is_none());
        assert!(RoleEntry::parse(&tag(&["maintainers", &pk()])).is_none());
    }

    #[test]
    fn author_activity_follows_their_own_entries() {
        let author = nostr::Keys::generate().public_key();
        let a = author.to_hex();
        let other = pk();
        let roles = |tags: &[&[&str]]| Roles {
            entries: tags.iter().filter_map(|t| RoleEntry::parse(&tag(t))).collect(),
        };
        assert!(roles(&[&["m", &other]]).author_active(&author), "implicit");
        assert!(roles(&[&["M", &a]]).author_active(&author));
        assert!(roles(&[&["m", &a, "100"]]).author_active(&author));
        assert!(!roles(&[&["m", &a, "100", "200"]]).author_active(&author), "left");
        assert!(!roles(&[&["m", &a, "100", "defer"]]).author_active(&author), "deferred");
        assert!(!roles(&[&["M", &a, "wss://r"]]).author_active(&author), "malformed");
        assert!(!roles(&[&["o", &a]]).author_active(&author), "moderator only");
        assert!(roles(&[&["m", &a, "1", "2"], &["M", &a]]).author_active(&author), "any active entry");
    }

    #[test]
    fn maintainers_and_leads_are_active_distinct_subjects() {
        let (a, b, c) = (pk(), pk(), pk());
        let entries = [
            tag(&["M", &a]),
            tag(&["m", &b]),
            tag(&["m", &b, "5"]),
            tag(&["o", &c]),
            tag(&["M", &c, "1", "2"]),
        ];
        let roles = Roles { entries: entries.iter().filter_map(|t| RoleEntry::parse(t)).collect() };
        let hex = |v: Vec<PublicKey>| v.into_iter().map(|k| k.to_hex()).collect::<Vec<_>>();
        assert_eq!(hex(roles.maintainers()), vec![a.clone(), b]);
        assert_eq!(hex(roles.leads()), vec![a]);
    }
}
