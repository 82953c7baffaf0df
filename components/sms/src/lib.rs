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
//! Consent comes before routing, for every text: a keyword (`nexus_guest::consent`: the whole
//! message STOP, STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT; START or UNSTOP; HELP or INFO, in
//! any case) is acted on and answered, and never enters a conversation. An opt-out suppresses
//! the number for the tenant's campaigns (`suppressions`) and is answered with the channel's
//! `optOutReply` once (not again while the number stays suppressed); an opt-in lifts what
//! opt-outs made and is answered with `optInReply` when it lifted one; HELP is answered with
//! `helpReply`. Each answer is a durable job (`keyword-reply`) keyed by the message, so a
//! retried delivery answers once; `keywordReplies: false` leaves the answering to an aggregator
//! that does it itself.
//!
//! Out: what agents and bots say, one durable job each (`POST sms/jobs/run`, the admin token;
//! `jobs/sweep` runs the due ones from a cron under Spin):
//! `POST {apiBaseUrl}/2010-04-01/Accounts/{accountSid}/Messages.json` with `To`, `From`, `Body`
//! and `StatusCallback`, authenticated with the account SID and auth token; the answer's `sid`
//! is kept to match the status callbacks. A 4xx is final (the message failed); a 5xx, a 429 or
//! no answer is retried.
//!
//! Campaigns (`components/outbound`): a `campaign-send` job sends one record of a campaign. It
//! checks at send time that the record is still out for sending, that its campaign is running
//! and that the address is not suppressed; renders the campaign's template with the record's
//! variables (a record that lacks one fails alone, naming it); sends with the idempotency key
//! `nexus:campaign:{campaign}:{contact}` on every attempt; and reports the outcome
//! (`nexus_campaign_send_end`): the `sid` for the receipts, the provider's reason for a refusal,
//! a 5xx or no answer to be tried again after the campaign's backoff, a 429 to slow the campaign.
//! The job itself always succeeds: the campaign, not the queue, decides what is tried again.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::campaign_send::{Message, Outcome};
use nexus_guest::consent::{self, Keyword};
use nexus_guest::inbound::{self, Inlet, Sender};
use nexus_guest::spin::{
    Db, Reply, header, path_segments, reference_id, require_admin, respond, text,
};
use nexus_guest::webhook_signature;
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::pg4::ParameterValue;

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
    // Consent comes first: a keyword is acted on and answered, never routed.
    if let Some((keyword, word)) = consent::keyword(&body) {
        return take_keyword(&db, &channel, &from, sid, keyword, &word);
    }
    // A reply to a campaign's message: its record is marked, and the agent sees which campaign
    // and record the conversation answers (`userData.campaign`).
    let answered =
        nexus_guest::campaign_send::answered(&db, channel.tenant_id, &channel.id, &from, false)?;
    let user_data = answered.map(|campaign| json!({ "campaign": campaign }));
    inbound::take_text(
        &db,
        &Inlet {
            tenant_id: channel.tenant_id,
            channel_id: &channel.id,
            media: "sms",
            securebox: None,
            user_data: user_data.as_ref(),
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

/// Acts on a keyword text from `from` (message `sid`): an opt-out suppresses the number for the
/// whole tenant for good (`source` keyword), an opt-in lifts what opt-outs made, HELP asks for
/// the help text. The answer goes out as a durable job, once: an opt-out only when the number
/// was not already suppressed for good, an opt-in only when it lifted one, and a retried
/// delivery of the same message (the same `sid`, hence the same job id) queues nothing more.
fn take_keyword(
    db: &Db,
    channel: &Channel,
    from: &str,
    sid: &str,
    keyword: Keyword,
    word: &str,
) -> ApiResult<()> {
    // The suppression and its answer commit together: a retried delivery finds both or
    // neither.
    db.transaction(|db| {
        let tenant = ParameterValue::Int64(channel.tenant_id);
        let reply = match keyword {
            Keyword::OptOut => {
                // The campaign message it answers, if any, is marked opted out.
                nexus_guest::campaign_send::answered(
                    db,
                    channel.tenant_id,
                    &channel.id,
                    from,
                    true,
                )?;
                let added = inbound::opt_out(
                    db,
                    channel.tenant_id,
                    from,
                    &format!("the texter sent {word} to channel {}", channel.id),
                    "keyword",
                )?;
                // Nothing is answered when the number was suppressed for good already.
                added.then(|| {
                    channel
                        .setting("optOutReply")
                        .unwrap_or(consent::DEFAULT_OPT_OUT_REPLY)
                })
            }
            Keyword::OptIn => {
                let lifted = db.rows(
                    "lift the opt-out",
                    "DELETE FROM suppressions \
                     WHERE tenant_id = $1 AND address = $2 AND source = 'keyword' RETURNING id",
                    &[tenant, text(from)],
                )?;
                lifted.rows().next().is_some().then(|| {
                    channel
                        .setting("optInReply")
                        .unwrap_or(consent::DEFAULT_OPT_IN_REPLY)
                })
            }
            Keyword::Help => Some(
                channel
                    .setting("helpReply")
                    .unwrap_or(consent::DEFAULT_HELP_REPLY),
            ),
        };
        // An aggregator that answers keywords itself (Twilio's Advanced Opt-Out) is left to it.
        let replies = channel.settings["keywordReplies"].as_bool().unwrap_or(true);
        let Some(reply) = reply.filter(|_| replies) else {
            return Ok(());
        };
        // One number's answers go out in the order their keywords came (STOP, then START).
        db.execute(
            "queue the keyword's answer",
            "INSERT INTO jobs (id, tenant_id, component, kind, ordering_key, payload) \
             VALUES (md5('sms-keyword:' || $2::text || ':' || $3::text)::uuid, $1, 'sms', \
                     'keyword-reply', 'sms:' || $2::text || ':' || $4::text, \
                     jsonb_build_object('channelId', $2::text, 'to', $4::text, 'text', $5::text)) \
             ON CONFLICT (id) DO NOTHING",
            &[
                ParameterValue::Int64(channel.tenant_id),
                text(channel.id.as_str()),
                text(sid),
                text(from),
                text(reply),
            ],
        )?;
        Ok(())
    })
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
    let reason = (status == "failed").then(|| {
        let reported = field(&form, "MessageStatus").unwrap_or_default();
        match field(&form, "ErrorCode") {
            Some(code) => format!("the aggregator reported {reported} (error {code})"),
            None => format!("the aggregator reported {reported}"),
        }
    });
    // A conversation's message or a campaign's record; a callback may come before the send's
    // answer gave nexus the sid: kept until then.
    let receipt = inbound::record_receipt(
        &db,
        channel.tenant_id,
        &channel.id,
        sid,
        status,
        reason.as_deref(),
    )?;
    Reply::ok(json!({
        "recorded": matches!(
            receipt,
            inbound::Receipt::Applied(_) | inbound::Receipt::Campaign { moved: true }
        ),
        "pending": matches!(receipt, inbound::Receipt::Pending),
    }))
}

async fn run_job(req: &Request) -> ApiResult<Reply> {
    require_admin(req)?;
    let job: Value = serde_json::from_slice(req.body())
        .map_err(|err| ApiError::bad_parameter(format!("a job is JSON: {err}")))?;
    run(&job, &nexus_guest::spin::origin(req)).await
}

/// Runs one job of this component, by its kind.
async fn run(job: &Value, origin: &str) -> ApiResult<Reply> {
    match job["kind"].as_str() {
        Some("keyword-reply") => send_keyword_reply(job).await,
        Some("campaign-send") => send_campaign_records(job, origin).await,
        _ => send(job, origin).await,
    }
}

/// The due sends, from a cron under Spin.
async fn sweep(req: &Request) -> ApiResult<Reply> {
    require_admin(req)?;
    let origin = nexus_guest::spin::origin(req);
    Reply::ok(
        nexus_guest::sweep::sweep("sms", |job| {
            let origin = origin.clone();
            async move { run(&job, &origin).await }
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
    let callback = status_callback_url(&channel, origin);
    let text = out.message["text"].as_str().unwrap_or_default();
    // The same key on every attempt: an API that takes one sends a retried message once.
    let key = format!("nexus:{interaction}:{position}");
    let Some(request) = messages_request(&channel, &out.to, text, Some(&callback), &key) else {
        inbound::set_delivery(interaction, position, "failed", None)?;
        return Err(inbound::gone(NO_SENDER));
    };
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

/// Where the aggregator reports a message's status: under the channel's `webhookBaseUrl`, or
/// `origin` (where nexus was reached) when it does not say.
fn status_callback_url(channel: &Channel, origin: &str) -> String {
    format!(
        "{}/nexus/v3/sms/{}/status",
        channel
            .setting("webhookBaseUrl")
            .unwrap_or(origin)
            .trim_end_matches('/'),
        channel.id
    )
}

const NO_SENDER: &str = "an sms channel needs settings.accountSid and settings.from to send";

/// The aggregator's request that sends `text` to `to` from `channel` (`callback` for its status
/// reports, `key` as its idempotency key); none when the channel lacks `accountSid` or `from`.
fn messages_request(
    channel: &Channel,
    to: &str,
    text: &str,
    callback: Option<&str>,
    key: &str,
) -> Option<Request> {
    let (Some(account), Some(from)) = (channel.setting("accountSid"), channel.setting("from"))
    else {
        return None;
    };
    let api = channel
        .setting("apiBaseUrl")
        .unwrap_or(DEFAULT_API)
        .trim_end_matches('/');
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("To", to)
        .append_pair("From", from)
        .append_pair("Body", text);
    if let Some(callback) = callback {
        form.append_pair("StatusCallback", callback);
    }
    let form = form.finish();
    let credentials = STANDARD.encode(format!("{account}:{}", channel.secret));
    Some(
        Request::builder()
            .method(Method::Post)
            .uri(format!("{api}/2010-04-01/Accounts/{account}/Messages.json"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", form.len().to_string())
            .header("authorization", format!("Basic {credentials}"))
            .header("idempotency-key", key)
            .body(form.into_bytes())
            .build(),
    )
}

/// Sends a keyword's answer (a job `{payload: {channelId, to, text}}`): 2xx done; 429, 5xx or
/// no answer retried; another 4xx, or a channel that is gone or cannot send, final.
async fn send_keyword_reply(job: &Value) -> ApiResult<Reply> {
    let payload = &job["payload"];
    let (Some(channel_id), Some(to), Some(text)) = (
        payload["channelId"].as_str(),
        payload["to"].as_str(),
        payload["text"].as_str(),
    ) else {
        return Err(inbound::gone(
            "a keyword-reply job names payload.channelId, payload.to and payload.text",
        ));
    };
    let channel = {
        let db = Db::open()?;
        channel(&db, channel_id)?.ok_or_else(|| inbound::gone("the channel is gone or disabled"))?
    };
    let key = format!(
        "nexus:keyword-reply:{}",
        job["id"].as_str().unwrap_or(channel_id)
    );
    let request =
        messages_request(&channel, to, text, None, &key).ok_or_else(|| inbound::gone(NO_SENDER))?;
    let response = spin_sdk::http::send::<_, Response>(request)
        .await
        .map_err(|err| {
            ApiError::new(
                503,
                Code::Unavailable,
                format!("cannot reach the aggregator: {err}"),
            )
        })?;
    match *response.status() {
        200..=299 => Reply::ok(json!({ "sent": true })),
        status @ (429 | 500..=599) => Err(ApiError::new(
            503,
            Code::Unavailable,
            format!("the aggregator answered {status}; the answer is sent again"),
        )
        .retry_after(nexus_guest::spin::retry_after(&response))),
        status => Err(inbound::gone(&format!(
            "the aggregator refused the answer with {status}; it is not retried"
        ))),
    }
}

/// Sends the records of a campaign a job names (see the module's description and
/// `nexus_guest::campaign_send`).
async fn send_campaign_records(job: &Value, origin: &str) -> ApiResult<Reply> {
    let sent = nexus_guest::campaign_send::run(job, "sms", |channel, message| async move {
        campaign_send(&channel, message, origin).await
    })
    .await?;
    Reply::ok(sent)
}

/// Sends one record's message through the aggregator's API.
async fn campaign_send(channel: &Channel, message: Message, origin: &str) -> Outcome {
    let Some(request) = messages_request(
        channel,
        &message.to,
        &message.body,
        Some(&status_callback_url(channel, origin)),
        &message.idempotency_key,
    ) else {
        return Outcome::failed(NO_SENDER);
    };
    match spin_sdk::http::send::<_, Response>(request).await {
        // Twilio's refusal: `{"code": 21211, "message": "The 'To' number ... is not valid"}`.
        Ok(response) => Outcome::of_answer(
            &response,
            |answer| answer["sid"].as_str().map(str::to_owned),
            |status, answer| {
                let message = answer["message"].as_str().unwrap_or_default();
                match answer["code"].as_i64() {
                    Some(code) => format!("the aggregator answered {status}: {code} {message}"),
                    None => format!("the aggregator answered {status} {message}"),
                }
                .trim_end()
                .to_owned()
            },
        ),
        Err(err) => Outcome::retry(format!("cannot reach the aggregator: {err}")),
    }
}
