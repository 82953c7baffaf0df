//! The Chat API v3 (`/nexus/v3/chat/...`), as the original product's web chat widgets use it:
//!
//! - `POST /nexus/v3/chat/sessions` with `x-api-key` (form-encoded `data[...]` or JSON) starts a
//!   session and answers its `selfUri` and `clientToken`;
//! - on `{selfUri}`, with `x-nexus-client-key: <clientToken>`:
//!   - `GET {selfUri}` reads the session;
//!   - `POST {selfUri}/messages` sends a `Text`, a `CustomNotice`, or `TypingStarted` /
//!     `TypingStopped`;
//!   - `GET {selfUri}/messages?after=N&timeout=S` reads the transcript after position N, waiting
//!     up to S seconds for something new (a long-poll);
//!   - `POST {selfUri}/user-data` updates the interaction's user data;
//!   - `POST {selfUri}/files` sends a file (multipart `file`), and `GET {selfUri}/files/{mediaId}`
//!     downloads one of the transcript's;
//!   - `POST {selfUri}/end` (or `DELETE {selfUri}`) ends it.
//!
//! Every accepted message is committed to PostgreSQL before the answer; Redis holds the live
//! state (see [`nexus_guest::live`]) and is rebuilt from PostgreSQL whenever it is missing. A session is
//! asynchronous: it outlives the customer's connection, and any number of tabs holding the token
//! read the same transcript.
//!
//! The OpenAPI description is `openapi/chat-v3.json`.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

mod store;

