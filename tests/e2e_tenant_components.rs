//! End to end: tenant components. A tenant uploads its own bot (the example FAQ bot) and puts it
//! in front of a queue; it answers a live chat and hands off to an agent. A new version takes
//! over, and one call rolls it back, and a swap under steady load fails no request. A redaction
//! transform masks card numbers, emails and phone numbers (the customer's, the bot's and the
//! agent's) before they reach PostgreSQL, the bot, the agent or the webhooks. A bot that
//! loops, hoards memory or calls a host it was not granted fails that turn only (the customer
//! goes to routing) while another tenant's chats go on, and is disabled after failing again
//! and again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::chat::ChatCustomer;
use support::ws::Socket;
use support::{ADMIN_TOKEN, Backends, Nexus, Receiver, admin, admin_ok, client, wasm};

fn manifest() -> String {
    use support::manifest::{application, component, jobs, provisioning, workspace_socket};
    const SERVICE: &str = "http://tenant-components.nexus.internal";
    [
        application("tenant-components"),
        provisioning(),
        component("chat", "/nexus/v3/chat/...", &[SERVICE]),
        component("workspace", "/nexus/v3/workspace/...", &[SERVICE]),
        component("bots", "/nexus/v3/bots/...", &[SERVICE]),
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
    upload_bytes(
        nexus,
        ccid,
        name,
        kind,
        std::fs::read(wasm(crate_name)).unwrap(),
    )
    .await
}

/// Uploads `wasm` as the next version of `name`; the answer is checked against the OpenAPI.
async fn upload_bytes(
    nexus: &Nexus,
    ccid: &str,
    name: &str,
    kind: &str,
    wasm: Vec<u8>,
) -> (u16, Value) {
    let path = format!("/nexus/v3/provisioning/tenants/{ccid}/components/{name}/versions");
    let response = client()
        .post(nexus.url(&format!("{path}?kind={kind}")))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    support::openapi::Api::load("provisioning").check("POST", &path, status, &body);
    (status, body)
}

/// Runs `nexus component <args> [the wasm of crate_name]` against `nexus` for the tenant `acme`.
async fn nexus_component(
    nexus: &Nexus,
    args: &[&str],
    crate_name: Option<&str>,
) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_nexus"));
    command
        .arg("component")
        .args(args)
        .args(["--url", &nexus.base, "--tenant", "acme"])
        .env("NEXUS_ADMIN_TOKEN", ADMIN_TOKEN);
    if let Some(crate_name) = crate_name {
        command.arg(wasm(crate_name));
    }
    command.output().await.unwrap()
}

