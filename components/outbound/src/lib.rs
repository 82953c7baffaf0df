//! The outbound API (`/nexus/v3/outbound/...`), for a tenant's campaign tools: its suppression
//! list, the addresses its campaigns may not message, and its message templates.
//!
//! A suppression names a phone number (E.164) or an email address and holds for every sender
//! of the tenant, or for one channel (`channelId`), until it is deleted or `expiresAt` passes.
//! Texters make them with STOP (source `keyword`, which their START lifts: the sms component),
//! and mail recipients by unsubscribing or complaining through the email provider (source
//! `unsubscribe`: the email component); the tenant makes them here, one at a time (`api`) or
//! from a CSV file (`import`). Adding one that exists (the same address and scope) replaces its
//! reason and expiry; one a recipient made stays theirs.
//!
//! Templates are the campaigns' messages: a body (and for email a subject) with placeholders
//! (`{{first_name}}`, `{{first_name|there}}`; `nexus_guest::template`), checked when saved, and
//! rendered for one record as a dry run, with what the SMS costs in segments.
//!
//! Contact lists (`lists`) are the people a campaign messages, uploaded as CSV files that are
//! read as they arrive.
//!
//! It takes an API key with the `outbound` permission; every query is bound to the key's
//! tenant. The OpenAPI description is `openapi/outbound.json`.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::body::Fields;
use nexus_guest::spin::{
    Db, Reply, header, jsonb, opt_text, path_segments, query, reference_id, respond, text, uuid,
};
use nexus_guest::streamed_body::BodyReader;
use nexus_guest::template::Template;
use serde_json::{Value, json};
use spin_sdk::http::{IncomingRequest, Method, Request, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::pg4::ParameterValue;

mod campaigns;
mod lists;

// A long-poll of a campaign's events parks under the nexus host (`campaigns::events`).
nexus_guest::export_parking!();

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;
const MAX_BODY_BYTES: usize = 16 * 1024;
/// A template's body and subject: up to 10,000 characters each, in UTF-8.
const MAX_TEMPLATE_BODY_BYTES: usize = 128 * 1024;
/// The largest body read whole (every operation's but the uploads, which are read as they
/// arrive, and each operation checks its own limit after).
const MAX_WHOLE_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Rows written per statement of an import.
const IMPORT_BATCH: usize = 500;
/// The CSV reader's buffer for an import.
const IMPORT_READ_BUFFER: usize = 64 * 1024;
/// The bad lines an import reports one by one (it counts them all).
const MAX_REPORTED_ERRORS: usize = 1000;
const MAX_REASON_CHARS: usize = 500;
const DEFAULT_REASON: &str = "added by the tenant";
const DEFAULT_IMPORT_REASON: &str = "imported by the tenant";

/// The upsert of suppressions (`$2`: a JSON array of rows) by address and scope, for tenant `$1`;
/// `$3` is their source, but one a recipient made stays `keyword` or `unsubscribe`. Answers each
/// suppression and whether it is new.
const UPSERT: &str = "INSERT INTO suppressions AS s (tenant_id, address, channel_id, reason, source, expires_at) \
     SELECT $1::bigint, r.address, r.channel_id::uuid, r.reason, $3::text, r.expires_at::timestamptz \
     FROM jsonb_to_recordset($2::jsonb) AS r(address text, channel_id text, reason text, expires_at text) \
     ON CONFLICT (tenant_id, address, coalesce(channel_id, '00000000-0000-0000-0000-000000000000'::uuid)) \
     DO UPDATE SET reason = EXCLUDED.reason, expires_at = EXCLUDED.expires_at, \
       source = CASE WHEN s.source IN ('keyword', 'unsubscribe') THEN s.source \
         ELSE EXCLUDED.source END \
     RETURNING nexus_suppression_json(s)::text AS suppression, (xmax = 0) AS inserted";

/// Serves `/nexus/v3/outbound/...`. It takes the request as it arrives: a contact list's upload
/// is read from the body stream as the client sends it, and a campaign's results are written as
/// CSV as they are read; every other body is read whole, up to the largest an operation takes.
#[http_component]
async fn outbound(incoming: IncomingRequest, out: ResponseOutparam) {
    let (mut req, mut body) = nexus_guest::streamed_body::split(incoming);
    let reference = reference_id(&req);
    let path = path_segments(&req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, ["metrics"]) => {
            let response = match campaigns::metrics(&req) {
                Ok(text) => spin_sdk::http::Response::builder()
                    .status(200)
                    .header("content-type", "text/plain; version=0.0.4")
                    .body(text)
                    .build(),
                Err(err) => respond(&reference, Err(err)),
            };
            nexus_guest::streamed_body::send(out, response).await;
        }
        // The results as CSV, written as they are read: any number of records.
        (Method::Get, ["campaigns", id, "records.csv"]) => {
            match campaigns::Export::prepare(&req, id) {
                Ok(export) => export.write(out),
                Err(err) => {
                    nexus_guest::streamed_body::send(out, respond(&reference, Err(err))).await
                }
            }
        }
        _ => {
            let response = respond(&reference, serve(&mut req, &mut body));
            // A long-poll of a campaign's events may have parked: then nothing is sent.
            nexus_guest::parking::respond(out, response).await;
        }
    }
}