use std::time::Duration;

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::body::Fields;
use nexus_guest::spin::{Db, Live, Reply, header, path_segments, query, reference_id, respond};
use serde_json::{Map, Value, json};
use spin_sdk::http::{Method, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::pg4::ParameterValue;

use nexus_guest::chat_auth::{self as auth, INACTIVITY_SECONDS, Tenant};
use nexus_guest::conversation;
use nexus_guest::live::{LiveSession, LiveState, TailRead};
use nexus_guest::media::{self, Upload};
use nexus_guest::parking;
use nexus_guest::routing;
use nexus_guest::tenant_components::{self, Direction, Transformable};

/// The largest request body (a message is at most [`MAX_TEXT_CHARS`] characters).
const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_TEXT_CHARS: usize = 16 * 1024;
const MAX_NICKNAME_CHARS: usize = 100;
const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 128;
/// The longest a transcript read may wait for something new.
const MAX_POLL_SECONDS: u64 = 30;
/// How often a waiting read looks again, where it cannot park (under Spin).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often a parked read that waits in a queue looks at its place again: the place changes
/// with no message published to the session.
const QUEUED_RECHECK_MS: u64 = 2000;
/// The most messages one read returns.
const MAX_READ: i64 = 100;

nexus_guest::export_parking!();

/// Serves `/nexus/v3/chat/...`. A transcript read with nothing new parks under the nexus host
/// (see [`read_messages`]) and then answers nothing here.
#[http_component]
async fn chat(req: Request, out: ResponseOutparam) {
    // Widgets call this API from the pages of any site (CORS).
    if *req.method() == Method::Options {
        parking::respond(out, nexus_guest::spin::preflight("GET, POST, DELETE")).await;
        return;
    }
    let reference = reference_id(&req);
    let path = path_segments(&req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    // Files: a multipart body read before the session's work, and bytes (not the JSON envelope)
    // back.
    let mut response = match (req.method(), segments.as_slice()) {
        (Method::Post, ["sessions", id, "files"]) => respond(&reference, upload(&req, id).await),
        (Method::Get, ["sessions", id, "files", media_id]) => {
            download(&req, id, media_id).unwrap_or_else(|err| respond(&reference, Err(err)))
        }
        _ => respond(&reference, serve(&req)),
    };
    nexus_guest::spin::allow_any_origin(&mut response);
    parking::respond(out, response).await;
}

fn serve(req: &Request) -> ApiResult<Reply> {
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method();
    match (method, segments.as_slice()) {
        (Method::Post, ["sessions"]) => start_session(req),
        (Method::Get, ["sessions", id]) => on_session(req, id, read_session),
        (Method::Delete, ["sessions", id]) | (Method::Post, ["sessions", id, "end"]) => {
            on_session(req, id, end_session)
        }
        (Method::Post, ["sessions", id, "messages"]) => on_session(req, id, send),
        (Method::Get, ["sessions", id, "messages"]) => on_session(req, id, read_messages),
        (Method::Post, ["sessions", id, "user-data"]) => on_session(req, id, update_user_data),
        _ => Err(ApiError::new(
            404,
            Code::NotFound,
            format!(
                "no such operation: {method} /nexus/v3/chat/{}",
                path.join("/")
            ),
        )),
    }
}

fn fields(req: &Request) -> ApiResult<Fields> {
    Fields::parse(
        header(req, "content-type").as_deref(),
        req.body(),
        MAX_BODY_BYTES,
    )
}

/// The absolute URI of a session, as the widgets expect `selfUri`.
fn self_uri(req: &Request, session_id: &str) -> String {
    format!(
        "{}/nexus/v3/chat/sessions/{session_id}",
        nexus_guest::spin::origin(req)
    )
}

/// The fields of a start request that are not user data.
const START_FIELDS: &[&str] = &[
    "firstName",
    "lastName",
    "nickname",
    "email",
    "phoneNumber",
    "endpoint",
    "stream",
    "subject",
    "userData",
];

fn start_session(req: &Request) -> ApiResult<Reply> {
    let db = Db::open()?;
    let tenant = auth::starting_tenant(&|name| header(req, name), &db)?;
    let fields = fields(req)?;
    let first_name = fields.bounded_text("firstName", MAX_NICKNAME_CHARS)?;
    let last_name = fields.bounded_text("lastName", MAX_NICKNAME_CHARS)?;
    let nickname = fields
        .bounded_text("nickname", MAX_NICKNAME_CHARS)?
        .or_else(|| {
            let full = [first_name.as_deref(), last_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!full.is_empty()).then_some(full)
        })
        .ok_or_else(|| {
            ApiError::new(
                400,
                Code::InvalidNickname,
                "a nickname (or a first or last name) is required",
            )
        })?;
    let email = fields
        .text("email")
        .map(|email| nexus_guest::identity::normalise_email(&email))
        .transpose()?;
    let phone = fields
        .text("phoneNumber")
        .map(|phone| nexus_guest::identity::normalise_phone(&phone))
        .transpose()?;
    let channel_id = store::chat_channel(&db, &tenant, fields.text("endpoint").as_deref())?;
    let mut user_data = fields.others(START_FIELDS);
    if let Some(extra) = fields.object("userData")? {
        user_data.extend(extra);
    }
    for (name, value) in [
        ("subject", fields.text("subject")),
        ("stream", fields.text("stream")),
    ] {
        if let Some(value) = value {
            user_data.insert(name.into(), Value::String(value));
        }
    }
    let started = store::start(
        &db,
        &tenant,
        &store::NewSession {
            channel_id: &channel_id,
            nickname: &nickname,
            first_name: first_name.as_deref(),
            last_name: last_name.as_deref(),
            email: email.as_deref(),
            phone: phone.as_deref(),
            user_data: Value::Object(user_data),
        },
    )?;
    let claims = nexus_guest::token::ClientClaims {
        session_id: started.session_id.clone(),
        transport_id: channel_id.clone(),
        participant_id: started.participant_id.clone(),
        ccid: tenant.ccid.clone(),
        iat: nexus_guest::spin::now_unix(),
    };
    // Committed: the connection goes back to the pool before the Redis round trips.
    drop(db);
    let client_token = nexus_guest::token::sign(&claims, tenant.token_secret.as_bytes())
        .map_err(|err| ApiError::internal("sign the client token", err))?;
    // The session is committed; live state is a cache, and a failure to write it only means the
    // next request rebuilds it.
    if let Ok(live) = Live::open() {
        let state = LiveState::new(&live, &started.session_id);
        let session = LiveSession {
            tenant_id: tenant.id,
            channel_id: channel_id.clone(),
            participant_id: started.participant_id.clone(),
            nickname: nickname.clone(),
            state: "active".into(),
            agents: Vec::new(),
        };
        if state.store(&session, &started.messages).is_err()
            || state.touch(INACTIVITY_SECONDS).is_err()
        {
            state.forget();
        }
    }
    // Routing, as the designer said for this channel: the conversation is committed, so a
    // failure here leaves it for the sweep (which routes from PostgreSQL), not lost.
    if let Err(err) = route_new_session(&tenant, &channel_id, &started.session_id) {
        nexus_guest::spin::log_error("route the new session", &err);
    }
    Reply::created(json!({
        "sessionId": started.session_id,
        "selfUri": self_uri(req, &started.session_id),
        "clientToken": client_token,
        "participantId": started.participant_id,
        "transportId": channel_id,
        "contactId": started.contact_id,
        "nickname": nickname,
        "messages": started.messages,
    }))
}

/// Routes a new session as its channel's routing rule says: to its bot, or to its queue (and
/// on to an agent).
fn route_new_session(tenant: &Tenant, channel_id: &str, session_id: &str) -> ApiResult<()> {
    let db = Db::open()?;
    let live = Live::open()?;
    routing::route_new(&db, &live, tenant.id, channel_id, session_id)
}

/// Where the session stands in routing: its queue and place while it waits.
fn routing_status(session: &mut Session<'_>) -> ApiResult<Value> {
    session.db()?;
    let Session {
        db: Some(db),
        live,
        tenant,
        id,
        ..
    } = &*session
    else {
        return Ok(Value::Null);
    };
    routing::status(db, live, tenant.id, id)
}

/// A verified request on a live session.
struct Session<'a> {
    id: &'a str,
    tenant: Tenant,
    live_session: LiveSession,
    /// Open only while needed: a long-poll must not hold one of the pool's connections while it
    /// waits (the embedded PostgreSQL has a single one).
    db: Option<Db>,
    live: Live,
}

impl Session<'_> {
    fn db(&mut self) -> ApiResult<&Db> {
        match &mut self.db {
            Some(db) => Ok(db),
            empty => Ok(empty.insert(Db::open()?)),
        }
    }

    /// Gives the database connection back to the host's pool.
    fn release_db(&mut self) {
        self.db = None;
    }

    /// Up to `limit` messages after `after`, from PostgreSQL.
    fn messages_after(&mut self, after: i64, limit: i64) -> ApiResult<Vec<Value>> {
        let (tenant_id, id) = (self.tenant.id, self.id);
        conversation::messages_after(self.db()?, tenant_id, id, after, limit)
    }

    fn state(&self) -> LiveState<'_> {
        LiveState::new(&self.live, self.id)
    }

    fn is_open(&self) -> bool {
        self.live_session.state == "active"
    }

    fn require_open(&self) -> ApiResult<()> {
        if self.is_open() {
            Ok(())
        } else {
            Err(ended_error())
        }
    }

    /// PostgreSQL found the session ended (by another request, or a sweep): it is so from now on.
    fn ended(&mut self) -> ApiError {
        self.live_session.state = "ended".into();
        ended_error()
    }

    /// Puts committed messages into the live state; if that fails, drops the live state so the
    /// next request rebuilds it from PostgreSQL, where the messages already are.
    fn publish(&self, messages: &[Value], state: &str) {
        let live_state = self.state();
        if live_state.append(messages, state).is_err() {
            live_state.forget();
        }
        conversation::tell_agents(&self.live, self.id, &self.live_session.agents, messages);
    }

    /// Rebuilds the live state from PostgreSQL.
    fn rebuild(&mut self) -> ApiResult<()> {
        let (tenant_id, id) = (self.tenant.id, self.id);
        let (session, tail) =
            conversation::load_session(self.db()?, tenant_id, id)?.ok_or_else(unknown_session)?;
        self.state().store(&session, &tail)?;
        self.live_session = session;
        Ok(())
    }
}

