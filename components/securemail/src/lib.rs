//! Secure email (`/nexus/v3/securemail`): a contact's mailbox, kept in nexus and read through a
//! portal the contact center runs (instead of mail that travels in the clear). The portal calls
//! with an API key that has the `securemail` permission (`x-api-key`), on behalf of the contact
//! it has signed in, named by their email `address`:
//!
//! - `GET securemail?address=&status=unread|read|all&index=0&count=10&securebox=`: the mailbox,
//!   newest first. What agents wrote is `unread` until marked read; the contact's own messages
//!   are `read`. `securebox` (3 to 16 letters and digits) is a department's own thread with the
//!   contact; without it, the default box.
//! - `POST securemail` `{address, text, subject?, nickname?, securebox?, messageId?, endpoint?}`:
//!   the contact writes. It joins the box's open conversation on the tenant's `securemail`
//!   channel (`endpoint` names one when there are several), or starts one that is routed as the
//!   channel's rule says; a repeated `messageId` is stored once.
//! - `POST securemail/read` `{address, securebox?, messageIds: [...]}`: marks agents' messages
//!   read.
//!
//! Agents answer in the Workspace API like any conversation; the webhooks' events cover secure
//! email too.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use std::collections::BTreeMap;

use nexus_guest::api::{ApiError, ApiResult};
use nexus_guest::body::Fields;
use nexus_guest::identity::normalise_email;
use nexus_guest::inbound::{self, Inlet, Sender};
use nexus_guest::spin::{
    Db, Reply, header, jsonb, opt_text, path_segments, query, reference_id, respond, text,
};
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_component;
use spin_sdk::pg4::ParameterValue;

const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_TEXT_CHARS: usize = 16 * 1024;
const MAX_SUBJECT_CHARS: usize = 200;
const DEFAULT_COUNT: i64 = 10;
const MAX_COUNT: i64 = 100;
const MAX_READ_AT_ONCE: usize = 100;

#[http_component]
fn securemail(req: Request) -> impl IntoResponse {
    let reference = reference_id(&req);
    respond(&reference, serve(&req))
}

fn serve(req: &Request) -> ApiResult<Reply> {
    let db = Db::open()?;
    let tenant_id = nexus_guest::api_key::authorize(req, &db, "securemail")?;
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, []) => mailbox(&db, tenant_id, &query(req)?),
        (Method::Post, []) => write(&db, tenant_id, &fields(req)?),
        (Method::Post, ["read"]) => mark_read(&db, tenant_id, &fields(req)?),
        (method, _) => Err(ApiError::not_found(format!(
            "no such operation: {method} /nexus/v3/securemail/{}",
            path.join("/")
        ))),
    }
}

fn fields(req: &Request) -> ApiResult<Fields> {
    Fields::parse(
        header(req, "content-type").as_deref(),
        req.body(),
        MAX_BODY_BYTES,
    )
}

fn address(value: Option<&str>) -> ApiResult<String> {
    let given = value.ok_or_else(|| ApiError::bad_parameter("`address` is required"))?;
    normalise_email(given)
}

/// A department's box: 3 to 16 letters and digits, or none (the default box).
fn securebox(value: Option<&str>) -> ApiResult<Option<String>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(name)
            if (3..=16).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Ok(Some(name.to_owned()))
        }
        Some(_) => Err(ApiError::bad_parameter(
            "`securebox` is 3 to 16 letters and digits ([A-Za-z0-9]{3,16})",
        )),
    }
}

fn number(params: &BTreeMap<String, String>, name: &str, default: i64, max: i64) -> ApiResult<i64> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=max).contains(n))
            .ok_or_else(|| ApiError::bad_parameter(format!("`{name}` is from 0 to {max}"))),
    }
}

