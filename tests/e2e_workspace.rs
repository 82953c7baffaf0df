//! End to end: agents over WebSocket and routing. A customer chats through the Chat API v3; an
//! agent desktop (a WebSocket client plus the Workspace REST API) goes ready, is offered the
//! routed chat, and works it to done.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use support::openapi::Api;
use support::ws::Socket;
use support::{ADMIN_TOKEN, Backends, Nexus, client};
use tokio_tungstenite::tungstenite::Message;

fn manifest() -> String {
    use support::manifest::{application, chat_socket, component, provisioning, workspace_socket};
    [
        application("workspace"),
        provisioning(),
        component("chat", "/nexus/v3/chat/...", &[]),
        component("workspace", "/nexus/v3/workspace/...", &[]),
        r#"
[component.chat.tool.nexus]
request_timeout_ms = 45000

[component.workspace.tool.nexus]
request_timeout_ms = 45000
[[component.workspace.tool.nexus.schedule]]
path = "/nexus/v3/workspace/sweep"
every_ms = 300
bearer = "{{ admin_token }}"

"#
        .to_owned(),
        workspace_socket(),
        chat_socket(),
    ]
    .concat()
}

/// The OpenAPI documents every answer in these tests is checked against.
struct Documents {
    chat: Api,
    provisioning: Api,
    workspace: Api,
}

fn documents() -> &'static Documents {
    static DOCUMENTS: OnceLock<Documents> = OnceLock::new();
    DOCUMENTS.get_or_init(|| Documents {
        chat: Api::load("chat-v3"),
        provisioning: Api::load("provisioning"),
        workspace: Api::load("workspace"),
    })
}

/// Panics unless the answer is what the API's OpenAPI document says.
fn check(method: &str, url: &str, status: u16, body: &Value) {
    let documents = documents();
    let api = if url.contains("/nexus/v3/chat/") {
        &documents.chat
    } else if url.contains("/nexus/v3/provisioning/") {
        &documents.provisioning
    } else {
        &documents.workspace
    };
    api.check(method, url, status, body);
}

/// One HTTP call with a JSON body; the status and the JSON answer, checked against its API's
/// OpenAPI document.
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
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    check(method, path, status, &body);
    (status, body)
}

async fn admin(nexus: &Nexus, method: &str, path: &str, body: Option<Value>) -> Value {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, answer) = call(
        nexus,
        method,
        &format!("/nexus/v3/provisioning{path}"),
        &[("authorization", &bearer)],
        body,
    )
    .await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    answer["data"].clone()
}

struct Tenant {
    chat_key: String,
}

/// A tenant with a chat channel routed to the `support` queue.
async fn provision(nexus: &Nexus, ccid: &str) -> Tenant {
    admin(
        nexus,
        "POST",
        "/tenants",
        Some(json!({"ccid": ccid, "name": ccid})),
    )
    .await;
    let channel = admin(
        nexus,
        "POST",
        &format!("/tenants/{ccid}/channels"),
        Some(json!({"type": "chat", "name": "web"})),
    )
    .await;
    let key = admin(
        nexus,
        "POST",
        &format!("/tenants/{ccid}/api-keys"),
        Some(json!({"name": "widget", "permission": "chat"})),
    )
    .await;
    admin(
        nexus,
        "PUT",
        &format!("/tenants/{ccid}/queues/support"),
        Some(json!({"skills": ["english"]})),
    )
    .await;
    let channel_id = channel["id"].as_str().unwrap().to_owned();
    admin(
        nexus,
        "PUT",
        &format!("/tenants/{ccid}/channels/{channel_id}/routing"),
        Some(json!({"queue": "support"})),
    )
    .await;
    Tenant {
        chat_key: key["key"].as_str().unwrap().to_owned(),
    }
}

struct Agent {
    id: String,
    token: String,
}

async fn add_agent(nexus: &Nexus, ccid: &str, username: &str, body: Value) -> Agent {
    let mut body = body;
    body["username"] = Value::from(username);
    let agent = admin(
        nexus,
        "POST",
        &format!("/tenants/{ccid}/agents"),
        Some(body),
    )
    .await;
    Agent {
        id: agent["id"].as_str().unwrap().to_owned(),
        token: agent["token"].as_str().unwrap().to_owned(),
    }
}

/// A Workspace API call as `agent`.
async fn work(
    nexus: &Nexus,
    agent: &Agent,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let bearer = format!("Bearer {}", agent.token);
    call(
        nexus,
        method,
        &format!("/nexus/v3/workspace/{path}"),
        &[("authorization", &bearer)],
        body,
    )
    .await
}

