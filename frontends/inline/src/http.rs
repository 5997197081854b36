//! The one route of the listener: every request goes through `grasp_lib::web::route`, and
//! every answer gets the CORS headers (errors included).

use std::convert::Infallible;
use std::net::SocketAddr;

use grasp_lib::web::{self, RequestHead, Route};
use grasp_lib::Grasp;
use warp::http::header::{HeaderMap, ACCEPT};
use warp::http::Method;
use warp::path::FullPath;
use warp::reply::Response;
use warp::ws::Ws;
use warp::{Filter, Rejection, Reply, Stream};

use crate::warp_glue::{reply, Peer};
use crate::{git_http, websocket};

/// Hands each request a clone of the service handle.
fn with_grasp(grasp: Grasp) -> impl Filter<Extract = (Grasp,), Error = Infallible> + Clone {
    warp::any().map(move || grasp.clone())
}

/// Every route of the server, with CORS applied.
pub fn routes(grasp: Grasp) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let websocket = warp::ws().map(Some).or(warp::any().map(|| None)).unify();
    let query = warp::query::raw().map(Some).or(warp::any().map(|| None)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(websocket)
        .and(warp::ext::optional::<Peer>().map(|peer: Option<Peer>| peer.map(|p| p.0)))
        .and(warp::body::stream())
        .and(with_grasp(grasp))
        .then(dispatch)
        .recover(|rejection: Rejection| async move {
            tracing::debug!(?rejection, "unhandled rejection");
            Ok::<_, Infallible>(reply(web::text(warp::http::StatusCode::BAD_REQUEST, "bad request")))
        })
        .unify()
        .map(|mut response: Response| {
            web::add_cors(response.headers_mut());
            response
        })
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    method: Method,
    path: FullPath,
    query: Option<String>,
    headers: HeaderMap,
    ws: Option<Ws>,
    remote: Option<SocketAddr>,
    body: impl Stream<Item = Result<impl warp::Buf + Send + 'static, warp::Error>> + Send + 'static,
    grasp: Grasp,
) -> Response {
    let header = |name| headers.get(name).and_then(|v: &warp::http::HeaderValue| v.to_str().ok());
    let head = RequestHead {
        method,
        path: path.as_str(),
        query: query.as_deref(),
        accept: header(ACCEPT.as_str()),
        websocket: ws.is_some(),
        authorization: header("authorization"),
    };
    let git_protocol = header("git-protocol");
    let route = grasp.route(&head);
    // Every git process serving a client holds a slot for as long as it runs.
    let mut git_slot = match &route {
        Route::Advertise(..) | Route::Rpc(..) => {
            let client =
                web::client_ip(remote, header("x-forwarded-for"), grasp.config().trust_forwarded_for);
            match grasp.git_slot(Some(client)).await {
                Ok(slot) => Some(slot),
                Err(busy) => return reply(web::git_busy(&busy)),
            }
        }
        _ => None,
    };
    match route {
        Route::Preflight => reply(web::preflight()),
        Route::Relay => match ws {
            Some(ws) => websocket::upgrade(ws, remote, header("x-forwarded-for"), grasp).into_response(),
            None => reply(web::not_found()),
        },
        Route::Nip11 => reply(web::nip11(&grasp)),
        Route::Landing => reply(web::landing(&grasp)),
        Route::Metrics => reply(web::metrics(&grasp)),
        Route::Ready => reply(web::ready(&grasp).await),
        Route::Nip05 => reply(web::nip05(&grasp)),
        Route::RepoPage(repo) => reply(web::repository(&grasp, &repo).await),
        Route::Advertise(repo, service) => {
            reply(git_http::advertise(&grasp, &repo, service, git_protocol).await)
        }
        Route::Rpc(repo, service) => {
            let trusted = grasp.config().trust_forwarded_for;
            let client = web::client_ip(remote, header("x-forwarded-for"), trusted);
            let encoding = header("content-encoding");
            git_http::rpc(&grasp, &repo, client, service, git_protocol, encoding, body, git_slot.take()).await
        }
        Route::Refused(response) => reply(response),
    }
}
