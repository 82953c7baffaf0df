//! The tenant-components service, served in process at `http://tenant-components.nexus.internal`
//! to the components granted it (see [`crate::tenant`]). JSON in and out, in the shapes nexus's
//! components already speak: a bot's turn is the third-party bot contract's turn, and its answer
//! the contract's actions, so one code path in the `bots` component applies both.
//!
//! - `POST /v1/validate?kind=bot|transform`, the component as the body: 200
//!   `{"sha256", "size", "imports"}`, or 422 `{"error"}` saying why it is refused.
//! - `POST /v1/bots/turn`, `{"tenantId", "component", "revision", "turn"}`: 200 `{"actions"}`,
//!   422 `{"declined"}` (the bot's own reason for taking no turn), or a failure.
//! - `POST /v1/transforms/apply`, `{"tenantId", "component", "revision", "message"}`: 200
//!   `{"text"}`, 422 `{"rejected"}`, or a failure.
//!
//! A failure is 503 `{"failure": {"reason", "message"}}` (reasons: [`super::FailureReason`]); a
//! malformed request is 400.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Map, Value, json};
use wasmtime_wasi_http::WasiBody;

use super::{CallFailure, Kind, MAX_COMPONENT_BYTES, Target, TenantComponents};
use crate::bindings::tenant::bot::nexus::tenant::types::{
    Action, Conversation, CustomerMessage, Direction, Message, Turn, TurnEvent, UserDataEntry,
};

/// The largest JSON request (a turn carries at most 50 messages of 4096 characters).
const MAX_JSON_BYTES: usize = 1 << 20;

/// Answers one request to the service.
pub async fn serve(
    components: &TenantComponents,
    request: http::Request<WasiBody>,
) -> http::Response<WasiBody> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    if parts.method != http::Method::POST {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "POST only"}),
        );
    }
    let limit = if path == "/v1/validate" {
        MAX_COMPONENT_BYTES + 1
    } else {
        MAX_JSON_BYTES
    };
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": format!("the body may be at most {} bytes", limit - 1)}),
            );
        }
    };
    match path.as_str() {
        "/v1/validate" => validate(components, &query, body).await,
        "/v1/bots/turn" => match parse_call(&body, "turn")
            .and_then(|(target, turn)| Ok((target, turn_from_json(&turn).map_err(bad_request)?)))
        {
            Ok((target, turn)) => match components.bot_turn(&target, &turn).await {
                Ok(Ok(actions)) => answer(
                    StatusCode::OK,
                    &json!({"actions": actions.iter().map(action_json).collect::<Vec<_>>()}),
                ),
                Ok(Err(reason)) => answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"declined": reason}),
                ),
                Err(failure) => failed(&failure),
            },
            Err(response) => *response,
        },
        "/v1/transforms/apply" => {
            match parse_call(&body, "message").and_then(|(target, message)| {
                Ok((target, message_from_json(&message).map_err(bad_request)?))
            }) {
                Ok((target, message)) => match components.transform(&target, &message).await {
                    Ok(Ok(text)) => answer(StatusCode::OK, &json!({"text": text})),
                    Ok(Err(reason)) => answer(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &json!({"rejected": reason}),
                    ),
                    Err(failure) => failed(&failure),
                },
                Err(response) => *response,
            }
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            &json!({"error": "no such operation"}),
        ),
    }
}

async fn validate(
    components: &TenantComponents,
    query: &str,
    body: Bytes,
) -> http::Response<WasiBody> {
    let kind = url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "kind")
        .and_then(|(_, value)| Kind::parse(&value));
    let Some(kind) = kind else {
        return answer(
            StatusCode::BAD_REQUEST,
            &json!({"error": "`kind` is bot or transform"}),
        );
    };
    match components.validate(kind, body.to_vec()).await {
        Ok(validated) => answer(
            StatusCode::OK,
            &json!({
                "sha256": validated.sha256,
                "size": validated.size,
                "imports": validated.imports,
            }),
        ),
        Err(why) => answer(StatusCode::UNPROCESSABLE_ENTITY, &json!({"error": why})),
    }
}

type Refused = Box<http::Response<WasiBody>>;

fn bad_request(why: String) -> Refused {
    Box::new(answer(StatusCode::BAD_REQUEST, &json!({"error": why})))
}

/// The target of a call and its payload under `field`.
fn parse_call(body: &[u8], field: &str) -> Result<(Target, Value), Refused> {
    let mut call: Value = serde_json::from_slice(body)
        .map_err(|err| bad_request(format!("the body is not JSON: {err}")))?;
    let target = Target {
        tenant_id: call["tenantId"]
            .as_i64()
            .ok_or_else(|| bad_request("`tenantId` is a number".into()))?,
        name: call["component"]
            .as_str()
            .ok_or_else(|| bad_request("`component` is a name".into()))?
            .to_owned(),
        revision: call["revision"].as_i64().unwrap_or(0),
    };
    Ok((target, call[field].take()))
}

fn failed(failure: &CallFailure) -> http::Response<WasiBody> {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"failure": {"reason": failure.reason.as_str(), "message": failure.message}}),
    )
}

fn answer(status: StatusCode, body: &Value) -> http::Response<WasiBody> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(value: &Value, name: &str) -> Result<String, String> {
    value[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("`{name}` is a text"))
}