fn serve(req: &mut Request, body: &mut BodyReader) -> ApiResult<Reply> {
    let db = Db::open()?;
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    if let (Method::Post, ["campaigns", "pump"]) = (req.method(), segments.as_slice()) {
        return campaigns::pump(&db, req);
    }
    let tenant = nexus_guest::api_key::authorize(req, &db, "outbound")?;
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["lists", id, "contacts"]) => {
            return lists::upload(&db, tenant, id, req, body);
        }
        (Method::Post, ["suppressions", "import"]) => return import(&db, tenant, req, body),
        _ => {}
    }
    if let (Method::Get, ["campaigns", id, "events"]) = (req.method(), segments.as_slice()) {
        // A long-poll: it lets go of the database while it waits.
        let params = query(req)?;
        return campaigns::events(db, tenant, id, &params);
    }
    *req.body_mut() = body.read_all(MAX_WHOLE_BODY_BYTES)?;
    let req = &*req;
    let method = req.method();
    match (method, segments.as_slice()) {
        (Method::Get, ["campaigns"]) => campaigns::all(&db, tenant, &query(req)?),
        (Method::Post, ["campaigns"]) => campaigns::create(&db, tenant, req),
        (Method::Get, ["campaigns", id]) => campaigns::get(&db, tenant, id),
        (Method::Delete, ["campaigns", id]) => campaigns::delete(&db, tenant, id),
        (
            Method::Post,
            [
                "campaigns",
                id,
                action @ ("start" | "pause" | "resume" | "cancel"),
            ],
        ) => campaigns::act(&db, tenant, id, action),
        (Method::Get, ["campaigns", id, "records"]) => {
            campaigns::records(&db, tenant, id, &query(req)?)
        }
        (Method::Get, ["lists"]) => lists::all(&db, tenant, &query(req)?),
        (Method::Post, ["lists"]) => lists::create(&db, tenant, req),
        (Method::Get, ["lists", id]) => lists::get(&db, tenant, id),
        (Method::Delete, ["lists", id]) => lists::delete(&db, tenant, id),
        (Method::Get, ["lists", id, "contacts"]) => lists::contacts(&db, tenant, id, &query(req)?),
        (Method::Delete, ["lists", id, "contacts"]) => {
            lists::delete_contact(&db, tenant, id, &query(req)?)
        }
        (Method::Get, ["suppressions"]) => list(&db, tenant, &query(req)?),
        (Method::Post, ["suppressions"]) => add(&db, tenant, req),
        (Method::Get, ["suppressions", "check"]) => check(&db, tenant, &query(req)?),
        (Method::Get, ["suppressions", id]) => Reply::ok(one(&db, tenant, id)?),
        (Method::Delete, ["suppressions", id]) => delete(&db, tenant, id),
        (Method::Get, ["templates"]) => templates(&db, tenant),
        (Method::Put, ["templates", name]) => save_template(&db, tenant, name, req),
        (Method::Get, ["templates", name]) => Reply::ok(template_json(&stored(&db, tenant, name)?)),
        (Method::Delete, ["templates", name]) => delete_template(&db, tenant, name),
        (Method::Post, ["templates", name, "render"]) => render(&db, tenant, name, req),
        _ => Err(ApiError::new(
            404,
            Code::NotFound,
            format!(
                "no such operation: {method} /nexus/v3/outbound/{}",
                path.join("/")
            ),
        )),
    }
}

