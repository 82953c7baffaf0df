//! SMS through an aggregator, in the shape of the Twilio API (`/nexus/v3/sms/...`), on a channel
//! of type `sms` whose `secret` is the aggregator account's auth token and whose settings are
//! `{accountSid, from, apiBaseUrl (default https://api.twilio.com), webhookBaseUrl}`.
//!
//! In, from the aggregator, form posts signed `X-Twilio-Signature` (base64 HMAC-SHA1, keyed with
//! the auth token, of the URL it called followed by the sorted form parameters). The URL is the
//! one this request came to, or `webhookBaseUrl` + the path when nexus sits behind a proxy:
//! - `POST sms/{channelId}/inbound` (`MessageSid`, `From`, `To`, `Body`, `AccountSid`): the
//!   sender's open conversation on the channel takes the text, or a new one starts and is
//!   routed; a repeated `MessageSid` is stored once. The answer is an empty TwiML `<Response/>`.
//! - `POST sms/{channelId}/status` (`MessageSid`, `MessageStatus`): what became of a message
//!   nexus sent (sent, delivered, read; undelivered and failed are failed).
//!
//! Out: what agents and bots say, one durable job each (`POST sms/jobs/run`, the admin token;
//! `jobs/sweep` runs the due ones from a cron under Spin):
//! `POST {apiBaseUrl}/2010-04-01/Accounts/{accountSid}/Messages.json` with `To`, `From`, `Body`
//! and `StatusCallback`, authenticated with the account SID and auth token; the answer's `sid`
//! is kept to match the status callbacks. A 4xx is final (the message failed); a 5xx, a 429 or
//! no answer is retried.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::inbound::{self, Inlet, Sender};
use nexus_guest::spin::{Db, Reply, header, path_segments, reference_id, require_admin, respond};
use nexus_guest::webhook_signature;
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

const MAX_BODY_CHARS: usize = 1600;
const DEFAULT_API: &str = "https://api.twilio.com";

#[http_component]
async fn sms(req: Request) -> impl IntoResponse {
    let reference = reference_id(&req);
    let path = path_segments(&req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["jobs", "run"]) => respond(&reference, run_job(&req).await),
        (Method::Post, ["jobs", "sweep"]) => respond(&reference, sweep(&req).await),
        (Method::Post, [channel, "inbound"]) => match inbound_message(&req, channel) {
            // The aggregator wants TwiML back; an empty response sends no reply of its own.
            Ok(()) => Response::builder()
                .status(200)
                .header("content-type", "text/xml")
                .body("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>")
                .build(),
            Err(err) => respond(&reference, Err(err)),
        },
        (Method::Post, [channel, "status"]) => respond(&reference, status_callback(&req, channel)),
        _ => respond(&reference, Err(ApiError::not_found("no such operation"))),
    }
}

type Channel = inbound::ProviderChannel;

fn channel(db: &Db, id: &str) -> ApiResult<Option<Channel>> {
    inbound::provider_channel(db, id, "sms")
}

/// The URL the aggregator called, as it signed it.
fn called_url(req: &Request, channel: &Channel) -> String {
    let full = header(req, "spin-full-url").unwrap_or_default();
    match channel.setting("webhookBaseUrl") {
        Some(base) => {
            let path = full
                .find("://")
                .and_then(|scheme| {
                    full[scheme + 3..]
                        .find('/')
                        .map(|i| &full[scheme + 3 + i..])
                })
                .unwrap_or("/");
            format!("{}{path}", base.trim_end_matches('/'))
        }
        None => full,
    }
}

/// A form post's parameters, in the order they came.
type Form = Vec<(String, String)>;

/// The channel and the form of a request the aggregator signed; every failure is one 401.
fn signed(req: &Request, channel_id: &str) -> ApiResult<(Db, Channel, Form)> {
    let refused = || {
        ApiError::new(
            401,
            Code::AuthenticationRequired,
            "the request is not signed by the channel's aggregator (X-Twilio-Signature)",
        )
    };
    let db = Db::open()?;
    let channel = channel(&db, channel_id)?.ok_or_else(refused)?;
    let signature = header(req, "x-twilio-signature").ok_or_else(refused)?;
    let form: Form = nexus_guest::body::form_pairs(req.body())?;
    if !webhook_signature::twilio_matches(
        &signature,
        &channel.secret,
        &called_url(req, &channel),
        &form,
    ) {
        return Err(refused());
    }
    if let Some(account) = channel.setting("accountSid")
        && field(&form, "AccountSid") != Some(account)
    {
        return Err(refused());
    }
    Ok((db, channel, form))
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn required<'a>(form: &'a [(String, String)], name: &str) -> ApiResult<&'a str> {
    field(form, name)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ApiError::bad_parameter(format!("`{name}` is required")))
}

