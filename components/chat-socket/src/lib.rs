//! The web chat customer's WebSocket (`/nexus/v3/chat/sessions/{id}/socket`), served by the
//! nexus host only; under Spin a widget long-polls the transcript instead.
//!
//! Open it with the session's client token (`x-nexus-client-key`, or `?clientToken=` where a
//! browser cannot set headers; `x-api-key` / `?apiKey=` as the REST calls take it) and, after a
//! reconnect, `?after=<last position seen>`. The socket opens with a `Connected` event (the
//! session's state, routing and who is typing), then sends what the transcript holds after
//! `after`, then each event as it happens: `Message` (a transcript message the customer may
//! see: text, notices, agents joining and leaving), `Typing`, `State` and `Routing`. Messages
//! come in rising `position`, each once, none skipped: the socket is subscribed to the
//! session's topic in sequence before the transcript is read, the host holds what is published
//! meanwhile until the replay is sent, and puts messages published out of order back in order
//! (`nexus:websocket@0.1.1`). The client may send
//! `{"type":"ping"}`; sending messages, typing and ending go through the REST API. The events
//! are the `SocketEvent` schema of `openapi/chat-v3.json`. A client more than 200 messages
//! behind gets 200 and a close with 4001: it reconnects with the last position it got.
// The export macros of spin-sdk and wit-bindgen generate the unsafe ABI glue of the component.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../wit/websocket",
    world: "nexus:websocket/socket-handler",
    generate_all,
});

use exports::nexus::websocket::handler::{Guest, Refusal};
use nexus::websocket::connections;
use nexus::websocket::types::{Frame, UpgradeRequest};
use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::chat_auth;
use nexus_guest::conversation;
use nexus_guest::live::{LiveState, session_event, session_topic};
use nexus_guest::routing;
use nexus_guest::spin::{Db, Live};
use serde_json::{Value, json};

/// Transcript messages replayed per connect, at most: they wait in the socket's send queue
/// (256 messages) until the handshake completes. A client further behind is closed with
/// [`MORE_TO_REPLAY`] after them and reconnects from the last position it got, as it would
/// after any close.
const MAX_REPLAY: i64 = 200;
/// The close code that says: reconnect at once with `after`, there is more to replay.
const MORE_TO_REPLAY: u16 = 4001;

struct ChatSocket;

nexus_guest::socket_helpers!();

/// The session id of `/nexus/v3/chat/sessions/{id}/socket`.
fn session_id(request: &UpgradeRequest) -> Option<String> {
    let path = request.path_with_query.split('?').next()?;
    let id = path.strip_suffix("/socket")?.rsplit('/').next()?.to_owned();
    nexus_guest::spin::is_uuid(&id).then_some(id)
}

/// Takes the session's topic in sequence, the socket having every position up to `after`.
fn follow(connection: &str, topic: &str, after: u64) -> ApiResult<()> {
    connections::subscribe_in_sequence(connection, topic, "position", after).map_err(|err| {
        ApiError::new(
            503,
            Code::Unavailable,
            format!("cannot follow the session: {err:?}"),
        )
    })
}

fn connect(connection: &str, request: &UpgradeRequest) -> ApiResult<String> {
    let id = session_id(request)
        .ok_or_else(|| ApiError::new(404, Code::InvalidSession, "no such session"))?;
    let params = nexus_guest::socket::query_pairs(&request.path_with_query);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    // Browsers cannot set headers on a WebSocket: the query carries what the headers would.
    let credentials = |name: &str| {
        header(name).or_else(|| match name {
            "x-nexus-client-key" => param("clientToken"),
            "x-api-key" => param("apiKey"),
            _ => None,
        })
    };
    let after = match param("after") {
        None => 0,
        Some(after) => after.parse::<u64>().map_err(|_| {
            ApiError::bad_parameter("`after` is the last position seen, a whole number")
        })?,
    };
    let db = Db::open()?;
    let (tenant, claims) = chat_auth::session_caller(&credentials, &db, &id)?;
    let live = Live::open()?;
    let session = chat_auth::live_session(&db, &live, &tenant, &claims, &id)?;
    // Subscribed first, then read: what is published from here on is held by the host until
    // this handler returns, and then delivered past what the replay sent.
    let topic = session_topic(&id);
    follow(connection, &topic, after)?;
    let state = LiveState::new(&live, &id);
    send(
        connection,
        &json!({
            "type": "Connected",
            "sessionId": id,
            "participantId": session.participant_id,
            "state": session.state,
            "routing": routing::status(&db, &live, tenant.id, &id)?,
            "typing": state.typing(&session.participant_id)?,
            "after": after,
        }),
    );
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let messages = conversation::messages_after(&db, tenant.id, &id, after, MAX_REPLAY)?;
    let mut last = after;
    for message in &messages {
        let Some(position) = message["position"].as_i64() else {
            continue;
        };
        last = position;
        if session_event::customer_sees(message) {
            let event = session_event::message(message).to_string();
            let _ = connections::send_in_sequence(
                connection,
                &topic,
                position.unsigned_abs(),
                &Frame::Text(event),
            );
        }
    }
    // The socket has everything up to the last position read, the ones it may not see too:
    // the next one published is the next it gets.
    follow(connection, &topic, last.unsigned_abs())?;
    if messages.len() as i64 == MAX_REPLAY {
        // Going live now would skip what lies between this batch and the next message.
        let _ = connections::close(
            connection,
            MORE_TO_REPLAY,
            &format!("more to replay: reconnect with after={last}"),
        );
    }
    Ok(json!({"tenantId": tenant.id, "sessionId": id}).to_string())
}

impl Guest for ChatSocket {
    fn on_connect(connection: String, request: UpgradeRequest) -> Result<String, Refusal> {
        connect(&connection, &request).map_err(|err| refusal(&err))
    }

    fn on_message(connection: String, _context: String, message: Frame) {
        let Frame::Text(text) = message else {
            return;
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(value) if value["type"] == "ping" => send(&connection, &json!({"type": "Pong"})),
            _ => send(
                &connection,
                &json!({"type": "Error", "message": "send {\"type\":\"ping\"}; messages, typing and ending go through the REST API"}),
            ),
        }
    }

    fn on_disconnect(_connection: String, _context: String) {}
}

export!(ChatSocket);
