//! The agent desktop's WebSocket (`/nexus/v3/workspace/socket`), served by the nexus host only.
//!
//! Open it with the agent's token (`Authorization: Bearer <token>`, or `?access_token=` where a
//! browser cannot set headers) and, after a reconnect, `?after=<last seq seen>`. The socket
//! takes the agent's events in sequence (`subscribe-in-sequence` on `seq`): it is subscribed
//! first, sent what the log holds after `after`, then goes live, and every event reaches it
//! once, in order, none skipped, even when two are published out of order or it reconnects
//! (to any host) between them. An `after` above the last number given (a desktop that wants
//! only what comes from now on) starts from that number. Every event
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
use nexus_guest::socket::query_value;
use nexus_guest::spin::{Db, Live};
use serde_json::{Value, json};

/// Events replayed per read of the log.
const REPLAY_BATCH: i64 = 200;

struct WorkspaceSocket;

nexus_guest::socket_helpers!();

fn follow(connection: &str, topic: &str, after: i64) -> Result<(), Refusal> {
    connections::subscribe_in_sequence(connection, topic, "seq", after.max(0).unsigned_abs())
        .map_err(|err| refuse(503, "UNAVAILABLE", &format!("cannot subscribe: {err:?}")))
}

impl Guest for WorkspaceSocket {
    fn on_connect(connection: String, request: UpgradeRequest) -> Result<String, Refusal> {
        let token = request
            .headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .and_then(|(_, value)| value.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
            .or_else(|| query_value(&request.path_with_query, "access_token"))
            .ok_or_else(|| refuse(401, "AUTHENTICATION_REQUIRED", "send the agent token"))?;
        let after = query_value(&request.path_with_query, "after")
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
        // The next event's number is known once the log has started: a socket asking for what
        // comes after a number not given yet starts from the last one given.
        let given = nexus_guest::events::last_given(&live, &agent.id)
            .map_err(|_| refuse(503, "UNAVAILABLE", "Redis is unavailable"))?;
        let after = after.min(given);
        // Subscribed in sequence first, then the log replayed: what is published meanwhile is
        // held by the host until this handler returns, then delivered past what was replayed.
        let topic = nexus_guest::events::agent_topic(&agent.id);
        follow(&connection, &topic, after)?;
        send(
            &connection,
            &json!({"messageType": "Connected", "agentId": agent.id, "nickname": agent.nickname, "state": agent.state}),
        );
        let mut cursor = after;
        let mut told_lost = false;
        // Since when the replay has waited for a missing number (one a writer has taken and
        // not logged yet, with later ones logged): given up on after HOLE_WAIT_MS, as a writer
        // that died never logs it. Skipping it at once would lose it when it comes.
        let mut hole_since: Option<std::time::Instant> = None;
        loop {
            let skip = hole_since.is_some_and(|since| {
                since.elapsed()
                    >= std::time::Duration::from_millis(nexus_guest::events::HOLE_WAIT_MS)
            });
            let read = nexus_guest::events::after(&live, &agent.id, cursor, REPLAY_BATCH, skip)
                .map_err(|_| refuse(503, "UNAVAILABLE", "Redis is unavailable"))?;
            if read.lost && !told_lost {
                told_lost = true;
                send(
                    &connection,
                    &json!({"messageType": "EventsLost", "after": after}),
                );
            }
            for event in &read.events {
                let seq = event["seq"].as_i64().unwrap_or_default().unsigned_abs();
                let _ = connections::send_in_sequence(
                    &connection,
                    &topic,
                    seq,
                    &Frame::Text(event.to_string()),
                );
            }
            if read.next != cursor {
                cursor = read.next;
                hole_since = None;
                continue;
            }
            if skip {
                break;
            }
            // Nothing more in a run: done, unless a later event is logged behind a hole.
            let beyond = nexus_guest::events::after(&live, &agent.id, cursor, 1, true)
                .map_err(|_| refuse(503, "UNAVAILABLE", "Redis is unavailable"))?;
            if beyond.events.is_empty() {
                break;
            }
            hole_since.get_or_insert_with(std::time::Instant::now);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The socket has everything up to the last number read (where the numbering started
        // again, after a loss): the next one published is the next it gets.
        follow(&connection, &topic, cursor)?;
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
