//! Contact lists (`/nexus/v3/outbound/lists`): created with a name and the calling code of the
//! numbers written without one, then filled by CSV uploads read as they arrive (a million lines
//! take no more memory than a thousand). Each good line adds a contact; each bad one, and each
//! duplicate (of a client id, phone number or email address, in the file or in the list), is
//! reported by its line number with the reason and never stops the rest. Uploads add to a list;
//! uploading a file again after a failure adds what the first attempt did not (the rest are
//! duplicates).

use std::collections::{BTreeMap, HashMap};

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::body::Fields;
use nexus_guest::contacts::{Columns, Contact};
use nexus_guest::spin::{Db, Reply, header, is_uuid, jsonb, opt_text, text, uuid};
use nexus_guest::streamed_body::BodyReader;
use serde_json::{Value, json};
use spin_sdk::http::Request;
use spin_sdk::pg4::ParameterValue;

use crate::{MAX_BODY_BYTES, MAX_REPORTED_ERRORS, page_size};

const MAX_NAME_CHARS: usize = 200;
/// Contacts written per statement of an upload.
const UPLOAD_BATCH: usize = 1_000;
/// The CSV reader's buffer: the most of the body held at once, with the pending batch.
const READ_BUFFER: usize = 64 * 1024;

/// The list `id` of the tenant's, or a 404.
fn list_json(db: &Db, tenant: i64, id: &str) -> ApiResult<Value> {
    let missing = || ApiError::not_found(format!("no contact list has the id `{id}`"));
    if !is_uuid(id) {
        return Err(missing());
    }
    db.json_row(
        "read the contact list",
        "SELECT nexus_contact_list_json(l) FROM contact_lists l WHERE tenant_id = $1 AND id = $2",
        &[ParameterValue::Int64(tenant), uuid(id)],
    )?
    .ok_or_else(missing)
}

/// `GET /lists/{id}`.
pub fn get(db: &Db, tenant: i64, id: &str) -> ApiResult<Reply> {
    Reply::ok(list_json(db, tenant, id)?)
}

/// `POST /lists` (`{name, defaultCallingCode}`): a new, empty list.
pub fn create(db: &Db, tenant: i64, req: &Request) -> ApiResult<Reply> {
    let fields = Fields::parse(
        header(req, "content-type").as_deref(),
        req.body(),
        MAX_BODY_BYTES,
    )?;
    let name = fields
        .bounded_text("name", MAX_NAME_CHARS)?
        .ok_or_else(|| ApiError::bad_parameter("`name` is required"))?;
    let calling_code = fields
        .text("defaultCallingCode")
        .map(|code| nexus_guest::contacts::calling_code(&code))
        .transpose()
        .map_err(ApiError::bad_parameter)?;
    let created = db
        .json_row(
            "create the contact list",
            "INSERT INTO contact_lists AS l (tenant_id, name, default_calling_code) \
             VALUES ($1, $2, $3) RETURNING nexus_contact_list_json(l)",
            &[
                ParameterValue::Int64(tenant),
                text(name),
                opt_text(calling_code),
            ],
        )?
        .ok_or_else(|| ApiError::internal("create the contact list", "no row"))?;
    Reply::created(created)
}

/// `GET /lists`: the tenant's lists, oldest first, a page at a time (`cursor`: the last id
/// seen).
pub fn all(db: &Db, tenant: i64, params: &BTreeMap<String, String>) -> ApiResult<Reply> {
    let limit = page_size(params)?;
    let after = crate::uuid_cursor(params)?;
    let mut items = db.json_rows(
        "list the contact lists",
        "SELECT nexus_contact_list_json(l) FROM contact_lists l \
         WHERE tenant_id = $1 \
           AND ($2::text IS NULL OR (created_at, id) > \
                (SELECT created_at, id FROM contact_lists \
                  WHERE tenant_id = $1 AND id::text = $2)) \
         ORDER BY created_at, id LIMIT $3",
        &[
            ParameterValue::Int64(tenant),
            opt_text(after),
            ParameterValue::Int64(limit + 1),
        ],
    )?;
    let next = crate::next_cursor(&mut items, limit, "id");
    Reply::ok(json!({ "lists": items, "nextCursor": next }))
}

