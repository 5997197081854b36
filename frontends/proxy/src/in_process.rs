//! Git requests the proxy serves itself, with grasp-lib running git, instead of forwarding
//! them: the GRASP-06 `/prs/` namespace. Its repositories are created by the first push the
//! library lets in, a path nobody pushed to answers as an empty repository from outside the
//! served tree, and its pushes are rate-limited per client: none of that exists in the
//! upstream, so the upstream never sees `/prs/`.
//!
//! The request body is handed to the library through a bounded channel while it arrives;
//! git's answer is streamed back. Nothing holds a whole pack.

use std::net::IpAddr;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use grasp_lib::git::smart_http::{self, Body, Service};
use grasp_lib::git::RepoRef;
use grasp_lib::web;
use grasp_lib::Grasp;
use http::header::{CONTENT_ENCODING, EXPECT};
use http::StatusCode;
use pingora::proxy::Session;
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

use crate::respond;

/// Request body chunks in flight between the client and git.
const CHUNKS_IN_FLIGHT: usize = 8;

/// `GET info/refs?service=…`
pub async fn advertise(
    grasp: &Grasp,
    session: &mut Session,
    repo: &RepoRef,
    service: Service,
) -> pingora::Result<()> {
    let protocol = smart_http::sanitize_git_protocol(header(session, "git-protocol"));
    let answer = match grasp.advertise_refs(repo, service, protocol.as_deref()).await {
        Ok(body) => web::git_answer(service.advertisement_content_type(), body),
        Err(e) => web::advertisement_failed(repo, e),
    };
    respond::send(session, answer).await
}

/// `POST git-upload-pack` / `POST git-receive-pack`; `client` is the address `/prs/` pushes
/// are rate-limited by.
pub async fn rpc(
    grasp: &Grasp,
    session: &mut Session,
    repo: &RepoRef,
    service: Service,
    client: IpAddr,
) -> pingora::Result<()> {
    let protocol = smart_http::sanitize_git_protocol(header(session, "git-protocol"));
    let encoding = header(session, CONTENT_ENCODING.as_str()).map(str::to_owned);
    if header(session, EXPECT.as_str()).is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        session.write_continue_response().await?;
    }
    let (chunks, receiver) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let raw = StreamReader::new(tokio_stream_of(receiver));
    let body: Body = match smart_http::decode_body(raw, encoding.as_deref()) {
        Ok(body) => body,
        Err(e) => {
            return respond::send(session, web::text(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())).await
        }
    };
    let protocol = protocol.as_deref();
    match service {
        Service::ReceivePack => {
            let (_, answer) =
                tokio::join!(feed(session, chunks), grasp.receive_pack(repo, client, protocol, body));
            let answer = match answer {
                Ok(bytes) => web::git_answer(service.result_content_type(), bytes),
                Err(e) => web::receive_pack_failed(e),
            };
            respond::send(session, answer).await
        }
        Service::UploadPack => {
            let (_, output) = tokio::join!(feed(session, chunks), grasp.upload_pack(repo, protocol, body));
            match output {
                Ok(output) => send_upload_pack_answer(session, repo, output).await,
                Err(e) => respond::send(session, web::upload_pack_failed(repo, e)).await,
            }
        }
    }
}

/// Streams an upload-pack answer made in this process to the client.
pub async fn send_upload_pack_answer(
    session: &mut Session,
    repo: &RepoRef,
    mut output: BoxStream<'static, std::io::Result<Bytes>>,
) -> pingora::Result<()> {
    let content_type = Service::UploadPack.result_content_type();
    let (parts, _) = web::git_answer(content_type, Bytes::new()).into_parts();
    session.write_response_header(Box::new(respond::header(&parts, None)?), false).await?;
    while let Some(chunk) = output.next().await {
        match chunk {
            Ok(chunk) => session.write_response_body(Some(chunk), false).await?,
            Err(e) => {
                // The answer breaks off; the client sees an incomplete pack.
                tracing::warn!(repo = %repo, error = %e, "upload-pack output failed");
                return Err(pingora::Error::because(
                    pingora::ErrorType::InternalError,
                    "upload-pack output",
                    e,
                ));
            }
        }
    }
    session.write_response_body(None, true).await
}

/// Passes the client's request body to the library until it ends or the library stops
/// reading (a refused push drains on its own; a dropped receiver ends this).
async fn feed(session: &mut Session, chunks: mpsc::Sender<std::io::Result<Bytes>>) {
    loop {
        let next = match session.read_request_body().await {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => return,
            Err(e) => Err(crate::client::client_error(&e)),
        };
        let failed = next.is_err();
        if chunks.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// The channel's receiving end as a stream of chunks.
fn tokio_stream_of(
    receiver: mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static {
    Box::pin(futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    }))
}

fn header<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok())
}
