//! The pingora side of the proxy: every request is routed by `grasp_lib::web::route`.
//! What the library serves (relay, NIP-11, pages, `/metrics`, refusals) is answered here in
//! `request_filter`; pushes are authorized and forwarded by [`crate::push`]; the ref
//! advertisement and upload-pack go to the upstream through pingora untouched and
//! streamed, with CORS added and metrics counted on the way back.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use grasp_lib::git::smart_http::Service;
use grasp_lib::limits::Permit;
use grasp_lib::web::{self, RequestHead, Route};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_ENCODING, UPGRADE};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, HttpProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::{Error, ErrorSource, ErrorType};

use crate::app::GraspProxy;
use crate::client::client_of;
use crate::listener::HeadersArrived;
use crate::meter::{Forwarded, UploadPackTap};
use crate::upstream::failure_response;
use crate::{cached_fetch, in_process, push, relay, respond};

/// The pingora application around [`GraspProxy`].
pub fn http_app(proxy: GraspProxy) -> HttpProxy<GraspProxy> {
    pingora::proxy::http_proxy(&Arc::new(ServerConf::default()), proxy)
}

/// What one request carries between pingora's phases.
#[derive(Debug, Default)]
pub struct RequestCtx {
    forwarded: Option<Forwarded>,
    /// The client's slot behind a trusted reverse proxy, held for the request (and an
    /// upgraded websocket, which lives inside it).
    _client: Option<Permit>,
    /// The git process slot of a git request (here or upstream), held until it ends.
    _git: Option<grasp_lib::limits::GitSlot>,
}

