//! The page a browser gets for a repository URL: clone URL, maintainers, the state it
//! follows, what waits in purgatory, links to Nostr git clients; and nothing from events is
//! ever markup. (tests/tests/browser.rs renders the same pages in chromium.)

use grasp_tests::events::{self, state_at};
use grasp_tests::{frontend_tests, host_repository, hostile, publish, Frontend};
use nostr_sdk::prelude::*;

async fn page(url: &str) -> (u16, String, String) {
    let resp = reqwest::get(url).await.expect("GET the repository page");
    let status = resp.status().as_u16();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (status, content_type, resp.text().await.unwrap())
}

/// The value of the first `href="<prefix>…"` in `html`.
fn link<'a>(html: &'a str, prefix: &str) -> &'a str {
    let start = html.find(&format!("href=\"{prefix}")).unwrap_or_else(|| panic!("no link to {prefix}")) + 6;
    let end = html[start..].find('"').unwrap() + start;
    &html[start..end]
}

async fn the_page_shows_clone_url_maintainers_state_held_events_and_client_links(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    let (maintainer, invitee) = (Keys::generate(), Keys::generate());
    host_repository(&server, &client, &owner, "shown", &[maintainer.public_key(), invitee.public_key()])
        .await;
    // The maintainer accepted (lists the owner back); the invitee has not.
    let accepted = events::announcement_with(&maintainer, "shown", &[], &[], &[owner.public_key()]);
    publish(&client, &accepted).await.expect("acceptance");
    let url = server.clone_url(&owner.public_key(), "shown");
    // A newer state whose commit is not here yet waits in purgatory.
    let missing = "cd".repeat(20);
    let later = Timestamp::from(Timestamp::now().as_secs() + 1);
    let held = state_at(&maintainer, "shown", &[("refs/heads/main", &missing)], Some("main"), later);
    publish(&client, &held).await.expect("held");

    let (status, content_type, html) = page(&url).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(html.contains(&format!("git clone {url}")), "{html}");
    for key in [&owner, &maintainer] {
        assert!(html.contains(&key.public_key().to_bech32().unwrap()), "maintainers are listed");
    }
    assert!(html.contains("(owner)"));
    let invited = format!("<code>{}</code> (invited", invitee.public_key().to_bech32().unwrap());
    assert!(html.contains(&invited), "the invitee is shown without authority: {html}");
    assert!(html.contains("<h3>Branches</h3>") && html.contains("<code>main</code> (HEAD)"), "{html}");
    assert!(html.contains("HEAD: <code>refs/heads/main</code>"), "{html}");
    assert!(html.contains("<h3>Tags</h3>"));
    let purgatory = &html[html.find("Waiting in purgatory").expect("purgatory section")..];
    assert!(purgatory.contains(&held.id.to_hex()[..16]), "the held state is listed: {purgatory}");
    assert!(purgatory.contains("refs/heads/main=cdcdcdc"), "with what would release it: {purgatory}");

    let gitworkshop = link(&html, "https://gitworkshop.dev/");
    let naddr = gitworkshop.trim_start_matches("https://gitworkshop.dev/");
    let coordinate = Nip19Coordinate::from_bech32(naddr).expect("an naddr");
    assert_eq!(coordinate.kind, Kind::Custom(30617));
    assert_eq!(coordinate.public_key, owner.public_key());
    assert_eq!(coordinate.identifier, "shown");
    assert_eq!(
        coordinate.relays[0].to_string().trim_end_matches('/'),
        server.ws_url(),
        "our relay is the hint"
    );
    assert_eq!(link(&html, "nostr:"), format!("nostr:{naddr}"));
}

async fn nothing_from_events_becomes_markup_or_a_link(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let repo = hostile::host(&server, &client).await;
    let (status, _, html) = page(&repo.url).await;
    assert_eq!(status, 200, "{html}");
    for raw in
        [hostile::NAME, hostile::BRANCH, hostile::TAG, hostile::HELD_BRANCH, "<img src=x", &repo.identifier]
    {
        assert!(!html.contains(raw), "{raw} appears unescaped:\n{html}");
    }
    for escaped in [
        "&lt;script&gt;window.__xss=true&lt;/script&gt;",
        "&lt;img src=x onerror=&quot;window.__xss=true&quot;&gt; &amp; &#39;quotes&#39;",
        "&lt;svg/onload=window.__xss=true&gt;",
        "&lt;img/src/onerror=window.__xss=true&gt;",
        "&lt;b&gt;held&lt;/b&gt;",
    ] {
        assert!(html.contains(escaped), "{escaped} is missing:\n{html}");
    }
    assert!(!html.contains("href=\"javascript:"), "a clone URL from an event never becomes a link");
    assert!(html.contains(&format!("<code>{}</code>", hostile::SCRIPT_URL)), "it is shown as text");
    assert!(html.contains("Content-Security-Policy"), "and the page forbids scripts anyway");
    assert!(html.contains(&repo.maintainer.public_key().to_bech32().unwrap()));
    assert!(html.contains(&repo.commit));
    assert!(html.contains(&repo.owner.public_key().to_bech32().unwrap()));
}

frontend_tests!(
    the_page_shows_clone_url_maintainers_state_held_events_and_client_links,
    nothing_from_events_becomes_markup_or_a_link,
);
