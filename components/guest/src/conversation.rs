//! An interaction's transcript, shared by every component that writes to it (the customer's
//! chat, the agents' workspace, routing): PostgreSQL first, then the live state in Redis, then
//! the agents' event logs. Nothing here reads another tenant's rows.

use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::api::{ApiError, ApiResult};
use crate::live::{LiveSession, LiveState, TAIL_LEN};
use crate::spin::{Db, Live, jsonb, opt_text, text, uuid};

pub struct NewMessage<'a> {
    pub kind: &'a str,
    pub participant_id: Option<&'a str>,
    pub sender_kind: &'a str,
    pub nickname: &'a str,
    pub text: Option<&'a str>,
    pub data: Option<&'a Value>,
    pub visibility: &'a str,
    pub client_message_id: Option<&'a str>,
}

/// Appends a message to an open interaction, at the next position. Answers the message and
/// whether it was already there (the same `messageId` sent again), or `None` when the
/// interaction is not open.
pub fn append_message(
    db: &Db,
    tenant_id: i64,
    session_id: &str,
    message: &NewMessage<'_>,
) -> ApiResult<Option<(Value, bool)>> {
    Ok(append(db, tenant_id, session_id, message)?
        .map(|appended| (appended.message, appended.duplicate)))
}

/// A message appended (see [`append`]).
pub struct Appended {
    pub message: Value,
    /// The same `messageId` was sent before: `message` is the one stored then.
    pub duplicate: bool,
    /// The interaction's routing state as the append left it (`None` for a duplicate): what a
    /// sender checks before it asks routing for anything, in the same round trip.
    pub routing_state: Option<String>,
}

