//! End to end: secure email. The contact center's portal (the test, with a `securemail` API
//! key) writes a contact's secure messages into two departments' boxes and the default box; an
//! agent answers one in the Workspace API; the portal finds the answer unread in that box only,
//! pages the box, and marks the answer read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::openapi::Api;
use support::{Backends, Nexus, admin_ok, client};

fn manifest() -> String {
    use support::manifest::{application, component, provisioning};
    [
        application("securemail"),
        provisioning(),
        component("workspace", "/nexus/v3/workspace/...", &[]),
        component("securemail", "/nexus/v3/securemail/...", &[]),
    ]
    .concat()
}

/// A call; the status and answer, checked against the API's OpenAPI document.
async fn call(
    nexus: &Nexus,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(method.parse().unwrap(), nexus.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    let document = if path.starts_with("/nexus/v3/provisioning/") {
        "provisioning"
    } else if path.starts_with("/nexus/v3/workspace/") {
        "workspace"
    } else {
        "securemail"
    };
    Api::load(document).check(method, path, status, &answer);
    (status, answer)
}

async fn work(nexus: &Nexus, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let bearer = format!("Bearer {token}");
    let (status, answer) = call(
        nexus,
        method,
        &format!("/nexus/v3/workspace/{path}"),
        &[("authorization", &bearer)],
        body,
    )
    .await;
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer["data"].clone()
}

struct Portal {
    key: String,
}

impl Portal {
    async fn write(&self, nexus: &Nexus, body: Value) -> (u16, Value) {
        call(
            nexus,
            "POST",
            "/nexus/v3/securemail",
            &[("x-api-key", &self.key)],
            Some(body),
        )
        .await
    }

    async fn mailbox(&self, nexus: &Nexus, query: &str) -> Value {
        let (status, answer) = call(
            nexus,
            "GET",
            &format!("/nexus/v3/securemail?address=ada@example.com&{query}"),
            &[("x-api-key", &self.key)],
            None,
        )
        .await;
        assert_eq!(status, 200, "{query}: {answer}");
        answer["data"].clone()
    }

    async fn mark_read(&self, nexus: &Nexus, body: Value) -> u64 {
        let (status, answer) = call(
            nexus,
            "POST",
            "/nexus/v3/securemail/read",
            &[("x-api-key", &self.key)],
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        answer["data"]["marked"].as_u64().unwrap()
    }
}

fn texts(mailbox: &Value) -> Vec<&str> {
    mailbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect()
}

async fn departments_keep_their_own_threads_with_a_contact(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    admin_ok(
        &nexus,
        "POST",
        "/tenants",
        Some(json!({"ccid": "acme", "name": "Acme"})),
    )
    .await;
    let channel = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/channels",
        Some(json!({"type": "securemail", "name": "portal"})),
    )
    .await;
    let key = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/api-keys",
        Some(json!({"name": "portal", "permission": "securemail"})),
    )
    .await;
    let chat_key = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/api-keys",
        Some(json!({"name": "widget", "permission": "chat"})),
    )
    .await;
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
        &format!(
            "/tenants/acme/channels/{}/routing",
            channel["id"].as_str().unwrap()
        ),
        Some(json!({"queue": "support"})),
    )
    .await;
    let agent = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/agents",
        Some(json!({"username": "ann", "nickname": "Ann", "capacity": {"chat": 5}})),
    )
    .await;
    let token = agent["token"].as_str().unwrap().to_owned();
    work(&nexus, &token, "POST", "media/chat/ready", None).await;
    let portal = Portal {
        key: key["key"].as_str().unwrap().to_owned(),
    };

    // The contact writes to billing (twice, the second a retry), to claims, and to the default
    // box: three threads.
    let first = json!({"address": "Ada@Example.com", "securebox": "billing", "subject": "Invoice 42",
                       "text": "Why was I charged twice?", "messageId": "portal-1"});
    let (status, billing) = portal.write(&nexus, first.clone()).await;
    assert_eq!(status, 200, "{billing}");
    assert_eq!(billing["data"]["duplicate"], false);
    let (_, again) = portal.write(&nexus, first).await;
    assert_eq!(again["data"]["duplicate"], true);
    let billing_id = billing["data"]["interactionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, claims) = portal
        .write(
            &nexus,
            json!({"address": "ada@example.com", "securebox": "claims", "text": "My claim form"}),
        )
        .await;
    let (_, general) = portal
        .write(
            &nexus,
            json!({"address": "ada@example.com", "text": "Hello"}),
        )
        .await;
    let ids = [
        billing_id.clone(),
        claims["data"]["interactionId"].as_str().unwrap().to_owned(),
        general["data"]["interactionId"]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );

    // The agent is offered the billing thread, takes it and answers.
    let mut offered = false;
    for _ in 0..100 {
        let mine = work(&nexus, &token, "GET", "media/chat/interactions", None).await;
        offered = mine["interactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == billing_id.as_str() && i["routingState"] == "invited");
        if offered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(offered, "the billing thread was not offered");
    work(
        &nexus,
        &token,
        "POST",
        &format!("media/chat/interactions/{billing_id}/accept"),
        None,
    )
    .await;
    work(
        &nexus,
        &token,
        "POST",
        &format!("media/chat/interactions/{billing_id}/send-message"),
        Some(json!({"message": "We refunded the second charge."})),
    )
    .await;

    // The answer is unread in billing, and only there.
    let unread = portal
        .mailbox(&nexus, "securebox=billing&status=unread")
        .await;
    assert_eq!(texts(&unread), vec!["We refunded the second charge."]);
    assert_eq!(unread["total"], 1);
    let answer = &unread["messages"][0];
    assert_eq!(answer["status"], "unread");
    assert_eq!(answer["from"]["type"], "Agent");
    assert_eq!(answer["from"]["nickname"], "Ann");
    assert_eq!(answer["securebox"], "billing");
    let all = portal.mailbox(&nexus, "securebox=billing&status=all").await;
    assert_eq!(
        texts(&all),
        vec!["We refunded the second charge.", "Why was I charged twice?"]
    );
    assert_eq!(all["messages"][1]["subject"], "Invoice 42");
    assert_eq!(all["messages"][1]["status"], "read");
    let page = portal
        .mailbox(&nexus, "securebox=billing&index=1&count=1")
        .await;
    assert_eq!(texts(&page), vec!["Why was I charged twice?"]);
    assert_eq!(page["total"], 2);
    for (query, expected) in [
        ("securebox=claims&status=unread", vec![]),
        ("securebox=claims", vec!["My claim form"]),
        ("status=unread", vec![]),
        ("", vec!["Hello"]),
    ] {
        assert_eq!(
            texts(&portal.mailbox(&nexus, query).await),
            expected,
            "{query}"
        );
    }

    // Marked read from its own box only.
    let id = answer["messageId"].clone();
    let from_claims =
        json!({"address": "ada@example.com", "securebox": "claims", "messageIds": [id]});
    assert_eq!(portal.mark_read(&nexus, from_claims).await, 0);
    let from_billing =
        json!({"address": "ada@example.com", "securebox": "billing", "messageIds": [id]});
    assert_eq!(portal.mark_read(&nexus, from_billing.clone()).await, 1);
    assert_eq!(portal.mark_read(&nexus, from_billing).await, 0);
    let unread = portal
        .mailbox(&nexus, "securebox=billing&status=unread")
        .await;
    assert_eq!(unread["total"], 0);
    let read = portal
        .mailbox(&nexus, "securebox=billing&status=read")
        .await;
    assert_eq!(read["messages"][0]["status"], "read");

    // Refused: a malformed box, a key without the permission, no key.
    let (status, _) = call(
        &nexus,
        "GET",
        "/nexus/v3/securemail?address=ada@example.com&securebox=a!",
        &[("x-api-key", &portal.key)],
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &nexus,
        "GET",
        "/nexus/v3/securemail?address=ada@example.com",
        &[("x-api-key", chat_key["key"].as_str().unwrap())],
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &nexus,
        "GET",
        "/nexus/v3/securemail?address=ada@example.com",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 401);
}

both_backends!(departments_keep_their_own_threads_with_a_contact);