/// `text` as a suppression's address, or a 400 saying why not.
fn address(text: &str) -> ApiResult<String> {
    nexus_guest::consent::address(text).map_err(ApiError::bad_parameter)
}

/// The tenant's channel ids, to check the ones a caller names.
fn channels(db: &Db, tenant: i64) -> ApiResult<HashSet<String>> {
    let rows = db.rows(
        "read the channels",
        "SELECT id::text AS id FROM channels WHERE tenant_id = $1",
        &[ParameterValue::Int64(tenant)],
    )?;
    Ok(rows
        .rows()
        .filter_map(|row| row.get::<String>("id"))
        .collect())
}

/// `id` as a channel of the tenant's (lower case), or why not.
fn channel_of(channels: &HashSet<String>, id: &str) -> Result<String, String> {
    let id = id.trim().to_ascii_lowercase();
    if channels.contains(&id) {
        Ok(id)
    } else {
        Err(format!("`{id}` is not a channel of this tenant"))
    }
}

fn page_size(params: &BTreeMap<String, String>) -> ApiResult<i64> {
    nexus_guest::body::int_param(params, "limit", 1, MAX_PAGE, DEFAULT_PAGE)
}

fn bad_cursor() -> ApiError {
    ApiError::bad_parameter("`cursor` is not one this API gave")
}

/// A `cursor` that is the last row number seen (0 without one).
fn numeric_cursor(params: &BTreeMap<String, String>) -> ApiResult<i64> {
    match params.get("cursor") {
        None => Ok(0),
        Some(cursor) => cursor
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(bad_cursor),
    }
}

/// A `cursor` that is the last id seen (a UUID), lower case.
fn uuid_cursor(params: &BTreeMap<String, String>) -> ApiResult<Option<String>> {
    match params.get("cursor") {
        None => Ok(None),
        Some(cursor) if nexus_guest::spin::is_uuid(cursor) => Ok(Some(cursor.to_ascii_lowercase())),
        Some(_) => Err(bad_cursor()),
    }
}

/// Cuts a page fetched with one item more than `limit`, and answers the cursor of the next page
/// (the last item's `key`) when there is one.
fn next_cursor(items: &mut Vec<Value>, limit: i64, key: &str) -> Option<String> {
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(0));
    if !more {
        return None;
    }
    items.last().map(|last| match &last[key] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

/// The suppressions, oldest first, filtered by `address`, `channelId` (or `tenant` for the
/// tenant-wide ones), `source` and `active`, a page at a time (`cursor`: the last id seen).
fn list(db: &Db, tenant: i64, params: &BTreeMap<String, String>) -> ApiResult<Reply> {
    let limit = page_size(params)?;
    let after = crate::numeric_cursor(params)?;
    let address = params.get("address").map(|a| address(a)).transpose()?;
    let scope = match params.get("channelId").map(String::as_str) {
        None => None,
        Some("tenant") => Some("tenant".to_owned()),
        Some(id) => Some(channel_of(&channels(db, tenant)?, id).map_err(ApiError::bad_parameter)?),
    };
    let source = match params.get("source").map(String::as_str) {
        None => None,
        Some(source @ ("keyword" | "unsubscribe" | "api" | "import")) => Some(source.to_owned()),
        Some(other) => {
            return Err(ApiError::bad_parameter(format!(
                "`source` is keyword, unsubscribe, api or import, not `{other}`"
            )));
        }
    };
    let active = match params.get("active").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::bad_parameter("`active` is true or false")),
    };
    let mut items = db.json_rows(
        "list the suppressions",
        "SELECT nexus_suppression_json(s) FROM suppressions s \
         WHERE tenant_id = $1 AND id > $2 \
           AND ($3::text IS NULL OR address = $3) \
           AND ($4::text IS NULL OR ($4 = 'tenant' AND channel_id IS NULL) \
                OR channel_id::text = $4) \
           AND ($5::text IS NULL OR source = $5) \
           AND ($6::boolean IS NULL OR (expires_at IS NULL OR expires_at > now()) = $6) \
         ORDER BY id LIMIT $7",
        &[
            ParameterValue::Int64(tenant),
            ParameterValue::Int64(after),
            opt_text(address),
            opt_text(scope),
            opt_text(source),
            active.map_or(ParameterValue::DbNull, ParameterValue::Boolean),
            ParameterValue::Int64(limit + 1),
        ],
    )?;
    let next = next_cursor(&mut items, limit, "id");
    Reply::ok(json!({ "suppressions": items, "nextCursor": next }))
}

