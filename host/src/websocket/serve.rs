//! Serving one WebSocket: the upgrade, the socket's two loops, and its handler's events.
//!
//! An upgrade on a WebSocket route runs the component's `on-connect` with the request; on
//! `ok` the host answers 101 and the socket opens, on a refusal the client gets its status and
//! body. Then the socket is read in order, one `on-message` per message, while a writer drains
//! the socket's queue and pings it; a socket silent for two ping intervals is closed. Every
//! event is a new instance under the component's limits (memory, CPU, and the request timeout
//! for each event), in an instance slot like any request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::{CloseRequest, Outgoing, RegisterError, SocketEnd};
use crate::bindings::websocket::exports::nexus::websocket::handler::Refusal;
use crate::bindings::websocket::nexus::websocket::types::{Frame, UpgradeRequest};
use crate::manifest::WebSocketDecl;
use crate::server::{App, ServedComponent, error_response, full_body};

/// How long a client has to complete the handshake after the 101.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
/// How long a closing socket waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The read buffer of each socket. tungstenite allocates it up front and zero-fills it before
/// each read, so its whole size stays resident for every idle socket: its default of 128 KiB
/// made an idle agent desktop cost 136 KiB of host memory, against 14 KiB with this
/// (BENCHMARKS.md). A larger message still arrives whole: the buffer grows for it, up to
/// `max_message_bytes`.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Whether `req` asks for a WebSocket (RFC 6455 §4.2.1).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    req.method() == http::Method::GET
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
}

/// One event of a socket, for its handler.
enum SocketEvent {
    Connect(UpgradeRequest),
    Message { context: String, message: Frame },
    Disconnect { context: String },
}

