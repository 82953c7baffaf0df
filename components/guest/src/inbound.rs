//! Conversations with people who write in from another system (a messaging client, an SMS
//! aggregator): their message joins their open conversation on the channel or starts one, the
//! agents and routing are told, and what nexus sends them is tracked by the far side's id.

use serde_json::Value;
use spin_sdk::pg4::ParameterValue;

use crate::api::{ApiError, ApiResult, Code};
use crate::conversation::{self, NewMessage};
use crate::live::LiveState;
use crate::routing;
use crate::secrets::new_id;
use crate::spin::{Db, Live, opt_text, text, uuid};

/// The identities of phone numbers and emails belong to no channel (a customer's number is the
/// same on chat and SMS); external ids belong to theirs.
const NO_CHANNEL: &str = "00000000-0000-0000-0000-000000000000";

/// A channel of a provider (an SMS aggregator, an email provider) as its component needs it.
#[derive(Clone)]
pub struct ProviderChannel {
    pub id: String,
    pub tenant_id: i64,
    /// The provider's secret: an auth token, a webhook signing key.
    pub secret: String,
    pub settings: Value,
    /// Write-only credentials for the provider's API.
    pub credentials: Value,
}

impl ProviderChannel {
    /// A non-empty text setting.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings[name].as_str().filter(|s| !s.is_empty())
    }
}

/// The enabled channel `id` of type `kind` of an enabled tenant.
pub fn provider_channel(db: &Db, id: &str, kind: &str) -> ApiResult<Option<ProviderChannel>> {
    if !crate::spin::is_uuid(id) {
        return Ok(None);
    }
    let rows = db.rows(
        "load the channel",
        "SELECT c.id::text AS id, c.tenant_id, c.secret, c.settings::text AS settings, \
           c.credentials::text AS credentials \
         FROM channels c JOIN tenants t ON t.id = c.tenant_id \
         WHERE c.id = $1 AND c.type = $2 AND c.enabled AND t.enabled",
        &[uuid(id), text(kind)],
    )?;
    let Some(row) = rows.rows().next() else {
        return Ok(None);
    };
    let (Some(id), Some(tenant_id), Some(secret), Some(settings), Some(credentials)) = (
        row.get::<String>("id"),
        row.get::<i64>("tenant_id"),
        row.get::<String>("secret"),
        row.get::<String>("settings")
            .and_then(|text| serde_json::from_str::<Value>(&text).ok()),
        row.get::<String>("credentials")
            .and_then(|text| serde_json::from_str::<Value>(&text).ok()),
    ) else {
        return Ok(None);
    };
    let keys = crate::at_rest::keyring()?;
    Ok(Some(ProviderChannel {
        secret: crate::at_rest::open_secret(&keys, &id, &secret)?,
        credentials: crate::at_rest::open_credentials(&keys, &id, &credentials)?,
        id,
        tenant_id,
        settings,
    }))
}

/// The tenant's enabled channel of type `kind` named `endpoint`, or its only one. `name_it`
/// tells the caller how to name one (`data[endpoint]`) when the tenant has several.
pub fn channel_named(
    db: &Db,
    tenant_id: i64,
    kind: &str,
    endpoint: Option<&str>,
    name_it: &str,
) -> ApiResult<String> {
    let rows = db.rows(
        "find the channel",
        "SELECT id::text AS id FROM channels \
         WHERE tenant_id = $1 AND type = $2 AND enabled AND ($3::text IS NULL OR name = $3) \
         ORDER BY name LIMIT 2",
        &[
            ParameterValue::Int64(tenant_id),
            text(kind),
            opt_text(endpoint),
        ],
    )?;
    let ids: Vec<String> = rows
        .rows()
        .filter_map(|row| row.get::<String>("id"))
        .collect();
    let invalid = |message: String| ApiError::new(400, Code::InvalidEndpoint, message);
    match (ids.as_slice(), endpoint) {
        ([id], _) | ([id, ..], Some(_)) => Ok(id.clone()),
        ([], Some(endpoint)) => Err(invalid(format!(
            "the contact center has no enabled {kind} endpoint named `{endpoint}`"
        ))),
        ([], None) => Err(invalid(format!(
            "the contact center has no enabled {kind} endpoint"
        ))),
        (_, None) => Err(invalid(format!(
            "the contact center has several {kind} endpoints: name one in {name_it}"
        ))),
    }
}

