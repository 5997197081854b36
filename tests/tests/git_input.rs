//! Bad input on the git endpoints gets a 4xx (or a clear push refusal), loses nothing and
//! the server keeps serving.

use grasp_tests::events;
use grasp_tests::git::{bare_refs, Workdir};
use grasp_tests::http::request;
use grasp_tests::memory::{peak_rss, rss, write_random_file};
use grasp_tests::{frontend_tests, host_repository, publish, Frontend, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "repo";

async fn hosted(server: &TestServer) -> (Client, Keys) {
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
    (client, owner)
}

fn assert_cors(headers: &[(String, String)], what: &str) {
    assert!(
        headers.iter().any(|(n, v)| n == "access-control-allow-origin" && v == "*"),
        "{what}: {headers:?}"
    );
    assert!(headers.iter().any(|(n, _)| n == "access-control-allow-headers"), "{what}: {headers:?}");
}

async fn malformed_receive_pack_bodies_get_400_and_the_server_keeps_serving(frontend: Frontend) {
    let server = frontend.start();
    let (client, owner) = hosted(&server).await;
    let path = format!("/{}/{D}.git/git-receive-pack", owner.public_key().to_bech32().unwrap());
    let ct = [("Content-Type", "application/x-git-receive-pack-request")];
    let zero = "0".repeat(40);
    let one = "1".repeat(40);
    let full = format!("{zero} {one} refs/heads/main\0report-status\n");
    let line = format!("{:04x}{full}", full.len() + 4);
    for (what, body) in [
        ("truncated pkt-line", line.as_bytes()[..30].to_vec()),
        ("missing flush", line.as_bytes().to_vec()),
        ("garbage", b"this is not a pkt-line at all".to_vec()),
        ("bad length", b"zzzzgarbage".to_vec()),
        ("bad command", b"0010not a command0000".to_vec()),
        ("empty", Vec::new()),
    ] {
        let resp = request(&server.addr, "POST", &path, &ct, &body).await;
        assert_eq!(resp.status, 400, "{what}: {}", String::from_utf8_lossy(&resp.body));
        assert_cors(&resp.headers, what);
    }
    let resp = request(&server.addr, "POST", &path, &[("Content-Encoding", "br")], b"x").await;
    assert_eq!(resp.status, 415, "receive-pack bodies are read here, so their encoding is checked here");
    assert_cors(&resp.headers, "415");

    let upload = format!("/{}/{D}.git/git-upload-pack", owner.public_key().to_bech32().unwrap());
    let garbage = b"garbage that git cannot parse";
    match server.upstream() {
        None => {
            let resp = request(&server.addr, "POST", &upload, &[], garbage).await;
            assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(&resp.body));
            let resp = request(&server.addr, "POST", &upload, &[("Content-Encoding", "br")], b"x").await;
            assert_eq!(resp.status, 415);
            let resp =
                request(&server.addr, "POST", &upload, &[("Content-Encoding", "gzip")], b"not gzip").await;
            assert!(resp.status >= 400, "bad gzip must fail: {}", resp.status);
        }
        Some(upstream) => {
            // Fetch requests pass to the upstream untouched: git http-backend answers them.
            let git_type = [("Content-Type", "application/x-git-upload-pack-request")];
            let resp = request(&server.addr, "POST", &upload, &git_type, garbage).await;
            assert_cors(&resp.headers, "upload-pack garbage");
            // nginx writes the access log line when it finalizes the request, which can be
            // just after the client has the answer.
            let line = format!("POST {upload} ");
            grasp_tests::poll::wait_until(
                "nginx logged the forwarded fetch",
                std::time::Duration::from_secs(10),
                || {
                    let logged = upstream.access_log().contains(&line);
                    async move { logged.then_some(()) }
                },
            )
            .await;
        }
    }

    // still serving: a real push works
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    publish(&client, &events::state(&owner, D, &[("refs/heads/main", &c1)], Some("main"))).await.unwrap();
    work.ok(&["push", &server.clone_url(&owner.public_key(), D), "main"]);
}

async fn path_tricks_get_404(frontend: Frontend) {
    let server = frontend.start();
    let (_client, owner) = hosted(&server).await;
    let npub = owner.public_key().to_bech32().unwrap();
    let ok = format!("/{npub}/{D}.git/info/refs?service=git-upload-pack");
    assert_eq!(request(&server.addr, "GET", &ok, &[], b"").await.status, 200);
    for path in [
        format!("/{npub}/../{npub}/{D}.git/info/refs?service=git-upload-pack"),
        format!("/{npub}/{D}.git/../../../etc/passwd"),
        format!("/{npub}/%2e%2e/{D}.git/info/refs?service=git-upload-pack"),
        format!("/{npub}/..%2F{npub}%2F{D}.git/info/refs?service=git-upload-pack"),
        format!("/{npub}/{D}%2F.git/info/refs?service=git-upload-pack"),
        format!("/{npub}/%00.git/info/refs?service=git-upload-pack"),
        format!("/npub1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq/{D}.git/info/refs"),
        format!("/{}/{D}.git/info/refs?service=git-upload-pack", &npub[..20]),
        format!("/{npub}/{D}.git/objects/info/packs"),
        format!("/{npub}/{D}.git/HEAD"),
        format!("/{npub}/unknown.git/info/refs?service=git-upload-pack"),
        format!("/{npub}/unknown.git"),
    ] {
        let resp = request(&server.addr, "GET", &path, &[], b"").await;
        assert_eq!(resp.status, 404, "{path}");
        assert_cors(&resp.headers, &path);
    }
    // dumb HTTP and unknown services are refused, not served
    let resp = request(&server.addr, "GET", &format!("/{npub}/{D}.git/info/refs"), &[], b"").await;
    assert_eq!(resp.status, 403);
    let resp =
        request(&server.addr, "GET", &format!("/{npub}/{D}.git/info/refs?service=git-shell"), &[], b"").await;
    assert_eq!(resp.status, 403);
    // the repository page exists, and is HTML
    let resp = request(&server.addr, "GET", &format!("/{npub}/{D}.git"), &[], b"").await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-type").unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&resp.body).contains(&format!("{npub}/{D}.git")));
}

