//! The hunt scheduler: the queue, the domain throttles and each identifier's running
//! attempt, as one pure state machine.
//!
//! The caller feeds it what happened (an event was held, a plan or a fetch finished, time
//! passed) with the current time and carries out the [`Action`]s it returns. One attempt
//! works through the identifier's URLs one at a time: after every fetch the identifier's
//! needs are looked up again, so ids can come from several remotes and the attempt ends as
//! soon as nothing is missing. A URL whose domain is busy is skipped for a free one; when
//! every remaining domain is busy, the identifier waits in their lines.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::queue::{AttemptEnd, HuntQueue, QueueTimers};
use super::remote::{FetchError, Fetched, Wanted};
use super::status::{HuntStatus, IdentifierHunt, TriedUrl};
use super::throttle::{DomainThrottles, ThrottleLimits};
use super::urls;
use crate::policy::EventSource;

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Find out what `identifier` needs ([`super::HuntRemote::wanted`]) and report it with
    /// [`Scheduler::planned`].
    Plan {
        /// The identifier.
        identifier: String,
    },
    /// Fetch `oids` from `url` (a slot of `domain` is taken), run the git-data step if
    /// something landed, look the needs up again and report with [`Scheduler::fetched`].
    Fetch {
        /// The identifier.
        identifier: String,
        /// Where from.
        url: String,
        /// The throttle slot this fetch holds.
        domain: String,
        /// The ids still missing.
        oids: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    url: String,
    domain: String,
    /// The only ids this URL may be asked for (a pull request's clone URL), if limited.
    only: Option<BTreeSet<String>>,
}

/// The attempt running for one identifier.
#[derive(Debug)]
struct Attempt {
    oids: Vec<String>,
    urls: Vec<Candidate>,
    tried: HashSet<String>,
    fetching: bool,
}

impl Attempt {
    /// URLs not tried yet that can still help: a limited URL only while one of its ids is
    /// missing.
    fn untried(&self) -> Vec<Candidate> {
        self.urls
            .iter()
            .filter(|c| !self.tried.contains(&c.url))
            .filter(|c| !self.asked_of(c).is_empty())
            .cloned()
            .collect()
    }

    /// The missing ids `candidate` may be asked for.
    fn asked_of(&self, candidate: &Candidate) -> Vec<String> {
        match &candidate.only {
            Some(only) => self.oids.iter().filter(|o| only.contains(*o)).cloned().collect(),
            None => self.oids.clone(),
        }
    }

    fn take(&mut self, wanted: Wanted) {
        self.oids = wanted.oids.into_iter().collect();
        let Wanted { urls, mut scoped, .. } = wanted;
        for url in urls {
            let only = scoped.remove(&url);
            match self.urls.iter_mut().find(|c| c.url == url) {
                Some(known) => known.only = only,
                None => {
                    if let Some(domain) = urls::domain(&url) {
                        self.urls.push(Candidate { url, domain, only });
                    }
                }
            }
        }
    }
}

/// How one fetch ended, in words for operators.
pub fn describe(result: &Result<Fetched, FetchError>, asked: usize) -> String {
    match result {
        Ok(f) if f.landed.is_empty() => "had none of the missing objects".to_owned(),
        Ok(f) => format!("landed {} of {asked} missing ids ({} new objects)", f.landed.len(), f.new_objects),
        Err(e) => e.to_string(),
    }
}

/// Queue, throttles and running attempts.
#[derive(Debug)]
pub struct Scheduler {
    timers: QueueTimers,
    queue: HuntQueue,
    throttles: DomainThrottles,
    attempts: HashMap<String, Attempt>,
    tried: HashMap<String, Vec<TriedUrl>>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(timers: QueueTimers, limits: ThrottleLimits) -> Self {
        Self {
            timers,
            queue: HuntQueue::new(),
            throttles: DomainThrottles::new(limits),
            attempts: HashMap::new(),
            tried: HashMap::new(),
        }
    }

