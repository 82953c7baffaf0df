//! The Third-Party Messaging API (`/nexus/v3/channels/...`): a custom messaging client (a bridge
//! to any platform, an in-house app) on a channel of type `messaging`.
//!
//! In, from the client, each request signed `X-Hub-Signature: sha1=<hex HMAC-SHA1 of the raw
//! body>` keyed with the channel secret (or the previous one while a rotation overlaps), with
//! `x-ccid` naming the contact center:
//! - `POST channels/{channelId}/messages`, `{id, timestamp, from: {id, nickname}, text}`: the
//!   user's message. `timestamp` (Unix seconds) must be within five minutes of now, and `id` is
//!   kept, so a replayed or retried request is stored once. The user's open conversation on the
//!   channel takes it, or a new one starts and is routed as the channel's rule says.
//! - `POST channels/{channelId}/receipts`, `{messageId, status: delivered|read|failed}`: what
//!   became of a message nexus sent, by the `messageId` the client answered it with.
//!
//! Out, to the client's webhook (`settings.webhookUrl` of the channel): what agents and bots say
//! in the conversation, one durable job each, in order:
//! - `POST jobs/run` (the admin token; the host's job worker calls it; `jobs/sweep` runs the due
//!   ones from a cron under Spin): POSTs
//!   `{id, interactionId, to: {id}, from: {type, nickname}, type, text, timestamp}` (the time it
//!   was written, so every attempt sends the same body), signed the
//!   same way; a 2xx records the `messageId` of its JSON answer and marks the message sent; a
//!   4xx other than 429 is final (the message failed); anything else, or no answer, is retried.
//! - `POST channels/{channelId}/media`, multipart: `file` and `timestamp`: a file for the user's
//!   next messages, which name it in `media` (see [`media`]).
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

mod media;

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::at_rest;
use nexus_guest::inbound::{self, Inlet, Sender};
use nexus_guest::spin::{
    Db, Reply, header, now_unix, path_segments, reference_id, require_admin, respond, text, uuid,
};
use nexus_guest::webhook_signature;
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_component;

/// How far a request's `timestamp` may be from now: the replay window.
const REPLAY_WINDOW_SECONDS: u64 = 300;
const MAX_TEXT_CHARS: usize = 16 * 1024;
const MAX_ID_CHARS: usize = 256;

#[http_component]
async fn messaging(req: Request) -> impl IntoResponse {
    let reference = reference_id(&req);
    let result = serve(&req).await;
    respond(&reference, result)
}

async fn serve(req: &Request) -> ApiResult<Reply> {
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["jobs", "run"]) => {
            require_admin(req)?;
            deliver(&body(req)?).await
        }
        (Method::Post, ["jobs", "sweep"]) => {
            require_admin(req)?;
            Reply::ok(
                nexus_guest::sweep::sweep("messaging", |job| async move { deliver(&job).await })
                    .await?,
            )
        }
        (Method::Post, [channel, "messages"]) => inbound_message(req, channel),
        (Method::Post, [channel, "receipts"]) => receipt(req, channel),
        (Method::Post, [channel, "media"]) => media::upload(req, channel).await,
        _ => Err(ApiError::not_found("no such operation")),
    }
}

/// A messaging channel as a request needs it.
struct Channel {
    id: String,
    tenant_id: i64,
    /// The current secret, then the previous one while it is still honoured.
    secrets: Vec<String>,
    settings: Value,
}