/// [`append_message`], with the interaction's routing state.
pub fn append(
    db: &Db,
    tenant_id: i64,
    session_id: &str,
    message: &NewMessage<'_>,
) -> ApiResult<Option<Appended>> {
    // Taking the position and inserting is one statement: the row lock on the interaction orders
    // concurrent senders, so positions are gapless and committed in order.
    let rows = db.rows(
        "store the message",
        "WITH existing AS ( \
           SELECT nexus_message_json(m) AS message FROM messages m \
           WHERE m.interaction_id = $1 AND m.tenant_id = $2 AND $9::text IS NOT NULL AND m.client_message_id = $9), \
         slot AS ( \
           UPDATE interactions SET next_position = next_position + 1, last_activity_at = now(), updated_at = now() \
           WHERE id = $1 AND tenant_id = $2 AND state = 'active' AND NOT EXISTS (SELECT 1 FROM existing) \
           RETURNING id, tenant_id, next_position - 1 AS position, routing_state), \
         inserted AS ( \
           INSERT INTO messages AS m (interaction_id, position, tenant_id, type, participant_id, sender_kind, nickname, text, data, visibility, client_message_id) \
           SELECT id, position, tenant_id, $3, $4, $5, $6, $7, $8, $10, $9 FROM slot \
           RETURNING nexus_message_json(m) AS message) \
         SELECT message, false AS duplicate, (SELECT routing_state FROM slot) AS routing_state FROM inserted \
         UNION ALL SELECT message, true AS duplicate, NULL FROM existing",
        &[
            uuid(session_id),
            ParameterValue::Int64(tenant_id),
            text(message.kind),
            message.participant_id.map_or(ParameterValue::DbNull, uuid),
            text(message.sender_kind),
            text(message.nickname),
            opt_text(message.text),
            message.data.map_or(ParameterValue::DbNull, jsonb),
            opt_text(message.client_message_id),
            text(message.visibility),
        ],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let message = match row.first() {
        Some(spin_sdk::pg4::DbValue::Jsonb(bytes)) => serde_json::from_slice(bytes)
            .map_err(|err| ApiError::internal("read the message", err))?,
        other => return Err(ApiError::internal("read the message", format!("{other:?}"))),
    };
    let duplicate = matches!(row.get(1), Some(spin_sdk::pg4::DbValue::Boolean(true)));
    let routing_state = match row.get(2) {
        Some(spin_sdk::pg4::DbValue::Str(state)) => Some(state.clone()),
        _ => None,
    };
    Ok(Some(Appended {
        message,
        duplicate,
        routing_state,
    }))
}

/// Up to `limit` messages after position `after`, from PostgreSQL.
pub fn messages_after(
    db: &Db,
    tenant_id: i64,
    session_id: &str,
    after: i64,
    limit: i64,
) -> ApiResult<Vec<Value>> {
    db.json_rows(
        "read the transcript",
        "SELECT nexus_message_json(m) FROM messages m \
         WHERE interaction_id = $1 AND tenant_id = $2 AND position > $3::bigint ORDER BY position LIMIT $4",
        &[
            uuid(session_id),
            ParameterValue::Int64(tenant_id),
            ParameterValue::Int64(after),
            ParameterValue::Int64(limit),
        ],
    )
}

/// The live state of a session as PostgreSQL knows it, with its tail.
pub fn load_session(
    db: &Db,
    tenant_id: i64,
    session_id: &str,
) -> ApiResult<Option<(LiveSession, Vec<Value>)>> {
    let rows = db.rows(
        "load the session",
        "SELECT i.state, i.channel_id::text AS channel_id, p.id::text AS participant_id, p.nickname \
         FROM interactions i JOIN participants p ON p.interaction_id = i.id AND p.kind = 'Customer' \
         WHERE i.id = $1 AND i.tenant_id = $2 ORDER BY p.joined_at LIMIT 1",
        &[uuid(session_id), ParameterValue::Int64(tenant_id)],
    )?;
    let Some(row) = rows.rows().next() else {
        return Ok(None);
    };
    let agents = db
        .rows(
            "load the agents taking part",
            "SELECT agent_id::text AS agent_id, role FROM participants \
             WHERE interaction_id = $1 AND tenant_id = $2 AND agent_id IS NOT NULL AND left_at IS NULL",
            &[uuid(session_id), ParameterValue::Int64(tenant_id)],
        )?
        .rows()
        .filter_map(|row| Some((row.get::<String>("agent_id")?, row.get::<String>("role")?)))
        .collect();
    let session = LiveSession {
        agents,
        tenant_id,
        channel_id: row.get::<String>("channel_id").unwrap_or_default(),
        participant_id: row.get::<String>("participant_id").unwrap_or_default(),
        nickname: row.get::<String>("nickname").unwrap_or_default(),
        state: row.get::<String>("state").unwrap_or_default(),
    };
    let tail = db.json_rows(
        "load the transcript tail",
        "SELECT nexus_message_json(m) FROM messages m \
         WHERE interaction_id = $1 AND tenant_id = $2 ORDER BY position DESC LIMIT $3",
        &[
            uuid(session_id),
            ParameterValue::Int64(tenant_id),
            ParameterValue::Int64(TAIL_LEN),
        ],
    )?;
    Ok(Some((session, tail)))
}

/// Whether an agent taking part as `role` sees a message of `visibility`: `All` is for
/// everyone, `Agent` for agents and supervisors, `Supervisor` for the supervising roles only.
pub fn agent_sees(role: &str, visibility: &str) -> bool {
    match visibility {
        "All" | "Agent" => true,
        _ => matches!(role, "monitor" | "coach" | "barge"),
    }
}

/// Tells the agents taking part about committed messages, each what they may see.
pub fn tell_agents(
    live: &Live,
    interaction_id: &str,
    agents: &[(String, String)],
    messages: &[Value],
) {
    for (agent, role) in agents {
        let visible: Vec<&Value> = messages
            .iter()
            .filter(|m| agent_sees(role, m["visibility"].as_str().unwrap_or("All")))
            .collect();
        if visible.is_empty() {
            continue;
        }
        let event = json!({
            "messageType": "MessageLogUpdated",
            "interactionId": interaction_id,
            "messages": visible,
        });
        // The messages are committed; an agent who misses the event reads the transcript.
        let _ = crate::events::push(live, agent, event);
    }
}

/// Puts committed messages into the live state and tells the agents taking part. If the live
/// state cannot be written, it is dropped, and the next reader rebuilds it from PostgreSQL.
pub fn publish(live: &Live, interaction_id: &str, messages: &[Value], state: &str) {
    let live_state = LiveState::new(live, interaction_id);
    let agents = match live_state.load() {
        Ok(Some(session)) => session.agents,
        _ => Vec::new(),
    };
    if live_state.append(messages, state).is_err() {
        live_state.forget();
    }
    tell_agents(live, interaction_id, &agents, messages);
}

/// A message sent again with its `messageId` (stored once) is announced again: the client
/// retries because it got no answer, which may be because its host died after the commit and
/// before the announcement. Its session's sockets and the agents get it once more; each keeps a
/// message once by its position. It goes into the live tail again too: a read finds a position
/// missing in the middle of the tail and asks PostgreSQL, but one missing at the end looks like
/// nothing newer, and the transcript would end short of what the sockets were sent.
pub fn announce_again(live: &Live, interaction_id: &str, message: &Value) {
    let live_state = LiveState::new(live, interaction_id);
    let agents = match live_state.load() {
        Ok(Some(session)) => {
            // Only into a tail the session still has (one gone is rebuilt from PostgreSQL); the
            // same message is the same member, so a tail that had it is unchanged.
            let _ = live_state.restore(message, &session.state);
            session.agents
        }
        _ => Vec::new(),
    };
    if message["visibility"] == "All" {
        let _ = live_state.publish(&crate::live::session_event::message(message));
    }
    tell_agents(live, interaction_id, &agents, std::slice::from_ref(message));
}
