//! Calls to the nexus host's tenant-components service (`http://tenant-components.nexus.internal`,
//! served in process to the components whose `allowed_outbound_hosts` name it): validating an
//! upload, a tenant bot's turn, a transform. Under Spin the service does not exist, so every
//! call fails, and callers fall back (a bot's conversation goes to routing).
//!
//! Also the transform chains of channels: each message runs through the channel's enabled
//! transforms for its direction, in order, before it is stored.

use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::api::{ApiError, ApiResult, Code};
use crate::outbound;
use crate::spin::{Db, Live, text, uuid};

/// The service's address.
pub const SERVICE: &str = "http://tenant-components.nexus.internal";
/// The Redis pub/sub channel (after the key prefix) that announces a component's new revision.
pub const ANNOUNCEMENTS: &str = "tenant-components";

/// What the service answered.
#[derive(Debug)]
pub enum Outcome {
    /// 200: the component's answer.
    Answered(Value),
    /// 422: the component's own refusal (a bot declining the turn, a transform rejecting).
    Refused(String),
    /// No answer of the component's: why (`reason` as the host names it, and a message).
    Failed { reason: String, message: String },
}

/// POSTs `body` to the service's `path`, waiting at most `timeout_ms`.
pub fn call(path: &str, content_type: &str, body: &[u8], timeout_ms: u64) -> Outcome {
    let headers = [("content-type".to_owned(), content_type.to_owned())];
    let answer = match outbound::post(
        &format!("{SERVICE}{path}"),
        &headers,
        body,
        timeout_ms,
        1 << 20,
    ) {
        Ok(answer) => answer,
        Err(failure) => {
            return Outcome::Failed {
                reason: "unavailable".into(),
                message: format!(
                    "the tenant-components service is unreachable (it runs only under the nexus host): {failure}"
                ),
            };
        }
    };
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    match answer.status {
        200 => Outcome::Answered(value),
        422 => Outcome::Refused(
            ["declined", "rejected", "error"]
                .iter()
                .find_map(|key| value[key].as_str())
                .unwrap_or("refused")
                .to_owned(),
        ),
        status => Outcome::Failed {
            reason: value["failure"]["reason"]
                .as_str()
                .unwrap_or("unavailable")
                .to_owned(),
            message: value["failure"]["message"]
                .as_str()
                .or_else(|| value["error"].as_str())
                .map_or_else(|| format!("the service answered {status}"), str::to_owned),
        },
    }
}

/// Tells every host that `component` of `tenant_id` is now at `revision` (they compile it
/// ahead of its first call). Best effort: a host that misses it loads the component on its
/// next call, because callers pass the revision they read.
pub fn announce(tenant_id: i64, component: &str, revision: i64) {
    let payload = json!({"tenantId": tenant_id, "component": component, "revision": revision});
    let published = Live::open()
        .and_then(|live| live.publish(&live.key(ANNOUNCEMENTS), payload.to_string().as_bytes()));
    if let Err(err) = published {
        crate::spin::log_error("announce a tenant component", &err);
    }
}

/// Which way a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the customer.
    Inbound,
    /// To the customer.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The message a transform chain is run on.
pub struct Transformable<'a> {
    pub tenant_id: i64,
    /// `None`: the conversation's channel.
    pub channel_id: Option<&'a str>,
    /// Empty when the message may start a conversation (an inbound message before it is
    /// stored: the conversation it goes to is known only then).
    pub conversation_id: &'a str,
    pub direction: Direction,
    /// `Customer`, `Agent` or `Bot`.
    pub sender_kind: &'a str,
}

/// How long one transform may take, end to end, before the message is refused.
const TRANSFORM_TIMEOUT_MS: u64 = 10_000;

/// One runnable transform of a chain, and what it is told about the channel.
struct Link {
    component: String,
    /// A required transform that cannot run (disabled, or no active version): every message
    /// is refused until it can.
    blocked: bool,
    revision: i64,
    channel_id: String,
    channel_type: String,
    ccid: String,
}

/// The channel's enabled transforms for one direction, in order, read once and run on as many
/// texts as the caller has (a bot's turn may say several things).
pub struct Chain {
    links: Vec<Link>,
}