    /// An event of `identifier` from `source` was held.
    pub fn enqueue(&mut self, identifier: &str, source: EventSource, now: u64) {
        let delay = match source {
            EventSource::Client(_) => self.timers.client_delay,
            EventSource::Sync => self.timers.sync_delay,
        };
        self.queue.enqueue(identifier, delay, now);
    }

    /// Resumes an identifier from the status a previous run wrote.
    pub fn restore(&mut self, identifier: &str, hunt: &IdentifierHunt) {
        self.queue.restore(identifier, hunt.next_attempt, hunt.attempts);
        if !hunt.tried.is_empty() {
            self.tried.insert(identifier.to_owned(), hunt.tried.clone());
        }
    }

    /// What is due at `now`: attempts to plan, and fetches whose domain slot freed up
    /// because a rate window moved on.
    pub fn due(&mut self, now: u64) -> Vec<Action> {
        let mut actions: Vec<Action> =
            self.queue.take_due(now).into_iter().map(|identifier| Action::Plan { identifier }).collect();
        actions.extend(self.grants(now));
        actions
    }

    /// The answer to [`Action::Plan`].
    pub fn planned(&mut self, identifier: &str, wanted: Wanted, now: u64) -> Vec<Action> {
        if wanted.is_done() {
            self.end(identifier, AttemptEnd::Done, now);
            return Vec::new();
        }
        let mut attempt =
            Attempt { oids: Vec::new(), urls: Vec::new(), tried: HashSet::new(), fetching: false };
        attempt.take(wanted);
        self.attempts.insert(identifier.to_owned(), attempt);
        self.advance(identifier, now)
    }

    /// The answer to [`Action::Fetch`]: what the fetch did and what is missing now.
    pub fn fetched(
        &mut self,
        identifier: &str,
        url: &str,
        domain: &str,
        result: &Result<Fetched, FetchError>,
        wanted: Wanted,
        now: u64,
    ) -> Vec<Action> {
        self.throttles.finish(domain, now);
        let asked = self.attempts.get(identifier).map_or(0, |a| a.oids.len());
        let tried = self.tried.entry(identifier.to_owned()).or_default();
        tried.retain(|t| t.url != url);
        tried.push(TriedUrl { url: url.to_owned(), at: now, result: describe(result, asked) });
        let mut actions = Vec::new();
        if let Some(attempt) = self.attempts.get_mut(identifier) {
            attempt.fetching = false;
            attempt.tried.insert(url.to_owned());
            if wanted.is_done() {
                self.end(identifier, AttemptEnd::Done, now);
            } else {
                attempt.take(wanted);
                actions = self.advance(identifier, now);
            }
        }
        actions.extend(self.grants(now));
        actions
    }

    /// Starts the next fetch of `identifier`'s attempt, or makes it wait for a slot, or
    /// ends the attempt when every URL was tried.
    fn advance(&mut self, identifier: &str, now: u64) -> Vec<Action> {
        let Some(attempt) = self.attempts.get_mut(identifier) else { return Vec::new() };
        let untried = attempt.untried();
        if untried.is_empty() {
            self.end(identifier, AttemptEnd::Waiting, now);
            return Vec::new();
        }
        if let Some(free) = untried.iter().find(|c| self.throttles.can_start(&c.domain, now)) {
            self.throttles.start(&free.domain, now);
            attempt.fetching = true;
            return vec![Action::Fetch {
                identifier: identifier.to_owned(),
                url: free.url.clone(),
                domain: free.domain.clone(),
                oids: attempt.asked_of(free),
            }];
        }
        for candidate in &untried {
            self.throttles.wait(&candidate.domain, identifier);
        }
        Vec::new()
    }

    /// Turns throttle grants into fetches.
    fn grants(&mut self, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        loop {
            let granted = self.throttles.grant(now);
            if granted.is_empty() {
                return actions;
            }
            for (domain, identifier) in granted {
                let next = self.attempts.get_mut(&identifier).filter(|a| !a.fetching).and_then(|a| {
                    let candidate = a.untried().into_iter().find(|c| c.domain == domain)?;
                    a.fetching = true;
                    Some((candidate.url.clone(), a.asked_of(&candidate)))
                });
                match next {
                    Some((url, oids)) => actions.push(Action::Fetch { identifier, url, domain, oids }),
                    // The attempt moved on meanwhile: give the slot back.
                    None => self.throttles.finish(&domain, now),
                }
            }
        }
    }

