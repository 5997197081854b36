//! Small HTML pages for people who open the server in a browser.

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
