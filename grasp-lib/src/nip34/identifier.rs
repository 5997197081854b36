//! Repository identifiers (the `d` tag of a 30617) and how they appear in URLs and on disk.
//!
//! Identifiers are stored verbatim (UTF-8, no normalisation) so that two different
//! identifiers can never share a directory. In URLs they are percent-encoded (RFC 3986
//! §2.1); decoding accepts either hex case.

use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Longest identifier we host, in bytes: the repository's directory `<identifier>.git` must
/// fit in one file name (255 bytes on every common filesystem), or it could be accepted and
/// never created.
pub const MAX_IDENTIFIER_BYTES: usize = 255 - ".git".len();

/// Everything but RFC 3986 unreserved characters is encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Why an identifier cannot be hosted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// The identifier is the empty string.
    #[error("repository identifier is empty")]
    Empty,
    /// `.` or `..` would escape or alias the owner's directory.
    #[error("repository identifier may not be '.' or '..'")]
    DotPath,
    /// Longer than [`MAX_IDENTIFIER_BYTES`].
    #[error("repository identifier is longer than {MAX_IDENTIFIER_BYTES} bytes")]
    TooLong,
    /// Contains `/`, `\`, NUL or another control character.
    #[error("repository identifier may not contain '/', '\\', NUL or control characters")]
    ForbiddenCharacter,
    /// The URL form is not valid percent-encoded UTF-8.
    #[error("repository identifier in the URL is not valid percent-encoded UTF-8")]
    BadEncoding,
}

/// A repository identifier that is safe to use as a directory name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoIdentifier(String);

impl RepoIdentifier {
    /// Validates a raw identifier (the `d` tag value).
    pub fn new(raw: &str) -> Result<Self, IdentifierError> {
        if raw.is_empty() {
            return Err(IdentifierError::Empty);
        }
        if raw == "." || raw == ".." {
            return Err(IdentifierError::DotPath);
        }
        if raw.len() > MAX_IDENTIFIER_BYTES {
            return Err(IdentifierError::TooLong);
        }
        if raw.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
            return Err(IdentifierError::ForbiddenCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    /// Decodes the percent-encoded identifier of a URL path segment (without `.git`).
    pub fn from_url_segment(segment: &str) -> Result<Self, IdentifierError> {
        let decoded = percent_decode_str(segment).decode_utf8().map_err(|_| IdentifierError::BadEncoding)?;
        Self::new(&decoded)
    }

    /// The identifier exactly as published.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The percent-encoded form used in clone URLs.
    pub fn url_encoded(&self) -> String {
        utf8_percent_encode(&self.0, PATH_SEGMENT).to_string()
    }
}

impl fmt::Display for RepoIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_unicode_identifiers() {
        for ok in ["ngit", "my repo", "émoji-🦀", "a.b", "...", "x..y"] {
            assert_eq!(RepoIdentifier::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_path_tricks() {
        assert_eq!(RepoIdentifier::new(""), Err(IdentifierError::Empty));
        assert_eq!(RepoIdentifier::new("."), Err(IdentifierError::DotPath));
        assert_eq!(RepoIdentifier::new(".."), Err(IdentifierError::DotPath));
        for bad in ["a/b", "a\\b", "a\0b", "a\nb", "\u{7f}"] {
            assert_eq!(RepoIdentifier::new(bad), Err(IdentifierError::ForbiddenCharacter), "{bad:?}");
        }
        assert_eq!(RepoIdentifier::new(&"x".repeat(252)), Err(IdentifierError::TooLong));
        assert!(RepoIdentifier::new(&"x".repeat(251)).is_ok());
        // The longest one still makes a repository (and its staging directory).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("npub1x").join(format!("{}.git", "é".repeat(125) + "x"));
        assert!(crate::git::refs::init_bare(&path).unwrap());
    }

    #[test]
    fn url_round_trip_accepts_either_hex_case() {
        let id = RepoIdentifier::new("my repo/ish").err();
        assert!(id.is_some());
        let id = RepoIdentifier::new("my repo~ü").unwrap();
        assert_eq!(id.url_encoded(), "my%20repo~%C3%BC");
        assert_eq!(RepoIdentifier::from_url_segment("my%20repo~%c3%bc").unwrap(), id);
        assert_eq!(RepoIdentifier::from_url_segment("a%2Fb"), Err(IdentifierError::ForbiddenCharacter));
        assert_eq!(RepoIdentifier::from_url_segment("%2e%2E"), Err(IdentifierError::DotPath));
        assert_eq!(RepoIdentifier::from_url_segment("%ff"), Err(IdentifierError::BadEncoding));
    }
}
