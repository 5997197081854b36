//! `POST git-receive-pack` through the proxy.
//!
//! Only the pkt-line command section is read from the client before deciding, with the
//! same `Grasp::admit_push` grasp-server calls (stored and held events). A refused push is
//! answered here, in a form `git push` prints, and never reaches the upstream. An
//! authorized push is forwarded unchanged: the bytes already read first, then the rest as
//! it arrives, never more than one chunk in memory; `max_push_size` is enforced on the
//! way, on the bytes git will read (a gzip body is inflated on the side to count them,
//! and cut off at the limit). When the upstream answers `200`, `Grasp::push_received` runs the git-data step
//! before the client sees the end of the answer, as in grasp-server, so the events a push
//! released are served by the time `git push` returns.
//!
//! This path uses pingora's HTTP client rather than its proxy pipeline: the pipeline has no
//! way to hand back request bytes a filter already read, and no async hook between the
//! last upstream byte and the last client byte.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use grasp_lib::git::pktline::PushCommands;
use grasp_lib::git::smart_http::{self, Decoded, DecodedLength, Service};
use grasp_lib::git::OperationStatus;
use grasp_lib::git::RepoRef;
use grasp_lib::push::{Admitted, PushLifecycle, ReceivePackError};
use grasp_lib::web;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::ErrorType;
use tokio_util::io::StreamReader;

use crate::app::GraspProxy;
use crate::client::{client_error, client_of};
use crate::respond;
use crate::upstream::failure_response;

/// Most of the upstream's answer held back before it is streamed on. receive-pack answers
/// are a few report-status lines; only the end of the answer must wait for the git-data
/// step.
const ANSWER_BUFFER: usize = 1024 * 1024;

/// The request body as a byte stream, copying every chunk into `consumed` as it is read:
/// whatever the command reader (and a gzip decoder in front of it) takes from the client
/// is forwarded from there.
fn recorded_body<'a>(
    session: &'a mut Session,
    consumed: &'a mut Vec<u8>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'a {
    futures::stream::unfold((session, consumed), |(session, consumed)| async move {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                consumed.extend_from_slice(&chunk);
                Some((Ok(chunk), (session, consumed)))
            }
            Ok(None) => None,
            Err(e) => Some((Err(client_error(&e)), (session, consumed))),
        }
    })
}

/// Answers a client whose request body stopped arriving (or broke off), counted by `push`.
async fn client_stalled(
    push: &mut PushLifecycle,
    session: &mut Session,
    reason: String,
) -> pingora::Result<()> {
    let error = push.stalled(reason);
    session.set_keepalive(None);
    respond::send(session, web::receive_pack_failed(error)).await
}

/// Reads and discards the rest of the request (at most `limit` bytes), so a client that
/// sends everything before reading gets to see the answer.
async fn drain(session: &mut Session, limit: u64) {
    let mut left = limit;
    while let Ok(Some(chunk)) = session.read_request_body().await {
        left = left.saturating_sub(chunk.len() as u64);
        if left == 0 {
            break;
        }
    }
}

/// Serves a push to `repo`, which is hosted here: the library's push lifecycle, with the
/// upstream receiving the pack.
pub async fn receive_pack(proxy: &GraspProxy, session: &mut Session, repo: &RepoRef) -> pingora::Result<()> {
    let grasp = &proxy.grasp;
    let client = client_of(session, grasp.config().trust_forwarded_for);
    let mut push = grasp.begin_push(repo, client);
    let header = |name| session.req_header().headers.get(name).and_then(|v| v.to_str().ok());
    let encoding = header(CONTENT_ENCODING).map(str::to_owned);
    if header(EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        session.write_continue_response().await?;
    }
    let mut consumed = Vec::new();
    let read = {
        let raw = StreamReader::new(Box::pin(recorded_body(session, &mut consumed)));
        match smart_http::decode_body(raw, encoding.as_deref()) {
            Ok(mut body) => Ok(push.read_commands(&mut body).await),
            Err(unsupported) => Err(unsupported),
        }
    };
    let commands = match read {
        Ok(Ok((commands, _pack_start))) => commands,
        Ok(Err(e @ ReceivePackError::ClientStalled(_))) => {
            session.set_keepalive(None);
            return respond::send(session, web::receive_pack_failed(e)).await;
        }
        Ok(Err(e)) => return respond::send(session, web::receive_pack_failed(e)).await,
        Err(unsupported) => {
            let answer = web::text(StatusCode::UNSUPPORTED_MEDIA_TYPE, unsupported.to_string());
            return respond::send(session, answer).await;
        }
    };
    push.received(consumed.len() as u64);
    match push.admit(&commands).await {
        Ok(Admitted::Go) => {
            forward(proxy, session, &mut push, &commands, encoding.as_deref(), consumed).await
        }
        Ok(Admitted::Refused(answer)) => {
            drain(session, push.drain_allowance()).await;
            respond::send(session, web::git_answer(Service::ReceivePack.result_content_type(), answer)).await
        }
        Err(e) => respond::send(session, web::receive_pack_failed(e)).await,
    }
}

