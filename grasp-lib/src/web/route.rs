//! Which part of the server a request is for, decided from its method, path, query and
//! headers. Repository URLs are checked here too (path tricks, unknown repositories, dumb
//! HTTP, wrong methods), so every frontend refuses the same requests with the same answer.

use http::{Method, StatusCode};

use super::{method_not_allowed, not_found, text, unauthorized, wants_nip11, WebResponse};
use crate::git::smart_http::Service;
use crate::git::RepoRef;
use crate::origin::{parse_repo_path, ServiceOrigin};
use crate::Grasp;

/// The parts of a request that routing looks at.
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: Method,
    /// The path as sent (still percent-encoded), without the query.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    /// The `Accept` header.
    pub accept: Option<&'a str>,
    /// True when the request asks for a websocket upgrade.
    pub websocket: bool,
    /// The `Authorization` header (a private service's NIP-98 credential).
    pub authorization: Option<&'a str>,
}

impl Default for RequestHead<'_> {
    fn default() -> Self {
        Self {
            method: Method::GET,
            path: "/",
            query: None,
            accept: None,
            websocket: false,
            authorization: None,
        }
    }
}

/// Where a request goes.
#[derive(Debug)]
pub enum Route {
    /// `OPTIONS` on any path: answer [`super::preflight`].
    Preflight,
    /// A websocket upgrade on `/`: host a relay connection ([`super::serve_relay`]).
    Relay,
    /// `GET /` asking for the NIP-11 document ([`super::nip11`]).
    Nip11,
    /// `GET /` in a browser ([`super::landing`]).
    Landing,
    /// `GET /metrics` ([`super::metrics`]).
    Metrics,
    /// `GET /ready`: readiness for a load balancer ([`super::ready`]).
    Ready,
    /// `GET /.well-known/nostr.json` at the root mount ([`super::nip05`]).
    Nip05,
    /// `GET /<npub>/<id>.git` in a browser ([`super::repository`]).
    RepoPage(RepoRef),
    /// `GET /<npub>/<id>.git/info/refs?service=…`: the ref advertisement.
    Advertise(RepoRef, Service),
    /// `POST /<npub>/<id>.git/git-upload-pack` or `git-receive-pack`.
    Rpc(RepoRef, Service),
    /// Not served; send this answer (404, 403 or 405).
    Refused(WebResponse),
}

/// Where NIP-05 documents live.
const NIP05_PATH: &str = "/.well-known/nostr.json";

/// What a path under a repository URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RepoAction {
    Page,
    InfoRefs,
    Rpc(Service),
}

/// Splits `[/prs]/<npub>/<id>.git[/suffix]` into the repository (a GRASP-06 `/prs/` one
/// under that prefix) and the action; `None` for anything else (including paths git's dumb
/// protocol would use).
fn parse_repo_request(path: &str) -> Option<(RepoRef, RepoAction)> {
    let (prs, rest) = match path.strip_prefix("/prs/") {
        Some(rest) => (true, rest),
        None => (false, path.strip_prefix('/')?),
    };
    let mut parts = rest.splitn(3, '/');
    let (npub, repo) = (parts.next()?, parts.next()?);
    let suffix = parts.next().unwrap_or("");
    let (owner, identifier) = parse_repo_path(&format!("/{npub}/{repo}"))?;
    let action = match suffix {
        "" => RepoAction::Page,
        "info/refs" => RepoAction::InfoRefs,
        other => RepoAction::Rpc(Service::from_name(other)?),
    };
    let repo = if prs { RepoRef::prs(owner, identifier) } else { RepoRef::new(owner, identifier) };
    Some((repo, action))
}

/// The `service=` value of an `info/refs` query, when it names a smart HTTP service.
fn service_param(query: Option<&str>) -> Option<Service> {
    let query = query?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "service")
        .and_then(|(_, value)| Service::from_name(&value))
}

impl Grasp {
    /// Routes a request to this node: [`route_in`] with its origin and repositories.
    pub fn route(&self, head: &RequestHead<'_>) -> Route {
        if let Some(access) = self.access() {
            // A private service asks for a member's credential before it looks for the
            // repository, so nobody learns which repositories exist.
            let repo = self.origin().strip_base(head.path).and_then(parse_repo_request).map(|(repo, _)| repo);
            if let Some(repo) = repo {
                if head.method != Method::OPTIONS && !access.admits_git(head.authorization, &repo) {
                    return Route::Refused(unauthorized(&access.realm()));
                }
            }
        }
        match route_in(self.origin(), |repo| self.serving_path(repo).is_some(), head) {
            // Served on its own listener (`metrics_bind_address`), not to the public; a
            // private service never shows them on the public listener.
            Route::Metrics if self.config().metrics_bind_address.is_some() || self.access().is_some() => {
                Route::Refused(not_found())
            }
            route => route,
        }
    }
}

/// Routes a request to a service mounted at `origin`'s base path: paths outside the mount
/// are not found (a preflight is answered anywhere); inside, as [`route`] routes the path
/// relative to the mount.
pub fn route_in(origin: &ServiceOrigin, served: impl Fn(&RepoRef) -> bool, head: &RequestHead<'_>) -> Route {
    if head.method == Method::OPTIONS {
        return Route::Preflight;
    }
    match origin.strip_base(head.path) {
        // NIP-05 names `_@<domain>`: only a service at the root of the domain answers it.
        Some(NIP05_PATH) if !origin.base_path().is_empty() => Route::Refused(not_found()),
        Some(path) => route(served, &RequestHead { path, ..head.clone() }),
        None => Route::Refused(not_found()),
    }
}

