//! Crash injection, for the crash tests: named points where the process can be made to die
//! as abruptly as `SIGKILL` kills it (no destructors, nothing flushed).
//!
//! Inert unless the `FAILPOINTS` environment variable names a point when the frontend starts
//! (`fail::FailScenario::setup`), e.g. `FAILPOINTS=push-after-receive-pack=return` dies the
//! first time a push gets there and `2*off->return` the third time. The points:
//!
//! | Point | Where |
//! |---|---|
//! | `push-while-receiving` | git has the whole pack and is still working on it |
//! | `push-after-receive-pack` | git updated the refs; the git-data step has not run |
//! | `purgatory-journal-torn` | half of a journal record is on disk |
//! | `release-after-store` | a released event is stored but still in purgatory |
//! | `align-before-record` | a repository's refs moved; the state it follows is not recorded |
//! | `ingest-before-ok` | an event was stored or held; its `OK` is not sent |

/// Dies at once when the failpoint `name` is configured to fire now.
pub fn point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        die(name);
    }
}

/// True when the failpoint `name` fires now (for points that must do something first, like
/// write half a record); the caller then calls [`die`].
pub fn fires(name: &str) -> bool {
    fail::eval(name, |_| ()).is_some()
}

/// Ends the process as `SIGKILL` would.
pub fn die(name: &str) -> ! {
    eprintln!("grasp: crash injected at {name}");
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    std::process::abort()
}
