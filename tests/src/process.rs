//! Child processes that start their own children (node and chromium, nginx workers,
//! fcgiwrap's CGI children, the git processes a server spawns): each runs in its own
//! process group, and the whole group is killed on drop, so nothing a test or benchmark
//! started keeps running after it.

use std::process::{Child, Command};

/// A child process leading its own process group; dropping it kills the group, and the
/// groups it was told about (children that moved to their own group, as chromium does).
pub struct ProcessGroup {
    child: Child,
    others: Vec<u32>,
    killed: bool,
}

impl ProcessGroup {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        Ok(Self { child: command.process_group(0).spawn()?, others: Vec::new(), killed: false })
    }

    /// Also kills process group `pgid` on drop.
    pub fn also_kill_group(&mut self, pgid: u32) {
        self.others.push(pgid);
    }

    /// The leader (for its pipes and exit status).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The leader's process id (also the group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the leader already exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILLs the groups now and reaps the leader (what dropping does).
    pub fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        // The group id is the leader's pid; `kill -KILL -- -<pgid>` reaches every member,
        // also the ones that outlived the leader.
        for pgid in std::iter::once(self.child.id()).chain(self.others.iter().copied()) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