/// A user-data value as the WIT gives it: a string as itself, anything else as JSON.
fn user_data_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A turn, from the bot contract's JSON (`nexus_guest::bot_leg::turn_request`).
pub fn turn_from_json(turn: &Value) -> Result<Turn, String> {
    let conversation = &turn["conversation"];
    let user_data = conversation["userData"]
        .as_object()
        .map(|data| {
            data.iter()
                .map(|(key, value)| UserDataEntry {
                    key: key.clone(),
                    value: user_data_value(value),
                })
                .collect()
        })
        .unwrap_or_default();
    let messages = turn["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|message| CustomerMessage {
            position: message["position"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or_default(),
            text: message["text"].as_str().unwrap_or_default().to_owned(),
            timestamp: message["timestamp"].as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    Ok(Turn {
        id: text(turn, "turnId")?,
        event: match turn["event"].as_str() {
            Some("started") => TurnEvent::Started,
            Some("message") => TurnEvent::Message,
            _ => return Err("`event` is started or message".into()),
        },
        conversation: Conversation {
            id: text(conversation, "id")?,
            contact_center_id: text(conversation, "contactCenterId")?,
            channel_id: text(conversation, "channelId")?,
            channel_type: text(conversation, "channelType")?,
            started_at: text(conversation, "startedAt")?,
            customer_nickname: conversation["customer"]["nickname"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            user_data,
        },
        messages,
    })
}

/// An action, as the bot contract's JSON (`nexus_guest::bot_contract`).
pub fn action_json(action: &Action) -> Value {
    match action {
        Action::Reply(text) => json!({"type": "reply", "text": text}),
        Action::Ask(question) => {
            json!({"type": "ask", "text": question.text, "options": question.options})
        }
        Action::SetUserData(changes) => {
            let data: Map<String, Value> = changes
                .iter()
                .map(|change| {
                    (
                        change.key.clone(),
                        change.value.clone().map_or(Value::Null, Value::String),
                    )
                })
                .collect();
            json!({"type": "setUserData", "data": data})
        }
        Action::Handoff(handoff) => {
            json!({"type": "handoff", "queue": handoff.queue, "reason": handoff.reason})
        }
        Action::End(reason) => json!({"type": "end", "reason": reason}),
    }
}

/// A message for a transform, from `{"conversationId", "contactCenterId", "channelId",
/// "channelType", "direction", "senderKind", "text"}`.
pub fn message_from_json(message: &Value) -> Result<Message, String> {
    Ok(Message {
        conversation_id: text(message, "conversationId")?,
        contact_center_id: text(message, "contactCenterId")?,
        channel_id: text(message, "channelId")?,
        channel_type: text(message, "channelType")?,
        direction: match message["direction"].as_str() {
            Some("inbound") => Direction::Inbound,
            Some("outbound") => Direction::Outbound,
            _ => return Err("`direction` is inbound or outbound".into()),
        },
        sender_kind: text(message, "senderKind")?,
        text: text(message, "text")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::tenant::bot::nexus::tenant::types::{Handoff, Question, UserDataChange};

    #[test]
    fn a_turn_comes_from_the_contract_json() {
        let turn = turn_from_json(&json!({
            "turnId": "t1", "bot": "faq", "event": "started",
            "conversation": {"id": "c", "contactCenterId": "cc", "channelId": "ch",
              "channelType": "chat", "startedAt": "2026-01-01T00:00:00.000Z",
              "userData": {"lang": "en", "tries": 2}, "customer": {"nickname": "Ann"}},
            "messages": [{"position": 2, "text": "hi", "timestamp": "2026-01-01T00:00:01.000Z"}]
        }))
        .unwrap();
        assert_eq!(turn.id, "t1");
        assert!(matches!(turn.event, TurnEvent::Started));
        assert_eq!(turn.conversation.customer_nickname, "Ann");
        let data: Vec<(String, String)> = turn
            .conversation
            .user_data
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        assert_eq!(
            data,
            vec![("lang".into(), "en".into()), ("tries".into(), "2".into())]
        );
        assert_eq!(turn.messages[0].position, 2);
        assert_eq!(turn.messages[0].text, "hi");
        assert!(turn_from_json(&json!({"turnId": "t", "event": "other"})).is_err());
    }

    #[test]
    fn actions_become_the_contract_json() {
        let actions = [
            Action::Reply("hello".into()),
            Action::Ask(Question {
                text: "which?".into(),
                options: vec!["a".into()],
            }),
            Action::SetUserData(vec![
                UserDataChange {
                    key: "k".into(),
                    value: Some("v".into()),
                },
                UserDataChange {
                    key: "gone".into(),
                    value: None,
                },
            ]),
            Action::Handoff(Handoff {
                queue: Some("billing".into()),
                reason: None,
            }),
            Action::End(Some("done".into())),
        ];
        let encoded: Vec<Value> = actions.iter().map(action_json).collect();
        assert_eq!(
            Value::Array(encoded),
            json!([
                {"type": "reply", "text": "hello"},
                {"type": "ask", "text": "which?", "options": ["a"]},
                {"type": "setUserData", "data": {"k": "v", "gone": null}},
                {"type": "handoff", "queue": "billing", "reason": null},
                {"type": "end", "reason": "done"},
            ])
        );
    }
}