/// `DELETE /lists/{id}`: the list and its contacts.
pub fn delete(db: &Db, tenant: i64, id: &str) -> ApiResult<Reply> {
    let missing = || ApiError::not_found(format!("no contact list has the id `{id}`"));
    if !is_uuid(id) {
        return Err(missing());
    }
    let used = db.json_row(
        "find the list's campaigns",
        "SELECT to_jsonb(count(*)) FROM campaigns WHERE tenant_id = $1 AND list_id = $2",
        &[ParameterValue::Int64(tenant), uuid(id)],
    )?;
    if used.as_ref().and_then(Value::as_i64).unwrap_or(0) > 0 {
        return Err(ApiError::conflict(
            "campaigns use this list: delete them first (a campaign keeps its list for its records)",
        ));
    }
    // A campaign made meanwhile keeps the list (the foreign key refuses), and is named.
    let deleted = db.execute(
        "delete the contact list",
        "DELETE FROM contact_lists l WHERE tenant_id = $1 AND id = $2 \
           AND NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.list_id = l.id)",
        &[ParameterValue::Int64(tenant), uuid(id)],
    )?;
    if deleted == 0 {
        return Err(missing());
    }
    Reply::ok(json!({ "deleted": id }))
}

/// `GET /lists/{id}/contacts`: the list's contacts in upload order, a page at a time
/// (`cursor`), or the one with `clientId`.
pub fn contacts(
    db: &Db,
    tenant: i64,
    id: &str,
    params: &BTreeMap<String, String>,
) -> ApiResult<Reply> {
    list_json(db, tenant, id)?;
    let limit = page_size(params)?;
    let after = crate::numeric_cursor(params)?;
    let rows = db.rows(
        "list the contacts",
        "SELECT id::text AS id, nexus_list_contact_json(c)::text AS contact FROM list_contacts c \
         WHERE list_id = $1 AND id > $2 AND ($3::text IS NULL OR client_id = $3) \
         ORDER BY id LIMIT $4",
        &[
            uuid(id),
            ParameterValue::Int64(after),
            opt_text(
                params
                    .get("clientId")
                    .map(|client| client.trim().to_owned()),
            ),
            ParameterValue::Int64(limit + 1),
        ],
    )?;
    let mut items = Vec::new();
    let mut ids = Vec::new();
    for row in rows.rows() {
        let contact = row
            .get::<String>("contact")
            .and_then(|json| serde_json::from_str::<Value>(&json).ok())
            .ok_or_else(|| ApiError::internal("list the contacts", "a contact"))?;
        ids.push(row.get::<String>("id").unwrap_or_default());
        items.push(contact);
    }
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(0));
    let next = more.then(|| ids.get(items.len().saturating_sub(1)).cloned());
    Reply::ok(json!({ "contacts": items, "nextCursor": next.flatten() }))
}

/// `DELETE /lists/{id}/contacts?clientId=...`: one contact.
pub fn delete_contact(
    db: &Db,
    tenant: i64,
    id: &str,
    params: &BTreeMap<String, String>,
) -> ApiResult<Reply> {
    list_json(db, tenant, id)?;
    let client_id = params
        .get("clientId")
        .map(|client| client.trim().to_owned())
        .filter(|client| !client.is_empty())
        .ok_or_else(|| ApiError::bad_parameter("`clientId` is required"))?;
    let deleted = db.transaction(|db| {
        let deleted = db.execute(
            "delete the contact",
            "DELETE FROM list_contacts WHERE list_id = $1 AND client_id = $2",
            &[uuid(id), text(client_id.as_str())],
        )?;
        db.execute(
            "count the contacts",
            "UPDATE contact_lists SET contact_count = contact_count - $2, updated_at = now() \
             WHERE id = $1",
            &[uuid(id), ParameterValue::Int64(deleted as i64)],
        )?;
        Ok(deleted)
    })?;
    if deleted == 0 {
        return Err(ApiError::not_found(format!(
            "the list has no contact with the clientId `{client_id}`"
        )));
    }
    Reply::ok(json!({ "deleted": client_id }))
}

/// What became of an upload.
#[derive(Default)]
struct Uploaded {
    added: u64,
    failed: u64,
    errors: Vec<(u64, String)>,
}

impl Uploaded {
    fn fail(&mut self, line: u64, reason: impl Into<String>) {
        self.failed += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push((line, reason.into()));
        }
    }
}

