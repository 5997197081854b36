//! Small HTML pages for people who open the server in a browser.

use grasp_lib::git::RepoRef;
use grasp_lib::summary::RepoSummary;
use grasp_lib::Grasp;

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

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title></head>\n<body style=\"font-family: sans-serif; max-width: 46em; margin: 2em auto; padding: 0 1em\">\n{body}\n</body></html>\n",
        escape(title)
    )
}

/// `GET /` in a browser.
pub fn landing(grasp: &Grasp) -> String {
    let config = grasp.config();
    let authority = escape(&grasp.origin().authority());
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
    page(&config.relay_name, &body)
}

/// `GET /<npub>/<identifier>.git` in a browser: how to clone, and the state it follows.
pub fn repository(grasp: &Grasp, repo: &RepoRef, summary: &RepoSummary) -> String {
    let ann = summary.announcement.as_ref();
    let title = ann.and_then(|a| a.name.clone()).unwrap_or_else(|| repo.identifier.to_string());
    // Prefer the clone URL the owner published for this server (it has the right scheme).
    let clone_url = ann
        .and_then(|a| a.clone_urls.iter().find(|u| grasp.origin().is_clone_url(u)).cloned())
        .unwrap_or_else(|| format!("{}{}", grasp.origin().http_url(), repo.url_path()));
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    if let Some(description) = ann.and_then(|a| a.description.as_deref()).filter(|d| !d.is_empty()) {
        body.push_str(&format!("<p>{}</p>\n", escape(description)));
    }
    body.push_str(&format!(
        "<p>Clone with git:</p>\n<pre>git clone {}</pre>\n\
         <p>Or with a Nostr git client: <code>nostr://{}/{}</code> (\
         <a href=\"https://gitworkshop.dev/{}/{}\">open in gitworkshop.dev</a>, \
         <a href=\"https://ngit.dev\">ngit</a>).</p>\n",
        escape(&clone_url),
        escape(&repo.npub()),
        escape(&repo.identifier.url_encoded()),
        escape(&repo.npub()),
        escape(&repo.identifier.url_encoded()),
    ));
    match &summary.state {
        Some(state) => {
            body.push_str(&format!(
                "<h2>Latest state</h2>\n<p>Signed {} by <code>{}</code>; HEAD: <code>{}</code></p>\n<table>\n",
                state.created_at.to_human_datetime(),
                escape(&state.author.to_hex()),
                escape(summary.head.as_deref().unwrap_or("-")),
            ));
            for (name, oid) in &state.refs {
                let here = if summary.refs.get(name) == Some(oid) { "" } else { " (waiting for git data)" };
                body.push_str(&format!(
                    "<tr><td><code>{}</code></td><td><code>{}</code>{here}</td></tr>\n",
                    escape(name),
                    escape(oid)
                ));
            }
            body.push_str("</table>\n");
        }
        None => body.push_str("<p>No state event from a maintainer yet: the repository is empty.</p>\n"),
    }
    page(&title, &body)
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
