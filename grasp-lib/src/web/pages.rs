//! Small HTML pages for people who open the server in a browser.

use crate::git::RepoRef;
use crate::summary::RepoSummary;
use crate::Grasp;
use nostr::nips::nip19::ToBech32;
use nostr::PublicKey;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Pages carry no script: the policy forbids any, so even a markup mistake in escaped event
/// content could not run code. Styles are inline.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

const STYLE: &str =
    "body{font-family:sans-serif;max-width:52em;margin:2em auto;padding:0 1em;line-height:1.4}\
code,pre{font-size:.9em}pre{background:#f4f4f4;padding:.6em;overflow-x:auto}\
table{border-collapse:collapse}td,th{text-align:left;padding:.2em .8em .2em 0;vertical-align:top;overflow-wrap:anywhere}\
.muted{color:#666}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style>\
         <title>{}</title></head>\n<body>\n{body}\n</body></html>\n",
        escape(title)
    )
}

/// `GET /` in a browser.
pub fn landing(grasp: &Grasp) -> String {
    let config = grasp.config();
    let authority = escape(&grasp.origin().service_address());
    let body = format!(
        "<h1>{name}</h1>\n<p>{description}</p>\n\
         <p>This is a <a href=\"https://gitworkshop.dev/danconwaydev.com/grasp\">GRASP</a> server: \
         a Nostr relay at <code>ws(s)://{authority}</code> and git repositories at \
         <code>http(s)://{authority}/&lt;npub&gt;/&lt;identifier&gt;.git</code>. Pushes are accepted \
         when they match a repository state signed by the repository's maintainers.</p>\n\
         <p>Use a Nostr git client such as <a href=\"https://ngit.dev\">ngit</a> or \
         <a href=\"https://gitworkshop.dev\">gitworkshop.dev</a> to publish a repository here.</p>",
        name = escape(&config.relay_name),
        description = escape(&config.relay_description),
    );
    let body = if config.private_mode {
        format!(
            "{body}\n<p><strong>This service is private</strong> (GRASP-08): only its members can read \
             and publish. Clients authenticate with NIP-42 on the relay and NIP-98 on git.</p>"
        )
    } else {
        body
    };
    page(&config.relay_name, &body)
}

/// `GET /<npub>/<identifier>.git` in a browser: how to clone it, who maintains it, the
/// state it follows, what waits in purgatory, and where to view it in Nostr git clients.
/// Everything that comes from events is escaped, and none of it becomes a link target.
pub fn repository(grasp: &Grasp, repo: &RepoRef, summary: &RepoSummary) -> String {
    let ann = summary.announcement.as_ref();
    let title = ann
        .and_then(|a| a.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| repo.identifier.to_string());
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    if let Some(description) = ann.and_then(|a| a.description.as_deref()).filter(|d| !d.is_empty()) {
        body.push_str(&format!("<p>{}</p>\n", escape(description)));
    }
    if summary.announcement_held {
        body.push_str(
            "<p class=\"muted\">The announcement waits in purgatory: it is served once a push brings \
             the git data of a maintainer's state.</p>\n",
        );
    }
    body.push_str(&clone_section(grasp, repo, summary));
    body.push_str(&maintainers_section(repo, summary));
    body.push_str(&state_section(summary));
    body.push_str(&purgatory_section(summary));
    page(&title, &body)
}

fn clone_section(grasp: &Grasp, repo: &RepoRef, summary: &RepoSummary) -> String {
    let ann = summary.announcement.as_ref();
    let origin = grasp.origin();
    // Prefer the clone URL the owner published for this server (it has the right scheme).
    let clone_url = ann
        .and_then(|a| a.clone_urls.iter().find(|u| origin.is_clone_url(u)).cloned())
        .unwrap_or_else(|| format!("{}{}", origin.http_url(), repo.url_path()));
    let naddr = escape(&summary.naddr);
    let mut out = format!(
        "<h2>Clone</h2>\n<pre>git clone {}</pre>\n\
         <p>With <a href=\"https://ngit.dev\">ngit</a>: <code>git clone nostr://{}/{}</code></p>\n\
         <p>View in a Nostr git client: <a href=\"https://gitworkshop.dev/{naddr}\">gitworkshop.dev</a> \
         · <a href=\"nostr:{naddr}\">open with your Nostr app</a> · relay <code>{}</code></p>\n",
        escape(&clone_url),
        escape(&repo.npub()),
        escape(&repo.identifier.url_encoded()),
        escape(&summary.relay_url),
    );
    let mirrors: Vec<&String> =
        ann.map(|a| a.clone_urls.iter().filter(|u| !origin.is_clone_url(u)).collect()).unwrap_or_default();
    if !mirrors.is_empty() {
        out.push_str("<p>Also announced at:</p>\n<ul>\n");
        for url in mirrors {
            out.push_str(&format!("<li><code>{}</code></li>\n", escape(url)));
        }
        out.push_str("</ul>\n");
    }
    out
}

