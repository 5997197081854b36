//! Authorize pushes inside your own HTTP server with grasp-lib.
//!
//! A forge that already serves git over HTTP keeps its own server and asks grasp-lib one
//! question per push, before git stores anything:
//!
//! 1. read the push's command section (`pktline::read_push_commands`): which refs move
//!    where. The pack that follows is not read yet;
//! 2. `Grasp::admit_push(repo, updates, client)`: authorized only when the refs after the
//!    push equal a state event signed by the repository's maintainers (held events
//!    included), within the bounds per client address (push rate, `refs/nostr` refs);
//!    a rejection carries one line for the person pushing, which
//!    `smart_http::rejection_response` frames so `git push` prints it;
//! 3. let git receive the pack (here: `git receive-pack --stateless-rpc`);
//! 4. `Grasp::push_received(repo, updates, client)`: releases held events, aligns
//!    repositories.
//!
//! Run it: `cargo run -p example-authorize-push -- --serve` and push to the printed URL
//! after publishing events to a GRASP relay of the same node (this example has no relay;
//! see `relay-in-warp`). Without `--serve` it demonstrates itself: it publishes an
//! announcement and a state in process, pushes a matching commit with the real `git`
//! (accepted) and a different one (refused, with the reason), and exits.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use bytes::Buf;
use futures::TryStreamExt;
use grasp_lib::authorization::PushDecision;
use grasp_lib::config::Config;
use grasp_lib::git::pktline;
use grasp_lib::git::smart_http::{self, Body, Service};
use grasp_lib::git::RepoRef;
use grasp_lib::origin::parse_repo_path;
use grasp_lib::store::StoreBackend;
use grasp_lib::Grasp;
use nostr::nips::nip19::ToBech32;
use nostr::{EventBuilder, Keys, Kind, Tag};
use tokio::io::AsyncReadExt;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// Largest command section read before deciding.
const MAX_COMMANDS: usize = 1024 * 1024;
/// Largest push this example accepts.
const MAX_PUSH: u64 = 64 * 1024 * 1024;

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", content_type.parse().expect("static header"));
    response
}

/// `POST /<npub>/<id>.git/git-receive-pack`: decide, then let git receive.
async fn receive_pack(
    grasp: &Grasp,
    repo: &RepoRef,
    client: Option<IpAddr>,
    mut body: Body,
) -> anyhow::Result<Response> {
    let content_type = Service::ReceivePack.result_content_type();
    let (commands, leftover) = pktline::read_push_commands(&mut body, MAX_COMMANDS).await?;
    if let PushDecision::Rejected { reason, .. } = grasp.admit_push(repo, &commands.updates, client).await? {
        println!("refused a push to {repo}: {reason}");
        // git reads the answer only after sending everything.
        tokio::io::copy(&mut body, &mut tokio::io::sink()).await?;
        let answer = smart_http::rejection_response(&commands, &format!("rejected by GRASP: {reason}"));
        return Ok(reply(StatusCode::OK, content_type, answer));
    }
    let path = grasp.repositories().path(repo);
    let mut git = smart_http::command(Service::ReceivePack, &path, None, false)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = git.stdout.take().expect("stdout is piped");
    let output = tokio::spawn(async move {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await.map(|_| out)
    });
    let mut prefix = commands.raw.clone();
    prefix.extend_from_slice(&leftover);
    smart_http::pipe_body(git.stdin.take().expect("stdin is piped"), &prefix, &mut body, MAX_PUSH).await?;
    let status = git.wait().await?;
    let out = output.await??;
    if status.success() {
        let report = grasp.push_received(repo, &commands.updates, client).await;
        println!("accepted a push to {repo}: {} event(s) released", report.released.len());
    }
    Ok(reply(StatusCode::OK, content_type, out))
}

/// `GET /<npub>/<id>.git/info/refs?service=git-receive-pack`
async fn advertise(grasp: &Grasp, repo: &RepoRef) -> anyhow::Result<Response> {
    let body =
        smart_http::advertisement(&grasp.repositories().path(repo), Service::ReceivePack, None).await?;
    Ok(reply(StatusCode::OK, Service::ReceivePack.advertisement_content_type(), body))
}

