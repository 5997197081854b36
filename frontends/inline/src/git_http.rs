//! Git smart-HTTP routes under `/<npub>/<identifier>.git`: translate HTTP into `grasp-lib`
//! calls (advertisement, upload-pack, receive-pack) and the repository web page.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use async_compression::tokio::bufread::GzipDecoder;
use bytes::Buf;
use futures::{Stream, TryStreamExt};
use grasp_lib::git::smart_http::{self, Body, Service};
use grasp_lib::git::{GitError, RepoRef};
use grasp_lib::origin::parse_repo_path;
use grasp_lib::push::ReceivePackError;
use grasp_lib::Grasp;
use sync_wrapper::SyncStream;
use tokio_util::io::StreamReader;
use warp::http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use warp::http::{Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::http::{with_grasp, InternalError};
use crate::pages;
use crate::websocket::client_ip;

/// What a request under a repository URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// `GET /<npub>/<id>.git` in a browser.
    Page,
    /// `GET info/refs?service=…`
    InfoRefs,
    /// `POST git-upload-pack` / `POST git-receive-pack`
    Rpc(Service),
}

/// Splits `[/prs]/<npub>/<id>.git[/suffix]` into the repository and the action.
fn parse(path: &str) -> Option<(RepoRef, Action)> {
    let (prs, path) = match path.strip_prefix("/prs/") {
        Some(rest) => (true, rest),
        None => (false, path.strip_prefix('/')?),
    };
    let mut parts = path.splitn(3, '/');
    let (npub, repo) = (parts.next()?, parts.next()?);
    let suffix = parts.next().unwrap_or("");
    let (owner, identifier) = parse_repo_path(&format!("/{npub}/{repo}"))?;
    let action = match suffix {
        "" => Action::Page,
        "info/refs" => Action::InfoRefs,
        other => Action::Rpc(Service::from_name(other)?),
    };
    let repo = if prs { RepoRef::prs(owner, identifier) } else { RepoRef::new(owner, identifier) };
    Some((repo, action))
}

/// Turns the request body into a reader, gunzipping it when the client compressed it.
fn body_reader<S, B>(stream: S, encoding: Option<&str>) -> Result<Body, String>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    let bytes = stream.map_ok(|mut b| b.copy_to_bytes(b.remaining())).map_err(std::io::Error::other);
    let reader = StreamReader::new(bytes);
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(Box::pin(reader)),
        Some("gzip") | Some("x-gzip") => Ok(Box::pin(GzipDecoder::new(reader))),
        Some(other) => Err(format!("unsupported Content-Encoding: {other}")),
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    warp::reply::with_status(message.into(), status).into_response()
}

/// The git routes. Paths that are not repository URLs are passed on (rejected as 404).
pub fn routes(grasp: Grasp) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path::full()
        .and_then(|path: FullPath| async move { parse(path.as_str()).ok_or_else(warp::reject::not_found) })
        .and(warp::method())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("git-protocol"))
        .and(warp::header::optional::<String>("content-encoding"))
        .and(warp::body::stream())
        .and(warp::addr::remote())
        .and(warp::header::optional::<String>("x-forwarded-for"))
        .and(with_grasp(grasp))
        .and_then(
            |(repo, action): (RepoRef, Action),
             method: Method,
             query: HashMap<String, String>,
             protocol: Option<String>,
             encoding: Option<String>,
             body,
             remote: Option<SocketAddr>,
             forwarded_for: Option<String>,
             grasp: Grasp| async move {
                if grasp.serving_path(&repo).is_none() {
                    return Err(warp::reject::not_found());
                }
                let protocol = smart_http::sanitize_git_protocol(protocol.as_deref());
                let is_get = method == Method::GET || method == Method::HEAD;
                match action {
                    Action::Page if is_get && repo.is_prs() => Err(warp::reject::not_found()),
                    Action::Page if is_get => page(&grasp, &repo).await,
                    Action::InfoRefs if is_get => {
                        info_refs(&grasp, &repo, query.get("service"), protocol).await
                    }
                    Action::Rpc(service) if method == Method::POST => {
                        let body = match body_reader(body, encoding.as_deref()) {
                            Ok(body) => body,
                            Err(reason) => return Ok(text(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason)),
                        };
                        let client =
                            client_ip(remote, forwarded_for.as_deref(), grasp.config().trust_forwarded_for);
                        rpc(&grasp, &repo, client, service, protocol, body).await
                    }
                    _ => Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
                }
            },
        )
}