/// Refuses an authorized push that went over `max_push_size`, once the client is done.
async fn refuse_too_large(
    session: &mut Session,
    push: &mut PushLifecycle,
    commands: &PushCommands,
) -> pingora::Result<()> {
    drain(session, push.drain_allowance()).await;
    let answer = push.too_large(commands);
    respond::send(session, web::git_answer(Service::ReceivePack.result_content_type(), answer)).await
}

/// How sending the request to the upstream ended.
enum Sent {
    /// All of it went; the byte count (as sent).
    Complete(u64),
    /// The push decodes to more than `max_push_size`.
    TooLarge,
    /// The body is not valid in its `Content-Encoding`.
    Malformed,
    /// The upstream failed (its answer may still explain why).
    Failed(Box<pingora::Error>),
    /// Reading from the client failed (it stalled or went away).
    ClientFailed(Box<pingora::Error>),
}

/// Sends the request upstream: its header, the bytes already read, then the rest, counting
/// what git will read (the decoded body) against `limit` before each chunk goes.
async fn send_request(
    proxy: &GraspProxy,
    session: &mut Session,
    upstream: &mut HttpSession,
    consumed: Vec<u8>,
    encoding: Option<&str>,
    limit: u64,
) -> Sent {
    let mut decoded = DecodedLength::new(encoding, limit);
    let mut request = session.req_header().clone();
    // The client's body is already flowing; do not make the upstream ask for it.
    request.remove_header(&EXPECT);
    // Always chunked towards the upstream, so a push cut short (too large, a stalled
    // client) can still be ended cleanly: git then sees the end of its input and gives up,
    // instead of waiting behind fcgiwrap for bytes that never come.
    request.remove_header(&CONTENT_LENGTH);
    if let Err(e) = request.insert_header(TRANSFER_ENCODING, "chunked") {
        return Sent::Failed(e);
    }
    if let Err(e) = proxy.upstream.rewrite(&mut request) {
        return Sent::Failed(e);
    }
    if let Err(e) = upstream.write_request_header(Box::new(request)).await {
        return Sent::Failed(e);
    }
    let mut sent = 0u64;
    let mut chunk = Bytes::from(consumed);
    loop {
        match decoded.feed(&chunk) {
            Decoded::Within(_) => {}
            Decoded::TooLarge => return Sent::TooLarge,
            Decoded::Malformed => return Sent::Malformed,
        }
        if !chunk.is_empty() {
            sent += chunk.len() as u64;
            if let Err(e) = upstream.write_request_body(chunk, false).await {
                return Sent::Failed(e);
            }
        }
        chunk = match session.read_request_body().await {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(e) => return Sent::ClientFailed(e),
        };
    }
    match upstream.finish_request_body().await {
        Ok(()) => Sent::Complete(sent),
        Err(e) => Sent::Failed(e),
    }
}

/// Longest wait for the upstream's answer to a push the proxy cut short.
const ABANDON_WAIT: Duration = Duration::from_secs(10);