/// One suppression of the tenant's, by id.
fn one(db: &Db, tenant: i64, id: &str) -> ApiResult<Value> {
    let missing = || ApiError::not_found(format!("no suppression has the id `{id}`"));
    let id = id.parse::<i64>().map_err(|_| missing())?;
    db.json_row(
        "read the suppression",
        "SELECT nexus_suppression_json(s) FROM suppressions s WHERE tenant_id = $1 AND id = $2",
        &[ParameterValue::Int64(tenant), ParameterValue::Int64(id)],
    )?
    .ok_or_else(missing)
}

/// Adds a suppression, or replaces the reason and expiry of the one with the same address and
/// scope: 201 when it is new, 200 when it was there.
fn add(db: &Db, tenant: i64, req: &Request) -> ApiResult<Reply> {
    let fields = Fields::parse(
        header(req, "content-type").as_deref(),
        req.body(),
        MAX_BODY_BYTES,
    )?;
    let address = address(&fields.required_text("address")?)?;
    let channel_id = match fields.text("channelId") {
        None => None,
        Some(id) => Some(channel_of(&channels(db, tenant)?, &id).map_err(ApiError::bad_parameter)?),
    };
    let reason = fields
        .bounded_text("reason", MAX_REASON_CHARS)?
        .unwrap_or_else(|| DEFAULT_REASON.to_owned());
    let expires_at = fields.timestamp("expiresAt")?;
    let row = json!([{
        "address": address,
        "channel_id": channel_id,
        "reason": reason,
        "expires_at": expires_at,
    }]);
    let rows = db.rows(
        "add the suppression",
        UPSERT,
        &[ParameterValue::Int64(tenant), jsonb(&row), text("api")],
    )?;
    let Some(written) = rows.rows().next() else {
        return Err(ApiError::internal("add the suppression", "no row"));
    };
    let suppression: Value = written
        .get::<String>("suppression")
        .and_then(|json| serde_json::from_str(&json).ok())
        .ok_or_else(|| ApiError::internal("add the suppression", "no suppression"))?;
    if written.get::<bool>("inserted") == Some(true) {
        Reply::created(suppression)
    } else {
        Reply::ok(suppression)
    }
}

fn delete(db: &Db, tenant: i64, id: &str) -> ApiResult<Reply> {
    let missing = || ApiError::not_found(format!("no suppression has the id `{id}`"));
    let number = id.parse::<i64>().map_err(|_| missing())?;
    let deleted = db.execute(
        "delete the suppression",
        "DELETE FROM suppressions WHERE tenant_id = $1 AND id = $2",
        &[ParameterValue::Int64(tenant), ParameterValue::Int64(number)],
    )?;
    if deleted == 0 {
        return Err(missing());
    }
    Reply::ok(json!({ "deleted": id }))
}

/// Whether `address` may not be messaged from `channelId` (or, without one, from any sender of
/// the tenant's: only the tenant-wide suppressions count then), and by which suppressions.
fn check(db: &Db, tenant: i64, params: &BTreeMap<String, String>) -> ApiResult<Reply> {
    let address = address(
        params
            .get("address")
            .ok_or_else(|| ApiError::bad_parameter("`address` is required"))?,
    )?;
    let channel_id = match params.get("channelId") {
        None => None,
        Some(id) => Some(channel_of(&channels(db, tenant)?, id).map_err(ApiError::bad_parameter)?),
    };
    let by = db.json_rows(
        "check the address",
        "SELECT nexus_suppression_json(s) FROM suppressions s \
         WHERE tenant_id = $1 AND address = $2 \
           AND (channel_id IS NULL OR channel_id = $3::uuid) \
           AND (expires_at IS NULL OR expires_at > now()) ORDER BY id",
        &[
            ParameterValue::Int64(tenant),
            text(address.as_str()),
            channel_id.map_or(ParameterValue::DbNull, uuid),
        ],
    )?;
    Reply::ok(json!({ "address": address, "suppressed": !by.is_empty(), "suppressions": by }))
}