/// Who wrote in, as the far side names them.
pub struct Sender<'a> {
    /// `external` (an id of the channel's own), `phone` or `email`.
    pub kind: &'a str,
    pub value: &'a str,
    pub nickname: &'a str,
}

/// Where a message comes in.
pub struct Inlet<'a> {
    pub tenant_id: i64,
    pub channel_id: &'a str,
    /// The interactions' `media`: `messaging`, `sms`, ...
    pub media: &'a str,
    /// A secure mailbox's department (`securebox`): its own thread with the sender.
    pub securebox: Option<&'a str>,
    /// What to add to the conversation's user data (what an agent sees of it), in the
    /// message's transaction: the campaign a text answers.
    pub user_data: Option<&'a Value>,
}

/// A message taken in.
pub struct Taken {
    pub interaction: String,
    pub message: Value,
    /// The far side's id was seen in this conversation before: nothing new was stored.
    pub duplicate: bool,
    /// The message started the conversation.
    pub started: bool,
}

fn identity_channel<'a>(inlet: &Inlet<'a>, sender: &Sender<'_>) -> &'a str {
    if sender.kind == "external" {
        inlet.channel_id
    } else {
        NO_CHANNEL
    }
}

/// The sender's open conversation on the channel, or a new one with the sender's contact; the
/// customer participant; whether it is new.
fn conversation_of(
    db: &Db,
    inlet: &Inlet<'_>,
    sender: &Sender<'_>,
) -> ApiResult<(String, String, bool)> {
    let tenant = ParameterValue::Int64(inlet.tenant_id);
    let identity_channel = identity_channel(inlet, sender);
    // One sender's messages arriving at once must find one contact and join one conversation:
    // they take turns, per channel and sender, until each commits (every statement after this
    // sees what the one before committed).
    db.rows(
        "wait for the sender's other messages",
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2 || '/' || $3, 0)) IS NULL AS unused",
        &[text(inlet.channel_id), text(sender.kind), text(sender.value)],
    )?;
    let contact = db
        .rows(
            "find the sender",
            "SELECT contact_id::text AS id FROM contact_identities \
             WHERE tenant_id = $1 AND kind = $2 AND channel_id = $3 AND value = $4",
            &[
                tenant.clone(),
                text(sender.kind),
                uuid(identity_channel),
                text(sender.value),
            ],
        )?
        .rows()
        .next()
        .and_then(|row| row.get::<String>("id"));
    let contact = match contact {
        Some(contact) => contact,
        None => {
            let id = new_id();
            db.execute(
                "create the sender's contact",
                "INSERT INTO contacts (id, tenant_id, nickname) VALUES ($1, $2, $3)",
                &[uuid(&id), tenant.clone(), text(sender.nickname)],
            )?;
            // A first message arriving twice at once: one identity wins, and both take its
            // contact (the loser's new contact stays without an identity).
            db.rows(
                "record the sender's identity",
                "WITH mine AS ( \
                   INSERT INTO contact_identities (tenant_id, contact_id, kind, value, channel_id) \
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING contact_id) \
                 SELECT contact_id::text AS id FROM mine \
                 UNION ALL SELECT contact_id::text FROM contact_identities \
                   WHERE tenant_id = $1 AND kind = $3 AND value = $4 AND channel_id = $5 \
                 LIMIT 1",
                &[
                    tenant.clone(),
                    uuid(&id),
                    text(sender.kind),
                    text(sender.value),
                    uuid(identity_channel),
                ],
            )?
            .rows()
            .next()
            .and_then(|row| row.get::<String>("id"))
            .unwrap_or(id)
        }
    };
    let open = db
        .rows(
            "find the sender's conversation",
            "SELECT i.id::text AS id, p.id::text AS participant FROM interactions i \
             JOIN participants p ON p.interaction_id = i.id AND p.kind = 'Customer' \
             WHERE i.channel_id = $1 AND i.contact_id = $2 AND i.state = 'active' \
               AND i.securebox IS NOT DISTINCT FROM $3 \
             ORDER BY i.created_at DESC LIMIT 1 FOR UPDATE OF i",
            &[
                uuid(inlet.channel_id),
                uuid(&contact),
                opt_text(inlet.securebox),
            ],
        )?
        .rows()
        .next()
        .and_then(|row| Some((row.get::<String>("id")?, row.get::<String>("participant")?)));
    if let Some((id, participant)) = open {
        return Ok((id, participant, false));
    }
    let (id, participant) = (new_id(), new_id());
    db.execute(
        "start the conversation",
        "INSERT INTO interactions (id, tenant_id, channel_id, contact_id, media, securebox, next_position) \
         VALUES ($1, $2, $3, $4, $5, $6, 2)",
        &[
            uuid(&id),
            tenant.clone(),
            uuid(inlet.channel_id),
            uuid(&contact),
            text(inlet.media),
            opt_text(inlet.securebox),
        ],
    )?;
    db.execute(
        "add the sender",
        "INSERT INTO participants (id, interaction_id, tenant_id, kind, nickname) VALUES ($1, $2, $3, 'Customer', $4)",
        &[uuid(&participant), uuid(&id), tenant.clone(), text(sender.nickname)],
    )?;
    db.execute(
        "record the sender's arrival",
        "INSERT INTO messages (interaction_id, position, tenant_id, type, participant_id, sender_kind, nickname) \
         VALUES ($1, 1, $2, 'ParticipantJoined', $3, 'Customer', $4)",
        &[uuid(&id), tenant, uuid(&participant), text(sender.nickname)],
    )?;
    Ok((id, participant, true))
}

