//! The local API's messages: one JSON object per line, each carrying `"version": 1`.
//!
//! ```text
//! → {"version":1,"request":"authorize_push","repository":{"owner":"npub1…","identifier":"r"},"updates":["<old> <new> refs/heads/main"]}
//! ← {"version":1,"result":"rejected","reason":"no state event (kind 30618) from a maintainer …"}
//! ```
//!
//! A peer that speaks another version gets an `error` naming both versions, so a hook and a
//! node from different releases fail with a clear message instead of misreading each other.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// Largest request line the node reads (about 30,000 ref updates); longer ones are refused.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Largest response line a client reads.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Which repository a request is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryRef {
    /// The owner's `npub1…` (or 64-character hex public key).
    pub owner: String,
    /// The identifier (`d` tag) verbatim, not percent-encoded.
    pub identifier: String,
    /// The directory git runs the hook in. When given, the node refuses unless it is the
    /// very directory the node hosts for `owner`/`identifier`, so a push is never judged
    /// against another repository's refs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_dir: Option<PathBuf>,
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// May this push land? (`pre-receive`) Answered `authorized` or `rejected`.
    AuthorizePush {
        /// The repository pushed to.
        repository: RepositoryRef,
        /// The ref updates, each `<old> <new> <ref>` as git gives them to the hook.
        updates: Vec<String>,
        /// The pushing client's address, when the git server knows it (`REMOTE_ADDR` of
        /// `git http-backend`): pushes and placeholders are bounded per address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<std::net::IpAddr>,
    },
    /// Git stored this push (`post-receive`): run the git-data step. Answered `processed`.
    PushReceived {
        /// The repository pushed to.
        repository: RepositoryRef,
        /// The ref updates, each `<old> <new> <ref>`.
        updates: Vec<String>,
        /// The pushing client's address, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<std::net::IpAddr>,
    },
    /// Is the node there? Answered `pong`.
    Ping,
}

/// An event the git-data step released from purgatory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedId {
    /// Event id (hex).
    pub id: String,
    /// `announcement`, `state`, `pull_request` or `dependent`.
    pub kind: String,
}

/// What the node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The push may land.
    Authorized {
        /// The state event it matches (hex id), when it changes branches or tags.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<String>,
    },
    /// The push must be refused.
    Rejected {
        /// One line for the person pushing.
        reason: String,
    },
    /// The git-data step ran.
    Processed {
        /// Held events released (stored and served on the relay now).
        released: Vec<ReleasedId>,
        /// Repositories whose refs or HEAD were aligned to a state.
        aligned: usize,
        /// Repositories whose authoritative state still lacks objects.
        waiting: usize,
        /// Failures that did not stop the step.
        errors: Vec<String>,
    },
    /// The node is there.
    Pong {
        /// The node's grasp-lib version.
        node_version: String,
    },
    /// The request could not be served.
    Error {
        /// Why, as a sentence.
        message: String,
    },
}

/// Why a line is not a message of this protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, not an object, or not a known message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The object has no `version`.
    #[error("message has no \"version\" field (this side speaks version {PROTOCOL_VERSION})")]
    MissingVersion,
    /// The peer speaks another version.
    #[error("unsupported protocol version {0} (this side speaks version {PROTOCOL_VERSION})")]
    UnsupportedVersion(String),
    /// The line is longer than the receiving side accepts.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
}

/// `message` as one line: its JSON object with `"version"` added, and a newline.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(message).expect("protocol messages serialize");
    if let Value::Object(map) = &mut value {
        map.insert("version".to_owned(), Value::from(PROTOCOL_VERSION));
    }
    let mut line = serde_json::to_vec(&value).expect("JSON values serialize");
    line.push(b'\n');
    line
}

/// Reads one line (without its newline) as a message, checking the version first.
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, ProtocolError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(ProtocolError::Malformed("expected a JSON object".to_owned()));
    };
    match map.remove("version") {
        None => return Err(ProtocolError::MissingVersion),
        Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(other) => return Err(ProtocolError::UnsupportedVersion(other.to_string())),
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> RepositoryRef {
        RepositoryRef { owner: "npub1x".into(), identifier: "my repo".into(), git_dir: None }
    }

    #[test]
    fn messages_round_trip_as_single_lines() {
        let requests = [
            Request::AuthorizePush {
                repository: repo(),
                updates: vec!["a b refs/heads/main".into()],
                client: Some("2001:db8::1".parse().unwrap()),
            },
            Request::PushReceived {
                repository: RepositoryRef { git_dir: Some("/srv/x.git".into()), ..repo() },
                updates: vec![],
                client: None,
            },
            Request::Ping,
        ];
        for request in requests {
            let line = encode(&request);
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            assert!(line.ends_with(b"\n"));
            assert_eq!(decode::<Request>(&line[..line.len() - 1]).unwrap(), request);
        }
        let response = Response::Rejected { reason: "line one\nline two".into() };
        let line = encode(&response);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "newlines inside are escaped");
        assert_eq!(decode::<Response>(&line).unwrap(), response);
    }

    #[test]
    fn malformed_and_foreign_messages_are_refused_with_a_reason() {
        let bad: &[(&str, &str)] = &[
            ("not json", "malformed"),
            ("[1,2]", "JSON object"),
            (r#"{"request":"ping"}"#, "no \"version\""),
            (r#"{"version":2,"request":"ping"}"#, "unsupported protocol version 2"),
            (r#"{"version":"1","request":"ping"}"#, "unsupported protocol version \"1\""),
            (r#"{"version":1,"request":"format_disk"}"#, "unknown variant"),
            (r#"{"version":1}"#, "missing field `request`"),
            (
                r#"{"version":1,"request":"authorize_push","repository":{"owner":"x"},"updates":[]}"#,
                "identifier",
            ),
            (
                r#"{"version":1,"request":"authorize_push","repository":{"owner":"x","identifier":"y","evil":1},"updates":[]}"#,
                "unknown field",
            ),
        ];
        for (line, needle) in bad {
            let err = decode::<Request>(line.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }
}
