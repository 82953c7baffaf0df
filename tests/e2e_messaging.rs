//! End to end: the Third-Party Messaging API. A custom messaging client (the test, with a local
//! receiver as its webhook) exchanges messages with an agent: signed messages in, refused when
//! the signature or the timestamp is wrong, stored once when replayed; the agent's replies out
//! to the webhook, signed, retried after a 5xx, their `messageId` kept to match receipts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use support::openapi::Api;
use support::{ADMIN_TOKEN, Backends, Nexus, Receiver, client};

fn manifest() -> String {
    use support::manifest::{application, component, jobs, provisioning};
    [
        application("messaging"),
        provisioning(),
        component("workspace", "/nexus/v3/workspace/...", &[]),
        component(
            "messaging",
            "/nexus/v3/channels/...",
            &["http://127.0.0.1:*"],
        ),
        "\n[component.messaging.tool.nexus]\nrequest_timeout_ms = 10000\n".to_owned(),
        jobs("messaging", "/nexus/v3/channels/jobs/run", 15000),
    ]
    .concat()
}

/// A call with a JSON body; the status and answer, checked against the API's OpenAPI document.
async fn call(
    nexus: &Nexus,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut request = client().request(method.parse().unwrap(), nexus.url(path));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    let document = if path.starts_with("/nexus/v3/provisioning/") {
        "provisioning"
    } else if path.starts_with("/nexus/v3/workspace/") {
        "workspace"
    } else {
        "messaging"
    };
    Api::load(document).check(method, path, status, &answer);
    (status, answer)
}

