//! Email (`/nexus/v3/email/...`) on a channel of type `email` whose `secret` is the inbound
//! provider's webhook signing key (and the events webhook's password), whose settings are
//! `{from, apiBaseUrl (default https://api.sparkpost.com)}` and whose write-only credentials
//! are `{apiKey}` for sending.
//!
//! In: `POST email/{channelId}/inbound`, an inbound-parse post in Mailgun's form
//! (`application/x-www-form-urlencoded`: `sender`, `recipient`, `subject`, `body-plain`,
//! `stripped-text`, `Message-Id`, `timestamp`, `token`, `signature`). The signature (hex
//! HMAC-SHA256 of timestamp + token, keyed with the signing key) covers only those two, so the
//! timestamp must be within five minutes and a token is taken once (remembered in Redis for
//! longer than that). The sender's open conversation on the channel takes the mail (its newest
//! text, `stripped-text`, and its subject), or a new one starts and is routed; a repeated
//! `Message-Id` is stored once. Posts with attachments (multipart) are not taken yet (415).
//!
//! Out: what agents and bots say, one durable job each (`POST email/jobs/run`, the admin token;
//! `jobs/sweep` from a cron under Spin): `POST {apiBaseUrl}/api/v1/transmissions` with
//! `Authorization: {apiKey}` and `{recipients: [{address: {email}}], content: {from, subject:
//! "Re: <the customer's last subject>", text}, metadata: {interactionId, position}}`; the
//! answer's `results.id` is kept. A 4xx is final; a 5xx, a 429 or no answer is retried.
//!
//! Events: `POST email/{channelId}/events`, the provider's event webhook (SparkPost's batches,
//! authenticated with HTTP Basic credentials whose password is the channel's `secret`):
//! deliveries and failures are joined to their mails by `transmission_id`; unsubscribes and
//! spam complaints suppress the recipient (see [`provider_events`]).
//!
//! Campaigns: a `campaign-send` job sends its records' mails, one transmission each with the
//! campaign's subject and text rendered for the record (`nexus_guest::campaign_send`), with the
//! idempotency key `nexus:campaign:{campaign}:{contact}`. A mail back from a recipient marks the
//! record `replied` and names the campaign in its conversation's `userData.campaign`.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::campaign_send::{Message, Outcome};
use nexus_guest::inbound::{self, Inlet, Sender};
use nexus_guest::spin::{
    Db, Live, Reply, arg, header, int_arg, now_unix, path_segments, reference_id, require_admin,
    respond, uuid,
};
use nexus_guest::webhook_signature;
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_component;

const REPLAY_WINDOW_SECONDS: u64 = 300;
/// How long a token is remembered: past the replay window, after which its timestamp fails.
const TOKEN_MEMORY_SECONDS: i64 = 2 * REPLAY_WINDOW_SECONDS as i64;
const MAX_TEXT_CHARS: usize = 64 * 1024;
const DEFAULT_API: &str = "https://api.sparkpost.com";
/// The most events one batch of the provider's may carry.
const MAX_EVENTS: usize = 10_000;
/// The longest transmission id taken from an event.
const MAX_PROVIDER_ID_CHARS: usize = 200;
/// The longest reason a failure keeps (as `suppressions.reason` and a campaign record's).
const MAX_REASON_CHARS: usize = 500;

#[http_component]
async fn email(req: Request) -> impl IntoResponse {
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
            let job: Value = serde_json::from_slice(req.body())
                .map_err(|err| ApiError::bad_parameter(format!("a job is JSON: {err}")))?;
            run(&job).await
        }
        (Method::Post, ["jobs", "sweep"]) => {
            require_admin(req)?;
            Reply::ok(
                nexus_guest::sweep::sweep("email", |job| async move { run(&job).await }).await?,
            )
        }
        (Method::Post, [channel, "inbound"]) => inbound_mail(req, channel),
        (Method::Post, [channel, "events"]) => provider_events(req, channel),
        _ => Err(ApiError::not_found("no such operation")),
    }
}

type Channel = inbound::ProviderChannel;

fn channel(db: &Db, id: &str) -> ApiResult<Option<Channel>> {
    inbound::provider_channel(db, id, "email")
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .filter(|value| !value.is_empty())
}

/// Takes `token` once: a second use within the memory is a replay.
fn first_use(token: &str) -> ApiResult<bool> {
    let live = Live::open()?;
    let taken = live.cmd(
        "SET",
        &[
            arg(live.key(&format!("email:token:{token}"))),
            arg("1"),
            arg("NX"),
            arg("EX"),
            int_arg(TOKEN_MEMORY_SECONDS),
        ],
    )?;
    // SET NX answers OK when it set the key, and nil when the key was there.
    Ok(taken
        .iter()
        .any(|reply| !matches!(reply, spin_sdk::redis::RedisResult::Nil)))
}