/// What became of an import.
#[derive(Default)]
struct Imported {
    added: u64,
    updated: u64,
    failed: u64,
    errors: Vec<Value>,
}

impl Imported {
    fn fail(&mut self, line: u64, reason: impl Into<String>) {
        self.failed += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors
                .push(json!({ "line": line, "reason": reason.into() }));
        }
    }
}

/// The columns of an import, by position.
struct Columns {
    address: usize,
    channel_id: Option<usize>,
    reason: Option<usize>,
    expires_at: Option<usize>,
    count: usize,
}

impl Columns {
    /// From the header line: `address` required, `channelId`, `reason`, `expiresAt` optional,
    /// nothing else.
    fn of(header: &csv::ByteRecord) -> ApiResult<Columns> {
        let mut at = HashMap::new();
        for (index, name) in header.iter().enumerate() {
            let name = std::str::from_utf8(name)
                .map_err(|_| ApiError::bad_parameter("the header line is not UTF-8"))?
                .trim();
            if !["address", "channelId", "reason", "expiresAt"].contains(&name) {
                return Err(ApiError::bad_parameter(format!(
                    "the column `{name}` is not one of address, channelId, reason, expiresAt"
                )));
            }
            if at.insert(name.to_owned(), index).is_some() {
                return Err(ApiError::bad_parameter(format!(
                    "the column `{name}` comes twice"
                )));
            }
        }
        Ok(Columns {
            address: *at.get("address").ok_or_else(|| {
                ApiError::bad_parameter("the header line has no `address` column")
            })?,
            channel_id: at.get("channelId").copied(),
            reason: at.get("reason").copied(),
            expires_at: at.get("expiresAt").copied(),
            count: header.len(),
        })
    }
}

/// Imports a CSV file (`text/csv`, UTF-8, a header line naming the columns), read as it
/// arrives: each good line adds or replaces a suppression (source `import`); each bad one is
/// reported by its line number with the reason, and never stops the rest. A line with the
/// address and scope of an earlier line is a bad one: within a batch a map finds the earlier
/// line, across batches the suppression the import wrote (`import_id`, `import_line`).
fn import(db: &Db, tenant: i64, req: &Request, body: &mut BodyReader) -> ApiResult<Reply> {
    lists::require_utf8_csv(req, "an import")?;
    let (counting, lines) =
        nexus_guest::csv_lines::count_lines(nexus_guest::csv_lines::SkipBom::new(&mut *body));
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .buffer_capacity(IMPORT_READ_BUFFER)
        .from_reader(counting);
    let columns = match reader.byte_headers() {
        Ok(header_line) => Columns::of(header_line)?,
        Err(err) => return Err(lists::read_failure(&err, "the header line")),
    };
    let channels = channels(db, tenant)?;
    let mut import = Import {
        id: nexus_guest::secrets::new_id(),
        tenant,
        ..Import::default()
    };
    let cut =
        nexus_guest::csv_lines::each_record(&mut reader, &lines, |line, record| {
            match record.and_then(|record| import_row(record, &columns, &channels)) {
                Ok(row) => import.push(db, line, row),
                Err(why) => {
                    import.done.fail(line, why);
                    Ok(())
                }
            }
        })?;
    if let Some((line, io)) = cut {
        // What was read is kept; sending the same file again imports it whole.
        import.write(db)?;
        let mut failure = nexus_guest::streamed_body::failure(&io);
        failure.message = format!(
            "{} (line {line}; {} suppressions were added and {} replaced before it)",
            failure.message, import.done.added, import.done.updated
        );
        return Err(failure);
    }
    import.write(db)?;
    let mut done = import.done;
    done.errors.sort_by_key(|error| error["line"].as_u64());
    Reply::ok(json!({
        "added": done.added,
        "updated": done.updated,
        "failed": done.failed,
        "errors": done.errors,
    }))
}

/// An import under way: its pending batch, and what became of the lines so far.
#[derive(Default)]
struct Import {
    /// Marks the suppressions it writes, so that a later batch knows an earlier line's.
    id: String,
    tenant: i64,
    /// The pending rows, each with its line.
    batch: Vec<Value>,
    /// The line of each pending row's address and scope.
    in_batch: HashMap<(String, Option<String>), u64>,
    done: Imported,
}