fn channel(db: &Db, ccid: Option<&str>, id: &str) -> ApiResult<Option<Channel>> {
    if !nexus_guest::spin::is_uuid(id) {
        return Ok(None);
    }
    let (sql, params) = match ccid {
        Some(ccid) => (
            "SELECT c.id::text AS id, c.tenant_id, c.secret, c.settings::text AS settings, \
               CASE WHEN c.previous_secret_expires_at > now() THEN c.previous_secret END AS previous \
             FROM channels c JOIN tenants t ON t.id = c.tenant_id \
             WHERE c.id = $1 AND t.ccid = $2 AND t.enabled AND c.enabled AND c.type = 'messaging'",
            vec![uuid(id), text(ccid)],
        ),
        None => (
            "SELECT c.id::text AS id, c.tenant_id, c.secret, c.settings::text AS settings, \
               CASE WHEN c.previous_secret_expires_at > now() THEN c.previous_secret END AS previous \
             FROM channels c WHERE c.id = $1 AND c.type = 'messaging'",
            vec![uuid(id)],
        ),
    };
    let rows = db.rows("load the channel", sql, &params)?;
    let Some(row) = rows.rows().next() else {
        return Ok(None);
    };
    let (Some(id), Some(tenant_id), Some(secret), Some(settings)) = (
        row.get::<String>("id"),
        row.get::<i64>("tenant_id"),
        row.get::<String>("secret"),
        row.get::<String>("settings")
            .and_then(|text| serde_json::from_str::<Value>(&text).ok()),
    ) else {
        return Ok(None);
    };
    let keys = at_rest::keyring()?;
    let mut secrets = vec![at_rest::open_secret(&keys, &id, &secret)?];
    if let Some(previous) = row.get::<String>("previous") {
        secrets.push(at_rest::open_secret(&keys, &id, &previous)?);
    }
    Ok(Some(Channel {
        id,
        tenant_id,
        secrets,
        settings,
    }))
}

/// The channel a signed request from the client is for, once its signature checks out. Every
/// failure is the same 401, so that a caller learns nothing of which channels exist.
fn signed_channel(req: &Request, db: &Db, channel_id: &str) -> ApiResult<Channel> {
    let refused = || {
        ApiError::new(
            401,
            Code::AuthenticationRequired,
            "sign the body with the channel secret (X-Hub-Signature: sha1=...) and name the contact center (x-ccid)",
        )
    };
    let ccid = header(req, "x-ccid").ok_or_else(refused)?;
    let signature = header(req, "x-hub-signature").ok_or_else(refused)?;
    let channel = channel(db, Some(&ccid), channel_id)?.ok_or_else(refused)?;
    let keys: Vec<&[u8]> = channel.secrets.iter().map(String::as_bytes).collect();
    if webhook_signature::hub_matches(&signature, &keys, req.body()) {
        Ok(channel)
    } else {
        Err(refused())
    }
}

fn body(req: &Request) -> ApiResult<Value> {
    let body: Value = serde_json::from_slice(req.body())
        .map_err(|err| ApiError::bad_parameter(format!("the body is JSON: {err}")))?;
    nexus_guest::body::refuse_nul("the body", &body)?;
    Ok(body)
}

fn bounded<'a>(value: &'a Value, name: &str, max: usize) -> ApiResult<&'a str> {
    value
        .as_str()
        .filter(|s| !s.is_empty() && s.chars().count() <= max)
        .ok_or_else(|| {
            ApiError::bad_parameter(format!("`{name}` is a string of 1 to {max} characters"))
        })
}

/// Refuses a request whose signed `timestamp` is outside the replay window.
fn within_window(timestamp: Option<u64>) -> ApiResult<()> {
    let timestamp = timestamp.ok_or_else(|| {
        ApiError::bad_parameter("`timestamp` is the time of sending, in Unix seconds")
    })?;
    if now_unix().abs_diff(timestamp) > REPLAY_WINDOW_SECONDS {
        return Err(ApiError::new(
            401,
            Code::AuthenticationRequired,
            format!(
                "`timestamp` is more than {REPLAY_WINDOW_SECONDS} s from now: a replay, or a clock that is off"
            ),
        ));
    }
    Ok(())
}