/// [`nexus_component`], which must succeed: what it printed, as JSON.
async fn push(nexus: &Nexus, args: &[&str], crate_name: Option<&str>) -> Value {
    let output = nexus_component(nexus, args, crate_name).await;
    assert!(
        output.status.success(),
        "nexus component {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
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

/// An agent of `ccid`, connected over WebSocket and ready for chats: its bearer header value and
/// its socket.
async fn ready_agent(nexus: &Nexus, ccid: &str) -> (String, Socket) {
    let agent = admin_ok(
        nexus,
        "POST",
        &format!("/tenants/{ccid}/agents"),
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
    (bearer, socket)
}

async fn customer(nexus: &Nexus, tenant: &Tenant, nickname: &str) -> ChatCustomer {
    ChatCustomer::start(nexus, &tenant.chat_key, nickname).await
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
    let (status, refused_upload) = upload(&nexus, "acme", "web", "bot", "nexus-hello").await;
    assert_eq!(status, 400, "{refused_upload}");
    // The CLI says why (what the API said), and fails.
    let refused = nexus_component(
        &nexus,
        &["push", "--name", "web", "--kind", "bot"],
        Some("nexus-hello"),
    )
    .await;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("nexus answered 400 Bad Request"), "{said}");
    let message = refused_upload["status"]["message"].as_str().unwrap();
    assert!(said.contains(message), "{said}");

    // Nor is anything over the size cap (8 MiB), before it is even compiled.
    let mut oversized = std::fs::read(wasm("faq-bot")).unwrap();
    oversized.resize((8 << 20) + 1, 0);
    let (status, refused) = upload_bytes(&nexus, "acme", "faq", "bot", oversized).await;
    assert_eq!(status, 413, "{refused}");

    let faq = admin_ok(&nexus, "GET", "/tenants/acme/components/faq", None).await;
    assert_eq!(faq["activeVersion"], 1);
    assert_eq!(faq["versions"].as_array().unwrap().len(), 1);

    // An agent is ready; the FAQ bot greets the customer with its menu and answers.
    let (_bearer, mut socket) = ready_agent(&nexus, "acme").await;

    let alice = customer(&nexus, &tenant, "Alice").await;
    alice
        .sees_text("Hello Alice! I can tell you about our opening hours, delivery or returns.")
        .await;
    alice.waits_for(routed("bot")).await;
    alice.say("when are you open?").await;
    alice
        .sees_text("We are open Monday to Friday, 8:00 to 18:00.")
        .await;

    // Asked for a person, it hands off: the agent is offered the conversation.
    alice.say("can I talk to an agent").await;
    alice
        .sees_text("Of course: I am passing you to a colleague.")
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

    // Version 2 (another bot), pushed with the CLI, takes over new conversations at once.
    let v2 = push(
        &nexus,
        &["push", "--name", "faq", "--kind", "bot"],
        Some("nexus-fixture-tenant-misbehave"),
    )
    .await;
    assert_eq!(v2["activeVersion"], 2, "{v2}");
    assert_eq!(v2["previousVersion"], 1);
    let bob = customer(&nexus, &tenant, "Bob").await;
    bob.sees_text("echo v2 here").await;
    bob.say("hello there").await;
    bob.sees_text("echo v2: hello there").await;

    // One call rolls it back.
    let rolled = push(&nexus, &["rollback", "--name", "faq"], None).await;
    assert_eq!(rolled["activeVersion"], 1, "{rolled}");
    let carol = customer(&nexus, &tenant, "Carol").await;
    carol
        .sees_text("Hello Carol! I can tell you about our opening hours, delivery or returns.")
        .await;

    // A component in use is not deleted.
    let (status, refused) = admin(&nexus, "DELETE", "/tenants/acme/components/faq", None).await;
    assert_eq!(status, 409, "{refused}");
}

async fn a_transform_redacts_before_postgres_the_bot_the_agent_and_the_webhooks(
    backends: Backends,
) {
    let receiver = Receiver::start().await;
    let manifest = manifest()
        + &support::manifest::component(
            "webhooks",
            "/nexus/v3/webhooks/...",
            &[&format!("http://{}", receiver.addr)],
        )
        + &support::manifest::jobs("webhooks", "/nexus/v3/webhooks/jobs/run", 5000);
    let nexus = Nexus::start(&manifest, backends).await;
    let tenant = provision(&nexus, "acme", "echo", "nexus-fixture-tenant-misbehave").await;
    let (status, uploaded) = upload(&nexus, "acme", "pii", "transform", "pii-redact").await;
    assert_eq!(status, 201, "{uploaded}");
    let chains = admin_ok(
        &nexus,
        "PUT",
        &format!("/tenants/acme/channels/{}/transforms", tenant.channel_id),
        Some(json!({"inbound": ["pii"], "outbound": ["pii"]})),
    )
    .await;
    assert_eq!(chains, json!({"inbound": ["pii"], "outbound": ["pii"]}));
    let (status, refused) = admin(
        &nexus,
        "PUT",
        &format!("/tenants/acme/channels/{}/transforms", tenant.channel_id),
        Some(json!({"outbound": ["echo"]})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/webhooks",
        Some(json!({"url": format!("http://{}/hooks", receiver.addr), "events": ["MESSAGE"]})),
    )
    .await;
    let (bearer, mut socket) = ready_agent(&nexus, "acme").await;

    // Inbound: the customer's message is masked before it is stored and before the bot sees it.
    let alice = customer(&nexus, &tenant, "Alice").await;
    alice.sees_text("echo v2 here").await;
    alice
        .say("my card is 4111 1111 1111 1111, mail me at alice@example.com or call +1 415 555 2671")
        .await;
    let redacted = "my card is [card number], mail me at [email] or call [phone number]";
    alice.sees_text(redacted).await;
    alice.sees_text(&format!("echo v2: {redacted}")).await;

    // Outbound: what the bot says is masked too.
    alice.say("which card on file?").await;
    alice.sees_text("the card on file is [card number]").await;

    // The agent who takes over sees only masked text, and what the agent writes is masked
    // before the customer (and PostgreSQL) get it.
    alice.say("an agent please").await;
    let invitation = loop {
        let event = socket.next_json().await;
        if event["notificationType"] == "Invited" {
            break event;
        }
    };
    let id = invitation["interaction"]["id"].as_str().unwrap().to_owned();
    let workspace = |method: &str, path: String| {
        client()
            .request(
                method.parse().unwrap(),
                nexus.url(&format!("/nexus/v3/workspace/{path}")),
            )
            .header("authorization", &bearer)
    };
    let accepted = workspace("POST", format!("media/chat/interactions/{id}/accept"))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let sent = workspace("POST", format!("media/chat/interactions/{id}/send-message"))
        .json(&json!({"message": "I can call you on +44 20 7946 0958"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    alice.sees_text("I can call you on [phone number]").await;
    let transcript: Value = workspace("GET", format!("media/chat/interactions/{id}/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent_saw = transcript["data"]["messages"].to_string();
    assert!(agent_saw.contains(redacted), "{agent_saw}");
    assert!(
        agent_saw.contains("the card on file is [card number]"),
        "{agent_saw}"
    );

    const SECRETS: [&str; 4] = ["4111", "alice@example.com", "555 2671", "7946 0958"];
    for secret in SECRETS {
        assert!(
            !agent_saw.contains(secret),
            "the agent saw `{secret}`: {agent_saw}"
        );
    }

    // The webhooks carry the masked text only, up to the agent's message (the last one).
    let mut delivered = String::new();
    for _ in 0..200 {
        delivered = receiver
            .received()
            .iter()
            .map(|request| String::from_utf8_lossy(&request.body).into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        if delivered.contains("I can call you on [phone number]") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        delivered.contains("I can call you on [phone number]"),
        "{delivered}"
    );
    assert!(delivered.contains(redacted), "{delivered}");
    for secret in SECRETS {
        assert!(
            !delivered.contains(secret),
            "a webhook carried `{secret}`: {delivered}"
        );
    }

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
        for secret in SECRETS {
            assert!(!all.contains(secret), "PostgreSQL holds `{secret}`: {all}");
        }
    }

    // Fail closed: once the transform is `required`, its being disabled refuses the channel's
    // messages (503, to be sent again) rather than letting them through unmasked.
    let marked = admin_ok(
        &nexus,
        "PATCH",
        "/tenants/acme/components/pii",
        Some(json!({"required": true, "enabled": false})),
    )
    .await;
    assert_eq!(
        (&marked["required"], &marked["enabled"]),
        (&json!(true), &json!(false)),
        "{marked}"
    );
    let (status, refused) = alice.try_say("call me on +1 415 555 2671").await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["status"]["code"], "UNAVAILABLE", "{refused}");
    let refused = workspace("POST", format!("media/chat/interactions/{id}/send-message"))
        .json(&json!({"message": "or on +44 20 7946 0958"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    // A bot cannot be required: it hands off when it fails.
    let (status, answer) = admin(
        &nexus,
        "PATCH",
        "/tenants/acme/components/echo",
        Some(json!({"required": true})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    // Enabled again, it masks again; not required, a disabled one is skipped.
    admin_ok(
        &nexus,
        "PATCH",
        "/tenants/acme/components/pii",
        Some(json!({"enabled": true})),
    )
    .await;
    alice.say("call me on +1 415 555 2671").await;
    alice.sees_text("call me on [phone number]").await;
    admin_ok(
        &nexus,
        "PATCH",
        "/tenants/acme/components/pii",
        Some(json!({"required": false, "enabled": false})),
    )
    .await;
    alice.say("plain words").await;
    alice.sees_text("plain words").await;
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
        customer.sees_text("echo v2 here").await;
        // Another tenant's chat goes on meanwhile.
        let other = self::customer(&nexus, &good, &format!("Bystander{attempt}")).await;
        customer.say(what).await;
        other.say("do you deliver?").await;
        other
            .sees_text("Orders ship within two working days; delivery takes three to five more.")
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
    let metrics = nexus.metrics().await;
    // (A disabled component is not called at all: its bot's conversations go straight to routing.)
    for outcome in ["cpu_deadline", "memory", "forbidden_host"] {
        assert!(
            metrics.contains(&format!("kind=\"bot\",outcome=\"{outcome}\"")),
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

/// What the simulated customers saw, as it happens: the conversations they held and which
/// version answered.
#[derive(Default)]
struct LoadTally {
    conversations: std::sync::atomic::AtomicU32,
    answered_by_v1: std::sync::atomic::AtomicU32,
    answered_by_v2: std::sync::atomic::AtomicU32,
}

impl LoadTally {
    fn get(counter: &std::sync::atomic::AtomicU32) -> u32 {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (up to a minute) until `what` holds of the tally, as the load goes on.
    async fn until(&self, what: &str, condition: impl Fn(&LoadTally) -> bool) {
        for _ in 0..1200 {
            if condition(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{what} did not happen within a minute: {} conversations, v1 {}, v2 {}",
            Self::get(&self.conversations),
            Self::get(&self.answered_by_v1),
            Self::get(&self.answered_by_v2)
        );
    }
}

/// One customer after another, until `stop`: each starts a chat, waits for the bot's greeting,
/// asks a question and waits for the answer. Any request that is not answered with success, or
/// a turn that goes to routing instead of the bot, fails the test.
async fn keep_chatting(
    nexus: std::sync::Arc<Nexus>,
    tenant: std::sync::Arc<Tenant>,
    worker: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tally: std::sync::Arc<LoadTally>,
) {
    use std::sync::atomic::Ordering::SeqCst;
    const V1_ANSWER: &str = "We are open Monday to Friday, 8:00 to 18:00.";
    let mut held = 0;
    while !stop.load(SeqCst) {
        let nickname = format!("w{worker}c{held}");
        let customer = customer(&nexus, &tenant, &nickname).await;
        let texts = |session: &Value| -> Vec<String> {
            session["messages"]
                .as_array()
                .map(|messages| {
                    messages
                        .iter()
                        .filter_map(|m| m["text"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        // The greeting, from either version.
        customer
            .waits_for(|session| {
                assert_ne!(
                    session["routing"]["state"], "queued",
                    "a turn failed: {session}"
                );
                texts(session).iter().any(|text| {
                    text.starts_with(&format!("Hello {nickname}!")) || text == "echo v2 here"
                })
            })
            .await;
        let question = format!("when are you open, asks {nickname}?");
        customer.say(&question).await;
        let answered = customer
            .waits_for(|session| {
                assert_ne!(
                    session["routing"]["state"], "queued",
                    "a turn failed: {session}"
                );
                texts(session)
                    .iter()
                    .any(|text| text == V1_ANSWER || *text == format!("echo v2: {question}"))
            })
            .await;
        if texts(&answered).iter().any(|text| text == V1_ANSWER) {
            tally.answered_by_v1.fetch_add(1, SeqCst);
        } else {
            tally.answered_by_v2.fetch_add(1, SeqCst);
        }
        tally.conversations.fetch_add(1, SeqCst);
        held += 1;
    }
}

async fn a_swap_under_steady_load_fails_no_request(backends: Backends) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let nexus = Arc::new(Nexus::start(&manifest(), backends).await);
    let tenant = Arc::new(provision(&nexus, "acme", "faq", "faq-bot").await);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(LoadTally::default());
    let workers: Vec<_> = (0..6)
        .map(|worker| {
            tokio::spawn(keep_chatting(
                Arc::clone(&nexus),
                Arc::clone(&tenant),
                worker,
                Arc::clone(&stop),
                Arc::clone(&tally),
            ))
        })
        .collect();

    // Under load (every step waits for conversations to be answered, not for time to pass):
    // v2 is uploaded and takes over, then one call rolls back to v1.
    tally
        .until("v1 answering under load", |t| {
            LoadTally::get(&t.answered_by_v1) >= 6
        })
        .await;
    let (status, v2) = upload(
        &nexus,
        "acme",
        "faq",
        "bot",
        "nexus-fixture-tenant-misbehave",
    )
    .await;
    assert_eq!(status, 201, "{v2}");
    tally
        .until("v2 answering", |t| LoadTally::get(&t.answered_by_v2) >= 6)
        .await;
    let rolled = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/components/faq/rollback",
        None,
    )
    .await;
    assert_eq!(rolled["activeVersion"], 1);
    let v1_before = LoadTally::get(&tally.answered_by_v1);
    tally
        .until("v1 answering again after the rollback", |t| {
            LoadTally::get(&t.answered_by_v1) >= v1_before + 6
        })
        .await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        // A worker that saw a failed request panicked: the join fails the test.
        worker.await.unwrap();
    }
    println!(
        "swap under load: {} conversations, answered by v1 {}, by v2 {}",
        LoadTally::get(&tally.conversations),
        LoadTally::get(&tally.answered_by_v1),
        LoadTally::get(&tally.answered_by_v2)
    );

    // Every call of the component succeeded, on this host's count too.
    let metrics = nexus.metrics().await;
    let calls: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            line.starts_with("nexus_tenant_component_calls_total{") && line.contains("kind=\"bot\"")
        })
        .collect();
    assert!(
        calls.iter().any(|line| line.contains("outcome=\"ok\"")),
        "{metrics}"
    );
    assert!(
        calls.iter().all(|line| line.contains("outcome=\"ok\"")),
        "a call failed during the swap: {calls:?}"
    );
}

/// A turn in flight when a new version takes over finishes on the version it started on; the
/// next conversation gets the new one.
async fn a_call_in_flight_finishes_on_its_version(backends: Backends) {
    let slow = Receiver::start().await;
    slow.reply_with("the old version answered");
    slow.delay_answers(Duration::from_secs(3));
    let nexus = Nexus::start(&manifest(), backends).await;
    let tenant = provision(&nexus, "acme", "faq", "nexus-fixture-tenant-misbehave").await;
    admin_ok(
        &nexus,
        "PATCH",
        "/tenants/acme/components/faq",
        Some(json!({"allowedHosts": [format!("http://{}", slow.addr)]})),
    )
    .await;

    let alice = customer(&nexus, &tenant, "Alice").await;
    alice.sees_text("echo v2 here").await;
    alice
        .say(&format!("granted http://{}/slow", slow.addr))
        .await;
    // The turn is in flight (v1 waits on the slow host) when v2 is pushed.
    slow.wait_for(1).await;
    let v2 = push(
        &nexus,
        &["push", "--name", "faq", "--kind", "bot"],
        Some("faq-bot"),
    )
    .await;
    assert_eq!(v2["activeVersion"], 2, "{v2}");
    let session = alice.session().await;
    assert!(
        !session.to_string().contains("it said"),
        "the turn ended before the swap: {session}"
    );
    alice.sees_text("it said: the old version answered").await;
    let bob = customer(&nexus, &tenant, "Bob").await;
    bob.sees_text("Hello Bob! I can tell you about our opening hours, delivery or returns.")
        .await;
}

/// Waits (up to 10 s) until `nexus` logged that it loaded `version` of the component `faq`.
async fn waits_until_loaded(nexus: &Nexus, version: i64) {
    for _ in 0..100 {
        let loaded = nexus.log_events().iter().any(|event| {
            event["fields"]["message"] == "tenant component loaded"
                && event["fields"]["component"] == "faq"
                && event["fields"]["version"] == version
        });
        if loaded {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the host never loaded version {version}: {}", nexus.logs());
}

/// Two hosts on one Redis and one PostgreSQL: a version pushed through one is loaded by the
/// other as soon as it is announced, before any call needs it; and the other serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_host_loads_an_announced_version_before_it_is_called() {
    let first = Nexus::start(&manifest(), Backends::Real).await;
    let second = first.peer().await;
    let tenant = provision(&first, "acme", "faq", "faq-bot").await;
    // Uploaded through the first host: the second loads it on the announcement alone.
    waits_until_loaded(&second, 1).await;

    let v2 = push(
        &first,
        &["push", "--name", "faq", "--kind", "bot"],
        Some("nexus-fixture-tenant-misbehave"),
    )
    .await;
    assert_eq!(v2["activeVersion"], 2, "{v2}");
    waits_until_loaded(&second, 2).await;

    // A chat served by the second host meets version 2.
    let on_second = Tenant {
        chat_key: tenant.chat_key.clone(),
        channel_id: tenant.channel_id.clone(),
    };
    let bob = customer(&second, &on_second, "Bob").await;
    bob.sees_text("echo v2 here").await;
}

both_backends!(
    a_tenant_bot_answers_hands_off_and_is_swapped_and_rolled_back,
    a_swap_under_steady_load_fails_no_request,
    a_call_in_flight_finishes_on_its_version,
    a_transform_redacts_before_postgres_the_bot_the_agent_and_the_webhooks,
    misbehaving_components_fail_alone_and_are_disabled,
);