impl Import {
    /// Adds a good line's row, writing the batch when it is full.
    fn push(&mut self, db: &Db, line: u64, row: ImportRow) -> ApiResult<()> {
        let (address, channel_id, reason, expires_at) = row;
        let key = (address, channel_id);
        if let Some(first) = self.in_batch.get(&key) {
            self.done.fail(
                line,
                format!("the same address and channel as line {first}"),
            );
            return Ok(());
        }
        self.batch.push(json!({
            "line": line, "address": key.0, "channel_id": key.1, "reason": reason,
            "expires_at": expires_at,
        }));
        self.in_batch.insert(key, line);
        if self.batch.len() == IMPORT_BATCH {
            self.write(db)?;
        }
        Ok(())
    }

    /// Writes the pending rows, counting the new and the replaced, and failing those whose
    /// address and scope an earlier batch of this import wrote.
    fn write(&mut self, db: &Db) -> ApiResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.in_batch.clear();
        let rows = db.rows(
            "import the suppressions",
            IMPORT_UPSERT,
            &[
                ParameterValue::Int64(self.tenant),
                jsonb(&Value::Array(std::mem::take(&mut self.batch))),
                uuid(self.id.as_str()),
            ],
        )?;
        for row in rows.rows() {
            match (row.get::<i64>("line"), row.get::<i64>("earlier")) {
                (Some(line), Some(earlier)) => self.done.fail(
                    line.unsigned_abs(),
                    format!("the same address and channel as line {earlier}"),
                ),
                _ if row.get::<bool>("inserted") == Some(true) => self.done.added += 1,
                _ => self.done.updated += 1,
            }
        }
        Ok(())
    }
}

/// A good line of an import: its address, channel, reason and expiry.
type ImportRow = (String, Option<String>, String, Option<String>);

/// An import's batch (`$2`: rows with their `line`) written for tenant `$1` by import `$3`: a
/// row whose address and scope this import wrote before answers that line (`earlier`); the
/// others are upserted as [`UPSERT`] does, marked with the import and their line.
const IMPORT_UPSERT: &str = "WITH input AS ( \
       SELECT * FROM jsonb_to_recordset($2::jsonb) \
         AS r(line bigint, address text, channel_id text, reason text, expires_at text)), \
     earlier AS ( \
       SELECT i.line, s.import_line FROM input i JOIN suppressions s \
         ON s.tenant_id = $1 AND s.address = i.address \
        AND coalesce(s.channel_id, '00000000-0000-0000-0000-000000000000'::uuid) \
          = coalesce(i.channel_id::uuid, '00000000-0000-0000-0000-000000000000'::uuid) \
        AND s.import_id = $3::uuid), \
     written AS ( \
       INSERT INTO suppressions AS s (tenant_id, address, channel_id, reason, source, \
         expires_at, import_id, import_line) \
       SELECT $1::bigint, i.address, i.channel_id::uuid, i.reason, 'import', \
         i.expires_at::timestamptz, $3::uuid, i.line \
       FROM input i WHERE i.line NOT IN (SELECT line FROM earlier) \
       ON CONFLICT (tenant_id, address, \
         coalesce(channel_id, '00000000-0000-0000-0000-000000000000'::uuid)) \
       DO UPDATE SET reason = EXCLUDED.reason, expires_at = EXCLUDED.expires_at, \
         import_id = EXCLUDED.import_id, import_line = EXCLUDED.import_line, \
         source = CASE WHEN s.source IN ('keyword', 'unsubscribe') THEN s.source \
           ELSE EXCLUDED.source END \
       RETURNING (xmax = 0) AS inserted) \
     SELECT NULL::bigint AS line, NULL::bigint AS earlier, inserted FROM written \
     UNION ALL SELECT line, import_line, NULL FROM earlier";