/// The chain `message` goes through. A disabled transform is left out (nexus disabled it after
/// failures in a row, or the tenant did), unless it is `required`: then it blocks the chain.
pub fn chain(db: &Db, message: &Transformable<'_>) -> ApiResult<Chain> {
    let rows = db.rows(
        "read the channel's transforms",
        "SELECT t.component, c.revision, c.enabled AND c.active_version IS NOT NULL AS runnable, \
                c.required, \
                t.channel_id::text AS channel_id, ch.type AS channel_type, tn.ccid \
         FROM channel_transforms t \
         JOIN tenant_components c ON c.tenant_id = t.tenant_id AND c.name = t.component \
         JOIN channels ch ON ch.id = t.channel_id JOIN tenants tn ON tn.id = t.tenant_id \
         WHERE t.channel_id = coalesce($1::uuid, \
             (SELECT i.channel_id FROM interactions i WHERE i.id = $4::uuid AND i.tenant_id = $2)) \
           AND t.tenant_id = $2 AND t.direction = $3 ORDER BY t.position",
        &[
            message.channel_id.map_or(ParameterValue::DbNull, uuid),
            ParameterValue::Int64(message.tenant_id),
            text(message.direction.as_str()),
            if message.conversation_id.is_empty() {
                ParameterValue::DbNull
            } else {
                uuid(message.conversation_id)
            },
        ],
    )?;
    let links = rows
        .rows()
        .filter_map(|row| {
            let runnable = row.get::<bool>("runnable").unwrap_or(false);
            let required = row.get::<bool>("required").unwrap_or(false);
            if !runnable && !required {
                return None;
            }
            Some(Link {
                component: row.get::<String>("component")?,
                blocked: !runnable,
                revision: row.get::<i64>("revision")?,
                channel_id: row.get::<String>("channel_id").unwrap_or_default(),
                channel_type: row.get::<String>("channel_type").unwrap_or_default(),
                ccid: row.get::<String>("ccid").unwrap_or_default(),
            })
        })
        .collect();
    Ok(Chain { links })
}

/// Runs `message_text` through the channel's enabled transforms for the direction, in order:
/// the text to store. A transform's rejection refuses the message (422, with its reason); a
/// transform that fails (traps, breaks a limit) refuses it with 503, so the sender may try
/// again: nothing is stored that a transform was meant to see and did not. A disabled transform
/// is skipped (nexus disabled it after failures in a row, or the tenant did), unless it is
/// required: then the message is refused with 503 until it is enabled.
pub fn apply(db: &Db, message: &Transformable<'_>, message_text: &str) -> ApiResult<String> {
    chain(db, message)?.apply(message, message_text)
}

impl Chain {
    /// Runs `message_text` through the chain (see [`apply`]).
    pub fn apply(&self, message: &Transformable<'_>, message_text: &str) -> ApiResult<String> {
        let mut current = message_text.to_owned();
        for link in &self.links {
            let component = &link.component;
            if link.blocked {
                return Err(ApiError::new(
                    503,
                    Code::Unavailable,
                    format!(
                        "the channel's required transform `{component}` is disabled: its messages are refused until it is enabled"
                    ),
                ));
            }
            let body = json!({
                "tenantId": message.tenant_id,
                "component": component,
                "revision": link.revision,
                "message": {
                    "conversationId": message.conversation_id,
                    "contactCenterId": link.ccid,
                    "channelId": link.channel_id,
                    "channelType": link.channel_type,
                    "direction": message.direction.as_str(),
                    "senderKind": message.sender_kind,
                    "text": current,
                },
            });
            let encoded = serde_json::to_vec(&body)
                .map_err(|err| ApiError::internal("encode the message", err))?;
            match call(
                "/v1/transforms/apply",
                "application/json",
                &encoded,
                TRANSFORM_TIMEOUT_MS,
            ) {
                Outcome::Answered(answer) => {
                    current = answer["text"]
                        .as_str()
                        .ok_or_else(|| {
                            ApiError::internal("run the transform", "its answer has no text")
                        })?
                        .to_owned();
                }
                Outcome::Refused(reason) => {
                    return Err(ApiError::new(
                        422,
                        Code::InvalidParameter,
                        format!(
                            "the message was refused by the channel's transform `{component}`: {reason}"
                        ),
                    ));
                }
                Outcome::Failed { reason, message } => {
                    return Err(ApiError::new(
                        503,
                        Code::Unavailable,
                        format!(
                            "the channel's transform `{component}` failed ({reason}: {message}); try again"
                        ),
                    ));
                }
            }
        }
        Ok(current)
    }
}
