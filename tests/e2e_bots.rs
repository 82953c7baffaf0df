//! End to end: third-party bots. A tenant registers a bot (a local receiver stands in for it)
//! with credentials that are sealed at rest; a channel's routing rule puts the bot in front of
//! the queue. The bot answers a live chat over the bot webhook contract, then hands off to an
//! agent, who is offered the conversation with the bot's context. A bot that is silent, broken
//! or disabled hands the customer to routing at once; a bot can end the conversation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::chat::ChatCustomer;
use support::ws::Socket;
use support::{Backends, Nexus, Received, Receiver, admin, admin_ok, client};

fn manifest(bot: &Receiver) -> String {
    use support::manifest::{application, component, jobs, provisioning, workspace_socket};
    [
        application("bots"),
        provisioning(),
        component("chat", "/nexus/v3/chat/...", &[]),
        component("workspace", "/nexus/v3/workspace/...", &[]),
        component(
            "bots",
            "/nexus/v3/bots/...",
            &[&format!("http://{}", bot.addr)],
        ),
        jobs("bots", "/nexus/v3/bots/jobs/run", 5000),
        r#"
[component.bots.tool.nexus]
request_timeout_ms = 45000

"#
        .to_owned(),
        workspace_socket(),
    ]
    .concat()
}

struct Tenant {
    chat_key: String,
    channel_id: String,
}

