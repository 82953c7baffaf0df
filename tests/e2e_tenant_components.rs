//! End to end: tenant components. A tenant uploads its own bot (the example FAQ bot) and puts it
//! in front of a queue; it answers a live chat and hands off to an agent. A new version takes
//! over, and one call rolls it back. A redaction transform masks card numbers, emails and
//! phone numbers before the message reaches PostgreSQL or the bot. A bot that
//! loops, hoards memory or calls a host it was not granted fails that turn only (the customer
//! goes to routing) while another tenant's chats go on, and is disabled after failing again
//! and again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::ws::Socket;
use support::{ADMIN_TOKEN, Backends, Nexus, admin, admin_ok, client, wasm};

fn manifest() -> String {
    use support::manifest::{application, component, jobs, provisioning, workspace_socket};
    const SERVICE: &str = "http://tenant-components.nexus.internal";
    [
        application("tenant-components"),
        provisioning(),
        component("chat", "/nexus/v3/chat/...", &[SERVICE]),
        component("workspace", "/nexus/v3/workspace/...", &[SERVICE]),
        component("bots", "/nexus/v3/bots/...", &[SERVICE]),
        "credentials_key = \"{{ credentials_key }}\"\n".to_owned(),
        jobs("bots", "/nexus/v3/bots/jobs/run", 5000),
        workspace_socket(),
    ]
    .concat()
}