/// True when the request asks to become a websocket.
fn wants_websocket(session: &Session) -> bool {
    session.is_upgrade_req()
        && session
            .req_header()
            .headers
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

#[async_trait]
impl ProxyHttp for GraspProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// The listener put a [`HeadersArrived`] in the connection context; pingora hands it
    /// here once it parsed the request headers, which stops the header read timeout.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        connection: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(arrived) = connection.downcast::<HeadersArrived>() {
            arrived.arrived();
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<bool> {
        let grasp = &self.grasp;
        // A request body (a push, a negotiation) or an answer (a clone) that makes no
        // progress for this long fails, as in grasp-server.
        session.set_read_timeout(Some(self.limits.body_idle_timeout));
        session.set_write_timeout(Some(self.limits.body_idle_timeout));
        // pingora drops the Content-Length of such a request and reads it chunked; nothing
        // framed two ways is passed on (RFC 9112 §6.1).
        let raw_head = session.as_downstream().as_http1().map(|http1| http1.get_headers_raw_bytes());
        if raw_head.is_some_and(|raw| web::conflicting_framing(&raw)) {
            session.set_keepalive(None);
            respond::send(session, web::conflicting_framing_refused()).await?;
            return Ok(true);
        }
        if self.limits.per_ip_after_headers {
            match self.admission.client(client_of(session, true)) {
                Ok(permit) => ctx._client = Some(permit),
                Err(refusal) => {
                    respond::send(session, web::too_busy(&refusal)).await?;
                    return Ok(true);
                }
            }
        }
        let request = session.req_header();
        let route = grasp.route(&RequestHead {
            method: request.method.clone(),
            path: request.uri.path(),
            query: request.uri.query(),
            accept: request.headers.get(ACCEPT).and_then(|v| v.to_str().ok()),
            websocket: wants_websocket(session),
            authorization: request.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()),
        });
        if matches!(route, Route::Advertise(..) | Route::Rpc(..)) {
            let client = client_of(session, grasp.config().trust_forwarded_for);
            match grasp.git_slot(Some(client)).await {
                Ok(slot) => ctx._git = Some(slot),
                Err(busy) => {
                    respond::send(session, web::git_busy(&busy)).await?;
                    return Ok(true);
                }
            }
        }
        let answer = match route {
            Route::Advertise(repo, service) if repo.is_prs() => {
                in_process::advertise(grasp, session, &repo, service).await?;
                return Ok(true);
            }
            Route::Rpc(repo, service) if repo.is_prs() => {
                let client = client_of(session, grasp.config().trust_forwarded_for);
                in_process::rpc(grasp, session, &repo, service, client).await?;
                return Ok(true);
            }
            Route::Advertise(repo, _) => {
                ctx.forwarded = Some(Forwarded::Advertisement(repo));
                return Ok(false);
            }
            Route::Rpc(repo, Service::UploadPack) => {
                if cached_fetch::answer(grasp, session, &repo).await? {
                    return Ok(true);
                }
                let encoding =
                    session.req_header().headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok());
                let tap = UploadPackTap::new(grasp.metrics().clone(), repo, encoding);
                ctx.forwarded = Some(Forwarded::UploadPack(Box::new(tap)));
                return Ok(false);
            }
            Route::Rpc(repo, Service::ReceivePack) => {
                push::receive_pack(self, session, &repo).await?;
                return Ok(true);
            }
            Route::Relay => {
                relay::serve(session, grasp).await?;
                return Ok(true);
            }
            Route::Preflight => web::preflight(),
            Route::Nip11 => web::nip11(grasp),
            Route::Landing => web::landing(grasp),
            Route::Metrics => web::metrics(grasp),
            Route::Ready => web::ready(grasp).await,
            Route::Nip05 => web::nip05(grasp),
            Route::RepoPage(repo) => web::repository(grasp, &repo).await,
            Route::Refused(response) => response,
        };
        respond::send(session, answer).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(self.upstream.peer())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        self.upstream.rewrite(request)
    }

    /// Upload-pack request bodies (negotiation) are metered, and capped like grasp-server
    /// caps them.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(Forwarded::UploadPack(tap)) = &mut ctx.forwarded {
            let chunk = body.as_deref().unwrap_or_default();
            if tap.on_request(chunk, end_of_stream).await > self.grasp.config().max_push_size {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "upload-pack request over max_push_size",
                );
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        respond::add_cors(response)?;
        if let Some(Forwarded::UploadPack(tap)) = &mut ctx.forwarded {
            tap.on_status(response.status.as_u16());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        if let Some(forwarded) = &mut ctx.forwarded {
            if let Some(chunk) = body {
                forwarded.on_response(self.grasp.metrics(), chunk);
            }
            if let (Forwarded::UploadPack(tap), true) = (forwarded, end_of_stream) {
                tap.finish();
            }
        }
        Ok(None)
    }

    /// A client that went away (or broke the protocol) is routine, as it is for
    /// grasp-server: logged at debug level instead of pingora's `ERROR Fail to proxy`, so
    /// `ERROR` stays for failures of this server or its upstream.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        let client_side = *error.esource() == ErrorSource::Downstream;
        if client_side {
            tracing::debug!(error = %error, "the client went away");
        }
        client_side
    }

    /// Upstream failures and timeouts become a clear `502`/`504` with CORS, as long as the
    /// answer has not started yet.
    async fn fail_to_proxy(&self, session: &mut Session, error: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let response = match error.etype() {
            ErrorType::HTTPStatus(413) => web::text(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "request body larger than this server accepts (max_push_size)",
            ),
            _ => match error.esource() {
                ErrorSource::Upstream => failure_response(error),
                ErrorSource::Internal | ErrorSource::Unset => web::internal_error(error),
                // The client went away (or broke the protocol): nothing to answer.
                ErrorSource::Downstream => return FailToProxy { error_code: 0, can_reuse_downstream: false },
            },
        };
        tracing::warn!(error = %error, "forwarding to the upstream failed");
        if session.response_written().is_some() {
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        }
        let code = response.status().as_u16();
        if let Some(Forwarded::UploadPack(tap)) = &mut ctx.forwarded {
            tap.fail();
        }
        if let Err(e) = respond::send(session, response).await {
            tracing::debug!(error = %e, "could not send the error answer");
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }
}