/// Stores a text the sender wrote (with `data`, such as an email's subject), under the far
/// side's id for it (`far_id`: a repeat is stored once), then tells the live state, the agents
/// and routing.
pub fn take_text(
    db: &Db,
    inlet: &Inlet<'_>,
    sender: &Sender<'_>,
    far_id: &str,
    body: Option<&str>,
    data: Option<&Value>,
) -> ApiResult<Taken> {
    // The channel's inbound transforms see the text before anything is stored.
    let transformed = match body {
        Some(body) => Some(crate::tenant_components::apply(
            db,
            &crate::tenant_components::Transformable {
                tenant_id: inlet.tenant_id,
                channel_id: Some(inlet.channel_id),
                conversation_id: "",
                direction: crate::tenant_components::Direction::Inbound,
                sender_kind: "Customer",
            },
            body,
        )?),
        None => None,
    };
    let body = transformed.as_deref();
    let taken =
        db.transaction(|db| {
            let (interaction, participant, started) = conversation_of(db, inlet, sender)?;
            if let Some(extra) = inlet.user_data {
                db.execute(
                "add to the user data",
                "UPDATE interactions SET user_data = user_data || $2::jsonb WHERE id = $1::uuid",
                &[crate::spin::uuid(interaction.as_str()), crate::spin::jsonb(extra)],
            )?;
            }
            let (message, duplicate) = conversation::append_message(
                db,
                inlet.tenant_id,
                &interaction,
                &NewMessage {
                    kind: "Text",
                    participant_id: Some(&participant),
                    sender_kind: "Customer",
                    nickname: sender.nickname,
                    text: body,
                    data,
                    visibility: "All",
                    client_message_id: Some(far_id),
                },
            )?
            .ok_or_else(|| ApiError::internal("append the message", "the conversation ended"))?;
            Ok(Taken {
                interaction,
                message,
                duplicate,
                started,
            })
        })?;
    if !taken.duplicate {
        tell_the_floor(db, inlet, &taken.interaction, &taken.message, taken.started);
    }
    Ok(taken)
}

/// The message is committed; the live state, the agents and routing follow. A failure here only
/// delays them: readers rebuild the live state from PostgreSQL and the routing sweep picks up
/// what waits.
fn tell_the_floor(db: &Db, inlet: &Inlet<'_>, interaction: &str, message: &Value, started: bool) {
    let Ok(live) = Live::open() else {
        return;
    };
    let state = LiveState::new(&live, interaction);
    if !matches!(state.load(), Ok(Some(_)))
        && let Ok(Some((session, tail))) =
            conversation::load_session(db, inlet.tenant_id, interaction)
        && state.store(&session, &tail).is_err()
    {
        state.forget();
    }
    conversation::publish(&live, interaction, std::slice::from_ref(message), "active");
    if !started {
        return;
    }
    if let Err(err) = routing::route_new(db, &live, inlet.tenant_id, inlet.channel_id, interaction)
    {
        crate::spin::log_error("route the new conversation", &err);
    }
}