/// The first line of the pending batch with each client id, phone number and email address: a
/// later line of the batch with one of them is a duplicate (the list's unique indexes find the
/// repeats of earlier batches).
#[derive(Default)]
struct Batch {
    rows: Vec<Value>,
    client_ids: HashMap<String, u64>,
    phones: HashMap<String, u64>,
    emails: HashMap<String, u64>,
}

impl Batch {
    /// Adds `contact` from `line`, or says which line of the batch had its client id, phone
    /// number or email address.
    fn push(&mut self, contact: Contact, line: u64) -> Result<(), String> {
        if let Some(first) = self.client_ids.get(&contact.client_id) {
            return Err(format!("the same clientId as line {first}"));
        }
        if let Some(first) = contact.phone.as_ref().and_then(|p| self.phones.get(p)) {
            return Err(format!("the same phone number as line {first}"));
        }
        if let Some(first) = contact.email.as_ref().and_then(|e| self.emails.get(e)) {
            return Err(format!("the same email address as line {first}"));
        }
        self.client_ids.insert(contact.client_id.clone(), line);
        if let Some(phone) = &contact.phone {
            self.phones.insert(phone.clone(), line);
        }
        if let Some(email) = &contact.email {
            self.emails.insert(email.clone(), line);
        }
        self.rows.push(json!({
            "line": line,
            "client_id": contact.client_id,
            "phone": contact.phone,
            "email": contact.email,
            "time_zone": contact.time_zone.as_ref().map(|(zone, _)| zone),
            "time_zone_source": contact.time_zone.as_ref().map(|(_, source)| source.name()),
            "variables": contact.variables,
        }));
        Ok(())
    }

    /// The rows, leaving the batch empty.
    fn take(&mut self) -> Vec<Value> {
        self.client_ids.clear();
        self.phones.clear();
        self.emails.clear();
        std::mem::take(&mut self.rows)
    }
}

/// `POST /lists/{id}/contacts` (`text/csv`, UTF-8, a header line): adds the file's contacts,
/// read as the body arrives.
pub fn upload(
    db: &Db,
    tenant: i64,
    id: &str,
    req: &Request,
    body: &mut BodyReader,
) -> ApiResult<Reply> {
    let list = list_json(db, tenant, id)?;
    require_utf8_csv(req, "a contact list")?;
    let calling_code = list["defaultCallingCode"].as_str().map(str::to_owned);
    let (counting, lines) =
        nexus_guest::csv_lines::count_lines(nexus_guest::csv_lines::SkipBom::new(&mut *body));
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .buffer_capacity(READ_BUFFER)
        .from_reader(counting);
    let header_line = match reader.byte_headers() {
        Ok(header_line) => header_line.clone(),
        Err(err) => return Err(read_failure(&err, "the header line")),
    };
    if header_line.is_empty() || header_line.iter().all(<[u8]>::is_empty) {
        return Err(ApiError::bad_parameter("the file has no header line"));
    }
    let columns = Columns::of(&header_line).map_err(ApiError::bad_parameter)?;
    let mut uploaded = Uploaded::default();
    let mut batch = Batch::default();
    let cut = nexus_guest::csv_lines::each_record(&mut reader, &lines, |line, record| {
        let contact = record.and_then(|record| columns.contact(record, calling_code.as_deref()));
        match contact.and_then(|contact| batch.push(contact, line)) {
            Ok(()) if batch.rows.len() == UPLOAD_BATCH => {
                write(db, id, &columns, &mut batch, &mut uploaded)
            }
            Ok(()) => Ok(()),
            Err(why) => {
                uploaded.fail(line, why);
                Ok(())
            }
        }
    })?;
    if let Some((line, io)) = cut {
        // What was read is kept; the answer says how far it got, and the same file sent again
        // adds the rest.
        write(db, id, &columns, &mut batch, &mut uploaded)?;
        let mut failure = nexus_guest::streamed_body::failure(&io);
        failure.message = format!(
            "{} (line {line}; {} contacts were added before it)",
            failure.message, uploaded.added
        );
        return Err(failure);
    }
    write(db, id, &columns, &mut batch, &mut uploaded)?;
    uploaded.errors.sort_by_key(|(line, _)| *line);
    Reply::ok(json!({
        "added": uploaded.added,
        "failed": uploaded.failed,
        "errors": uploaded
            .errors
            .iter()
            .map(|(line, reason)| json!({ "line": line, "reason": reason }))
            .collect::<Vec<_>>(),
        "list": list_json(db, tenant, id)?,
    }))
}

