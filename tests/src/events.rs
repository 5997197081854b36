//! Signed NIP-34 events for tests. Every URL in them points at 127.0.0.1.

use nostr_sdk::prelude::*;

fn tag(values: &[&str]) -> Tag {
    Tag::parse(values.iter().copied()).expect("valid tag")
}

fn sign(keys: &Keys, kind: u16, content: &str, tags: Vec<Tag>) -> Event {
    EventBuilder::new(Kind::Custom(kind), content).tags(tags).sign_with_keys(keys).expect("sign")
}

/// A 30617 announcement with explicit `clone` and `relays` values.
pub fn announcement_with(
    keys: &Keys,
    identifier: &str,
    clone: &[String],
    relays: &[String],
    maintainers: &[PublicKey],
) -> Event {
    let mut tags = vec![tag(&["d", identifier]), tag(&["name", identifier])];
    if !clone.is_empty() {
        let mut t = vec!["clone"];
        t.extend(clone.iter().map(String::as_str));
        tags.push(tag(&t));
    }
    if !relays.is_empty() {
        let mut t = vec!["relays"];
        t.extend(relays.iter().map(String::as_str));
        tags.push(tag(&t));
    }
    if !maintainers.is_empty() {
        let hex: Vec<String> = maintainers.iter().map(PublicKey::to_hex).collect();
        let mut t = vec!["maintainers"];
        t.extend(hex.iter().map(String::as_str));
        tags.push(tag(&t));
    }
    sign(keys, 30617, "", tags)
}

/// A 30617 announcement that lists the server at `addr` (`127.0.0.1:<port>`) in both tags.
pub fn announcement(keys: &Keys, identifier: &str, addr: &str, maintainers: &[PublicKey]) -> Event {
    let npub = keys.public_key().to_bech32().expect("npub");
    announcement_with(
        keys,
        identifier,
        &[format!("http://{addr}/{npub}/{identifier}.git")],
        &[format!("ws://{addr}")],
        maintainers,
    )
}

/// A 30617 announcement with role tags (maintainer model v3): `roles` are (letter, pubkey)
/// pairs (`"M"` lead, `"m"` co-maintainer, `"o"` moderator), and the legacy `maintainers`
/// tag ngit 3 still writes lists every `M`/`m` pubkey, invitees included. Lists the server
/// at `addr` when given; signed at `created_at` so a replacement can be made newer.
pub fn announcement_roles(
    keys: &Keys,
    identifier: &str,
    addr: Option<&str>,
    roles: &[(&str, PublicKey)],
    created_at: Timestamp,
) -> Event {
    let npub = keys.public_key().to_bech32().expect("npub");
    let mut tags = vec![tag(&["d", identifier]), tag(&["name", identifier])];
    if let Some(addr) = addr {
        tags.push(tag(&["clone", &format!("http://{addr}/{npub}/{identifier}.git")]));
        tags.push(tag(&["relays", &format!("ws://{addr}")]));
    }
    let mut legacy = vec!["maintainers".to_owned()];
    for (letter, pubkey) in roles {
        tags.push(tag(&[letter, &pubkey.to_hex()]));
        if *letter != "o" {
            legacy.push(pubkey.to_hex());
        }
    }
    tags.push(Tag::parse(legacy).expect("valid tag"));
    EventBuilder::new(Kind::Custom(30617), "")
        .tags(tags)
        .custom_created_at(created_at)
        .sign_with_keys(keys)
        .expect("sign")
}

/// A 30618 state with the given refs (`refs/heads/x` → commit) and optional HEAD branch.
pub fn state(keys: &Keys, identifier: &str, refs: &[(&str, &str)], head: Option<&str>) -> Event {
    state_at(keys, identifier, refs, head, Timestamp::now())
}

/// [`state`] with an explicit `created_at`.
pub fn state_at(
    keys: &Keys,
    identifier: &str,
    refs: &[(&str, &str)],
    head: Option<&str>,
    created_at: Timestamp,
) -> Event {
    let mut tags = vec![tag(&["d", identifier])];
    tags.extend(refs.iter().map(|(name, oid)| tag(&[name, oid])));
    if let Some(branch) = head {
        tags.push(tag(&["HEAD", &format!("ref: refs/heads/{branch}")]));
    }
    EventBuilder::new(Kind::Custom(30618), "")
        .tags(tags)
        .custom_created_at(created_at)
        .sign_with_keys(keys)
        .expect("sign")
}

/// The `30617:<owner>:<d>` coordinate.
pub fn coordinate(owner: &PublicKey, identifier: &str) -> String {
    format!("30617:{}:{identifier}", owner.to_hex())
}

/// An event of `kind` with one tag `[letter, value]`, e.g. an issue (1621) tagging a repo.
pub fn tagged(keys: &Keys, kind: u16, letter: &str, value: &str) -> Event {
    sign(keys, kind, "hello", vec![tag(&[letter, value])])
}

/// An issue (1621) on a repository.
pub fn issue(keys: &Keys, repo_coordinate: &str) -> Event {
    sign(keys, 1621, "it is broken", vec![tag(&["a", repo_coordinate]), tag(&["subject", "bug"])])
}

/// A kind-1 note tagging nothing.
pub fn orphan(keys: &Keys) -> Event {
    sign(keys, 1, "not about any repository", vec![])
}

/// A NIP-09 deletion of event ids and coordinates.
pub fn deletion(keys: &Keys, ids: &[EventId], coordinates: &[String]) -> Event {
    let mut tags: Vec<Tag> = ids.iter().map(|id| tag(&["e", &id.to_hex()])).collect();
    tags.extend(coordinates.iter().map(|c| tag(&["a", c])));
    sign(keys, 5, "", tags)
}

/// A signed event as a JSON value (for raw websocket tests).
pub fn json(event: &Event) -> serde_json::Value {
    serde_json::from_str(&event.as_json()).expect("event JSON")
}

/// A pull request (1618) on `repo_coordinate` whose tip is `commit`.
pub fn pull_request(keys: &Keys, repo_coordinate: &str, commit: &str, clone_url: &str) -> Event {
    sign(
        keys,
        1618,
        "please merge",
        vec![
            tag(&["a", repo_coordinate]),
            tag(&["subject", "a change"]),
            tag(&["c", commit]),
            tag(&["clone", clone_url]),
        ],
    )
}

/// A pull request update (1619) of the pull request `pr` on `repo_coordinate`, whose new tip is
/// `commit`.
pub fn pull_request_update(
    keys: &Keys,
    repo_coordinate: &str,
    pr: &Event,
    commit: &str,
    clone_url: &str,
) -> Event {
    sign(
        keys,
        1619,
        "",
        vec![
            tag(&["a", repo_coordinate]),
            tag(&["E", &pr.id.to_hex()]),
            tag(&["P", &pr.pubkey.to_hex()]),
            tag(&["c", commit]),
            tag(&["clone", clone_url]),
        ],
    )
}
