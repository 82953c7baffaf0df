//! End to end: the durable job queue and the interaction webhooks it delivers. A tenant points a
//! webhook at a local receiver; a chat's events arrive there signed, in order, retried after
//! failures, dead-lettered when the schedule runs out, and replayed through the jobs API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use support::openapi::Api;
use support::{ADMIN_TOKEN, Backends, Nexus, Received, Receiver, admin_ok, client};

/// The retry schedule the tests run on: two retries, 200 and 400 ms after the failures; a
/// claim lasts 5 s (a killed host's job is run again after that).
fn manifest(receiver: &Receiver) -> String {
    manifest_without_jobs(receiver)
        + &support::manifest::jobs("webhooks", "/nexus/v3/webhooks/jobs/run", 5000)
}

/// The application as Spin would run it: no host job worker; the sweep endpoint does the work.
fn manifest_without_jobs(receiver: &Receiver) -> String {
    use support::manifest::{application, component, provisioning};
    [
        application("integrations"),
        provisioning(),
        component("chat", "/nexus/v3/chat/...", &[]),
        component(
            "webhooks",
            "/nexus/v3/webhooks/...",
            &[&format!("http://{}", receiver.addr)],
        ),
    ]
    .concat()
}

/// A tenant with a chat channel and key, and a webhook at the receiver: its id and secret.
async fn tenant_with_webhook(
    nexus: &Nexus,
    receiver: &Receiver,
    events: Value,
) -> (String, String, String) {
    admin_ok(
        nexus,
        "POST",
        "/tenants",
        Some(json!({"ccid": "acme", "name": "Acme"})),
    )
    .await;
    admin_ok(
        nexus,
        "POST",
        "/tenants/acme/channels",
        Some(json!({"type": "chat", "name": "web"})),
    )
    .await;
    let key = admin_ok(
        nexus,
        "POST",
        "/tenants/acme/api-keys",
        Some(json!({"name": "widget", "permission": "chat"})),
    )
    .await;
    let webhook = admin_ok(
        nexus,
        "POST",
        "/tenants/acme/webhooks",
        Some(json!({"url": format!("http://{}/hooks", receiver.addr), "events": events})),
    )
    .await;
    (
        key["key"].as_str().unwrap().to_owned(),
        webhook["id"].as_str().unwrap().to_owned(),
        webhook["secret"].as_str().unwrap().to_owned(),
    )
}

/// Starts a chat; its send-message URL and client token.
async fn chat(nexus: &Nexus, key: &str) -> (String, String) {
    let response = client()
        .post(nexus.url("/nexus/v3/chat/sessions"))
        .header("x-api-key", key)
        .json(&json!({"nickname": "Ada", "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["data"]["selfUri"].as_str().unwrap().to_owned(),
        body["data"]["clientToken"].as_str().unwrap().to_owned(),
    )
}

async fn post_as_customer(url: &str, token: &str, body: Value) {
    let response = client()
        .post(url)
        .header("x-nexus-client-key", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{url}");
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn key(secret: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap()
}

/// Checks both signatures the way a receiver would, from the secret it was given (and that the
/// body came with its length, as simple receivers need).
fn verify(request: &Received, secret: &str) {
    assert_eq!(
        header(request, "content-length"),
        request.body.len().to_string()
    );
    verify_standard(request, secret);
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key(secret)).unwrap();
    mac.update(&request.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header(request, "x-hub-signature"), format!("sha1={hex}"));
}

/// Checks that one of the Standard Webhooks signatures is made with `secret`.
fn verify_standard(request: &Received, secret: &str) {
    let key = key(secret);
    let id = header(request, "webhook-id");
    let timestamp = header(request, "webhook-timestamp");
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .abs_diff(timestamp.parse::<u64>().unwrap());
    assert!(age < 300, "the timestamp is {age} s off");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let signatures = header(request, "webhook-signature");
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "{signatures} lacks {expected}"
    );
}

fn event_type(request: &Received) -> String {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    body["type"].as_str().unwrap().to_owned()
}

both_backends!(
    a_chat_reaches_the_webhook_signed_and_in_order,
    failures_are_retried_then_dead_lettered_and_replayed,
    a_host_killed_mid_delivery_loses_nothing,
    without_the_host_worker_a_sweep_delivers_what_is_due,
    routing_events_reach_the_webhook,
    succeeded_jobs_are_deleted_after_their_retention,
);

async fn a_chat_reaches_the_webhook_signed_and_in_order(backends: Backends) {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&receiver), backends).await;
    let (key, _, secret) =
        tenant_with_webhook(&nexus, &receiver, json!(["STARTED", "MESSAGE", "FINISHED"])).await;
    let (uri, token) = chat(&nexus, &key).await;
    post_as_customer(
        &format!("{uri}/messages"),
        &token,
        json!({"type": "Text", "text": "where is my parcel?"}),
    )
    .await;
    post_as_customer(&format!("{uri}/end"), &token, json!({})).await;

    let requests = receiver.wait_for(3).await;
    let types: Vec<String> = requests.iter().map(event_type).collect();
    assert_eq!(types, ["STARTED", "MESSAGE", "FINISHED"]);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks");
        verify(request, &secret);
    }
    let message: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(message["data"]["text"], "where is my parcel?");
    let started: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(started["interactionId"], message["interactionId"]);
    assert_eq!(started["data"]["id"], started["interactionId"]);

    // Every delivery is a succeeded job, with one attempt (the worker records the last outcome
    // just after the receiver has the request: wait, bounded, for the record).
    let mut jobs = Value::Null;
    for _ in 0..200 {
        jobs = admin_ok(&nexus, "GET", "/tenants/acme/jobs?state=succeeded", None).await;
        if jobs["jobs"].as_array().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 3, "{jobs}");
    assert!(
        nexus
            .metrics()
            .await
            .contains(r#"nexus_jobs_total{component="webhooks",outcome="succeeded"} 3"#)
    );
}

