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
use crate::git::pack_cache::response;
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
                if let Some(answer) = self.answer_ls_refs(&path, &request).await {
                    let mut meter = meter.lock().expect("meter poisoned");
                    meter.on_response(&answer);
                    meter.finish(OperationStatus::Success);
                    return Ok(futures::stream::once(futures::future::ready(Ok(Bytes::from(answer)))).boxed());
                }
            }
            body = Box::pin(std::io::Cursor::new(read).chain(sniffed));
        }
        if let Some(cache) = self.responses() {
            let mut request = Vec::new();
            let mut bounded = Box::pin(IdleTimeout::new(body, idle)).take(response::MAX_REQUEST as u64 + 1);
            if let Err(e) = bounded.read_to_end(&mut request).await {
                if is_idle_timeout(&e) {
                    stalls.with_label_values(&["body_idle"]).inc();
                }
                meter.lock().expect("meter poisoned").finish(OperationStatus::BadRequest);
                return Err(GitError::BadRequest(e.to_string()));
            }
            let rest = bounded.into_inner();
            if let Some(answer) = self.cached_answer(cache, &path, git_protocol, &request).await {
                return Ok(metered(answer, meter));
            }
            body = Box::pin(std::io::Cursor::new(request).chain(rest));
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
        Ok(metered(output, meter))
    }
}

impl Grasp {
    /// True when upload-pack answers are cached ([`response`]).
    pub fn caches_answers(&self) -> bool {
        self.responses().is_some()
    }

    /// For a frontend that forwards fetches to another git server (grasp-proxy): the
    /// response cache's answer to the upload-pack request body `request` (already
    /// gunzipped), metered as a fetch served here; `None` when the request is to be
    /// forwarded (the cache is off, or this is the first sighting of the request).
    pub async fn cached_upload_pack(
        &self,
        repo: &RepoRef,
        git_protocol: Option<&str>,
        request: &[u8],
    ) -> Option<BoxStream<'static, std::io::Result<Bytes>>> {
        let cache = self.responses()?;
        let path = self.read_path(repo);
        // Metered only once answered here: a forwarded request is metered by the frontend
        // (a meter dropped unfinished would count a failed fetch).
        let meter = || {
            let mut meter = UploadPackMeter::new(self.metrics().clone(), repo.clone());
            meter.on_request(request);
            meter
        };
        if advertise::protocol_version(git_protocol) == 2 {
            // `ls-refs` is answered in-process, as grasp-server answers it.
            if let Ok((_, Some(ls_refs))) = advertise::read_ls_refs(&mut &request[..]).await {
                let answer = self.answer_ls_refs(&path, &ls_refs).await?;
                let mut meter = meter();
                meter.on_response(&answer);
                meter.finish(OperationStatus::Success);
                return Some(futures::stream::once(futures::future::ready(Ok(Bytes::from(answer)))).boxed());
            }
        }
        let answer = self.cached_answer(cache, &path, git_protocol, request).await?;
        Some(metered(answer, Arc::new(Mutex::new(meter()))))
    }

    /// A protocol v2 `ls-refs` answered in-process, when it can be exactly as git would.
    async fn answer_ls_refs(&self, path: &std::path::Path, request: &advertise::LsRefs) -> Option<Vec<u8>> {
        let answer = advertise::ls_refs(path, request).await;
        let answered_by = if answer.is_some() { AnsweredBy::Grasp } else { AnsweredBy::Git };
        self.metrics().count_advertisement(Advertisement::LsRefs, answered_by);
        answer
    }

    /// The response cache's answer to `request` for the repository at `path`
    /// ([`response::ResponseCache::answer`], which also declines bodies over
    /// [`response::MAX_REQUEST`]).
    async fn cached_answer(
        &self,
        cache: &Arc<response::ResponseCache>,
        path: &std::path::Path,
        git_protocol: Option<&str>,
        request: &[u8],
    ) -> Option<BoxStream<'static, std::io::Result<Bytes>>> {
        let limit = self.config().max_push_size;
        let idle = std::time::Duration::from_secs(self.config().body_idle_timeout_secs);
        let generate = generation(path, git_protocol, request, limit, idle);
        cache.answer(path, git_protocol, request, idle, generate).await
    }
}

/// How the response cache generates the answer to `request`: upload-pack fed the buffered
/// request, run without the pack-objects hook (the answer is what gets cached).
fn generation(
    path: &std::path::Path,
    git_protocol: Option<&str>,
    request: &[u8],
    limit: u64,
    idle: std::time::Duration,
) -> response::Generate {
    let (path, protocol, request) = (path.to_owned(), git_protocol.map(str::to_owned), request.to_vec());
    Box::new(move || {
        Box::pin(async move {
            let (exited, status) = tokio::sync::oneshot::channel();
            let body: Body = Box::pin(std::io::Cursor::new(request));
            let answer = smart_http::upload_pack_reporting(
                &path,
                protocol.as_deref(),
                None,
                body,
                limit,
                idle,
                |_| {},
                exited,
            )
            .await?;
            Ok((answer, status))
        })
    })
}

/// `output` with every chunk shown to the meter, which records the operation when the
/// output ends.
fn metered(
    output: BoxStream<'static, std::io::Result<Bytes>>,
    meter: Arc<Mutex<UploadPackMeter>>,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    let on_chunk = meter.clone();
    let metered = output.map(move |chunk| {
        let mut meter = on_chunk.lock().expect("meter poisoned");
        match &chunk {
            Ok(bytes) => meter.on_response(bytes),
            Err(_) => meter.finish(OperationStatus::Error),
        }
        Some(chunk)
    });
    // Reached only when the output ended: a client that leaves earlier drops the stream,
    // and the meter records an error when it is dropped.
    let finished = futures::stream::once(async move {
        meter.lock().expect("meter poisoned").finish(OperationStatus::Success);
        None
    });
    metered.chain(finished).filter_map(futures::future::ready).boxed()
}
