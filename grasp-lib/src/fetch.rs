//! Serving reads over smart HTTP: the ref advertisement (`info/refs`, for both services) and
//! upload-pack (clone and fetch), streamed and metered.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};

use crate::git::smart_http::{self, Body, Service};
use crate::git::{Direction, OperationStatus, UploadPackMeter};
use crate::git::{GitError, RepoRef};
use crate::Grasp;

/// A request body that shows every byte read to the meter.
struct MeteredBody {
    inner: Body,
    meter: Arc<Mutex<UploadPackMeter>>,
}

impl AsyncRead for MeteredBody {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.meter.lock().expect("meter poisoned").on_request(&buf.filled()[before..]);
        }
        polled
    }
}

impl Grasp {
    /// Where git reads `repo` from: [`Grasp::serving_path`], or the repository's own path
    /// (which then fails as git fails on a missing repository).
    fn read_path(&self, repo: &RepoRef) -> std::path::PathBuf {
        self.serving_path(repo).unwrap_or_else(|| self.repositories().path(repo))
    }

    /// The body of `GET info/refs?service=…` for `repo`: git's advertisement (the refs
    /// still waiting for their event are not in the served namespace).
    pub async fn advertise_refs(
        &self,
        repo: &RepoRef,
        service: Service,
        git_protocol: Option<&str>,
    ) -> Result<Vec<u8>, GitError> {
        let body = smart_http::advertisement(&self.read_path(repo), service, git_protocol).await?;
        self.metrics().count_git_bytes(repo, Direction::Out, body.len() as u64);
        Ok(body)
    }

    /// Serves `POST git-upload-pack` for an existing repository (or a `/prs/` path nobody
    /// pushed to, as an empty repository): git's answer as a stream.
    /// `Err(GitError::BadRequest)` means git refused the request (answer 400).
    pub async fn upload_pack(
        &self,
        repo: &RepoRef,
        git_protocol: Option<&str>,
        body: Body,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, GitError> {
        let meter = Arc::new(Mutex::new(UploadPackMeter::new(self.metrics().clone(), repo.clone())));
        let body: Body = Box::pin(MeteredBody { inner: body, meter: meter.clone() });
        let path = self.read_path(repo);
        let limit = self.config().max_push_size;
        let idle = std::time::Duration::from_secs(self.config().body_idle_timeout_secs);
        let stalls = self.metrics().timeouts.clone();
        let on_stall = move |stalled: &'static str| stalls.with_label_values(&[stalled]).inc();
        let hook = self.config().pack_objects_hook_command();
        let output =
            match smart_http::upload_pack(&path, git_protocol, hook.as_deref(), body, limit, idle, on_stall)
                .await
            {
                Ok(output) => output,
                Err(e) => {
                    let status = if matches!(e, GitError::BadRequest(_)) {
                        OperationStatus::BadRequest
                    } else {
                        OperationStatus::Error
                    };
                    meter.lock().expect("meter poisoned").finish(status);
                    return Err(e);
                }
            };
        let on_chunk = meter.clone();
        let metered = output.map(move |chunk| {
            let mut meter = on_chunk.lock().expect("meter poisoned");
            match &chunk {
                Ok(bytes) => meter.on_response(bytes),
                Err(_) => meter.finish(OperationStatus::Error),
            }
            Some(chunk)
        });
        // Reached only when git's output ended: a client that leaves earlier drops the
        // stream, and the meter records an error when it is dropped.
        let finished = futures::stream::once(async move {
            meter.lock().expect("meter poisoned").finish(OperationStatus::Success);
            None
        });
        Ok(metered.chain(finished).filter_map(futures::future::ready).boxed())
    }
}
