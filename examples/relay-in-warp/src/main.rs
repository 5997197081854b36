//! Run the GRASP relay engine inside your own warp application.
//!
//! The relay engine in grasp-lib is transport-agnostic: a `Session` turns client messages
//! into relay messages and `relay::connection::drive` joins one to any stream and sink.
//! Here it is mounted on a warp websocket at `/relay`, next to the application's own route
//! `/hello`, on one port.
//!
//! Run it: `cargo run -p example-relay-in-warp -- --serve` (Ctrl-C stops it). Without
//! `--serve` it starts on a free port, connects to itself as a Nostr client, publishes an
//! announcement (held until git data arrives), asks for announcements, and exits.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use futures::{future, SinkExt, StreamExt};
use grasp_lib::config::Config;
use grasp_lib::relay::connection::{self, Inbound, Outbound};
use grasp_lib::store::StoreBackend;
use grasp_lib::Grasp;
use nostr::nips::nip19::ToBech32;
use nostr::{EventBuilder, JsonUtil, Keys, Kind, Tag};
use tokio_tungstenite::tungstenite::Message;
use warp::ws::{Message as WsMessage, WebSocket, Ws};
use warp::Filter;

/// One websocket connection: a relay session for the peer, driven until either side closes.
async fn relay_connection(socket: WebSocket, peer: Option<SocketAddr>, grasp: Grasp) {
    let (sink, stream) = socket.split();
    let incoming = stream
        .map(|frame| match frame {
            Ok(msg) if msg.is_text() => Inbound::Text(msg.to_str().unwrap_or_default().to_owned()),
            Ok(msg) if msg.is_binary() => Inbound::Binary,
            Ok(msg) if msg.is_close() => Inbound::Close,
            Ok(_) => Inbound::Control,
            Err(_) => Inbound::Close,
        })
        .take_while(|frame| future::ready(!matches!(frame, Inbound::Close)));
    let outgoing = sink.with(|frame: Outbound| {
        future::ok::<_, warp::Error>(match frame {
            Outbound::Text(text) => WsMessage::text(text),
            Outbound::Ping => WsMessage::ping(Vec::new()),
        })
    });
    let relay = grasp.relay().clone();
    let ip = peer.map(|p| p.ip()).unwrap_or([127, 0, 0, 1].into());
    // Pings every `websocket_ping_interval_secs`; a silent or stuck client is closed.
    let keep_alive = grasp.config().keep_alive();
    connection::drive(relay.session(ip), &relay, Box::pin(incoming), Box::pin(outgoing), keep_alive).await;
}

/// The application: its own routes plus the relay.
fn app(grasp: Grasp) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let hello = warp::path("hello").map(|| "hello from your own app\n");
    let relay = warp::path("relay").and(warp::ws()).and(warp::addr::remote()).map(move |ws: Ws, peer| {
        let grasp = grasp.clone();
        ws.on_upgrade(move |socket| relay_connection(socket, peer, grasp))
    });
    hello.or(relay)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve_forever = std::env::args().any(|a| a == "--serve");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let dir = tempfile::tempdir()?;
    let config = Config {
        // Announcements must list this host in their clone and relays URLs.
        domain: Some(addr.to_string()),
        database_backend: StoreBackend::Memory,
        git_data_path: dir.path().join("repos"),
        ..Config::default()
    };
    let grasp = Grasp::open(config).await?;
    println!("listening on http://{addr} (relay at ws://{addr}/relay)");
    let server = tokio::spawn(warp::serve(app(grasp)).incoming(listener).run());
    if serve_forever {
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/relay")).await?;
    let owner = Keys::generate();
    let npub = owner.public_key().to_bech32()?;
    let announcement = EventBuilder::new(Kind::Custom(30617), "")
        .tags([
            Tag::parse(["d", "demo"])?,
            Tag::parse(["clone", &format!("http://{addr}/{npub}/demo.git")])?,
            Tag::parse(["relays", &format!("ws://{addr}")])?,
        ])
        .sign_with_keys(&owner)?;
    let send = format!(r#"["EVENT",{}]"#, announcement.as_json());
    let req = r#"["REQ","demo",{"kinds":[30617]}]"#;
    let mut replies = Vec::new();
    for message in [send.as_str(), req] {
        ws.send(Message::text(message)).await?;
        let reply = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .context("no reply within 10 s")?
            .context("connection closed")??;
        println!("relay: {reply}");
        replies.push(reply.to_text()?.to_owned());
    }
    if !replies[0].contains("purgatory") || !replies[1].starts_with(r#"["EOSE","demo"]"#) {
        bail!("unexpected replies: {replies:?}");
    }
    // The application's own route answers on the same port.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut http = tokio::net::TcpStream::connect(addr).await?;
    http.write_all(b"GET /hello HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n").await?;
    let mut answer = String::new();
    http.read_to_string(&mut answer).await?;
    println!("GET /hello: {}", answer.lines().last().unwrap_or_default());
    if !answer.contains("hello from your own app") {
        bail!("unexpected answer from /hello: {answer}");
    }
    server.abort();
    Ok(())
}