/// Why a handler call did not complete.
#[derive(Debug)]
enum EventFailure {
    /// No instance slot came free in time.
    Overloaded,
    /// The guest trapped, ran out of time or memory; the reason as the metrics name it.
    Trapped(&'static str),
}

/// Answers an upgrade request on a WebSocket route.
pub async fn upgrade(
    app: Arc<App>,
    mut req: Request<Incoming>,
    component: Arc<ServedComponent>,
    decl: WebSocketDecl,
    client: SocketAddr,
    request_id: &str,
) -> Response<HyperOutgoingBody> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key.filter(|_| version_ok) else {
        let mut response = error_response(
            StatusCode::BAD_REQUEST,
            "bad-upgrade",
            "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            request_id,
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    };
    let (id, end) = match app.hub.register(decl.send_queue, decl.max_message_bytes) {
        Ok(registered) => registered,
        Err(RegisterError::Full(max)) => {
            tracing::warn!(max, "refusing a WebSocket: the host is at its socket limit");
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-websockets",
                "this host holds as many WebSockets as it may; retry on another",
                request_id,
            );
        }
        Err(RegisterError::Draining) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "this host is shutting down; connect again (to another host)",
                request_id,
            );
        }
    };
    let upgrade_request = UpgradeRequest {
        path_with_query: req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".into()),
        headers: req
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        client_addr: client.to_string(),
    };
    let connected =
        handle_event(&app, &component, &id, SocketEvent::Connect(upgrade_request)).await;
    let context = match connected {
        Ok(Some(Ok(context))) => {
            // What was published to the socket while the handler ran goes out after what it sent.
            app.hub.release(&id);
            context
        }
        Ok(Some(Err(refusal))) => {
            app.hub.unregister(&id).await;
            app.hub.ended();
            return refusal_response(refusal);
        }
        Ok(None) => {
            app.hub.unregister(&id).await;
            app.hub.ended();
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "component-error",
                "the socket handler did not decide",
                request_id,
            );
        }
        Err(failure) => {
            app.hub.unregister(&id).await;
            app.hub.ended();
            return failure_response(&failure, request_id);
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let socket_app = Arc::clone(&app);
    let socket_id = id.clone();
    tokio::spawn(async move {
        let upgraded = match tokio::time::timeout(HANDSHAKE_WAIT, on_upgrade).await {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "the WebSocket handshake failed");
                finish(&socket_app, &component, &socket_id, context).await;
                return;
            }
            Err(_) => {
                tracing::debug!("the client never completed the WebSocket handshake");
                finish(&socket_app, &component, &socket_id, context).await;
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(decl.max_message_bytes))
            .max_frame_size(Some(decl.max_message_bytes));
        let stream =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        run_socket(
            &socket_app,
            &component,
            &socket_id,
            &context,
            &decl,
            stream,
            end,
        )
        .await;
        finish(&socket_app, &component, &socket_id, context).await;
    });

    let mut response = Response::new(full_body(Vec::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    tracing::info!(socket = %id, "WebSocket accepted");
    response
}

/// Forgets the socket and tells its handler.
async fn finish(app: &Arc<App>, component: &Arc<ServedComponent>, id: &str, context: String) {
    app.hub.unregister(id).await;
    if let Err(failure) =
        handle_event(app, component, id, SocketEvent::Disconnect { context }).await
    {
        tracing::warn!(socket = id, failure = ?failure, "the disconnect handler failed");
    }
    app.hub.ended();
    tracing::info!(socket = id, "WebSocket closed");
}

/// Reads the socket until it closes, while a writer drains its queue and pings it.
async fn run_socket(
    app: &Arc<App>,
    component: &Arc<ServedComponent>,
    id: &str,
    context: &str,
    decl: &WebSocketDecl,
    stream: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    end: SocketEnd,
) {
    let (sink, mut reader) = stream.split();
    let opened = Instant::now();
    // Milliseconds since `opened` at which the client was last heard from.
    let last_heard = Arc::new(AtomicU64::new(0));
    let ping_interval = Duration::from_millis(decl.ping_interval_ms);
    let mut writer = tokio::spawn(write_socket(
        sink,
        end,
        ping_interval,
        opened,
        Arc::clone(&last_heard),
        id.to_owned(),
    ));
    loop {
        let frame = tokio::select! {
            frame = reader.next() => frame,
            // The writer ended (a close was sent, or the client went silent): give the client
            // a moment to answer the close, then stop reading.
            _ = &mut writer => {
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Some(Ok(frame)) = reader.next().await {
                        if frame.is_close() { break; }
                    }
                }).await;
                return;
            }
        };
        let heard = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_heard.store(heard, Ordering::Relaxed);
        let message = match frame {
            Some(Ok(Message::Text(text))) => Frame::Text(text.as_str().to_owned()),
            Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(err)) => {
                use tokio_tungstenite::tungstenite::Error;
                if matches!(err, Error::Capacity(_)) {
                    tracing::info!(
                        socket = id,
                        "closing a socket that sent a message over the cap"
                    );
                    let _ = app.hub.close_now(
                        id,
                        1009,
                        format!("messages may be at most {} bytes", decl.max_message_bytes),
                    );
                    let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
                } else {
                    tracing::debug!(socket = id, error = %err, "the socket failed");
                }
                break;
            }
        };
        app.metrics.websocket_messages_received.inc();
        let event = SocketEvent::Message {
            context: context.to_owned(),
            message,
        };
        if let Err(failure) = handle_event(app, component, id, event).await {
            tracing::warn!(socket = id, failure = ?failure, "the message handler failed");
            let (code, reason) = match failure {
                EventFailure::Overloaded => (1013, "the host is overloaded; reconnect shortly"),
                EventFailure::Trapped(_) => (1011, "the socket handler failed"),
            };
            let _ = app.hub.close_now(id, code, reason.into());
        }
    }
    writer.abort();
}