fn inbound_message(req: &Request, channel_id: &str) -> ApiResult<Reply> {
    let db = Db::open()?;
    let channel = signed_channel(req, &db, channel_id)?;
    let message = body(req)?;
    within_window(message["timestamp"].as_u64())?;
    let client_id = bounded(&message["id"], "id", MAX_ID_CHARS)?;
    let from = bounded(&message["from"]["id"], "from.id", MAX_ID_CHARS)?;
    let nickname: String = message["from"]["nickname"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(from)
        .chars()
        .take(100)
        .collect();
    let media = media::attached(&db, &channel, &message["media"])?;
    let text_body = match (&message["text"], &media) {
        (Value::Null, Some(_)) => None,
        (text, _) => Some(bounded(text, "text", MAX_TEXT_CHARS)?),
    };
    let taken = inbound::take_text(
        &db,
        &Inlet {
            tenant_id: channel.tenant_id,
            channel_id: &channel.id,
            media: "messaging",
            securebox: None,
            user_data: None,
        },
        &Sender {
            kind: "external",
            value: from,
            nickname: &nickname,
        },
        client_id,
        text_body,
        media.map(|media| json!({ "media": media })).as_ref(),
    )?;
    Reply::ok(json!({
        "interactionId": taken.interaction,
        "message": taken.message,
        "duplicate": taken.duplicate,
    }))
}

fn receipt(req: &Request, channel_id: &str) -> ApiResult<Reply> {
    let db = Db::open()?;
    let channel = signed_channel(req, &db, channel_id)?;
    let receipt = body(req)?;
    within_window(receipt["timestamp"].as_u64())?;
    let message_id = bounded(&receipt["messageId"], "messageId", MAX_ID_CHARS)?;
    let status = receipt["status"]
        .as_str()
        .filter(|s| matches!(*s, "delivered" | "read" | "failed"))
        .ok_or_else(|| ApiError::bad_parameter("`status` is delivered, read or failed"))?;
    // The client may send a receipt before its answer to the delivery (with the messageId)
    // reached nexus: kept, and applied when the delivery records the id.
    match inbound::record_receipt(
        &db,
        channel.tenant_id,
        &channel.id,
        message_id,
        status,
        None,
    )? {
        inbound::Receipt::Applied(message) => Reply::ok(json!({ "message": message })),
        // Campaigns send through SMS and email channels, never this one's.
        inbound::Receipt::Campaign { .. } => Reply::ok(json!({ "message": null })),
        inbound::Receipt::Pending => Ok(Reply {
            status: 202,
            data: json!({ "message": null, "pending": true }),
        }),
        inbound::Receipt::Dropped => Err(ApiError::not_found(format!(
            "no message was sent with the messageId `{message_id}`"
        ))),
    }
}

/// What a delivery needs: the message, the user it goes to, and the channel's webhook.
struct Outbound {
    channel: Channel,
    to: String,
    body: Value,
}

fn outbound(db: &Db, interaction: &str, position: i32) -> ApiResult<Option<Outbound>> {
    let Some(out) = inbound::outgoing(db, interaction, position, "external")? else {
        return Ok(None);
    };
    let Some(channel) = channel(db, None, &out.channel_id)? else {
        return Ok(None);
    };
    let body = json!({
        "id": format!("{interaction}:{position}"),
        "interactionId": interaction,
        "to": {"id": out.to},
        "from": {"type": out.message["from"]["type"], "nickname": out.message["from"]["nickname"]},
        "type": out.message["type"],
        "text": out.message["text"],
        "timestamp": out.written_at,
    });
    Ok(Some(Outbound {
        channel,
        to: out.to,
        body,
    }))
}

/// Sends one message to the client's webhook (a job).
async fn deliver(job: &Value) -> ApiResult<Reply> {
    let (interaction, position) = inbound::job_message(job)?;
    let interaction = interaction.as_str();
    let Some(outbound) = outbound(&Db::open()?, interaction, position)? else {
        return Err(inbound::gone(
            "the message, its user or its channel is gone",
        ));
    };
    let Some(url) = outbound.channel.settings["webhookUrl"]
        .as_str()
        .map(str::to_owned)
    else {
        inbound::set_delivery(interaction, position, "failed", None)?;
        return Err(inbound::gone(
            "a messaging channel needs settings.webhookUrl to send to its client",
        ));
    };
    let body = serde_json::to_vec(&outbound.body)
        .map_err(|err| ApiError::internal("encode the message", err))?;
    let signature = webhook_signature::hub_with_key(outbound.channel.secrets[0].as_bytes(), &body);
    let request = Request::builder()
        .method(Method::Post)
        .uri(url.as_str())
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .header("x-hub-signature", signature)
        // A B3 trace id is 32 hex digits: the job's id, the same on every attempt.
        .header(
            "x-b3-traceid",
            job["id"].as_str().unwrap_or_default().replace('-', ""),
        )
        .body(body)
        .build();
    let message_id = inbound::send_outgoing(
        request,
        "the client",
        interaction,
        position,
        |answer| answer["messageId"].as_str().map(str::to_owned),
        |_| String::new(),
    )
    .await?;
    Reply::ok(json!({ "sent": true, "to": outbound.to, "messageId": message_id }))
}
