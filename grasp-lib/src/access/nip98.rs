//! NIP-98 HTTP authentication for git over HTTP on a private service: a kind-27235 event,
//! base64 in the `Authorization` header, signed by a member for one repository.
//!
//! The profile clients use (ngit 3, and other private GRASP servers): the `u` tag is the
//! repository's root URL (`http(s)://<origin>/<npub>/<identifier>.git`) for every request
//! of a clone or push, the `method` tag is `GET` for all of them (POSTs included), and the
//! event is at most a minute old or ahead; one credential serves every request of an
//! operation within that minute. It comes as `Authorization: Nostr <base64>`, or as the
//! password of HTTP Basic, which is all git's credential helpers and libgit2 can send.

use base64::Engine as _;
use nostr::{Event, JsonUtil, Keys, Kind, PublicKey, Tag, Timestamp};

use crate::git::RepoRef;
use crate::origin::{parse_repo_path, ServiceOrigin};

/// How far `created_at` may be from now, either way.
pub const MAX_SKEW_SECS: u64 = 60;

/// Longest `Authorization` header looked at (a credential is a few hundred bytes).
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Why a credential does not admit (the client is never told which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not kind 27235, or the id or signature do not verify.
    #[error("not a valid kind 27235 event")]
    Invalid,
    /// `created_at` too far from now.
    #[error("created_at is more than {MAX_SKEW_SECS} seconds from now")]
    Stale,
    /// The `u` tag is not this repository's root URL (or there is not exactly one).
    #[error("the u tag does not name this repository")]
    Url,
    /// The `method` tag is not `GET` (or there is not exactly one).
    #[error("the method tag is not GET")]
    Method,
}

fn decode(token: &str) -> Option<Vec<u8>> {
    let token = token.trim();
    base64::engine::general_purpose::STANDARD
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(token))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')))
        .ok()
}

/// The event an `Authorization` header carries: `Nostr <base64 event>`, or `Basic` whose
/// password is that base64 (any user name).
pub fn credential(header: &str) -> Option<Event> {
    if header.len() > MAX_HEADER_BYTES {
        return None;
    }
    let (scheme, value) = header.trim().split_once(' ')?;
    let token = if scheme.eq_ignore_ascii_case("nostr") {
        value.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let pair = String::from_utf8(decode(value)?).ok()?;
        pair.split_once(':')?.1.to_owned()
    } else {
        return None;
    };
    Event::from_json(decode(&token)?).ok()
}

/// The single value of the tags named `name` (`None` when there is not exactly one).
fn only_value<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    let mut values = event
        .tags
        .iter()
        .map(Tag::as_slice)
        .filter(|t| t.first().map(String::as_str) == Some(name))
        .map(|t| t.get(1).map(String::as_str));
    let value = values.next()??;
    values.next().is_none().then_some(value)
}

/// The key `event` proves for a request to `repo` at `origin` (where clients reach it).
pub fn verify(
    event: &Event,
    repo: &RepoRef,
    origin: &ServiceOrigin,
    now: Timestamp,
) -> Result<PublicKey, Refusal> {
    if event.kind != Kind::HttpAuth || event.verify().is_err() {
        return Err(Refusal::Invalid);
    }
    if event.created_at.as_secs().abs_diff(now.as_secs()) > MAX_SKEW_SECS {
        return Err(Refusal::Stale);
    }
    let named = only_value(event, "u")
        .filter(|u| origin.is_clone_url(u))
        .and_then(|u| url::Url::parse(u.trim()).ok())
        .and_then(|u| origin.strip_base(u.path().trim_end_matches('/')).and_then(parse_repo_path));
    if repo.is_prs() || named != Some((repo.owner, repo.identifier.clone())) {
        return Err(Refusal::Url);
    }
    if only_value(event, "method") != Some("GET") {
        return Err(Refusal::Method);
    }
    Ok(event.pubkey)
}

/// The repository root URL a credential names for a git URL: everything up to and
/// including its last `.git` path segment end (identifiers may contain `.git`).
pub fn repository_root(git_url: &str) -> &str {
    let path_start = git_url.find("://").map_or(0, |i| i + 3);
    match git_url[path_start..].rfind(".git") {
        Some(i) => &git_url[..path_start + i + 4],
        None => git_url.trim_end_matches('/'),
    }
}