/// Routes a request to a service at the root. `served` answers whether a repository URL
/// names a repository this server serves (`Grasp::serving_path(repo).is_some()`).
pub fn route(served: impl Fn(&RepoRef) -> bool, head: &RequestHead<'_>) -> Route {
    let method = &head.method;
    if method == Method::OPTIONS {
        return Route::Preflight;
    }
    let is_get = method == Method::GET || method == Method::HEAD;
    match head.path {
        "/" if head.websocket && method == Method::GET => Route::Relay,
        "/" if is_get && wants_nip11(head.accept) => Route::Nip11,
        "/" if is_get => Route::Landing,
        "/metrics" if is_get => Route::Metrics,
        "/ready" if is_get => Route::Ready,
        NIP05_PATH if is_get => Route::Nip05,
        "/" | "/metrics" | "/ready" => Route::Refused(method_not_allowed()),
        path => {
            let Some((repo, action)) = parse_repo_request(path) else {
                return Route::Refused(not_found());
            };
            if !served(&repo) {
                return Route::Refused(not_found());
            }
            match action {
                // `/prs/` repositories have no page.
                RepoAction::Page if repo.is_prs() => Route::Refused(not_found()),
                RepoAction::Page if is_get => Route::RepoPage(repo),
                RepoAction::InfoRefs if is_get => match service_param(head.query) {
                    Some(service) => Route::Advertise(repo, service),
                    None => Route::Refused(text(
                        StatusCode::FORBIDDEN,
                        "only the smart HTTP protocol is served: request info/refs?service=git-upload-pack or git-receive-pack",
                    )),
                },
                RepoAction::Rpc(service) if method == Method::POST => Route::Rpc(repo, service),
                _ => Route::Refused(method_not_allowed()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::ToBech32;
    use nostr::Keys;

    use super::*;

    #[test]
    fn parses_repository_paths_and_refuses_tricks() {
        let npub = Keys::generate().public_key().to_bech32().unwrap();
        let action = |p: &str| parse_repo_request(p).map(|(_, a)| a);
        assert_eq!(action(&format!("/{npub}/r.git")), Some(RepoAction::Page));
        assert_eq!(action(&format!("/{npub}/r.git/")), Some(RepoAction::Page));
        assert_eq!(action(&format!("/{npub}/r.git/info/refs")), Some(RepoAction::InfoRefs));
        assert_eq!(
            action(&format!("/{npub}/r.git/git-upload-pack")),
            Some(RepoAction::Rpc(Service::UploadPack))
        );
        assert_eq!(
            parse_repo_request(&format!("/{npub}/my%20r.git/git-receive-pack"))
                .unwrap()
                .0
                .identifier
                .as_str(),
            "my r"
        );
        let (prs, action) = parse_repo_request(&format!("/prs/{npub}/r.git/info/refs")).unwrap();
        assert!(prs.is_prs() && action == RepoAction::InfoRefs);
        assert!(parse_repo_request(&format!("/prs/prs/{npub}/r.git/info/refs")).is_none());
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
            assert!(parse_repo_request(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn routes_the_root_metrics_and_preflight() {
        let at = |method: Method, path: &str, accept: Option<&str>, websocket: bool| {
            route(
                |_: &RepoRef| false,
                &RequestHead { method, path, query: None, accept, websocket, authorization: None },
            )
        };
        assert!(matches!(at(Method::GET, "/", None, true), Route::Relay));
        assert!(matches!(at(Method::GET, "/", Some("application/nostr+json"), false), Route::Nip11));
        assert!(matches!(at(Method::HEAD, "/", None, false), Route::Landing));
        assert!(matches!(at(Method::GET, "/metrics", None, false), Route::Metrics));
        assert!(matches!(at(Method::GET, "/.well-known/nostr.json", None, false), Route::Nip05));
        assert!(matches!(at(Method::OPTIONS, "/x/y", None, false), Route::Preflight));
        let Route::Refused(post) = at(Method::POST, "/", None, false) else { panic!("POST / is refused") };
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        let Route::Refused(missing) = at(Method::GET, "/nope", None, false) else { panic!("404") };
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn under_a_base_path_only_the_mount_is_served() {
        let origin = ServiceOrigin::parse("127.0.0.1:1").unwrap().with_base_path("/g".into());
        let at = |method: Method, path: &str, websocket: bool| {
            route_in(
                &origin,
                |_: &RepoRef| false,
                &RequestHead { method, path, websocket, ..Default::default() },
            )
        };
        assert!(matches!(at(Method::GET, "/g", true), Route::Relay));
        assert!(matches!(at(Method::GET, "/g/", false), Route::Landing));
        assert!(matches!(at(Method::GET, "/g/metrics", false), Route::Metrics));
        assert!(matches!(at(Method::OPTIONS, "/elsewhere", false), Route::Preflight));
        for outside in ["/", "/metrics", "/gx", "/.well-known/nostr.json", "/g/.well-known/nostr.json"] {
            let Route::Refused(r) = at(Method::GET, outside, true) else { panic!("{outside} is outside") };
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{outside}");
        }
    }

    #[test]
    fn info_refs_needs_a_smart_service() {
        assert_eq!(service_param(Some("service=git-upload-pack")), Some(Service::UploadPack));
        assert_eq!(service_param(Some("x=1&service=git-receive-pack")), Some(Service::ReceivePack));
        assert_eq!(service_param(Some("service=git-shell")), None);
        assert_eq!(service_param(None), None);
    }
}
