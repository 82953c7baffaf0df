//! Inside a component: requests and responses in the API envelope, and the component's
//! PostgreSQL (the source of truth) and Redis (live state, under the application's key prefix).

use std::collections::BTreeMap;

use serde_json::Value;
use spin_sdk::http::{Request, Response};
use spin_sdk::pg4::{self, ParameterValue};
use spin_sdk::redis::{self, RedisParameter, RedisResult};
use spin_sdk::variables;

use crate::api::{ApiError, ApiResult, Code, success_body};

/// A successful answer: the HTTP status and the envelope's `data`.
pub struct Reply {
    pub status: u16,
    pub data: Value,
}

impl Reply {
    pub fn ok(data: Value) -> ApiResult<Reply> {
        Ok(Reply { status: 200, data })
    }

    pub fn created(data: Value) -> ApiResult<Reply> {
        Ok(Reply { status: 201, data })
    }
}

/// The envelope of `result` as an HTTP response.
pub fn respond(reference_id: &str, result: ApiResult<Reply>) -> Response {
    let (status, body, retry_after) = match result {
        Ok(reply) => (reply.status, success_body(reference_id, reply.data), None),
        Err(err) => (
            err.http_status,
            err.body(reference_id),
            err.retry_after_seconds,
        ),
    };
    let mut response = Response::builder();
    response
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store");
    if let Some(seconds) = retry_after {
        response.header("retry-after", seconds.to_string());
    }
    response.body(body.to_string()).build()
}

/// The request headers a web page may send to an API that [`allow_any_origin`] opens.
const CORS_ALLOWED_HEADERS: &str =
    "content-type, x-api-key, x-nexus-client-key, x-ccid, x-request-id";

/// Lets a script of any origin read `response` (CORS). For the APIs a web page calls with
/// credentials of its own in headers, never cookies: the Chat API's widget key is public by
/// design (it only starts chats), and a session's client token is the page's own.
pub fn allow_any_origin(response: &mut Response) {
    response.set_header("access-control-allow-origin", "*");
    response.set_header("access-control-expose-headers", "retry-after, x-request-id");
}

/// The answer to a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) on an API
/// that [`allow_any_origin`] opens: any origin, `methods`, the headers of
/// [`CORS_ALLOWED_HEADERS`], cached by the browser for ten minutes.
pub fn preflight(methods: &str) -> Response {
    let mut response = Response::builder()
        .status(204)
        .header("access-control-allow-methods", methods)
        .header("access-control-allow-headers", CORS_ALLOWED_HEADERS)
        .header("access-control-max-age", "600")
        .build();
    allow_any_origin(&mut response);
    response
}

/// The far side's `Retry-After` (seconds, or an HTTP date) in seconds from now.
pub fn retry_after(response: &Response) -> Option<u64> {
    let value = response.header("retry-after")?.as_str()?;
    crate::jobs::retry_after_seconds(value, now_unix())
}

