//! The node's local API: how a git hook (or any program on the same machine) asks a running
//! GRASP node to decide about a push and to process the data a push brought.
//!
//! Held events live in the running node (purgatory is journaled by it and indexed in its
//! memory), so a `pre-receive` hook cannot decide on its own: it sends the push's ref
//! updates here and the node answers with the same decision the inline server makes
//! ([`crate::Grasp::admit_push`]). After git stored the push, `post-receive` sends the
//! updates again and the node runs the same git-data step as after an HTTP push
//! ([`crate::Grasp::push_received`]): held events are released and served on the relay,
//! co-maintainer repositories aligned, `refs/nostr/<id>` refs settled.
//!
//! **Transport**: a Unix domain socket, protected by file permissions: mode `0600` (only
//! the node's user) or `0660` with a configured group (the git server's user joins the
//! group). No token: the kernel checks who may connect, there is no secret to distribute,
//! rotate or leak, nothing listens on the network, and a connection costs no more than a
//! pipe. The socket is created in a private directory, given its mode and group, and only
//! then moved into place, so nobody can connect during the moment its mode is still the
//! default.
//!
//! **Protocol** (version [`PROTOCOL_VERSION`]): one JSON object per line in each direction
//! (request, then response), several requests per connection allowed. Requests are at most
//! [`MAX_REQUEST_BYTES`], responses at most [`MAX_RESPONSE_BYTES`]. See [`protocol`] and
//! `docs/reference/local-api.md`.
//!
//! ```no_run
//! use std::time::Duration;
//! use grasp_lib::git::pktline::RefUpdate;
//! use grasp_lib::local_api::{LocalApiClient, RepositoryRef};
//!
//! let client = LocalApiClient::new("/srv/grasp/relay/local-api.sock", Duration::from_secs(20));
//! let repository = RepositoryRef {
//!     owner: "npub1…".into(),
//!     identifier: "my-repo".into(),
//!     git_dir: None,
//! };
//! let updates = RefUpdate::parse_hook_input(&std::io::read_to_string(std::io::stdin())?)?;
//! let client_address = std::env::var("REMOTE_ADDR").ok().and_then(|a| a.parse().ok());
//! match client.authorize_push(&repository, &updates, client_address) {
//!     Ok(grasp_lib::authorization::PushDecision::Authorized { .. }) => std::process::exit(0),
//!     Ok(grasp_lib::authorization::PushDecision::Rejected { reason, .. }) => eprintln!("{reason}"),
//!     Err(e) => eprintln!("{e}"), // fail closed: the node is down or unreachable
//! }
//! std::process::exit(1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;
pub mod protocol;
mod server;

pub use client::{LocalApiClient, LocalApiError};
pub use protocol::{
    RepositoryRef, Request, Response, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PROTOCOL_VERSION,
};
pub use server::{serve, LocalApiOptions, LocalApiServer, ServeError};
