//! End to end: email. The test plays the inbound provider, posting mail in Mailgun's form with
//! its signature (its own implementation of the documented algorithm), and a local receiver
//! stands in for the transmissions API the agent's replies go out through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use support::openapi::Api;
use support::{ADMIN_TOKEN, Backends, Nexus, Receiver, client};

const SIGNING_KEY: &str = "inbound-signing-key";
const API_KEY: &str = "transmissions-api-key";

fn manifest() -> String {
    use support::manifest::{application, component, jobs, provisioning};
    [
        application("email"),
        provisioning(),
        component("workspace", "/nexus/v3/workspace/...", &[]),
        component("email", "/nexus/v3/email/...", &["http://127.0.0.1:*"]),
        jobs("email", "/nexus/v3/email/jobs/run", 15000),
    ]
    .concat()
}

async fn json_call(
    nexus: &Nexus,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client()
        .request(method.parse().unwrap(), nexus.url(path))
        .header("authorization", format!("Bearer {bearer}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    let document = if path.starts_with("/nexus/v3/provisioning/") {
        "provisioning"
    } else {
        "workspace"
    };
    Api::load(document).check(method, path, status, &answer);
    assert!((200..300).contains(&status), "{method} {path}: {answer}");
    answer["data"].clone()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Mailgun's signature: hex HMAC-SHA256 of timestamp + token, keyed with the signing key.
fn sign(timestamp: &str, token: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Posts a mail as the provider does; `signature` overrides the right one.
async fn post_mail(
    nexus: &Nexus,
    channel: &str,
    message_id: &str,
    token: &str,
    timestamp: u64,
    signature: Option<&str>,
) -> (u16, Value) {
    let timestamp = timestamp.to_string();
    let signature = signature.map_or_else(|| sign(&timestamp, token), str::to_owned);
    let fields = [
        ("sender", "Ada.Lovelace@Example.com"),
        ("recipient", "support@acme.example"),
        ("subject", "Invoice 42"),
        ("body-plain", "Why was I charged twice?\n\n> quoted history"),
        ("stripped-text", "Why was I charged twice?"),
        ("Message-Id", message_id),
        ("timestamp", &timestamp),
        ("token", token),
        ("signature", &signature),
    ];
    let path = format!("/nexus/v3/email/{channel}/inbound");
    let response = client()
        .post(nexus.url(&path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields.iter())
                .finish(),
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    Api::load("email").check("POST", &path, status, &answer);
    (status, answer)
}

both_backends!(a_customer_and_an_agent_converse_by_email);

async fn a_customer_and_an_agent_converse_by_email(backends: Backends) {
    let provider = Receiver::start().await;
    provider.reply_with(r#"{"results": {"id": "tx-1", "total_accepted_recipients": 1}}"#);
    let nexus = Nexus::start(&manifest(), backends).await;
    let provisioning = |path: &str| format!("/nexus/v3/provisioning{path}");
    json_call(
        &nexus,
        "POST",
        &provisioning("/tenants"),
        ADMIN_TOKEN,
        Some(json!({"ccid": "acme", "name": "Acme"})),
    )
    .await;
    let channel = json_call(
        &nexus,
        "POST",
        &provisioning("/tenants/acme/channels"),
        ADMIN_TOKEN,
        Some(
            json!({"type": "email", "name": "support-mail", "secret": SIGNING_KEY,
                    "credentials": {"apiKey": API_KEY},
                    "settings": {"from": "support@acme.example",
                                 "apiBaseUrl": format!("http://{}", provider.addr)}}),
        ),
    )
    .await;
    assert!(
        channel.get("credentials").is_none(),
        "credentials are never shown: {channel}"
    );
    let channel = channel["id"].as_str().unwrap().to_owned();
    json_call(
        &nexus,
        "PUT",
        &provisioning("/tenants/acme/queues/mail"),
        ADMIN_TOKEN,
        Some(json!({})),
    )
    .await;
    json_call(
        &nexus,
        "PUT",
        &provisioning(&format!("/tenants/acme/channels/{channel}/routing")),
        ADMIN_TOKEN,
        Some(json!({"queue": "mail"})),
    )
    .await;
    let agent = json_call(
        &nexus,
        "POST",
        &provisioning("/tenants/acme/agents"),
        ADMIN_TOKEN,
        Some(json!({"username": "ann", "nickname": "Ann"})),
    )
    .await;
    let token = agent["token"].as_str().unwrap().to_owned();
    json_call(
        &nexus,
        "POST",
        "/nexus/v3/workspace/media/chat/ready",
        &token,
        None,
    )
    .await;

    // A mail arrives.
    let (status, first) =
        post_mail(&nexus, &channel, "<m1@example.com>", "token-1", now(), None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"]["message"]["text"], "Why was I charged twice?");
    assert_eq!(first["data"]["message"]["data"]["subject"], "Invoice 42");
    let interaction = first["data"]["interactionId"].as_str().unwrap().to_owned();

    // Refused: a reused token, a wrong signature, a stale timestamp.
    let (status, _) = post_mail(&nexus, &channel, "<m2@example.com>", "token-1", now(), None).await;
    assert_eq!(status, 401, "a token is taken once");
    let (status, _) = post_mail(
        &nexus,
        &channel,
        "<m2@example.com>",
        "token-2",
        now(),
        Some("00ff"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post_mail(
        &nexus,
        &channel,
        "<m2@example.com>",
        "token-3",
        now() - 3600,
        None,
    )
    .await;
    assert_eq!(status, 401);
    // The provider delivers the same mail again (a new token): stored once.
    let (status, again) =
        post_mail(&nexus, &channel, "<m1@example.com>", "token-4", now(), None).await;
    assert_eq!(status, 200);
    assert_eq!(again["data"]["duplicate"], true);

    // The agent takes it and answers: the reply goes out through the transmissions API.
    let mut offered = false;
    for _ in 0..100 {
        let work = json_call(
            &nexus,
            "GET",
            "/nexus/v3/workspace/media/chat/interactions",
            &token,
            None,
        )
        .await;
        if work["interactions"][0]["id"] == interaction.as_str() {
            offered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(offered, "the mail was routed to the agent");
    json_call(
        &nexus,
        "POST",
        &format!("/nexus/v3/workspace/media/chat/interactions/{interaction}/accept"),
        &token,
        None,
    )
    .await;
    json_call(
        &nexus,
        "POST",
        &format!("/nexus/v3/workspace/media/chat/interactions/{interaction}/send-message"),
        &token,
        Some(json!({"message": "The second charge is refunded."})),
    )
    .await;
    let sent = provider.wait_for(1).await;
    assert_eq!(sent[0].path, "/api/v1/transmissions");
    assert_eq!(sent[0].headers["authorization"].to_str().unwrap(), API_KEY);
    let transmission: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(
        transmission["recipients"][0]["address"]["email"],
        "ada.lovelace@example.com"
    );
    assert_eq!(transmission["content"]["from"], "support@acme.example");
    assert_eq!(transmission["content"]["subject"], "Re: Invoice 42");
    assert_eq!(
        transmission["content"]["text"],
        "The second charge is refunded."
    );
    assert_eq!(
        transmission["metadata"]["interactionId"],
        interaction.as_str()
    );

    // Its status is sent once the provider took it.
    let mut sent_status = Value::Null;
    for _ in 0..100 {
        let messages = json_call(
            &nexus,
            "GET",
            &format!("/nexus/v3/workspace/media/chat/interactions/{interaction}/messages"),
            &token,
            None,
        )
        .await;
        sent_status = messages["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["text"] == "The second charge is refunded.")
            .map(|m| m["deliveryStatus"].clone())
            .unwrap_or(Value::Null);
        if sent_status == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent_status, "sent");

    // The provider fails once: the send is retried under the same idempotency key, which an API
    // that takes one sends once; another message has another key.
    provider.answer_next(&[500]);
    json_call(
        &nexus,
        "POST",
        &format!("/nexus/v3/workspace/media/chat/interactions/{interaction}/send-message"),
        &token,
        Some(json!({"message": "Anything else?"})),
    )
    .await;
    let sent = provider.wait_for(3).await;
    assert_eq!(sent[1].body, sent[2].body, "the same send, again");
    let key = |request: &support::Received| request.header("idempotency-key");
    assert_eq!(key(&sent[1]), key(&sent[2]));
    assert_ne!(key(&sent[0]), key(&sent[1]), "another message, another key");
    assert!(
        key(&sent[0]).starts_with(&format!("nexus:{interaction}:")),
        "{}",
        key(&sent[0])
    );
}
