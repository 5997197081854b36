//! A full disk: the server's data lives on a small tmpfs that the test fills up. Pushes are
//! refused with a reason `git push` shows, events get `error:` replies, nothing half-written
//! is served, reads keep working, and once space is back the server works again without a
//! restart.
//!
//! Mounting a tmpfs needs root (CAP_SYS_ADMIN); where that is not possible the test says so
//! and passes without running.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use grasp_tests::git::{bare_refs, git, Workdir};
use grasp_tests::server::purgatory_list_in;
use grasp_tests::{events, host_repository, publish, wait_until, RawClient, TestServer};
use nostr_sdk::prelude::*;
use serde_json::json;

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the server may still hold files open while the test unwinds.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the file system at `dir` with one file until a write fails; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0x5au8; 64 * 1024];
    while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {}
    // Fill the last partial chunk too.
    while file.write_all(&chunk[..512]).is_ok() {}
    path
}

fn journal_lines_parse(relay: &Path) {
    let journal = relay.join("purgatory").join("purgatory.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "the journal ends in half a record: {text:?}");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("torn journal line {line:?}: {e}"));
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_cleanly_and_recovers_by_itself() {
    let tmpfs = match Tmpfs::mount("48m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!(
                "SKIPPED full-disk test: cannot mount a size-limited tmpfs here ({reason}); run as root"
            );
            return;
        }
    };
    let repos = tmpfs.path().join("repos");
    let relay = tmpfs.path().join("relay");
    let server = TestServer::builder()
        .arg(format!("--git-data-path={}", repos.display()))
        .arg(format!("--relay-data-path={}", relay.display()))
        .start();
    let client = server.client().await;
    let owner = Keys::generate();
    let coordinate = host_repository(&server, &client, &owner, "full", &[]).await;
    let url = server.clone_url(&owner.public_key(), "full");
    let repo = repos.join(owner.public_key().to_bech32().unwrap()).join("full.git");
    let before = bare_refs(&repo);

    // A state for the next push is held while there is space.
    let work = Workdir::clone_from(&url, &[]);
    grasp_tests::memory::write_random_file(&work.path().join("big.bin"), 4 << 20);
    let next = work.commit("note", b"needs space");
    let later = Timestamp::from(Timestamp::now().as_secs() + 1);
    publish(&client, &events::state_at(&owner, "full", &[("refs/heads/main", &next)], Some("main"), later))
        .await
        .expect("state held");

    let filler = fill(tmpfs.path());

    // The push is refused with a reason git shows, and nothing of it lands.
    let out = work.fails(&["push", &url, "main"]);
    eprintln!("git push on a full disk printed:\n{out}");
    assert!(out.contains("No space left on device") || out.contains("disk"), "git push printed:\n{out}");
    assert_eq!(bare_refs(&repo), before);
    let fsck = git(&repo, &["fsck", "--no-progress"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));

    // Events get `error:`; those refused are not served, those accepted are.
    let mut raw = RawClient::connect(&server.ws_url()).await;
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for i in 0..60 {
        let event = match i % 3 {
            0 => events::issue(&Keys::generate(), &coordinate),
            1 => events::announcement(&Keys::generate(), &format!("new{i}"), &server.addr, &[]),
            // Held in purgatory (its commit never comes): a journal write.
            _ => {
                let never = format!("{:040x}", i);
                let at = Timestamp::from(Timestamp::now().as_secs() + 2 + i);
                events::state_at(&owner, "full", &[("refs/heads/main", &never)], Some("main"), at)
            }
        };
        let (ok, message) = raw.publish(&events::json(&event)).await;
        if ok {
            accepted.push(event);
        } else {
            assert!(message.starts_with("error:"), "a refusal on a full disk says error: ({message})");
            refused.push(event);
        }
    }
    eprintln!("on a full disk: {} events accepted, {} refused", accepted.len(), refused.len());
    assert!(!refused.is_empty(), "no event was refused on a full disk");
    let ids: Vec<String> = refused.iter().chain(&accepted).map(|e| e.id.to_hex()).collect();
    let served: Vec<String> = raw
        .req("check", &[json!({"ids": ids})])
        .await
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let held: Vec<String> = purgatory_list_in(&relay, &server.database_args())
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    for event in &refused {
        let id = event.id.to_hex();
        assert!(!served.contains(&id) && !held.contains(&id), "refused event {id} is served or held");
        if event.kind == Kind::Custom(30617) {
            let d = event.tags.identifier().unwrap();
            let path = repos.join(event.pubkey.to_bech32().unwrap()).join(format!("{d}.git"));
            assert!(
                !path.exists(),
                "a refused announcement left a half-made repository at {}",
                path.display()
            );
        }
    }
    for event in &accepted {
        let id = event.id.to_hex();
        assert!(served.contains(&id) || held.contains(&id), "accepted event {id} is neither served nor held");
    }
    journal_lines_parse(&relay);

    // Reads keep working.
    let clone = Workdir::clone_from(&url, &[]);
    assert_eq!(clone.rev("HEAD"), before.0.iter().find(|(n, _)| n == "refs/heads/main").unwrap().1);
    assert_eq!(raw.req("reads", &[json!({"kinds": [30617]})]).await.map(|e| !e.is_empty()), Ok(true));

    // Space comes back: the server works again, no restart.
    std::fs::remove_file(&filler).unwrap();
    work.ok(&["push", &url, "main"]);
    wait_until("the pushed state is applied", Duration::from_secs(30), || async {
        bare_refs(&repo).0.contains(&("refs/heads/main".to_owned(), next.clone())).then_some(())
    })
    .await;
    for event in &refused {
        let (ok, message) = raw.publish(&events::json(event)).await;
        assert!(ok, "a re-sent event is accepted once there is space: {message}");
        // Not a ghost of the refused attempt, which never reached the journal.
        assert!(!message.starts_with("duplicate"), "a refused event was kept after all: {message}");
    }
    journal_lines_parse(&relay);
    let fsck = git(&repo, &["fsck", "--no-progress"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
    drop(client);
    drop(server);
}
