//! `POST git-receive-pack` served by running git here: the [lifecycle](super::lifecycle)
//! with `git receive-pack --stateless-rpc` in step 4, the body streamed into it.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::answers::{drain, ReceivePackError};
use super::lifecycle::{Admitted, PushLifecycle};
use crate::git::smart_http::{self, Body, Piped, Service};
use crate::git::{OperationStatus, RepoRef};
use crate::limits::{is_idle_timeout, IdleTimeout};
use crate::Grasp;

impl Grasp {
    /// Serves `POST git-receive-pack` for an existing repository, or a `/prs/` one (created
    /// when the push is let in, removed again if it ends up without refs; `client`'s pushes
    /// there are rate-limited). Returns the response body (git's own, or our refusal in a
    /// form `git push` prints).
    pub async fn receive_pack(
        &self,
        repo: &RepoRef,
        client: IpAddr,
        git_protocol: Option<&str>,
        body: Body,
    ) -> Result<Vec<u8>, ReceivePackError> {
        let guard = repo.is_prs().then(|| self.hosting().prs_push_started(repo));
        let mut push = self.begin_push(repo, client);
        let result = self.receive_with_git(&mut push, git_protocol, body).await;
        // Counted before an emptied `/prs/` repository goes.
        drop(push);
        drop(guard);
        self.hosting().collect_if_empty(repo).await;
        result
    }

    async fn receive_with_git(
        &self,
        push: &mut PushLifecycle,
        git_protocol: Option<&str>,
        body: Body,
    ) -> Result<Vec<u8>, ReceivePackError> {
        let repo = push.repo().clone();
        let (limit, drain_allowance) = (push.limit(), push.drain_allowance());
        let idle = Duration::from_secs(self.config().body_idle_timeout_secs);
        let mut body: Body = Box::pin(IdleTimeout::new(body, idle));
        let (commands, leftover) = push.read_commands(&mut body).await?;
        let command_bytes = (commands.raw.len() + leftover.len()) as u64;
        if let Admitted::Refused(answer) = push.admit(&commands).await? {
            drain(&mut body, drain_allowance).await;
            return Ok(answer);
        }
        if repo.is_prs() {
            self.repositories()
                .create(&repo)
                .await
                .map_err(|e| ReceivePackError::Internal(format!("cannot create {repo}: {e}")))?;
        }

        let path = self.repositories().path(&repo);
        let mut child = smart_http::command(Service::ReceivePack, &path, git_protocol, false)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ReceivePackError::Internal(format!("cannot start git receive-pack: {e}")))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        // Read git's (small) answer while the pack streams in, so neither side blocks.
        let output = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            (out, err)
        });
        let mut prefix = commands.raw.clone();
        prefix.extend_from_slice(&leftover);
        let stdin = child.stdin.take().expect("stdin is piped");
        let piped = smart_http::pipe_body(stdin, &prefix, &mut body, limit).await;
        if matches!(piped, Ok(Piped::TooLarge)) {
            let _ = child.kill().await;
            drain(&mut body, drain_allowance).await;
            return Ok(push.too_large(&commands));
        }
        if matches!(piped, Ok(Piped::Complete(_))) {
            crate::crash::point("push-while-receiving");
        }
        let mut stalled = None;
        match &piped {
            Err(e) if is_idle_timeout(e) => {
                // The client stopped sending mid-pack: end git, whose half-received objects
                // are quarantined and go with it.
                smart_http::terminate(&mut child).await;
                stalled = Some(e.to_string());
            }
            Err(e) => {
                // git stopped reading (it failed); let the client finish so it sees git's answer.
                tracing::debug!(repo = %repo, error = %e, "writing the pack to git failed");
                drain(&mut body, drain_allowance).await;
            }
            Ok(_) => {}
        }
        let status = child.wait().await.map_err(|e| ReceivePackError::Internal(e.to_string()))?;
        if let Some(reason) = stalled.as_ref().filter(|_| !status.success()) {
            // (Had git already received the whole pack and updated the refs, the push is
            // processed below like any other.)
            return Err(push.stalled(reason.clone()));
        }
        if let Some(reason) = stalled {
            // Counted as the stall it was, though git had finished.
            self.metrics().timeouts.with_label_values(&["body_idle"]).inc();
            tracing::info!(repo = %repo, %reason, "push completed although the client stalled at its end");
        }
        let (out, err) = output.await.map_err(|e| ReceivePackError::Internal(e.to_string()))?;
        let request_bytes = match piped {
            Ok(Piped::Complete(bytes)) => bytes,
            _ => command_bytes,
        };
        if !status.success() {
            let stderr = String::from_utf8_lossy(&err).trim().to_owned();
            tracing::warn!(repo = %repo, %stderr, "git receive-pack failed");
            if out.is_empty() {
                return Err(ReceivePackError::Internal(format!("git receive-pack failed: {stderr}")));
            }
            push.finish(OperationStatus::Error, request_bytes, out.len() as u64);
            return Ok(out);
        }
        crate::crash::point("push-after-receive-pack");
        push.landed(&commands.updates).await;
        push.finish(OperationStatus::Success, request_bytes, out.len() as u64);
        Ok(out)
    }
}
