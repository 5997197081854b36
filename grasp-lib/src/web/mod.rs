//! What a GRASP origin answers over HTTP besides the git protocol itself: routing, CORS, the
//! landing page, repository pages, NIP-11, `/metrics`, error pages, and hosting a relay
//! connection.
//!
//! Everything here is transport-free. [`route`] turns a request head into a [`Route`], and
//! every responder returns a [`WebResponse`] (an [`http::Response`] with a [`Bytes`] body), so
//! a frontend (warp, pingora, a forge's own server) only copies it into its own response
//! type. Both frontends therefore route, refuse and render exactly alike.
//!
//! ```
//! use grasp_lib::web::{self, RequestHead, Route};
//! use http::Method;
//!
//! let head = RequestHead { method: Method::OPTIONS, path: "/anything", ..RequestHead::default() };
//! let served = |_: &grasp_lib::git::RepoRef| false; // e.g. `grasp.serving_path(repo).is_some()`
//! assert!(matches!(web::route(served, &head), Route::Preflight));
//! let preflight = web::preflight();
//! assert_eq!(preflight.status(), 204);
//! ```

pub mod metrics_listener;
pub mod pages;
mod route;
pub mod test_listener;
mod websocket;

pub use route::{route, route_in, RequestHead, Route};
pub use websocket::{client_ip, serve_relay, transport_cap};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::config::Config;
use crate::git::{GitError, RepoRef};
use crate::limits::{raise_nofile_limit, ServerLimits};
use crate::push::ReceivePackError;
use crate::{Grasp, OpenError};

/// A complete answer: status, headers and body.
pub type WebResponse = Response<Bytes>;

/// The CORS headers sent on every response, errors included, so browser clients can use the
/// relay and git from any origin.
pub const CORS_HEADERS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "GET, POST, OPTIONS"),
    (
        "access-control-allow-headers",
        "Content-Type, Git-Protocol, Authorization, Accept, Content-Encoding, X-Requested-With",
    ),
    ("access-control-max-age", "86400"),
];

/// [`CORS_HEADERS`] as a header map.
pub fn cors_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    add_cors(&mut headers);
    headers
}

