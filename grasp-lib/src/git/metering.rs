//! Counting git smart-HTTP traffic into the metrics: operations, bytes, durations and the
//! busiest repositories. Frontends call these from wherever their bytes pass; the inline
//! server does it through `Grasp::upload_pack` and `Grasp::receive_pack`.

use std::time::{Duration, Instant};

use super::advertise::AnsweredBy;
use super::observe::{GitOperation, UploadPackObserver};
use super::repo::RepoRef;
use crate::metrics::Metrics;

/// Which way git bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Request bodies: pushed packs, fetch negotiation.
    In,
    /// Response bodies: ref advertisements, packs sent, push reports.
    Out,
}

impl Direction {
    /// Both directions.
    pub const ALL: [Self; 2] = [Self::In, Self::Out];

    fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// How a git operation ended (the `status` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationStatus {
    /// Git did what was asked.
    Success,
    /// A push refused by authorization or by `max_push_size`.
    Rejected,
    /// The request was malformed.
    BadRequest,
    /// Git or the server failed, or the client went away mid-transfer.
    Error,
}

impl OperationStatus {
    /// Every status.
    pub const ALL: [Self; 4] = [Self::Success, Self::Rejected, Self::BadRequest, Self::Error];

    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Rejected => "rejected",
            Self::BadRequest => "bad_request",
            Self::Error => "error",
        }
    }
}

/// The results `ngit_git_push_authorization_total` counts.
pub const AUTHORIZATION_RESULTS: [&str; 2] = ["accepted", "rejected"];

/// The ref advertisements `grasp_git_advertisements_total` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advertisement {
    /// `GET info/refs?service=…`, either service, any protocol version.
    InfoRefs,
    /// A protocol v2 `ls-refs` command (`POST git-upload-pack`).
    LsRefs,
}

impl Advertisement {
    /// Both kinds.
    pub const ALL: [Self; 2] = [Self::InfoRefs, Self::LsRefs];

    fn as_str(self) -> &'static str {
        match self {
            Self::InfoRefs => "info_refs",
            Self::LsRefs => "ls_refs",
        }
    }
}

/// Creates the series of every fixed git label combination at zero, so a dashboard shows
/// 0 (and `rate()` works) before the first occurrence.
pub fn prime(metrics: &Metrics) {
    metrics.prime_git();
}

impl Metrics {
    fn prime_git(&self) {
        for operation in GitOperation::ALL {
            for status in OperationStatus::ALL {
                self.git_operations.with_label_values(&[operation.as_str(), status.as_str()]);
            }
        }
        for direction in Direction::ALL {
            self.git_bytes.with_label_values(&[direction.as_str()]);
        }
        for result in AUTHORIZATION_RESULTS {
            self.push_authorizations.with_label_values(&[result]);
        }
        for request in Advertisement::ALL {
            for by in AnsweredBy::ALL {
                self.git_advertisements.with_label_values(&[request.as_str(), by.as_str()]);
            }
        }
    }

    /// Counts one ref advertisement and who made it.
    pub fn count_advertisement(&self, request: Advertisement, by: AnsweredBy) {
        self.git_advertisements.with_label_values(&[request.as_str(), by.as_str()]).inc();
    }

    /// Counts one git operation on a repository.
    pub fn record_git_operation(&self, operation: GitOperation, status: OperationStatus, took: Duration) {
        self.git_operations.with_label_values(&[operation.as_str(), status.as_str()]).inc();
        self.git_operation_duration.observe(took.as_secs_f64());
    }

    /// Counts `bytes` of git smart-HTTP body for `repo`.
    pub fn count_git_bytes(&self, repo: &RepoRef, direction: Direction, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.git_bytes.with_label_values(&[direction.as_str()]).inc_by(bytes);
        self.count_repo_traffic(&repo.to_string(), bytes);
    }
}

