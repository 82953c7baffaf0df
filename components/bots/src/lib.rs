//! Third-party bots (`/nexus/v3/bots/...`): the turns of the conversations a bot holds.
//!
//! A channel's routing rule names a bot; a new conversation on it goes to the bot first
//! (`nexus_guest::bot_leg::engage`), and each message the customer writes then queues a turn,
//! a durable job of this component, ordered per conversation. A turn POSTs what the bot has not
//! seen to the bot's URL, with the bot's credentials (headers, sealed at rest, opened here with
//! the `credentials_key` variable, which only this component and provisioning hold), and waits
//! at most the bot's response timeout. The bot's answer is its actions
//! (`nexus_guest::bot_contract`); a bot that fails, times out or answers outside the contract
//! hands the conversation to routing at once, with the reason, so no customer waits on a
//! silent bot.
//!
//! - `POST jobs/run` (the admin token), body `{id, kind, attempt, payload: {interactionId}}`:
//!   takes the turn; 200 when it is done (or there was nothing to do), 503 when the database or
//!   Redis failed, which the host retries (the turn is applied in one transaction, so a retry
//!   sends the same turn again, with the same `turnId`).
//! - `POST jobs/sweep` (the admin token): the same for up to 20 due jobs, for Spin.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::bot_contract;
use nexus_guest::bot_leg::{self, Bot, BotComponent, TurnInput};
use nexus_guest::outbound;

use nexus_guest::spin::{Db, Live, Reply, path_segments, reference_id, require_admin, respond};
use nexus_guest::tenant_components::{self, Outcome};
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_component;

/// The most of a bot's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[http_component]
async fn bots(req: Request) -> impl IntoResponse {
    let reference = reference_id(&req);
    let result = serve(&req).await;
    respond(&reference, result)
}

async fn serve(req: &Request) -> ApiResult<Reply> {
    require_admin(req)?;
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["jobs", "run"]) => {
            let job: Value = serde_json::from_slice(req.body())
                .map_err(|_| ApiError::bad_parameter("the job is not JSON"))?;
            take_turn(&job)
        }
        (Method::Post, ["jobs", "sweep"]) => Reply::ok(
            nexus_guest::sweep::sweep("bots", |job| async move { take_turn(&job) }).await?,
        ),
        _ => Err(ApiError::not_found("no such operation")),
    }
}

fn take_turn(job: &Value) -> ApiResult<Reply> {
    let interaction = job["payload"]["interactionId"]
        .as_str()
        .filter(|id| nexus_guest::spin::is_uuid(id))
        .ok_or_else(|| {
            ApiError::new(422, Code::InvalidParameter, "the job has no interactionId")
        })?;
    let turn_id = job["id"].as_str().unwrap_or_default();
    // The connection goes back to the pool while the bot thinks, which may take seconds.
    let input = bot_leg::next_turn(&Db::open()?, interaction)?;
    let Some(input) = input else {
        return Reply::ok(
            json!({ "turn": "none: no bot holds the conversation, or it has seen everything" }),
        );
    };
    let answered = ask_the_bot(&input, turn_id);
    let db = Db::open()?;
    let live = Live::open()?;
    // What the bot says goes through the channel's outbound transforms first. One that
    // refuses it sends the customer to routing (asking again would be refused again); one that
    // fails leaves the turn to be tried again.
    let answered = match answered.map(|actions| bot_leg::transform_replies(&db, &input, actions)) {
        Ok(Err(refused)) if refused.http_status == 422 => Err(refused.message),
        Ok(Err(failed)) => return Err(failed),
        Ok(Ok(actions)) => Ok(actions),
        Err(why) => Err(why),
    };
    match answered {
        Ok(actions) => {
            let left = bot_leg::apply(&db, &live, &input, &actions)?;
            Reply::ok(json!({ "turn": "taken", "actions": actions.len(), "botLeft": left }))
        }
        Err(why) => {
            // Logged for the operator; the agent who gets the conversation reads it too.
            nexus_guest::spin::log_error(
                "bot turn",
                &ApiError::new(502, Code::Unavailable, format!("{}: {why}", input.bot.name)),
            );
            bot_leg::fail_over(&db, &live, &input, &why)?;
            Reply::ok(json!({ "turn": "handed off", "reason": why }))
        }
    }
}

/// The bot's actions for this turn, or why there are none to take.
fn ask_the_bot(input: &TurnInput, turn_id: &str) -> Result<Vec<bot_contract::Action>, String> {
    if !input.bot.enabled {
        return Err("the bot is disabled".into());
    }
    if let Some(component) = &input.bot.component {
        return ask_the_component(input, component, turn_id);
    }
    let mut headers = credentials(&input.bot)?;
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("user-agent".into(), "nexus-bots".into()));
    let body = serde_json::to_vec(&bot_leg::turn_request(input, turn_id))
        .map_err(|err| format!("the turn could not be encoded: {err}"))?;
    let timeout_ms = u64::try_from(input.bot.response_timeout_seconds).unwrap_or(10) * 1000;
    let answer = outbound::post(
        &input.bot.url,
        &headers,
        &body,
        timeout_ms,
        MAX_ANSWER_BYTES,
    )
    .map_err(|failure| failure.to_string())?;
    if !(200..300).contains(&answer.status) {
        return Err(format!("it answered {}", answer.status));
    }
    bot_contract::parse_answer(&answer.body)
}

/// A tenant bot component's actions: the host runs it in its sandbox, and answers in the
/// contract's JSON, so the same checks apply to its answer as to a third party's.
fn ask_the_component(
    input: &TurnInput,
    component: &BotComponent,
    turn_id: &str,
) -> Result<Vec<bot_contract::Action>, String> {
    if !component.runnable {
        return Err(match &component.disabled_reason {
            Some(reason) => format!("its component `{}` is {reason}", component.name),
            None => format!(
                "its component `{}` is disabled or has no active version",
                component.name
            ),
        });
    }
    let call = json!({
        "tenantId": input.tenant_id,
        "component": component.name,
        "revision": component.revision,
        "turn": bot_leg::turn_request(input, turn_id),
    });
    let body =
        serde_json::to_vec(&call).map_err(|err| format!("the turn could not be encoded: {err}"))?;
    // The host enforces the component's own timeout; this one only covers the way there.
    let timeout_ms = u64::try_from(component.timeout_ms).unwrap_or(5000) + 5000;
    match tenant_components::call("/v1/bots/turn", "application/json", &body, timeout_ms) {
        Outcome::Answered(answer) => bot_contract::parse_actions(&answer),
        Outcome::Refused(reason) => Err(format!("it declined the turn: {reason}")),
        Outcome::Failed { reason, message } => Err(format!(
            "its component `{}` failed ({reason}): {message}",
            component.name
        )),
    }
}

/// The bot's credentials: the headers it is sent, opened from their sealed form.
fn credentials(bot: &Bot) -> Result<Vec<(String, String)>, String> {
    let Some(sealed_headers) = &bot.credentials else {
        return Ok(Vec::new());
    };
    let keys = nexus_guest::at_rest::keyring()
        .map_err(|err| format!("its credentials cannot be opened: {}", err.message))?;
    let opened = keys
        .open(&format!("bot:{}", bot.id), sealed_headers)
        .map_err(|err| format!("its credentials cannot be opened: {err}"))?;
    let headers: serde_json::Map<String, Value> = serde_json::from_slice(&opened)
        .map_err(|_| "its credentials are not a map of headers".to_owned())?;
    Ok(headers
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_str()?.to_owned())))
        .collect())
}