/// The messages of a mailbox, newest first, from `index`.
fn mailbox(db: &Db, tenant_id: i64, params: &BTreeMap<String, String>) -> ApiResult<Reply> {
    let address = address(params.get("address").map(String::as_str))?;
    let securebox = securebox(params.get("securebox").map(String::as_str))?;
    let status = params.get("status").map_or("all", String::as_str);
    if !matches!(status, "unread" | "read" | "all") {
        return Err(ApiError::bad_parameter("`status` is unread, read or all"));
    }
    let index = number(params, "index", 0, i64::from(i32::MAX))?;
    let count = number(params, "count", DEFAULT_COUNT, MAX_COUNT)?;
    let rows = db.json_rows(
        "read the mailbox",
        "WITH mine AS ( \
           SELECT m.*, i.securebox, (m.sender_kind = 'Customer' OR m.delivery_status = 'read') AS is_read \
           FROM interactions i \
           JOIN contact_identities ci ON ci.contact_id = i.contact_id AND ci.tenant_id = i.tenant_id \
           JOIN messages m ON m.interaction_id = i.id \
           WHERE i.tenant_id = $1 AND i.media = 'securemail' AND ci.kind = 'email' AND ci.value = $2 \
             AND i.securebox IS NOT DISTINCT FROM $3 AND m.type = 'Text' AND m.visibility = 'All') \
         SELECT jsonb_build_object('total', count(*) OVER (), 'message', jsonb_strip_nulls(jsonb_build_object( \
           'messageId', mine.interaction_id || ':' || mine.position, \
           'interactionId', mine.interaction_id, \
           'securebox', mine.securebox, \
           'from', jsonb_build_object('type', mine.sender_kind, 'nickname', mine.nickname), \
           'subject', mine.data->>'subject', \
           'text', mine.text, \
           'timestamp', nexus_ts(mine.created_at), \
           'status', CASE WHEN mine.is_read THEN 'read' ELSE 'unread' END))) \
         FROM mine WHERE $4 = 'all' OR ($4 = 'read') = mine.is_read \
         ORDER BY mine.created_at DESC, mine.position DESC OFFSET $5 LIMIT $6",
        &[
            ParameterValue::Int64(tenant_id),
            text(&address),
            opt_text(securebox.clone()),
            text(status),
            ParameterValue::Int64(index),
            ParameterValue::Int64(count),
        ],
    )?;
    let total = rows
        .first()
        .and_then(|row| row["total"].as_i64())
        .unwrap_or(0);
    let messages: Vec<Value> = rows.into_iter().map(|row| row["message"].clone()).collect();
    Reply::ok(json!({
        "address": address,
        "securebox": securebox,
        "status": status,
        "index": index,
        "count": messages.len(),
        "total": total,
        "messages": messages,
    }))
}

/// The contact writes to the box.
fn write(db: &Db, tenant_id: i64, fields: &Fields) -> ApiResult<Reply> {
    let address = address(fields.text("address").as_deref())?;
    let securebox = securebox(fields.text("securebox").as_deref())?;
    let body = fields
        .bounded_text("text", MAX_TEXT_CHARS)?
        .ok_or_else(|| ApiError::bad_parameter("`text` is required"))?;
    let subject = fields.bounded_text("subject", MAX_SUBJECT_CHARS)?;
    let nickname = fields
        .bounded_text("nickname", 100)?
        .unwrap_or_else(|| address.clone());
    let message_id = fields
        .bounded_text("messageId", 256)?
        .unwrap_or_else(nexus_guest::secrets::new_id);
    let channel_id = inbound::channel_named(
        db,
        tenant_id,
        "securemail",
        fields.text("endpoint").as_deref(),
        "`endpoint`",
    )?;
    let data = subject.map(|subject| json!({ "subject": subject }));
    let taken = inbound::take_text(
        db,
        &Inlet {
            tenant_id,
            channel_id: &channel_id,
            media: "securemail",
            securebox: securebox.as_deref(),
            user_data: None,
        },
        &Sender {
            kind: "email",
            value: &address,
            nickname: &nickname,
        },
        &message_id,
        Some(&body),
        data.as_ref(),
    )?;
    Reply::ok(json!({
        "interactionId": taken.interaction,
        "messageId": format!("{}:{}", taken.interaction, taken.message["position"]),
        "duplicate": taken.duplicate,
    }))
}

/// `interaction:position`, as the mailbox names a message.
fn message_key(id: &Value) -> Option<Value> {
    let (interaction, position) = id.as_str()?.split_once(':')?;
    let position: i64 = position.parse().ok()?;
    nexus_guest::spin::is_uuid(interaction).then(|| json!([interaction, position]))
}

/// Marks agents' messages of the box read; how many changed.
fn mark_read(db: &Db, tenant_id: i64, fields: &Fields) -> ApiResult<Reply> {
    let address = address(fields.text("address").as_deref())?;
    let securebox = securebox(fields.text("securebox").as_deref())?;
    let refused = || {
        ApiError::bad_parameter(format!(
            "`messageIds` is a list of 1 to {MAX_READ_AT_ONCE} messageIds of the mailbox"
        ))
    };
    let ids = match fields.others(&[]).get("messageIds") {
        Some(Value::Array(ids)) if !ids.is_empty() && ids.len() <= MAX_READ_AT_ONCE => ids
            .iter()
            .map(message_key)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(refused)?,
        _ => return Err(refused()),
    };
    let marked = db.execute(
        "mark the messages read",
        "UPDATE messages m SET delivery_status = 'read' \
         FROM interactions i, contact_identities ci \
         WHERE m.interaction_id = i.id AND i.tenant_id = $1 AND i.media = 'securemail' \
           AND ci.contact_id = i.contact_id AND ci.tenant_id = i.tenant_id AND ci.kind = 'email' AND ci.value = $2 \
           AND i.securebox IS NOT DISTINCT FROM $3 \
           AND m.sender_kind <> 'Customer' AND m.delivery_status <> 'read' \
           AND (m.interaction_id, m.position) IN \
             (SELECT (key->>0)::uuid, (key->>1)::int FROM jsonb_array_elements($4) AS key)",
        &[
            ParameterValue::Int64(tenant_id),
            text(&address),
            opt_text(securebox),
            jsonb(&Value::Array(ids)),
        ],
    )?;
    Reply::ok(json!({ "marked": marked }))
}