fn unknown_session() -> ApiError {
    ApiError::new(404, Code::InvalidSession, "no such session")
}

/// Authenticates a request on session `id`, loads (or rebuilds) its live state, and runs `work`.
fn on_session(
    req: &Request,
    id: &str,
    work: impl FnOnce(&Request, &mut Session<'_>) -> ApiResult<Reply>,
) -> ApiResult<Reply> {
    if !nexus_guest::spin::is_uuid(id) {
        return Err(unknown_session());
    }
    let db = Db::open()?;
    let (tenant, claims) = auth::session_caller(&|name| header(req, name), &db, id)?;
    let live = Live::open()?;
    let live_session = auth::live_session(&db, &live, &tenant, &claims, id)?;
    let mut session = Session {
        id,
        tenant,
        live_session,
        db: Some(db),
        live,
    };
    work(req, &mut session)
}

fn read_session(_req: &Request, session: &mut Session<'_>) -> ApiResult<Reply> {
    let (tenant_id, id) = (session.tenant.id, session.id);
    let mut data =
        store::session_json(session.db()?, tenant_id, id)?.ok_or_else(unknown_session)?;
    let idle = session.is_open() && session.state().is_idle()?;
    if let Some(object) = data.as_object_mut() {
        object.insert("idle".into(), Value::Bool(idle));
        object.insert(
            "participantId".into(),
            Value::String(session.live_session.participant_id.clone()),
        );
    }
    let routing = routing_status(session)?;
    if let Some(object) = data.as_object_mut() {
        object.insert("routing".into(), routing);
    }
    Reply::ok(data)
}

fn ended_error() -> ApiError {
    ApiError::new(409, Code::InvalidSession, "the session has ended")
}

fn send(req: &Request, session: &mut Session<'_>) -> ApiResult<Reply> {
    let fields = fields(req)?;
    let kind = fields.text("type").unwrap_or_else(|| "Text".into());
    let participant = session.live_session.participant_id.clone();
    let nickname = session.live_session.nickname.clone();
    match kind.as_str() {
        "TypingStarted" | "TypingStopped" => {
            session.require_open()?;
            let typing = kind == "TypingStarted";
            session
                .state()
                .set_typing(&participant, &nickname, "Customer", typing)?;
            // The agents' consoles show it too; it passes, so it is not logged for them.
            let event = json!({
                "messageType": "Typing",
                "interactionId": session.id,
                "participantId": participant,
                "nickname": nickname,
                "participantType": "Customer",
                "typing": typing,
            });
            for (agent, _) in &session.live_session.agents {
                let _ = nexus_guest::events::signal(&session.live, agent, &event);
            }
            Reply::ok(json!({ "typing": typing }))
        }
        "Text" | "CustomNotice" => {
            session.require_open()?;
            let text = fields.bounded_text("text", MAX_TEXT_CHARS)?;
            if kind == "Text" && text.is_none() {
                return Err(ApiError::bad_parameter("`text` is required"));
            }
            let data = match fields.object("customData")? {
                Some(custom) => Some(Value::Object(custom)),
                None if kind == "CustomNotice" => {
                    Some(Value::Object(fields.others(&["type", "text", "messageId"])))
                }
                None => None,
            };
            let client_message_id =
                fields.bounded_text("messageId", MAX_CLIENT_MESSAGE_ID_CHARS)?;
            let (tenant_id, id) = (session.tenant.id, session.id);
            let text = match text {
                Some(text) if kind == "Text" => Some(transform_inbound(session, text)?),
                other => other,
            };
            let outcome = conversation::append(
                session.db()?,
                tenant_id,
                id,
                &conversation::NewMessage {
                    kind: &kind,
                    participant_id: Some(&participant),
                    sender_kind: "Customer",
                    nickname: &nickname,
                    text: text.as_deref(),
                    data: data.as_ref(),
                    visibility: "All",
                    client_message_id: client_message_id.as_deref(),
                },
            )?;
            let Some(conversation::Appended {
                message,
                duplicate,
                routing_state,
            }) = outcome
            else {
                return Err(session.ended());
            };
            // Committed: the connection goes back to the pool before the Redis round trips.
            session.release_db();
            if duplicate {
                conversation::announce_again(&session.live, session.id, &message);
            } else {
                deliver(session, &message, routing_state.as_deref());
            }
            Reply::ok(json!({ "message": message, "duplicate": duplicate }))
        }
        other => Err(ApiError::bad_parameter(format!(
            "`type` is Text, CustomNotice, TypingStarted or TypingStopped, not `{other}`"
        ))),
    }
}

/// What the customer wrote, through the channel's inbound transforms (before it is stored).
fn transform_inbound(session: &mut Session<'_>, text: String) -> ApiResult<String> {
    // The tenant read says whether the channel has inbound transforms at all.
    if !session.tenant.inbound_transforms {
        return Ok(text);
    }
    let (tenant_id, id) = (session.tenant.id, session.id);
    let channel_id = session.live_session.channel_id.clone();
    tenant_components::apply(
        session.db()?,
        &Transformable {
            tenant_id,
            channel_id: Some(&channel_id),
            conversation_id: id,
            direction: Direction::Inbound,
            sender_kind: "Customer",
        },
        &text,
    )
}

/// After a customer's message is committed: routing woken where the chat waits for nobody, the
/// live state (tail, publish, typing, inactivity timer), and the agents told.
fn deliver(session: &Session<'_>, message: &Value, routing_state: Option<&str>) {
    let (tenant_id, id) = (session.tenant.id, session.id);
    let participant = &session.live_session.participant_id;
    // A chat kept open without agents goes back to routing when the customer writes (the append
    // said whether it is kept open: no round trip otherwise).
    if session.live_session.agents.is_empty()
        && routing_state == Some("idle")
        && let Err(err) = Db::open().and_then(|db| routing::wake(&db, &session.live, tenant_id, id))
    {
        nexus_guest::spin::log_error("route the woken session", &err);
    }
    let state = session.state();
    if state
        .customer_wrote(message, participant, INACTIVITY_SECONDS)
        .is_err()
    {
        state.forget();
    }
    conversation::tell_agents(
        &session.live,
        session.id,
        &session.live_session.agents,
        std::slice::from_ref(message),
    );
}

fn malformed_upload() -> ApiError {
    ApiError::bad_parameter(
        "the body is multipart/form-data with a `file`, and optionally a `text` and a `messageId`",
    )
}

/// `POST {selfUri}/files`: a file the customer sends (multipart `file`, with an optional
/// caption `text` and `messageId`), stored with the session's channel and posted as a `Text`
/// whose `data.media` describes it. Its bytes are read before the session's connection is taken.
async fn upload(req: &Request, id: &str) -> ApiResult<Reply> {
    let (upload, fields) = media::multipart(req, malformed_upload).await?;
    let upload = upload.ok_or_else(malformed_upload)?;
    media::check(&upload)?;
    let caption = fields.bounded_text("text", MAX_TEXT_CHARS)?;
    let client_message_id = fields.bounded_text("messageId", MAX_CLIENT_MESSAGE_ID_CHARS)?;
    on_session(req, id, move |_, session| {
        send_file(session, upload, caption, client_message_id)
    })
}

fn send_file(
    session: &mut Session<'_>,
    upload: Upload,
    caption: Option<String>,
    client_message_id: Option<String>,
) -> ApiResult<Reply> {
    session.require_open()?;
    let text = match caption {
        Some(caption) => transform_inbound(session, caption)?,
        None => upload.filename.clone(),
    };
    let (tenant_id, id) = (session.tenant.id, session.id);
    let channel_id = session.live_session.channel_id.clone();
    let participant = session.live_session.participant_id.clone();
    let nickname = session.live_session.nickname.clone();
    let db = session.db()?;
    // The file and its message commit together; a resend (the same `messageId`) or an ended
    // session keeps neither.
    db.execute("begin", "BEGIN", &[])?;
    let appended = media::store(db, tenant_id, &channel_id, upload).and_then(|file| {
        conversation::append(
            db,
            tenant_id,
            id,
            &conversation::NewMessage {
                kind: "Text",
                participant_id: Some(&participant),
                sender_kind: "Customer",
                nickname: &nickname,
                text: Some(&text),
                data: Some(&json!({ "media": [file] })),
                visibility: "All",
                client_message_id: client_message_id.as_deref(),
            },
        )
    });
    let keep = matches!(&appended, Ok(Some(appended)) if !appended.duplicate);
    if keep {
        db.execute("commit", "COMMIT", &[])?;
    } else {
        let _ = db.execute("rollback", "ROLLBACK", &[]);
    }
    let Some(conversation::Appended {
        message,
        duplicate,
        routing_state,
    }) = appended?
    else {
        return Err(session.ended());
    };
    session.release_db();
    if duplicate {
        conversation::announce_again(&session.live, session.id, &message);
        return Reply::ok(json!({ "message": message, "duplicate": true }));
    }
    deliver(session, &message, routing_state.as_deref());
    Reply::created(json!({ "message": message, "duplicate": false }))
}

/// `GET {selfUri}/files/{mediaId}`: a file of this session's transcript, for its customer: the
/// bytes as uploaded.
fn download(req: &Request, id: &str, media_id: &str) -> ApiResult<Response> {
    if !nexus_guest::spin::is_uuid(id) {
        return Err(unknown_session());
    }
    let db = Db::open()?;
    let (tenant, _claims) = auth::session_caller(&|name| header(req, name), &db, id)?;
    let missing =
        || ApiError::not_found(format!("no file of this session has the id `{media_id}`"));
    if !nexus_guest::spin::is_uuid(media_id) {
        return Err(missing());
    }
    // Only a file a message the customer may see names: not an agents' whisper's.
    media::download(
        &db,
        "SELECT m.filename, m.mimetype, m.sha256, m.content FROM media m \
         WHERE m.id = $1 AND m.tenant_id = $2 AND EXISTS ( \
           SELECT 1 FROM messages x WHERE x.interaction_id = $3 AND x.tenant_id = $2 \
           AND x.visibility = 'All' \
           AND x.data -> 'media' @> jsonb_build_array(jsonb_build_object('mediaId', $1::text)))",
        &[
            nexus_guest::spin::uuid(media_id),
            ParameterValue::Int64(tenant.id),
            nexus_guest::spin::uuid(id),
        ],
        missing,
    )
}

fn bounded_number(
    params: &std::collections::BTreeMap<String, String>,
    name: &str,
    max: i64,
) -> ApiResult<Option<i64>> {
    match params.get(name) {
        None => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_parameter(format!("`{name}` is a number from 0 to {max}"))
            }),
    }
}