/// One line of an import: address, channel, reason and expiry, or why it cannot be taken.
fn import_row(
    record: &csv::ByteRecord,
    columns: &Columns,
    channels: &HashSet<String>,
) -> Result<ImportRow, String> {
    if record.len() != columns.count {
        return Err(format!(
            "{} fields where the header has {}",
            record.len(),
            columns.count
        ));
    }
    let field = |index: Option<usize>| -> Result<Option<&str>, String> {
        let Some(index) = index else {
            return Ok(None);
        };
        let bytes = record.get(index).unwrap_or_default();
        let value = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
        if value.contains('\0') {
            return Err("a NUL character".to_owned());
        }
        let value = value.trim();
        Ok((!value.is_empty()).then_some(value))
    };
    let address = field(Some(columns.address))?.ok_or("no address")?;
    let address = nexus_guest::consent::address(address)?;
    let channel = field(columns.channel_id)?
        .map(|id| channel_of(channels, id))
        .transpose()?;
    let reason = match field(columns.reason)? {
        Some(reason) if reason.chars().count() > MAX_REASON_CHARS => {
            return Err(format!(
                "the reason is longer than {MAX_REASON_CHARS} characters"
            ));
        }
        Some(reason) => reason.to_owned(),
        None => DEFAULT_IMPORT_REASON.to_owned(),
    };
    let expires_at = field(columns.expires_at)?
        .map(|at| nexus_guest::timestamp::parse("expiresAt", at).map_err(|err| err.message))
        .transpose()?;
    Ok((address, channel, reason, expires_at))
}

/// A stored template.
struct StoredTemplate {
    name: String,
    channel: String,
    subject: Option<String>,
    body: String,
    created_at: String,
    updated_at: String,
}

/// A template name as the API takes it: a letter or digit, then letters, digits, `_`, `.`, `-`,
/// at most 64 in all.
fn template_name(name: &str) -> ApiResult<&str> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(name)
    } else {
        Err(ApiError::not_found(format!(
            "no template is named `{name}`"
        )))
    }
}

const TEMPLATE_COLUMNS: &str = "name, channel, subject, body, nexus_ts(created_at) AS created_at, \
     nexus_ts(updated_at) AS updated_at";

fn stored_of(row: &spin_sdk::pg4::Row) -> Option<StoredTemplate> {
    Some(StoredTemplate {
        name: row.get::<String>("name")?,
        channel: row.get::<String>("channel")?,
        subject: row.get::<String>("subject"),
        body: row.get::<String>("body")?,
        created_at: row.get::<String>("created_at")?,
        updated_at: row.get::<String>("updated_at")?,
    })
}

fn stored(db: &Db, tenant: i64, name: &str) -> ApiResult<StoredTemplate> {
    let name = template_name(name)?;
    let rows = db.rows(
        "read the template",
        &format!(
            "SELECT {TEMPLATE_COLUMNS} FROM outbound_templates WHERE tenant_id = $1 AND name = $2"
        ),
        &[ParameterValue::Int64(tenant), text(name)],
    )?;
    rows.rows()
        .next()
        .and_then(|row| stored_of(&row))
        .ok_or_else(|| ApiError::not_found(format!("no template is named `{name}`")))
}

/// A template as the API shows it, with the variables it names (a stored one always parses).
fn template_json(template: &StoredTemplate) -> Value {
    let mut variables: Vec<(String, bool)> = Vec::new();
    for text in template.subject.iter().chain([&template.body]) {
        if let Ok(parsed) = Template::parse(text) {
            for (name, has_default) in parsed.variables() {
                match variables.iter_mut().find(|(known, _)| *known == name) {
                    Some(entry) => entry.1 = entry.1 && has_default,
                    None => variables.push((name, has_default)),
                }
            }
        }
    }
    json!({
        "name": template.name,
        "channel": template.channel,
        "subject": template.subject,
        "body": template.body,
        "variables": variables
            .iter()
            .map(|(name, has_default)| json!({ "name": name, "required": !has_default }))
            .collect::<Vec<_>>(),
        "createdAt": template.created_at,
        "updatedAt": template.updated_at,
    })
}

/// The tenant's templates, by name (at most 1000).
fn templates(db: &Db, tenant: i64) -> ApiResult<Reply> {
    let rows = db.rows(
        "list the templates",
        &format!(
            "SELECT {TEMPLATE_COLUMNS} FROM outbound_templates WHERE tenant_id = $1 \
             ORDER BY name LIMIT 1000"
        ),
        &[ParameterValue::Int64(tenant)],
    )?;
    let templates: Vec<Value> = rows
        .rows()
        .filter_map(|row| stored_of(&row))
        .map(|template| template_json(&template))
        .collect();
    Reply::ok(json!({ "templates": templates }))
}