/// A tenant with a chat channel, a `support` queue, and the bot `helper` at the receiver in
/// front of it.
async fn provision(nexus: &Nexus, bot: &Receiver, bot_settings: Value) -> Tenant {
    admin_ok(
        nexus,
        "POST",
        "/tenants",
        Some(json!({"ccid": "acme", "name": "Acme"})),
    )
    .await;
    let channel = admin_ok(
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
    admin_ok(
        nexus,
        "PUT",
        "/tenants/acme/queues/support",
        Some(json!({})),
    )
    .await;
    let mut registration = json!({
        "name": "helper",
        "nickname": "Helper",
        "url": format!("http://{}/turns", bot.addr),
    });
    registration
        .as_object_mut()
        .unwrap()
        .extend(bot_settings.as_object().unwrap().clone());
    admin_ok(nexus, "POST", "/tenants/acme/bots", Some(registration)).await;
    let channel_id = channel["id"].as_str().unwrap().to_owned();
    admin_ok(
        nexus,
        "PUT",
        &format!("/tenants/acme/channels/{channel_id}/routing"),
        Some(json!({"queue": "support", "bot": "helper"})),
    )
    .await;
    Tenant {
        chat_key: key["key"].as_str().unwrap().to_owned(),
        channel_id,
    }
}

async fn customer(nexus: &Nexus, tenant: &Tenant, nickname: &str) -> ChatCustomer {
    ChatCustomer::start(nexus, &tenant.chat_key, nickname).await
}

fn turn(request: &Received) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

fn texts(messages: &[Value]) -> Vec<&str> {
    messages.iter().filter_map(|m| m["text"].as_str()).collect()
}

/// Waits (up to 15 s) until the conversation's routing state is `state`, from PostgreSQL or, on
/// the embedded backend, from what the agent-facing API cannot show: the customer's routing view.
async fn routing_state(customer: &ChatCustomer, state: &str) -> Value {
    for _ in 0..150 {
        let session = customer.session().await;
        if session["routing"]["state"] == state {
            return session;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the routing state never became {state}: {}",
        customer.session().await
    );
}

async fn a_bot_answers_a_chat_then_hands_off_to_an_agent(backends: Backends) {
    let bot = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&bot), backends).await;
    let tenant = provision(
        &nexus,
        &bot,
        json!({"credentials": {"Authorization": "Bearer s3cret-bot-token"}, "responseTimeoutSeconds": 5}),
    )
    .await;

    // The credentials are write-only: their names show, their values never do.
    let registered = admin_ok(&nexus, "GET", "/tenants/acme/bots/helper", None).await;
    assert_eq!(registered["credentialNames"], json!(["authorization"]));
    assert!(!registered.to_string().contains("s3cret"), "{registered}");
    let audit = admin_ok(&nexus, "GET", "/tenants/acme/audit", None).await;
    assert!(!audit.to_string().contains("s3cret"), "{audit}");
    if let Some(database) = &nexus.database {
        let db = database.client().await;
        let row = db
            .query_one("SELECT credentials FROM bots WHERE name = 'helper'", &[])
            .await
            .unwrap();
        let sealed: String = row.get(0);
        assert!(sealed.starts_with("v2."), "{sealed}");
        assert!(!sealed.contains("s3cret"), "stored in the clear: {sealed}");
    }
    // A rule names only a registered bot, and a bot in use is not deleted.
    let (status, refused) = admin(
        &nexus,
        "PUT",
        &format!("/tenants/acme/channels/{}/routing", tenant.channel_id),
        Some(json!({"queue": "support", "bot": "nobody"})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    let (status, refused) = admin(&nexus, "DELETE", "/tenants/acme/bots/helper", None).await;
    assert_eq!(status, 409, "{refused}");

    // An agent is ready; the bot takes the chat first.
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

    bot.reply_with(
        r#"{"actions": [{"type": "reply", "text": "Hello, I am Helper. What do you need?"}]}"#,
    );
    let alice = customer(&nexus, &tenant, "Alice").await;
    let first = bot.wait_for(1).await[0].clone();
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/turns");
    assert_eq!(
        first.headers["authorization"].to_str().unwrap(),
        "Bearer s3cret-bot-token"
    );
    let started = turn(&first);
    assert_eq!(started["event"], "started");
    assert_eq!(started["bot"], "helper");
    assert_eq!(started["conversation"]["id"], alice.id.as_str());
    assert_eq!(started["conversation"]["channelType"], "chat");
    assert_eq!(started["conversation"]["customer"]["nickname"], "Alice");
    assert_eq!(started["messages"], json!([]));
    let seen = alice
        .sees(|m| m["text"] == "Hello, I am Helper. What do you need?")
        .await;
    let greeting = seen
        .iter()
        .find(|m| m["text"] == "Hello, I am Helper. What do you need?")
        .unwrap();
    assert_eq!(greeting["from"]["type"], "Bot");
    assert_eq!(greeting["from"]["nickname"], "Helper");
    assert_eq!(
        routing_state(&alice, "bot").await["routing"]["state"],
        "bot"
    );

    // The customer asks for a person: the bot notes why and hands off to the queue.
    bot.reply_with(
        r#"{"actions": [
            {"type": "setUserData", "data": {"intent": "billing"}},
            {"type": "reply", "text": "Let me find you a person."},
            {"type": "handoff", "queue": "support", "reason": "asked for a person"}
        ]}"#,
    );
    alice.say("I need a person about my bill").await;
    let second = turn(&bot.wait_for(2).await[1]);
    assert_eq!(second["event"], "message");
    assert_eq!(
        second["messages"][0]["text"],
        "I need a person about my bill"
    );
    assert_eq!(second["messages"].as_array().unwrap().len(), 1);
    assert_ne!(second["turnId"], started["turnId"]);

    // The agent is offered it, with the bot's context in the user data.
    let invitation = loop {
        let event = socket.next_json().await;
        if event["notificationType"] == "Invited" {
            break event;
        }
    };
    let interaction = &invitation["interaction"];
    assert_eq!(interaction["id"], alice.id.as_str());
    assert_eq!(interaction["userData"]["intent"], "billing");
    assert_eq!(
        interaction["userData"]["botHandoff"]["reason"],
        "asked for a person"
    );
    assert_eq!(interaction["userData"]["botHandoff"]["bot"], "helper");
    assert_eq!(interaction["userData"]["botHandoff"]["byBot"], true);

    // The customer saw the bot's last words and the bot leave, not the note for agents.
    let seen = alice
        .sees(|m| m["type"] == "ParticipantLeft" && m["from"]["type"] == "Bot")
        .await;
    let said = texts(&seen);
    assert!(said.contains(&"Let me find you a person."), "{said:?}");
    assert!(
        !said.iter().any(|t| t.starts_with("Handed off by")),
        "{said:?}"
    );
    // The agent's transcript has the note.
    let accepted = client()
        .post(nexus.url(&format!(
            "/nexus/v3/workspace/media/chat/interactions/{}/accept",
            alice.id
        )))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let transcript: Value = client()
        .get(nexus.url(&format!(
            "/nexus/v3/workspace/media/chat/interactions/{}/messages",
            alice.id
        )))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent_texts: Vec<String> = transcript["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        agent_texts.contains(&"Handed off by Helper: asked for a person".to_owned()),
        "{agent_texts:?}"
    );

    // The bot is out of the conversation: what the customer says now is for the agent alone.
    alice.say("hello?").await;
    loop {
        let event = socket.next_json().await;
        if event["messageType"] == "MessageLogUpdated" && event.to_string().contains("hello?") {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bot.received().len(),
        2,
        "the bot got a turn after the handoff"
    );
}

async fn a_silent_or_broken_bot_hands_the_customer_to_routing(backends: Backends) {
    let bot = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&bot), backends).await;
    let tenant = provision(&nexus, &bot, json!({"responseTimeoutSeconds": 1})).await;

    // Silent: no answer within the bot's 1 s response timeout.
    bot.answer_next(&[0]);
    let silent = customer(&nexus, &tenant, "Sam").await;
    let queued = routing_state(&silent, "queued").await;
    assert_eq!(queued["routing"]["queue"], "support");
    assert_eq!(bot.received().len(), 1);

    // Broken: an answer outside the contract.
    bot.reply_with(r#"{"actions": [{"type": "dance"}]}"#);
    let broken = customer(&nexus, &tenant, "Bea").await;
    routing_state(&broken, "queued").await;

    // Failing: a 500.
    bot.reply_with("{}");
    bot.answer_next(&[500]);
    let failing = customer(&nexus, &tenant, "Fay").await;
    routing_state(&failing, "queued").await;

    // Disabled: not called at all; a new chat goes straight to the queue.
    admin_ok(
        &nexus,
        "PATCH",
        "/tenants/acme/bots/helper",
        Some(json!({"enabled": false})),
    )
    .await;
    let calls = bot.received().len();
    let direct = customer(&nexus, &tenant, "Dan").await;
    routing_state(&direct, "queued").await;
    assert_eq!(bot.received().len(), calls);

    // The handoffs say why, for the agent who gets them.
    if let Some(database) = &nexus.database {
        let db = database.client().await;
        let rows = db
            .query(
                "SELECT user_data->'botHandoff'->>'reason' FROM interactions \
                 WHERE user_data ? 'botHandoff' ORDER BY created_at",
                &[],
            )
            .await
            .unwrap();
        let reasons: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("no answer within"), "{reasons:?}");
        assert!(reasons[1].contains("`dance`"), "{reasons:?}");
        assert!(reasons[2].contains("500"), "{reasons:?}");
    }
}