async fn ok(nexus: &Nexus, agent: &Agent, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = work(nexus, agent, method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer["data"].clone()
}

/// The agent's desktop socket, past its `Connected`.
async fn desktop(nexus: &Nexus, agent: &Agent, after: i64) -> Socket {
    let bearer = format!("Bearer {}", agent.token);
    let mut socket = Socket::open(
        &nexus.ws_url(&format!("/nexus/v3/workspace/socket?after={after}")),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(socket.next_json().await["messageType"], "Connected");
    socket
}

/// Reads events until one matches; the events before it are returned too. Every logged event
/// (one with a `seq`) must match the Workspace API's `Event` schema.
async fn until(socket: &mut Socket, what: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
    let mut seen = Vec::new();
    loop {
        let event = socket.next_json().await;
        if event.get("seq").is_some() {
            documents().workspace.check_schema("Event", &event);
        }
        if what(&event) {
            return (event, seen);
        }
        seen.push(event);
    }
}

fn invited(event: &Value) -> bool {
    event["notificationType"] == "Invited"
}

fn has_text(event: &Value, text: &str) -> bool {
    event["messageType"] == "MessageLogUpdated"
        && event["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == text)
}

struct Customer {
    uri: String,
    token: String,
}

async fn customer(nexus: &Nexus, tenant: &Tenant, nickname: &str, email: &str) -> Customer {
    let response = client()
        .post(nexus.url("/nexus/v3/chat/sessions"))
        .header("x-api-key", &tenant.chat_key)
        .json(&json!({"nickname": nickname, "email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    check("POST", "/nexus/v3/chat/sessions", 201, &body);
    Customer {
        uri: body["data"]["selfUri"].as_str().unwrap().to_owned(),
        token: body["data"]["clientToken"].as_str().unwrap().to_owned(),
    }
}

impl Customer {
    async fn say(&self, text: &str) {
        let url = format!("{}/messages", self.uri);
        let response = client()
            .post(&url)
            .header("x-nexus-client-key", &self.token)
            .json(&json!({"type": "Text", "text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        check("POST", &url, 200, &response.json::<Value>().await.unwrap());
    }

    async fn read(&self, after: i64, timeout: u64) -> Value {
        let url = format!("{}/messages?after={after}&timeout={timeout}", self.uri);
        let response = client()
            .get(&url)
            .header("x-nexus-client-key", &self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.json::<Value>().await.unwrap();
        check("GET", &url, 200, &body);
        body["data"].clone()
    }

    /// Every message the customer sees.
    async fn transcript(&self) -> Vec<Value> {
        self.read(0, 0).await["messages"]
            .as_array()
            .unwrap()
            .clone()
    }
}

async fn an_agent_works_a_routed_chat_to_done(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let tenant = provision(&nexus, "acme").await;
    let agent = add_agent(
        &nexus,
        "acme",
        "ann",
        json!({"nickname": "Ann", "skills": ["english"], "capacity": {"chat": 1}}),
    )
    .await;
    let mut socket = desktop(&nexus, &agent, 0).await;
    let state = ok(&nexus, &agent, "POST", "media/chat/ready", None).await;
    assert_eq!(state["state"], "ready");
    assert_eq!(socket.next_json().await["messageType"], "AgentStateChanged");

    let alice = customer(&nexus, &tenant, "Alice", "alice@example.com").await;
    let (invitation, _) = until(&mut socket, invited).await;
    let id = invitation["interaction"]["id"].as_str().unwrap().to_owned();
    assert_eq!(invitation["interaction"]["queue"], "support");
    assert_eq!(
        invitation["interaction"]["capabilities"],
        json!(["accept", "reject"])
    );

    let accepted = ok(
        &nexus,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/accept"),
        None,
    )
    .await;
    assert_eq!(accepted["routingState"], "assigned");
    // The customer sees the agent join.
    let seen = alice.read(1, 5).await;
    assert_eq!(seen["messages"][0]["type"], "ParticipantJoined");
    assert_eq!(seen["messages"][0]["from"]["nickname"], "Ann");

    alice.say("my parcel is late").await;
    until(&mut socket, |e| has_text(e, "my parcel is late")).await;

    ok(
        &nexus,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/send-message"),
        Some(json!({"message": "let me check"})),
    )
    .await;
    ok(
        &nexus,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/send-message"),
        Some(json!({"message": "note: VIP", "visibility": "Agent"})),
    )
    .await;
    ok(
        &nexus,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/send-url"),
        Some(json!({"url": "https://example.com/track"})),
    )
    .await;
    ok(
        &nexus,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/attach-user-data"),
        Some(json!({"userData": {"order": "A-1"}})),
    )
    .await;
    let texts: Vec<Value> = alice
        .transcript()
        .await
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert!(texts.contains(&json!("let me check")), "{texts:?}");
    assert!(
        texts.contains(&json!("https://example.com/track")),
        "{texts:?}"
    );
    assert!(
        !texts.contains(&json!("note: VIP")),
        "a whisper reached the customer: {texts:?}"
    );
    let agent_view = ok(
        &nexus,
        &agent,
        "GET",
        &format!("media/chat/interactions/{id}/messages"),
        None,
    )
    .await;
    assert!(
        agent_view["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "note: VIP")
    );

    // Leave, closing the chat; then done.
    let left = ok(
        &nexus,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/leave"),
        Some(json!({"afterAction": "ForceClose"})),
    )
    .await;
    assert_eq!(left["chatEnded"], true);
    let end = alice.read(0, 0).await;
    assert_eq!(end["state"], "ended");
    assert!(
        end["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["type"] == "ChatEnded")
    );
    ok(
        &nexus,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/complete"),
        None,
    )
    .await;
    until(&mut socket, |e| e["notificationType"] == "Completed").await;

    // The agent is free again: the next customer is offered at once.
    let _bob = customer(&nexus, &tenant, "Bob", "bob@example.com").await;
    until(&mut socket, invited).await;

    if backends == Backends::Real {
        let db = nexus.database.as_ref().unwrap().client().await;
        let row = db
            .query_one(
                "SELECT routing_state, last_agent_id::text, (SELECT count(*) FROM messages WHERE interaction_id = $1) FROM interactions WHERE id = $1",
                &[&uuid::Uuid::parse_str(&id).unwrap()],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "done");
        assert_eq!(row.get::<_, Option<String>>(1), Some(agent.id.clone()));
        assert!(row.get::<_, i64>(2) >= 8);
    }
}

async fn capacity_transfer_conference_and_after_actions(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let tenant = provision(&nexus, "acme").await;
    let ann = add_agent(
        &nexus,
        "acme",
        "ann",
        json!({"skills": ["english"], "capacity": {"chat": 1}}),
    )
    .await;
    let bob = add_agent(
        &nexus,
        "acme",
        "bob",
        json!({"skills": ["english"], "capacity": {"chat": 2}}),
    )
    .await;
    let sue = add_agent(
        &nexus,
        "acme",
        "sue",
        json!({"role": "supervisor", "skills": ["english"], "capacity": {"chat": 0}}),
    )
    .await;
    let mut ann_socket = desktop(&nexus, &ann, 0).await;
    let mut bob_socket = desktop(&nexus, &bob, 0).await;
    ok(&nexus, &ann, "POST", "media/chat/ready", None).await;

    // Ann holds one at most: the second customer waits, and is told their place.
    let _first = customer(&nexus, &tenant, "C1", "c1@example.com").await;
    let (invitation, _) = until(&mut ann_socket, invited).await;
    let first_id = invitation["interaction"]["id"].as_str().unwrap().to_owned();
    let second = customer(&nexus, &tenant, "C2", "c2@example.com").await;
    let waiting = second.read(0, 0).await;
    assert_eq!(waiting["routing"]["state"], "queued");
    assert_eq!(waiting["routing"]["position"], 1);
    assert!(
        ann_socket.stays_quiet(Duration::from_millis(700)).await,
        "Ann was offered past her capacity"
    );

    // Bob goes ready and is offered the waiting customer. Then Ann rejects hers: it goes back
    // to the queue at its place and to the longest-idle agent with room, Bob, not back to Ann.
    ok(&nexus, &bob, "POST", "media/chat/ready", None).await;
    let (bob_invite, _) = until(&mut bob_socket, invited).await;
    let bob_second = bob_invite["interaction"]["id"].as_str().unwrap().to_owned();
    assert_ne!(bob_second, first_id);
    ok(
        &nexus,
        &bob,
        "POST",
        &format!("media/chat/interactions/{bob_second}/accept"),
        None,
    )
    .await;
    ok(
        &nexus,
        &ann,
        "POST",
        &format!("media/chat/interactions/{first_id}/reject"),
        None,
    )
    .await;
    let (next_invite, _) = until(&mut bob_socket, invited).await;
    let bob_first = next_invite["interaction"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(bob_first, first_id);
    ok(
        &nexus,
        &bob,
        "POST",
        &format!("media/chat/interactions/{bob_first}/accept"),
        None,
    )
    .await;

    // Conference: Bob invites Ann in; both are in it; Ann is removed again.
    let joined = ok(
        &nexus,
        &bob,
        "POST",
        &format!("media/chat/interactions/{bob_first}/invite"),
        Some(json!({"agentId": ann.id})),
    )
    .await;
    assert_eq!(
        joined["participants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["type"] == "Agent")
            .count(),
        2
    );
    ok(
        &nexus,
        &bob,
        "POST",
        &format!("media/chat/interactions/{bob_first}/remove-from-conference"),
        Some(json!({"agentId": ann.id})),
    )
    .await;

    // A supervisor finds the tenant's open chats to supervise; an agent may not list them.
    let open = ok(
        &nexus,
        &sue,
        "GET",
        "media/chat/interactions?scope=tenant",
        None,
    )
    .await;
    let open_ids: Vec<&str> = open["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|interaction| interaction["id"].as_str().unwrap())
        .collect();
    assert!(open_ids.contains(&bob_first.as_str()), "{open}");
    let (status, _) = work(
        &nexus,
        &ann,
        "GET",
        "media/chat/interactions?scope=tenant",
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = work(
        &nexus,
        &sue,
        "GET",
        "media/chat/interactions?scope=all",
        None,
    )
    .await;
    assert_eq!(status, 400);
    // Whom a chat can go to: the tenant's agents with their state, and its queues.
    let targets = ok(&nexus, &ann, "GET", "targets", None).await;
    let agents: Vec<(&str, &str)> = targets["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|agent| {
            (
                agent["id"].as_str().unwrap(),
                agent["role"].as_str().unwrap(),
            )
        })
        .collect();
    for (id, role) in [
        (&ann.id, "agent"),
        (&bob.id, "agent"),
        (&sue.id, "supervisor"),
    ] {
        assert!(agents.contains(&(id.as_str(), role)), "{targets}");
    }
    assert!(
        targets["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|queue| queue["name"] == "support"),
        "{targets}"
    );

    // A supervisor monitors (says nothing), coaches (to agents only), barges in (to all).
    let (status, _) = work(
        &nexus,
        &ann,
        "POST",
        &format!("media/chat/interactions/{bob_first}/switch-to-monitor"),
        None,
    )
    .await;
    assert_eq!(
        status, 404,
        "an agent does not even see another agent's chat"
    );
    ok(
        &nexus,
        &sue,
        "POST",
        &format!("media/chat/interactions/{bob_first}/switch-to-monitor"),
        None,
    )
    .await;
    let (status, _) = work(
        &nexus,
        &sue,
        "POST",
        &format!("media/chat/interactions/{bob_first}/send-message"),
        Some(json!({"message": "psst"})),
    )
    .await;
    assert_eq!(status, 409, "a monitor says nothing");
    ok(
        &nexus,
        &sue,
        "POST",
        &format!("media/chat/interactions/{bob_first}/switch-to-coach"),
        None,
    )
    .await;
    ok(
        &nexus,
        &sue,
        "POST",
        &format!("media/chat/interactions/{bob_first}/send-message"),
        Some(json!({"message": "offer a refund"})),
    )
    .await;
    until(&mut bob_socket, |e| has_text(e, "offer a refund")).await;

    // Transfer to Ann (free again): she is offered it, and accepts.
    ok(
        &nexus,
        &bob,
        "POST",
        &format!("media/chat/interactions/{bob_first}/transfer-agent"),
        Some(json!({"agentId": ann.id})),
    )
    .await;
    let (transfer, _) = until(&mut ann_socket, |e| {
        invited(e) && e["interaction"]["id"] == bob_first.as_str()
    })
    .await;
    assert_eq!(transfer["interaction"]["routingState"], "invited");
    ok(
        &nexus,
        &ann,
        "POST",
        &format!("media/chat/interactions/{bob_first}/accept"),
        None,
    )
    .await;

    // KeepAlive: the chat stays open without agents; the customer's next message routes it again.
    ok(
        &nexus,
        &ann,
        "POST",
        &format!("media/chat/interactions/{bob_first}/leave"),
        Some(json!({"afterAction": "KeepAlive"})),
    )
    .await;
    let (status, _) = work(
        &nexus,
        &sue,
        "POST",
        &format!("media/chat/interactions/{bob_first}/leave"),
        Some(json!({"afterAction": "KeepAlive"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = work(
        &nexus,
        &ann,
        "POST",
        &format!("media/chat/interactions/{bob_first}/leave"),
        Some(json!({"afterAction": "bogus"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Ann completes her part; the chat is still open for the customer.
    ok(
        &nexus,
        &ann,
        "POST",
        &format!("media/chat/interactions/{bob_first}/complete"),
        None,
    )
    .await;

    // CloseIfNoAgents: Bob leaves his second chat, the last agent in it: it ends.
    let left = ok(
        &nexus,
        &bob,
        "POST",
        &format!("media/chat/interactions/{bob_second}/leave"),
        Some(json!({"afterAction": "CloseIfNoAgents"})),
    )
    .await;
    assert_eq!(left["chatEnded"], true);

    // A token of nobody is refused; an agent cannot touch what is not theirs.
    let nobody = Agent {
        id: String::new(),
        token: "nxa_nope".into(),
    };
    let (status, _) = work(&nexus, &nobody, "GET", "me", None).await;
    assert_eq!(status, 401);
}

both_backends!(
    an_agent_works_a_routed_chat_to_done,
    capacity_transfer_conference_and_after_actions,
    a_customer_socket_follows_the_chat_and_resumes_without_gap_or_repeat,
    an_invitation_is_withdrawn_when_the_customer_leaves_first
);

/// A customer who leaves while an agent's invitation is pending: the routing sweep takes the
/// invitation back (the desktop is told `Revoked`), the agent's capacity is free for the next
/// customer, and the ended conversation is not in the agent's list.
async fn an_invitation_is_withdrawn_when_the_customer_leaves_first(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let tenant = provision(&nexus, "acme").await;
    let agent = add_agent(
        &nexus,
        "acme",
        "ann",
        json!({"nickname": "Ann", "skills": ["english"], "capacity": {"chat": 1}}),
    )
    .await;
    let mut socket = desktop(&nexus, &agent, 0).await;
    ok(&nexus, &agent, "POST", "media/chat/ready", None).await;

    let alice = customer(&nexus, &tenant, "Alice", "alice@example.com").await;
    let (invitation, _) = until(&mut socket, invited).await;
    let first = invitation["interaction"]["id"].as_str().unwrap().to_owned();
    let ended = client()
        .delete(&alice.uri)
        .header("x-nexus-client-key", &alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    until(&mut socket, |event| {
        event["notificationType"] == "Revoked" && event["interaction"]["id"] == first.as_str()
    })
    .await;

    // Her capacity of one is free: the next customer is offered to her.
    customer(&nexus, &tenant, "Bob", "bob@example.com").await;
    let (invitation, _) = until(&mut socket, invited).await;
    let second = invitation["interaction"]["id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let listed = ok(&nexus, &agent, "GET", "media/chat/interactions", None).await;
    let ids: Vec<&str> = listed["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_one_redis_and_a_dropped_socket_loses_nothing() {
    let first = Nexus::start(&manifest(), Backends::Real).await;
    let second = first.peer().await;
    let tenant = provision(&first, "acme").await;
    let agent = add_agent(
        &first,
        "acme",
        "ann",
        json!({"skills": ["english"], "capacity": {"chat": 2}}),
    )
    .await;
    // The agent on the first host, the customer on the second.
    let mut socket = desktop(&first, &agent, 0).await;
    ok(&first, &agent, "POST", "media/chat/ready", None).await;
    let alice = customer(&second, &tenant, "Alice", "alice@example.com").await;
    let (invitation, _) = until(&mut socket, invited).await;
    let id = invitation["interaction"]["id"].as_str().unwrap().to_owned();
    let accepted_seq = {
        ok(
            &first,
            &agent,
            "POST",
            &format!("media/chat/interactions/{id}/accept"),
            None,
        )
        .await;
        let (event, _) = until(&mut socket, |e| e["notificationType"] == "StatusChange").await;
        event["seq"].as_i64().unwrap()
    };

    // The socket drops; the customer writes meanwhile; the agent reconnects (to the other host)
    // with the last seq seen and gets what was missed.
    socket.close().await;
    alice.say("are you there?").await;
    alice.say("hello?").await;
    let mut again = desktop(&second, &agent, accepted_seq).await;
    let (_, before) = until(&mut again, |e| has_text(e, "hello?")).await;
    assert!(
        before.iter().any(|e| has_text(e, "are you there?")),
        "{before:?}"
    );

    // The long-poll (for runtimes without WebSockets) has the same events.
    let events = ok(
        &second,
        &agent,
        "GET",
        &format!("events?after={accepted_seq}&timeout=1"),
        None,
    )
    .await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| has_text(e, "hello?")),
        "{events}"
    );

    // Two hosts routing at once never overfill an agent: 6 customers, capacity 2, both hosts.
    let mut customers = Vec::new();
    for n in 0..6 {
        let host = if n % 2 == 0 { &first } else { &second };
        customers.push(
            customer(
                host,
                &tenant,
                &format!("C{n}"),
                &format!("c{n}@example.com"),
            )
            .await,
        );
    }
    // Wait (bounded) until routing has settled: one more offered, the other five queued; the
    // agent's load never passes 2 on the way.
    let db = first.database.as_ref().unwrap().client().await;
    let mut settled = (0, 0);
    for _ in 0..200 {
        let mine = ok(&first, &agent, "GET", "media/chat/interactions", None).await;
        let held = mine["interactions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["routingState"] != "done")
            .count();
        assert!(held <= 2, "over capacity: {mine}");
        let queued: i64 = db
            .query_one(
                "SELECT count(*) FROM interactions WHERE routing_state = 'queued'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        settled = (held, queued);
        if settled == (2, 5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(settled, (2, 5), "(held, queued)");
}

/// Redis dies and comes back empty (killed and started again, not flushed) under a live chat:
/// the agent's open socket is told to reconnect, and on reconnecting hears that events were
/// lost and then gets every new one, numbered above all it saw before; the customer's next
/// message is taken and reaches the agent, whose answer reaches the customer; the agent, ready
/// in PostgreSQL, is put back in line and offered a new customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarting_empty_loses_no_agent_and_no_customer() {
    let mut redis = support::redis_server::RedisServer::start().await;
    let nexus =
        Nexus::start_with(&manifest(), Backends::Real, &[("REDIS_URL", &redis.url())]).await;
    let tenant = provision(&nexus, "acme").await;
    let agent = add_agent(
        &nexus,
        "acme",
        "ann",
        json!({"nickname": "Ann", "skills": ["english"], "capacity": {"chat": 2}}),
    )
    .await;
    let mut socket = desktop(&nexus, &agent, 0).await;
    ok(&nexus, &agent, "POST", "media/chat/ready", None).await;
    let alice = customer(&nexus, &tenant, "Alice", "alice@example.com").await;
    let (invitation, _) = until(&mut socket, invited).await;
    let id = invitation["interaction"]["id"].as_str().unwrap().to_owned();
    ok(
        &nexus,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/accept"),
        None,
    )
    .await;
    alice.say("before the restart").await;
    let (event, _) = until(&mut socket, |e| has_text(e, "before the restart")).await;
    let last_seen = event["seq"].as_i64().unwrap();

    redis.kill().await;
    redis.start_again().await;

    // What was published while the node's subscription was down is lost to it: the socket is
    // closed with 1012, to reconnect and catch up from the log.
    let close = socket.closed(Duration::from_secs(30)).await;
    assert_eq!(close.map(|frame| u16::from(frame.code)), Some(1012));

    // The customer writes: taken, and the reconnected desktop is told that the log restarted,
    // then gets the message, numbered above everything it saw.
    alice.say("after the restart").await;
    let mut again = desktop(&nexus, &agent, last_seen).await;
    let (event, before) = until(&mut again, |e| has_text(e, "after the restart")).await;
    assert!(
        before.iter().any(|e| e["messageType"] == "EventsLost"),
        "{before:?}"
    );
    assert!(
        event["seq"].as_i64().unwrap() > last_seen,
        "{} after {last_seen}",
        event["seq"]
    );
    for earlier in &before {
        if let Some(seq) = earlier["seq"].as_i64() {
            assert!(seq > last_seen, "a number given again: {earlier}");
        }
    }

    // The agent answers; the customer's long-poll gets it.
    ok(
        &nexus,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/send-message"),
        Some(json!({"message": "still here"})),
    )
    .await;
    let mut answered = false;
    let mut after = 0;
    for _ in 0..20 {
        let read = alice.read(after, 5).await;
        let messages = read["messages"].as_array().unwrap();
        if messages.iter().any(|m| m["text"] == "still here") {
            answered = true;
            break;
        }
        after = messages
            .iter()
            .filter_map(|m| m["position"].as_i64())
            .max()
            .unwrap_or(after);
    }
    assert!(answered, "the customer got the agent's answer");

    // Still ready in PostgreSQL, the agent is back in line: a new customer is offered to them.
    let me = ok(&nexus, &agent, "GET", "me", None).await;
    assert_eq!(me["state"], "ready", "{me}");
    let _bob = customer(&nexus, &tenant, "Bob", "bob@example.com").await;
    let (offer, _) = until(&mut again, invited).await;
    assert_ne!(offer["interaction"]["id"], id.as_str());
}

impl Customer {
    /// The customer's WebSocket from `after` (the token in the query, as a browser sends it),
    /// past its `Connected`, which is returned too.
    async fn socket_on(&self, nexus: &Nexus, after: i64) -> (Socket, Value) {
        let path = self.uri.split_once("/nexus/").unwrap().1;
        let url = nexus.ws_url(&format!(
            "/nexus/{path}/socket?after={after}&clientToken={}",
            self.token
        ));
        let mut socket = Socket::open(&url, &[]).await;
        let connected = socket.next_json().await;
        assert_eq!(connected["type"], "Connected", "{connected}");
        documents().chat.check_schema("SocketEvent", &connected);
        (socket, connected)
    }

    /// The positions of the transcript messages the customer may see, in order.
    async fn visible_positions(&self) -> Vec<i64> {
        let mut positions = Vec::new();
        let mut after = 0;
        loop {
            let read = self.read(after, 0).await;
            positions.extend(
                read["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["position"].as_i64().unwrap()),
            );
            after = read["nextPosition"].as_i64().unwrap();
            if read["more"] != true {
                return positions;
            }
        }
    }
}

/// Reads a customer socket's events until one matches; every `Message` seen (the match
/// included) is added to `messages`, which must rise in position, with no repeat.
async fn customer_until(
    socket: &mut Socket,
    messages: &mut Vec<Value>,
    what: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let event = socket.next_json().await;
        documents().chat.check_schema("SocketEvent", &event);
        if event["type"] == "Message" {
            let position = event["position"].as_i64().unwrap();
            assert_eq!(event["message"]["position"], position, "{event}");
            assert_eq!(event["message"]["visibility"], "All", "{event}");
            if let Some(last) = messages.last() {
                assert!(
                    position > last["position"].as_i64().unwrap(),
                    "position {position} after {last}: a repeat or out of order"
                );
            }
            messages.push(event.clone());
        }
        if what(&event) {
            return event;
        }
    }
}

fn message_text(event: &Value, text: &str) -> bool {
    event["type"] == "Message" && event["message"]["text"] == text
}

/// The customer's WebSocket: agent joins, typing, messages, routing and the end pushed as they
/// happen; whispers never; dropped and resumed from a position, many times while the agent
/// writes, with no gap and no repeat against the transcript.
async fn a_customer_socket_follows_the_chat_and_resumes_without_gap_or_repeat(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let tenant = provision(&nexus, "acme").await;
    let agent = add_agent(
        &nexus,
        "acme",
        "ann",
        json!({"nickname": "Ann", "skills": ["english"], "capacity": {"chat": 1}}),
    )
    .await;
    let mut desk = desktop(&nexus, &agent, 0).await;
    let alice = customer(&nexus, &tenant, "Alice", "alice@example.com").await;
    let mut seen = Vec::new();
    let (mut socket, connected) = alice.socket_on(&nexus, 0).await;
    assert_eq!(connected["state"], "active");
    assert_eq!(connected["routing"]["queue"], "support");
    // No agent is ready: Alice waits first in the queue.
    assert_eq!(connected["routing"]["state"], "queued", "{connected}");
    assert_eq!(connected["routing"]["position"], 1, "{connected}");

    ok(&nexus, &agent, "POST", "media/chat/ready", None).await;
    let routing = customer_until(&mut socket, &mut seen, |e| e["type"] == "Routing").await;
    assert_eq!(routing["routing"]["state"], "invited", "{routing}");
    let (invitation, _) = until(&mut desk, invited).await;
    let id = invitation["interaction"]["id"].as_str().unwrap().to_owned();
    let interaction = |op: &str| format!("media/chat/interactions/{id}/{op}");
    ok(&nexus, &agent, "POST", &interaction("accept"), None).await;
    let joined = customer_until(&mut socket, &mut seen, |e| {
        e["type"] == "Message" && e["message"]["type"] == "ParticipantJoined"
    })
    .await;
    assert_eq!(joined["message"]["from"]["nickname"], "Ann");
    let routing = customer_until(&mut socket, &mut seen, |e| e["type"] == "Routing").await;
    assert_eq!(routing["routing"]["state"], "assigned", "{routing}");

    ok(
        &nexus,
        &agent,
        "POST",
        &interaction("send-typing-started"),
        None,
    )
    .await;
    let typing = customer_until(&mut socket, &mut seen, |e| e["type"] == "Typing").await;
    assert_eq!(typing["typing"], true);
    assert_eq!(typing["participantType"], "Agent");
    assert_eq!(typing["nickname"], "Ann");
    // A whisper among agents, then a message Alice may see: only the second reaches her.
    let send = |text: &str, visibility: &str| json!({"message": text, "visibility": visibility});
    ok(
        &nexus,
        &agent,
        "POST",
        &interaction("send-message"),
        Some(send("VIP", "Agent")),
    )
    .await;
    ok(
        &nexus,
        &agent,
        "POST",
        &interaction("send-message"),
        Some(send("hello", "All")),
    )
    .await;
    customer_until(&mut socket, &mut seen, |e| message_text(e, "hello")).await;
    assert!(!seen.iter().any(|e| e["message"]["text"] == "VIP"));
    alice.say("my parcel is late").await;
    customer_until(&mut socket, &mut seen, |e| {
        message_text(e, "my parcel is late")
    })
    .await;

    // Dropped while the agent and the customer write at once (so that messages are published
    // in another order than they were committed), resumed from the last position seen, over
    // and over.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let url = format!(
                "{}/nexus/v3/workspace/{}",
                nexus.base,
                interaction("send-message")
            );
            let (token, alice_uri, alice_token) =
                (agent.token.clone(), alice.uri.clone(), alice.token.clone());
            tokio::spawn(async move {
                for n in 0..10 {
                    let text = format!("update {w}-{n}");
                    let response = if w % 2 == 0 {
                        client()
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({"message": text}))
                            .send()
                            .await
                    } else {
                        client()
                            .post(format!("{alice_uri}/messages"))
                            .header("x-nexus-client-key", &alice_token)
                            .json(&json!({"type": "Text", "text": text}))
                            .send()
                            .await
                    };
                    assert_eq!(response.unwrap().status(), 200);
                }
            })
        })
        .collect();
    for _ in 0..6 {
        socket.close().await;
        let after = seen.last().unwrap()["position"].as_i64().unwrap();
        let (resumed, connected) = alice.socket_on(&nexus, after).await;
        assert_eq!(connected["after"], after);
        socket = resumed;
        // Whatever comes next continues the sequence (checked by `customer_until`).
        customer_until(&mut socket, &mut seen, |e| e["type"] == "Message").await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let updates = |seen: &[Value]| {
        seen.iter()
            .filter(|e| {
                e["message"]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("update "))
            })
            .count()
    };
    while updates(&seen) < 40 {
        customer_until(&mut socket, &mut seen, |e| e["type"] == "Message").await;
    }
    let positions: Vec<i64> = seen
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(
        positions,
        alice.visible_positions().await,
        "a gap or a repeat"
    );

    // The end: her own leaving, and the state.
    let response = client()
        .post(format!("{}/end", alice.uri))
        .header("x-nexus-client-key", &alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let state = customer_until(&mut socket, &mut seen, |e| e["type"] == "State").await;
    assert_eq!(state["state"], "ended");
    socket.send(r#"{"type":"ping"}"#).await;
    customer_until(&mut socket, &mut seen, |e| e["type"] == "Pong").await;

    // Refused without the session's own token.
    let path = alice.uri.split_once("/nexus/").unwrap().1;
    let bob = customer(&nexus, &tenant, "Bob", "bob@example.com").await;
    for (query, status) in [
        (String::new(), 401),
        (format!("?clientToken={}", bob.token), 401),
        ("?clientToken=nonsense".to_owned(), 401),
        (format!("?clientToken={}&after=-1", alice.token), 400),
    ] {
        let url = nexus.ws_url(&format!("/nexus/{path}/socket{query}"));
        match Socket::try_open(&url, &[]).await {
            support::ws::Opened::Refused(got, body) => assert_eq!(got, status, "{query}: {body}"),
            support::ws::Opened::Open(_) => panic!("{query}: the socket opened"),
        }
    }
}

/// Two hosts on one Redis and PostgreSQL: the customer's socket on one, the agent on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_socket_on_one_host_hears_an_agent_on_another() {
    let first = Nexus::start(&manifest(), Backends::Real).await;
    let second = first.peer().await;
    let tenant = provision(&first, "acme").await;
    let agent = add_agent(
        &second,
        "acme",
        "ann",
        json!({"nickname": "Ann", "skills": ["english"], "capacity": {"chat": 1}}),
    )
    .await;
    let mut desk = desktop(&second, &agent, 0).await;
    ok(&second, &agent, "POST", "media/chat/ready", None).await;
    let alice = customer(&first, &tenant, "Alice", "alice@example.com").await;
    let (mut socket, _) = alice.socket_on(&first, 0).await;
    let (invitation, _) = until(&mut desk, invited).await;
    let id = invitation["interaction"]["id"].as_str().unwrap().to_owned();
    ok(
        &second,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/accept"),
        None,
    )
    .await;
    ok(
        &second,
        &agent,
        "POST",
        &format!("media/chat/interactions/{id}/send-message"),
        Some(json!({"message": "from the other host"})),
    )
    .await;
    let mut seen = Vec::new();
    customer_until(&mut socket, &mut seen, |e| {
        message_text(e, "from the other host")
    })
    .await;
    let positions: Vec<i64> = seen
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, alice.visible_positions().await);
}

/// A customer more than 200 messages behind gets 200, then a close (4001) that tells them to
/// reconnect from the last position they got; then the rest, with no gap and no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_transcript_is_replayed_in_batches() {
    let nexus = Nexus::start(&manifest(), Backends::Embedded).await;
    let tenant = provision(&nexus, "acme").await;
    let alice = customer(&nexus, &tenant, "Alice", "alice@example.com").await;
    for n in 0..230 {
        alice.say(&format!("line {n}")).await;
    }
    let mut positions = Vec::new();
    let mut after = 0;
    let mut closes = Vec::new();
    loop {
        let (mut socket, _) = alice.socket_on(&nexus, after).await;
        let close = loop {
            match socket.next_or_close(Duration::from_secs(10)).await {
                Ok(Message::Text(text)) => {
                    let event: Value = serde_json::from_str(text.as_str()).unwrap();
                    documents().chat.check_schema("SocketEvent", &event);
                    if event["type"] == "Message" {
                        positions.push(event["position"].as_i64().unwrap());
                        if event["message"]["text"] == "line 229" {
                            break None;
                        }
                    }
                }
                Ok(other) => panic!("{other:?}"),
                Err(close) => break close,
            }
        };
        let Some(close) = close else { break };
        assert_eq!(u16::from(close.code), 4001, "{close:?}");
        closes.push(close);
        after = *positions.last().unwrap();
    }
    assert_eq!(closes.len(), 1, "one batch of 200, then the rest live");
    assert_eq!(
        positions,
        alice.visible_positions().await,
        "a gap or a repeat"
    );
}