/// How long a receipt that came before its message's far-side id is kept, and how many one
/// channel keeps at most (what the far side sends about ids nexus never recorded must not pile
/// up). Keep in step with `migrations/0014_early_receipts.sql`.
const EARLY_RECEIPT_SECONDS: i64 = 3600;
const EARLY_RECEIPTS_PER_CHANNEL: i64 = 10_000;

/// What became of a receipt.
#[derive(Debug)]
pub enum Receipt {
    /// It moved the message forward (or found it further on already): the message as it is.
    Applied(Value),
    /// The message is a campaign's (`migrations/0020_receipts_and_unsubscribes.sql`): whether it
    /// moved its record forward.
    Campaign { moved: bool },
    /// No message has that far-side id yet: it is kept, and applied when the send that the id
    /// belongs to records it (the far side called back before its answer to the send arrived).
    Pending,
    /// No message has that id, and the channel already keeps as many early receipts as it may.
    Dropped,
}

/// Receipts and the sends they are about take turns per channel and far-side id, so that a
/// receipt is either applied to the message or kept where the send will find it, never lost
/// between the two.
fn lock_far_id(db: &Db, channel_id: &str, far_id: &str) -> ApiResult<()> {
    db.rows(
        "wait for the message's send",
        "SELECT pg_advisory_xact_lock(hashtextextended('receipt/' || $1 || '/' || $2, 0)) IS NULL AS unused",
        &[text(channel_id), text(far_id)],
    )?;
    Ok(())
}

/// Moves the message the far side knows as `far_id` on channel `channel_id` (a conversation's,
/// or a campaign's record) forward to `status` (sent, delivered, read, failed, with the far
/// side's `reason` for a failure), or keeps the receipt until that message's id is recorded.
pub fn record_receipt(
    db: &Db,
    tenant_id: i64,
    channel_id: &str,
    far_id: &str,
    status: &str,
    reason: Option<&str>,
) -> ApiResult<Receipt> {
    db.transaction(|db| {
        lock_far_id(db, channel_id, far_id)?;
        let campaign = db
            .rows(
                "record the campaign receipt",
                "SELECT nexus_campaign_receipt($1::uuid, $2, $3, $4) AS moved",
                &[uuid(channel_id), text(far_id), text(status), opt_text(reason)],
            )?
            .rows()
            .next()
            .and_then(|row| row.get::<i32>("moved"))
            .unwrap_or(-1);
        if campaign >= 0 {
            return Ok(Receipt::Campaign {
                moved: campaign > 0,
            });
        }
        let applied = db.json_row(
            "record the receipt",
            "UPDATE messages m SET delivery_status = CASE \
               WHEN nexus_delivery_rank(m.delivery_status) < nexus_delivery_rank($3) \
               THEN $3 ELSE m.delivery_status END \
             FROM interactions i \
             WHERE m.tenant_id = $1 AND m.external_id = $2 AND i.id = m.interaction_id AND i.channel_id = $4 \
             RETURNING nexus_message_json(m)",
            &[
                ParameterValue::Int64(tenant_id),
                text(far_id),
                text(status),
                uuid(channel_id),
            ],
        )?;
        if let Some(message) = applied {
            return Ok(Receipt::Applied(message));
        }
        db.execute(
            "forget stale early receipts",
            "DELETE FROM early_receipts WHERE channel_id = $1 \
               AND received_at < now() - $2::bigint * interval '1 second'",
            &[uuid(channel_id), ParameterValue::Int64(EARLY_RECEIPT_SECONDS)],
        )?;
        let kept = db.execute(
            "keep the early receipt",
            "INSERT INTO early_receipts AS e (channel_id, far_id, tenant_id, status, reason) \
             SELECT $1::uuid, $2::text, $3::bigint, $4::text, $6::text \
             WHERE (SELECT count(*) FROM early_receipts WHERE channel_id = $1::uuid) < $5::bigint \
             ON CONFLICT (channel_id, far_id) DO UPDATE SET \
               status = CASE WHEN nexus_delivery_rank(e.status) \
                 < nexus_delivery_rank(EXCLUDED.status) THEN EXCLUDED.status ELSE e.status END, \
               reason = CASE WHEN nexus_delivery_rank(e.status) \
                 < nexus_delivery_rank(EXCLUDED.status) THEN EXCLUDED.reason ELSE e.reason END",
            &[
                uuid(channel_id),
                text(far_id),
                ParameterValue::Int64(tenant_id),
                text(status),
                ParameterValue::Int64(EARLY_RECEIPTS_PER_CHANNEL),
                opt_text(reason),
            ],
        )?;
        Ok(if kept > 0 {
            Receipt::Pending
        } else {
            eprintln!(
                "an early receipt for `{far_id}` on channel {channel_id} is dropped: the channel \
                 keeps {EARLY_RECEIPTS_PER_CHANNEL} already"
            );
            Receipt::Dropped
        })
    })
}

