//! The open-file limit. Every connection is a descriptor (four while git serves it), and
//! the usual soft limit (1024) is far below what the kernel allows the process (the hard
//! limit); a server raises its soft limit to the hard one at start.

/// The descriptor limit before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process started with.
    pub soft_before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (the most the soft limit may be raised to).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and reports both. Returns `None` where
/// the limit cannot be read (non-Unix) or was not changed because reading it failed.
pub fn raise_nofile_limit() -> Option<NofileLimit> {
    imp::raise()
}

#[cfg(target_os = "linux")]
mod imp {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};

    use super::NofileLimit;

    pub(super) fn raise() -> Option<NofileLimit> {
        let (soft_before, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        let mut soft = soft_before;
        if soft_before < hard {
            match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                Ok(()) => soft = hard,
                Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
            }
        }
        Some(NofileLimit { soft_before, soft, hard })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn raise() -> Option<super::NofileLimit> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn soft_limit_ends_at_the_hard_limit() {
        let limit = raise_nofile_limit().expect("linux reports the limit");
        assert_eq!(limit.soft, limit.hard);
        assert!(limit.soft >= limit.soft_before);
        // Idempotent.
        assert_eq!(raise_nofile_limit().unwrap().soft_before, limit.hard);
    }
}
