//! The Workspace API (`/nexus/v3/workspace/...`), what an agent desktop calls, with
//! `Authorization: Bearer <agent token>`. The operations follow the original product's
//! Workspace API v3 (`/media/{media}/...`):
//!
//! - agent state: `POST media/chat/ready`, `not-ready` (`reason`), `logout`; `GET me`;
//! - `GET media/chat/interactions`: what the agent holds or is offered (`?scope=tenant`, for a
//!   supervisor: every open conversation of the tenant, to monitor, coach or barge in on);
//! - `GET targets`: whom a conversation can go to: the tenant's agents (with their state) and
//!   queues;
//! - on `media/chat/interactions/{id}/`: `accept`, `reject`, `send-message` (`message`,
//!   `visibility` All|Agent|Supervisor), `send-url`, `send-typing-started`,
//!   `send-typing-stopped`, `send-custom-notification`, `messages` (GET: the transcript),
//!   `transfer-agent` (`agentId`), `place-in-queue` (`queue`), `invite` (`agentId`: a
//!   conference), `consult` (`agentId`), `remove-from-conference` (`agentId`), `leave`
//!   (`afterAction` CloseIfNoAgents|ForceClose|KeepAlive), `complete`, `attach-user-data`,
//!   `update-user-data`, `delete-user-data` (`keys`), and for supervisors `switch-to-monitor`,
//!   `switch-to-coach`, `switch-to-barge-in`;
//! - `GET events?after=N&timeout=S`: the agent's events, by long-poll (under Spin, where there
//!   is no WebSocket; under nexus the socket at `/nexus/v3/workspace/socket` pushes the same
//!   events);
//! - `GET files/{mediaId}`: a file a customer sent (its bytes, not the JSON envelope);
//! - `POST sweep` (the admin token): due routing work; the nexus host calls it every second.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use std::time::Duration;

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::body::Fields;
use nexus_guest::conversation::{self, NewMessage};
use nexus_guest::live::LiveState;
use nexus_guest::parking;
use nexus_guest::routing::{self, AfterAction, Agent};
use nexus_guest::spin::{
    Db, Live, Reply, header, jsonb, path_segments, query, reference_id, respond, uuid,
};
use nexus_guest::tenant_components::{self, Direction, Transformable};
use serde_json::{Map, Value, json};
use spin_sdk::http::{Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::pg4::ParameterValue;

const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_TEXT_CHARS: usize = 16 * 1024;
const MAX_POLL_SECONDS: u64 = 30;
/// How often a waiting events read looks again, where it cannot park (under Spin).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const MAX_EVENTS: i64 = 200;

nexus_guest::export_parking!();

/// Serves `/nexus/v3/workspace/...`. An events read with nothing new parks under the nexus host
/// (see [`events`]) and then answers nothing here.
#[http_component]
async fn workspace(req: Request, out: ResponseOutparam) {
    parking::respond(out, answer(&req)).await;
}

fn answer(req: &Request) -> Response {
    let reference = reference_id(req);
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    if let (Method::Get, ["files", id]) = (req.method(), segments.as_slice()) {
        return file(req, id).unwrap_or_else(|err| respond(&reference, Err(err)));
    }
    respond(&reference, serve(req))
}

/// A file a customer sent (a messaging client's upload), for any agent of its tenant: the bytes,
/// with their type, name and SHA-256 as the client uploaded them.
fn file(req: &Request, id: &str) -> ApiResult<Response> {
    let db = Db::open()?;
    let agent = authenticate(req, &db)?;
    let missing = || ApiError::not_found(format!("no file has the id `{id}`"));
    if !nexus_guest::spin::is_uuid(id) {
        return Err(missing());
    }
    nexus_guest::media::download(
        &db,
        "SELECT filename, mimetype, sha256, content FROM media WHERE id = $1 AND tenant_id = $2",
        &[uuid(id), ParameterValue::Int64(agent.tenant_id)],
        missing,
    )
}

fn fields(req: &Request) -> ApiResult<Fields> {
    Fields::parse(
        header(req, "content-type").as_deref(),
        req.body(),
        MAX_BODY_BYTES,
    )
}

fn serve(req: &Request) -> ApiResult<Reply> {
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method();
    if let (Method::Post, ["sweep"]) = (method, segments.as_slice()) {
        return sweep(req);
    }
    let db = Db::open()?;
    let agent = authenticate(req, &db)?;
    let live = Live::open()?;
    let ctx = Ctx { db, live, agent };
    match (method, segments.as_slice()) {
        (Method::Get, ["me"]) => me(&ctx),
        (Method::Get, ["events"]) => events(req, ctx),
        (Method::Post, ["media", "chat", state @ ("ready" | "not-ready" | "logout")]) => {
            set_state(req, &ctx, state)
        }
        (Method::Get, ["targets"]) => targets(&ctx),
        (Method::Get, ["media", "chat", "interactions"]) => interactions(req, &ctx),
        (Method::Get, ["media", "chat", "interactions", id]) => Reply::ok(visible(&ctx, id)?),
        (Method::Get, ["media", "chat", "interactions", id, "messages"]) => {
            transcript(req, &ctx, id)
        }
        (Method::Post, ["media", "chat", "interactions", id, operation]) => {
            operate(req, &ctx, id, operation)
        }
        _ => Err(ApiError::new(
            404,
            Code::NotFound,
            format!("no such operation: {method} /{}", path.join("/")),
        )),
    }
}

struct Ctx {
    db: Db,
    live: Live,
    agent: Agent,
}

fn authenticate(req: &Request, db: &Db) -> ApiResult<Agent> {
    let token = header(req, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
        .ok_or_else(|| {
            ApiError::new(
                401,
                Code::AuthenticationRequired,
                "send Authorization: Bearer <agent token>",
            )
        })?;
    routing::agent_by_token_hash(db, &nexus_guest::agent_token::hash(&token))?.ok_or_else(|| {
        ApiError::new(
            401,
            Code::AuthenticationRequired,
            "unknown or disabled agent token",
        )
    })
}

fn sweep(req: &Request) -> ApiResult<Reply> {
    nexus_guest::spin::require_admin(req)?;
    let db = Db::open()?;
    let live = Live::open()?;
    Reply::ok(routing::sweep(&db, &live)?)
}

fn me(ctx: &Ctx) -> ApiResult<Reply> {
    let agent = ctx
        .db
        .json_row(
            "read the agent",
            "SELECT nexus_agent_json(a) FROM agents a WHERE id = $1",
            &[uuid(&ctx.agent.id)],
        )?
        .unwrap_or(Value::Null);
    Reply::ok(agent)
}

fn set_state(req: &Request, ctx: &Ctx, state: &str) -> ApiResult<Reply> {
    let fields = fields(req)?;
    let reason = fields.bounded_text("reason", 200)?;
    let state = match state {
        "ready" => "ready",
        "not-ready" => "not_ready",
        _ => "logged_out",
    };
    let agent = routing::set_agent_state(&ctx.db, &ctx.live, &ctx.agent, state, reason.as_deref())?;
    Reply::ok(agent)
}

/// The conversations the agent sees in a list: their own, or (a supervisor's `scope=tenant`)
/// every open one of the tenant, newest first, at most [`MAX_TENANT_INTERACTIONS`].
fn interactions(req: &Request, ctx: &Ctx) -> ApiResult<Reply> {
    match query(req)?.get("scope").map(String::as_str) {
        None | Some("mine") => my_interactions(ctx),
        Some("tenant") if ctx.agent.role == "supervisor" => {
            let interactions = ctx.db.json_rows(
                "list the tenant's open interactions",
                "SELECT nexus_work_json(i) FROM interactions i \
                 WHERE tenant_id = $1 AND state = 'active' AND media = 'chat' \
                 ORDER BY created_at DESC LIMIT $2",
                &[
                    ParameterValue::Int64(ctx.agent.tenant_id),
                    ParameterValue::Int64(MAX_TENANT_INTERACTIONS),
                ],
            )?;
            Reply::ok(json!({ "interactions": interactions }))
        }
        Some("tenant") => Err(ApiError::new(
            403,
            Code::AuthenticationRequired,
            "the tenant's conversations are listed for supervisors",
        )),
        Some(other) => Err(ApiError::bad_parameter(format!(
            "`scope` is mine or tenant, not `{other}`"
        ))),
    }
}

/// The most conversations a supervisor's list holds.
const MAX_TENANT_INTERACTIONS: i64 = 200;

/// Whom the agent can hand a conversation to (`transfer-agent`, `invite`, `consult`,
/// `place-in-queue`): the tenant's enabled agents, with their state, and its queues.
fn targets(ctx: &Ctx) -> ApiResult<Reply> {
    let tenant = ParameterValue::Int64(ctx.agent.tenant_id);
    let agents = ctx.db.json_rows(
        "list the tenant's agents",
        "SELECT jsonb_build_object('id', a.id, 'username', a.username, 'nickname', a.nickname, \
           'role', a.role, 'state', a.state) \
         FROM agents a WHERE a.tenant_id = $1 AND a.enabled ORDER BY a.nickname, a.username",
        std::slice::from_ref(&tenant),
    )?;
    let queues = ctx.db.json_rows(
        "list the tenant's queues",
        "SELECT jsonb_build_object('name', q.name) FROM queues q WHERE q.tenant_id = $1 ORDER BY q.name",
        &[tenant],
    )?;
    Reply::ok(json!({ "agents": agents, "queues": queues }))
}

fn my_interactions(ctx: &Ctx) -> ApiResult<Reply> {
    let interactions = ctx.db.json_rows(
        "list the agent's interactions",
        "SELECT nexus_work_json(i) FROM interactions i WHERE tenant_id = $2 AND ( \
           (routing_state = 'invited' AND invited_agent_id = $1) OR \
           (routing_state IN ('assigned', 'idle') AND last_agent_id = $1) OR \
           EXISTS (SELECT 1 FROM participants p WHERE p.interaction_id = i.id AND p.agent_id = $1 AND p.left_at IS NULL)) \
         ORDER BY created_at",
        &[uuid(&ctx.agent.id), ParameterValue::Int64(ctx.agent.tenant_id)],
    )?;
    Reply::ok(json!({ "interactions": interactions }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        Code::NotFound,
        format!("no interaction `{id}` of yours"),
    )
}

/// An interaction of the agent's tenant that the agent holds, is offered, or (a supervisor)
/// may see.
fn visible(ctx: &Ctx, id: &str) -> ApiResult<Value> {
    if !nexus_guest::spin::is_uuid(id) {
        return Err(not_found(id));
    }
    let interaction =
        routing::work_json(&ctx.db, ctx.agent.tenant_id, id)?.ok_or_else(|| not_found(id))?;
    let mine = interaction["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["agentId"] == ctx.agent.id.as_str());
    let offered = interaction["routingState"] == "invited";
    if mine || offered || ctx.agent.role == "supervisor" || last_agent_of(ctx, id)? {
        Ok(interaction)
    } else {
        Err(not_found(id))
    }
}

fn last_agent_of(ctx: &Ctx, id: &str) -> ApiResult<bool> {
    Ok(ctx
        .db
        .rows(
            "check the last agent",
            "SELECT 1 AS one FROM interactions WHERE id = $1 AND tenant_id = $2 AND (last_agent_id = $3 OR invited_agent_id = $3)",
            &[uuid(id), ParameterValue::Int64(ctx.agent.tenant_id), uuid(&ctx.agent.id)],
        )?
        .rows()
        .next()
        .is_some())
}

fn transcript(req: &Request, ctx: &Ctx, id: &str) -> ApiResult<Reply> {
    visible(ctx, id)?;
    let after = query(req)?
        .get("after")
        .and_then(|a| a.parse::<i64>().ok())
        .unwrap_or(0);
    let role = routing::role_in(&ctx.db, &ctx.agent, id)?
        .map(|(_, role)| role)
        .unwrap_or_else(|| {
            if ctx.agent.role == "supervisor" {
                "monitor".into()
            } else {
                "primary".into()
            }
        });
    let messages: Vec<Value> =
        conversation::messages_after(&ctx.db, ctx.agent.tenant_id, id, after, 1000)?
            .into_iter()
            .filter(|m| conversation::agent_sees(&role, m["visibility"].as_str().unwrap_or("All")))
            .collect();
    Reply::ok(json!({ "messages": messages }))
}

/// The agent's participant in an interaction, or 409.
fn participant(ctx: &Ctx, id: &str) -> ApiResult<(String, String)> {
    routing::role_in(&ctx.db, &ctx.agent, id)?.ok_or_else(|| {
        ApiError::new(
            409,
            Code::Conflict,
            "you are not in this interaction; accept it first",
        )
    })
}

fn operate(req: &Request, ctx: &Ctx, id: &str, operation: &str) -> ApiResult<Reply> {
    visible(ctx, id)?;
    let fields = fields(req)?;
    let (db, live, agent) = (&ctx.db, &ctx.live, &ctx.agent);
    match operation {
        "accept" => {
            let nickname = fields.bounded_text("nickname", 100)?;
            Reply::ok(routing::accept(db, live, agent, id, nickname.as_deref())?)
        }
        "reject" => {
            routing::reject(db, live, agent, id)?;
            Reply::ok(json!({ "rejected": id }))
        }
        "send-message" | "send-url" | "send-custom-notification" => {
            send(ctx, id, operation, &fields)
        }
        "send-typing-started" | "send-typing-stopped" => {
            let (participant, _) = participant(ctx, id)?;
            let typing = operation == "send-typing-started";
            LiveState::new(live, id).set_typing(&participant, &agent.nickname, "Agent", typing)?;
            Reply::ok(json!({ "typing": typing }))
        }
        "leave" => {
            let after =
                AfterAction::parse(fields.text("afterAction").as_deref()).ok_or_else(|| {
                    ApiError::bad_parameter(
                        "`afterAction` is CloseIfNoAgents, ForceClose or KeepAlive",
                    )
                })?;
            let ended = routing::leave(db, live, agent, id, after)?;
            Reply::ok(json!({ "left": id, "chatEnded": ended }))
        }
        "complete" => {
            routing::complete(db, live, agent, id)?;
            Reply::ok(json!({ "completed": id }))
        }
        "transfer-agent" => {
            let target = target_agent(ctx, &fields)?;
            routing::transfer_to_agent(db, live, agent, id, &target)?;
            Reply::ok(json!({ "transferredTo": target.id }))
        }
        "place-in-queue" => {
            let name = fields.required_text("queue")?;
            let queue = routing::load_queue(db, agent.tenant_id, &name)?
                .ok_or_else(|| ApiError::bad_parameter(format!("no queue is named `{name}`")))?;
            routing::transfer_to_queue(db, live, agent, id, &queue)?;
            Reply::ok(json!({ "queue": name }))
        }
        "invite" | "consult" => {
            participant(ctx, id)?;
            let target = target_agent(ctx, &fields)?;
            let role = if operation == "invite" {
                "conference"
            } else {
                "consult"
            };
            Reply::ok(routing::add_participant(db, live, &target, id, role)?)
        }
        "remove-from-conference" => {
            participant(ctx, id)?;
            let target = target_agent(ctx, &fields)?;
            routing::leave(db, live, &target, id, AfterAction::KeepAlive)?;
            Reply::ok(json!({ "removed": target.id }))
        }
        "switch-to-monitor" | "switch-to-coach" | "switch-to-barge-in" => {
            if agent.role != "supervisor" {
                return Err(ApiError::new(
                    403,
                    Code::AuthenticationRequired,
                    "supervision is for supervisors",
                ));
            }
            let role = match operation {
                "switch-to-monitor" => "monitor",
                "switch-to-coach" => "coach",
                _ => "barge",
            };
            Reply::ok(routing::add_participant(db, live, agent, id, role)?)
        }
        "attach-user-data" | "update-user-data" | "delete-user-data" => {
            user_data(ctx, id, operation, &fields)
        }
        other => Err(ApiError::new(
            404,
            Code::NotFound,
            format!("no such operation: {other}"),
        )),
    }
}

fn target_agent(ctx: &Ctx, fields: &Fields) -> ApiResult<Agent> {
    let id = fields.required_text("agentId")?;
    routing::agent_by_id(&ctx.db, ctx.agent.tenant_id, &id)?
        .ok_or_else(|| ApiError::bad_parameter(format!("no agent has the id `{id}`")))
}

fn send(ctx: &Ctx, id: &str, operation: &str, fields: &Fields) -> ApiResult<Reply> {
    let (participant, role) = participant(ctx, id)?;
    if role == "monitor" {
        return Err(ApiError::new(
            409,
            Code::Conflict,
            "a monitoring supervisor says nothing; switch to coach or barge in",
        ));
    }
    let visibility = fields.text("visibility").unwrap_or_else(|| {
        if role == "coach" || role == "consult" {
            "Agent".into()
        } else {
            "All".into()
        }
    });
    if !matches!(visibility.as_str(), "All" | "Agent" | "Supervisor") {
        return Err(ApiError::bad_parameter(
            "`visibility` is All, Agent or Supervisor",
        ));
    }
    if (role == "coach" || role == "consult") && visibility == "All" {
        return Err(ApiError::new(
            409,
            Code::Conflict,
            "a coach or a consulted agent speaks to agents only",
        ));
    }
    let (kind, text, data) = match operation {
        "send-url" => {
            let url = fields.required_text("url")?;
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048 {
                return Err(ApiError::bad_parameter("`url` is an http(s) URL"));
            }
            ("PushUrl", Some(url), None)
        }
        "send-custom-notification" => (
            "CustomNotice",
            fields.bounded_text("message", MAX_TEXT_CHARS)?,
            // A message's `data` is an object wherever it is read (the transcript, the
            // events, the history): anything else is refused here, not stored.
            fields.object("userData")?.map(Value::Object),
        ),
        _ => (
            "Text",
            Some(
                fields
                    .bounded_text("message", MAX_TEXT_CHARS)?
                    .ok_or_else(|| ApiError::bad_parameter("`message` is required"))?,
            ),
            None,
        ),
    };
    let kind_of_sender = if ctx.agent.role == "supervisor" {
        "Supervisor"
    } else {
        "Agent"
    };
    // What the customer will read goes through the channel's outbound transforms first.
    let text = match text {
        Some(text) if kind == "Text" && visibility == "All" => Some(tenant_components::apply(
            &ctx.db,
            &Transformable {
                tenant_id: ctx.agent.tenant_id,
                channel_id: None,
                conversation_id: id,
                direction: Direction::Outbound,
                sender_kind: kind_of_sender,
            },
            &text,
        )?),
        other => other,
    };
    let appended = conversation::append_message(
        &ctx.db,
        ctx.agent.tenant_id,
        id,
        &NewMessage {
            kind,
            participant_id: Some(&participant),
            sender_kind: kind_of_sender,
            nickname: &ctx.agent.nickname,
            text: text.as_deref(),
            data: data.as_ref(),
            visibility: &visibility,
            client_message_id: fields.bounded_text("messageId", 128)?.as_deref(),
        },
    )?;
    let Some((message, duplicate)) = appended else {
        return Err(ApiError::new(
            409,
            Code::InvalidSession,
            "the chat has ended",
        ));
    };
    if duplicate {
        conversation::announce_again(&ctx.live, id, &message);
    } else {
        conversation::publish(&ctx.live, id, std::slice::from_ref(&message), "active");
        let _ = LiveState::new(&ctx.live, id).set_typing(
            &participant,
            &ctx.agent.nickname,
            "Agent",
            false,
        );
    }
    Reply::ok(json!({ "message": message, "duplicate": duplicate }))
}

fn user_data(ctx: &Ctx, id: &str, operation: &str, fields: &Fields) -> ApiResult<Reply> {
    let update: Map<String, Value> = match operation {
        "delete-user-data" => {
            let keys = fields
                .others(&[])
                .get("keys")
                .cloned()
                .unwrap_or(Value::Null);
            let keys: Vec<String> = keys
                .as_array()
                .map(|k| {
                    k.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .ok_or_else(|| ApiError::bad_parameter("`keys` is a list of user-data keys"))?;
            keys.into_iter().map(|k| (k, Value::Null)).collect()
        }
        _ => fields
            .object("userData")?
            .ok_or_else(|| ApiError::bad_parameter("`userData` is an object"))?,
    };
    let (participant, _) = participant(ctx, id)?;
    let update = Value::Object(update);
    let row = ctx.db.transaction(|db| {
        // Merged, and keys set to null removed.
        let user_data = db.json_row(
            "update the user data",
            "UPDATE interactions SET user_data = jsonb_strip_nulls(user_data || $3), updated_at = now() \
             WHERE id = $1 AND tenant_id = $2 RETURNING user_data",
            &[uuid(id), ParameterValue::Int64(ctx.agent.tenant_id), jsonb(&update)],
        )?
        .ok_or_else(|| not_found(id))?;
        let message = conversation::append_message(
            db,
            ctx.agent.tenant_id,
            id,
            &NewMessage {
                kind: "UserDataUpdated",
                participant_id: Some(&participant),
                sender_kind: "Agent",
                nickname: &ctx.agent.nickname,
                text: None,
                data: Some(&update),
                visibility: "Agent",
                client_message_id: None,
            },
        )?;
        Ok((user_data, message))
    })?;
    if let (_, Some((message, _))) = &row {
        conversation::publish(&ctx.live, id, std::slice::from_ref(message), "active");
    }
    Reply::ok(json!({ "userData": row.0 }))
}

/// What a parked events read remembers between its calls.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsMemo {
    started_ms: u64,
    deadline_ms: u64,
}

/// The agent's events after `after`, waiting up to `timeout` seconds for one.
fn events(req: &Request, ctx: Ctx) -> ApiResult<Reply> {
    let params = query(req)?;
    let after = params
        .get("after")
        .and_then(|a| a.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    let timeout = params
        .get("timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0)
        .min(MAX_POLL_SECONDS);
    let Ctx { db, live, agent } = ctx;
    // A long-poll must not hold a pooled database connection while it waits.
    drop(db);
    // Under the nexus host the read parks while there is nothing, and is called again; when it
    // began and its deadline are its memo. Under Spin it looks again every POLL_INTERVAL.
    let parked_call = parking::call();
    let memo: Option<EventsMemo> = parked_call
        .as_ref()
        .and_then(|call| call.memo.as_deref())
        .and_then(|memo| serde_json::from_str(memo).ok());
    let now = parking::now_ms();
    let (started_ms, deadline_ms) = memo.map_or(
        (now, now.saturating_add(timeout.saturating_mul(1000))),
        |memo| (memo.started_ms, memo.deadline_ms),
    );
    loop {
        let now = parking::now_ms();
        // A number still missing after a second is given up on (its writer died).
        let skip = now.saturating_sub(started_ms) >= nexus_guest::events::HOLE_WAIT_MS;
        let read = nexus_guest::events::after(&live, &agent.id, after, MAX_EVENTS, skip)?;
        if !read.events.is_empty() || read.lost || now >= deadline_ms {
            return Reply::ok(
                json!({ "events": read.events, "next": read.next, "lost": read.lost }),
            );
        }
        if parked_call.is_some() {
            // A missing number's writer publishes when it writes it; if it died, nothing will:
            // the read looks again once the wait for it is over.
            let wake_at = if skip {
                deadline_ms
            } else {
                deadline_ms.min(started_ms.saturating_add(nexus_guest::events::HOLE_WAIT_MS))
            };
            let memo = json!({ "startedMs": started_ms, "deadlineMs": deadline_ms });
            parking::park(
                vec![nexus_guest::events::agent_topic(&agent.id)],
                wake_at,
                memo.to_string(),
            );
            // Nothing is sent for a parked request.
            return Reply::ok(Value::Null);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
