//! A campaign's WebSocket (`/nexus/v3/outbound/campaigns/:id/socket`), served by the nexus host
//! only (under Spin, a campaign tool long-polls `GET .../events?after=N&wait=S`).
//!
//! Open it with an API key with the `outbound` permission (`x-api-key`) and, to resume,
//! `?after=<last seq seen>`. It sends the campaign's events (`campaign_events`: `campaign.<state>`
//! and `record.<status>`, each `{seq, campaignId, type, clientId, status, reason, at}`) in
//! sequence: subscribed to the campaign's topic in sequence first, then sent what the log holds
//! after `after`, then live, each number once, in order, none skipped, whichever host it
//! reconnects to. The pump publishes the events to the topic as they are logged (every 100 ms).
//! It opens with `{"type": "connected", "campaignId", "state", "last"}`; the client may send
//! `{"type":"ping"}` (answered `{"type":"pong"}`).
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
use nexus_guest::spin::{Db, is_uuid, uuid};
use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

/// Events replayed per read of the log.
const REPLAY_BATCH: i64 = 500;

struct CampaignSocket;

nexus_guest::socket_helpers!();

/// The campaign id of the socket's path (`.../campaigns/<id>/socket`).
fn campaign_of(request: &UpgradeRequest) -> Option<String> {
    let path = request.path_with_query.split('?').next()?;
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let _socket = segments.next()?;
    segments
        .next()
        .filter(|id| is_uuid(id))
        .map(str::to_ascii_lowercase)
}

fn follow(connection: &str, topic: &str, after: i64) -> Result<(), Refusal> {
    connections::subscribe_in_sequence(connection, topic, "seq", after.max(0).unsigned_abs())
        .map_err(|err| refuse(503, "UNAVAILABLE", &format!("cannot subscribe: {err:?}")))
}

impl Guest for CampaignSocket {
    fn on_connect(connection: String, request: UpgradeRequest) -> Result<String, Refusal> {
        let mut head = spin_sdk::http::Request::builder();
        head.method(spin_sdk::http::Method::Get)
            .uri(request.path_with_query.clone());
        for (name, value) in &request.headers {
            head.header(name.clone(), value.clone());
        }
        let head = head.build();
        let db = Db::open().map_err(|err| refusal(&err))?;
        let tenant =
            nexus_guest::api_key::authorize(&head, &db, "outbound").map_err(|err| refusal(&err))?;
        let missing = || refuse(404, "NOT_FOUND", "no such campaign");
        let id = campaign_of(&request).ok_or_else(missing)?;
        let campaign = db
            .json_row(
                "read the campaign",
                "SELECT jsonb_build_object('state', state, 'last', event_seq) FROM campaigns \
                 WHERE tenant_id = $1 AND id = $2",
                &[ParameterValue::Int64(tenant), uuid(id.as_str())],
            )
            .map_err(|err| refusal(&err))?
            .ok_or_else(missing)?;
        let last = campaign["last"].as_i64().unwrap_or(0);
        // An `after` past the last number logged starts from the last one.
        let after = query_value(&request.path_with_query, "after")
            .and_then(|a| a.parse::<i64>().ok())
            .unwrap_or(0)
            .clamp(0, last);
        // Subscribed in sequence first, then the log replayed: what is published meanwhile is
        // held by the host until this handler returns, then delivered past what was replayed.
        let topic = format!("campaign:{id}");
        follow(&connection, &topic, after)?;
        send(
            &connection,
            &json!({"type": "connected", "campaignId": id, "state": campaign["state"], "last": last}),
        );
        let mut cursor = after;
        loop {
            let events = db
                .json_rows(
                    "replay the events",
                    "SELECT nexus_campaign_event_json(e) FROM campaign_events e \
                     WHERE campaign_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[
                        uuid(id.as_str()),
                        ParameterValue::Int64(cursor),
                        ParameterValue::Int64(REPLAY_BATCH),
                    ],
                )
                .map_err(|err| refusal(&err))?;
            for event in &events {
                let seq = event["seq"].as_i64().unwrap_or(cursor);
                let _ = connections::send_in_sequence(
                    &connection,
                    &topic,
                    seq.max(0).unsigned_abs(),
                    &Frame::Text(event.to_string()),
                );
                cursor = seq;
            }
            if (events.len() as i64) < REPLAY_BATCH {
                break;
            }
        }
        // Numbers commit in order (they are taken under the campaign's lock), so the log has no
        // hole: the socket has everything up to `cursor`, and the next one published follows.
        follow(&connection, &topic, cursor)?;
        Ok(id)
    }

    fn on_message(connection: String, _campaign: String, message: Frame) {
        let Frame::Text(text) = message else {
            return;
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(value) if value["type"] == "ping" => send(&connection, &json!({"type": "pong"})),
            _ => send(
                &connection,
                &json!({"type": "error", "message": "send {\"type\":\"ping\"}; operations go through the REST API"}),
            ),
        }
    }

    fn on_disconnect(_connection: String, _campaign: String) {}
}

export!(CampaignSocket);
