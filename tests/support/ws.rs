//! A WebSocket client for the tests: an agent desktop, or any socket a test opens.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

pub struct Socket {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How an attempt to open a socket ended.
pub enum Opened {
    Open(Box<Socket>),
    /// The server answered the upgrade with this status and body.
    Refused(u16, String),
}

impl Socket {
    /// Opens a socket, or panics with why not.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Socket {
        match Socket::try_open(url, headers).await {
            Opened::Open(socket) => *socket,
            Opened::Refused(status, body) => panic!("{url}: refused with {status}: {body}"),
        }
    }

    pub async fn try_open(url: &str, headers: &[(&str, &str)]) -> Opened {
        let mut request = url.into_client_request().expect("a WebSocket URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.parse().expect("a header value"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => Opened::Open(Box::new(Socket { stream })),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Opened::Refused(status, body)
            }
            Err(err) => panic!("{url}: cannot open a WebSocket: {err}"),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send a WebSocket message");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.stream
            .send(Message::binary(bytes))
            .await
            .expect("send a WebSocket message");
    }

    /// The next data message (text or binary), skipping pings; `None` if the socket closed.
    pub async fn next_message(&mut self, wait: Duration) -> Option<Message> {
        self.next_or_close(wait).await.ok()
    }

    /// The next data message (text or binary), skipping pings; or the server's close frame
    /// (`None` inside if it sent none) once the socket closed.
    pub async fn next_or_close(&mut self, wait: Duration) -> Result<Message, Option<CloseFrame>> {
        loop {
            let frame = tokio::time::timeout(wait, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no WebSocket frame within {wait:?}"));
            match frame {
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => return Err(frame),
                None | Some(Err(_)) => return Err(None),
                Some(Ok(message)) => return Ok(message),
            }
        }
    }

    /// The next text message; panics on anything else.
    pub async fn next_text(&mut self) -> String {
        match self.next_message(FRAME_WAIT).await {
            Some(Message::Text(text)) => text.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next text message, as JSON.
    pub async fn next_json(&mut self) -> serde_json::Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
    }

    /// Whether no data message arrives within `wait`.
    pub async fn stays_quiet(&mut self, wait: Duration) -> bool {
        loop {
            match tokio::time::timeout(wait, self.stream.next()).await {
                Err(_) => return true,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(_) => return false,
            }
        }
    }

    /// Reads until the server closes the socket, answering its close; the server's close
    /// frame, if it sent one.
    pub async fn closed(&mut self, wait: Duration) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut close = None;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("the socket was not closed within {wait:?}"));
            match frame {
                // Reading on after the close sends the client's answer and ends the stream.
                Some(Ok(Message::Close(frame))) => close = frame,
                None | Some(Err(_)) => return close,
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
