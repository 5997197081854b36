//! Counting the git traffic pingora forwards with grasp-lib's meters, as grasp-server counts
//! the traffic it serves: the bytes of ref advertisements, and each upload-pack exchange fed
//! to `UploadPackMeter` as it passes. Request bodies are gunzipped on the side when the
//! client compressed them, so the meter sees what git sees and can tell a clone from a fetch;
//! the bytes forwarded are untouched.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::write::GzipDecoder;
use grasp_lib::git::RepoRef;
use grasp_lib::git::{Direction, OperationStatus, UploadPackMeter};
use grasp_lib::metrics::Metrics;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A forwarded git request, metered on the way.
#[derive(Debug)]
pub enum Forwarded {
    /// `GET info/refs?service=…`: its answer's bytes count as git bytes out.
    Advertisement(RepoRef),
    /// `POST git-upload-pack`.
    UploadPack(Box<UploadPackTap>),
}

impl Forwarded {
    /// A chunk of the upstream's answer went to the client.
    pub fn on_response(&mut self, metrics: &Metrics, chunk: &[u8]) {
        match self {
            Forwarded::Advertisement(repo) => {
                metrics.count_git_bytes(repo, Direction::Out, chunk.len() as u64)
            }
            Forwarded::UploadPack(tap) => tap.meter().on_response(chunk),
        }
    }
}

/// Hands the bytes written to it to the meter as request bytes.
#[derive(Debug)]
struct RequestSink(UploadPackMeter);

impl AsyncWrite for RequestSink {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.on_request(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The request side: plain, or gunzipped before the meter sees it.
#[derive(Debug)]
enum Request {
    Plain(RequestSink),
    Gzip(GzipDecoder<RequestSink>),
}

/// One forwarded upload-pack exchange and its meter.
#[derive(Debug)]
pub struct UploadPackTap {
    request: Request,
    /// Request bytes as received (for `max_push_size`).
    received: u64,
    /// Whether the request side still decodes (a broken gzip body stops it).
    decoding: bool,
    /// How the exchange ends when the answer is complete, from the upstream's status.
    status: OperationStatus,
}

impl UploadPackTap {
    /// Meters an upload-pack request to `repo` sent with `content_encoding`.
    pub fn new(metrics: Metrics, repo: RepoRef, content_encoding: Option<&str>) -> Self {
        let sink = RequestSink(UploadPackMeter::new(metrics, repo));
        let request = match content_encoding.map(str::trim) {
            Some("gzip") | Some("x-gzip") => Request::Gzip(GzipDecoder::new(sink)),
            _ => Request::Plain(sink),
        };
        Self { request, received: 0, decoding: true, status: OperationStatus::Error }
    }

    fn meter(&mut self) -> &mut UploadPackMeter {
        match &mut self.request {
            Request::Plain(sink) => &mut sink.0,
            Request::Gzip(decoder) => &mut decoder.get_mut().0,
        }
    }

    /// The next chunk of the request body as the client sent it; returns the request bytes
    /// received so far.
    pub async fn on_request(&mut self, chunk: &[u8], end_of_stream: bool) -> u64 {
        self.received += chunk.len() as u64;
        if self.decoding {
            let fed = match &mut self.request {
                Request::Plain(sink) => sink.write_all(chunk).await,
                Request::Gzip(decoder) => match decoder.write_all(chunk).await {
                    Ok(()) if end_of_stream => decoder.shutdown().await,
                    written => written,
                },
            };
            // A body git cannot read either: the upstream answers it; the meter stops here.
            self.decoding = fed.is_ok();
        }
        self.received
    }

    /// The upstream's status decides how the exchange is counted once it ends.
    pub fn on_status(&mut self, status: u16) {
        self.status = match status {
            200..=299 => OperationStatus::Success,
            400..=499 => OperationStatus::BadRequest,
            _ => OperationStatus::Error,
        };
    }

    /// The answer is complete.
    pub fn finish(&mut self) {
        let status = self.status;
        self.meter().finish(status);
    }

    /// The exchange broke off.
    pub fn fail(&mut self) {
        self.meter().finish(OperationStatus::Error);
    }
}