/// The transcript after `after`, waiting up to `timeout` seconds for something new.
///
/// Under the nexus host, a read with nothing to answer parks on the session's topic and returns
/// (the host calls again when a message is published, or at the deadline); what the read must
/// remember across calls (its deadline, the routing state it began with) is its memo. Under
/// Spin it looks again every [`POLL_INTERVAL`] until the deadline.
fn read_messages(req: &Request, session: &mut Session<'_>) -> ApiResult<Reply> {
    let params = query(req)?;
    let after = bounded_number(&params, "after", i64::from(i32::MAX))?.unwrap_or(0);
    let limit = bounded_number(&params, "limit", MAX_READ)?
        .unwrap_or(MAX_READ)
        .max(1);
    let timeout = bounded_number(&params, "timeout", MAX_POLL_SECONDS as i64)?.unwrap_or(0);
    let parked_call = parking::call();
    let memo: Option<ReadMemo> = parked_call
        .as_ref()
        .and_then(|call| call.memo.as_deref())
        .and_then(|memo| serde_json::from_str(memo).ok());
    let deadline_ms = memo.as_ref().map_or_else(
        || parking::now_ms().saturating_add(timeout.unsigned_abs().saturating_mul(1000)),
        |memo| memo.deadline_ms,
    );
    let mut rebuilt = false;
    // A woken read compares the routing state with the one its first call saw.
    let (routing_before, mut routing_now) = match memo {
        Some(memo) => (memo.routing, routing_status(session)?),
        None => {
            let now = routing_status(session)?;
            (now.clone(), now)
        }
    };
    let messages = loop {
        let found = match session.state().tail_after(after, limit)? {
            TailRead::Messages(messages) => messages,
            TailRead::Gap => session.messages_after(after, limit)?,
            TailRead::Lost if !rebuilt => {
                // Redis lost the session (flushed, restarted, evicted), perhaps while this
                // read was waiting: rebuilt once, then PostgreSQL answers.
                session.rebuild()?;
                rebuilt = true;
                continue;
            }
            TailRead::Lost => session.messages_after(after, limit)?,
        };
        // An ended session has nothing more to wait for; a customer waiting in a queue is told
        // as their place changes.
        if !found.is_empty()
            || !session.is_open()
            || parking::now_ms() >= deadline_ms
            || routing_now != routing_before
        {
            break found;
        }
        let queued = routing_before["position"].as_i64().is_some();
        if parked_call.is_some() {
            let wake_at = if queued {
                deadline_ms.min(parking::now_ms().saturating_add(QUEUED_RECHECK_MS))
            } else {
                deadline_ms
            };
            let memo = json!({ "deadlineMs": deadline_ms, "routing": routing_before });
            parking::park(
                vec![nexus_guest::live::session_topic(session.id)],
                wake_at,
                memo.to_string(),
            );
            // Nothing is sent for a parked request.
            return Reply::ok(Value::Null);
        }
        session.release_db();
        std::thread::sleep(POLL_INTERVAL);
        // While queued, only the place in the queue (Redis) is watched; PostgreSQL is asked
        // again only once it changed.
        if let (Some(queue), true) = (routing_before["queue"].as_str(), queued) {
            let place = routing::position(&session.live, session.tenant.id, queue, session.id)?;
            if place != routing_before["position"].as_i64() {
                routing_now = routing_status(session)?;
                session.release_db();
            }
        }
    };
    let next_position = messages
        .last()
        .and_then(|message| message["position"].as_i64())
        .unwrap_or(after);
    let more = messages.len() as i64 == limit;
    // A customer sees what everyone may see; whispers among agents stay among them.
    let visible: Vec<Value> = messages
        .into_iter()
        .filter(|message| message["visibility"] == "All")
        .collect();
    let participant = session.live_session.participant_id.clone();
    let state_now = session
        .state()
        .load()?
        .map_or_else(|| session.live_session.state.clone(), |live| live.state);
    Reply::ok(json!({
        "messages": visible,
        "nextPosition": next_position,
        "more": more,
        "state": state_now,
        "typing": session.state().typing(&participant)?,
        "routing": routing_now,
    }))
}

