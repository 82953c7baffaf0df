//! The chat's durable record in PostgreSQL: contacts, interactions, participants and messages.
//! Every function names the tenant in its queries; nothing here reads another tenant's rows.

use nexus_guest::api::{ApiError, ApiResult};
use nexus_guest::secrets::new_id;
use nexus_guest::spin::{Db, jsonb, opt_text, text, uuid};
use serde_json::Value;
use spin_sdk::pg4::ParameterValue;

use nexus_guest::conversation::{NewMessage, append_message};

use nexus_guest::chat_auth::Tenant;

/// The chat channel a session starts on: the one named `endpoint`, or the tenant's only one.
pub fn chat_channel(db: &Db, tenant: &Tenant, endpoint: Option<&str>) -> ApiResult<String> {
    nexus_guest::inbound::channel_named(db, tenant.id, "chat", endpoint, "data[endpoint]")
}

pub struct NewSession<'a> {
    pub channel_id: &'a str,
    pub nickname: &'a str,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub user_data: Value,
}

pub struct Started {
    pub session_id: String,
    pub participant_id: String,
    pub contact_id: String,
    pub messages: Vec<Value>,
}

const NO_CHANNEL: &str = "00000000-0000-0000-0000-000000000000";

/// The contact an identity belongs to.
fn contact_of(db: &Db, tenant_id: i64, kind: &str, value: &str) -> ApiResult<Option<String>> {
    let rows = db.rows(
        "find the contact",
        "SELECT contact_id::text AS id FROM contact_identities \
         WHERE tenant_id = $1 AND kind = $2 AND channel_id = $3 AND value = $4",
        &[
            ParameterValue::Int64(tenant_id),
            text(kind),
            uuid(NO_CHANNEL),
            text(value),
        ],
    )?;
    Ok(rows.rows().next().and_then(|row| row.get::<String>("id")))
}

/// The contact of the customer: the one their email or phone number already names, or a new one.
fn resolve_contact(db: &Db, tenant_id: i64, session: &NewSession<'_>) -> ApiResult<String> {
    let identities: Vec<(&str, &str)> = [("email", session.email), ("phone", session.phone)]
        .into_iter()
        .filter_map(|(kind, value)| value.map(|value| (kind, value)))
        .collect();
    let mut found = None;
    for (kind, value) in &identities {
        if let Some(contact) = contact_of(db, tenant_id, kind, value)? {
            found = Some(contact);
            break;
        }
    }
    let contact = match found {
        Some(contact) => contact,
        None => {
            let id = new_id();
            db.execute(
                "create the contact",
                "INSERT INTO contacts (id, tenant_id, first_name, last_name, nickname) VALUES ($1, $2, $3, $4, $5)",
                &[
                    uuid(&id),
                    ParameterValue::Int64(tenant_id),
                    opt_text(session.first_name),
                    opt_text(session.last_name),
                    text(session.nickname),
                ],
            )?;
            id
        }
    };
    for (kind, value) in &identities {
        // Another session may have claimed the identity since we looked: then it is theirs,
        // and this contact simply does not get it.
        db.execute(
            "record the contact's identity",
            "INSERT INTO contact_identities (tenant_id, contact_id, kind, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[ParameterValue::Int64(tenant_id), uuid(&contact), text(*kind), text(*value)],
        )?;
    }
    Ok(contact)
}

/// Creates the interaction, its customer participant and the first message, in one transaction.
pub fn start(db: &Db, tenant: &Tenant, session: &NewSession<'_>) -> ApiResult<Started> {
    db.transaction(|db| {
        let contact_id = resolve_contact(db, tenant.id, session)?;
        let session_id = new_id();
        let participant_id = new_id();
        db.execute(
            "create the interaction",
            "INSERT INTO interactions (id, tenant_id, channel_id, contact_id, user_data, next_position) \
             VALUES ($1, $2, $3, $4, $5, 2)",
            &[
                uuid(&session_id),
                ParameterValue::Int64(tenant.id),
                uuid(session.channel_id),
                uuid(&contact_id),
                jsonb(&session.user_data),
            ],
        )?;
        db.execute(
            "add the customer",
            "INSERT INTO participants (id, interaction_id, tenant_id, kind, nickname) VALUES ($1, $2, $3, 'Customer', $4)",
            &[uuid(&participant_id), uuid(&session_id), ParameterValue::Int64(tenant.id), text(session.nickname)],
        )?;
        let messages = db.json_rows(
            "record the customer's arrival",
            "INSERT INTO messages AS m (interaction_id, position, tenant_id, type, participant_id, sender_kind, nickname) \
             VALUES ($1, 1, $2, 'ParticipantJoined', $3, 'Customer', $4) RETURNING nexus_message_json(m)",
            &[uuid(&session_id), ParameterValue::Int64(tenant.id), uuid(&participant_id), text(session.nickname)],
        )?;
        Ok(Started {
            session_id,
            participant_id,
            contact_id,
            messages,
        })
    })
}