fn maintainers_section(repo: &RepoRef, summary: &RepoSummary) -> String {
    let mut out = String::from(
        "<h2>Maintainers</h2>\n<p class=\"muted\">States signed by these keys decide what a push \
         must contain.</p>\n",
    );
    if let Some(reason) = summary.no_authority {
        out.push_str(&format!("<p>Nobody can publish states for this repository: {}.</p>\n", escape(reason)));
    }
    out.push_str("<ul>\n");
    for key in &summary.maintainers {
        let role = if *key == repo.owner { " (owner)" } else { "" };
        out.push_str(&format!("<li><code>{}</code>{role}</li>\n", escape(&npub(key))));
    }
    for key in &summary.invited {
        out.push_str(&format!(
            "<li><code>{}</code> (invited: no authority until their own announcement lists a maintainer back)</li>\n",
            escape(&npub(key))
        ));
    }
    out.push_str("</ul>\n");
    out
}

fn state_section(summary: &RepoSummary) -> String {
    let Some(state) = &summary.state else {
        return "<h2>Latest state</h2>\n<p>No state event from a maintainer is served yet: \
                the repository is empty.</p>\n"
            .to_owned();
    };
    let head = state.head.as_deref().or(summary.head.as_deref()).unwrap_or("-");
    let mut out = format!(
        "<h2>Latest state</h2>\n<p>Signed {} by <code>{}</code>. HEAD: <code>{}</code></p>\n",
        state.created_at.to_human_datetime(),
        escape(&npub(&state.author)),
        escape(head),
    );
    for (heading, prefix) in [("Branches", "refs/heads/"), ("Tags", "refs/tags/")] {
        let refs: Vec<(&String, &String)> =
            state.refs.iter().filter(|(name, _)| name.starts_with(prefix)).collect();
        out.push_str(&format!("<h3>{heading}</h3>\n"));
        if refs.is_empty() {
            out.push_str("<p class=\"muted\">none</p>\n");
            continue;
        }
        out.push_str("<table>\n");
        for (name, oid) in refs {
            let mark = if Some(name.as_str()) == state.head.as_deref() { " (HEAD)" } else { "" };
            let here = if summary.refs.get(name) == Some(oid) {
                ""
            } else {
                " <span class=\"muted\">waiting for git data</span>"
            };
            out.push_str(&format!(
                "<tr><td><code>{}</code>{mark}</td><td><code>{}</code>{here}</td></tr>\n",
                escape(&name[prefix.len()..]),
                escape(oid),
            ));
        }
        out.push_str("</table>\n");
    }
    out
}

fn purgatory_section(summary: &RepoSummary) -> String {
    let mut out = String::from("<h2>Waiting in purgatory</h2>\n");
    if summary.held.is_empty() {
        out.push_str("<p class=\"muted\">Nothing is held for this repository.</p>\n");
        return out;
    }
    out.push_str(
        "<p class=\"muted\">Accepted events that are not served until their git data arrives.</p>\n\
         <table>\n<tr><th>What</th><th>Event</th><th>Author</th><th>Expires in</th><th>Waiting for</th>\
         <th>Next look at other servers</th></tr>\n",
    );
    for entry in &summary.held {
        let next_hunt = entry.next_hunt_in_secs.map_or_else(|| "-".to_owned(), |secs| format!("in {secs} s"));
        out.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{} min</td><td>{}</td><td>{}</td></tr>\n",
            escape(&entry.kind.replace('_', " ")),
            escape(&entry.event_id[..entry.event_id.len().min(16)]),
            escape(&entry.author),
            entry.expires_in_secs.div_ceil(60),
            escape(&entry.waiting_for),
            next_hunt,
        ));
    }
    out.push_str("</table>\n");
    out
}

fn npub(key: &PublicKey) -> String {
    key.to_bech32().expect("a public key always encodes as npub")
}

/// Any path that is not served.
pub fn not_found() -> String {
    page("Not found", "<h1>Not found</h1>\n<p>Nothing is hosted at this address.</p>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