/// Push routes only (fetching is left out to keep the example short).
fn routes(grasp: Grasp) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let grasp = warp::any().map(move || grasp.clone());
    let refs = warp::path!(String / String / "info" / "refs")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(grasp.clone())
        .then(|npub: String, name: String, query: HashMap<String, String>, grasp: Grasp| async move {
            let Some(repo) = hosted(&grasp, &npub, &name) else { return not_found() };
            if query.get("service").map(String::as_str) != Some("git-receive-pack") {
                return reply(StatusCode::FORBIDDEN, "text/plain", b"push only\n".to_vec());
            }
            advertise(&grasp, &repo).await.unwrap_or_else(internal_error)
        });
    let push = warp::path!(String / String / "git-receive-pack")
        .and(warp::post())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .and(grasp)
        .then(|npub: String, name: String, remote: Option<SocketAddr>, stream, grasp: Grasp| async move {
            let Some(repo) = hosted(&grasp, &npub, &name) else { return not_found() };
            let body: Body = Box::pin(tokio_util::io::StreamReader::new(stream_bytes(stream)));
            let client = remote.map(|addr| addr.ip());
            receive_pack(&grasp, &repo, client, body).await.unwrap_or_else(internal_error)
        });
    refs.or(push).unify()
}

/// The request body as a stream of byte chunks for a reader.
fn stream_bytes<S, B>(
    stream: S,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    stream.map_ok(|mut b| b.copy_to_bytes(b.remaining())).map_err(std::io::Error::other)
}

/// The repository a URL names, when this node hosts it.
fn hosted(grasp: &Grasp, npub: &str, name: &str) -> Option<RepoRef> {
    let (owner, identifier) = parse_repo_path(&format!("/{npub}/{name}"))?;
    let repo = RepoRef::new(owner, identifier);
    grasp.repositories().exists(&repo).then_some(repo)
}

fn not_found() -> Response {
    reply(StatusCode::NOT_FOUND, "text/plain", b"no such repository\n".to_vec())
}

fn internal_error(e: anyhow::Error) -> Response {
    reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e:#}\n").into_bytes())
}

fn git(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "demo")
        .env("GIT_AUTHOR_EMAIL", "demo@example.invalid")
        .env("GIT_COMMITTER_NAME", "demo")
        .env("GIT_COMMITTER_EMAIL", "demo@example.invalid")
        .output()
        .context("running git")
}

fn commit(dir: &std::path::Path, content: &str) -> anyhow::Result<String> {
    std::fs::write(dir.join("README"), content)?;
    git(dir, &["add", "README"])?;
    git(dir, &["commit", "-q", "-m", content])?;
    Ok(String::from_utf8(git(dir, &["rev-parse", "HEAD"])?.stdout)?.trim().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let dir = tempfile::tempdir()?;
    let config = Config {
        domain: Some(addr.to_string()),
        database_backend: StoreBackend::Memory,
        git_data_path: dir.path().join("repos"),
        ..Config::default()
    };
    let grasp = Grasp::open(config).await?;
    println!("listening on http://{addr}");
    let server = tokio::spawn(warp::serve(routes(grasp.clone())).incoming(listener).run());
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    // The maintainer announces the repository (the node creates it) and signs a state.
    let owner = Keys::generate();
    let url = format!("http://{addr}/{}/demo.git", owner.public_key().to_bech32()?);
    let announcement = EventBuilder::new(Kind::Custom(30617), "")
        .tags([
            Tag::parse(["d", "demo"])?,
            Tag::parse(["clone", url.as_str()])?,
            Tag::parse(["relays", &format!("ws://{addr}")])?,
        ])
        .sign_with_keys(&owner)?;
    grasp.relay().ingest(announcement).await;
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "-q", "-b", "main"])?;
    let signed = commit(&work, "signed")?;
    let state = EventBuilder::new(Kind::Custom(30618), "")
        .tags([Tag::parse(["d", "demo"])?, Tag::parse(["refs/heads/main", signed.as_str()])?])
        .sign_with_keys(&owner)?;
    grasp.relay().ingest(state).await;

    let accepted = git(&work, &["push", &url, "main"])?;
    println!("push of the signed commit: {}", if accepted.status.success() { "accepted" } else { "refused" });
    commit(&work, "not signed")?;
    let refused = git(&work, &["push", &url, "main"])?;
    let refused_text = String::from_utf8_lossy(&refused.stderr);
    println!("push of an unsigned commit: {}", if refused.status.success() { "accepted" } else { "refused" });
    for line in refused_text.lines().filter(|l| l.contains("rejected")) {
        println!("  git says: {line}");
    }
    server.abort();
    if !accepted.status.success() || refused.status.success() || !refused_text.contains("would be at") {
        bail!("unexpected: {}\n{refused_text}", String::from_utf8_lossy(&accepted.stderr));
    }
    Ok(())
}