    fn end(&mut self, identifier: &str, end: AttemptEnd, now: u64) {
        self.attempts.remove(identifier);
        self.throttles.cancel(identifier);
        self.queue.finish(identifier, end, &self.timers, now);
        if self.queue.get(identifier).is_none() {
            self.tried.remove(identifier);
        }
    }

    /// The earliest time [`Scheduler::due`] has something to do.
    pub fn next_wakeup(&self) -> Option<u64> {
        match (self.queue.next_due(), self.throttles.next_wakeup()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The queue entry of `identifier`, if queued.
    pub fn entry(&self, identifier: &str) -> Option<&super::queue::QueueEntry> {
        self.queue.get(identifier)
    }

    /// Queued identifiers (waiting or running).
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Requests in flight to `domain`.
    pub fn in_flight(&self, domain: &str) -> u32 {
        self.throttles.in_flight(domain)
    }

    /// What operators see per identifier.
    pub fn status(&self) -> HuntStatus {
        HuntStatus {
            identifiers: self
                .queue
                .iter()
                .map(|(id, e)| {
                    let hunt = IdentifierHunt {
                        next_attempt: e.next_attempt,
                        attempts: e.attempts,
                        running: e.running,
                        tried: self.tried.get(id).cloned().unwrap_or_default(),
                    };
                    (id.clone(), hunt)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::remote::mock::MockRemote;
    use super::*;

    const S: u64 = 1000;

    /// Drives a scheduler against the mock remote in simulated time: every fetch takes
    /// `fetch_ms`; planning is instant.
    struct Sim {
        scheduler: Scheduler,
        remote: MockRemote,
        now: u64,
        fetch_ms: u64,
        /// (ends at, action)
        in_flight: Vec<(u64, Action)>,
        /// (started at, identifier, url)
        started: Vec<(u64, String, String)>,
        max_in_flight: BTreeMap<String, u32>,
    }

    impl Sim {
        fn new(remote: MockRemote, limits: ThrottleLimits) -> Self {
            Self {
                scheduler: Scheduler::new(QueueTimers::default(), limits),
                remote,
                now: 0,
                fetch_ms: 1000,
                in_flight: Vec::new(),
                started: Vec::new(),
                max_in_flight: BTreeMap::new(),
            }
        }

        fn perform(&mut self, actions: Vec<Action>) {
            let mut todo: std::collections::VecDeque<Action> = actions.into();
            while let Some(action) = todo.pop_front() {
                match action {
                    Action::Plan { identifier } => {
                        let wanted = self.remote.wanted_now(&identifier);
                        todo.extend(self.scheduler.planned(&identifier, wanted, self.now));
                    }
                    Action::Fetch { ref identifier, ref url, ref domain, .. } => {
                        self.started.push((self.now, identifier.clone(), url.clone()));
                        let n = self.scheduler.in_flight(domain);
                        let max = self.max_in_flight.entry(domain.clone()).or_default();
                        *max = (*max).max(n);
                        self.in_flight.push((self.now + self.fetch_ms, action));
                    }
                }
            }
        }

        fn complete(&mut self, action: Action) {
            let Action::Fetch { identifier, url, domain, oids } = action else { unreachable!() };
            let result = self.remote.fetch_now(&identifier, &url, &oids);
            if result.as_ref().is_ok_and(|f| !f.landed.is_empty()) {
                self.remote.process_now(&identifier);
            }
            let wanted = self.remote.wanted_now(&identifier);
            let actions = self.scheduler.fetched(&identifier, &url, &domain, &result, wanted, self.now);
            self.perform(actions);
        }

        /// Runs until `until`, handling every timer and fetch completion in time order.
        fn run_until(&mut self, until: u64) {
            loop {
                let actions = self.scheduler.due(self.now);
                self.perform(actions);
                self.in_flight.sort_by_key(|(at, _)| *at);
                let next_fetch = self.in_flight.first().map(|(at, _)| *at);
                let next = [next_fetch, self.scheduler.next_wakeup()].into_iter().flatten().min();
                match next {
                    Some(at) if at <= until => {
                        self.now = at.max(self.now);
                        while self.in_flight.first().is_some_and(|(at, _)| *at <= self.now) {
                            let (_, action) = self.in_flight.remove(0);
                            self.complete(action);
                        }
                    }
                    _ => {
                        self.now = until;
                        return;
                    }
                }
            }
        }

        fn fetch_times(&self, url: &str) -> Vec<u64> {
            self.started.iter().filter(|(_, _, u)| u == url).map(|(t, _, _)| *t).collect()
        }
    }

    #[test]
    fn first_attempt_waits_for_the_source_delay() {
        let remote = MockRemote::new()
            .needs("client", &["c1"], &["https://a.example/c.git"])
            .needs("synced", &["s1"], &["https://a.example/s.git"])
            .serves("https://a.example/c.git", &["c1"])
            .serves("https://a.example/s.git", &["s1"]);
        let mut sim = Sim::new(remote, ThrottleLimits::default());
        sim.scheduler.enqueue("client", EventSource::Client(None), 0);
        sim.scheduler.enqueue("synced", EventSource::Sync, 0);
        sim.run_until(170 * S);
        assert_eq!(sim.fetch_times("https://a.example/s.git"), vec![500]);
        assert!(sim.fetch_times("https://a.example/c.git").is_empty(), "a push may still come");
        sim.run_until(200 * S);
        assert_eq!(sim.fetch_times("https://a.example/c.git"), vec![180 * S]);
        assert_eq!(sim.scheduler.queue_len(), 0, "both found: they leave the queue");
        assert_eq!(sim.remote.processed(), vec!["synced", "client"]);
    }

    #[test]
    fn ids_from_two_remotes_are_gathered_in_one_attempt() {
        let remote = MockRemote::new()
            .needs("r", &["main", "feature"], &["https://a.example/r.git", "https://b.example/r.git"])
            .serves("https://a.example/r.git", &["main"])
            .serves("https://b.example/r.git", &["feature"]);
        let mut sim = Sim::new(remote, ThrottleLimits::default());
        sim.scheduler.enqueue("r", EventSource::Sync, 0);
        sim.run_until(10 * S);
        let order: Vec<&str> = sim.started.iter().map(|(_, _, u)| u.as_str()).collect();
        assert_eq!(order, vec!["https://a.example/r.git", "https://b.example/r.git"]);
        assert_eq!(sim.remote.processed(), vec!["r", "r"], "the git-data step after each fetch");
        assert_eq!(sim.scheduler.queue_len(), 0);
    }

    #[test]
    fn the_attempt_stops_once_nothing_is_missing_and_skips_fetches_that_found_nothing() {
        let remote = MockRemote::new()
            .needs(
                "r",
                &["x"],
                &["https://a.example/r.git", "https://b.example/r.git", "https://c.example/r.git"],
            )
            .serves("https://b.example/r.git", &["x"])
            .serves("https://c.example/r.git", &["x"]);
        let mut sim = Sim::new(remote, ThrottleLimits::default());
        sim.scheduler.enqueue("r", EventSource::Sync, 0);
        sim.run_until(10 * S);
        let order: Vec<&str> = sim.started.iter().map(|(_, _, u)| u.as_str()).collect();
        assert_eq!(order, vec!["https://a.example/r.git", "https://b.example/r.git"]);
        assert_eq!(sim.remote.processed(), vec!["r"], "no git-data step after a fetch that brought nothing");
    }

    #[test]
    fn an_unreachable_remote_is_skipped_and_retried_with_backoff() {
        let remote = MockRemote::new()
            .needs("r", &["here", "nowhere"], &["https://dead.example/r.git", "https://b.example/r.git"])
            .fails("https://dead.example/r.git", FetchError::Failed("connection refused".into()))
            .serves("https://b.example/r.git", &["here"]);
        let mut sim = Sim::new(remote, ThrottleLimits::default());
        sim.scheduler.enqueue("r", EventSource::Sync, 0);
        sim.run_until(3 * S);
        assert_eq!(sim.remote.processed(), vec!["r"], "the other remote's ids landed at once");
        sim.run_until(400 * S);
        let dead = sim.fetch_times("https://dead.example/r.git");
        let gaps: Vec<u64> = dead.windows(2).map(|w| (w[1] - w[0]) / S).collect();
        // Each attempt takes 2 s (two fetches); then 20, 40, 80, 120, 120 s of backoff.
        assert_eq!(gaps, vec![22, 42, 82, 122, 122]);
        let status = sim.scheduler.status();
        let hunt = &status.identifiers["r"];
        assert_eq!(hunt.attempts, 6);
        let tried: Vec<(&str, &str)> =
            hunt.tried.iter().map(|t| (t.url.as_str(), t.result.as_str())).collect();
        assert_eq!(
            tried,
            vec![
                ("https://dead.example/r.git", "failed: connection refused"),
                ("https://b.example/r.git", "had none of the missing objects"),
            ],
            "every URL once, with its latest result"
        );
        assert!(hunt.next_attempt > sim.now);
    }

    #[test]
    fn a_new_event_restarts_the_backoff_and_a_release_ends_the_hunt() {
        let remote = MockRemote::new()
            .needs("r", &["nowhere"], &["https://a.example/r.git"])
            .serves("https://a.example/r.git", &["later"]);
        let mut sim = Sim::new(remote, ThrottleLimits::default());
        sim.scheduler.enqueue("r", EventSource::Sync, 0);
        sim.run_until(100 * S); // attempts at 0.5, 21.5, 62.5
        assert_eq!(sim.fetch_times("https://a.example/r.git").len(), 3);
        sim.remote.add_need("r", "later");
        sim.scheduler.enqueue("r", EventSource::Sync, sim.now);
        sim.run_until(103 * S);
        assert_eq!(sim.fetch_times("https://a.example/r.git").last(), Some(&(100 * S + 500)));
        assert_eq!(sim.scheduler.status().identifiers["r"].attempts, 1, "counted from zero again");
        sim.remote.release_all("r");
        sim.run_until(200 * S);
        assert_eq!(sim.scheduler.queue_len(), 0, "nothing held: it leaves the queue");
        assert_eq!(sim.fetch_times("https://a.example/r.git").len(), 4);
    }

    #[test]
    fn a_pull_requests_url_is_asked_only_for_its_commit() {
        let mut scheduler = Scheduler::new(QueueTimers::default(), ThrottleLimits::default());
        let pr = "https://fork.example/pr.git".to_owned();
        let maintainer = "https://main.example/repo.git".to_owned();
        let wanted = Wanted {
            held: true,
            oids: ["a".to_owned(), "b".to_owned()].into(),
            urls: vec![pr.clone(), maintainer.clone()],
            scoped: [(pr.clone(), ["b".to_owned()].into())].into(),
        };
        let actions = scheduler.planned("r", wanted.clone(), 0);
        assert_eq!(
            actions,
            vec![Action::Fetch {
                identifier: "r".into(),
                url: pr.clone(),
                domain: "fork.example".into(),
                oids: vec!["b".into()]
            }]
        );
        // Once its commit landed, the pull request's URL has nothing left to give.
        let after = Wanted { oids: ["a".to_owned()].into(), ..wanted };
        let result = Ok(Fetched { landed: vec!["b".into()], new_objects: 1, bytes: 1 });
        let actions = scheduler.fetched("r", &pr, "fork.example", &result, after, 1);
        assert_eq!(
            actions,
            vec![Action::Fetch {
                identifier: "r".into(),
                url: maintainer,
                domain: "main.example".into(),
                oids: vec!["a".into()]
            }]
        );
    }

    #[test]
    fn at_most_five_fetches_at_once_and_thirty_a_minute_per_domain() {
        let mut remote = MockRemote::new();
        for i in 0..40 {
            let url = format!("https://one.example/r{i}.git");
            remote = remote.needs(&format!("r{i}"), &["x"], &[&url]).serves(&url, &["x"]);
        }
        let mut sim = Sim::new(remote, ThrottleLimits { total: 100, ..ThrottleLimits::default() });
        sim.fetch_ms = 100;
        for i in 0..40 {
            sim.scheduler.enqueue(&format!("r{i}"), EventSource::Sync, 0);
        }
        sim.run_until(59 * S);
        assert_eq!(sim.max_in_flight["one.example"], 5);
        assert_eq!(sim.started.len(), 30, "the rate window is full");
        sim.run_until(200 * S);
        assert_eq!(sim.started.len(), 40);
        assert!(sim.started[30..].iter().all(|(t, _, _)| *t >= 60 * S), "the rest after the window moved");
        assert_eq!(sim.scheduler.queue_len(), 0);
    }

    #[test]
    fn repositories_of_one_domain_take_turns() {
        let mut remote = MockRemote::new();
        for r in ["a", "b", "c"] {
            let urls: Vec<String> = (0..3).map(|i| format!("https://one.example/{r}{i}.git")).collect();
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            remote = remote.needs(r, &["x"], &urls);
        }
        let mut sim = Sim::new(remote, ThrottleLimits { concurrent: 1, per_minute: 1000, total: 100 });
        for r in ["a", "b", "c"] {
            sim.scheduler.enqueue(r, EventSource::Sync, 0);
        }
        sim.run_until(15 * S); // one attempt each, before the backoff ends
        let order: Vec<&str> = sim.started.iter().map(|(_, r, _)| r.as_str()).collect();
        assert_eq!(order, vec!["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn a_busy_domain_is_skipped_for_a_free_one() {
        let remote = MockRemote::new()
            .needs("r", &["x", "y"], &["https://busy.example/r.git", "https://free.example/r.git"])
            .serves("https://free.example/r.git", &["x"])
            .serves("https://busy.example/r.git", &["y"]);
        let mut sim = Sim::new(remote, ThrottleLimits { concurrent: 1, per_minute: 1000, total: 100 });
        sim.scheduler.throttles.start("busy.example", 0); // someone else's request
        sim.scheduler.enqueue("r", EventSource::Sync, 0);
        sim.run_until(2 * S);
        assert_eq!(sim.fetch_times("https://free.example/r.git"), vec![500]);
        assert!(sim.fetch_times("https://busy.example/r.git").is_empty(), "waits in line");
        sim.scheduler.throttles.finish("busy.example", sim.now);
        sim.run_until(4 * S);
        assert_eq!(sim.fetch_times("https://busy.example/r.git").len(), 1, "granted when the slot freed");
        assert_eq!(sim.scheduler.queue_len(), 0);
    }

    #[test]
    fn restart_resumes_from_the_written_status() {
        let remote = MockRemote::new().needs("r", &["nowhere"], &["https://a.example/r.git"]);
        let mut sim = Sim::new(remote, ThrottleLimits::default());
        sim.scheduler.enqueue("r", EventSource::Sync, 0);
        sim.run_until(30 * S);
        let written = sim.scheduler.status();
        let hunt = written.identifiers["r"].clone();
        assert_eq!((hunt.attempts, hunt.next_attempt), (2, 21_500 + 1000 + 40 * S));
        // A new process: same status, same needs.
        let remote = MockRemote::new().needs("r", &["nowhere"], &["https://a.example/r.git"]);
        let mut after = Sim::new(remote, ThrottleLimits::default());
        after.now = 40 * S;
        after.scheduler.restore("r", &hunt);
        assert_eq!(after.scheduler.status(), written);
        after.run_until(70 * S);
        assert_eq!(after.fetch_times("https://a.example/r.git"), vec![hunt.next_attempt]);
        assert_eq!(after.scheduler.status().identifiers["r"].attempts, 3);
    }
}