fn inbound_message(req: &Request, channel_id: &str) -> ApiResult<()> {
    let (db, channel, form) = signed(req, channel_id)?;
    let sid = field(&form, "MessageSid")
        .or_else(|| field(&form, "SmsSid"))
        .filter(|sid| !sid.is_empty())
        .ok_or_else(|| ApiError::bad_parameter("`MessageSid` is required"))?;
    let from = nexus_guest::identity::normalise_phone(required(&form, "From")?)?;
    let body: String = field(&form, "Body")
        .unwrap_or_default()
        .chars()
        .take(MAX_BODY_CHARS)
        .collect();
    if body.is_empty() {
        return Err(ApiError::bad_parameter(
            "`Body` is empty (media messages are not taken yet)",
        ));
    }
    inbound::take_text(
        &db,
        &Inlet {
            tenant_id: channel.tenant_id,
            channel_id: &channel.id,
            media: "sms",
            securebox: None,
        },
        &Sender {
            kind: "phone",
            value: &from,
            nickname: &from,
        },
        sid,
        Some(&body),
        None,
    )?;
    Ok(())
}

fn status_callback(req: &Request, channel_id: &str) -> ApiResult<Reply> {
    let (db, channel, form) = signed(req, channel_id)?;
    let sid = required(&form, "MessageSid")?;
    let status = match required(&form, "MessageStatus")? {
        "sent" => "sent",
        "delivered" => "delivered",
        "read" => "read",
        "undelivered" | "failed" => "failed",
        // accepted, queued, sending, scheduled...: nothing to record yet.
        _ => return Reply::ok(json!({ "recorded": false, "pending": false })),
    };
    // A callback may come before the send's answer gave nexus the sid: kept until then.
    let receipt = inbound::record_receipt(&db, channel.tenant_id, &channel.id, sid, status)?;
    Reply::ok(json!({
        "recorded": matches!(receipt, inbound::Receipt::Applied(_)),
        "pending": matches!(receipt, inbound::Receipt::Pending),
    }))
}

async fn run_job(req: &Request) -> ApiResult<Reply> {
    require_admin(req)?;
    let job: Value = serde_json::from_slice(req.body())
        .map_err(|err| ApiError::bad_parameter(format!("a job is JSON: {err}")))?;
    send(&job, &nexus_guest::spin::origin(req)).await
}

/// The due sends, from a cron under Spin.
async fn sweep(req: &Request) -> ApiResult<Reply> {
    require_admin(req)?;
    let origin = nexus_guest::spin::origin(req);
    Reply::ok(
        nexus_guest::sweep::sweep("sms", |job| {
            let origin = origin.clone();
            async move { send(&job, &origin).await }
        })
        .await?,
    )
}

/// Sends one message through the aggregator's API (a job); `origin` is where nexus is reached,
/// for the status callback when `webhookBaseUrl` does not say.
async fn send(job: &Value, origin: &str) -> ApiResult<Reply> {
    let (interaction, position) = inbound::job_message(job)?;
    let interaction = interaction.as_str();
    let (out, channel) = {
        let db = Db::open()?;
        let Some(out) = inbound::outgoing(&db, interaction, position, "phone")? else {
            return Err(inbound::gone(
                "the message or its recipient's number is gone",
            ));
        };
        let Some(channel) = channel(&db, &out.channel_id)? else {
            return Err(inbound::gone("the channel is gone or disabled"));
        };
        (out, channel)
    };
    let (Some(account), Some(from)) = (channel.setting("accountSid"), channel.setting("from"))
    else {
        inbound::set_delivery(interaction, position, "failed", None)?;
        return Err(inbound::gone(
            "an sms channel needs settings.accountSid and settings.from to send",
        ));
    };
    let api = channel
        .setting("apiBaseUrl")
        .unwrap_or(DEFAULT_API)
        .trim_end_matches('/');
    let callback = format!(
        "{}/nexus/v3/sms/{}/status",
        channel
            .setting("webhookBaseUrl")
            .map(str::to_owned)
            .unwrap_or_else(|| origin.to_owned())
            .trim_end_matches('/'),
        channel.id
    );
    let text = out.message["text"].as_str().unwrap_or_default();
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("To", &out.to)
        .append_pair("From", from)
        .append_pair("Body", text)
        .append_pair("StatusCallback", &callback)
        .finish();
    let credentials = STANDARD.encode(format!("{account}:{}", channel.secret));
    let request = Request::builder()
        .method(Method::Post)
        .uri(format!("{api}/2010-04-01/Accounts/{account}/Messages.json"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", form.len().to_string())
        .header("authorization", format!("Basic {credentials}"))
        // The same on every attempt: an API that takes one sends a retried message once.
        .header("idempotency-key", format!("nexus:{interaction}:{position}"))
        .body(form.into_bytes())
        .build();
    let sid = inbound::send_outgoing(
        request,
        "the aggregator",
        interaction,
        position,
        |answer| answer["sid"].as_str().map(str::to_owned),
        |answer| format!(": {}", answer["message"].as_str().unwrap_or_default()),
    )
    .await?;
    Reply::ok(json!({ "sent": true, "sid": sid }))
}
