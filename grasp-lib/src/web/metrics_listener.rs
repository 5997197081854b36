//! `/metrics` on a listener of its own (`metrics_bind_address`), so an operator can keep it
//! on loopback or a private network while the public listener answers it with 404: what
//! the metrics say about the server is then for the operator's scraper only.

use std::convert::Infallible;
use std::net::SocketAddr;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::Grasp;

/// Binds `address` and serves `GET /metrics` there until the process ends; returns the
/// bound address.
pub async fn serve(grasp: Grasp, address: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let grasp = grasp.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let grasp = grasp.clone();
                    async move { Ok::<_, Infallible>(answer(&grasp, &request)) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(bound)
}

fn answer(grasp: &Grasp, request: &Request<hyper::body::Incoming>) -> Response<String> {
    let mut response =
        if matches!(*request.method(), Method::GET | Method::HEAD) && request.uri().path() == "/metrics" {
            Response::new(grasp.metrics().render())
        } else {
            let mut not_found = Response::new("only /metrics is served here\n".to_owned());
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            not_found
        };
    let content_type =
        if response.status() == StatusCode::OK { "text/plain; version=0.0.4" } else { "text/plain" };
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, content_type.parse().expect("valid header"));
    response
}
