//! Child processes that start their own children (node and chromium, nginx workers): each
//! runs in its own process group, and the whole group is killed on drop.

use std::process::{Child, Command};

/// A child process leading its own process group; dropping it kills the group, and the
/// groups it was told about (children that moved to their own group, as chromium does).
pub struct ProcessGroup {
    child: Child,
    others: Vec<u32>,
}

impl ProcessGroup {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        Ok(Self { child: command.process_group(0).spawn()?, others: Vec::new() })
    }

    /// Also kills process group `pgid` on drop.
    pub fn also_kill_group(&mut self, pgid: u32) {
        self.others.push(pgid);
    }

    /// The leader (for its pipes and exit status).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // The group id is the leader's pid; `kill -KILL -- -<pgid>` reaches every member,
        // also the ones that outlived the leader.
        for pgid in std::iter::once(self.child.id()).chain(self.others.iter().copied()) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
