//! Which clone URLs the hunt may fetch from, and the domain a URL counts against.
//!
//! Clone URLs come from events, so an attacker chooses them. Only plain `http`/`https`
//! URLs with a host and without credentials are fetched, and never this server itself.

use url::Url;

use crate::origin::ServiceOrigin;

/// `url` parsed, when the hunt may fetch from it; otherwise why not.
pub fn fetchable(url: &str, origin: &ServiceOrigin) -> Result<Url, &'static str> {
    let parsed = Url::parse(url.trim()).map_err(|_| "not a URL")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("only http and https URLs are fetched");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("URLs with credentials are not fetched");
    }
    if origin.is_own(&parsed) {
        return Err("this server");
    }
    Ok(parsed)
}

/// The domain a URL's requests count against: its host, lower case, without a trailing dot
/// (every port of a host shares it: it is one machine).
pub fn domain(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    let host = parsed.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_of_other_servers() {
        let origin = ServiceOrigin::parse("git.example.com").unwrap();
        assert!(fetchable("https://other.example/npub1x/r.git", &origin).is_ok());
        assert!(fetchable(" http://other.example:8080/r.git ", &origin).is_ok());
        for bad in [
            "file:///etc/passwd",
            "ssh://other.example/r.git",
            "git://other.example/r.git",
            "ext::sh -c touch% /tmp/pwned",
            "https://user:pw@other.example/r.git",
            "https://GIT.example.com./npub1x/r.git",
            "/local/path",
            "",
        ] {
            assert!(fetchable(bad, &origin).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_ignore_case_port_and_trailing_dot() {
        assert_eq!(domain("https://Git.Example.COM./a.git").as_deref(), Some("git.example.com"));
        assert_eq!(domain("http://127.0.0.1:9000/a.git").as_deref(), Some("127.0.0.1"));
        assert_eq!(domain("not a url"), None);
    }
}
