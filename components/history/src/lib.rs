//! The history API (`/nexus/v3/history/...`): the tenant's contacts (found by an identity,
//! merged), the interactions of a contact, the full transcript of an interaction, and a search of
//! messages by text and time range. Lists are paginated by an opaque `cursor`.
//!
//! It is for back-office systems, with an API key that has the `history` permission: a chat key
//! is in every visitor's browser and reads nothing here. Every query is bound to the key's tenant.
//!
//! The OpenAPI description is `openapi/history.json`.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::body::Fields;
use nexus_guest::identity::{normalise_email, normalise_phone};
use nexus_guest::spin::{
    Db, Reply, header, is_uuid, opt_text, path_segments, query, reference_id, respond, text, uuid,
};
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_component;
use spin_sdk::pg4::ParameterValue;

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;
const MAX_BODY_BYTES: usize = 16 * 1024;
const NO_CHANNEL: &str = "00000000-0000-0000-0000-000000000000";

/// Serves `/nexus/v3/history/...`.
#[http_component]
fn history(req: Request) -> impl IntoResponse {
    let reference = reference_id(&req);
    respond(&reference, serve(&req))
}

fn serve(req: &Request) -> ApiResult<Reply> {
    let db = Db::open()?;
    let tenant = authorize(req, &db)?;
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let params = query(req)?;
    let method = req.method();
    match (method, segments.as_slice()) {
        (Method::Get, ["contacts"]) => find_contacts(&db, tenant, &params),
        (Method::Get, ["contacts", id]) => Reply::ok(contact(&db, tenant, id)?),
        (Method::Post, ["contacts", id, "merge"]) => merge(&db, tenant, id, req),
        (Method::Get, ["contacts", id, "interactions"]) => {
            contact_interactions(&db, tenant, id, &params)
        }
        (Method::Get, ["interactions", id]) => interaction(&db, tenant, id),
        (Method::Get, ["interactions", id, "messages"]) => transcript(&db, tenant, id, &params),
        (Method::Get, ["messages"]) => search(&db, tenant, &params),
        _ => Err(ApiError::new(
            404,
            Code::NotFound,
            format!(
                "no such operation: {method} /nexus/v3/history/{}",
                path.join("/")
            ),
        )),
    }
}

/// The tenant of an enabled, unexpired API key with the `history` permission.
fn authorize(req: &Request, db: &Db) -> ApiResult<i64> {
    nexus_guest::api_key::authorize(req, db, "history")
}

fn page_size(params: &BTreeMap<String, String>) -> ApiResult<i64> {
    nexus_guest::body::int_param(params, "limit", 1, MAX_PAGE, DEFAULT_PAGE)
}

/// A page cursor: the sort key of the last item, as an opaque token.
fn encode_cursor(key: &Value) -> String {
    URL_SAFE_NO_PAD.encode(key.to_string())
}

fn decode_cursor(
    params: &BTreeMap<String, String>,
    parts: usize,
) -> ApiResult<Option<Vec<String>>> {
    let Some(cursor) = params.get("cursor") else {
        return Ok(None);
    };
    let malformed = || ApiError::bad_parameter("`cursor` is not one this API gave");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| malformed())?;
    let key: Vec<Value> = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if key.len() != parts {
        return Err(malformed());
    }
    key.into_iter()
        .map(|part| match part {
            Value::String(text) => Ok(text),
            Value::Number(number) => Ok(number.to_string()),
            _ => Err(malformed()),
        })
        .collect::<ApiResult<Vec<String>>>()
        .map(Some)
}

/// A page of `items` (fetched one more than `limit`) with the cursor of the next, if any.
fn page(mut items: Vec<Value>, limit: i64, cursor_of: impl Fn(&Value) -> Value) -> Value {
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(0));
    let next = more
        .then(|| items.last().map(|last| encode_cursor(&cursor_of(last))))
        .flatten();
    json!({ "items": items, "nextCursor": next })
}

fn uuid_or_404<'a>(id: &'a str, what: &str) -> ApiResult<&'a str> {
    if is_uuid(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no {what} has the id `{id}`")))
    }
}

fn contact(db: &Db, tenant: i64, id: &str) -> ApiResult<Value> {
    db.json_row(
        "read the contact",
        "SELECT nexus_contact_json(c) FROM contacts c WHERE tenant_id = $1 AND id = $2",
        &[
            ParameterValue::Int64(tenant),
            uuid(uuid_or_404(id, "contact")?),
        ],
    )?
    .ok_or_else(|| ApiError::not_found(format!("no contact has the id `{id}`")))
}