fn inbound_mail(req: &Request, channel_id: &str) -> ApiResult<Reply> {
    if header(req, "content-type").is_some_and(|ct| ct.starts_with("multipart/")) {
        return Err(ApiError::new(
            415,
            Code::InvalidParameter,
            "mail with attachments (multipart) is not taken yet; forward it without them",
        ));
    }
    let refused = |why: &str| {
        ApiError::new(
            401,
            Code::AuthenticationRequired,
            format!("the post is not signed by the channel's provider: {why}"),
        )
    };
    let db = Db::open()?;
    let channel = channel(&db, channel_id)?.ok_or_else(|| refused("no such email channel"))?;
    let form: Vec<(String, String)> = nexus_guest::body::form_pairs(req.body())?;
    let (Some(timestamp), Some(token), Some(signature)) = (
        field(&form, "timestamp"),
        field(&form, "token"),
        field(&form, "signature"),
    ) else {
        return Err(refused("timestamp, token and signature are required"));
    };
    if !webhook_signature::mailgun_matches(signature, &channel.secret, timestamp, token) {
        return Err(refused("the signature does not match"));
    }
    let fresh = timestamp
        .parse::<u64>()
        .is_ok_and(|t| now_unix().abs_diff(t) <= REPLAY_WINDOW_SECONDS);
    if !fresh {
        return Err(refused("the timestamp is outside the five-minute window"));
    }
    if !first_use(token)? {
        return Err(refused("the token was used before (a replay)"));
    }
    let sender = field(&form, "sender")
        .or_else(|| field(&form, "from"))
        .ok_or_else(|| ApiError::bad_parameter("`sender` is required"))?;
    let sender = nexus_guest::identity::normalise_email(sender)?;
    let text: String = field(&form, "stripped-text")
        .or_else(|| field(&form, "body-plain"))
        .ok_or_else(|| ApiError::bad_parameter("the mail has no text (`body-plain`)"))?
        .chars()
        .take(MAX_TEXT_CHARS)
        .collect();
    let subject = field(&form, "subject").unwrap_or_default();
    let message_id = field(&form, "Message-Id").unwrap_or(token);
    // A reply to a campaign's mail: its record is marked, and the agent sees which campaign and
    // record the conversation answers (`userData.campaign`).
    let answered =
        nexus_guest::campaign_send::answered(&db, channel.tenant_id, &channel.id, &sender, false)?;
    let user_data = answered.map(|campaign| json!({ "campaign": campaign }));
    let taken = inbound::take_text(
        &db,
        &Inlet {
            tenant_id: channel.tenant_id,
            channel_id: &channel.id,
            media: "email",
            securebox: None,
            user_data: user_data.as_ref(),
        },
        &Sender {
            kind: "email",
            value: &sender,
            nickname: &sender,
        },
        message_id,
        Some(&text),
        Some(&json!({ "subject": subject })),
    )?;
    Reply::ok(json!({
        "interactionId": taken.interaction,
        "message": taken.message,
        "duplicate": taken.duplicate,
    }))
}

/// `POST email/{channelId}/events`: a batch of the provider's events (SparkPost's event
/// webhook: a JSON array of `{"msys": {"message_event" | "unsubscribe_event" | ...: {...}}}`),
/// authenticated with HTTP Basic credentials whose password is the channel's secret (the
/// provider signs nothing). Each message event is joined to the mail it is about by its
/// `transmission_id` (the id the send's answer gave): `delivery` marks it delivered; `bounce`,
/// `out_of_band`, `policy_rejection`, `generation_failure` and `generation_rejection` failed,
/// with the provider's reason. A `list_unsubscribe`, a `link_unsubscribe` or a `spam_complaint`
/// suppresses the recipient for the whole tenant (source `unsubscribe`) and marks the campaign
/// mail they answer `opted-out`. Other events (injection, delay, opens, clicks, relays) are
/// taken and ignored. A batch sent again changes nothing more: statuses only move forward.
fn provider_events(req: &Request, channel_id: &str) -> ApiResult<Reply> {
    let refused = |why: &str| {
        ApiError::new(
            401,
            Code::AuthenticationRequired,
            format!("the batch does not carry the channel's credentials: {why}"),
        )
    };
    let db = Db::open()?;
    let channel = channel(&db, channel_id)?.ok_or_else(|| refused("no such email channel"))?;
    let authorization = header(req, "authorization").unwrap_or_default();
    if !webhook_signature::basic_password_matches(&authorization, &channel.secret) {
        return Err(refused(
            "HTTP Basic, with the channel's secret as the password, is required",
        ));
    }
    let batch: Vec<Value> = serde_json::from_slice(req.body()).map_err(|err| {
        ApiError::bad_parameter(format!("a batch of events is a JSON array: {err}"))
    })?;
    if batch.len() > MAX_EVENTS {
        return Err(ApiError::bad_parameter(format!(
            "a batch carries at most {MAX_EVENTS} events"
        )));
    }
    let mut recorded = 0;
    for item in &batch {
        let msys = &item["msys"];
        let event = msys
            .get("message_event")
            .or_else(|| msys.get("unsubscribe_event"));
        let Some(event) = event else {
            continue;
        };
        let kind = event["type"].as_str().unwrap_or_default();
        let changed = match kind {
            "delivery" => mail_receipt(&db, &channel, event, "delivered", None)?,
            "bounce"
            | "out_of_band"
            | "policy_rejection"
            | "generation_failure"
            | "generation_rejection" => {
                let reason = failure_reason(kind, event);
                mail_receipt(&db, &channel, event, "failed", Some(&reason))?
            }
            "list_unsubscribe" | "link_unsubscribe" | "spam_complaint" => {
                unsubscribe(&db, &channel, event, kind)?
            }
            _ => false,
        };
        recorded += usize::from(changed);
    }
    Reply::ok(json!({ "events": batch.len(), "recorded": recorded }))
}

