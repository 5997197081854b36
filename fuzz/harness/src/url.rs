//! Repository URLs and paths: `/<npub>/<identifier>.git`, clone and relay URLs, domains,
//! identifiers in URLs and coordinates.

use grasp_lib::git::{RepoRef, Repositories};
use grasp_lib::nip34::{RepoCoordinate, RepoIdentifier};
use grasp_lib::origin::{parse_repo_path, ServiceOrigin};

/// Every URL and path parser on the same text. What parses must round-trip, and a parsed
/// repository must live in exactly one directory under its owner's.
pub fn repo_url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    if let Some((owner, identifier)) = parse_repo_path(text) {
        check_identifier(&identifier);
        let repo = RepoRef::new(owner, identifier.clone());
        assert_eq!(parse_repo_path(&repo.url_path()), Some((owner, identifier)), "url_path round trip");
        let root = std::path::Path::new("/srv/git");
        let path = Repositories::new(root).path(&repo);
        let below: Vec<_> = path.strip_prefix(root).expect("under the root").components().collect();
        assert_eq!(below.len(), 2, "{} is not <npub>/<id>.git", path.display());
        assert!(below.iter().all(|c| matches!(c, std::path::Component::Normal(_))), "{}", path.display());
    }

    if let Ok(identifier) = RepoIdentifier::from_url_segment(text) {
        check_identifier(&identifier);
        let again =
            RepoIdentifier::from_url_segment(&identifier.url_encoded()).expect("encoded form decodes");
        assert_eq!(again, identifier);
    }

    if let Ok(origin) = ServiceOrigin::parse(text) {
        let again = ServiceOrigin::parse(&origin.authority()).expect("authority parses again");
        assert_eq!(again, origin);
    }

    let origin = ServiceOrigin::parse("git.example.com").expect("valid domain");
    if origin.is_clone_url(text) {
        let url = url::Url::parse(text.trim()).expect("a clone URL is a URL");
        assert!(
            parse_repo_path(url.path().trim_end_matches('/')).is_some(),
            "clone URL without a repository path"
        );
    }
    let _ = origin.is_relay_url(text);

    if let Some(coordinate) = RepoCoordinate::parse(text) {
        assert_eq!(RepoCoordinate::parse(&coordinate.to_string()), Some(coordinate), "coordinate round trip");
    }
}

fn check_identifier(identifier: &RepoIdentifier) {
    let raw = identifier.as_str();
    assert!(!raw.is_empty() && raw != "." && raw != "..");
    assert!(!raw.contains(['/', '\\']) && !raw.chars().any(char::is_control));
    assert!(raw.len() <= grasp_lib::nip34::MAX_IDENTIFIER_BYTES);
}
