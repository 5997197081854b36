//! Ref advertisements made by grasp-server itself (`info/refs` for both services, protocol
//! v2 `ls-refs`): clones over protocol v0 and v2, pushes, `git ls-remote` and fetches work;
//! the answers are byte for byte what git prints for the repository on disk; and the
//! metrics show that none of them spawned git, so a push spawns git once.

use std::path::Path;
use std::process::{Command, Stdio};

use grasp_tests::git::{git_ok, Workdir};
use grasp_tests::metrics::Exposition;
use grasp_tests::{events, host_repository, publish, Frontend, TestServer};
use nostr_sdk::prelude::*;

const D: &str = "advertised";

/// The settings grasp-server gives git (and every hosted repository's own config holds).
const SERVING: [(&str, &str); 7] = [
    ("uploadpack.allowTipSHA1InWant", "true"),
    ("uploadpack.allowReachableSHA1InWant", "true"),
    ("uploadpack.allowFilter", "true"),
    ("uploadpack.hideRefs", "refs/grasp/"),
    ("receive.fsckObjects", "true"),
    ("receive.autogc", "false"),
    ("receive.hideRefs", "refs/grasp/"),
];

/// What `git <service> --stateless-rpc` prints for the repository at `path`: its
/// advertisement, or with `input` its answer to that request.
fn git_answer(service: &str, path: &Path, protocol: Option<&str>, input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut cmd = Command::new("git");
    for (key, value) in SERVING.iter().filter(|(key, _)| key.starts_with(service.split('-').next().unwrap()))
    {
        cmd.arg("-c").arg(format!("{key}={value}"));
    }
    cmd.arg(service).arg("--stateless-rpc");
    if input.is_none() {
        cmd.arg("--advertise-refs");
    }
    cmd.arg(path).env_remove("GIT_PROTOCOL");
    if let Some(protocol) = protocol {
        cmd.env("GIT_PROTOCOL", protocol);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.unwrap_or_default()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {service}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn pkt(line: &str) -> Vec<u8> {
    match line {
        "0000" | "0001" => line.as_bytes().to_vec(),
        _ => [format!("{:04x}", line.len() + 4).into_bytes(), line.as_bytes().to_vec()].concat(),
    }
}

fn readable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\\0")
}

fn advertisements(metrics: &str, request: &str, answered_by: &str) -> f64 {
    Exposition::parse(metrics)
        .value("grasp_git_advertisements_total", &[("request", request), ("answered_by", answered_by)])
        .unwrap_or_else(|| panic!("no grasp_git_advertisements_total {request} {answered_by}:\n{metrics}"))
}

/// `git ls-remote` output as (object, ref) pairs.
fn ls_remote(url: &str, version: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = git_ok(dir.path(), &["-c", &format!("protocol.version={version}"), "ls-remote", url]);
    out.lines().map(str::to_owned).collect()
}

/// A served repository with a branch, a lightweight and an annotated tag.
async fn populated(server: &TestServer, owner: &Keys) -> (Workdir, String) {
    let client = server.client().await;
    publish(&client, &events::announcement(owner, D, &server.addr, &[])).await.unwrap();
    let work = Workdir::new();
    let c1 = work.commit("README", b"one");
    work.ok(&["tag", "light"]);
    work.ok(&["tag", "-a", "v1", "-m", "release 1"]);
    let annotated = work.rev("refs/tags/v1");
    let refs = [
        ("refs/heads/main", c1.as_str()),
        ("refs/tags/light", &c1),
        ("refs/tags/v1", &annotated),
        ("refs/tags/v1^{}", &c1),
    ];
    publish(&client, &events::state(owner, D, &refs, Some("main"))).await.unwrap();
    let url = server.clone_url(&owner.public_key(), D);
    work.ok(&["push", "-q", &url, "main", "--tags"]);
    (work, url)
}

#[tokio::test]
async fn clones_pushes_and_listings_get_their_refs_without_spawning_git() {
    let server = Frontend::Inline.start();
    let client = server.client().await;
    let owner = Keys::generate();
    host_repository(&server, &client, &owner, D, &[]).await;
    let url = server.clone_url(&owner.public_key(), D);

    let v0 = Workdir::clone_from(&url, &["-c", "protocol.version=0"]);
    let v2 = Workdir::clone_from(&url, &["-c", "protocol.version=2"]);
    assert_eq!(v0.rev("HEAD"), v2.rev("HEAD"));
    assert_eq!(v2.ok(&["symbolic-ref", "HEAD"]), "refs/heads/main");

    // A push: a new commit and an annotated tag, under a new state.
    let next = v2.commit("more", b"more");
    v2.ok(&["tag", "-a", "v2", "-m", "release 2"]);
    let tag = v2.rev("refs/tags/v2");
    let later = Timestamp::from(Timestamp::now().as_secs() + 1);
    let refs = [("refs/heads/main", next.as_str()), ("refs/tags/v2", &tag), ("refs/tags/v2^{}", &next)];
    publish(&client, &events::state_at(&owner, D, &refs, Some("main"), later)).await.unwrap();
    v2.ok(&["push", "-q", &url, "main", "v2"]);

    for version in ["0", "1", "2"] {
        let listed = ls_remote(&url, version);
        let expected = [
            format!("{next}\tHEAD"),
            format!("{next}\trefs/heads/main"),
            format!("{tag}\trefs/tags/v2"),
            format!("{next}\trefs/tags/v2^{{}}"),
        ];
        assert_eq!(listed, expected, "ls-remote over protocol v{version}");
    }
    v0.ok(&["-c", "protocol.version=0", "fetch", "-q", "origin"]);
    assert_eq!(v0.rev("origin/main"), next);
    v0.ok(&["-c", "protocol.version=2", "fetch", "-q", "--tags", "origin"]);
    assert_eq!(v0.rev("refs/tags/v2"), tag);

    let metrics = server.metrics().await;
    let log = server.log();
    assert_eq!(advertisements(&metrics, "info_refs", "git"), 0.0, "{log}");
    assert_eq!(advertisements(&metrics, "ls_refs", "git"), 0.0, "{log}");
    // Two pushes, two clones, three listings, two fetches.
    assert!(advertisements(&metrics, "info_refs", "grasp") >= 9.0, "{metrics}");
    // The v2 clone, the v2 listing and the v2 fetch.
    assert!(advertisements(&metrics, "ls_refs", "grasp") >= 3.0, "{metrics}");
    assert!(!log.contains("left to git"), "{log}");
}

#[tokio::test]
async fn advertisements_are_gits_own_bytes() {
    let server = Frontend::Inline.start();
    let owner = Keys::generate();
    let (_work, url) = populated(&server, &owner).await;
    let path = server.repo_path(&owner.public_key(), D);
    let http = reqwest::Client::new();

    for service in ["upload-pack", "receive-pack"] {
        for protocol in [None, Some("version=1"), Some("version=2")] {
            let mut request = http.get(format!("{url}/info/refs?service=git-{service}"));
            if let Some(protocol) = protocol {
                request = request.header("Git-Protocol", protocol);
            }
            let body = request.send().await.unwrap().bytes().await.unwrap();
            let mut expected = Vec::new();
            if protocol != Some("version=2") {
                expected.extend(pkt(&format!("# service=git-{service}\n")));
                expected.extend(pkt("0000"));
            }
            expected.extend(git_answer(service, &path, protocol, None));
            assert!(
                body.as_ref() == expected.as_slice(),
                "{service} {protocol:?}\ngit:\n{}\nserver:\n{}",
                readable(&expected),
                readable(&body)
            );
        }
    }

    let caps = ["command=ls-refs\n", "agent=git/2.47.3\n", "object-format=sha1\n", "0001"];
    for args in [
        &[
            "peel\n",
            "symrefs\n",
            "unborn\n",
            "ref-prefix HEAD\n",
            "ref-prefix refs/heads/\n",
            "ref-prefix refs/tags/\n",
        ][..],
        &["symrefs\n", "peel\n"],
        &["ref-prefix refs/tags/v\n"],
    ] {
        let request: Vec<u8> = caps.iter().chain(args).chain(&["0000"]).flat_map(|line| pkt(line)).collect();
        let body = http
            .post(format!("{url}/git-upload-pack"))
            .header("Git-Protocol", "version=2")
            .header("Content-Type", "application/x-git-upload-pack-request")
            .body(request.clone())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let expected = git_answer("upload-pack", &path, Some("version=2"), Some(&request));
        assert!(
            body.as_ref() == expected.as_slice(),
            "ls-refs {args:?}\ngit:\n{}\nserver:\n{}",
            readable(&expected),
            readable(&body)
        );
    }

    let metrics = server.metrics().await;
    assert_eq!(advertisements(&metrics, "info_refs", "git"), 0.0, "{}", server.log());
    assert_eq!(advertisements(&metrics, "ls_refs", "git"), 0.0, "{}", server.log());
    assert_eq!(advertisements(&metrics, "ls_refs", "grasp"), 3.0, "{metrics}");
}

#[tokio::test]
async fn a_repository_git_must_read_itself_is_still_served() {
    let server = Frontend::Inline.start();
    let owner = Keys::generate();
    let (_work, url) = populated(&server, &owner).await;
    // A config entry the in-process advertisement does not reproduce: git answers.
    let path = server.repo_path(&owner.public_key(), D);
    git_ok(&path, &["config", "--add", "uploadpack.hideRefs", "refs/tags/light"]);

    for version in ["0", "2"] {
        let listed = ls_remote(&url, version);
        assert!(listed.iter().any(|l| l.ends_with("\trefs/tags/v1")), "{listed:?}");
        assert!(!listed.iter().any(|l| l.ends_with("\trefs/tags/light")), "{listed:?}");
    }
    let clone = Workdir::clone_from(&url, &["-c", "protocol.version=2"]);
    assert_eq!(clone.ok(&["tag"]), "v1");

    let metrics = server.metrics().await;
    assert!(advertisements(&metrics, "info_refs", "git") >= 3.0, "{metrics}");
    assert!(advertisements(&metrics, "ls_refs", "git") >= 2.0, "{metrics}");
}
