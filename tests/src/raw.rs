//! A plain websocket client for messages nostr-sdk will not send (malformed JSON, forged
//! signatures) and for reading the exact relay replies.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

/// One raw websocket connection.
pub struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawClient {
    /// Connects to `url` (`ws://…`).
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = connect_async(url).await.expect("websocket connect");
        Self { ws }
    }

    /// Connects with extra request headers (e.g. what a reverse proxy adds).
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Self {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("websocket request");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                value.parse().expect("header value"),
            );
        }
        let (ws, _) = connect_async(request).await.expect("websocket connect");
        Self { ws }
    }

    /// Connects with extra request headers; `Err` says why the handshake failed (for a
    /// refused connection, the HTTP status and body the server answered).
    pub async fn try_connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<Self, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Error;
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                value.parse().expect("header value"),
            );
        }
        match connect_async(request).await {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(Error::Http(response)) => Err(format!(
                "HTTP {}: {}",
                response.status().as_u16(),
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends text as-is.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.expect("send");
    }

    /// Sends a JSON value.
    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next relay message, parsed; panics after 10 s.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(Duration::from_secs(10)).await.expect("a relay message within 10 s")
    }

    /// The next relay message within `timeout`, or `None`.
    pub async fn try_recv(&mut self, timeout: Duration) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next()).await.ok()??.ok()?;
            match msg {
                Message::Text(text) => return Some(serde_json::from_str(&text).expect("relay sent JSON")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Reads (and so answers pings, as any websocket client does while it reads) until the
    /// server has sent `n` pings; false if they do not come within `timeout`.
    pub async fn wait_for_pings(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = 0;
        while seen < n {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Ping(_)))) => seen += 1,
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return false,
                Ok(Some(Ok(_))) => {}
            }
        }
        true
    }

    /// Sends `["EVENT", event]` and returns the `OK` reply as (accepted, message).
    pub async fn publish(&mut self, event: &Value) -> (bool, String) {
        self.send(serde_json::json!(["EVENT", event])).await;
        loop {
            let reply = self.recv().await;
            if reply[0] == "OK" {
                return (reply[2].as_bool().expect("bool"), reply[3].as_str().unwrap_or("").to_owned());
            }
        }
    }

    /// [`RawClient::publish`] that tolerates a server that goes away: `None` when no `OK`
    /// came (the connection broke or nothing arrived within 10 s).
    pub async fn try_publish(&mut self, event: &Value) -> Option<(bool, String)> {
        self.ws.send(Message::text(serde_json::json!(["EVENT", event]).to_string())).await.ok()?;
        loop {
            let reply = self.try_recv(Duration::from_secs(10)).await?;
            if reply[0] == "OK" {
                return Some((reply[2].as_bool()?, reply[3].as_str().unwrap_or("").to_owned()));
            }
        }
    }

    /// Sends a REQ and collects events until EOSE (or a CLOSED, returned as Err).
    pub async fn req(&mut self, sub: &str, filters: &[Value]) -> Result<Vec<Value>, String> {
        let mut msg = vec![Value::from("REQ"), Value::from(sub)];
        msg.extend(filters.iter().cloned());
        self.send(Value::Array(msg)).await;
        let mut events = Vec::new();
        loop {
            let reply = self.recv().await;
            match reply[0].as_str() {
                Some("EVENT") if reply[1] == sub => events.push(reply[2].clone()),
                Some("EOSE") if reply[1] == sub => return Ok(events),
                Some("CLOSED") if reply[1] == sub => return Err(reply[2].as_str().unwrap_or("").to_owned()),
                _ => {}
            }
        }
    }
}
