//! A user's NIP-65 relay list (kind 10002), read for Sync Plus: where replies addressed to
//! them land (their **inbox**: `read` and unmarked relays) and where their own events are
//! (their **mailboxes**: `write` and unmarked relays first, then `read` ones). At most
//! [`PER_PURPOSE`] of each, in the order the user listed them, after dropping URLs nobody
//! should be dialed for.

use nostr::Event;

use crate::sync::peers::PeerUrl;

/// Relays taken from one list for one purpose.
pub const PER_PURPOSE: usize = 4;

/// Longest relay URL taken from a list.
const MAX_URL_BYTES: usize = 2048;

/// The parts of a kind 10002 Sync Plus uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayList {
    /// Where events addressed to the user are found.
    pub inbox: Vec<PeerUrl>,
    /// Where the user's own events are found (write relays first).
    pub mailbox: Vec<PeerUrl>,
}

/// Why a listed URL is skipped before the outbound policy sees it: a URL only a generator
/// would make (a 64-hex path segment: a per-user relay; a path that repeats the host), an
/// onion address, or one too long.
fn generated_or_unusable(url: &PeerUrl) -> bool {
    let value = url.as_str();
    if value.len() > MAX_URL_BYTES {
        return true;
    }
    let Ok(parsed) = url::Url::parse(value) else { return true };
    let host = parsed.host_str().unwrap_or_default();
    if host.ends_with(".onion") {
        return true;
    }
    parsed.path_segments().into_iter().flatten().any(|segment| {
        (segment.len() == 64 && segment.bytes().all(|b| b.is_ascii_hexdigit()))
            || (!segment.is_empty() && segment.eq_ignore_ascii_case(host))
    })
}

impl RelayList {
    /// Reads the `r` tags of `event` (a kind 10002). URLs that do not parse, that
    /// `allowed` refuses (the outbound policy's URL checks) or that look generated are
    /// skipped; a URL listed twice with different markers counts as unmarked.
    pub fn parse(event: &Event, allowed: impl Fn(&PeerUrl) -> bool) -> Self {
        #[derive(Clone, Copy, PartialEq)]
        enum Marker {
            Read,
            Write,
            Both,
        }
        let mut entries: Vec<(PeerUrl, Marker)> = Vec::new();
        for tag in event.tags.iter().map(|t| t.as_slice()) {
            if tag.first().map(String::as_str) != Some("r") {
                continue;
            }
            let Some(Ok(url)) = tag.get(1).map(|u| PeerUrl::parse(u)) else { continue };
            let marker = match tag.get(2).map(String::as_str) {
                Some("read") => Marker::Read,
                Some("write") => Marker::Write,
                _ => Marker::Both,
            };
            if generated_or_unusable(&url) || !allowed(&url) {
                continue;
            }
            match entries.iter_mut().find(|(u, _)| *u == url) {
                Some((_, existing)) if *existing != marker => *existing = Marker::Both,
                Some(_) => {}
                None => entries.push((url, marker)),
            }
        }
        let pick = |wanted: &[Marker]| -> Vec<PeerUrl> {
            entries.iter().filter(|(_, m)| wanted.contains(m)).map(|(u, _)| u.clone()).collect()
        };
        let mut inbox = pick(&[Marker::Read, Marker::Both]);
        inbox.truncate(PER_PURPOSE);
        let mut mailbox = pick(&[Marker::Write, Marker::Both]);
        mailbox.extend(pick(&[Marker::Read]));
        mailbox.truncate(PER_PURPOSE);
        Self { inbox, mailbox }
    }
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, Kind, Tag};

    use super::*;

    fn list(tags: &[&[&str]]) -> Event {
        EventBuilder::new(Kind::RelayList, "")
            .tags(tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap()))
            .sign_with_keys(&Keys::generate())
            .unwrap()
    }

    fn urls(list: &[PeerUrl]) -> Vec<&str> {
        list.iter().map(PeerUrl::as_str).collect()
    }

    #[test]
    fn markers_decide_inbox_and_mailbox_in_listed_order() {
        let event = list(&[
            &["r", "wss://read.example", "read"],
            &["r", "wss://write.example", "write"],
            &["r", "wss://both.example/"],
            &["r", "wss://READ2.example", "read"],
        ]);
        let parsed = RelayList::parse(&event, |_| true);
        assert_eq!(urls(&parsed.inbox), ["wss://read.example", "wss://both.example", "wss://read2.example"]);
        assert_eq!(
            urls(&parsed.mailbox),
            ["wss://write.example", "wss://both.example", "wss://read.example", "wss://read2.example"]
        );
    }

    #[test]
    fn at_most_four_per_purpose_and_duplicates_widen() {
        let mut tags: Vec<Vec<String>> =
            (0..9).map(|i| vec!["r".into(), format!("wss://r{i}.example"), "read".into()]).collect();
        tags.push(vec!["r".into(), "wss://r0.example".into(), "write".into()]);
        let refs: Vec<Vec<&str>> = tags.iter().map(|t| t.iter().map(String::as_str).collect()).collect();
        let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
        let parsed = RelayList::parse(&list(&slices), |_| true);
        assert_eq!(parsed.inbox.len(), PER_PURPOSE);
        assert_eq!(parsed.mailbox[0].as_str(), "wss://r0.example", "read + write = unmarked");
    }

    #[test]
    fn generated_refused_and_malformed_urls_take_no_slot() {
        let hex = "ab".repeat(32);
        let event = list(&[
            &["r", &format!("wss://relay.example/{hex}")],
            &["r", "wss://relay.example/relay.example"],
            &["r", "wss://abcdef.onion"],
            &["r", "https://not-a-relay.example"],
            &["r", "not a url"],
            &["r", "wss://refused.example"],
            &["r", "wss://fine.example"],
        ]);
        let parsed = RelayList::parse(&event, |u| u.as_str() != "wss://refused.example");
        assert_eq!(urls(&parsed.inbox), ["wss://not-a-relay.example", "wss://fine.example"]);
    }
}