/// `Nostr <base64>`: a credential signed by `keys` for the repository at `git_url` (the
/// header value this server sends when it fetches from another private server).
pub fn header_for(keys: &Keys, git_url: &str) -> Option<String> {
    let event = nostr::EventBuilder::new(Kind::HttpAuth, "")
        .tags([Tag::parse(["u", repository_root(git_url)]).ok()?, Tag::parse(["method", "GET"]).ok()?])
        .sign_with_keys(keys)
        .ok()?;
    Some(format!("Nostr {}", base64::engine::general_purpose::STANDARD.encode(event.as_json())))
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::ToBech32;
    use nostr::EventBuilder;

    use super::*;
    use crate::nip34::RepoIdentifier;

    fn origin() -> ServiceOrigin {
        ServiceOrigin::parse("127.0.0.1:7000").unwrap()
    }

    fn repo(owner: &Keys, id: &str) -> RepoRef {
        RepoRef::new(owner.public_key(), RepoIdentifier::new(id).unwrap())
    }

    fn token(keys: &Keys, u: &str, method: &str, at: Timestamp) -> Event {
        EventBuilder::new(Kind::HttpAuth, "")
            .tags([Tag::parse(["u", u]).unwrap(), Tag::parse(["method", method]).unwrap()])
            .custom_created_at(at)
            .sign_with_keys(keys)
            .unwrap()
    }

    #[test]
    fn a_credential_for_the_repository_root_admits_every_request_of_it() {
        let (member, owner) = (Keys::generate(), Keys::generate());
        let npub = owner.public_key().to_bech32().unwrap();
        let now = Timestamp::now();
        for u in [
            format!("http://127.0.0.1:7000/{npub}/tools.git"),
            format!("https://127.0.0.1:7000/{npub}/tools.git/"),
        ] {
            let event = token(&member, &u, "GET", now);
            assert_eq!(
                verify(&event, &repo(&owner, "tools"), &origin(), now),
                Ok(member.public_key()),
                "{u}"
            );
        }
        let dotted = token(&member, &format!("http://127.0.0.1:7000/{npub}/a.git-b.git"), "GET", now);
        assert!(verify(&dotted, &repo(&owner, "a.git-b"), &origin(), now).is_ok());
    }

    #[test]
    fn wrong_url_method_time_or_signature_is_refused() {
        let (member, owner) = (Keys::generate(), Keys::generate());
        let npub = owner.public_key().to_bech32().unwrap();
        let root = format!("http://127.0.0.1:7000/{npub}/tools.git");
        let now = Timestamp::now();
        let target = repo(&owner, "tools");
        let check = |e: &Event| verify(e, &target, &origin(), now);
        assert_eq!(check(&token(&member, &format!("{root}/info/refs"), "GET", now)), Err(Refusal::Url));
        assert_eq!(
            check(&token(&member, &format!("http://127.0.0.1:7000/{npub}/other.git"), "GET", now)),
            Err(Refusal::Url)
        );
        assert_eq!(
            check(&token(&member, &format!("http://127.0.0.1:7001/{npub}/tools.git"), "GET", now)),
            Err(Refusal::Url)
        );
        assert_eq!(check(&token(&member, &root, "POST", now)), Err(Refusal::Method));
        let old = Timestamp::from(now.as_secs() - MAX_SKEW_SECS - 1);
        assert_eq!(check(&token(&member, &root, "GET", old)), Err(Refusal::Stale));
        let mut forged = token(&member, &root, "GET", now);
        forged.pubkey = owner.public_key();
        assert_eq!(check(&forged), Err(Refusal::Invalid));
        let prs = RepoRef::prs(owner.public_key(), RepoIdentifier::new("tools").unwrap());
        assert_eq!(verify(&token(&member, &root, "GET", now), &prs, &origin(), now), Err(Refusal::Url));
    }

    #[test]
    fn headers_carry_the_credential_as_nostr_or_as_the_basic_password() {
        let keys = Keys::generate();
        let owner = Keys::generate().public_key().to_bech32().unwrap();
        let url = format!("http://127.0.0.1:7000/{owner}/x.git/info/refs");
        let header = header_for(&keys, &url).unwrap();
        let event = credential(&header).unwrap();
        assert_eq!(event.pubkey, keys.public_key());
        assert_eq!(only_value(&event, "u"), Some(repository_root(&url)));
        let b64 = header.strip_prefix("Nostr ").unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("nostr:{b64}"));
        assert_eq!(credential(&format!("Basic {basic}")).unwrap().id, event.id);
        assert!(credential("Bearer abc").is_none());
        assert!(credential("Nostr !!!").is_none());
        assert!(credential(&format!("Nostr {}", "A".repeat(MAX_HEADER_BYTES))).is_none());
    }

    #[test]
    fn the_repository_root_ends_at_the_last_dot_git() {
        assert_eq!(repository_root("http://h/n/a.git/info/refs"), "http://h/n/a.git");
        assert_eq!(
            repository_root("http://h/n/a.git-tools.git/git-upload-pack"),
            "http://h/n/a.git-tools.git"
        );
        assert_eq!(repository_root("https://h/n/a.git"), "https://h/n/a.git");
    }
}
