//! A hosted repository whose events put markup and script in every field the repository
//! page shows (name, description, clone URLs, branch and tag names, held events), for
//! escaping tests. Any script that ran would set `window.__xss`.

use nostr_sdk::prelude::*;

use crate::git::Workdir;
use crate::{publish, TestServer};

/// The repository name: a script element.
pub const NAME: &str = "<script>window.__xss=true</script>";
/// The description: an element with an event handler.
pub const DESCRIPTION: &str = "<img src=x onerror=\"window.__xss=true\"> & 'quotes'";
/// A clone URL that would run script if it became a link.
pub const SCRIPT_URL: &str = "javascript:window.__xss=true";
/// A branch name git accepts that is also markup.
pub const BRANCH: &str = "<svg/onload=window.__xss=true>";
/// A tag name git accepts that is also markup.
pub const TAG: &str = "<img/src/onerror=window.__xss=true>";
/// A branch named only in a held state (shown in the purgatory section).
pub const HELD_BRANCH: &str = "<b>held</b>";

/// What [`host`] set up.
pub struct Hostile {
    /// The clone URL (the identifier percent-encoded).
    pub url: String,
    /// The owner.
    pub owner: Keys,
    /// A second maintainer (signs the held state).
    pub maintainer: Keys,
    /// The identifier (markup too).
    pub identifier: String,
    /// The pushed commit.
    pub commit: String,
}

fn tag(values: &[&str]) -> Tag {
    Tag::parse(values.iter().copied()).expect("valid tag")
}

/// Hosts the hostile repository on `server`: announcement, a state with markup ref names
/// pushed and served, and a newer state from a co-maintainer held in purgatory.
pub async fn host(server: &TestServer, client: &Client) -> Hostile {
    let owner = Keys::generate();
    let maintainer = Keys::generate();
    let identifier = "<i>hostile".to_owned();
    // Percent-encoded, as clients write identifiers with markup characters in URLs.
    let url = server.clone_url(&owner.public_key(), "%3Ci%3Ehostile");
    let announcement = EventBuilder::new(Kind::Custom(30617), "")
        .tags([
            tag(&["d", &identifier]),
            tag(&["name", NAME]),
            tag(&["description", DESCRIPTION]),
            tag(&["clone", &url, SCRIPT_URL]),
            tag(&["relays", &server.ws_url()]),
            tag(&["maintainers", &maintainer.public_key().to_hex()]),
        ])
        .sign_with_keys(&owner)
        .expect("sign");
    publish(client, &announcement).await.expect("announcement accepted");
    // The co-maintainer accepted the invitation (lists the owner back).
    let acceptance = EventBuilder::new(Kind::Custom(30617), "")
        .tags([tag(&["d", &identifier]), tag(&["maintainers", &owner.public_key().to_hex()])])
        .sign_with_keys(&maintainer)
        .expect("sign");
    publish(client, &acceptance).await.expect("acceptance accepted");

    let work = Workdir::new();
    let commit = work.commit("README", b"hostile");
    let now = Timestamp::now().as_secs();
    let branch = format!("refs/heads/{BRANCH}");
    let tag_ref = format!("refs/tags/{TAG}");
    let state = crate::events::state_at(
        &owner,
        &identifier,
        &[("refs/heads/main", &commit), (&branch, &commit), (&tag_ref, &commit)],
        Some("main"),
        Timestamp::from(now),
    );
    publish(client, &state).await.expect("state accepted");
    work.ok(&["push", &url, "main", &format!("main:{branch}"), &format!("main:{tag_ref}")]);

    let held_branch = format!("refs/heads/{HELD_BRANCH}");
    let missing = "ab".repeat(20);
    let held = crate::events::state_at(
        &maintainer,
        &identifier,
        &[("refs/heads/main", &commit), (&held_branch, &missing)],
        Some("main"),
        Timestamp::from(now + 1),
    );
    publish(client, &held).await.expect("held state accepted");
    Hostile { url, owner, maintainer, identifier, commit }
}