/// Sets the [`CORS_HEADERS`] on `headers` (replacing values already there).
pub fn add_cors(headers: &mut HeaderMap) {
    for (name, value) in CORS_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> WebResponse {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text answer (errors and refusals).
pub fn text(status: StatusCode, message: impl Into<String>) -> WebResponse {
    respond(status, "text/plain; charset=utf-8", message.into())
}

/// An HTML page.
pub fn html(status: StatusCode, page: String) -> WebResponse {
    respond(status, "text/html; charset=utf-8", page)
}

/// The answer to a CORS preflight (`OPTIONS` on any path).
pub fn preflight() -> WebResponse {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Any path that is not served.
pub fn not_found() -> WebResponse {
    html(StatusCode::NOT_FOUND, pages::not_found())
}

/// A private service's answer to a repository request without a member's credential: an
/// empty `401`, the same for every reason (no credential, not a member, expired, another
/// repository's, a repository that does not exist). It asks for NIP-98 and also offers
/// Basic, so git's credential helpers can send the credential as their password.
pub fn unauthorized(realm: &str) -> WebResponse {
    let realm = realm.replace(['"', '\\'], "");
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    for challenge in [format!("Nostr realm=\"{realm}\", method=\"GET\""), format!("Basic realm=\"{realm}\"")]
    {
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            headers.append(http::header::WWW_AUTHENTICATE, value);
        }
    }
    headers.insert("access-control-expose-headers", HeaderValue::from_static("WWW-Authenticate"));
    response
}

/// A known path asked with a method it does not serve.
pub fn method_not_allowed() -> WebResponse {
    text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// A failure the client cannot fix; logged, and answered with 500.
pub fn internal_error(message: impl std::fmt::Display) -> WebResponse {
    tracing::warn!(error = %message, "internal error");
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {message}"))
}

/// A request body that stopped arriving (see [`crate::limits::IdleTimeout`]): 408, and the
/// connection is closed, since the rest of the body may still be on its way.
pub fn client_stalled(message: impl Into<String>) -> WebResponse {
    let mut response = text(StatusCode::REQUEST_TIMEOUT, message);
    response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A `200` git answer (an advertisement, a push report, a refusal `git push` prints) with
/// its content type and the headers git clients expect.
pub fn git_answer(content_type: &'static str, body: impl Into<Bytes>) -> WebResponse {
    let mut response = WebResponse::new(body.into());
    git_headers(response.headers_mut(), content_type);
    response
}

/// The answer to a receive-pack request that got no git answer: `400` for a malformed
/// request, `408` (and close) for a client that stalled, `500` otherwise.
pub fn receive_pack_failed(error: ReceivePackError) -> WebResponse {
    match error {
        ReceivePackError::BadRequest(message) => text(StatusCode::BAD_REQUEST, message),
        ReceivePackError::Internal(message) => internal_error(message),
        ReceivePackError::ClientStalled(message) => client_stalled(message),
    }
}

/// The answer to an upload-pack request git did not serve: `400` when git refused the
/// request itself, `500` when it failed.
pub fn upload_pack_failed(repo: &RepoRef, error: GitError) -> WebResponse {
    match error {
        GitError::BadRequest(reason) => {
            text(StatusCode::BAD_REQUEST, format!("git upload-pack refused the request: {reason}"))
        }
        e => {
            tracing::warn!(repo = %repo, error = %e, "upload-pack failed");
            internal_error(format!("git upload-pack failed: {e}"))
        }
    }
}

/// The answer to a ref advertisement git could not give.
pub fn advertisement_failed(repo: &RepoRef, error: GitError) -> WebResponse {
    tracing::warn!(repo = %repo, error = %error, "ref advertisement failed");
    internal_error(format!("git could not read this repository: {error}"))
}

/// A request refused by the per-client connection cap (see [`crate::limits::Admission`]):
/// 503 with `Retry-After`.
pub fn too_busy(refusal: &crate::limits::Refusal) -> WebResponse {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string());
    response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// The answer to a git request that found no free git process slot: `503` with
/// `Retry-After` and the reason.
pub fn git_busy(busy: &crate::limits::GitBusy) -> WebResponse {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, busy.to_string());
    response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("10"));
    response
}

impl Grasp {
    /// A slot for a git process serving `client` ([`crate::limits::GitSlots`]): held for as
    /// long as the process runs. A refusal is counted in `grasp_git_busy_total{cap}`.
    pub async fn git_slot(
        &self,
        client: Option<std::net::IpAddr>,
    ) -> Result<crate::limits::GitSlot, crate::limits::GitBusy> {
        let slot = self.git_slots.acquire(client).await;
        if let Err(busy) = &slot {
            self.metrics().git_busy.with_label_values(&[busy.label()]).inc();
            tracing::info!(?client, reason = %busy, "git request refused: no free slot");
        }
        slot
    }
}

/// True when the raw request head `raw` (request line and header lines, as received)
/// frames its body twice: both `Content-Length` and `Transfer-Encoding`. A server that
/// forwards requests must refuse such a request (RFC 9112 §6.1): two parsers on the way
/// may read different bodies out of it (request smuggling).
pub fn conflicting_framing(raw: &[u8]) -> bool {
    let mut content_length = false;
    let mut transfer_encoding = false;
    for line in raw.split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let name = line[..colon].trim_ascii();
        content_length |= name.eq_ignore_ascii_case(b"content-length");
        transfer_encoding |= name.eq_ignore_ascii_case(b"transfer-encoding");
    }
    content_length && transfer_encoding
}

/// The answer to a request [`conflicting_framing`] refuses: 400, and the connection closed.
pub fn conflicting_framing_refused() -> WebResponse {
    let mut response =
        text(StatusCode::BAD_REQUEST, "a request may carry Content-Length or Transfer-Encoding, not both");
    response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// True when an `Accept` header asks for the NIP-11 document.
pub fn wants_nip11(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/nostr+json"))
}

/// `GET /` with `Accept: application/nostr+json`.
pub fn nip11(grasp: &Grasp) -> WebResponse {
    respond(StatusCode::OK, "application/nostr+json", grasp.nip11().to_string())
}

/// `GET /.well-known/nostr.json`: the relay owner's NIP-05 name `_` (404 without an owner
/// key).
pub fn nip05(grasp: &Grasp) -> WebResponse {
    match grasp.config().owner_keys() {
        Some(keys) => respond(
            StatusCode::OK,
            "application/json",
            crate::identity::nip05_document(&keys, grasp.origin()),
        ),
        None => not_found(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub fn metrics(grasp: &Grasp) -> WebResponse {
    respond(StatusCode::OK, "text/plain; version=0.0.4", grasp.metrics().render())
}

/// `GET /ready`: 200 when this node can serve, 503 with what is wrong otherwise (JSON:
/// [`crate::readiness::Readiness`]).
pub async fn ready(grasp: &Grasp) -> WebResponse {
    let readiness = grasp.readiness().await;
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut response =
        respond(status, "application/json", serde_json::to_string(&readiness).expect("readiness serializes"));
    response.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /` in a browser.
pub fn landing(grasp: &Grasp) -> WebResponse {
    html(StatusCode::OK, pages::landing(grasp))
}

/// `GET /<npub>/<identifier>.git` in a browser (404 when the repository is not hosted).
pub async fn repository(grasp: &Grasp, repo: &RepoRef) -> WebResponse {
    match grasp.repository_summary(repo).await {
        Ok(Some(summary)) => html(StatusCode::OK, pages::repository(grasp, repo, &summary)),
        Ok(None) => not_found(),
        Err(e) => internal_error(e),
    }
}

/// Binds a frontend's listener with TCP_NODELAY, which accepted connections inherit on Linux.
/// Git's smart-HTTP exchanges are request/response ping-pong with small messages; with
/// Nagle's algorithm each small write can wait for a delayed ACK (tens of ms per round trip).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Grasp {
    /// What a frontend that listens does first: binds `bind_address` (see [`listen`]),
    /// takes the bound address as `domain` when none is configured (so port 0 works),
    /// raises the open-file limit and resolves the [`ServerLimits`] under it, and opens the
    /// service.
    pub async fn open_listening(
        config: Config,
    ) -> Result<(Self, tokio::net::TcpListener, ServerLimits), OpenError> {
        Self::open_listening_on(config, None).await
    }

    /// [`Grasp::open_listening`] on `inherited` when given (a listener a test harness bound,
    /// see [`test_listener`]) instead of binding `bind_address`.
    pub async fn open_listening_on(
        mut config: Config,
        inherited: Option<std::net::TcpListener>,
    ) -> Result<(Self, tokio::net::TcpListener, ServerLimits), OpenError> {
        let address = config.bind_address;
        let listener = match inherited {
            Some(listener) => tokio::net::TcpListener::from_std(listener),
            None => listen(address),
        }
        .map_err(|error| OpenError::Listen { address, error })?;
        let bound = listener.local_addr().map_err(|error| OpenError::Listen { address, error })?;
        if config.domain.is_none() {
            config.domain = Some(bound.to_string());
        }
        // What the node must never dial because an event named it (port 0 resolved).
        config.bind_address = bound;
        let nofile = raise_nofile_limit();
        match nofile {
            Some(limit) => tracing::info!(
                soft_before = limit.soft_before,
                soft = limit.soft,
                hard = limit.hard,
                "open-file limit (soft limit raised to the hard limit)"
            ),
            None => tracing::warn!("could not read the open-file limit"),
        }
        let limits = config.server_limits(nofile.map(|l| l.soft));
        Ok((Grasp::open(config).await?, listener, limits))
    }
}

/// Marks a git protocol answer: its content type, and no caching anywhere on the way.
pub fn git_headers(headers: &mut HeaderMap, content_type: &'static str) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_headers_cover_the_decided_superset() {
        let headers = cors_headers();
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert_eq!(headers["access-control-allow-methods"], "GET, POST, OPTIONS");
        let allowed = headers["access-control-allow-headers"].to_str().unwrap().to_lowercase();
        for h in ["content-type", "git-protocol", "authorization", "accept", "content-encoding"] {
            assert!(allowed.contains(h), "{allowed} lacks {h}");
        }
    }

    #[test]
    fn a_request_framed_twice_is_recognised() {
        let both = b"POST /x HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(conflicting_framing(both));
        let spaced = b"POST /x HTTP/1.1\r\nContent-Length : 5\r\ntransfer-encoding:chunked\r\n\r\n";
        assert!(conflicting_framing(spaced));
        assert!(!conflicting_framing(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n"));
        assert!(!conflicting_framing(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
        // A header value that mentions the other name is not a header.
        assert!(!conflicting_framing(
            b"POST /x HTTP/1.1\r\nX-Note: transfer-encoding\r\nContent-Length: 1\r\n\r\n"
        ));
        assert_eq!(conflicting_framing_refused().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn nip11_is_asked_for_by_accept_only() {
        assert!(wants_nip11(Some("application/nostr+json")));
        assert!(wants_nip11(Some("text/html, application/nostr+json;q=0.9")));
        assert!(!wants_nip11(Some("text/html")));
        assert!(!wants_nip11(None));
    }
}
