//! What an event points at: addressable coordinates (`a`, `A`, `q` with a `:`) and event ids
//! (`e`, `E`, `q` without one). Relation checks in the acceptance policy are built on this.

use std::fmt;

use nostr::{Event, EventId, Kind, PublicKey};

/// Most references of each sort we look at in one event; more only cost lookups.
pub const MAX_REFERENCES: usize = 64;

/// An addressable-event coordinate `<kind>:<pubkey hex>:<d>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoCoordinate {
    /// Event kind (30617 for a repository).
    pub kind: u16,
    /// Author.
    pub pubkey: PublicKey,
    /// `d` tag value, verbatim (may itself contain `:`).
    pub identifier: String,
}

impl RepoCoordinate {
    /// The coordinate of a repository announcement.
    pub fn announcement(pubkey: PublicKey, identifier: &str) -> Self {
        Self { kind: super::kinds::REPO_ANNOUNCEMENT, pubkey, identifier: identifier.to_owned() }
    }

    /// Parses `<kind>:<pubkey>:<d>`; the `d` part is everything after the second colon.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.splitn(3, ':');
        let kind = parts.next()?.parse::<u16>().ok()?;
        let pubkey = PublicKey::from_hex(parts.next()?).ok()?;
        let identifier = parts.next()?.to_owned();
        Some(Self { kind, pubkey, identifier })
    }

    /// The coordinate of an addressable or replaceable event, if it has one.
    pub fn of_event(event: &Event) -> Option<Self> {
        let kind = event.kind;
        if kind.is_addressable() {
            let identifier = event.tags.identifier().unwrap_or_default().to_owned();
            Some(Self { kind: kind.as_u16(), pubkey: event.pubkey, identifier })
        } else if kind.is_replaceable() {
            Some(Self { kind: kind.as_u16(), pubkey: event.pubkey, identifier: String::new() })
        } else {
            None
        }
    }

    /// The event kind as a [`Kind`].
    pub fn kind(&self) -> Kind {
        Kind::from(self.kind)
    }
}

impl fmt::Display for RepoCoordinate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.pubkey.to_hex(), self.identifier)
    }
}

/// The coordinates and event ids an event references through `a`/`A`/`q` and `e`/`E`/`q`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventReferences {
    /// Referenced coordinates, deduplicated, at most [`MAX_REFERENCES`].
    pub coordinates: Vec<RepoCoordinate>,
    /// Referenced event ids, deduplicated, at most [`MAX_REFERENCES`].
    pub event_ids: Vec<EventId>,
}

impl EventReferences {
    /// Collects references from the event's tags. Malformed values are ignored.
    pub fn of(event: &Event) -> Self {
        let mut refs = Self::default();
        for tag in event.tags.iter() {
            let slice = tag.as_slice();
            let (Some(name), Some(value)) = (slice.first(), slice.get(1)) else {
                continue;
            };
            match name.as_str() {
                "a" | "A" => refs.add_coordinate(value),
                "e" | "E" => refs.add_event_id(value),
                "q" if value.contains(':') => refs.add_coordinate(value),
                "q" => refs.add_event_id(value),
                _ => {}
            }
        }
        refs
    }

    fn add_coordinate(&mut self, value: &str) {
        if self.coordinates.len() < MAX_REFERENCES {
            if let Some(c) = RepoCoordinate::parse(value) {
                if !self.coordinates.contains(&c) {
                    self.coordinates.push(c);
                }
            }
        }
    }

    fn add_event_id(&mut self, value: &str) {
        if self.event_ids.len() < MAX_REFERENCES && value.len() == 64 {
            if let Ok(id) = EventId::from_hex(value) {
                if !self.event_ids.contains(&id) {
                    self.event_ids.push(id);
                }
            }
        }
    }

    /// True when the event references nothing we could relate it to.
    pub fn is_empty(&self) -> bool {
        self.coordinates.is_empty() && self.event_ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Tag};

    use super::*;

    #[test]
    fn coordinate_keeps_colons_in_identifier() {
        let pk = Keys::generate().public_key();
        let c = RepoCoordinate::parse(&format!("30617:{}:a:b", pk.to_hex())).unwrap();
        assert_eq!(c.identifier, "a:b");
        assert_eq!(c.to_string(), format!("30617:{}:a:b", pk.to_hex()));
        assert!(RepoCoordinate::parse("30617:nothex:x").is_none());
        assert!(RepoCoordinate::parse("x:y").is_none());
    }

    #[test]
    fn q_tags_split_by_shape_and_all_letter_cases_count() {
        let pk = Keys::generate().public_key().to_hex();
        let id = "f".repeat(64);
        let coord = format!("30617:{pk}:repo");
        let tags = vec![
            vec!["a", coord.as_str()],
            vec!["A", coord.as_str()],
            vec!["q", coord.as_str()],
            vec!["q", id.as_str()],
            vec!["E", id.as_str()],
            vec!["e", "short"],
            vec!["p", id.as_str()],
        ];
        let ev = EventBuilder::new(Kind::Custom(1), "")
            .tags(tags.into_iter().map(|t| Tag::parse(t).unwrap()))
            .sign_with_keys(&Keys::generate())
            .unwrap();
        let refs = EventReferences::of(&ev);
        assert_eq!(refs.coordinates.len(), 1);
        assert_eq!(refs.event_ids, vec![EventId::from_hex(&id).unwrap()]);
    }
}