/// Records what the provider said of the mail an event names (`transmission_id`): whether it
/// moved a message or a campaign record forward (one not known yet is kept, see
/// `inbound::record_receipt`).
fn mail_receipt(
    db: &Db,
    channel: &Channel,
    event: &Value,
    status: &str,
    reason: Option<&str>,
) -> ApiResult<bool> {
    let Some(transmission) = event["transmission_id"]
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= MAX_PROVIDER_ID_CHARS && !id.contains('\0'))
    else {
        return Ok(false);
    };
    let receipt = inbound::record_receipt(
        db,
        channel.tenant_id,
        &channel.id,
        transmission,
        status,
        reason,
    )?;
    Ok(matches!(
        receipt,
        inbound::Receipt::Applied(_) | inbound::Receipt::Campaign { moved: true }
    ))
}

/// A failure event's reason, as a campaign record keeps it: the event, its bounce class, and
/// what the receiving server said.
fn failure_reason(kind: &str, event: &Value) -> String {
    let class = event["bounce_class"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| event["bounce_class"].as_i64().map(|c| c.to_string()));
    let said = event["raw_reason"]
        .as_str()
        .or_else(|| event["reason"].as_str())
        .filter(|said| !said.trim().is_empty());
    let mut reason = format!("the provider reported {kind}");
    if let Some(class) = class {
        reason.push_str(&format!(" (bounce class {class})"));
    }
    if let Some(said) = said {
        reason.push_str(": ");
        reason.push_str(said.trim());
    }
    // PostgreSQL's text holds no NUL.
    reason
        .chars()
        .filter(|c| *c != '\0')
        .take(MAX_REASON_CHARS)
        .collect()
}

/// The recipient an unsubscribe or complaint names (`rcpt_to`) opts out: suppressed for the
/// whole tenant, and the campaign mail they answer marked `opted-out`, together. Whether a
/// suppression was made (a recipient suppressed for good already changes nothing).
fn unsubscribe(db: &Db, channel: &Channel, event: &Value, kind: &str) -> ApiResult<bool> {
    let Some(address) = event["rcpt_to"]
        .as_str()
        .filter(|address| address.contains('@'))
        .and_then(|address| nexus_guest::consent::address(address).ok())
    else {
        return Ok(false);
    };
    let reason = match kind {
        "spam_complaint" => "the recipient reported the mail as spam",
        "link_unsubscribe" => "the recipient unsubscribed with the mail's link",
        _ => "the recipient unsubscribed (List-Unsubscribe)",
    };
    db.transaction(|db| {
        nexus_guest::campaign_send::answered(db, channel.tenant_id, &channel.id, &address, true)?;
        inbound::opt_out(db, channel.tenant_id, &address, reason, "unsubscribe")
    })
}

/// The subject of the customer's latest mail in the conversation, answered with `Re: `.
fn reply_subject(db: &Db, interaction: &str) -> ApiResult<String> {
    let subject = db
        .rows(
            "read the subject",
            "SELECT data->>'subject' AS subject FROM messages \
             WHERE interaction_id = $1 AND sender_kind = 'Customer' AND data ? 'subject' \
             ORDER BY position DESC LIMIT 1",
            &[uuid(interaction)],
        )?
        .rows()
        .next()
        .and_then(|row| row.get::<String>("subject"))
        .unwrap_or_default();
    Ok(if subject.to_lowercase().starts_with("re:") {
        subject
    } else if subject.is_empty() {
        "Your message".into()
    } else {
        format!("Re: {subject}")
    })
}