async fn a_bot_asks_then_ends_the_conversation(backends: Backends) {
    let bot = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&bot), backends).await;
    let tenant = provision(&nexus, &bot, json!({})).await;

    bot.reply_with(
        r#"{"actions": [{"type": "ask", "text": "Track a parcel or return one?", "options": ["Track", "Return"]}]}"#,
    );
    let tom = customer(&nexus, &tenant, "Tom").await;
    let seen = tom
        .sees(|m| m["text"] == "Track a parcel or return one?")
        .await;
    let question = seen
        .iter()
        .find(|m| m["text"] == "Track a parcel or return one?")
        .unwrap();
    assert_eq!(question["data"]["options"], json!(["Track", "Return"]));

    bot.reply_with(
        r#"{"actions": [{"type": "reply", "text": "It arrives tomorrow. Bye!"}, {"type": "end", "reason": "resolved"}]}"#,
    );
    tom.say("Track").await;
    let seen = tom.sees(|m| m["type"] == "ChatEnded").await;
    assert!(texts(&seen).contains(&"It arrives tomorrow. Bye!"));
    let session = tom.session().await;
    assert_eq!(session["state"], "ended", "{session}");
    // Each customer message reached the bot once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent: Vec<String> = bot
        .received()
        .iter()
        .flat_map(|request| {
            turn(request)["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["text"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(sent, vec!["Track"]);
}

both_backends!(
    a_bot_answers_a_chat_then_hands_off_to_an_agent,
    a_silent_or_broken_bot_hands_the_customer_to_routing,
    a_bot_asks_then_ends_the_conversation,
);
