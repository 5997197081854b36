//! Route table of the single listener, plus the layers every response passes through:
//! CORS headers on everything (errors included) and one place that turns rejections into
//! status codes.

use std::convert::Infallible;

use grasp_lib::Grasp;
use warp::http::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::serve::Peer;
use crate::{git_http, pages, websocket};

/// Headers browsers need to use the relay and git from any origin.
fn cors_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert("access-control-allow-methods", HeaderValue::from_static("GET, POST, OPTIONS"));
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "Content-Type, Git-Protocol, Authorization, Accept, Content-Encoding, X-Requested-With",
        ),
    );
    headers.insert("access-control-max-age", HeaderValue::from_static("86400"));
    headers
}

/// Hands each request a clone of the service handle.
pub(crate) fn with_grasp(grasp: Grasp) -> impl Filter<Extract = (Grasp,), Error = Infallible> + Clone {
    warp::any().map(move || grasp.clone())
}

fn wants_nip11(accept: Option<String>) -> bool {
    accept.is_some_and(|a| a.contains("application/nostr+json"))
}

/// Every route of the server, with CORS and error handling applied.
pub fn routes(grasp: Grasp) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    // Not `warp::options()`: a method filter that fails turns every unknown path into a 405.
    let preflight = warp::method().and_then(|method: Method| async move {
        if method == Method::OPTIONS {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(warp::reject::not_found())
        }
    });

    let relay = warp::path::end()
        .and(warp::get())
        .and(warp::ws())
        .and(warp::ext::optional::<Peer>().map(|peer: Option<Peer>| peer.map(|p| p.0)))
        .and(warp::header::optional::<String>("x-forwarded-for"))
        .and(with_grasp(grasp.clone()))
        .map(websocket::upgrade);

    let nip11 = warp::path::end()
        .and(warp::get().or(warp::head()).unify())
        .and(warp::header::optional::<String>(ACCEPT.as_str()))
        .and_then(|accept| async move {
            if wants_nip11(accept) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(with_grasp(grasp.clone()))
        .map(|grasp: Grasp| {
            let body = grasp.nip11().to_string();
            warp::reply::with_header(body, CONTENT_TYPE, "application/nostr+json").into_response()
        });

    let landing = warp::path::end()
        .and(warp::get().or(warp::head()).unify())
        .and(with_grasp(grasp.clone()))
        .map(|grasp: Grasp| warp::reply::html(pages::landing(&grasp)).into_response());

    let git = git_http::routes(grasp.clone());

    let metrics = warp::path("metrics").and(warp::path::end()).and(warp::get()).and(with_grasp(grasp)).map(
        |grasp: Grasp| {
            warp::reply::with_header(grasp.metrics().render(), CONTENT_TYPE, "text/plain; version=0.0.4")
                .into_response()
        },
    );

    preflight
        .map(Reply::into_response)
        .or(relay.map(Reply::into_response))
        .unify()
        .or(nip11)
        .unify()
        .or(landing)
        .unify()
        .or(metrics)
        .unify()
        .or(git)
        .unify()
        .recover(handle_rejection)
        .unify()
        .with(warp::reply::with::headers(cors_headers()))
}

/// A failure inside a handler that the client cannot fix; answered with 500.
#[derive(Debug)]
pub struct InternalError(pub String);

impl warp::reject::Reject for InternalError {}

/// Maps every rejection to a status code and a short plain-text (or HTML for 404) body.
async fn handle_rejection(err: Rejection) -> Result<Response, Infallible> {
    let (status, message) = if err.is_not_found() {
        return Ok(warp::reply::with_status(warp::reply::html(pages::not_found()), StatusCode::NOT_FOUND)
            .into_response());
    } else if let Some(e) = err.find::<InternalError>() {
        tracing::warn!(error = %e.0, "internal error");
        (StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {}", e.0))
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed".to_owned())
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "request body too large".to_owned())
    } else if let Some(e) = err.find::<warp::reject::MissingHeader>() {
        (StatusCode::BAD_REQUEST, format!("missing header: {}", e.name()))
    } else if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, format!("invalid header: {}", e.name()))
    } else {
        tracing::debug!(rejection = ?err, "unhandled rejection");
        (StatusCode::BAD_REQUEST, "bad request".to_owned())
    };
    Ok(warp::reply::with_status(message, status).into_response())
}