async fn broken_repository_answers_an_error_with_cors(frontend: Frontend) {
    let server = frontend.start();
    let (_client, owner) = hosted(&server).await;
    let repo = server.repo_path(&owner.public_key(), D);
    std::fs::write(repo.join("HEAD"), "this is not a ref\n").unwrap();
    std::fs::remove_dir_all(repo.join("objects")).unwrap();
    let npub = owner.public_key().to_bech32().unwrap();
    // grasp-server runs git itself and answers 500; behind the proxy the upstream's own
    // error comes back (git http-backend says 404 for a directory that is not a repository).
    let expected = |status: u16| match frontend {
        Frontend::Inline => status == 500,
        Frontend::Proxy => status >= 400,
    };
    let resp =
        request(&server.addr, "GET", &format!("/{npub}/{D}.git/info/refs?service=git-upload-pack"), &[], b"")
            .await;
    assert!(expected(resp.status), "{}: {}", resp.status, String::from_utf8_lossy(&resp.body));
    assert_cors(&resp.headers, "info/refs of a broken repository");
    let resp = request(&server.addr, "POST", &format!("/{npub}/{D}.git/git-upload-pack"), &[], b"0000").await;
    assert!(expected(resp.status), "{}: {}", resp.status, String::from_utf8_lossy(&resp.body));
    assert_cors(&resp.headers, "upload-pack of a broken repository");
}

async fn push_over_the_size_cap_is_refused_without_memory_growth(frontend: Frontend) {
    let server = frontend.builder().arg("--max-push-size=1048576").start();
    let (client, owner) = hosted(&server).await;
    let url = server.clone_url(&owner.public_key(), D);
    let work = Workdir::new();
    write_random_file(&work.path().join("big.bin"), 24 * 1024 * 1024);
    work.ok(&["add", "big.bin"]);
    work.ok(&["commit", "-q", "-m", "big"]);
    let c1 = work.rev("HEAD");
    publish(&client, &events::state(&owner, D, &[("refs/heads/main", &c1)], Some("main"))).await.unwrap();

    let idle = rss(server.pid());
    let out = work.fails(&["-c", "pack.compression=0", "push", &url, "main"]);
    assert!(out.contains("larger than the 1048576 bytes"), "{out}");
    let growth = peak_rss(server.pid()).saturating_sub(idle);
    println!(
        "server RSS: idle {} MiB, peak growth during a refused 24 MiB push {} MiB",
        idle >> 20,
        growth >> 20
    );
    assert!(growth < 16 << 20, "refusing a big push grew server memory by {} MiB", growth >> 20);

    // nothing landed, and a small push still works
    let small = Workdir::new();
    let s1 = small.commit("a", b"small");
    publish(&client, &events::state(&owner, D, &[("refs/heads/main", &s1)], Some("main"))).await.unwrap();
    small.ok(&["push", &url, "main"]);
}

/// A pack that leaves out objects its commits need (here the new commit's parent, which
/// the server never had) is refused by git's connectivity check: nothing lands, and the
/// full push afterwards does.
async fn a_push_missing_objects_its_commits_need_is_refused(frontend: Frontend) {
    let server = frontend.start();
    let client = server.client().await;
    let owner = Keys::generate();
    host_repository(&server, &client, &owner, D, &[]).await;
    let url = server.clone_url(&owner.public_key(), D);
    let repo = server.repo_path(&owner.public_key(), D);
    let before = bare_refs(&repo);
    let work = Workdir::clone_from(&url, &[]);
    let hosted = work.rev("HEAD");
    let parent = work.commit("a", b"the parent the server never gets");
    let tip = work.commit("b", b"the tip");
    let later = Timestamp::from(Timestamp::now().as_secs() + 1);
    publish(&client, &events::state_at(&owner, D, &[("refs/heads/main", &tip)], Some("main"), later))
        .await
        .unwrap();

    let command = format!("{hosted} {tip} refs/heads/main\0report-status\n");
    let mut body = format!("{:04x}{command}0000", command.len() + 4).into_bytes();
    body.extend(work.pack(&parent, &tip));
    let path = format!("/{}/{D}.git/git-receive-pack", owner.public_key().to_bech32().unwrap());
    let answer = request(
        &server.addr,
        "POST",
        &path,
        &[("Content-Type", "application/x-git-receive-pack-request")],
        &body,
    )
    .await;
    let text = String::from_utf8_lossy(&answer.body);
    assert!(text.contains("ng refs/heads/main"), "{} {text}", answer.status);
    assert_eq!(bare_refs(&repo), before, "nothing landed");

    work.ok(&["push", &url, "main"]);
    assert!(bare_refs(&repo).0.contains(&("refs/heads/main".to_owned(), tip)));
}

frontend_tests!(
    malformed_receive_pack_bodies_get_400_and_the_server_keeps_serving,
    path_tricks_get_404,
    broken_repository_answers_an_error_with_cors,
    push_over_the_size_cap_is_refused_without_memory_growth,
    a_push_missing_objects_its_commits_need_is_refused,
);
