//! The domain a hunted URL's requests count against. Which URLs may be fetched at all is
//! the [outbound policy](crate::outbound)'s to say.

use url::Url;

/// The domain a URL's requests count against: its registrable domain (`a1.evil.example`
/// and `a2.evil.example` share `evil.example`'s budget; `x.github.io` is its own, the
/// public suffix list says so), or for an IP literal the address (IPv6 by its /64). Every
/// port of a host shares it: it is one machine.
pub fn domain(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    match parsed.host()? {
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(crate::rate_limit::address_group(ip.into()).to_string()),
        url::Host::Domain(name) => {
            let host = name.trim_end_matches('.').to_ascii_lowercase();
            if host.is_empty() {
                return None;
            }
            Some(psl::domain_str(&host).map(str::to_owned).unwrap_or(host))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_registrable_domains_without_case_port_or_trailing_dot() {
        assert_eq!(domain("https://Git.Example.COM./a.git").as_deref(), Some("example.com"));
        assert_eq!(domain("https://a1.evil.example.com/x.git"), domain("https://a2.evil.example.com/y.git"));
        assert_eq!(domain("https://git.example.co.uk/a.git").as_deref(), Some("example.co.uk"));
        assert_ne!(domain("https://alice.github.io/a.git"), domain("https://bob.github.io/a.git"));
        assert_eq!(domain("http://127.0.0.1:9000/a.git").as_deref(), Some("127.0.0.1"));
        assert_eq!(domain("http://[2001:db8:1:2::5]/a.git"), domain("http://[2001:db8:1:2::9]:8080/b.git"));
        assert_eq!(domain("not a url"), None);
    }
}
