//! The example component: one route per capability the host offers, so that a newcomer (and the
//! end-to-end tests) can see each one work through plain HTTP, under `nexus up` or `spin up`.
//!
//! Mounted at `/example/...`:
//! - `GET  /example/variables`          the component's variables, resolved by the host
//! - `PUT  /example/redis/{key}`        stores the body in Redis (with a one-hour expiry)
//! - `GET  /example/redis/{key}`        reads it back, and counts the reads
//! - `POST /example/notes`              inserts the body as a note in PostgreSQL
//! - `GET  /example/notes`              lists the notes
//! - `GET  /example/fetch?url=...`      fetches a URL through outbound HTTP
// The export macros of spin-sdk and wit-bindgen generate the unsafe ABI glue of the component.
#![allow(unsafe_code)]
use serde::Serialize;
use serde_json::json;
use spin_sdk::http::{self, IntoResponse, Method, Request, Response};
use spin_sdk::{http_component, pg4, redis, variables};

/// How long a value stored through `/example/redis` lives, in seconds.
const REDIS_TTL_SECONDS: i64 = 3600;

/// Serves `/example/...`.
#[http_component]
async fn example(req: Request) -> anyhow::Result<impl IntoResponse> {
    // The host (nexus or Spin) says which part of the path is below the component's route.
    let path_info = req
        .header("spin-path-info")
        .and_then(|h| h.as_str())
        .unwrap_or("/")
        .to_owned();
    let segments: Vec<&str> = path_info.trim_matches('/').split('/').collect();
    Ok(match (req.method(), segments.as_slice()) {
        (Method::Get, [""]) => json_response(
            200,
            &json!({ "routes": [
                "GET /example/variables", "PUT /example/redis/{key}", "GET /example/redis/{key}",
                "POST /example/notes", "GET /example/notes", "GET /example/fetch?url=..."
            ]}),
        ),
        (Method::Get, ["variables"]) => show_variables(),
        (Method::Put, ["redis", key]) => redis_put(key, req.body()),
        (Method::Get, ["redis", key]) => redis_get(key),
        (Method::Post, ["notes"]) => add_note(req.body()),
        (Method::Get, ["notes"]) => list_notes(),
        (Method::Get, ["fetch"]) => fetch(req.query()).await,
        _ => error_response(404, "no-such-route", &format!("no route for {path_info}")),
    })
}

fn show_variables() -> Response {
    let greeting = variables::get("greeting");
    let missing = variables::get("not_declared");
    match greeting {
        Ok(greeting) => json_response(
            200,
            &json!({ "greeting": greeting, "not_declared": format!("{missing:?}") }),
        ),
        Err(err) => failure(500, "variable", format!("{err:?}")),
    }
}

fn redis_connection() -> Result<redis::Connection, Response> {
    let address = variables::get("redis_address")
        .map_err(|err| failure(500, "variable", format!("{err:?}")))?;
    redis::Connection::open(&address).map_err(|err| failure(502, "redis-open", format!("{err:?}")))
}

fn redis_put(key: &str, value: &[u8]) -> Response {
    let conn = match redis_connection() {
        Ok(conn) => conn,
        Err(resp) => return resp,
    };
    let key = format!("example:{key}");
    let stored = conn.set(&key, value).and_then(|()| {
        conn.execute(
            "EXPIRE",
            &[
                redis::RedisParameter::Binary(key.clone().into_bytes()),
                redis::RedisParameter::Int64(REDIS_TTL_SECONDS),
            ],
        )
    });
    match stored {
        Ok(_) => json_response(200, &json!({ "stored": key, "bytes": value.len() })),
        Err(err) => failure(502, "redis", format!("{err:?}")),
    }
}

fn redis_get(key: &str) -> Response {
    let conn = match redis_connection() {
        Ok(conn) => conn,
        Err(resp) => return resp,
    };
    let key = format!("example:{key}");
    let reads = match conn.incr(&format!("{key}:reads")) {
        Ok(reads) => reads,
        Err(err) => return failure(502, "redis", format!("{err:?}")),
    };
    match conn.get(&key) {
        Ok(Some(value)) => json_response(
            200,
            &json!({ "key": key, "value": String::from_utf8_lossy(&value), "reads": reads }),
        ),
        Ok(None) => error_response(404, "no-such-key", &key),
        Err(err) => failure(502, "redis", format!("{err:?}")),
    }
}