/// By an identity (`email`, `phone`, or `externalId` with its `channelId`), or all of them, newest
/// first.
fn find_contacts(db: &Db, tenant: i64, params: &BTreeMap<String, String>) -> ApiResult<Reply> {
    let identity = if let Some(email) = params.get("email") {
        Some(("email", normalise_email(email)?, NO_CHANNEL.to_owned()))
    } else if let Some(phone) = params.get("phone") {
        Some(("phone", normalise_phone(phone)?, NO_CHANNEL.to_owned()))
    } else if let Some(external) = params.get("externalId") {
        let channel = params
            .get("channelId")
            .filter(|channel| is_uuid(channel))
            .ok_or_else(|| {
                ApiError::bad_parameter("an `externalId` needs the UUID `channelId` it belongs to")
            })?;
        Some(("external", external.clone(), channel.clone()))
    } else {
        None
    };
    if let Some((kind, value, channel)) = identity {
        let contacts = db.json_rows(
            "find the contact",
            "SELECT nexus_contact_json(c) FROM contact_identities ci JOIN contacts c ON c.id = ci.contact_id \
             WHERE ci.tenant_id = $1 AND ci.kind = $2 AND ci.value = $3 AND ci.channel_id = $4",
            &[ParameterValue::Int64(tenant), text(kind), text(value), uuid(channel)],
        )?;
        return Reply::ok(json!({ "items": contacts, "nextCursor": null }));
    }
    let limit = page_size(params)?;
    let cursor = decode_cursor(params, 2)?;
    let (after_time, after_id) = match cursor {
        Some(parts) => (Some(parts[0].clone()), Some(parts[1].clone())),
        None => (None, None),
    };
    let contacts = db.json_rows(
        "list contacts",
        "SELECT nexus_contact_json(c) FROM contacts c \
         WHERE tenant_id = $1 AND merged_into IS NULL \
           AND ($2::text IS NULL OR (created_at, id) < ($2::text::timestamptz, $3::text::uuid)) \
         ORDER BY created_at DESC, id DESC LIMIT $4",
        &[
            ParameterValue::Int64(tenant),
            opt_text(after_time),
            opt_text(after_id),
            ParameterValue::Int64(limit + 1),
        ],
    )?;
    Reply::ok(page(contacts, limit, |last| {
        json!([last["createdAt"], last["id"]])
    }))
}

/// Merges the contact `from` (in the body) into `id`: its identities and interactions move to
/// `id`, and it is kept, empty, pointing at `id`.
fn merge(db: &Db, tenant: i64, id: &str, req: &Request) -> ApiResult<Reply> {
    let fields = Fields::parse(
        header(req, "content-type").as_deref(),
        req.body(),
        MAX_BODY_BYTES,
    )?;
    let from = fields.required_text("from")?;
    let into = uuid_or_404(id, "contact")?;
    let from = uuid_or_404(&from, "contact")?.to_owned();
    if from == into {
        return Err(ApiError::bad_parameter(
            "a contact cannot be merged into itself",
        ));
    }
    db.transaction(|db| {
        // Both rows locked, in a fixed order, so that concurrent merges cannot deadlock or
        // cross (A into B while B into A).
        let rows = db.rows(
            "lock the contacts",
            "SELECT id::text AS id, merged_into IS NOT NULL AS merged FROM contacts \
             WHERE tenant_id = $1 AND id IN ($2, $3) ORDER BY id FOR UPDATE",
            &[ParameterValue::Int64(tenant), uuid(into), uuid(&from)],
        )?;
        let found: Vec<(String, bool)> = rows
            .rows()
            .filter_map(|row| Some((row.get::<String>("id")?, row.get::<bool>("merged")?)))
            .collect();
        for wanted in [into, from.as_str()] {
            match found.iter().find(|(id, _)| id == wanted) {
                None => return Err(ApiError::not_found(format!("no contact has the id `{wanted}`"))),
                Some((_, true)) => {
                    return Err(ApiError::conflict(format!(
                        "the contact `{wanted}` was already merged into another"
                    )));
                }
                Some(_) => {}
            }
        }
        let params = [ParameterValue::Int64(tenant), uuid(&from), uuid(into)];
        db.execute(
            "move the identities",
            "UPDATE contact_identities SET contact_id = $3 WHERE tenant_id = $1 AND contact_id = $2",
            &params,
        )?;
        db.execute(
            "move the interactions",
            "UPDATE interactions SET contact_id = $3 WHERE tenant_id = $1 AND contact_id = $2",
            &params,
        )?;
        db.execute(
            "mark the merge",
            "UPDATE contacts SET merged_into = $3, updated_at = now() WHERE tenant_id = $1 AND (id = $2 OR merged_into = $2)",
            &params,
        )?;
        db.execute(
            "fill in the names",
            "UPDATE contacts c SET first_name = coalesce(c.first_name, f.first_name), \
             last_name = coalesce(c.last_name, f.last_name), nickname = coalesce(c.nickname, f.nickname), updated_at = now() \
             FROM contacts f WHERE c.tenant_id = $1 AND c.id = $3 AND f.id = $2",
            &params,
        )?;
        Reply::ok(contact(db, tenant, into)?)
    })
}

