//! Fetches the proxy answers from grasp-lib's response cache instead of forwarding them. A
//! clone storm through the stock stack costs nginx, fcgiwrap, `git http-backend` and
//! upload-pack per clone; a request seen before is answered here from the cached answer
//! (its second sighting generates that answer in this process). A first sighting, and
//! any request the cache does not take, is forwarded as before.
//!
//! The request body is read before deciding. pingora's retry buffer keeps what was read
//! and sends it upstream first when the request is forwarded after all, so only bodies
//! that fit that buffer (and the cache's own limit) are read ahead: their
//! `Content-Length` says so before a byte is read.

use grasp_lib::git::pack_cache::response::MAX_REQUEST;
use grasp_lib::git::smart_http;
use grasp_lib::git::RepoRef;
use grasp_lib::Grasp;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, EXPECT};
use pingora::proxy::Session;
use tokio::io::AsyncReadExt;

use crate::in_process;

/// Bytes pingora's retry buffer keeps (`BODY_BUF_LIMIT` in pingora-core); more and it drops
/// them all.
const RETRY_BUFFER: usize = 64 * 1024;

/// Answers `POST git-upload-pack` for `repo` from the response cache; `Ok(false)` when the
/// request is to be forwarded (with whatever body was read kept for the upstream).
pub async fn answer(grasp: &Grasp, session: &mut Session, repo: &RepoRef) -> pingora::Result<bool> {
    if !grasp.caches_answers() {
        return Ok(false);
    }
    let headers = &session.req_header().headers;
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if length.is_none_or(|length| length > MAX_REQUEST.min(RETRY_BUFFER)) {
        return Ok(false);
    }
    let encoding = headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let protocol =
        smart_http::sanitize_git_protocol(headers.get("git-protocol").and_then(|v| v.to_str().ok()));
    if headers
        .get(EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        session.write_continue_response().await?;
    }
    session.as_mut().enable_retry_buffering();
    let mut raw = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        raw.extend_from_slice(&chunk);
        if raw.len() > RETRY_BUFFER {
            // More than it said: pingora's buffer is gone, so the request cannot be
            // forwarded intact either.
            return Err(pingora::Error::explain(
                pingora::ErrorType::InvalidHTTPHeader,
                "request body longer than its Content-Length",
            ));
        }
    }
    let Some(request) = gunzipped(&raw, encoding.as_deref()).await else {
        // Not readable here: the upstream answers it as git would.
        return Ok(false);
    };
    match grasp.cached_upload_pack(repo, protocol.as_deref(), &request).await {
        Some(answer) => {
            in_process::send_upload_pack_answer(session, repo, answer).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The body as git reads it (at most [`MAX_REQUEST`] bytes), or `None`.
async fn gunzipped(raw: &[u8], encoding: Option<&str>) -> Option<Vec<u8>> {
    let mut body = smart_http::decode_body(raw, encoding).ok()?;
    let mut request = Vec::new();
    (&mut body).take(MAX_REQUEST as u64 + 1).read_to_end(&mut request).await.ok()?;
    (request.len() <= MAX_REQUEST).then_some(request)
}