/// What a parked transcript read remembers between its calls.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadMemo {
    deadline_ms: u64,
    routing: Value,
}

fn update_user_data(req: &Request, session: &mut Session<'_>) -> ApiResult<Reply> {
    session.require_open()?;
    let fields = fields(req)?;
    let mut update: Map<String, Value> = fields.others(&["userData"]);
    if let Some(extra) = fields.object("userData")? {
        update.extend(extra);
    }
    if update.is_empty() {
        return Err(ApiError::bad_parameter(
            "send the user data to update as data[key]=value",
        ));
    }
    let participant = session.live_session.participant_id.clone();
    let nickname = session.live_session.nickname.clone();
    let update = Value::Object(update);
    let (tenant_id, id) = (session.tenant.id, session.id);
    let (user_data, message) = store::update_user_data(
        session.db()?,
        tenant_id,
        id,
        &update,
        &participant,
        &nickname,
    )?
    .ok_or_else(ended_error)?;
    session.publish(std::slice::from_ref(&message), "active");
    Reply::ok(json!({ "userData": user_data }))
}

fn end_session(_req: &Request, session: &mut Session<'_>) -> ApiResult<Reply> {
    let participant = session.live_session.participant_id.clone();
    let nickname = session.live_session.nickname.clone();
    let (tenant_id, id) = (session.tenant.id, session.id);
    let ended = store::end(session.db()?, tenant_id, id, &participant, &nickname)?;
    if !ended.is_empty() {
        session.publish(&ended, "ended");
    }
    // Ended now or before: the live state says so either way.
    let _ = session.state().set_state("ended");
    let _ = session
        .state()
        .set_typing(&participant, &nickname, "Customer", false);
    Reply::ok(json!({ "state": "ended", "messages": ended }))
}
