//! Git smart-HTTP under `/<npub>/<identifier>.git`: the advertisement, upload-pack and
//! receive-pack, all run by `grasp-lib` (which spawns git); this only moves bytes between
//! warp and the library.

use std::net::IpAddr;

use futures::{Stream, StreamExt, TryStreamExt};
use grasp_lib::git::smart_http::{self, Service};
use grasp_lib::git::RepoRef;
use grasp_lib::limits::GitSlot;
use grasp_lib::web::{self, WebResponse};
use grasp_lib::Grasp;
use sync_wrapper::SyncStream;
use tokio_util::io::StreamReader;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::warp_glue::{chunk_bytes, reply};

/// `GET info/refs?service=…`
pub async fn advertise(
    grasp: &Grasp,
    repo: &RepoRef,
    service: Service,
    protocol: Option<&str>,
) -> WebResponse {
    let protocol = smart_http::sanitize_git_protocol(protocol);
    match grasp.advertise_refs(repo, service, protocol.as_deref()).await {
        Ok(body) => web::git_answer(service.advertisement_content_type(), body),
        Err(e) => web::advertisement_failed(repo, e),
    }
}

/// `POST git-upload-pack` / `POST git-receive-pack`; `slot` is held until git's answer
/// has been sent.
#[allow(clippy::too_many_arguments)]
pub async fn rpc<S, B>(
    grasp: &Grasp,
    repo: &RepoRef,
    client: IpAddr,
    service: Service,
    protocol: Option<&str>,
    encoding: Option<&str>,
    body: S,
    slot: Option<GitSlot>,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: warp::Buf + Send + 'static,
{
    let protocol = smart_http::sanitize_git_protocol(protocol);
    let raw = StreamReader::new(body.map_ok(chunk_bytes).map_err(std::io::Error::other));
    let body = match smart_http::decode_body(raw, encoding) {
        Ok(body) => body,
        Err(e) => return reply(web::text(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())),
    };
    match service {
        Service::ReceivePack => match grasp.receive_pack(repo, client, protocol.as_deref(), body).await {
            Ok(bytes) => reply(web::git_answer(service.result_content_type(), bytes)),
            Err(e) => reply(web::receive_pack_failed(e)),
        },
        Service::UploadPack => match grasp.upload_pack(repo, protocol.as_deref(), body).await {
            Ok(stream) => {
                // The slot goes with the stream: git runs until the client has the pack.
                let stream = stream.map(move |chunk| {
                    let _running = &slot;
                    chunk
                });
                let mut response = warp::reply::stream(SyncStream::new(stream)).into_response();
                web::git_headers(response.headers_mut(), service.result_content_type());
                response
            }
            Err(e) => reply(web::upload_pack_failed(repo, e)),
        },
    }
}
