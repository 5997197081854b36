//! What only grasp-proxy does: it keeps refused pushes away from the git server behind it,
//! reports that server's failures clearly, provisions repositories so the stock server
//! serves them like grasp-server, and can terminate TLS itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use grasp_tests::events;
use grasp_tests::git::{git_ok, Workdir};
use grasp_tests::http::request;
use grasp_tests::remotes::{refused_url, SilentRemote};
use grasp_tests::{publish, Frontend};
use nostr_sdk::prelude::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const D: &str = "repo";

fn has_cors(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| n == "access-control-allow-origin" && v == "*")
}

#[tokio::test]
async fn a_refused_push_shows_its_reason_and_never_reaches_the_upstream() {
    let server = Frontend::Proxy.start();
    let upstream = server.upstream().expect("the proxy runs in front of nginx");
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
    let url = server.clone_url(&owner.public_key(), D);
    let repo_url_path = format!("/{}/{D}.git", owner.public_key().to_bech32().unwrap());
    let receive_pack = format!("POST {repo_url_path}/git-receive-pack ");

    let work = Workdir::new();
    let c1 = work.commit("README", b"hello");
    let out = work.fails(&["push", &url, "main"]);
    assert!(out.contains("rejected by GRASP") && out.contains("no state event"), "{out}");
    let log = upstream.access_log();
    // The push started at the upstream (its ref advertisement), but the pack never went.
    assert!(log.contains(&format!("GET {repo_url_path}/info/refs 200")), "{log}");
    assert!(!log.contains(&receive_pack), "the refused push reached the upstream:\n{log}");

    // The same push, authorized, goes through the upstream.
    publish(&client, &events::state(&owner, D, &[("refs/heads/main", &c1)], Some("main"))).await.unwrap();
    work.ok(&["push", &url, "main"]);
    assert!(upstream.access_log().contains(&format!("{receive_pack}200")), "{}", upstream.access_log());
    let clone = Workdir::clone_from(&url, &[]);
    assert_eq!(clone.rev("HEAD"), c1);

    // The repository tells git http-backend what grasp-server passes on its command line.
    let repo = server.repo_path(&owner.public_key(), D);
    for key in
        ["uploadpack.allowFilter", "uploadpack.allowTipSHA1InWant", "uploadpack.allowReachableSHA1InWant"]
    {
        assert_eq!(git_ok(&repo, &["config", "--get", key]), "true", "{key}");
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_a_silent_one_a_504() {
    let server = Frontend::Proxy.builder().arg(format!("--upstream={}", refused_url(""))).start();
    let client = server.client().await;
    let owner = Keys::generate();
    publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
    let npub = owner.public_key().to_bech32().unwrap();
    let info_refs = format!("/{npub}/{D}.git/info/refs?service=git-upload-pack");
    let resp = request(&server.addr, "GET", &info_refs, &[], b"").await;
    assert_eq!(resp.status, 502, "{}", String::from_utf8_lossy(&resp.body));
    assert!(has_cors(&resp.headers), "{:?}", resp.headers);
    assert!(String::from_utf8_lossy(&resp.body).contains("git server behind this GRASP proxy"));
    let work = Workdir::new();
    let c1 = work.commit("a", b"1");
    publish(&client, &events::state(&owner, D, &[("refs/heads/main", &c1)], Some("main"))).await.unwrap();
    let out = work.fails(&["push", &server.clone_url(&owner.public_key(), D), "main"]);
    assert!(out.contains("502"), "{out}");
    // The relay and the pages do not need the upstream.
    assert_eq!(server.nip11().await["supported_grasps"], serde_json::json!(["GRASP-01", "GRASP-06"]));

    let silent = SilentRemote::start();
    let server = Frontend::Proxy
        .builder()
        .arg(format!("--upstream={}", silent.url("")))
        .arg("--upstream-timeout-secs=1")
        .start();
    let client = server.client().await;
    publish(&client, &events::announcement(&owner, D, &server.addr, &[])).await.unwrap();
    let resp = request(&server.addr, "GET", &info_refs, &[], b"").await;
    assert_eq!(resp.status, 504, "{}", String::from_utf8_lossy(&resp.body));
    assert!(has_cors(&resp.headers), "{:?}", resp.headers);
}

/// A websocket client over TLS that trusts `ca` (the test's self-signed certificate).
async fn wss_connect(
    addr: &str,
    ca: &Path,
) -> WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{crypto, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).expect("certificate")).expect("trust it");
    let config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
    let (ws, _) =
        tokio_tungstenite::client_async(format!("wss://{addr}/"), tls).await.expect("websocket upgrade");
    ws
}

/// Sends an EVENT and returns the relay's OK as (accepted, message).
async fn publish_over<S>(ws: &mut WebSocketStream<S>, event: &Event) -> (bool, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let message = serde_json::json!(["EVENT", events::json(event)]).to_string();
    ws.send(Message::text(message)).await.expect("send");
    loop {
        let reply =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer in 10 s");
        let Some(Ok(Message::Text(text))) = reply else { panic!("connection ended: {reply:?}") };
        let reply: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        if reply[0] == "OK" {
            return (reply[2] == true, reply[3].as_str().unwrap_or_default().to_owned());
        }
    }
}

/// A test CA and a certificate it signed for 127.0.0.1: (CA file, certificate, key).
fn make_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=grasp test CA", "-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[&["req"][..], &ec, &["-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "leaf.csr"]].concat(),
    );
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

#[tokio::test]
async fn https_and_wss_on_the_one_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificate(dir.path());
    let server = Frontend::Proxy
        .builder()
        .arg(format!("--tls-certificate-path={}", cert.display()))
        .arg(format!("--tls-private-key-path={}", key.display()))
        .start();
    let addr = &server.addr;

    // NIP-11 over HTTPS.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .args(["-H", "Accept: application/nostr+json"])
        .arg(format!("https://{addr}/"))
        .output()
        .expect("run curl");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("NIP-11 over https: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(doc["repo_acceptance_criteria"].as_str().unwrap().contains(addr.as_str()));

    // Publish over WSS an announcement with https/wss URLs, and a state.
    let mut ws = wss_connect(addr, &ca).await;
    let owner = Keys::generate();
    let npub = owner.public_key().to_bech32().unwrap();
    let url = format!("https://{addr}/{npub}/{D}.git");
    let announcement = events::announcement_with(&owner, D, &[url.clone()], &[format!("wss://{addr}")], &[]);
    let (accepted, message) = publish_over(&mut ws, &announcement).await;
    assert!(accepted, "{message}");
    let work = Workdir::new();
    let c1 = work.commit("README", b"over tls");
    let state = events::state(&owner, D, &[("refs/heads/main", &c1)], Some("main"));
    assert!(publish_over(&mut ws, &state).await.0);

    // Push and clone over HTTPS, forwarded to the plain-HTTP upstream.
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_SSL_CAINFO", &ca)
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?} over https: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(work.path(), &["push", "-q", &url, "main"]);
    let clone = tempfile::tempdir().unwrap();
    git(clone.path(), &["clone", "-q", &url, "c"]);
    assert_eq!(git_ok(&clone.path().join("c"), &["rev-parse", "HEAD"]), c1);
}