/// Requires the application's admin token as `Authorization: Bearer <admin_token>`, compared in
/// constant time; while the variable `admin_token` is empty, everything is refused (503).
pub fn require_admin(req: &Request) -> ApiResult<()> {
    let expected = variable("admin_token")?;
    if expected.is_empty() {
        return Err(ApiError::new(
            503,
            Code::NotConfigured,
            "this API is disabled: set the application variable admin_token (SPIN_VARIABLE_ADMIN_TOKEN)",
        ));
    }
    let presented = header(req, "authorization")
        .and_then(|value| value.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
        .ok_or_else(|| {
            ApiError::new(
                401,
                Code::AuthenticationRequired,
                "send the admin token as `Authorization: Bearer <token>`",
            )
        })?;
    if !crate::secrets::secrets_equal(&presented, &expected) {
        return Err(ApiError::new(
            401,
            Code::AuthenticationRequired,
            "the admin token is not valid",
        ));
    }
    Ok(())
}

pub fn header(req: &Request, name: &str) -> Option<String> {
    req.header(name)
        .and_then(|value| value.as_str())
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The path below the component's route, as segments (`/sessions/x/messages` → `["sessions",
/// "x", "messages"]`).
pub fn path_segments(req: &Request) -> Vec<String> {
    header(req, "spin-path-info")
        .unwrap_or_default()
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The id the caller quotes to support: the host's request id (nexus sets `x-request-id`), or a
/// fresh one under a host that sets none.
pub fn reference_id(req: &Request) -> String {
    header(req, "x-request-id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The query string's parameters, decoded (the last of a repeated one); a 400 when one holds
/// U+0000.
pub fn query(req: &Request) -> ApiResult<BTreeMap<String, String>> {
    Ok(crate::body::form_pairs(req.query().as_bytes())?
        .into_iter()
        .collect())
}

/// The origin the caller reached us at (`https://host`), for absolute URIs in responses.
pub fn origin(req: &Request) -> String {
    header(req, "spin-full-url")
        .and_then(|url| {
            let scheme_end = url.find("://")? + 3;
            let host_end = url[scheme_end..]
                .find('/')
                .map_or(url.len(), |i| scheme_end + i);
            Some(url[..host_end].to_owned())
        })
        .unwrap_or_default()
}

/// An application variable the component needs.
pub fn variable(name: &str) -> ApiResult<String> {
    variables::get(name).map_err(|err| ApiError::internal(&format!("variable {name}"), err))
}

/// Whether the operator lets the outbound URLs tenants give reach non-public addresses: the
/// application variable `allow_private_outbound` (see [`crate::private_address`]). A component
/// that does not declare it keeps the guard on.
pub fn private_outbound_allowed() -> bool {
    variables::get(crate::private_address::SWITCH)
        .is_ok_and(|value| crate::private_address::allowed(&value))
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

/// A text parameter.
pub fn text(value: impl Into<String>) -> ParameterValue {
    ParameterValue::Str(value.into())
}

/// A text parameter, or NULL.
pub fn opt_text(value: Option<impl Into<String>>) -> ParameterValue {
    value.map_or(ParameterValue::DbNull, |value| {
        ParameterValue::Str(value.into())
    })
}

/// A UUID parameter (given as text; PostgreSQL refuses one that is not a UUID).
pub fn uuid(value: impl Into<String>) -> ParameterValue {
    ParameterValue::Uuid(value.into())
}

pub fn jsonb(value: &Value) -> ParameterValue {
    ParameterValue::Jsonb(value.to_string().into_bytes())
}

/// Whether `text` is a UUID, so that a malformed id in a path is a 404, not a database error.
pub fn is_uuid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok()
}

/// The component's connection to PostgreSQL (`postgres_address`).
pub struct Db {
    conn: pg4::Connection,
}

/// The SQLSTATE of a database error, if the database said one.
fn sqlstate(err: &pg4::PgError) -> Option<&str> {
    match err {
        pg4::PgError::QueryFailed(pg4::QueryError::DbError(db)) => Some(db.code.as_str()),
        _ => None,
    }
}

/// A database error as the caller should see it: what the caller did wrong (a duplicate, a value
/// out of range) is theirs to fix; anything else is ours, logged and answered with a 503.
fn db_error(context: &str, err: pg4::PgError) -> ApiError {
    match sqlstate(&err) {
        Some("23505") => ApiError::conflict(format!("{context}: it already exists")),
        Some("23503") => ApiError::conflict(format!("{context}: it is still referenced")),
        // Bad values the component's own checks should have caught; should one slip through,
        // it is still the caller's to fix, never a 503 that says "try again".
        Some(
            "23514" | "22P02" | "22001" | "23502" | "22007" | "22008" | "22009" | "22003" | "22021"
            | "22P05" | "2201B",
        ) => ApiError::bad_parameter(format!("{context}: a value is not acceptable")),
        _ => ApiError::internal(context, err),
    }
}

impl Db {
    pub fn open() -> ApiResult<Db> {
        let address = variable("postgres_address")?;
        let conn = pg4::Connection::open(&address)
            .map_err(|err| ApiError::internal("the database is unreachable", err))?;
        Ok(Db { conn })
    }

    pub fn rows(
        &self,
        context: &str,
        sql: &str,
        params: &[ParameterValue],
    ) -> ApiResult<pg4::RowSet> {
        self.conn
            .query(sql, params)
            .map_err(|err| db_error(context, err))
    }

    /// The first column of each row, a `jsonb` the query built (the database renders the API's
    /// objects, so that every path that returns one returns the same bytes).
    pub fn json_rows(
        &self,
        context: &str,
        sql: &str,
        params: &[ParameterValue],
    ) -> ApiResult<Vec<Value>> {
        let rows = self.rows(context, sql, params)?;
        rows.rows
            .iter()
            .map(|row| match row.first() {
                Some(pg4::DbValue::Jsonb(bytes)) => {
                    serde_json::from_slice(bytes).map_err(|err| ApiError::internal(context, err))
                }
                Some(pg4::DbValue::DbNull) => Ok(Value::Null),
                other => Err(ApiError::internal(context, format!("not jsonb: {other:?}"))),
            })
            .collect()
    }

    pub fn json_row(
        &self,
        context: &str,
        sql: &str,
        params: &[ParameterValue],
    ) -> ApiResult<Option<Value>> {
        Ok(self.json_rows(context, sql, params)?.into_iter().next())
    }

    pub fn execute(&self, context: &str, sql: &str, params: &[ParameterValue]) -> ApiResult<u64> {
        self.conn
            .execute(sql, params)
            .map_err(|err| db_error(context, err))
    }

    /// Runs `work` in a transaction, committed if it returns `Ok` and rolled back otherwise.
    /// (Should the component die in between, the host discards the connection's state before
    /// anyone else uses it.)
    pub fn transaction<T>(&self, work: impl FnOnce(&Db) -> ApiResult<T>) -> ApiResult<T> {
        self.execute("begin", "BEGIN", &[])?;
        match work(self) {
            Ok(value) => {
                self.execute("commit", "COMMIT", &[])?;
                Ok(value)
            }
            Err(err) => {
                let _ = self.execute("rollback", "ROLLBACK", &[]);
                Err(err)
            }
        }
    }
}

/// The component's connection to Redis (`redis_address`), with every key under the application's
/// prefix (`redis_key_prefix`), so that several deployments (or tests) share one Redis.
pub struct Live {
    conn: redis::Connection,
    prefix: String,
}

impl Live {
    pub fn open() -> ApiResult<Live> {
        let address = variable("redis_address")?;
        let prefix = variable("redis_key_prefix")?;
        let conn = redis::Connection::open(&address)
            .map_err(|err| ApiError::internal("live state is unreachable", err))?;
        Ok(Live { conn, prefix })
    }

    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    pub fn cmd(&self, command: &str, args: &[RedisParameter]) -> ApiResult<Vec<RedisResult>> {
        self.conn
            .execute(command, args)
            .map_err(|err| ApiError::internal(&format!("live state ({command})"), err))
    }

    /// One command, with Redis's own error: for a caller that tells errors apart.
    pub fn raw_cmd(
        &self,
        command: &str,
        args: &[RedisParameter],
    ) -> Result<Vec<RedisResult>, spin_sdk::redis::Error> {
        self.conn.execute(command, args)
    }

    pub fn publish(&self, channel: &str, payload: &[u8]) -> ApiResult<()> {
        self.conn
            .publish(channel, payload)
            .map_err(|err| ApiError::internal("live state (publish)", err))
    }
}

/// A Redis argument from text.
pub fn arg(value: impl Into<String>) -> RedisParameter {
    RedisParameter::Binary(value.into().into_bytes())
}

pub fn int_arg(value: i64) -> RedisParameter {
    RedisParameter::Int64(value)
}

/// A Redis reply as text.
pub fn reply_text(result: &RedisResult) -> Option<String> {
    match result {
        RedisResult::Binary(bytes) => String::from_utf8(bytes.clone()).ok(),
        RedisResult::Status(text) => Some(text.clone()),
        RedisResult::Int64(n) => Some(n.to_string()),
        RedisResult::Nil => None,
    }
}

/// Logs a failure that the request survives (the work is committed; what failed is repaired
/// later), on stderr, which the host tags with the component and request.
pub fn log_error(context: &str, err: &ApiError) {
    eprintln!("{context}: {err:?}");
}