fn pg_connection() -> Result<pg4::Connection, Response> {
    let address = variables::get("postgres_address")
        .map_err(|err| failure(500, "variable", format!("{err:?}")))?;
    pg4::Connection::open(&address).map_err(|err| failure(502, "postgres-open", format!("{err:?}")))
}

fn add_note(body: &[u8]) -> Response {
    let Ok(text) = std::str::from_utf8(body) else {
        return error_response(400, "not-utf8", "a note is UTF-8 text");
    };
    let conn = match pg_connection() {
        Ok(conn) => conn,
        Err(resp) => return resp,
    };
    let inserted = conn.query(
        "INSERT INTO example_notes (body) VALUES ($1) RETURNING id",
        &[pg4::ParameterValue::Str(text.to_owned())],
    );
    match inserted {
        Ok(rows) => {
            let id = rows.rows().next().and_then(|row| row.get::<i64>("id"));
            json_response(201, &json!({ "id": id }))
        }
        Err(err) => failure(502, "postgres", format!("{err:?}")),
    }
}

#[derive(Serialize)]
struct Note {
    id: i64,
    body: String,
    created_at: String,
}

fn list_notes() -> Response {
    let conn = match pg_connection() {
        Ok(conn) => conn,
        Err(resp) => return resp,
    };
    match conn.query(
        "SELECT id, body, created_at::text AS created_at FROM example_notes ORDER BY id",
        &[],
    ) {
        Ok(rows) => {
            let notes: Vec<Note> = rows
                .rows()
                .map(|row| Note {
                    id: row.get::<i64>("id").unwrap_or_default(),
                    body: row.get::<String>("body").unwrap_or_default(),
                    created_at: row.get::<String>("created_at").unwrap_or_default(),
                })
                .collect();
            json_response(200, &json!({ "notes": notes }))
        }
        Err(err) => failure(502, "postgres", format!("{err:?}")),
    }
}

async fn fetch(query: &str) -> Response {
    let Some(url) = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("url="))
        .map(percent_decode)
    else {
        return error_response(400, "missing-url", "pass ?url=...");
    };
    let request = Request::new(Method::Get, url.as_str());
    match http::send::<_, Response>(request).await {
        Ok(resp) => json_response(
            200,
            &json!({
                "url": url,
                "status": resp.status(),
                "body": String::from_utf8_lossy(resp.body()),
            }),
        ),
        // The WASI error code names what went wrong (`HttpRequestDenied`, `ConnectionRefused`).
        Err(http::SendError::Http(code)) => failure(502, "outbound-http", format!("{code:?}")),
        Err(err) => failure(502, "outbound-http", format!("RequestFailed: {err}")),
    }
}

/// Decodes the `%XX` escapes of a query-string value (and `+` as a space).
fn percent_decode(value: &str) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'%' => {
                let hex: Vec<u8> = bytes.clone().take(2).collect();
                match std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(decoded) if hex.len() == 2 => {
                        out.push(decoded);
                        bytes.nth(1);
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(status: u16, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

/// A failure of something the component called: the whole error goes to the component's log
/// (stderr, which the host tags with the request id); the caller gets the code and the error's
/// kind (`HttpRequestDenied`, `ConnectionFailed`: the first word of `detail`), never the
/// runtime's own text or a backtrace.
fn failure(status: u16, code: &str, detail: String) -> Response {
    eprintln!("{code}: {detail}");
    // `ErrorCode::HttpRequestDenied`, `Other("...")`: the variant's name.
    let path: String = detail
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let kind = path
        .trim_end_matches(':')
        .rsplit("::")
        .next()
        .unwrap_or_default();
    error_response(status, code, &format!("the {code} call failed: {kind}"))
}

fn error_response(status: u16, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}