/// Ends a push the proxy will not complete: the request body ends where it is (git
/// sees a truncated pack and stores nothing), and the upstream's answer is awaited a
/// little, so nginx hands git the end of its input before the connection goes.
async fn abandon(mut upstream: HttpSession) {
    let ended = async {
        upstream.finish_request_body().await?;
        upstream.read_response_header().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(ABANDON_WAIT, ended).await {
        tracing::debug!(error = %e, "the upstream did not answer an abandoned push");
    }
}

/// Forwards an authorized push and relays the upstream's answer, running the git-data step
/// before the answer ends.
async fn forward(
    proxy: &GraspProxy,
    session: &mut Session,
    push: &mut PushLifecycle,
    commands: &PushCommands,
    encoding: Option<&str>,
    consumed: Vec<u8>,
) -> pingora::Result<()> {
    let (grasp, repo, limit) = (&proxy.grasp, push.repo().clone(), push.limit());
    let declared =
        session.req_header().headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    if encoding.is_none() && declared.is_some_and(|length: u64| length > limit) {
        // Known to be too large before a byte went upstream.
        return refuse_too_large(session, push, commands).await;
    }
    let peer = proxy.upstream.peer();
    let mut upstream = match proxy.connector.get_http_session(&*peer).await {
        Ok((upstream, _reused)) => upstream,
        Err(e) => {
            tracing::warn!(repo = %repo, error = %e, "cannot reach the upstream for a push");
            drain(session, push.drain_allowance()).await;
            return respond::send(session, failure_response(&e)).await;
        }
    };
    let sent_bytes = match send_request(proxy, session, &mut upstream, consumed, encoding, limit).await {
        Sent::Complete(bytes) => Some(bytes),
        Sent::TooLarge => {
            // git gets a pack cut off in the middle: it discards what it got and updates no
            // ref.
            abandon(upstream).await;
            return refuse_too_large(session, push, commands).await;
        }
        Sent::Malformed => {
            abandon(upstream).await;
            push.finish(OperationStatus::BadRequest, 0, 0);
            session.set_keepalive(None);
            let answer = web::text(StatusCode::BAD_REQUEST, "the request body is not valid gzip");
            return respond::send(session, answer).await;
        }
        Sent::ClientFailed(e) => {
            // As for a push that is too large: nothing of it lands.
            abandon(upstream).await;
            if e.etype() == &ErrorType::ReadTimedout {
                let idle = proxy.limits.body_idle_timeout.as_secs();
                return client_stalled(push, session, format!("the client sent nothing for {idle} s")).await;
            }
            return Err(e);
        }
        Sent::Failed(e) => {
            tracing::debug!(repo = %repo, error = %e, "sending the push upstream failed");
            // The upstream may have answered early (and stopped reading); let the client
            // finish, then pass on whatever the upstream said.
            drain(session, push.drain_allowance()).await;
            None
        }
    };
    if let Err(e) = upstream.read_response_header().await {
        tracing::warn!(repo = %repo, error = %e, "the upstream did not answer a push");
        return respond::send(session, failure_response(&e)).await;
    }
    let header = upstream
        .response_header()
        .cloned()
        .unwrap_or_else(|| ResponseHeader::build(502, None).expect("static status"));
    let succeeded = header.status == StatusCode::OK && sent_bytes.is_some();
    let landed = &*push;
    let answered = relay_answer(session, &mut upstream, header, || async {
        if succeeded {
            landed.landed(&grasp.updates_in_effect(&repo, &commands.updates).await).await;
        } else {
            tracing::warn!(repo = %repo, "the upstream did not accept a push");
        }
    })
    .await;
    let status =
        if succeeded && answered.is_ok() { OperationStatus::Success } else { OperationStatus::Error };
    push.finish(status, sent_bytes.unwrap_or_default(), *answered.as_ref().unwrap_or(&0));
    if answered.is_ok() && upstream.response_done() {
        proxy.connector.release_http_session(upstream, &*peer, Some(Duration::from_secs(60))).await;
    }
    answered.map(|_| ())
}

/// Passes the upstream's answer to the client, holding back its end until `before_end` ran;
/// returns the length of the answer.
async fn relay_answer<F, Fut>(
    session: &mut Session,
    upstream: &mut HttpSession,
    mut header: ResponseHeader,
    before_end: F,
) -> pingora::Result<u64>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    respond::add_cors(&mut header)?;
    let mut held = Vec::new();
    let mut streaming = false;
    let mut length = 0u64;
    loop {
        let chunk = match upstream.read_response_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                // The answer broke off: the step still runs (git may have finished), and
                // the client sees an incomplete answer.
                before_end().await;
                return Err(e);
            }
        };
        length += chunk.len() as u64;
        if !streaming && held.len() + chunk.len() <= ANSWER_BUFFER {
            held.extend_from_slice(&chunk);
            continue;
        }
        if !streaming {
            // Too long to hold: stream it, with chunked framing chosen by the session.
            streaming = true;
            header.remove_header(&CONTENT_LENGTH);
            header.remove_header(&TRANSFER_ENCODING);
            session.write_response_header(Box::new(header.clone()), false).await?;
            session.write_response_body(Some(std::mem::take(&mut held).into()), false).await?;
        }
        session.write_response_body(Some(chunk), false).await?;
    }
    before_end().await;
    if !streaming {
        header.remove_header(&TRANSFER_ENCODING);
        header.set_content_length(held.len())?;
        session.write_response_header(Box::new(header), false).await?;
    }
    session.write_response_body(Some(held.into()), true).await?;
    Ok(length)
}
