//! What a push gets told, and the bounds of reading it: the command section, the refusal
//! forms `git push` prints, and how much of a refused body is drained.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::authorization::AuthorizationError;
use crate::git::pktline::{self, PktLineError, PushCommands};
use crate::git::smart_http::{self, Body};
use crate::git::RepoRef;

/// Largest command section (ref updates) we read before deciding.
const MAX_COMMAND_BYTES: usize = 8 * 1024 * 1024;

/// How much of a refused request body we read and discard so the client gets to read our
/// answer (git only reads the response after sending everything). Beyond this the
/// connection is simply closed.
const MIN_DRAIN_BYTES: u64 = 1024 * 1024 * 1024;

/// Why a receive-pack request got no git answer.
#[derive(Debug, thiserror::Error)]
pub enum ReceivePackError {
    /// The request is not a valid receive-pack request (answer 400).
    #[error("{0}")]
    BadRequest(String),
    /// Something failed on our side (answer 500).
    #[error("{0}")]
    Internal(String),
    /// The client stopped sending in the middle of its request for longer than
    /// `body_idle_timeout_secs`; nothing of the push landed (answer 408, close).
    #[error("{0}")]
    ClientStalled(String),
}

impl From<AuthorizationError> for ReceivePackError {
    fn from(e: AuthorizationError) -> Self {
        ReceivePackError::Internal(format!("could not authorize the push: {e}"))
    }
}

/// Reads and discards what is left of a request body (at most `limit` bytes), so the client
/// finishes sending and reads our answer instead of failing on a closed connection.
pub(super) async fn drain(body: &mut Body, limit: u64) {
    let _ = tokio::io::copy(&mut body.take(limit), &mut tokio::io::sink()).await;
}

/// Reads only the command section of a receive-pack request from `body`: the commands and
/// the bytes read past them (the start of the pack, which belongs to git). What a frontend
/// needs before it can ask [`Grasp::admit_push`].
pub async fn read_push_commands<R: AsyncRead + Unpin>(
    body: &mut R,
) -> Result<(PushCommands, Vec<u8>), ReceivePackError> {
    pktline::read_push_commands(body, MAX_COMMAND_BYTES).await.map_err(|e| match e {
        PktLineError::Stalled(reason) => ReceivePackError::ClientStalled(reason),
        e => ReceivePackError::BadRequest(e.to_string()),
    })
}

/// How much of a refused push a frontend reads and discards before it answers, so the
/// client (which sends everything before it reads) gets to see the refusal.
pub fn drain_allowance(max_push_size: u64) -> u64 {
    max_push_size.max(MIN_DRAIN_BYTES)
}

/// The answer to a push that [`Grasp::admit_push`] rejected for `reason`, in the form the
/// client asked for, so `git push` prints it next to each ref.
pub fn rejection(commands: &PushCommands, reason: &str) -> Vec<u8> {
    smart_http::rejection_response(commands, &format!("rejected by GRASP: {reason}"))
}

/// The answer to a push to `repo` over its size limit ([`Grasp::push_size_limit`]).
pub fn too_large(commands: &PushCommands, repo: &RepoRef, limit: u64) -> Vec<u8> {
    let option = if repo.is_prs() { "prs_max_push_size" } else { "max_push_size" };
    let reason = format!("push is larger than the {limit} bytes this server accepts ({option})");
    smart_http::rejection_response(commands, &reason)
}
