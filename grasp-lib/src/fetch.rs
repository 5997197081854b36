//! Serving reads over smart HTTP: the ref advertisement (`info/refs`, for both services) and
//! upload-pack (clone and fetch), streamed and metered.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::git::advertise::{self, AnsweredBy};
use crate::git::smart_http::{self, Body, Service};
use crate::git::{Advertisement, Direction, OperationStatus, UploadPackMeter};
use crate::git::{GitError, RepoRef};
use crate::limits::{is_idle_timeout, IdleTimeout};
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

    /// The body of `GET info/refs?service=…` for `repo`: git's advertisement, made
    /// in-process when it can be ([`advertise`]) (the refs still waiting for their event
    /// are not in the served namespace).
    pub async fn advertise_refs(
        &self,
        repo: &RepoRef,
        service: Service,
        git_protocol: Option<&str>,
    ) -> Result<Vec<u8>, GitError> {
        let (body, answered_by) =
            advertise::advertisement(&self.read_path(repo), service, git_protocol).await?;
        self.metrics().count_advertisement(Advertisement::InfoRefs, answered_by);
        self.metrics().count_git_bytes(repo, Direction::Out, body.len() as u64);
        Ok(body)
    }

    /// Serves `POST git-upload-pack` for an existing repository (or a `/prs/` path nobody
    /// pushed to, as an empty repository): git's answer as a stream. A protocol v2
    /// `ls-refs` is answered in-process when it can be answered exactly as git would
    /// ([`advertise`]); everything else goes to git, the bytes read to tell replayed first.
    /// `Err(GitError::BadRequest)` means git refused the request (answer 400).
    pub async fn upload_pack(
        &self,
        repo: &RepoRef,
        git_protocol: Option<&str>,
        body: Body,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, GitError> {
        let meter = Arc::new(Mutex::new(UploadPackMeter::new(self.metrics().clone(), repo.clone())));
        let mut body: Body = Box::pin(MeteredBody { inner: body, meter: meter.clone() });
        let path = self.read_path(repo);
        let limit = self.config().max_push_size;
        let idle = std::time::Duration::from_secs(self.config().body_idle_timeout_secs);
        let stalls = self.metrics().timeouts.clone();
        if advertise::protocol_version(git_protocol) == 2 {
            let mut sniffed: Body = Box::pin(IdleTimeout::new(body, idle));
            let (read, ls_refs) = match advertise::read_ls_refs(&mut sniffed).await {
                Ok(read) => read,
                Err(e) => {
                    if is_idle_timeout(&e) {
                        stalls.with_label_values(&["body_idle"]).inc();
                    }
                    meter.lock().expect("meter poisoned").finish(OperationStatus::BadRequest);
                    return Err(GitError::BadRequest(e.to_string()));
                }
            };
            if let Some(request) = ls_refs {
                let answer = advertise::ls_refs(&path, &request).await;
                let answered_by = if answer.is_some() { AnsweredBy::Grasp } else { AnsweredBy::Git };
                self.metrics().count_advertisement(Advertisement::LsRefs, answered_by);
                if let Some(answer) = answer {
                    let mut meter = meter.lock().expect("meter poisoned");
                    meter.on_response(&answer);
                    meter.finish(OperationStatus::Success);
                    return Ok(futures::stream::once(futures::future::ready(Ok(Bytes::from(answer)))).boxed());
                }
            }
            body = Box::pin(std::io::Cursor::new(read).chain(sniffed));
        }
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
