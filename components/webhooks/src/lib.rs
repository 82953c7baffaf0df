//! Delivers interaction webhooks (`/nexus/v3/webhooks/...`), one durable job per delivery.
//!
//! The events are queued in PostgreSQL by the change that causes them (`nexus_emit_webhook`,
//! `migrations/0004_jobs_and_webhooks.sql`), one job per endpoint, ordered per endpoint and
//! interaction. The nexus host's job worker claims each and hands it here:
//!
//! - `POST jobs/run` (the admin token), body `{id, kind, attempt, payload: {endpointId, body}}`:
//!   POSTs `body` to the endpoint, signed the Standard Webhooks way (`webhook-id` is the job's
//!   id, the same on every attempt, so a receiver can drop repeats) and with
//!   `X-Hub-Signature: sha1=...`; answers 200 when the endpoint took it (2xx), 422 when retrying
//!   cannot help (the endpoint was deleted or disabled), 503 otherwise, which the host retries on
//!   its published schedule.
//! - `POST jobs/sweep` (the admin token): the same for up to 20 due jobs, claimed and finished
//!   here, for Spin, which runs no background work: call it from a cron.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::spin::{
    Db, Reply, now_unix, path_segments, reference_id, require_admin, respond, uuid,
};
use nexus_guest::webhook_signature;
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

/// How much of an endpoint's failing answer is kept for the jobs API.
const MAX_ANSWER_CHARS: usize = 300;

#[http_component]
async fn webhooks(req: Request) -> impl IntoResponse {
    let reference = reference_id(&req);
    let result = serve(&req).await;
    respond(&reference, result)
}

async fn serve(req: &Request) -> ApiResult<Reply> {
    require_admin(req)?;
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["jobs", "run"]) => run(req).await,
        (Method::Post, ["jobs", "sweep"]) => Reply::ok(
            nexus_guest::sweep::sweep("webhooks", |job| async move {
                let id = job["id"].as_str().unwrap_or_default().to_owned();
                deliver(&id, &job["payload"]).await
            })
            .await?,
        ),
        _ => Err(ApiError::not_found("no such operation")),
    }
}

/// An endpoint as a delivery needs it.
struct Endpoint {
    url: String,
    /// The current secret first, then the previous one while it is still honoured.
    secrets: Vec<String>,
}

fn endpoint(id: &str) -> ApiResult<Option<Endpoint>> {
    if !nexus_guest::spin::is_uuid(id) {
        return Ok(None);
    }
    // The connection is given back before the delivery, which may take seconds.
    let db = Db::open()?;
    let rows = db.rows(
        "load the webhook endpoint",
        "SELECT url, secret, CASE WHEN previous_secret_expires_at > now() THEN previous_secret END AS previous \
         FROM webhook_endpoints WHERE id = $1 AND enabled",
        &[uuid(id)],
    )?;
    Ok(rows.rows().next().and_then(|row| {
        let url = row.get::<String>("url")?;
        let mut secrets = vec![row.get::<String>("secret")?];
        secrets.extend(row.get::<String>("previous"));
        Some(Endpoint { url, secrets })
    }))
}

async fn run(req: &Request) -> ApiResult<Reply> {
    let job: Value = serde_json::from_slice(req.body())
        .map_err(|err| ApiError::bad_parameter(format!("a job is JSON: {err}")))?;
    let Some(id) = job["id"].as_str() else {
        return Err(ApiError::new(
            422,
            Code::InvalidParameter,
            "a webhook job has an id",
        ));
    };
    deliver(id, &job["payload"]).await
}

/// Delivers the webhook of job `id`.
async fn deliver(id: &str, payload: &Value) -> ApiResult<Reply> {
    let Some(endpoint_id) = payload["endpointId"].as_str() else {
        return Err(ApiError::new(
            422,
            Code::InvalidParameter,
            "a webhook job's payload has an endpointId",
        ));
    };
    let Some(endpoint) = endpoint(endpoint_id)? else {
        return Err(ApiError::new(
            422,
            Code::NotFound,
            "the endpoint was deleted or disabled; the delivery is not retried",
        ));
    };
    let body = serde_json::to_vec(&payload["body"])
        .map_err(|err| ApiError::internal("encode the webhook", err))?;
    let timestamp = now_unix();
    let secrets: Vec<&str> = endpoint.secrets.iter().map(String::as_str).collect();
    let signature = webhook_signature::standard_header(&secrets, id, timestamp, &body)
        .map_err(|err| ApiError::internal("sign the webhook", err))?;
    let hub = webhook_signature::hub(secrets[0], &body)
        .map_err(|err| ApiError::internal("sign the webhook", err))?;
    let request = Request::builder()
        .method(Method::Post)
        .uri(endpoint.url.as_str())
        .header("content-type", "application/json")
        // A length, not chunks: many receivers (and their signature checks) want the body whole.
        .header("content-length", body.len().to_string())
        .header("user-agent", "nexus-webhooks/0.1")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("x-hub-signature", hub)
        .body(body)
        .build();
    match spin_sdk::http::send::<_, Response>(request).await {
        Ok(response) if (200..300).contains(response.status()) => {
            Reply::ok(json!({ "delivered": true, "status": *response.status() }))
        }
        Ok(response) => {
            let answer: String = String::from_utf8_lossy(response.body())
                .chars()
                .take(MAX_ANSWER_CHARS)
                .collect();
            // The queue retries no sooner than the endpoint asked (`Retry-After`).
            Err(ApiError::new(
                503,
                Code::Unavailable,
                format!("the endpoint answered {}: {answer}", response.status()),
            )
            .retry_after(nexus_guest::spin::retry_after(&response)))
        }
        Err(err) => Err(ApiError::new(
            503,
            Code::Unavailable,
            format!("cannot reach the endpoint: {err}"),
        )),
    }
}