/// Meters one upload-pack request (POST `git-upload-pack`) as its bytes pass: feed it the
/// request and response bodies, then [`finish`](Self::finish) it. Dropped unfinished (the
/// client went away), it records an error. Transport-agnostic, so a proxy can call it
/// from its body filters.
#[derive(Debug)]
pub struct UploadPackMeter {
    metrics: Metrics,
    repo: RepoRef,
    started: Instant,
    observer: UploadPackObserver,
    finished: bool,
}

impl UploadPackMeter {
    /// Starts metering a request to `repo`.
    pub fn new(metrics: Metrics, repo: RepoRef) -> Self {
        Self {
            metrics,
            repo,
            started: Instant::now(),
            observer: UploadPackObserver::default(),
            finished: false,
        }
    }

    /// The next bytes of the request body (after gzip decoding).
    pub fn on_request(&mut self, chunk: &[u8]) {
        self.observer.on_request(chunk);
        self.metrics.count_git_bytes(&self.repo, Direction::In, chunk.len() as u64);
    }

    /// The next bytes of the response body.
    pub fn on_response(&mut self, chunk: &[u8]) {
        self.observer.on_response(chunk);
        self.metrics.count_git_bytes(&self.repo, Direction::Out, chunk.len() as u64);
    }

    /// Records the operation, if this request was one (see [`crate::git::observe`]).
    pub fn finish(&mut self, status: OperationStatus) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        // git can fail inside a complete response (an `ERR` packet).
        let status = if self.observer.failed { OperationStatus::Error } else { status };
        if let Some(operation) = self.observer.operation(status == OperationStatus::Success) {
            self.metrics.record_git_operation(operation, status, self.started.elapsed());
        }
    }
}

impl Drop for UploadPackMeter {
    fn drop(&mut self) {
        self.finish(OperationStatus::Error);
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;
    use crate::git::pktline::{encode, sideband, FLUSH};
    use crate::metrics::TOP_REPOS;
    use crate::nip34::RepoIdentifier;

    fn repo(name: &str) -> RepoRef {
        RepoRef::new(Keys::generate().public_key(), RepoIdentifier::new(name).unwrap())
    }

    #[test]
    fn top_repos_are_bounded_and_ordered() {
        let m = Metrics::new();
        let repos: Vec<RepoRef> = (0..TOP_REPOS + 5).map(|i| repo(&format!("r{i}"))).collect();
        for (i, r) in repos.iter().enumerate() {
            m.count_git_bytes(r, Direction::Out, 100 + i as u64);
        }
        let text = m.render();
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("ngit_git_top_repos_bytes{")).collect();
        assert_eq!(series.len(), TOP_REPOS, "{text}");
        let busiest = repos.last().unwrap();
        assert!(text.contains(&format!("ngit_git_top_repos_bytes{{repo=\"{busiest}\"}} 114")), "{text}");
        assert!(!text.contains(&repos[0].to_string()), "the quietest repository has no series");
        assert!(text.contains("ngit_git_bytes_total{direction=\"out\"} 1605"), "{text}");
    }

    #[test]
    fn a_metered_clone_counts_once_and_an_abandoned_one_as_an_error() {
        let m = Metrics::new();
        let r = repo("x");
        let mut meter = UploadPackMeter::new(m.clone(), r.clone());
        meter.on_request(
            &[encode(format!("want {} side-band-64k\n", "1".repeat(40)).as_bytes()), FLUSH.to_vec()].concat(),
        );
        meter.on_response(&[encode(b"NAK\n"), sideband(1, b"PACKdata")].concat());
        meter.finish(OperationStatus::Success);
        drop(meter);
        let mut abandoned = UploadPackMeter::new(m.clone(), r);
        abandoned.on_request(&encode(format!("want {}\n", "1".repeat(40)).as_bytes()));
        drop(abandoned);
        let text = m.render();
        assert!(
            text.contains("ngit_git_operations_total{operation=\"clone\",status=\"success\"} 1"),
            "{text}"
        );
        assert!(text.contains("ngit_git_operations_total{operation=\"clone\",status=\"error\"} 1"), "{text}");
        assert!(text.contains("ngit_git_operation_duration_seconds_count 2"), "{text}");
    }
}