/// A message to send out, with whom it goes to.
pub struct Outgoing {
    pub channel_id: String,
    /// The sender's identity of `kind` (their external id, their phone number).
    pub to: String,
    pub message: Value,
    /// When it was written, in Unix seconds: fixed, so every attempt sends the same.
    pub written_at: i64,
}

/// The message an outbound job (`{payload: {interactionId, position}}`, queued by
/// `nexus_messaging_outbound`) is for; a malformed job is final (422).
pub fn job_message(job: &Value) -> ApiResult<(String, i32)> {
    match (
        job["payload"]["interactionId"].as_str(),
        job["payload"]["position"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok()),
    ) {
        (Some(interaction), Some(position)) => Ok((interaction.to_owned(), position)),
        _ => Err(ApiError::new(
            422,
            crate::api::Code::InvalidParameter,
            "an outbound job names payload.interactionId and payload.position",
        )),
    }
}

/// Message `position` of `interaction`, to go to its customer's identity of `kind`.
pub fn outgoing(
    db: &Db,
    interaction: &str,
    position: i32,
    kind: &str,
) -> ApiResult<Option<Outgoing>> {
    let rows = db.rows(
        "load the message to send",
        "SELECT i.channel_id::text AS channel_id, ci.value AS to_id, \
           extract(epoch FROM m.created_at)::bigint AS written_at, \
           (nexus_message_json(m) || jsonb_build_object('interactionId', i.id))::text AS message \
         FROM messages m JOIN interactions i ON i.id = m.interaction_id \
         JOIN contact_identities ci ON ci.contact_id = i.contact_id AND ci.kind = $3 \
           AND ci.channel_id = CASE WHEN $3 = 'external' THEN i.channel_id ELSE $4::uuid END \
         WHERE m.interaction_id = $1 AND m.position = $2",
        &[
            uuid(interaction),
            ParameterValue::Int32(position),
            text(kind),
            uuid(NO_CHANNEL),
        ],
    )?;
    let Some(row) = rows.rows().next() else {
        return Ok(None);
    };
    let (Some(channel_id), Some(to), Some(message), Some(written_at)) = (
        row.get::<String>("channel_id"),
        row.get::<String>("to_id"),
        row.get::<String>("message"),
        row.get::<i64>("written_at"),
    ) else {
        return Ok(None);
    };
    let message = serde_json::from_str(&message)
        .map_err(|err| ApiError::internal("read the message", err))?;
    Ok(Some(Outgoing {
        channel_id,
        to,
        message,
        written_at,
    }))
}

