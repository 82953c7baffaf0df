//! The agent desktop's WebSocket (`/nexus/v3/workspace/socket`), served by the nexus host only.
//!
//! Open it with the agent's token (`Authorization: Bearer <token>`, or `?access_token=` where a
//! browser cannot set headers) and, after a reconnect, `?after=<last seq seen>`. The socket is
//! subscribed to the agent's events first and then sent what the log holds after `after`, so
//! nothing falls between the two; an event may come twice, and `seq` tells which. Every event
//! is a JSON object with `seq` and `messageType` (`InteractionStateChanged`,
//! `MessageLogUpdated`, `AgentStateChanged`); the socket opens with `{"messageType":
//! "Connected"}`, and `EventsLost` says the log no longer reaches back to `after`. A customer
//! typing comes as `Typing`, without `seq`: it is published to the topic, never logged.
//! The client may send `{"type":"ping"}` (answered with a pong); operations go through the
//! REST API.
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
use nexus_guest::spin::{Db, Live};
use serde_json::{Value, json};

/// Events replayed per read of the log.
const REPLAY_BATCH: i64 = 200;

struct WorkspaceSocket;

fn refuse(status: u16, code: &str, message: &str) -> Refusal {
    Refusal {
        status,
        content_type: "application/json".into(),
        body: json!({"status": {"code": code, "message": message}})
            .to_string()
            .into_bytes(),
    }
}

fn query_value(request: &UpgradeRequest, key: &str) -> Option<String> {
    let query = request.path_with_query.split_once('?').map(|(_, q)| q)?;
    form_value(query, key)
}

fn form_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

fn send(connection: &str, event: &Value) {
    let _ = connections::send(connection, &Frame::Text(event.to_string()));
}

impl Guest for WorkspaceSocket {
    fn on_connect(connection: String, request: UpgradeRequest) -> Result<String, Refusal> {
        let token = request
            .headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .and_then(|(_, value)| value.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
            .or_else(|| query_value(&request, "access_token"))
            .ok_or_else(|| refuse(401, "AUTHENTICATION_REQUIRED", "send the agent token"))?;
        let after = query_value(&request, "after")
            .and_then(|a| a.parse::<i64>().ok())
            .unwrap_or(0)
            .max(0);
        let db =
            Db::open().map_err(|_| refuse(503, "UNAVAILABLE", "the database is unavailable"))?;
        let agent =
            nexus_guest::routing::agent_by_token_hash(&db, &nexus_guest::agent_token::hash(&token))
                .map_err(|_| refuse(503, "UNAVAILABLE", "the database is unavailable"))?
                .ok_or_else(|| {
                    refuse(
                        401,
                        "AUTHENTICATION_REQUIRED",
                        "unknown or disabled agent token",
                    )
                })?;
        drop(db);
        let live = Live::open().map_err(|_| refuse(503, "UNAVAILABLE", "Redis is unavailable"))?;
        // Subscribe first, then replay: what happens in between arrives live, perhaps twice.
        connections::subscribe(&connection, &nexus_guest::events::agent_topic(&agent.id))
            .map_err(|err| refuse(503, "UNAVAILABLE", &format!("cannot subscribe: {err:?}")))?;
        send(
            &connection,
            &json!({"messageType": "Connected", "agentId": agent.id, "nickname": agent.nickname, "state": agent.state}),
        );
        let mut cursor = after;
        loop {
            let read = nexus_guest::events::after(&live, &agent.id, cursor, REPLAY_BATCH, true)
                .map_err(|_| refuse(503, "UNAVAILABLE", "Redis is unavailable"))?;
            if read.lost && cursor == after {
                send(
                    &connection,
                    &json!({"messageType": "EventsLost", "after": after}),
                );
            }
            for event in &read.events {
                send(&connection, event);
            }
            if read.next == cursor {
                break;
            }
            cursor = read.next;
        }
        Ok(agent.id)
    }

    fn on_message(connection: String, _agent_id: String, message: Frame) {
        let Frame::Text(text) = message else {
            return;
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(value) if value["type"] == "ping" => {
                send(&connection, &json!({"messageType": "Pong"}))
            }
            _ => send(
                &connection,
                &json!({"messageType": "EventError", "message": "send {\"type\":\"ping\"}; operations go through the REST API"}),
            ),
        }
    }

    fn on_disconnect(_connection: String, _agent_id: String) {}
}

export!(WorkspaceSocket);