/// The session as `GET {selfUri}` shows it.
pub fn session_json(db: &Db, tenant_id: i64, session_id: &str) -> ApiResult<Option<Value>> {
    db.json_row(
        "read the session",
        "SELECT jsonb_strip_nulls(jsonb_build_object(\
           'sessionId', i.id, 'state', i.state, 'transportId', i.channel_id, \
           'transcriptPosition', i.next_position - 1, 'userData', i.user_data, \
           'startedAt', nexus_ts(i.created_at), 'endedAt', nexus_ts(i.ended_at), \
           'participants', (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(\
               'participantId', p.id, 'type', p.kind, 'nickname', p.nickname, \
               'joinedAt', nexus_ts(p.joined_at), 'leftAt', nexus_ts(p.left_at))) ORDER BY p.joined_at) \
             FROM participants p WHERE p.interaction_id = i.id))) \
         FROM interactions i WHERE i.id = $1 AND i.tenant_id = $2",
        &[uuid(session_id), ParameterValue::Int64(tenant_id)],
    )
}

/// Merges `update` into the interaction's user data and records it in the transcript (for the
/// agents: the customer does not see it). `None` when the interaction is not open.
pub fn update_user_data(
    db: &Db,
    tenant_id: i64,
    session_id: &str,
    update: &Value,
    participant_id: &str,
    nickname: &str,
) -> ApiResult<Option<(Value, Value)>> {
    db.transaction(|db| {
        let Some(user_data) = db.json_row(
            "update the user data",
            "UPDATE interactions SET user_data = user_data || $3, updated_at = now(), last_activity_at = now() \
             WHERE id = $1 AND tenant_id = $2 AND state = 'active' RETURNING user_data",
            &[uuid(session_id), ParameterValue::Int64(tenant_id), jsonb(update)],
        )?
        else {
            return Ok(None);
        };
        let message = append_message(
            db,
            tenant_id,
            session_id,
            &NewMessage {
                kind: "UserDataUpdated",
                participant_id: Some(participant_id),
                sender_kind: "Customer",
                nickname,
                text: None,
                data: Some(update),
                visibility: "Agent",
                client_message_id: None,
            },
        )?
        .map(|(message, _)| message)
        .ok_or_else(|| ApiError::internal("record the user data", "the interaction closed"))?;
        Ok(Some((user_data, message)))
    })
}

/// Ends an open interaction: the customer leaves and the chat ends. Answers the two messages,
/// or none when it had already ended.
pub fn end(
    db: &Db,
    tenant_id: i64,
    session_id: &str,
    participant_id: &str,
    nickname: &str,
) -> ApiResult<Vec<Value>> {
    db.transaction(|db| {
        let rows = db.rows(
            "end the interaction",
            "UPDATE interactions SET state = 'ended', ended_at = now(), ended_reason = 'customer', \
             next_position = next_position + 2, updated_at = now(), last_activity_at = now() \
             WHERE id = $1 AND tenant_id = $2 AND state = 'active' RETURNING next_position - 2 AS position",
            &[uuid(session_id), ParameterValue::Int64(tenant_id)],
        )?;
        let Some(position) = rows.rows().next().and_then(|row| row.get::<i32>("position")) else {
            return Ok(Vec::new());
        };
        db.execute(
            "record that the customer left",
            "UPDATE participants SET left_at = now() WHERE id = $1 AND left_at IS NULL",
            &[uuid(participant_id)],
        )?;
        db.json_rows(
            "record the end",
            "INSERT INTO messages AS m (interaction_id, position, tenant_id, type, participant_id, sender_kind, nickname) \
             VALUES ($1, $3, $2, 'ParticipantLeft', $4, 'Customer', $5), \
                    ($1, $3 + 1, $2, 'ChatEnded', NULL, 'System', '') \
             RETURNING nexus_message_json(m)",
            &[
                uuid(session_id),
                ParameterValue::Int64(tenant_id),
                ParameterValue::Int32(position),
                uuid(participant_id),
                text(nickname),
            ],
        )
    })
}