/// Refuses (415) a body that is not `text/csv` in UTF-8 (`what` names it in the answer).
pub(crate) fn require_utf8_csv(req: &Request, what: &str) -> ApiResult<()> {
    let content_type = header(req, "content-type").unwrap_or_default();
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let charset = parts
        .filter_map(|part| part.trim().split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim().trim_matches('"').to_ascii_lowercase());
    if media_type != "text/csv" || charset.is_some_and(|charset| charset != "utf-8") {
        return Err(ApiError::new(
            415,
            Code::InvalidParameter,
            format!("{what} is a CSV file in UTF-8: send it as text/csv"),
        ));
    }
    Ok(())
}

/// The answer to a CSV error before the first line: the body's failure (413 past the size
/// limit), or a 400 naming what is wrong.
pub(crate) fn read_failure(err: &csv::Error, what: &str) -> ApiError {
    match err.kind() {
        csv::ErrorKind::Io(io) => nexus_guest::streamed_body::failure(io),
        _ => ApiError::bad_parameter(format!("{what}: {err}")),
    }
}

/// Adds the pending contacts and counts them on the list, with the variables they brought. A
/// contact with the client id, phone number or email address of one already in the list (from
/// an earlier upload, or an earlier batch of this one) fails as a duplicate, naming which: the
/// database's unique indexes decide, so that an upload holds no more than one batch in memory
/// however long it is, and two uploads at once cannot both add the same person.
fn write(
    db: &Db,
    list: &str,
    columns: &Columns,
    batch: &mut Batch,
    uploaded: &mut Uploaded,
) -> ApiResult<()> {
    if batch.rows.is_empty() {
        return Ok(());
    }
    let rows = db.rows(
        "add the contacts",
        WRITE_BATCH,
        &[
            uuid(list),
            jsonb(&Value::Array(batch.take())),
            ParameterValue::ArrayStr(columns.variable_names().into_iter().map(Some).collect()),
        ],
    )?;
    for row in rows.rows() {
        match row.get::<i64>("line") {
            None => uploaded.added += row.get::<i64>("added").unwrap_or(0) as u64,
            Some(line) => uploaded.fail(line as u64, row.get::<String>("reason").unwrap_or_else(
                || "a contact with the same clientId, phone number or email address is already in the list".to_owned(),
            )),
        }
    }
    Ok(())
}

/// Adds a batch of contacts (`$2`, a JSON array, none repeating another) to list `$1`, and the
/// variable names `$3` it has not seen. Answers a row with the count added (`line` null), then
/// one per refused line with the reason: the contact of the list's it repeats.
const WRITE_BATCH: &str = "\
WITH input AS ( \
  SELECT * FROM jsonb_to_recordset($2::jsonb) AS r(line bigint, client_id text, phone text, \
    email text, time_zone text, time_zone_source text, variables jsonb)), \
added AS ( \
  INSERT INTO list_contacts (list_id, client_id, phone, email, time_zone, time_zone_source, variables) \
  SELECT $1::uuid, client_id, phone, email, time_zone, time_zone_source, variables FROM input \
  ON CONFLICT DO NOTHING RETURNING client_id), \
counted AS ( \
  UPDATE contact_lists SET contact_count = contact_count + (SELECT count(*) FROM added), \
    variables = variables || ARRAY(SELECT v FROM unnest($3::text[]) WITH ORDINALITY AS n(v, i) \
      WHERE v <> ALL (variables) ORDER BY i), \
    updated_at = now() \
  WHERE id = $1::uuid) \
SELECT NULL::bigint AS line, (SELECT count(*) FROM added) AS added, NULL::text AS reason \
UNION ALL \
SELECT i.line, NULL, \
  CASE WHEN c.client_id = i.client_id THEN 'the same clientId' \
       WHEN c.phone = i.phone THEN 'the same phone number' \
       ELSE 'the same email address' END \
  || ' as the contact `' || c.client_id || '`, already in the list' \
FROM input i \
LEFT JOIN LATERAL ( \
  SELECT c.client_id, c.phone, c.email FROM list_contacts c \
   WHERE c.list_id = $1::uuid \
     AND (c.client_id = i.client_id OR c.phone = i.phone OR c.email = i.email) \
   LIMIT 1) c ON true \
WHERE i.client_id NOT IN (SELECT client_id FROM added) \
ORDER BY 1 NULLS FIRST";