async fn page(grasp: &Grasp, repo: &RepoRef) -> Result<Response, Rejection> {
    match grasp.repository_summary(repo).await {
        Ok(Some(summary)) => Ok(warp::reply::html(pages::repository(grasp, repo, &summary)).into_response()),
        Ok(None) => Err(warp::reject::not_found()),
        Err(e) => Err(warp::reject::custom(InternalError(e.to_string()))),
    }
}

async fn info_refs(
    grasp: &Grasp,
    repo: &RepoRef,
    service: Option<&String>,
    protocol: Option<String>,
) -> Result<Response, Rejection> {
    let Some(service) = service.and_then(|s| Service::from_name(s)) else {
        return Ok(text(
            StatusCode::FORBIDDEN,
            "only the smart HTTP protocol is served: request info/refs?service=git-upload-pack or git-receive-pack",
        ));
    };
    match grasp.advertise_refs(repo, service, protocol.as_deref()).await {
        Ok(body) => {
            let mut response = Response::new(body.into());
            let headers = response.headers_mut();
            headers
                .insert(CONTENT_TYPE, service.advertisement_content_type().parse().expect("static header"));
            headers.insert(CACHE_CONTROL, "no-cache".parse().expect("static header"));
            Ok(response)
        }
        Err(e) => {
            tracing::warn!(repo = %repo, error = %e, "ref advertisement failed");
            Err(warp::reject::custom(InternalError(format!("git could not read this repository: {e}"))))
        }
    }
}

async fn rpc(
    grasp: &Grasp,
    repo: &RepoRef,
    client: IpAddr,
    service: Service,
    protocol: Option<String>,
    body: Body,
) -> Result<Response, Rejection> {
    let mut response = match service {
        Service::ReceivePack => match grasp.receive_pack(repo, client, protocol.as_deref(), body).await {
            Ok(bytes) => Response::new(bytes.into()),
            Err(ReceivePackError::BadRequest(msg)) => return Ok(text(StatusCode::BAD_REQUEST, msg)),
            Err(ReceivePackError::Internal(msg)) => return Err(warp::reject::custom(InternalError(msg))),
            Err(ReceivePackError::ClientStalled(msg)) => {
                let mut response = text(StatusCode::REQUEST_TIMEOUT, msg);
                response.headers_mut().insert(CONNECTION, "close".parse().expect("static header"));
                return Ok(response);
            }
        },
        Service::UploadPack => match grasp.upload_pack(repo, protocol.as_deref(), body).await {
            Ok(stream) => warp::reply::stream(SyncStream::new(stream)).into_response(),
            Err(GitError::BadRequest(reason)) => {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    format!("git upload-pack refused the request: {reason}"),
                ))
            }
            Err(e) => {
                tracing::warn!(repo = %repo, error = %e, "upload-pack failed");
                return Err(warp::reject::custom(InternalError(format!("git upload-pack failed: {e}"))));
            }
        },
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, service.result_content_type().parse().expect("static header"));
    headers.insert(CACHE_CONTROL, "no-cache".parse().expect("static header"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::ToBech32;
    use nostr::Keys;

    use super::*;

    #[test]
    fn parses_repository_paths_and_refuses_tricks() {
        let npub = Keys::generate().public_key().to_bech32().unwrap();
        assert_eq!(parse(&format!("/{npub}/r.git")).unwrap().1, Action::Page);
        assert_eq!(parse(&format!("/{npub}/r.git/")).unwrap().1, Action::Page);
        assert_eq!(parse(&format!("/{npub}/r.git/info/refs")).unwrap().1, Action::InfoRefs);
        assert_eq!(
            parse(&format!("/{npub}/r.git/git-upload-pack")).unwrap().1,
            Action::Rpc(Service::UploadPack)
        );
        assert_eq!(
            parse(&format!("/{npub}/my%20r.git/git-receive-pack")).unwrap().0.identifier.as_str(),
            "my r"
        );
        let (prs, action) = parse(&format!("/prs/{npub}/r.git/info/refs")).unwrap();
        assert!(prs.is_prs() && action == Action::InfoRefs);
        assert!(parse(&format!("/prs/prs/{npub}/r.git/info/refs")).is_none());
        for bad in [
            format!("/{npub}/r.git/HEAD"),
            format!("/{npub}/r.git/objects/info/packs"),
            format!("/{npub}/../r.git/info/refs"),
            format!("/{npub}/%2e%2e.git/info/refs"),
            format!("/{npub}/a%2Fb.git/info/refs"),
            format!("/{npub}/r/info/refs"),
            "/npub1notvalid/r.git/info/refs".to_owned(),
            "/r.git".to_owned(),
        ] {
            assert!(parse(&bad).is_none(), "{bad}");
        }
    }
}
