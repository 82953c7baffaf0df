//! A `campaign-send` job, whichever channel sends it (`components/sms`, `components/email`): the
//! records it names (`{payload: {campaignId, contactIds}}`) are sent one after the other. For
//! each, `nexus_campaign_send_begin` says whether it is still out for sending, its campaign
//! running and its address not suppressed, and gives what to send; the campaign's template is
//! rendered with the record's variables (a record that lacks one fails alone, naming it); the
//! channel sends it, with the idempotency key `nexus:campaign:{campaign}:{contact}` on every
//! attempt; `nexus_campaign_send_end` records the outcome. A record another run of the job dealt
//! with is skipped, so a job run again after its host died sends only what was not sent. The
//! job itself succeeds: the campaign, not the queue, decides what is tried again.

use std::collections::HashMap;

use serde_json::{Value, json};
use spin_sdk::http::Response;
use spin_sdk::pg4::ParameterValue;

use crate::api::{ApiError, ApiResult, Code};
use crate::inbound::{ProviderChannel, provider_channel};
use crate::spin::{Db, opt_text, text, uuid};
use crate::template::Template;

/// A record's message, rendered.
pub struct Message {
    pub to: String,
    /// For email.
    pub subject: Option<String>,
    pub body: String,
    /// The same on every attempt: a provider that honours it sends a retried message once.
    pub idempotency_key: String,
}

/// How a send ended, for `nexus_campaign_send_end`.
pub struct Outcome {
    outcome: &'static str,
    provider_id: Option<String>,
    reason: Option<String>,
    retry_seconds: Option<f64>,
}

impl Outcome {
    /// Taken by the provider, under its id for the message.
    pub fn sent(provider_id: Option<String>) -> Outcome {
        Outcome {
            outcome: "sent",
            provider_id,
            reason: None,
            retry_seconds: None,
        }
    }

    /// Refused for good, with the provider's reason.
    pub fn failed(reason: impl Into<String>) -> Outcome {
        Outcome::with("failed", reason)
    }

    /// A transient failure: again after the campaign's backoff, while attempts remain.
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::with("retry", reason)
    }

    fn with(outcome: &'static str, reason: impl Into<String>) -> Outcome {
        Outcome {
            outcome,
            provider_id: None,
            reason: Some(reason.into()),
            retry_seconds: None,
        }
    }

    /// What a provider's HTTP answer means: 2xx sent (`provider_id` from the answer), 429
    /// throttled (the campaign waits its `Retry-After`, one second without one), 5xx retried,
    /// another status failed. `reason` says what the provider said.
    pub fn of_answer(
        response: &Response,
        provider_id: impl FnOnce(&Value) -> Option<String>,
        reason: impl FnOnce(u16, &Value) -> String,
    ) -> Outcome {
        let status = *response.status();
        let answer: Value = serde_json::from_slice(response.body()).unwrap_or_default();
        match status {
            200..=299 => Outcome::sent(provider_id(&answer)),
            429 => Outcome {
                outcome: "throttled",
                provider_id: None,
                reason: Some(reason(status, &answer)),
                retry_seconds: Some(
                    crate::spin::retry_after(response).map_or(1.0, |seconds| seconds as f64),
                ),
            },
            500..=599 => Outcome::retry(reason(status, &answer)),
            _ => Outcome::failed(reason(status, &answer)),
        }
    }
}