async fn failures_are_retried_then_dead_lettered_and_replayed(backends: Backends) {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&receiver), backends).await;
    let (key, webhook, secret) = tenant_with_webhook(&nexus, &receiver, json!(["STARTED"])).await;

    // Two failures, then the receiver takes it: three attempts, one webhook-id.
    receiver.answer_next(&[503, 500]);
    chat(&nexus, &key).await;
    let requests = receiver.wait_for(3).await;
    let id = header(&requests[0], "webhook-id").to_owned();
    for request in &requests {
        assert_eq!(header(request, "webhook-id"), id, "one id on every attempt");
        verify(request, &secret);
    }
    // The receiver has the third request before the worker has recorded its outcome: wait
    // (bounded) for the record.
    let mut job = Value::Null;
    for _ in 0..200 {
        job = admin_ok(&nexus, "GET", &format!("/tenants/acme/jobs/{id}"), None).await;
        if job["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 3);
    let outcomes: Vec<&str> = job["attemptsMade"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "succeeded"]);

    // Three failures exhaust the schedule: the job is dead-lettered, and nothing more is sent.
    receiver.answer_next(&[500, 500, 500]);
    chat(&nexus, &key).await;
    receiver.wait_for(6).await;
    let mut dead = Value::Null;
    for _ in 0..100 {
        dead = admin_ok(&nexus, "GET", "/tenants/acme/jobs?state=dead", None).await;
        if !dead["jobs"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead_id = dead["jobs"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(dead["jobs"][0]["attempts"], 3);
    assert_eq!(dead["jobs"][0]["lastStatus"], 503);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 6, "a dead job is not retried");

    // Replayed, it is delivered with the same id.
    let replayed = admin_ok(
        &nexus,
        "POST",
        &format!("/tenants/acme/jobs/{dead_id}/replay"),
        None,
    )
    .await;
    assert_eq!(replayed["state"], "pending");
    let requests = receiver.wait_for(7).await;
    assert_eq!(header(&requests[6], "webhook-id"), dead_id);
    // A rotated secret: both sign while the old one is honoured (X-Hub-Signature, which has
    // room for one, uses the new one).
    let rotated = admin_ok(
        &nexus,
        "POST",
        &format!("/tenants/acme/webhooks/{webhook}/rotate-secret"),
        Some(json!({"overlapSeconds": 60})),
    )
    .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    chat(&nexus, &key).await;
    let requests = receiver.wait_for(8).await;
    verify(&requests[7], &new_secret);
    verify_standard(&requests[7], &secret);

    // A disabled endpoint is sent nothing.
    admin_ok(
        &nexus,
        "PATCH",
        &format!("/tenants/acme/webhooks/{webhook}"),
        Some(json!({"enabled": false})),
    )
    .await;
    chat(&nexus, &key).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 8);
}

async fn a_host_killed_mid_delivery_loses_nothing(backends: Backends) {
    let receiver = Receiver::start().await;
    let mut nexus = Nexus::start(&manifest(&receiver), backends).await;
    let (key, _, secret) = tenant_with_webhook(&nexus, &receiver, json!(["STARTED"])).await;
    // The first attempt never gets an answer: the host is killed while it waits.
    receiver.answer_next(&[0]);
    chat(&nexus, &key).await;
    let first = receiver.wait_for(1).await;
    nexus.restart().await;

    // The claim's lease (5 s here) runs out and the job is run again, with the same id.
    let requests = receiver.wait_for(2).await;
    assert_eq!(
        header(&requests[1], "webhook-id"),
        header(&first[0], "webhook-id")
    );
    verify(&requests[1], &secret);
    let id = header(&requests[1], "webhook-id").to_owned();
    let mut job = Value::Null;
    for _ in 0..100 {
        job = admin_ok(&nexus, "GET", &format!("/tenants/acme/jobs/{id}"), None).await;
        if job["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
}

/// Two hosts on one database claim jobs at once: every delivery is made once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_never_deliver_a_job_twice() {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&receiver), Backends::Real).await;
    let peer = nexus.peer().await;
    let (key, _, _) = tenant_with_webhook(&nexus, &receiver, json!(["STARTED", "MESSAGE"])).await;
    let chats = 10;
    let mut sends = Vec::new();
    for n in 0..chats {
        let host = if n % 2 == 0 { &nexus } else { &peer };
        let (uri, token) = chat(host, &key).await;
        sends.push(async move {
            for text in ["one", "two"] {
                post_as_customer(
                    &format!("{uri}/messages"),
                    &token,
                    json!({"type": "Text", "text": text}),
                )
                .await;
            }
        });
    }
    futures::future::join_all(sends).await;
    let requests = receiver.wait_for(chats * 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests_now = receiver.received();
    assert_eq!(requests_now.len(), requests.len(), "no delivery came twice");
    let mut ids: Vec<&str> = requests_now
        .iter()
        .map(|r| header(r, "webhook-id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), chats * 3);
    // Each chat's events came in order: STARTED, then its two messages.
    let mut by_chat: std::collections::HashMap<String, Vec<String>> = Default::default();
    for request in &requests_now {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let text = body["data"]["text"]
            .as_str()
            .unwrap_or("STARTED")
            .to_owned();
        by_chat
            .entry(body["interactionId"].as_str().unwrap().to_owned())
            .or_default()
            .push(text);
    }
    for events in by_chat.values() {
        assert_eq!(events, &["STARTED", "one", "two"]);
    }
}

async fn without_the_host_worker_a_sweep_delivers_what_is_due(backends: Backends) {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest_without_jobs(&receiver), backends).await;
    let (key, webhook_id, secret) =
        tenant_with_webhook(&nexus, &receiver, json!(["STARTED"])).await;
    chat(&nexus, &key).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty(), "nothing runs jobs yet");

    let sweep = client()
        .post(nexus.url("/nexus/v3/webhooks/jobs/sweep"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(sweep.status(), 200);
    let summary: Value = sweep.json().await.unwrap();
    Api::load("webhooks").check("POST", "/nexus/v3/webhooks/jobs/sweep", 200, &summary);
    assert_eq!(summary["data"]["claimed"], 1, "{summary}");
    assert_eq!(summary["data"]["succeeded"], 1, "{summary}");
    let requests = receiver.wait_for(1).await;
    verify(&requests[0], &secret);
    let jobs = admin_ok(&nexus, "GET", "/tenants/acme/jobs?state=succeeded", None).await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);

    // A delivery whose endpoint is gone is dead at once (422), not retried.
    chat(&nexus, &key).await;
    admin_ok(
        &nexus,
        "DELETE",
        &format!("/tenants/acme/webhooks/{webhook_id}"),
        None,
    )
    .await;
    let sweep = client()
        .post(nexus.url("/nexus/v3/webhooks/jobs/sweep"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    let summary: Value = sweep.json().await.unwrap();
    assert_eq!(summary["data"]["dead"], 1, "{summary}");
    let dead = admin_ok(&nexus, "GET", "/tenants/acme/jobs?state=dead", None).await;
    assert_eq!(dead["jobs"][0]["attempts"], 1);
    assert_eq!(dead["jobs"][0]["lastStatus"], 422);
    assert_eq!(receiver.received().len(), 1);

    // Without the admin token, no sweep.
    let refused = client()
        .post(nexus.url("/nexus/v3/webhooks/jobs/sweep"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refusal: Value = refused.json().await.unwrap();
    Api::load("webhooks").check("POST", "/nexus/v3/webhooks/jobs/sweep", 401, &refusal);
}

/// A workspace call as the agent with `token`; the answer's data.
async fn work(nexus: &Nexus, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut request = client()
        .request(
            method.parse().unwrap(),
            nexus.url(&format!("/nexus/v3/workspace/{path}")),
        )
        .header("authorization", format!("Bearer {token}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{method} {path}");
    response.json::<Value>().await.unwrap()["data"].clone()
}

/// QUEUED, AGENT_JOINED and AGENT_LEFT, raised by routing and the agent desktop.
async fn routing_events_reach_the_webhook(backends: Backends) {
    let receiver = Receiver::start().await;
    let manifest = manifest(&receiver)
        + &support::manifest::component("workspace", "/nexus/v3/workspace/...", &[]);
    let nexus = Nexus::start(&manifest, backends).await;
    let (key, _, secret) = tenant_with_webhook(
        &nexus,
        &receiver,
        json!(["QUEUED", "AGENT_JOINED", "AGENT_LEFT", "IDLE"]),
    )
    .await;
    let channel =
        admin_ok(&nexus, "GET", "/tenants/acme/channels", None).await["channels"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    admin_ok(
        &nexus,
        "PUT",
        "/tenants/acme/queues/support",
        Some(json!({})),
    )
    .await;
    admin_ok(
        &nexus,
        "PUT",
        &format!("/tenants/acme/channels/{channel}/routing"),
        Some(json!({"queue": "support"})),
    )
    .await;
    let agent = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/agents",
        Some(json!({"username": "ann", "nickname": "Ann"})),
    )
    .await;
    let token = agent["token"].as_str().unwrap().to_owned();
    work(&nexus, &token, "POST", "media/chat/ready", None).await;

    chat(&nexus, &key).await;
    let queued = receiver.wait_for(1).await;
    assert_eq!(event_type(&queued[0]), "QUEUED");
    let body: Value = serde_json::from_slice(&queued[0].body).unwrap();
    assert_eq!(body["data"]["queue"], "support");
    let interaction = body["interactionId"].as_str().unwrap().to_owned();
    work(
        &nexus,
        &token,
        "POST",
        &format!("media/chat/interactions/{interaction}/accept"),
        None,
    )
    .await;
    work(
        &nexus,
        &token,
        "POST",
        &format!("media/chat/interactions/{interaction}/leave"),
        Some(json!({"afterAction": "KeepAlive"})),
    )
    .await;
    // Left with KeepAlive: the chat stays open with no agent, idle (an async chat).
    let requests = receiver.wait_for(4).await;
    let types: Vec<String> = requests.iter().map(event_type).collect();
    assert_eq!(types, ["QUEUED", "AGENT_JOINED", "AGENT_LEFT", "IDLE"]);
    let idle: Value = serde_json::from_slice(&requests[3].body).unwrap();
    assert_eq!(idle["interactionId"], interaction.as_str());
    assert_eq!(idle["data"]["state"], "active");
    let joined: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(joined["data"]["nickname"], "Ann");
    assert_eq!(joined["data"]["agentId"], agent["id"]);
    for request in &requests {
        verify(request, &secret);
    }
}

async fn succeeded_jobs_are_deleted_after_their_retention(backends: Backends) {
    let receiver = Receiver::start().await;
    // The manifest's last table is the webhooks' jobs: they keep succeeded jobs for 500 ms.
    let manifest = manifest(&receiver) + "keep_succeeded_ms = 500\n";
    let nexus = Nexus::start(&manifest, backends).await;
    let (key, _, _) = tenant_with_webhook(&nexus, &receiver, json!(["STARTED"])).await;
    // The first chat's delivery fails on every attempt of the schedule: dead.
    receiver.answer_next(&[500, 500, 500]);
    chat(&nexus, &key).await;
    receiver.wait_for(3).await;
    // The second one's is taken: succeeded, and then deleted.
    chat(&nexus, &key).await;
    receiver.wait_for(4).await;
    let mut states = Vec::new();
    for _ in 0..100 {
        let jobs = admin_ok(&nexus, "GET", "/tenants/acme/jobs", None).await;
        states = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["state"].as_str().unwrap().to_owned())
            .collect();
        if states == ["dead"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The dead job stays for an operator; the succeeded one, and what it carried, is gone.
    assert_eq!(states, ["dead"]);
}