/// Saves template `name` (`{channel, body, subject}`, the subject for email only): 201 when it
/// is new, 200 when it replaced one. A body or subject that does not parse is refused, saying
/// where.
fn save_template(db: &Db, tenant: i64, name: &str, req: &Request) -> ApiResult<Reply> {
    let name = template_name(name).map_err(|_| {
        ApiError::bad_parameter(format!(
            "`{name}` is not a template name (a letter or digit, then letters, digits, _, . or -, at most 64)"
        ))
    })?;
    let fields = Fields::parse(
        header(req, "content-type").as_deref(),
        req.body(),
        MAX_TEMPLATE_BODY_BYTES,
    )?;
    let channel = fields.required_text("channel")?;
    if !matches!(channel.as_str(), "sms" | "email") {
        return Err(ApiError::bad_parameter(format!(
            "`channel` is sms or email, not `{channel}`"
        )));
    }
    let body = fields.required_text("body")?;
    Template::parse(&body).map_err(|why| ApiError::bad_parameter(format!("`body`: {why}")))?;
    let subject = fields.text("subject");
    match (&subject, channel.as_str()) {
        (Some(_), "sms") => {
            return Err(ApiError::bad_parameter("an sms template has no `subject`"));
        }
        (None, "email") => return Err(ApiError::bad_parameter("`subject` is required for email")),
        (Some(subject), _) => {
            Template::parse(subject)
                .map_err(|why| ApiError::bad_parameter(format!("`subject`: {why}")))?;
        }
        (None, _) => {}
    }
    let rows = db.rows(
        "save the template",
        &format!(
            "INSERT INTO outbound_templates AS t (tenant_id, name, channel, subject, body) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET channel = EXCLUDED.channel, \
               subject = EXCLUDED.subject, body = EXCLUDED.body, updated_at = now() \
             RETURNING {TEMPLATE_COLUMNS}, (xmax = 0) AS inserted"
        ),
        &[
            ParameterValue::Int64(tenant),
            text(name),
            text(channel.as_str()),
            opt_text(subject),
            text(body.as_str()),
        ],
    )?;
    let Some(row) = rows.rows().next() else {
        return Err(ApiError::internal("save the template", "no row"));
    };
    let saved =
        stored_of(&row).ok_or_else(|| ApiError::internal("save the template", "a column"))?;
    if row.get::<bool>("inserted") == Some(true) {
        Reply::created(template_json(&saved))
    } else {
        Reply::ok(template_json(&saved))
    }
}

fn delete_template(db: &Db, tenant: i64, name: &str) -> ApiResult<Reply> {
    let name = template_name(name)?;
    let deleted = db.execute(
        "delete the template",
        "DELETE FROM outbound_templates WHERE tenant_id = $1 AND name = $2",
        &[ParameterValue::Int64(tenant), text(name)],
    )?;
    if deleted == 0 {
        return Err(ApiError::not_found(format!(
            "no template is named `{name}`"
        )));
    }
    Reply::ok(json!({ "deleted": name }))
}

/// A dry run: template `name` rendered for one record (`{variables: {name: value}}`), with, for
/// SMS, its encoding and segments; a record it would fail for is a 400 with the reason.
fn render(db: &Db, tenant: i64, name: &str, req: &Request) -> ApiResult<Reply> {
    let template = stored(db, tenant, name)?;
    let fields = Fields::parse(
        header(req, "content-type").as_deref(),
        req.body(),
        MAX_BODY_BYTES,
    )?;
    let variables: BTreeMap<String, String> = fields
        .object("variables")?
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (key, text)
        })
        .collect();
    let lookup = |name: &str| variables.get(name).map(String::as_str);
    let rendered = |text: &str| {
        Template::parse(text)
            .and_then(|parsed| parsed.render(lookup))
            .map_err(ApiError::bad_parameter)
    };
    let body = rendered(&template.body)?;
    let subject = template.subject.as_deref().map(rendered).transpose()?;
    let mut answer = json!({ "channel": template.channel, "subject": subject, "body": body });
    if template.channel == "sms" {
        let (encoding, characters, segments) = nexus_guest::template::sms_segments(&body);
        answer["sms"] = json!({
            "encoding": encoding.name(),
            "length": characters,
            "segments": segments,
        });
    }
    Reply::ok(answer)
}