/// Runs one job of this component, by its kind.
async fn run(job: &Value) -> ApiResult<Reply> {
    match job["kind"].as_str() {
        Some("campaign-send") => send_campaign_records(job).await,
        _ => send(job).await,
    }
}

/// Sends the records of a campaign a job names (`nexus_guest::campaign_send`): one
/// transmission each, with the campaign's subject and text rendered for the record.
async fn send_campaign_records(job: &Value) -> ApiResult<Reply> {
    let sent = nexus_guest::campaign_send::run(job, "email", |channel, message| async move {
        campaign_send(&channel, message).await
    })
    .await?;
    Reply::ok(sent)
}

/// Sends one record's mail through the transmissions API.
async fn campaign_send(channel: &Channel, message: Message) -> Outcome {
    let (Some(from), Some(key)) = (
        channel.setting("from"),
        channel.credentials["apiKey"].as_str(),
    ) else {
        return Outcome::failed(
            "an email channel needs settings.from and credentials.apiKey to send",
        );
    };
    let api = channel
        .setting("apiBaseUrl")
        .unwrap_or(DEFAULT_API)
        .trim_end_matches('/');
    let body = match serde_json::to_vec(&json!({
        "recipients": [{"address": {"email": message.to}}],
        "content": {"from": from, "subject": message.subject, "text": message.body},
        "metadata": {"idempotencyKey": message.idempotency_key},
    })) {
        Ok(body) => body,
        Err(err) => return Outcome::failed(format!("the transmission: {err}")),
    };
    let request = Request::builder()
        .method(Method::Post)
        .uri(format!("{api}/api/v1/transmissions"))
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .header("authorization", key)
        .header("idempotency-key", message.idempotency_key.as_str())
        .body(body)
        .build();
    match spin_sdk::http::send::<_, spin_sdk::http::Response>(request).await {
        // SparkPost's refusal: `{"errors": [{"message": "...", "code": "1902"}]}`.
        Ok(response) => Outcome::of_answer(
            &response,
            |answer| answer["results"]["id"].as_str().map(str::to_owned),
            |status, answer| {
                let error = &answer["errors"][0];
                format!(
                    "the email provider answered {status} {} {}",
                    error["code"].as_str().unwrap_or_default(),
                    error["message"].as_str().unwrap_or_default()
                )
                .trim_end()
                .to_owned()
            },
        ),
        Err(err) => Outcome::retry(format!("cannot reach the email provider: {err}")),
    }
}

/// Sends one message through the transmissions API (a job).
async fn send(job: &Value) -> ApiResult<Reply> {
    let (interaction, position) = inbound::job_message(job)?;
    let interaction = interaction.as_str();
    let (out, channel, subject) = {
        let db = Db::open()?;
        let Some(out) = inbound::outgoing(&db, interaction, position, "email")? else {
            return Err(inbound::gone(
                "the message or its recipient's address is gone",
            ));
        };
        let Some(channel) = channel(&db, &out.channel_id)? else {
            return Err(inbound::gone("the channel is gone or disabled"));
        };
        let subject = reply_subject(&db, interaction)?;
        (out, channel, subject)
    };
    let (Some(from), Some(key)) = (
        channel.setting("from"),
        channel.credentials["apiKey"].as_str(),
    ) else {
        inbound::set_delivery(interaction, position, "failed", None)?;
        return Err(inbound::gone(
            "an email channel needs settings.from and credentials.apiKey to send",
        ));
    };
    let api = channel
        .setting("apiBaseUrl")
        .unwrap_or(DEFAULT_API)
        .trim_end_matches('/');
    let body = serde_json::to_vec(&json!({
        "recipients": [{"address": {"email": out.to}}],
        "content": {
            "from": from,
            "subject": subject,
            "text": out.message["text"],
        },
        "metadata": {"interactionId": interaction, "position": position},
    }))
    .map_err(|err| ApiError::internal("encode the transmission", err))?;
    let request = Request::builder()
        .method(Method::Post)
        .uri(format!("{api}/api/v1/transmissions"))
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .header("authorization", key)
        // The same on every attempt: an API that takes one sends a retried message once.
        .header("idempotency-key", format!("nexus:{interaction}:{position}"))
        .body(body)
        .build();
    let id = inbound::send_outgoing(
        request,
        "the email provider",
        interaction,
        position,
        |answer| answer["results"]["id"].as_str().map(str::to_owned),
        |answer| format!(": {answer}"),
    )
    .await?;
    Reply::ok(json!({ "sent": true, "id": id }))
}