async fn admin(nexus: &Nexus, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = call(
        nexus,
        method,
        &format!("/nexus/v3/provisioning{path}"),
        &[("authorization", format!("Bearer {ADMIN_TOKEN}"))],
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert!((200..300).contains(&status), "{method} {path}: {answer}");
    answer["data"].clone()
}

async fn work(nexus: &Nexus, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = call(
        nexus,
        method,
        &format!("/nexus/v3/workspace/{path}"),
        &[("authorization", format!("Bearer {token}"))],
        body.map(|b| b.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer["data"].clone()
}

/// The client's side: its channel and the secret both sides sign with.
struct Client {
    channel: String,
    secret: String,
}

fn hub(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha1={hex}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Client {
    /// POSTs `body` to `channels/{channel}/{what}`, signed with `signature` (by default the
    /// right one).
    async fn post(
        &self,
        nexus: &Nexus,
        what: &str,
        body: &Value,
        signature: Option<String>,
    ) -> (u16, Value) {
        let bytes = body.to_string().into_bytes();
        let mut headers = vec![("x-ccid", "acme".to_owned())];
        headers.push((
            "x-hub-signature",
            signature.unwrap_or_else(|| hub(self.secret.as_bytes(), &bytes)),
        ));
        call(
            nexus,
            "POST",
            &format!("/nexus/v3/channels/{}/{what}", self.channel),
            &headers,
            Some(bytes),
        )
        .await
    }
}

/// Waits until the agent's view of message `position` has `status`.
async fn delivery_status(
    nexus: &Nexus,
    token: &str,
    interaction: &str,
    position: i64,
    status: &str,
) {
    let mut last = Value::Null;
    for _ in 0..100 {
        let messages = work(
            nexus,
            token,
            "GET",
            &format!("media/chat/interactions/{interaction}/messages"),
            None,
        )
        .await;
        last = messages["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["position"] == position)
            .cloned()
            .unwrap_or(Value::Null);
        if last["deliveryStatus"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("message {position} is not {status}: {last}");
}

both_backends!(
    a_client_and_an_agent_converse_both_ways,
    a_client_uploads_media_that_an_agent_downloads,
);

async fn a_client_and_an_agent_converse_both_ways(backends: Backends) {
    let receiver = Receiver::start().await;
    receiver.reply_with(r#"{"messageId": "wa-1"}"#);
    let nexus = Nexus::start(&manifest(), backends).await;
    admin(
        &nexus,
        "POST",
        "/tenants",
        json!({"ccid": "acme", "name": "Acme"}),
    )
    .await;
    let channel = admin(
        &nexus,
        "POST",
        "/tenants/acme/channels",
        json!({"type": "messaging", "name": "bridge",
               "settings": {"webhookUrl": format!("http://{}/outbound", receiver.addr)}}),
    )
    .await;
    let client = Client {
        channel: channel["id"].as_str().unwrap().to_owned(),
        secret: channel["secret"].as_str().unwrap().to_owned(),
    };
    admin(&nexus, "PUT", "/tenants/acme/queues/support", json!({})).await;
    admin(
        &nexus,
        "PUT",
        &format!("/tenants/acme/channels/{}/routing", client.channel),
        json!({"queue": "support"}),
    )
    .await;
    let agent = admin(
        &nexus,
        "POST",
        "/tenants/acme/agents",
        json!({"username": "ann", "nickname": "Ann", "capacity": {"chat": 2}}),
    )
    .await;
    let token = agent["token"].as_str().unwrap().to_owned();
    work(&nexus, &token, "POST", "media/chat/ready", None).await;

    // The user writes in.
    let message = json!({"id": "in-1", "timestamp": now(), "from": {"id": "+15550100", "nickname": "Ada"},
                         "text": "is my order shipped?"});
    let (status, first) = client.post(&nexus, "messages", &message, None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"]["duplicate"], false);
    let interaction = first["data"]["interactionId"].as_str().unwrap().to_owned();
    // The same request again (a replay, or the client's retry): stored once.
    let (status, again) = client.post(&nexus, "messages", &message, None).await;
    assert_eq!(status, 200);
    assert_eq!(again["data"]["duplicate"], true);
    assert_eq!(again["data"]["interactionId"], interaction.as_str());

    // Refused: a wrong signature, none, another channel's secret, a stale timestamp.
    let other = json!({"id": "in-2", "timestamp": now(), "from": {"id": "+15550100"}, "text": "x"});
    let (status, _) = client
        .post(&nexus, "messages", &other, Some("sha1=0000".into()))
        .await;
    assert_eq!(status, 401);
    let (status, _) = client
        .post(
            &nexus,
            "messages",
            &other,
            Some(hub(b"not the secret", other.to_string().as_bytes())),
        )
        .await;
    assert_eq!(status, 401);
    let unsigned = support::client()
        .post(nexus.url(&format!("/nexus/v3/channels/{}/messages", client.channel)))
        .header("x-ccid", "acme")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let stale =
        json!({"id": "in-3", "timestamp": now() - 3600, "from": {"id": "+15550100"}, "text": "x"});
    let (status, answer) = client.post(&nexus, "messages", &stale, None).await;
    assert_eq!(status, 401, "{answer}");

    // The conversation was routed: the agent is offered it and takes it.
    let mut offered = Value::Null;
    for _ in 0..100 {
        offered = work(&nexus, &token, "GET", "media/chat/interactions", None).await;
        if offered["interactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == interaction.as_str())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        offered["interactions"][0]["routingState"], "invited",
        "{offered}"
    );
    work(
        &nexus,
        &token,
        "POST",
        &format!("media/chat/interactions/{interaction}/accept"),
        None,
    )
    .await;
    let transcript = work(
        &nexus,
        &token,
        "GET",
        &format!("media/chat/interactions/{interaction}/messages"),
        None,
    )
    .await;
    let texts: Vec<&Value> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["text"])
        .collect();
    assert_eq!(
        texts
            .iter()
            .filter(|t| **t == "is my order shipped?")
            .count(),
        1,
        "{texts:?}"
    );

    // The agent answers: the client's webhook gets it, signed, and its messageId is kept.
    let sent = work(
        &nexus,
        &token,
        "POST",
        &format!("media/chat/interactions/{interaction}/send-message"),
        Some(json!({"message": "yes, it left today"})),
    )
    .await;
    let position = sent["message"]["position"].as_i64().unwrap();
    let requests = receiver.wait_for(1).await;
    let outbound = &requests[0];
    assert_eq!(outbound.path, "/outbound");
    assert_eq!(
        outbound.headers["x-hub-signature"].to_str().unwrap(),
        hub(client.secret.as_bytes(), &outbound.body)
    );
    let trace = outbound.headers["x-b3-traceid"].to_str().unwrap();
    assert!(
        trace.len() == 32 && trace.chars().all(|c| c.is_ascii_hexdigit()),
        "a B3 trace id: {trace}"
    );
    let body: Value = serde_json::from_slice(&outbound.body).unwrap();
    assert_eq!(body["to"]["id"], "+15550100");
    assert_eq!(body["text"], "yes, it left today");
    assert_eq!(body["from"]["nickname"], "Ann");
    assert_eq!(body["interactionId"], interaction.as_str());
    delivery_status(&nexus, &token, &interaction, position, "sent").await;

    // Receipts move the message forward by the client's messageId, never back.
    let read = json!({"messageId": "wa-1", "status": "read", "timestamp": now()});
    let (status, answer) = client.post(&nexus, "receipts", &read, None).await;
    assert_eq!(status, 200, "{answer}");
    delivery_status(&nexus, &token, &interaction, position, "read").await;
    let late = json!({"messageId": "wa-1", "status": "delivered", "timestamp": now()});
    client.post(&nexus, "receipts", &late, None).await;
    delivery_status(&nexus, &token, &interaction, position, "read").await;
    // One for an id no message carries (yet) is kept, not refused: see below.
    let unknown = json!({"messageId": "nope", "status": "read", "timestamp": now()});
    let (status, answer) = client.post(&nexus, "receipts", &unknown, None).await;
    assert_eq!(status, 202, "{answer}");

    // A 5xx from the client is retried; the reply arrives once it answers 2xx.
    receiver.answer_next(&[503]);
    receiver.reply_with(r#"{"messageId": "wa-2"}"#);
    let sent = work(
        &nexus,
        &token,
        "POST",
        &format!("media/chat/interactions/{interaction}/send-message"),
        Some(json!({"message": "anything else?"})),
    )
    .await;
    let requests = receiver.wait_for(3).await;
    assert_eq!(
        requests[1].body, requests[2].body,
        "the same message, again"
    );
    delivery_status(
        &nexus,
        &token,
        &interaction,
        sent["message"]["position"].as_i64().unwrap(),
        "sent",
    )
    .await;

    // The client reports delivery before its answer to the delivery (with the messageId) has
    // reached nexus: the receipt is kept, and applied when the answer comes.
    receiver.hold_answers();
    receiver.reply_with(r#"{"messageId": "wa-3"}"#);
    let sent = work(
        &nexus,
        &token,
        "POST",
        &format!("media/chat/interactions/{interaction}/send-message"),
        Some(json!({"message": "one more thing"})),
    )
    .await;
    receiver.wait_for(4).await;
    let early = json!({"messageId": "wa-3", "status": "delivered", "timestamp": now()});
    let (status, answer) = client.post(&nexus, "receipts", &early, None).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["data"]["pending"], true, "{answer}");
    receiver.release();
    delivery_status(
        &nexus,
        &token,
        &interaction,
        sent["message"]["position"].as_i64().unwrap(),
        "delivered",
    )
    .await;

    // A new user's first messages arriving at once start one conversation, not several.
    let burst = (0..5).map(|n| {
        let message = json!({"id": format!("burst-{n}"), "timestamp": now(),
                             "from": {"id": "+15550199"}, "text": format!("hello {n}")});
        let client = &client;
        let nexus = &nexus;
        async move { client.post(nexus, "messages", &message, None).await }
    });
    let answers = futures::future::join_all(burst).await;
    let conversations: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, answer)| {
            assert_eq!(*status, 200, "{answer}");
            answer["data"]["interactionId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(conversations.len(), 1, "{conversations:?}");

    // The user writes again: the same conversation, and the agent sees it.
    let more = json!({"id": "in-4", "timestamp": now(), "from": {"id": "+15550100"}, "text": "no, thanks"});
    let (_, answer) = client.post(&nexus, "messages", &more, None).await;
    assert_eq!(answer["data"]["interactionId"], interaction.as_str());
}

/// A multipart/form-data body with `timestamp` and `file`, as a client's HTTP library makes it.
fn multipart(timestamp: u64, filename: &str, mimetype: &str, content: &[u8]) -> (String, Vec<u8>) {
    support::multipart_file(
        &[("timestamp", &timestamp.to_string())],
        filename,
        mimetype,
        content,
    )
}

impl Client {
    /// Uploads a multipart body to `channels/{channel}/media`, signed with `key`.
    async fn upload(&self, nexus: &Nexus, key: &[u8], form: (String, Vec<u8>)) -> (u16, Value) {
        let (content_type, body) = form;
        let path = format!("/nexus/v3/channels/{}/media", self.channel);
        let response = support::client()
            .post(nexus.url(&path))
            .header("x-ccid", "acme")
            .header("x-hub-signature", hub(key, &body))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        Api::load("messaging").check("POST", &path, status, &answer);
        (status, answer)
    }
}

async fn a_client_uploads_media_that_an_agent_downloads(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    admin(
        &nexus,
        "POST",
        "/tenants",
        json!({"ccid": "acme", "name": "Acme"}),
    )
    .await;
    let channel = admin(
        &nexus,
        "POST",
        "/tenants/acme/channels",
        json!({"type": "messaging", "name": "bridge", "settings": {"webhookUrl": "http://127.0.0.1:9/none"}}),
    )
    .await;
    let client = Client {
        channel: channel["id"].as_str().unwrap().to_owned(),
        secret: channel["secret"].as_str().unwrap().to_owned(),
    };
    let key = client.secret.clone().into_bytes();
    // Not quite a PNG, but typed as one: bytes of every value, to show none is altered.
    let content: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();

    let (status, uploaded) = client
        .upload(
            &nexus,
            &key,
            multipart(now(), "../photos/receipt.png", "image/png", &content),
        )
        .await;
    assert_eq!(status, 200, "{uploaded}");
    let media = &uploaded["data"];
    let media_id = media["mediaId"].as_str().unwrap().to_owned();
    assert_eq!(media["url"], format!("nexus://media/{media_id}"));
    assert_eq!(media["filename"], "receipt.png");
    assert_eq!(media["mimetype"], "image/png");
    assert_eq!(media["length"], content.len());

    // Refused: a wrong signature, a stale timestamp, a type not taken, a file too large.
    let (status, _) = client
        .upload(
            &nexus,
            b"not the secret",
            multipart(now(), "a.png", "image/png", b"x"),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = client
        .upload(
            &nexus,
            &key,
            multipart(now() - 3600, "a.png", "image/png", b"x"),
        )
        .await;
    assert_eq!(status, 401);
    let (status, answer) = client
        .upload(
            &nexus,
            &key,
            multipart(now(), "run.exe", "application/x-msdownload", b"MZ"),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["status"]["code"], "INVALID_FILE_TYPE");
    let big = vec![0u8; 5 * 1024 * 1024 + 1];
    let (status, answer) = client
        .upload(&nexus, &key, multipart(now(), "big.png", "image/png", &big))
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["status"]["code"], "LIMIT_FILE_SIZE");

    // The user sends it, with no text; the message carries what the file is.
    let message = json!({"id": "in-1", "timestamp": now(), "from": {"id": "+15550100", "nickname": "Ada"},
                         "media": [{"url": format!("nexus://media/{media_id}")}]});
    let (status, sent) = client.post(&nexus, "messages", &message, None).await;
    assert_eq!(status, 200, "{sent}");
    let attached = &sent["data"]["message"]["data"]["media"][0];
    assert_eq!(attached["mediaId"], media_id.as_str());
    assert_eq!(attached["filename"], "receipt.png");
    // A file it did not upload is not named.
    let foreign = json!({"id": "in-2", "timestamp": now(), "from": {"id": "+15550100"},
                         "media": [{"mediaId": "00000000-0000-4000-8000-000000000000"}]});
    let (status, _) = client.post(&nexus, "messages", &foreign, None).await;
    assert_eq!(status, 400);

    // An agent of the tenant downloads it as it was uploaded.
    let agent = admin(
        &nexus,
        "POST",
        "/tenants/acme/agents",
        json!({"username": "ann", "nickname": "Ann"}),
    )
    .await;
    let token = agent["token"].as_str().unwrap().to_owned();
    let download = support::client()
        .get(nexus.url(&format!("/nexus/v3/workspace/files/{media_id}")))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "image/png");
    assert_eq!(
        download.headers()["content-disposition"],
        "attachment; filename=\"receipt.png\""
    );
    assert_eq!(download.bytes().await.unwrap().to_vec(), content);
    let (status, _) = call(
        &nexus,
        "GET",
        &format!("/nexus/v3/workspace/files/{media_id}"),
        &[("authorization", "Bearer nxa_wrong".to_owned())],
        None,
    )
    .await;
    assert_eq!(status, 401);
}

/// A channel's secret is sealed at rest, bound to the channel: PostgreSQL never holds it in the
/// clear. A secret stored before sealing still works and is sealed by the next reseal; a
/// rotation of `credentials_key` (the new key, the old one kept as previous) loses nothing, and
/// once everything is sealed again the old key can go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_secrets_are_sealed_at_rest_and_survive_a_key_rotation() {
    const OLD_KEY: &str = "dGVzdC1jcmVkZW50aWFscy1rZXktMzItYnl0ZXMtISE=";
    const NEW_KEY: &str = "bmV3LWNyZWRlbnRpYWxzLWtleS0zMi1ieXRlcyEhISE=";
    let mut nexus = Nexus::start(&manifest(), Backends::Real).await;
    admin(
        &nexus,
        "POST",
        "/tenants",
        json!({"ccid": "acme", "name": "Acme"}),
    )
    .await;
    let channel = admin(
        &nexus,
        "POST",
        "/tenants/acme/channels",
        json!({"type": "messaging", "name": "bridge", "settings": {"webhookUrl": "http://127.0.0.1:9/none"}}),
    )
    .await;
    let mut client = Client {
        channel: channel["id"].as_str().unwrap().to_owned(),
        secret: channel["secret"].as_str().unwrap().to_owned(),
    };
    let mail = admin(
        &nexus,
        "POST",
        "/tenants/acme/channels",
        json!({"type": "email", "name": "mail", "secret": "mail-signing-key",
                "credentials": {"apiKey": "transmissions-api-key"}}),
    )
    .await;
    let db = nexus.database.as_ref().unwrap().client().await;
    let stored = |id: String| {
        let db = &db;
        async move {
            let row = db
                .query_one(
                    "SELECT secret, credentials::text FROM channels WHERE id = $1::text::uuid",
                    &[&id],
                )
                .await
                .unwrap();
            (row.get::<_, String>(0), row.get::<_, String>(1))
        }
    };
    let (secret, _) = stored(client.channel.clone()).await;
    assert!(secret.starts_with("v2."), "{secret}");
    assert!(!secret.contains(&client.secret));
    let (secret, credentials) = stored(mail["id"].as_str().unwrap().to_owned()).await;
    assert!(secret.starts_with("v2.") && !secret.contains("mail-signing-key"));
    assert!(
        credentials.starts_with("\"v2.") && !credentials.contains("transmissions-api-key"),
        "{credentials}"
    );
    let mut sent = 0;
    let mut says = async |client: &Client, nexus: &Nexus| {
        sent += 1;
        let message = json!({"id": format!("m-{sent}"), "timestamp": now(),
                             "from": {"id": "+15550100"}, "text": "hello"});
        let (status, answer) = client.post(nexus, "messages", &message, None).await;
        assert_eq!(status, 200, "{answer}");
    };
    says(&client, &nexus).await;

    // A secret from before sealing (written as it was) still signs, and the reseal seals it.
    db.execute(
        "UPDATE channels SET secret = 'stored-in-the-clear' WHERE id = $1::text::uuid",
        &[&client.channel],
    )
    .await
    .unwrap();
    client.secret = "stored-in-the-clear".into();
    says(&client, &nexus).await;
    let resealed = admin(&nexus, "POST", "/secrets/reseal", json!({})).await;
    assert_eq!(resealed["channels"], 1, "{resealed}");
    let (secret, _) = stored(client.channel.clone()).await;
    assert!(secret.starts_with("v2.") && !secret.contains("stored-in-the-clear"));
    says(&client, &nexus).await;

    // The key is rotated: the new one seals, the old one still opens until all is resealed.
    nexus
        .restart_with(&[
            ("SPIN_VARIABLE_CREDENTIALS_KEY", NEW_KEY),
            ("SPIN_VARIABLE_CREDENTIALS_KEYS_PREVIOUS", OLD_KEY),
        ])
        .await;
    says(&client, &nexus).await;
    let resealed = admin(&nexus, "POST", "/secrets/reseal", json!({})).await;
    assert_eq!(resealed["channels"], 2, "{resealed}");
    assert_eq!(resealed["more"], false, "{resealed}");
    let again = admin(&nexus, "POST", "/secrets/reseal", json!({})).await;
    assert_eq!(
        again["channels"], 0,
        "nothing left under the old key: {again}"
    );
    // The old key is gone: everything still opens.
    nexus
        .restart_with(&[("SPIN_VARIABLE_CREDENTIALS_KEYS_PREVIOUS", "")])
        .await;
    says(&client, &nexus).await;
}