/// Sends what is queued for the socket, its close, and its pings.
async fn write_socket(
    mut sink: futures::stream::SplitSink<
        WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        Message,
    >,
    mut end: SocketEnd,
    ping_interval: Duration,
    opened: Instant,
    last_heard: Arc<AtomicU64>,
    id: String,
) {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    let silence_limit = ping_interval.saturating_mul(2);
    loop {
        tokio::select! {
            biased;
            changed = end.close.changed() => {
                let request = end.close.borrow().clone();
                if changed.is_err() {
                    return;
                }
                if let Some(CloseRequest { code, reason }) = request {
                    let _ = sink.send(Message::Close(Some(CloseFrame {
                        code: code.into(),
                        reason: reason.into(),
                    }))).await;
                    return;
                }
            }
            queued = end.outbox.recv() => {
                let Some(message) = queued else { return };
                let message = match message {
                    Outgoing::Text(text) => Message::text(text),
                    Outgoing::Binary(bytes) => Message::binary(bytes),
                    Outgoing::Close(CloseRequest { code, reason }) => {
                        let _ = sink.send(Message::Close(Some(CloseFrame {
                            code: code.into(),
                            reason: reason.into(),
                        }))).await;
                        return;
                    }
                };
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                let heard = Duration::from_millis(last_heard.load(Ordering::Relaxed));
                if opened.elapsed().saturating_sub(heard) > silence_limit {
                    tracing::info!(socket = %id, "closing a socket that stopped answering pings");
                    let _ = sink.send(Message::Close(Some(CloseFrame {
                        code: 1001.into(),
                        reason: "no answer to pings".into(),
                    }))).await;
                    return;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs one event in a new instance of the handler. For a connect, the handler's decision.
async fn handle_event(
    app: &Arc<App>,
    component: &Arc<ServedComponent>,
    id: &str,
    event: SocketEvent,
) -> Result<Option<Result<String, Refusal>>, EventFailure> {
    let Some(pre) = component.socket_handler() else {
        return Err(EventFailure::Trapped("trap"));
    };
    let Some(_permit) = app.instance_slot(crate::budget::Budget::Requests).await else {
        return Err(EventFailure::Overloaded);
    };
    let limits = component.limits();
    let mut store = app.new_store(component, id, crate::budget::Budget::Requests);
    let id = id.to_owned();
    let event_name = match &event {
        SocketEvent::Connect(_) => "on-connect",
        SocketEvent::Message { .. } => "on-message",
        SocketEvent::Disconnect { .. } => "on-disconnect",
    };
    let call = async {
        let handler = pre.instantiate_async(&mut store).await?;
        let handler = handler.nexus_websocket_handler();
        match event {
            SocketEvent::Connect(request) => handler
                .call_on_connect(&mut store, &id, &request)
                .await
                .map(Some),
            SocketEvent::Message { context, message } => handler
                .call_on_message(&mut store, &id, &context, &message)
                .await
                .map(|()| None),
            SocketEvent::Disconnect { context } => handler
                .call_on_disconnect(&mut store, &id, &context)
                .await
                .map(|()| None),
        }
    };
    let span = crate::telemetry::component_span(&component.name, event_name);
    match tokio::time::timeout(limits.request_timeout, call)
        .instrument(span)
        .await
    {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(err)) => {
            let reason = crate::server::trap_reason(&err);
            tracing::warn!(socket = %id, reason, error = format!("{err:?}"), "the socket handler trapped");
            app.record_trap(component, reason);
            Err(EventFailure::Trapped(reason))
        }
        Err(_) => {
            app.record_trap(component, "timeout");
            Err(EventFailure::Trapped("timeout"))
        }
    }
}

fn refusal_response(refusal: Refusal) -> Response<HyperOutgoingBody> {
    let status = StatusCode::from_u16(refusal.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::FORBIDDEN);
    let mut response = Response::new(full_body(refusal.body));
    *response.status_mut() = status;
    if let Ok(content_type) = HeaderValue::from_str(&refusal.content_type) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

fn failure_response(failure: &EventFailure, request_id: &str) -> Response<HyperOutgoingBody> {
    match failure {
        EventFailure::Overloaded => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the host is serving as many requests as it can; retry shortly",
            request_id,
        ),
        EventFailure::Trapped("cpu_deadline" | "timeout") => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the socket handler did not decide in time",
            request_id,
        ),
        EventFailure::Trapped(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "component-trapped",
            "the socket handler failed",
            request_id,
        ),
    }
}