/// Uploads `crate_name`'s component as the next version of `name`.
async fn upload(
    nexus: &Nexus,
    ccid: &str,
    name: &str,
    kind: &str,
    crate_name: &str,
) -> (u16, Value) {
    let path = format!("/nexus/v3/provisioning/tenants/{ccid}/components/{name}/versions");
    let response = client()
        .post(nexus.url(&format!("{path}?kind={kind}")))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/wasm")
        .body(std::fs::read(wasm(crate_name)).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    support::openapi::Api::load("provisioning").check("POST", &path, status, &body);
    (status, body)
}

struct Tenant {
    chat_key: String,
    channel_id: String,
}

/// A tenant `ccid` with a chat channel and a `support` queue whose rule puts the bot `bot`
/// (the tenant component `component`) in front.
async fn provision(nexus: &Nexus, ccid: &str, component: &str, crate_name: &str) -> Tenant {
    admin_ok(
        nexus,
        "POST",
        "/tenants",
        Some(json!({"ccid": ccid, "name": ccid})),
    )
    .await;
    let channel = admin_ok(
        nexus,
        "POST",
        &format!("/tenants/{ccid}/channels"),
        Some(json!({"type": "chat", "name": "web"})),
    )
    .await;
    let key = admin_ok(
        nexus,
        "POST",
        &format!("/tenants/{ccid}/api-keys"),
        Some(json!({"name": "widget", "permission": "chat"})),
    )
    .await;
    admin_ok(
        nexus,
        "PUT",
        &format!("/tenants/{ccid}/queues/support"),
        Some(json!({})),
    )
    .await;
    let (status, uploaded) = upload(nexus, ccid, component, "bot", crate_name).await;
    assert_eq!(status, 201, "{uploaded}");
    admin_ok(
        nexus,
        "POST",
        &format!("/tenants/{ccid}/bots"),
        Some(json!({"name": "helper", "nickname": "Helper", "component": component})),
    )
    .await;
    let channel_id = channel["id"].as_str().unwrap().to_owned();
    admin_ok(
        nexus,
        "PUT",
        &format!("/tenants/{ccid}/channels/{channel_id}/routing"),
        Some(json!({"queue": "support", "bot": "helper"})),
    )
    .await;
    Tenant {
        chat_key: key["key"].as_str().unwrap().to_owned(),
        channel_id,
    }
}

struct Customer {
    uri: String,
    token: String,
}

async fn customer(nexus: &Nexus, tenant: &Tenant, nickname: &str) -> Customer {
    let response = client()
        .post(nexus.url("/nexus/v3/chat/sessions"))
        .header("x-api-key", &tenant.chat_key)
        .json(&json!({"nickname": nickname}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    Customer {
        uri: body["data"]["selfUri"].as_str().unwrap().to_owned(),
        token: body["data"]["clientToken"].as_str().unwrap().to_owned(),
    }
}

impl Customer {
    async fn say(&self, text: &str) -> u16 {
        client()
            .post(format!("{}/messages", self.uri))
            .header("x-nexus-client-key", &self.token)
            .json(&json!({"type": "Text", "text": text}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn session(&self) -> Value {
        let response = client()
            .get(format!("{}/messages?after=0", self.uri))
            .header("x-nexus-client-key", &self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["data"].clone()
    }

    /// Waits (up to 20 s) until the session matches.
    async fn waits_for(&self, what: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let session = self.session().await;
            if what(&session) {
                return session;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("it never happened: {}", self.session().await);
    }

    /// Waits until a message with `text` is in the transcript.
    async fn sees(&self, text: &str) -> Value {
        self.waits_for(|session| {
            session["messages"]
                .as_array()
                .is_some_and(|messages| messages.iter().any(|m| m["text"] == text))
        })
        .await
    }
}

fn routed(state: &str) -> impl Fn(&Value) -> bool + '_ {
    move |session| session["routing"]["state"] == state
}

async fn a_tenant_bot_answers_hands_off_and_is_swapped_and_rolled_back(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let tenant = provision(&nexus, "acme", "faq", "faq-bot").await;

    // What is not a bot is refused before it is stored.
    let (status, refused) = upload(&nexus, "acme", "notabot", "bot", "pii-redact").await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["status"]["message"]
            .as_str()
            .unwrap()
            .contains("bot-turn"),
        "{refused}"
    );
    let (status, refused) = upload(&nexus, "acme", "web", "bot", "nexus-hello").await;
    assert_eq!(status, 400, "{refused}");

    let faq = admin_ok(&nexus, "GET", "/tenants/acme/components/faq", None).await;
    assert_eq!(faq["activeVersion"], 1);
    assert_eq!(faq["versions"].as_array().unwrap().len(), 1);

    // An agent is ready; the FAQ bot greets the customer with its menu and answers.
    let agent = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/agents",
        Some(json!({"username": "ann", "nickname": "Ann"})),
    )
    .await;
    let bearer = format!("Bearer {}", agent["token"].as_str().unwrap());
    let mut socket = Socket::open(
        &nexus.ws_url("/nexus/v3/workspace/socket"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(socket.next_json().await["messageType"], "Connected");
    let ready = client()
        .post(nexus.url("/nexus/v3/workspace/media/chat/ready"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let alice = customer(&nexus, &tenant, "Alice").await;
    alice
        .sees("Hello Alice! I can tell you about our opening hours, delivery or returns.")
        .await;
    alice.waits_for(routed("bot")).await;
    assert_eq!(alice.say("when are you open?").await, 200);
    alice
        .sees("We are open Monday to Friday, 8:00 to 18:00.")
        .await;

    // Asked for a person, it hands off: the agent is offered the conversation.
    assert_eq!(alice.say("can I talk to an agent").await, 200);
    alice
        .sees("Of course: I am passing you to a colleague.")
        .await;
    let invitation = loop {
        let event = socket.next_json().await;
        if event["notificationType"] == "Invited" {
            break event;
        }
    };
    let user_data = &invitation["interaction"]["userData"];
    assert_eq!(user_data["faqTopic"], "hours", "{invitation}");
    assert_eq!(
        user_data["botHandoff"]["reason"],
        "the customer asked for a person"
    );

    // Version 2 (another bot) takes over new conversations at once.
    let (status, v2) = upload(
        &nexus,
        "acme",
        "faq",
        "bot",
        "nexus-fixture-tenant-misbehave",
    )
    .await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["data"]["activeVersion"], 2);
    assert_eq!(v2["data"]["previousVersion"], 1);
    let bob = customer(&nexus, &tenant, "Bob").await;
    bob.sees("echo v2 here").await;
    assert_eq!(bob.say("hello there").await, 200);
    bob.sees("echo v2: hello there").await;

    // One call rolls it back.
    let rolled = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/components/faq/rollback",
        None,
    )
    .await;
    assert_eq!(rolled["activeVersion"], 1);
    let carol = customer(&nexus, &tenant, "Carol").await;
    carol
        .sees("Hello Carol! I can tell you about our opening hours, delivery or returns.")
        .await;

    // A component in use is not deleted.
    let (status, refused) = admin(&nexus, "DELETE", "/tenants/acme/components/faq", None).await;
    assert_eq!(status, 409, "{refused}");
}

async fn a_transform_redacts_before_postgres_and_the_bot(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let tenant = provision(&nexus, "acme", "echo", "nexus-fixture-tenant-misbehave").await;
    let (status, uploaded) = upload(&nexus, "acme", "pii", "transform", "pii-redact").await;
    assert_eq!(status, 201, "{uploaded}");
    let chains = admin_ok(
        &nexus,
        "PUT",
        &format!("/tenants/acme/channels/{}/transforms", tenant.channel_id),
        Some(json!({"inbound": ["pii"]})),
    )
    .await;
    assert_eq!(chains, json!({"inbound": ["pii"], "outbound": []}));
    let (status, refused) = admin(
        &nexus,
        "PUT",
        &format!("/tenants/acme/channels/{}/transforms", tenant.channel_id),
        Some(json!({"outbound": ["echo"]})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");

    let alice = customer(&nexus, &tenant, "Alice").await;
    alice.sees("echo v2 here").await;
    assert_eq!(
        alice
            .say("my card is 4111 1111 1111 1111, mail me at alice@example.com or call +1 415 555 2671")
            .await,
        200
    );
    let redacted = "my card is [card number], mail me at [email] or call [phone number]";
    alice.sees(redacted).await;
    // The bot saw only the redacted text, too.
    alice.sees(&format!("echo v2: {redacted}")).await;
    if let Some(database) = &nexus.database {
        let db = database.client().await;
        let stored: Vec<String> = db
            .query("SELECT coalesce(text, '') FROM messages", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let all = stored.join("\n");
        assert!(all.contains(redacted), "{all}");
        for secret in ["4111", "alice@example.com", "555 2671"] {
            assert!(!all.contains(secret), "PostgreSQL holds `{secret}`: {all}");
        }
    }
}

async fn misbehaving_components_fail_alone_and_are_disabled(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let bad = provision(&nexus, "bad", "echo", "nexus-fixture-tenant-misbehave").await;
    let good = provision(&nexus, "good", "faq", "faq-bot").await;
    admin_ok(
        &nexus,
        "PATCH",
        "/tenants/bad/components/echo",
        Some(json!({"cpuTimeMs": 50, "memoryMb": 16, "timeoutMs": 3000})),
    )
    .await;

    for (attempt, what) in ["loop", "memory", "forbidden"].into_iter().enumerate() {
        let customer = customer(&nexus, &bad, &format!("Victim{attempt}")).await;
        customer.sees("echo v2 here").await;
        // Another tenant's chat goes on meanwhile.
        let other = self::customer(&nexus, &good, &format!("Bystander{attempt}")).await;
        assert_eq!(customer.say(what).await, 200);
        assert_eq!(other.say("do you deliver?").await, 200);
        other
            .sees("Orders ship within two working days; delivery takes three to five more.")
            .await;
        // The misbehaving turn fails alone: the customer goes to the queue, with the reason.
        let session = customer.waits_for(routed("queued")).await;
        let transcript = session.to_string();
        assert!(!transcript.contains("echo v2: "), "{transcript}");
    }
    // Each failure was followed by a good turn (the next customer's greeting), which counts.
    let echo = admin_ok(&nexus, "GET", "/tenants/bad/components/echo", None).await;
    assert_eq!(echo["consecutiveFailures"], 1, "{echo}");
    assert_eq!(echo["enabled"], true);

    // Five failures in a row (customers whose first turn already loops) disable it.
    for attempt in 0..5 {
        let customer = customer(&nexus, &bad, &format!("loop{attempt}")).await;
        customer.waits_for(routed("queued")).await;
    }
    let echo = admin_ok(&nexus, "GET", "/tenants/bad/components/echo", None).await;
    assert_eq!(echo["enabled"], false, "{echo}");
    assert!(
        echo["disabledReason"]
            .as_str()
            .unwrap()
            .contains("failed calls in a row"),
        "{echo}"
    );
    let late = customer(&nexus, &bad, "Late").await;
    late.waits_for(routed("queued")).await;
    let metrics = client()
        .get(nexus.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // (A disabled component is not called at all: its bot's conversations go straight to routing.)
    for outcome in ["cpu_deadline", "memory", "forbidden_host"] {
        assert!(
            metrics.contains(&format!("component=\"echo\",outcome=\"{outcome}\"")),
            "{outcome} is not counted: {metrics}"
        );
    }
    // Enabling it again clears the failures.
    let enabled = admin_ok(
        &nexus,
        "PATCH",
        "/tenants/bad/components/echo",
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(enabled["consecutiveFailures"], 0);
    assert!(enabled["disabledReason"].is_null());
}

both_backends!(
    a_tenant_bot_answers_hands_off_and_is_swapped_and_rolled_back,
    a_transform_redacts_before_postgres_and_the_bot,
    misbehaving_components_fail_alone_and_are_disabled,
);
