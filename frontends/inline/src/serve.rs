//! The listener: admits connections under the caps of `grasp_lib::limits`, serves HTTP/1.1
//! with a header read timeout, and hands websocket upgrades to the routes.
//!
//! warp's own server offers no header read timeout, so connections are served with hyper's
//! HTTP/1 builder directly. Where each limit applies:
//!
//! - **total cap**: at accept, before a byte is read; a refused connection gets a short 503
//!   and is closed.
//! - **per-IP cap**: at accept on the TCP peer; with `trust_forwarded_for`, on the
//!   forwarded address once the headers are read (a 503 answer), because the TCP peer is
//!   then the operator's proxy.
//! - **header read timeout**: hyper closes a connection whose request headers (or next
//!   request on an idle keep-alive connection) do not arrive in time.
//!
//! A connection's permit lives in its socket wrapper, so it is held for as long as the
//! socket, including after a websocket upgrade.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use grasp_lib::limits::{Admission, Permit, Refusal, ServerLimits};
use grasp_lib::Grasp;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::http;
use crate::warp_glue::Peer;
use grasp_lib::web::client_ip;

/// How long shutdown waits for requests in flight (websockets are simply closed).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A client's slot behind a trusted proxy: set per request, kept by an upgraded websocket.
type ClientSlot = Arc<Mutex<Option<Permit>>>;

/// Serves `grasp` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    grasp: Grasp,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let admission =
        Admission::new(limits.max_connections, limits.max_connections_per_ip, grasp.metrics().clone());
    let routes = TowerToHyperService::new(warp::service(http::routes(grasp.clone())));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote, permit) = tokio::select! {
            admitted = admission.accept(&listener, limits.per_ip_after_headers) => admitted,
            () = &mut shutdown => break,
        };
        let client: ClientSlot = Arc::default();
        let io = TokioIo::new(Admitted { stream, _permit: permit, _client: client.clone() });
        let service =
            requests(routes.clone(), remote, limits.per_ip_after_headers, admission.clone(), client);
        let connection = builder.serve_connection(io, service).with_upgrades();
        let metrics = grasp.metrics().clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopped(&mut stopping) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    metrics.timeouts.with_label_values(&["header_read"]).inc();
                    tracing::debug!(peer = %remote, "request headers did not arrive in time; connection closed");
                } else {
                    tracing::debug!(peer = %remote, error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Wait (a while) for connections that are finishing a request: each connection task
    // holds a receiver until it ends. Upgraded websockets are not waited for.
    drop(stopping);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, stop.closed()).await;
}

/// The service for one connection's requests: the routes, plus, behind a trusted proxy, the
/// per-IP cap on the forwarded address of each request.
fn requests<R, B>(
    routes: R,
    remote: SocketAddr,
    after_headers: bool,
    admission: Admission,
    client: ClientSlot,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Held<B>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Held<B>>, Infallible>> + Send,
>
where
    R: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    R::Future: Send,
    B: Body + From<String> + Unpin + Send,
{
    service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(Peer(remote));
        let admitted = after_headers.then(|| {
            let forwarded = request.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
            // The previous request on this connection is finished; its slot is free.
            client.lock().expect("client slot poisoned").take();
            admission.client(client_ip(Some(remote), forwarded, true))
        });
        let (routes, client) = (routes.clone(), client.clone());
        async move {
            let mut permit = match admitted {
                Some(Err(refusal)) => return Ok(too_many(&refusal)),
                Some(Ok(permit)) => Some(permit),
                None => None,
            };
            let response = routes.call(request).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                // An upgraded websocket keeps the client's slot for as long as it lives.
                *client.lock().expect("client slot poisoned") = permit.take();
            }
            Ok(response.map(|body| Held { body, _permit: permit }))
        }
    })
}

/// A response body that holds a client's slot until the body is sent (or dropped).
pub struct Held<B> {
    body: B,
    _permit: Option<Permit>,
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The 503 a client gets when the per-IP cap refuses a request.
fn too_many<B: From<String>>(refusal: &Refusal) -> Response<Held<B>> {
    let mut response = Response::new(Held { body: B::from(refusal.to_string()), _permit: None });
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert("retry-after", HeaderValue::from_static("5"));
    headers.insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    response
}

/// Resolves once shutdown began.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// An admitted socket: it holds the connection's slot (and, behind a proxy, the slot of the
/// websocket client it was upgraded for) until it is closed.
struct Admitted {
    stream: TcpStream,
    _permit: Permit,
    _client: ClientSlot,
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