/// Records what became of sending message `position` of `interaction`, and the far side's id
/// for it; a receipt for that id that came first (see [`record_receipt`]) moves it further.
pub fn set_delivery(
    interaction: &str,
    position: i32,
    status: &str,
    far_id: Option<&str>,
) -> ApiResult<()> {
    let db = Db::open()?;
    let Some(far_id) = far_id else {
        db.execute(
            "record the delivery",
            "UPDATE messages SET delivery_status = $3 WHERE interaction_id = $1 AND position = $2",
            &[
                uuid(interaction),
                ParameterValue::Int32(position),
                text(status),
            ],
        )?;
        return Ok(());
    };
    db.transaction(|db| {
        let channel = db
            .rows(
                "find the message's channel",
                "SELECT channel_id::text AS channel_id FROM interactions WHERE id = $1",
                &[uuid(interaction)],
            )?
            .rows()
            .next()
            .and_then(|row| row.get::<String>("channel_id"));
        let Some(channel) = channel else {
            return Ok(());
        };
        lock_far_id(db, &channel, far_id)?;
        db.execute(
            "record the delivery",
            "WITH early AS ( \
               DELETE FROM early_receipts WHERE channel_id = $5 AND far_id = $4 \
               RETURNING status, received_at) \
             UPDATE messages SET external_id = $4, delivery_status = coalesce( \
               (SELECT status FROM early \
                WHERE received_at > now() - $6::bigint * interval '1 second' \
                  AND nexus_delivery_rank(status) > nexus_delivery_rank($3)), $3) \
             WHERE interaction_id = $1 AND position = $2",
            &[
                uuid(interaction),
                ParameterValue::Int32(position),
                text(status),
                text(far_id),
                uuid(&channel),
                ParameterValue::Int64(EARLY_RECEIPT_SECONDS),
            ],
        )?;
        Ok(())
    })
}

/// The recipient at `address` opted out (`source`: `keyword` for a texter's STOP, `unsubscribe`
/// for an email provider's unsubscribe or complaint): suppressed for every sender of the tenant,
/// for good. A suppression of the address already there that runs out (or ran out) is made
/// permanent (and, if it ran out, the recipient's); one that holds for good is left as it is.
/// Whether it made or changed one.
pub fn opt_out(
    db: &Db,
    tenant_id: i64,
    address: &str,
    reason: &str,
    source: &str,
) -> ApiResult<bool> {
    let added = db.rows(
        "record the opt-out",
        "INSERT INTO suppressions AS s (tenant_id, address, reason, source) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, address, \
           coalesce(channel_id, '00000000-0000-0000-0000-000000000000'::uuid)) \
         DO UPDATE SET expires_at = NULL, \
           source = CASE WHEN s.expires_at <= now() THEN EXCLUDED.source ELSE s.source END, \
           reason = CASE WHEN s.expires_at <= now() THEN EXCLUDED.reason ELSE s.reason END \
         WHERE s.expires_at IS NOT NULL \
         RETURNING s.id",
        &[
            ParameterValue::Int64(tenant_id),
            text(address),
            text(reason),
            text(source),
        ],
    )?;
    Ok(added.rows().next().is_some())
}

/// A job that retrying cannot help: dead-lettered at once (422).
pub fn gone(message: &str) -> ApiError {
    ApiError::new(422, Code::NotFound, message)
}

/// Sends the request that delivers outgoing message `position` of `interaction` to the far side
/// (`far_side` names it in errors) and records what became of it: 2xx sent, with the far side's
/// id for it (`far_id` of the JSON answer); 429, 5xx and no answer retried (503, after the far
/// side's `Retry-After` if it said one); any other 4xx failed for good (422, with `refusal` of
/// the answer). The far side's id, once sent.
pub async fn send_outgoing(
    request: spin_sdk::http::Request,
    far_side: &str,
    interaction: &str,
    position: i32,
    far_id: impl Fn(&Value) -> Option<String>,
    refusal: impl Fn(&Value) -> String,
) -> ApiResult<Option<String>> {
    let response = spin_sdk::http::send::<_, spin_sdk::http::Response>(request)
        .await
        .map_err(|err| {
            ApiError::new(
                503,
                Code::Unavailable,
                format!("cannot reach {far_side}: {err}"),
            )
        })?;
    let status = *response.status();
    let answer: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    let retry_after = crate::spin::retry_after(&response);
    match status {
        200..=299 => {
            let id = far_id(&answer);
            set_delivery(interaction, position, "sent", id.as_deref())?;
            Ok(id)
        }
        429 => Err(ApiError::new(
            503,
            Code::Unavailable,
            format!("{far_side} is rate limiting"),
        )
        .retry_after(retry_after)),
        400..=499 => {
            set_delivery(interaction, position, "failed", None)?;
            Err(gone(&format!(
                "{far_side} refused the message with {status}{}; it is not retried",
                refusal(&answer)
            )))
        }
        _ => Err(ApiError::new(
            503,
            Code::Unavailable,
            format!("{far_side} answered {status}"),
        )
        .retry_after(retry_after)),
    }
}
