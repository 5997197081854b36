//! The client side, blocking: a hook is a short-lived process that asks one question and
//! exits, so it needs no async runtime.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{self, ProtocolError, RepositoryRef, Request, Response};
use crate::authorization::PushDecision;
use crate::git::pktline::RefUpdate;

/// Why the node gave no answer. Every variant means "refuse the push" in `pre-receive`.
#[derive(Debug, thiserror::Error)]
pub enum LocalApiError {
    /// Nothing serves the socket (node stopped, wrong path, no permission).
    #[error("cannot reach the GRASP node at {}: {reason}", socket.display())]
    Unreachable {
        /// The socket path tried.
        socket: PathBuf,
        /// What went wrong, with a hint.
        reason: String,
    },
    /// The node did not answer in time.
    #[error("the GRASP node at {} did not answer within {} s", socket.display(), after.as_secs_f64())]
    TimedOut {
        /// The socket path.
        socket: PathBuf,
        /// The timeout.
        after: Duration,
    },
    /// The answer was not a message of this protocol, or the connection broke.
    #[error("bad answer from the GRASP node: {0}")]
    Protocol(String),
    /// The node answered with an error.
    #[error("the GRASP node could not serve the request: {0}")]
    Node(String),
}

/// A client of one node's local API.
#[derive(Debug, Clone)]
pub struct LocalApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl LocalApiClient {
    /// A client for the socket at `socket`; each request must be answered within `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self { socket: socket.into(), timeout }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unreachable(&self, e: &io::Error) -> LocalApiError {
        let hint = match e.kind() {
            io::ErrorKind::NotFound => "no socket there: is the node running, and is this its local_api_socket?",
            io::ErrorKind::ConnectionRefused => "nothing listens on the socket: the node is not running",
            io::ErrorKind::PermissionDenied => {
                "permission denied: run the git server as the node's user, or set local_api_group on the node \
                 to a group of the git server's user"
            }
            _ => "",
        };
        let reason = if hint.is_empty() { e.to_string() } else { format!("{e} ({hint})") };
        LocalApiError::Unreachable { socket: self.socket.clone(), reason }
    }

    fn io_failure(&self, e: io::Error) -> LocalApiError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                LocalApiError::TimedOut { socket: self.socket.clone(), after: self.timeout }
            }
            _ => LocalApiError::Protocol(format!("connection failed: {e}")),
        }
    }

    /// Sends one request and reads its response (one connection per request).
    pub fn request(&self, request: &Request) -> Result<Response, LocalApiError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(&e))?;
        stream.set_read_timeout(Some(self.timeout)).map_err(|e| self.io_failure(e))?;
        stream.set_write_timeout(Some(self.timeout)).map_err(|e| self.io_failure(e))?;
        stream.write_all(&protocol::encode(request)).map_err(|e| self.io_failure(e))?;
        let mut line = Vec::new();
        let limit = protocol::MAX_RESPONSE_BYTES as u64 + 1;
        BufReader::new(&stream).take(limit).read_until(b'\n', &mut line).map_err(|e| self.io_failure(e))?;
        if line.last() != Some(&b'\n') {
            return Err(LocalApiError::Protocol(if line.len() as u64 >= limit {
                ProtocolError::TooLarge(protocol::MAX_RESPONSE_BYTES).to_string()
            } else {
                "the node closed the connection without answering".to_owned()
            }));
        }
        protocol::decode(&line[..line.len() - 1]).map_err(|e| LocalApiError::Protocol(e.to_string()))
    }

    fn updates(updates: &[RefUpdate]) -> Vec<String> {
        updates.iter().map(RefUpdate::to_string).collect()
    }

    /// Asks whether a push from `client` (its address, when known) may land (the
    /// `pre-receive` question).
    pub fn authorize_push(
        &self,
        repository: &RepositoryRef,
        updates: &[RefUpdate],
        client: Option<std::net::IpAddr>,
    ) -> Result<PushDecision, LocalApiError> {
        let request = Request::AuthorizePush {
            repository: repository.clone(),
            updates: Self::updates(updates),
            client,
        };
        match self.request(&request)? {
            Response::Authorized { state } => {
                let state = state.map(|s| nostr::EventId::from_hex(&s)).transpose();
                let state = state.map_err(|e| LocalApiError::Protocol(format!("bad state id: {e}")))?;
                Ok(PushDecision::Authorized { state })
            }
            Response::Rejected { reason } => Ok(PushDecision::rejected(reason)),
            Response::Error { message } => Err(LocalApiError::Node(message)),
            other => Err(LocalApiError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Tells the node git stored a push from `client` (the `post-receive` step); returns
    /// what it did.
    pub fn push_received(
        &self,
        repository: &RepositoryRef,
        updates: &[RefUpdate],
        client: Option<std::net::IpAddr>,
    ) -> Result<Response, LocalApiError> {
        let request =
            Request::PushReceived { repository: repository.clone(), updates: Self::updates(updates), client };
        match self.request(&request)? {
            processed @ Response::Processed { .. } => Ok(processed),
            Response::Error { message } => Err(LocalApiError::Node(message)),
            other => Err(LocalApiError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Checks that the node answers.
    pub fn ping(&self) -> Result<String, LocalApiError> {
        match self.request(&Request::Ping)? {
            Response::Pong { node_version } => Ok(node_version),
            Response::Error { message } => Err(LocalApiError::Node(message)),
            other => Err(LocalApiError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }
}
