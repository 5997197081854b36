//! The `refs/nostr/<id>` rules (decision 11): which pull request refs a push may carry, and
//! how many placeholders (refs for events not known here yet) it may make.

use std::collections::HashMap;

use nostr::{Event, EventId};

use super::decision::{PushBound, PushDecision};
use super::view::{Named, PlaceholderRoom};
use crate::git::pktline::RefUpdate;
use crate::nip34::is_object_id;

/// The caps on placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceholderCaps {
    /// Most `refs/nostr` refs in one push.
    pub per_push: usize,
    /// Most placeholders waiting in one repository.
    pub per_repository: usize,
    /// Most placeholders one client address group has waiting, across repositories.
    pub per_client: usize,
}

impl Default for PlaceholderCaps {
    fn default() -> Self {
        Self { per_push: 32, per_repository: 100, per_client: 100 }
    }
}

/// What the `refs/nostr/<id>` rules look at: what the pushed ids name, the placeholders
/// around the push and their caps.
#[derive(Debug, Clone, Copy)]
pub struct NostrRefContext<'a> {
    /// What the pushed ids name here (absent: unknown).
    pub named: &'a HashMap<EventId, Named>,
    /// The placeholders around the push.
    pub room: &'a PlaceholderRoom,
    /// How many placeholders a push, a repository and a client may make.
    pub caps: PlaceholderCaps,
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(7)]
}

/// Why pushing `pushed` to the `refs/nostr/<id>` ref `name` does not meet the known pull
/// request event whose `c` tag is `commit` (as written), if it does not.
pub fn pull_request_commit_mismatch(name: &str, commit: Option<&str>, pushed: &str) -> Option<String> {
    let Some(commit) = commit else {
        return Some(format!("{name}: the pull request event has no 'c' tag naming its tip commit"));
    };
    if !is_object_id(commit) {
        return Some(format!(
            "{name}: the pull request event's 'c' tag ({commit:?}) is not a full commit id, so no push \
             can match it; publish a corrected event"
        ));
    }
    if !commit.eq_ignore_ascii_case(pushed) {
        return Some(format!(
            "{name}: the pull request event names commit {} but you pushed {}; push the commit in its 'c' tag",
            short(commit),
            short(pushed)
        ));
    }
    None
}

/// The event id of a `refs/nostr/<id>` ref, if the name has that shape.
pub fn nostr_ref_id(name: &str) -> Option<EventId> {
    let id = name.strip_prefix("refs/nostr/")?;
    let valid = id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then(|| EventId::from_hex(id).ok()).flatten()
}

/// The `refs/nostr/<id>` rules (decision 11), for the `refs/nostr` updates among a push's
/// changes (no-ops left out): the ref must be named after an event id and not be deleted;
/// a known pull request must meet the push (`pull_request_mismatch` says why not); an id of
/// any other known event is refused; and the placeholders the unknown ids make must fit
/// the caps. `None` when the updates may land, otherwise the refusal.
pub fn nostr_ref_rules(
    updates: &[&RefUpdate],
    ctx: &NostrRefContext<'_>,
    pull_request_mismatch: impl Fn(&str, &Event, &RefUpdate) -> Option<String>,
) -> Option<PushDecision> {
    let caps = ctx.caps;
    let refuse = |why: String| Some(PushDecision::rejected(why));
    if updates.len() > caps.per_push {
        return Some(PushDecision::bounded(
            PushBound::NostrRefsPerPush,
            format!(
                "this push carries {} refs/nostr refs; this server takes at most {} in one push \
             (max_nostr_refs_per_push): push them in smaller batches",
                updates.len(),
                caps.per_push
            ),
        ));
    }
    let mut new_placeholders = 0;
    for update in updates {
        let name = update.name.as_str();
        let Some(id) = nostr_ref_id(name) else {
            return refuse(format!(
                "{name}: pull request refs must be refs/nostr/<64-character lowercase hex event id>"
            ));
        };
        if update.is_delete() {
            return refuse(format!("{name}: pull request refs cannot be deleted by a push"));
        }
        match ctx.named.get(&id) {
            Some(Named::PullRequest(event)) => {
                if let Some(why) = pull_request_mismatch(name, event, update) {
                    return refuse(why);
                }
            }
            Some(Named::Other(kind)) => {
                return refuse(format!(
                    "{name}: {} names a kind {} event here, not a pull request; only the commit of a pull \
                     request (kind 1618) or pull request update (kind 1619) goes under refs/nostr/",
                    id.to_hex(),
                    kind.as_u16()
                ))
            }
            Some(Named::Deleted) => {
                return refuse(format!("{name}: the event {} was deleted by its author", id.to_hex()))
            }
            None if ctx.room.waiting.contains(&id) => {}
            None => new_placeholders += 1,
        }
    }
    if new_placeholders == 0 {
        return None;
    }
    if ctx.room.in_repository + new_placeholders > caps.per_repository {
        return Some(PushDecision::bounded(PushBound::PlaceholdersPerRepository, format!(
            "this repository already has {} refs/nostr refs waiting for their pull request event (at most {}: \
             max_placeholders_per_repository); publish the pull request events first, or wait for the \
             waiting refs to expire",
            ctx.room.in_repository, caps.per_repository
        )));
    }
    if ctx.room.of_client.is_some_and(|n| n + new_placeholders > caps.per_client) {
        return Some(PushDecision::bounded(
            PushBound::PlaceholdersPerClient,
            format!(
            "your address already has {} refs/nostr refs waiting for their pull request event on this server \
             (at most {}: max_placeholders_per_client); publish the pull request events first",
            ctx.room.of_client.unwrap_or_default(),
            caps.per_client
        ),
        ));
    }
    None
}

/// The `refs/nostr` updates of a push (no-ops left out).
pub(super) fn nostr_updates(updates: &[RefUpdate]) -> Vec<&RefUpdate> {
    updates.iter().filter(|u| !u.is_noop() && u.name.starts_with("refs/nostr/")).collect()
}