/// Runs a `campaign-send` job: each record's message is handed to `send` with the campaign's
/// channel (of type `kind`), which sends it and says how that went. A record whose channel is
/// gone or disabled fails without `send`.
pub async fn run<F, Fut>(job: &Value, kind: &str, mut send: F) -> ApiResult<Value>
where
    F: FnMut(ProviderChannel, Message) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    // Every record of a job has its campaign's channel: looked up once.
    let mut channels: HashMap<String, Option<ProviderChannel>> = HashMap::new();
    let payload = &job["payload"];
    let contacts: Vec<i64> = payload["contactIds"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let Some(campaign) = payload["campaignId"]
        .as_str()
        .filter(|_| !contacts.is_empty())
    else {
        return Err(ApiError::new(
            422,
            Code::NotFound,
            "a campaign-send job names payload.campaignId and payload.contactIds",
        ));
    };
    let mut records = Vec::with_capacity(contacts.len());
    for contact in contacts {
        let begun = Db::open()?
            .json_row(
                "begin the campaign send",
                "SELECT nexus_campaign_send_begin($1::uuid, $2)",
                &[uuid(campaign), ParameterValue::Int64(contact)],
            )?
            .unwrap_or_default();
        if begun["action"] != "send" {
            records.push(json!({ "contactId": contact, "sent": false, "why": begun["why"] }));
            continue;
        }
        let channel_id = begun["channelId"].as_str().unwrap_or_default();
        let channel = match channels.get(channel_id) {
            Some(known) => Ok(known.clone()),
            None => Db::open().and_then(|db| provider_channel(&db, channel_id, kind)),
        };
        if let Ok(found) = &channel {
            channels.insert(channel_id.to_owned(), found.clone());
        }
        let outcome = match (render(&begun), channel) {
            (Err(why), _) => Outcome::failed(why),
            (_, Err(err)) => Outcome::retry(err.message),
            (_, Ok(None)) => Outcome::failed("the channel is gone or disabled"),
            (Ok((subject, body)), Ok(Some(channel))) => {
                let message = Message {
                    to: begun["to"].as_str().unwrap_or_default().to_owned(),
                    subject,
                    body,
                    idempotency_key: format!("nexus:campaign:{campaign}:{contact}"),
                };
                send(channel, message).await
            }
        };
        let status = Db::open()?
            .rows(
                "end the campaign send",
                "SELECT nexus_campaign_send_end($1::uuid, $2, $3, $4, $5, $6::float8) AS status",
                &[
                    uuid(campaign),
                    ParameterValue::Int64(contact),
                    text(outcome.outcome),
                    opt_text(outcome.provider_id.clone()),
                    opt_text(outcome.reason.clone()),
                    outcome
                        .retry_seconds
                        .map_or(ParameterValue::DbNull, ParameterValue::Floating64),
                ],
            )?
            .rows()
            .next()
            .and_then(|row| row.get::<String>("status"))
            .unwrap_or_default();
        records.push(json!({
            "contactId": contact,
            "sent": outcome.outcome == "sent",
            "status": status,
            "providerId": outcome.provider_id,
        }));
    }
    Ok(json!({ "records": records }))
}

/// The campaign's subject (email) and body rendered for the record, or why not.
fn render(begun: &Value) -> Result<(Option<String>, String), String> {
    let variables = begun["variables"].as_object().cloned().unwrap_or_default();
    let lookup = |name: &str| variables.get(name).and_then(Value::as_str);
    let rendered = |text: &str| Template::parse(text).and_then(|template| template.render(lookup));
    let subject = begun["subject"].as_str().map(rendered).transpose()?;
    let body = rendered(begun["body"].as_str().unwrap_or_default())?;
    Ok((subject, body))
}

/// The campaign message a text or mail from `from` to channel `channel_id` answers (the last
/// sent from that channel to that address in the past 30 days), marked `replied` (or
/// `opted-out`): `{campaignId, campaignName, clientId}`, for the conversation's user data.
pub fn answered(
    db: &Db,
    tenant_id: i64,
    channel_id: &str,
    from: &str,
    opt_out: bool,
) -> ApiResult<Option<Value>> {
    db.json_row(
        "find the campaign answered",
        "SELECT nexus_campaign_answered($1, $2::uuid, $3, $4)",
        &[
            ParameterValue::Int64(tenant_id),
            uuid(channel_id),
            text(from),
            ParameterValue::Boolean(opt_out),
        ],
    )
    .map(|found| found.filter(|found| !found.is_null()))
}