fn contact_interactions(
    db: &Db,
    tenant: i64,
    id: &str,
    params: &BTreeMap<String, String>,
) -> ApiResult<Reply> {
    contact(db, tenant, id)?;
    let limit = page_size(params)?;
    let (after_time, after_id) = match decode_cursor(params, 2)? {
        Some(parts) => (Some(parts[0].clone()), Some(parts[1].clone())),
        None => (None, None),
    };
    let interactions = db.json_rows(
        "list the interactions",
        "SELECT nexus_interaction_json(i) FROM interactions i \
         WHERE tenant_id = $1 AND contact_id = $2 \
           AND ($3::text IS NULL OR (created_at, id) < ($3::text::timestamptz, $4::text::uuid)) \
         ORDER BY created_at DESC, id DESC LIMIT $5",
        &[
            ParameterValue::Int64(tenant),
            uuid(id),
            opt_text(after_time),
            opt_text(after_id),
            ParameterValue::Int64(limit + 1),
        ],
    )?;
    Reply::ok(page(interactions, limit, |last| {
        json!([last["createdAt"], last["id"]])
    }))
}

fn interaction(db: &Db, tenant: i64, id: &str) -> ApiResult<Reply> {
    let found = db
        .json_row(
            "read the interaction",
            "SELECT nexus_interaction_json(i) || jsonb_build_object('participants', \
               (SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object('participantId', p.id, \
                  'type', p.kind, 'nickname', p.nickname, 'joinedAt', nexus_ts(p.joined_at), \
                  'leftAt', nexus_ts(p.left_at))) ORDER BY p.joined_at), '[]') \
                FROM participants p WHERE p.interaction_id = i.id)) \
             FROM interactions i WHERE tenant_id = $1 AND id = $2",
            &[ParameterValue::Int64(tenant), uuid(uuid_or_404(id, "interaction")?)],
        )?
        .ok_or_else(|| ApiError::not_found(format!("no interaction has the id `{id}`")))?;
    Reply::ok(found)
}

/// The whole transcript, every visibility (this API is for the back office), in pages.
fn transcript(
    db: &Db,
    tenant: i64,
    id: &str,
    params: &BTreeMap<String, String>,
) -> ApiResult<Reply> {
    interaction(db, tenant, id)?;
    let limit = page_size(params)?;
    let after = match decode_cursor(params, 1)? {
        Some(parts) => parts[0]
            .parse::<i64>()
            .map_err(|_| ApiError::bad_parameter("`cursor` is not one this API gave"))?,
        None => 0,
    };
    let messages = db.json_rows(
        "read the transcript",
        "SELECT nexus_message_json(m) FROM messages m \
         WHERE tenant_id = $1 AND interaction_id = $2 AND position > $3::bigint ORDER BY position LIMIT $4",
        &[
            ParameterValue::Int64(tenant),
            uuid(id),
            ParameterValue::Int64(after),
            ParameterValue::Int64(limit + 1),
        ],
    )?;
    Reply::ok(page(messages, limit, |last| json!([last["position"]])))
}

/// Messages whose text matches `q` (all of its words), sent between `from` and `to`, newest
/// first.
fn search(db: &Db, tenant: i64, params: &BTreeMap<String, String>) -> ApiResult<Reply> {
    let words = params
        .get("q")
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    let timestamp = |name: &str| {
        params
            .get(name)
            .map(|text| nexus_guest::timestamp::parse(name, text))
            .transpose()
    };
    let (from, to) = (timestamp("from")?, timestamp("to")?);
    if words.is_none() && from.is_none() && to.is_none() {
        return Err(ApiError::bad_parameter(
            "search by `q`, `from` or `to` (or several)",
        ));
    }
    if words.as_ref().is_some_and(|q| q.chars().count() > 500) {
        return Err(ApiError::bad_parameter("`q` is at most 500 characters"));
    }
    let limit = page_size(params)?;
    let cursor = decode_cursor(params, 3)?;
    let (after_time, after_interaction, after_position) = match cursor {
        Some(parts) => (
            Some(parts[0].clone()),
            Some(parts[1].clone()),
            Some(parts[2].clone()),
        ),
        None => (None, None, None),
    };
    let found = db.json_rows(
        "search the messages",
        "SELECT nexus_message_json(m) || jsonb_build_object('interactionId', m.interaction_id) \
         FROM messages m \
         WHERE m.tenant_id = $1 \
           AND ($2::text IS NULL OR to_tsvector('simple', coalesce(m.text, '')) @@ plainto_tsquery('simple', $2::text)) \
           AND ($3::text IS NULL OR m.created_at >= $3::text::timestamptz) \
           AND ($4::text IS NULL OR m.created_at < $4::text::timestamptz) \
           AND ($5::text IS NULL OR (m.created_at, m.interaction_id, m.position) \
                < ($5::text::timestamptz, $6::text::uuid, $7::text::integer)) \
         ORDER BY m.created_at DESC, m.interaction_id DESC, m.position DESC LIMIT $8",
        &[
            ParameterValue::Int64(tenant),
            opt_text(words),
            opt_text(from),
            opt_text(to),
            opt_text(after_time),
            opt_text(after_interaction),
            opt_text(after_position),
            ParameterValue::Int64(limit + 1),
        ],
    )?;
    Reply::ok(page(found, limit, |last| {
        json!([last["timestamp"], last["interactionId"], last["position"]])
    }))
}
