//! The programs in `examples/` run as smoke tests: each demonstrates itself against the
//! real git CLI or a real websocket and exits non-zero when the demonstration fails.

use std::process::Command;

use grasp_tests::server::binary;

/// Runs an example binary (built by `cargo build --workspace --bins`) and returns stdout.
fn run(name: &str) -> String {
    let out = Command::new(binary(name)).output().unwrap_or_else(|e| panic!("run {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn authorize_push_accepts_the_signed_commit_and_refuses_another() {
    let out = run("example-authorize-push");
    assert!(out.contains("push of the signed commit: accepted"), "{out}");
    assert!(out.contains("push of an unsigned commit: refused"), "{out}");
    assert!(out.contains("rejected by GRASP: the refs after this push do not match"), "{out}");
}

#[test]
fn relay_in_warp_serves_the_relay_next_to_its_own_routes() {
    let out = run("example-relay-in-warp");
    assert!(out.contains("purgatory: won't be served until git data arrives"), "{out}");
    assert!(out.contains(r#"["EOSE","demo"]"#), "{out}");
    assert!(out.contains("GET /hello: hello from your own app"), "{out}");
}

#[test]
fn released_events_reach_the_subscriber() {
    let out = run("example-released-events");
    assert!(out.contains("released state"), "{out}");
    assert!(out.contains("released announcement"), "{out}");
}
