//! The conversations core end to end, through a real `nexus up`: a tenant provisioned over the
//! provisioning API, a customer chatting through the Chat API v3 as the widgets do (form-encoded
//! `data[...]`), the transcript in PostgreSQL and in the history API. Every response is checked
//! against the OpenAPI documents in `openapi/`.
//!
//! Each scenario runs on the real Redis and PostgreSQL and on the embedded defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::openapi::Api;
use support::{ADMIN_TOKEN, Backends, Nexus, client};

const MANIFEST: &str = r#"
spin_manifest_version = 2

[application]
name = "conversations"

[variables]
redis_address = { default = "redis://127.0.0.1:6379" }
redis_host = { default = "127.0.0.1:6379" }
postgres_address = { default = "postgres://127.0.0.1:5432/unused" }
postgres_host = { default = "127.0.0.1:5432" }
redis_key_prefix = { default = "nexus:" }
admin_token = { default = "", secret = true }
credentials_key = { default = "dGVzdC1jcmVkZW50aWFscy1rZXktMzItYnl0ZXMtISE=", secret = true }

[[trigger.http]]
route = "/nexus/v3/provisioning/..."
component = "provisioning"

[[trigger.http]]
route = "/nexus/v3/chat/..."
component = "chat"

[[trigger.http]]
route = "/nexus/v3/history/..."
component = "history"

[component.provisioning]
source = "{provisioning}"
allowed_outbound_hosts = ["postgres://{{ postgres_host }}"]
[component.provisioning.variables]
postgres_address = "{{ postgres_address }}"
admin_token = "{{ admin_token }}"
credentials_key = "{{ credentials_key }}"

[component.chat]
source = "{chat}"
allowed_outbound_hosts = ["redis://{{ redis_host }}", "postgres://{{ postgres_host }}"]
[component.chat.variables]
redis_address = "{{ redis_address }}"
redis_key_prefix = "{{ redis_key_prefix }}"
postgres_address = "{{ postgres_address }}"
[component.chat.tool.nexus]
request_timeout_ms = 45000

[component.history]
source = "{history}"
allowed_outbound_hosts = ["postgres://{{ postgres_host }}"]
[component.history.variables]
postgres_address = "{{ postgres_address }}"
"#;

both_backends!(
    a_whole_chat_is_durable_and_searchable,
    tabs_and_long_polls_share_one_transcript,
    bad_inputs_get_their_documented_codes,
    provisioning_manages_keys_and_channels,
    tenants_are_isolated,
    live_state_is_rebuilt_after_redis_loses_it,
    long_transcripts_read_in_full_from_redis_and_postgresql,
    a_customer_sends_a_file_and_downloads_it,
);

/// A request body.
enum Body<'a> {
    None,
    Json(Value),
    /// Form-encoded, as the widgets send it.
    Form(&'a [(&'a str, &'a str)]),
    Raw(&'a str, Vec<u8>),
}

/// A client of the three APIs that checks every answer against their OpenAPI documents.
struct Client {
    http: reqwest::Client,
    base: String,
    chat: Api,
    provisioning: Api,
    history: Api,
}

impl Client {
    fn new(nexus: &Nexus) -> Client {
        Client {
            http: client(),
            base: nexus.base.clone(),
            chat: Api::load("chat-v3"),
            provisioning: Api::load("provisioning"),
            history: Api::load("history"),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> (u16, Value) {
        let url = self.url(path);
        let mut request = self
            .http
            .request(method.parse().unwrap(), &url)
            .header("x-test", "1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request
                .header("content-type", "application/json")
                .body(value.to_string()),
            Body::Form(fields) => request
                .header(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=UTF-8",
                )
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(fields.iter())
                        .finish(),
                ),
            Body::Raw(content_type, bytes) => {
                request.header("content-type", content_type).body(bytes)
            }
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path} answered {status} with non-JSON: {text}"));
        let path_only = url.trim_start_matches(&self.base).to_owned();
        let api = if path_only.contains("/nexus/v3/chat/") {
            &self.chat
        } else if path_only.contains("/nexus/v3/provisioning/") {
            &self.provisioning
        } else {
            &self.history
        };
        api.check(method, &path_only, status, &body);
        (status, body)
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let body = body.map_or(Body::None, Body::Json);
        self.call(
            method,
            &format!("/nexus/v3/provisioning{path}"),
            &[("authorization", &auth)],
            body,
        )
        .await
    }

    /// A tenant with a chat channel, a chat key and a history key.
    async fn provision(&self, ccid: &str) -> Tenant {
        let (status, _) = self
            .admin(
                "POST",
                "/tenants",
                Some(json!({"ccid": ccid, "name": format!("{ccid} Inc.")})),
            )
            .await;
        assert_eq!(status, 201);
        let (status, channel) = self
            .admin(
                "POST",
                &format!("/tenants/{ccid}/channels"),
                Some(json!({"type": "chat", "name": "GlobalChatSwitchboard"})),
            )
            .await;
        assert_eq!(status, 201);
        let mut keys = Vec::new();
        for (name, permission) in [("widget", "chat"), ("crm", "history")] {
            let (status, key) = self
                .admin(
                    "POST",
                    &format!("/tenants/{ccid}/api-keys"),
                    Some(json!({"name": name, "permission": permission})),
                )
                .await;
            assert_eq!(status, 201);
            keys.push(key["data"].clone());
        }
        Tenant {
            ccid: ccid.to_owned(),
            chat_key: keys[0]["key"].as_str().unwrap().to_owned(),
            chat_key_id: keys[0]["id"].as_str().unwrap().to_owned(),
            history_key: keys[1]["key"].as_str().unwrap().to_owned(),
            channel_id: channel["data"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Tries to start a chat with `key`, as a visitor named "c".
    async fn try_start(&self, key: &str) -> (u16, Value) {
        self.start_with(key, &[("data[nickname]", "c")]).await
    }

    /// POSTs a session start with `key` and the widget form `fields`.
    async fn start_with(&self, key: &str, fields: &[(&str, &str)]) -> (u16, Value) {
        self.call(
            "POST",
            "/nexus/v3/chat/sessions",
            &[("x-api-key", key)],
            Body::Form(fields),
        )
        .await
    }

    /// Starts a chat as the widgets do.
    async fn start_chat(&self, tenant: &Tenant, fields: &[(&str, &str)]) -> Session {
        let (status, body) = self.start_with(&tenant.chat_key, fields).await;
        assert_eq!(status, 201, "{body}");
        let data = &body["data"];
        Session {
            uri: data["selfUri"].as_str().unwrap().to_owned(),
            token: data["clientToken"].as_str().unwrap().to_owned(),
            id: data["sessionId"].as_str().unwrap().to_owned(),
            contact_id: data["contactId"].as_str().unwrap().to_owned(),
            chat_key: tenant.chat_key.clone(),
        }
    }

    async fn on_session(
        &self,
        session: &Session,
        method: &str,
        suffix: &str,
        body: Body<'_>,
    ) -> (u16, Value) {
        self.call(
            method,
            &format!("{}{suffix}", session.uri),
            &[
                ("x-api-key", &session.chat_key),
                ("x-nexus-client-key", &session.token),
            ],
            body,
        )
        .await
    }

    async fn say(&self, session: &Session, text: &str) -> Value {
        let (status, body) = self
            .on_session(
                session,
                "POST",
                "/messages",
                Body::Form(&[("data[type]", "Text"), ("data[text]", text)]),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["message"].clone()
    }

    /// The transcript the customer sees after `after`.
    async fn read(&self, session: &Session, after: i64) -> Value {
        let (status, body) = self
            .on_session(
                session,
                "GET",
                &format!("/messages?after={after}"),
                Body::None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    async fn history(&self, tenant: &Tenant, path: &str) -> (u16, Value) {
        self.call(
            "GET",
            &format!("/nexus/v3/history{path}"),
            &[("x-api-key", &tenant.history_key)],
            Body::None,
        )
        .await
    }
}

struct Tenant {
    ccid: String,
    chat_key: String,
    chat_key_id: String,
    history_key: String,
    channel_id: String,
}

struct Session {
    uri: String,
    token: String,
    id: String,
    contact_id: String,
    chat_key: String,
}

fn texts(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "Text")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

fn positions(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["position"].as_i64().unwrap())
        .collect()
}

const ADA: &[(&str, &str)] = &[
    ("data[firstName]", "Ada"),
    ("data[lastName]", "Lovelace"),
    ("data[email]", "Ada@Example.com"),
    ("data[endpoint]", "GlobalChatSwitchboard"),
    ("data[stream]", "live"),
    ("data[ChatProfile]", "gold"),
];

/// Start, talk, update user data, end; then the transcript is in PostgreSQL and the history API,
/// and the contact is found by the email the widget sent.
async fn a_whole_chat_is_durable_and_searchable(backends: Backends) {
    let nexus = Nexus::start(MANIFEST, backends).await;
    let api = Client::new(&nexus);
    let tenant = api.provision("acme").await;
    let session = api.start_chat(&tenant, ADA).await;
    assert!(session.uri.starts_with(&nexus.base));

    api.say(&session, "Hello, my order A-17 has not arrived")
        .await;
    let (status, typing) = api
        .on_session(
            &session,
            "POST",
            "/messages",
            Body::Form(&[("data[type]", "TypingStarted")]),
        )
        .await;
    assert_eq!((status, &typing["data"]["typing"]), (200, &json!(true)));
    let (status, notice) = api
        .on_session(
            &session,
            "POST",
            "/messages",
            Body::Form(&[
                ("data[type]", "CustomNotice"),
                ("data[text]", "page changed"),
                ("data[customData][page]", "/checkout"),
            ]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        notice["data"]["message"]["data"],
        json!({"page": "/checkout"})
    );
    api.say(&session, "Can you check the delivery?").await;
    let (status, updated) = api
        .on_session(
            &session,
            "POST",
            "/user-data",
            Body::Form(&[("data[userData][order]", "A-17")]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        updated["data"]["userData"],
        json!({"ChatProfile": "gold", "order": "A-17", "stream": "live"})
    );

    let transcript = api.read(&session, 0).await;
    assert_eq!(
        texts(&transcript["messages"]),
        [
            "Hello, my order A-17 has not arrived",
            "Can you check the delivery?"
        ]
    );
    // The user-data record is for agents: the customer skips its position.
    assert_eq!(positions(&transcript["messages"]), [1, 2, 3, 4]);
    assert_eq!(transcript["nextPosition"], 5);

    let (status, ended) = api.on_session(&session, "POST", "/end", Body::None).await;
    assert_eq!(status, 200);
    let ended_types: Vec<&str> = ended["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(ended_types, ["ParticipantLeft", "ChatEnded"]);
    // Ending again is no error, and adds nothing.
    let (status, again) = api.on_session(&session, "DELETE", "", Body::None).await;
    assert_eq!(
        (status, again["data"]["messages"].clone()),
        (200, json!([]))
    );
    let (status, after_end) = api
        .on_session(
            &session,
            "POST",
            "/messages",
            Body::Form(&[("data[text]", "still there?")]),
        )
        .await;
    assert_eq!(
        (status, &after_end["status"]["code"]),
        (409, &json!("INVALID_SESSION"))
    );
    let (_, info) = api.on_session(&session, "GET", "", Body::None).await;
    assert_eq!(info["data"]["state"], "ended");
    // A long-poll on an ended session does not wait: nothing more will come.
    let asked = Instant::now();
    let (status, last) = api
        .on_session(&session, "GET", "/messages?after=7&timeout=20", Body::None)
        .await;
    assert_eq!((status, &last["data"]["state"]), (200, &json!("ended")));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );

    if let Some(database) = &nexus.database {
        let db = database.client().await;
        let rows = db
            .query(
                "SELECT m.position, m.type, coalesce(m.text, '') FROM messages m \
                 JOIN tenants t ON t.id = m.tenant_id \
                 WHERE t.ccid = 'acme' AND m.interaction_id = $1::text::uuid ORDER BY position",
                &[&session.id],
            )
            .await
            .unwrap();
        let stored: Vec<(i32, String, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(stored.len(), 7, "{stored:?}");
        assert_eq!(stored[1].2, "Hello, my order A-17 has not arrived");
        assert_eq!(stored[6].1, "ChatEnded");
        let state: String = db
            .query_one(
                "SELECT state FROM interactions WHERE id = $1::text::uuid",
                &[&session.id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(state, "ended");
    }

    let (status, contacts) = api
        .history(&tenant, "/contacts?email=ada%40example.com")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        contacts["data"]["items"][0]["id"],
        session.contact_id.as_str()
    );
    assert_eq!(contacts["data"]["items"][0]["firstName"], "Ada");
    let (_, interactions) = api
        .history(
            &tenant,
            &format!("/contacts/{}/interactions", session.contact_id),
        )
        .await;
    assert_eq!(interactions["data"]["items"][0]["id"], session.id.as_str());
    assert_eq!(interactions["data"]["items"][0]["state"], "ended");
    assert_eq!(interactions["data"]["items"][0]["messageCount"], 7);
    // The whole transcript, every visibility, in pages of 3.
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api
            .history(
                &tenant,
                &format!("/interactions/{}/messages?limit=3{cursor}", session.id),
            )
            .await;
        assert_eq!(status, 200);
        all.extend(page["data"]["items"].as_array().unwrap().clone());
        match page["data"]["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(positions(&Value::Array(all.clone())), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(all[4]["type"], "UserDataUpdated");
    assert_eq!(all[4]["visibility"], "Agent");

    let (_, found) = api.history(&tenant, "/messages?q=delivery").await;
    let found = found["data"]["items"].as_array().unwrap().clone();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["text"], "Can you check the delivery?");
    assert_eq!(found[0]["interactionId"], session.id.as_str());
    let (_, none) = api
        .history(&tenant, "/messages?q=delivery&to=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(none["data"]["items"], json!([]));
    let (_, recent) = api
        .history(&tenant, "/messages?from=2000-01-01T00:00:00Z&limit=2")
        .await;
    assert_eq!(recent["data"]["items"].as_array().unwrap().len(), 2);
    assert!(recent["data"]["nextCursor"].is_string());

    // A second chat from the same email is the same contact.
    let second = api.start_chat(&tenant, ADA).await;
    assert_eq!(second.contact_id, session.contact_id);
}

/// Two tabs holding one token read one transcript; a long-poll wakes for a message; the session
/// outlives the customer's disconnect and resumes with the same token.
async fn tabs_and_long_polls_share_one_transcript(backends: Backends) {
    let nexus = Nexus::start(MANIFEST, backends).await;
    let api = Client::new(&nexus);
    let tenant = api.provision("tabs").await;
    let session = api
        .start_chat(&tenant, &[("data[nickname]", "visitor")])
        .await;
    api.say(&session, "from tab one").await;

    // Tab two polls and waits; tab one sends; tab two wakes with it.
    let waiting = {
        let client = Client::new(&nexus);
        let session = Session {
            uri: session.uri.clone(),
            token: session.token.clone(),
            id: session.id.clone(),
            contact_id: session.contact_id.clone(),
            chat_key: session.chat_key.clone(),
        };
        tokio::spawn(async move {
            let started = Instant::now();
            let (status, body) = client
                .on_session(&session, "GET", "/messages?after=2&timeout=20", Body::None)
                .await;
            (status, body, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    api.say(&session, "from tab one again").await;
    let (status, woke, waited) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(texts(&woke["data"]["messages"]), ["from tab one again"]);
    assert!(
        waited < Duration::from_secs(15),
        "the poll waited {waited:?}"
    );

    // A poll with nothing new answers empty at its timeout.
    let (status, empty) = api
        .on_session(&session, "GET", "/messages?after=3&timeout=1", Body::None)
        .await;
    assert_eq!(
        (status, empty["data"]["messages"].clone()),
        (200, json!([]))
    );
    assert_eq!(empty["data"]["nextPosition"], 3);

    // The customer goes away for a while (nothing holds the session open) and comes back.
    drop(api);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let api = Client::new(&nexus);
    let transcript = api.read(&session, 0).await;
    assert_eq!(
        texts(&transcript["messages"]),
        ["from tab one", "from tab one again"]
    );
    // Without x-api-key, the token alone is enough (the widgets send both).
    let (status, _) = api
        .call(
            "GET",
            &format!("{}/messages", session.uri),
            &[("x-nexus-client-key", &session.token)],
            Body::None,
        )
        .await;
    assert_eq!(status, 200);
    // A retried send with the same messageId is stored once.
    for _ in 0..2 {
        let (status, _) = api
            .on_session(
                &session,
                "POST",
                "/messages",
                Body::Form(&[("data[text]", "once"), ("data[messageId]", "client-1")]),
            )
            .await;
        assert_eq!(status, 200);
    }
    let transcript = api.read(&session, 0).await;
    assert_eq!(
        texts(&transcript["messages"]),
        ["from tab one", "from tab one again", "once"]
    );
}

async fn expect_code(result: (u16, Value), status: u16, code: &str) {
    assert_eq!(
        (
            result.0,
            result.1["status"]["code"].as_str().unwrap_or_default()
        ),
        (status, code),
        "{}",
        result.1
    );
}

/// Every bad input gets its documented status and code.
async fn bad_inputs_get_their_documented_codes(backends: Backends) {
    let nexus = Nexus::start(MANIFEST, backends).await;
    let api = Client::new(&nexus);
    let tenant = api.provision("strict").await;
    let start = "/nexus/v3/chat/sessions";
    let nick: &[(&str, &str)] = &[("data[nickname]", "n")];
    let key = tenant.chat_key.as_str();
    let form = "application/x-www-form-urlencoded";
    let huge = format!("data[nickname]=n&data[note]={}", "x".repeat(70 * 1024));
    let cases: Vec<BadStart<'_>> = vec![
        (
            "no key",
            vec![],
            Body::Form(nick),
            401,
            "AUTHENTICATION_REQUIRED",
        ),
        (
            "unknown key",
            vec![("x-api-key", "nxk_nope")],
            Body::Form(nick),
            401,
            "INVALID_CONTACT_CENTER",
        ),
        (
            "another tenant's ccid",
            vec![("x-api-key", key), ("x-ccid", "someone-else")],
            Body::Form(nick),
            403,
            "INVALID_CONTACT_CENTER",
        ),
        (
            "a key without the chat permission",
            vec![("x-api-key", &tenant.history_key)],
            Body::Form(nick),
            403,
            "INVALID_CONTACT_CENTER",
        ),
        (
            "no nickname",
            vec![("x-api-key", key)],
            Body::Form(&[("data[email]", "a@b.co")]),
            400,
            "INVALID_NICKNAME",
        ),
        (
            "an unknown endpoint",
            vec![("x-api-key", key)],
            Body::Form(&[("data[nickname]", "n"), ("data[endpoint]", "Nowhere")]),
            400,
            "INVALID_ENDPOINT",
        ),
        (
            "a bad email",
            vec![("x-api-key", key)],
            Body::Form(&[("data[nickname]", "n"), ("data[email]", "not-an-address")]),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "a malformed form",
            vec![("x-api-key", key)],
            Body::Raw(form, b"data[nickname=x".to_vec()),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "malformed JSON",
            vec![("x-api-key", key)],
            Body::Raw("application/json", b"{\"data\":".to_vec()),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "another content type",
            vec![("x-api-key", key)],
            Body::Raw("text/plain", b"hi".to_vec()),
            415,
            "INVALID_PARAMETER",
        ),
        (
            "an oversized body",
            vec![("x-api-key", key)],
            Body::Raw(form, huge.into_bytes()),
            413,
            "LIMIT_BODY_SIZE",
        ),
        // No text column can hold U+0000: a 400, never a 503 that says "try again".
        (
            "a NUL in the first name",
            vec![("x-api-key", key)],
            Body::Form(&[("data[nickname]", "n"), ("data[firstName]", "A\0da")]),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "a NUL in the email, as JSON",
            vec![("x-api-key", key)],
            Body::Json(json!({"data": {"nickname": "n", "email": "a\u{0}@b.co"}})),
            400,
            "INVALID_PARAMETER",
        ),
    ];
    for (case, headers, body, status, code) in cases {
        let (got_status, got) = api.call("POST", start, &headers, body).await;
        assert_eq!(
            (got_status, got["status"]["code"].as_str().unwrap()),
            (status, code),
            "{case}: {got}"
        );
    }
    // JSON works as well as the form.
    let (status, _) = api
        .call(
            "POST",
            start,
            &[("x-api-key", key)],
            Body::Json(json!({"data": {"nickname": "json"}})),
        )
        .await;
    assert_eq!(status, 201);

    let session = api.start_chat(&tenant, nick).await;
    let other = api.start_chat(&tenant, nick).await;
    let messages = format!("{}/messages", session.uri);
    let mut tampered = session.token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = format!(
        "{}/nexus/v3/chat/sessions/not-a-session/messages",
        nexus.base
    );
    let long_text = "y".repeat(17 * 1024);
    let long_message = [("data[text]", long_text.as_str())];
    let long_poll = format!("{messages}?timeout=99");
    let token = session.token.as_str();
    let tenants = "/nexus/v3/provisioning/tenants";
    let contacts = "/nexus/v3/history/contacts";
    let garbage_cursor = format!("{contacts}?cursor=garbage");
    let session_headers = vec![("x-api-key", key), ("x-nexus-client-key", token)];
    let history_key = vec![("x-api-key", tenant.history_key.as_str())];
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let admin_headers = vec![("authorization", admin.as_str())];
    let nul_search = "/nexus/v3/history/messages?q=a%00b";
    let word_date = "/nexus/v3/history/messages?from=tomorrow";
    let year_zero = "/nexus/v3/history/messages?to=0000-01-01T00:00:00Z";
    let queue = "/nexus/v3/provisioning/tenants/strict/queues/day-shift";
    let channels = "/nexus/v3/provisioning/tenants/strict/channels";
    let api_keys = "/nexus/v3/provisioning/tenants/strict/api-keys";
    let cases: Vec<BadRequest<'_>> = vec![
        (
            "a NUL in a message's text",
            "POST",
            &messages,
            session_headers.clone(),
            Body::Form(&[("data[type]", "Text"), ("data[text]", "a\0b")]),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "a NUL in a history search",
            "GET",
            nul_search,
            history_key.clone(),
            Body::None,
            400,
            "INVALID_PARAMETER",
        ),
        (
            "a date that is a word",
            "GET",
            word_date,
            history_key.clone(),
            Body::None,
            400,
            "INVALID_PARAMETER",
        ),
        (
            "a date in year 0",
            "GET",
            year_zero,
            history_key.clone(),
            Body::None,
            400,
            "INVALID_PARAMETER",
        ),
        (
            "a NUL in a tenant's name",
            "POST",
            tenants,
            admin_headers.clone(),
            Body::Json(json!({"ccid": "nul", "name": "A\u{0}"})),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "a NUL in a channel's credentials",
            "POST",
            channels,
            admin_headers.clone(),
            Body::Json(json!({"type": "email", "name": "mail", "secret": "s",
                              "credentials": {"apiKey": "k\u{0}"}})),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "an API key that expires `tomorrow`",
            "POST",
            api_keys,
            admin_headers.clone(),
            Body::Json(json!({"name": "soon", "permission": "chat", "expiresAt": "tomorrow"})),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "business hours whose day is a word",
            "PUT",
            queue,
            admin_headers.clone(),
            Body::Json(json!({"businessHours": {"days": {"mon": "AAA"}}})),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "business hours whose day is an object",
            "PUT",
            queue,
            admin_headers.clone(),
            Body::Json(json!({"businessHours": {"days": {"mon": {}}}})),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "business hours whose day is false",
            "PUT",
            queue,
            admin_headers.clone(),
            Body::Json(json!({"businessHours": {"days": {"mon": false}}})),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "no client token",
            "GET",
            &messages,
            vec![],
            Body::None,
            401,
            "INVALID_CLIENT_TOKEN",
        ),
        (
            "a token that is no JWT",
            "GET",
            &messages,
            vec![("x-nexus-client-key", "not.a.jwt")],
            Body::None,
            401,
            "INVALID_CLIENT_TOKEN",
        ),
        (
            "a tampered signature",
            "GET",
            &messages,
            vec![("x-nexus-client-key", &tampered)],
            Body::None,
            401,
            "INVALID_CLIENT_TOKEN",
        ),
        (
            "another session's token",
            "GET",
            &messages,
            vec![("x-nexus-client-key", &other.token)],
            Body::None,
            401,
            "INVALID_CLIENT_TOKEN",
        ),
        (
            "a session that does not exist",
            "GET",
            &unknown,
            vec![("x-nexus-client-key", token)],
            Body::None,
            404,
            "INVALID_SESSION",
        ),
        (
            "a text message without text",
            "POST",
            &messages,
            session_headers.clone(),
            Body::Form(&[("data[type]", "Text")]),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "an unknown message type",
            "POST",
            &messages,
            session_headers.clone(),
            Body::Form(&[("data[type]", "Shout"), ("data[text]", "x")]),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "text over 16 Ki characters",
            "POST",
            &messages,
            session_headers.clone(),
            Body::Form(&long_message),
            400,
            "INVALID_PARAMETER",
        ),
        (
            "a long-poll over 30 s",
            "GET",
            &long_poll,
            session_headers.clone(),
            Body::None,
            400,
            "INVALID_PARAMETER",
        ),
        (
            "provisioning without the admin token",
            "GET",
            tenants,
            vec![],
            Body::None,
            401,
            "AUTHENTICATION_REQUIRED",
        ),
        (
            "provisioning with a wrong admin token",
            "GET",
            tenants,
            vec![("authorization", "Bearer wrong")],
            Body::None,
            401,
            "AUTHENTICATION_REQUIRED",
        ),
        (
            "history without a key",
            "GET",
            contacts,
            vec![],
            Body::None,
            401,
            "AUTHENTICATION_REQUIRED",
        ),
        (
            "history with a chat key",
            "GET",
            contacts,
            vec![("x-api-key", key)],
            Body::None,
            403,
            "INVALID_CONTACT_CENTER",
        ),
        (
            "history with a cursor it never gave",
            "GET",
            &garbage_cursor,
            vec![("x-api-key", &tenant.history_key)],
            Body::None,
            400,
            "INVALID_PARAMETER",
        ),
    ];
    for (case, method, url, headers, body, status, code) in cases {
        let (got_status, got) = api.call(method, url, &headers, body).await;
        assert_eq!(
            (got_status, got["status"]["code"].as_str().unwrap()),
            (status, code),
            "{case}: {got}"
        );
    }
    // A valid RFC 3339 offset that PostgreSQL itself would refuse is normalised, not a 503.
    let (status, found) = api
        .history(&tenant, "/messages?to=2000-01-01T00:00:00%2B18:05")
        .await;
    assert_eq!(status, 200, "{found}");
    let (status, created) = api
        .admin(
            "POST",
            "/tenants/strict/api-keys",
            Some(json!({"name": "far", "permission": "chat",
                        "expiresAt": "2999-01-01T00:00:00+18:05"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    // Nothing of the refused queues was stored.
    let (status, _) = api
        .admin("GET", "/tenants/strict/queues/day-shift", None)
        .await;
    assert_eq!(status, 404);

    // The envelope's referenceId is the request id of the host: in the answer's header and in
    // the host's log, though the client sent none.
    let response = client()
        .get(nexus.url(contacts))
        .header("x-api-key", &tenant.history_key)
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["referenceId"], request_id.as_str(), "{answer}");
    assert!(nexus.logs().contains(&request_id), "{request_id} is logged");
    // Every request above took a pooled connection that was reset for it: the reset made
    // PostgreSQL warn "there is no transaction in progress" each time, ten lines a second.
    assert!(
        !nexus.logs().contains("no transaction in progress"),
        "the log is quiet about resets"
    );

    if let Some(database) = &nexus.database {
        // A validly signed token for a session that does not exist (signed with the tenant's
        // secret, read from the database): the session is unknown, not the token.
        let db = database.client().await;
        let secret: String = db
            .query_one(
                "SELECT token_secret FROM tenants WHERE ccid = 'strict'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let missing = uuid::Uuid::new_v4().to_string();
        let token = sign_client_token(&missing, &tenant.channel_id, &tenant.ccid, &secret);
        let url = format!("{}/nexus/v3/chat/sessions/{missing}", nexus.base);
        expect_code(
            api.call("GET", &url, &[("x-nexus-client-key", &token)], Body::None)
                .await,
            404,
            "INVALID_SESSION",
        )
        .await;
    }

    // Disabling the key takes effect on the very next request.
    let (status, _) = api
        .admin(
            "PATCH",
            &format!("/tenants/strict/api-keys/{}", tenant.chat_key_id),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    expect_code(
        api.call("POST", start, &[("x-api-key", key)], Body::Form(nick))
            .await,
        401,
        "INVALID_CONTACT_CENTER",
    )
    .await;
    expect_code(
        api.on_session(&session, "GET", "/messages", Body::None)
            .await,
        401,
        "INVALID_CONTACT_CENTER",
    )
    .await;
    // Rotating the tenant's token secret revokes every client token at once.
    let (status, _) = api
        .admin("POST", "/tenants/strict/rotate-token-secret", None)
        .await;
    assert_eq!(status, 200);
    expect_code(
        api.call(
            "GET",
            &messages,
            &[("x-nexus-client-key", &session.token)],
            Body::None,
        )
        .await,
        401,
        "INVALID_CLIENT_TOKEN",
    )
    .await;
}

/// A bad session start: what it is, its headers and body, and the status and code it must get.
type BadStart<'a> = (&'a str, Vec<(&'a str, &'a str)>, Body<'a>, u16, &'a str);

/// A bad request: what it is, its method, URL, headers and body, and the status and code it must
/// get.
type BadRequest<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Body<'a>,
    u16,
    &'a str,
);

/// An HS256 client token, made independently of nexus's own code.
fn sign_client_token(session: &str, transport: &str, ccid: &str, secret: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{KeyInit, Mac};
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({
        "sessionId": session, "transportId": transport, "participantId": uuid::Uuid::new_v4().to_string(),
        "ccid": ccid, "iat": 1_800_000_000u64
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

/// Tenants, keys and channels through their life: create, read, update, copy, rotate, delete,
/// each change in the audit.
async fn provisioning_manages_keys_and_channels(backends: Backends) {
    let nexus = Nexus::start(MANIFEST, backends).await;
    let api = Client::new(&nexus);
    let tenant = api.provision("prov").await;
    let (status, _) = api
        .admin("POST", "/tenants", Some(json!({"ccid": "prov"})))
        .await;
    assert_eq!(status, 409);
    let (status, _) = api
        .admin("POST", "/tenants", Some(json!({"ccid": "bad ccid!"})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = api.admin("GET", "/tenants/nobody", None).await;
    assert_eq!(status, 404);

    // Keys: the permission is fixed; a copy is named _1, _2; expiry is honoured at once.
    let key_path = format!("/tenants/prov/api-keys/{}", tenant.chat_key_id);
    let (status, _) = api
        .admin("PATCH", &key_path, Some(json!({"permission": "history"})))
        .await;
    assert_eq!(status, 400);
    let (status, copy) = api.admin("POST", &format!("{key_path}/copy"), None).await;
    assert_eq!(status, 201);
    assert_eq!(copy["data"]["name"], "widget_1");
    assert_eq!(copy["data"]["permission"], "chat");
    assert_eq!(copy["data"]["copiedFrom"], tenant.chat_key_id.as_str());
    let (_, copy2) = api.admin("POST", &format!("{key_path}/copy"), None).await;
    assert_eq!(copy2["data"]["name"], "widget_2");
    let copy_key = copy["data"]["key"].as_str().unwrap().to_owned();
    let (status, _) = api.try_start(&copy_key).await;
    assert_eq!(status, 201);
    let copy_path = format!(
        "/tenants/prov/api-keys/{}",
        copy["data"]["id"].as_str().unwrap()
    );
    let (status, expired) = api
        .admin(
            "PATCH",
            &copy_path,
            Some(json!({"expiresAt": "2001-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!((status, &expired["data"]["expired"]), (200, &json!(true)));
    let (status, _) = api.try_start(&copy_key).await;
    assert_eq!(status, 401);
    let (status, never) = api
        .admin("PATCH", &copy_path, Some(json!({"expiresAt": "never"})))
        .await;
    assert_eq!((status, never["data"].get("expiresAt")), (200, None));
    let (_, listed) = api.admin("GET", "/tenants/prov/api-keys", None).await;
    let listed = listed["data"]["apiKeys"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 4);
    assert!(
        listed.iter().all(|k| k.get("key").is_none()),
        "keys are never listed"
    );
    let (status, _) = api.admin("DELETE", &copy_path, None).await;
    assert_eq!(status, 200);
    let (status, _) = api.admin("GET", &copy_path, None).await;
    assert_eq!(status, 404);

    // Channels: a rotated secret keeps the previous one valid for the overlap.
    let channel_path = format!("/tenants/prov/channels/{}", tenant.channel_id);
    let (status, rotated) = api
        .admin(
            "POST",
            &format!("{channel_path}/rotate-secret"),
            Some(json!({"overlapSeconds": 3600})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(rotated["data"]["previousSecretExpiresAt"].is_string());
    let (status, _) = api
        .admin(
            "POST",
            &format!("{channel_path}/rotate-secret"),
            Some(json!({"overlapSeconds": -1})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, disabled) = api
        .admin("PATCH", &channel_path, Some(json!({"enabled": false})))
        .await;
    assert_eq!((status, &disabled["data"]["enabled"]), (200, &json!(false)));
    // A disabled endpoint takes no new chats.
    let (status, body) = api.try_start(&tenant.chat_key).await;
    assert_eq!(
        (status, &body["status"]["code"]),
        (400, &json!("INVALID_ENDPOINT"))
    );
    // It has an interaction in the history, so it cannot be deleted, only disabled.
    let (status, _) = api.admin("DELETE", &channel_path, None).await;
    assert_eq!(status, 409);
    let (status, _) = api
        .admin(
            "POST",
            "/tenants/prov/channels",
            Some(json!({"type": "sms", "name": "sms-main", "settings": {"sender": "12345"}})),
        )
        .await;
    assert_eq!(
        status, 400,
        "an sms channel takes the aggregator's auth token"
    );
    let (status, sms) = api
        .admin(
            "POST",
            "/tenants/prov/channels",
            Some(
                json!({"type": "sms", "name": "sms-main", "secret": "aggregator-token",
                        "settings": {"sender": "12345"}}),
            ),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(sms["data"]["secret"], "aggregator-token");
    let (status, _) = api
        .admin(
            "DELETE",
            &format!(
                "/tenants/prov/channels/{}",
                sms["data"]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200);

    let (status, audit) = api
        .admin("GET", "/tenants/prov/audit?limit=500", None)
        .await;
    assert_eq!(status, 200);
    let actions: Vec<String> = audit["data"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["entity"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "create tenant",
        "create api-key",
        "copy api-key",
        "update api-key",
        "delete api-key",
        "create channel",
        "rotate-secret channel",
        "update channel",
        "delete channel",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
    // Newest first.
    assert_eq!(actions[0], "delete channel");

    let (status, disabled) = api
        .admin("PATCH", "/tenants/prov", Some(json!({"enabled": false})))
        .await;
    assert_eq!((status, &disabled["data"]["enabled"]), (200, &json!(false)));
    let (status, body) = api.try_start(&tenant.chat_key).await;
    assert_eq!(
        (status, &body["status"]["code"]),
        (403, &json!("INVALID_CONTACT_CENTER"))
    );
    let (status, _) = api.admin("DELETE", "/tenants/prov", None).await;
    assert_eq!(status, 200);
    let (status, _) = api.admin("GET", "/tenants/prov", None).await;
    assert_eq!(status, 404);
}

/// Nothing of tenant B is visible with tenant A's keys, whatever the ids.
async fn tenants_are_isolated(backends: Backends) {
    let nexus = Nexus::start(MANIFEST, backends).await;
    let api = Client::new(&nexus);
    let a = api.provision("tenant-a").await;
    let b = api.provision("tenant-b").await;
    let b_session = api.start_chat(&b, ADA).await;
    api.say(&b_session, "secret of tenant b").await;
    let a_session = api.start_chat(&a, &[("data[nickname]", "a")]).await;

    // A's chat key with B's session token.
    let (status, body) = api
        .call(
            "GET",
            &format!("{}/messages", b_session.uri),
            &[
                ("x-api-key", &a.chat_key),
                ("x-nexus-client-key", &b_session.token),
            ],
            Body::None,
        )
        .await;
    assert_eq!(
        (status, &body["status"]["code"]),
        (403, &json!("INVALID_CONTACT_CENTER"))
    );
    // A's token on B's session path.
    let (status, _) = api
        .call(
            "GET",
            &format!("{}/messages", b_session.uri),
            &[("x-nexus-client-key", &a_session.token)],
            Body::None,
        )
        .await;
    assert_eq!(status, 401);
    // A's history key on B's contact, interaction and transcript; searches find nothing of B.
    for path in [
        format!("/contacts/{}", b_session.contact_id),
        format!("/contacts/{}/interactions", b_session.contact_id),
        format!("/interactions/{}", b_session.id),
        format!("/interactions/{}/messages", b_session.id),
    ] {
        let (status, _) = api.history(&a, &path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, found) = api.history(&a, "/messages?q=secret").await;
    assert_eq!(found["data"]["items"], json!([]));
    let (_, found) = api.history(&a, "/contacts?email=ada%40example.com").await;
    assert_eq!(found["data"]["items"], json!([]));
    let (_, listed) = api.history(&a, "/contacts").await;
    assert_eq!(listed["data"]["items"].as_array().unwrap().len(), 1);
    // Merging across tenants finds no such contact.
    let (status, _) = api
        .call(
            "POST",
            &format!("/nexus/v3/history/contacts/{}/merge", a_session.contact_id),
            &[("x-api-key", &a.history_key)],
            Body::Json(json!({"from": b_session.contact_id})),
        )
        .await;
    assert_eq!(status, 404);
    // B sees its own.
    let (_, found) = api.history(&b, "/messages?q=secret").await;
    assert_eq!(found["data"]["items"].as_array().unwrap().len(), 1);

    // Within one tenant, contacts merge: identities and interactions move.
    let (status, merged) = api
        .call(
            "POST",
            &format!("/nexus/v3/history/contacts/{}/merge", b_session.contact_id),
            &[("x-api-key", &b.history_key)],
            Body::Json(json!({"from": api.start_chat(&b, &[("data[nickname]", "anon"), ("data[phoneNumber]", "+44 20 7946 0000")]).await.contact_id})),
        )
        .await;
    assert_eq!(status, 200, "{merged}");
    let kinds: Vec<&str> = merged["data"]["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["email", "phone"]);
    let (_, by_phone) = api.history(&b, "/contacts?phone=%2B442079460000").await;
    assert_eq!(
        by_phone["data"]["items"][0]["id"],
        b_session.contact_id.as_str()
    );
    let (_, interactions) = api
        .history(
            &b,
            &format!("/contacts/{}/interactions", b_session.contact_id),
        )
        .await;
    assert_eq!(interactions["data"]["items"].as_array().unwrap().len(), 2);
}

/// Redis loses the live state mid-chat (flushed, or the embedded one restarted with the host):
/// the next requests rebuild it from PostgreSQL and the chat goes on, nothing lost, positions
/// continuing.
async fn live_state_is_rebuilt_after_redis_loses_it(backends: Backends) {
    let mut nexus = Nexus::start(MANIFEST, backends).await;
    let api = Client::new(&nexus);
    let tenant = api.provision("flush").await;
    let session = api.start_chat(&tenant, &[("data[nickname]", "f")]).await;
    api.say(&session, "before the flush").await;

    match backends {
        Backends::Real => {
            assert!(nexus.flush_redis().await >= 2, "the chat had live state");
        }
        // The embedded Redis lives in the host's process; PGlite keeps its data directory.
        Backends::Embedded => nexus.restart().await,
    }
    // A restarted host listens on a new port.
    let api = Client::new(&nexus);
    let path = session.uri[session.uri.find("/nexus").unwrap()..].to_owned();
    let session = Session {
        uri: format!("{}{path}", nexus.base),
        ..session
    };
    // A long-poll in flight while the state disappears (again) still sees the next message.
    let waiting = {
        let client = Client::new(&nexus);
        let session = Session {
            uri: session.uri.clone(),
            token: session.token.clone(),
            id: session.id.clone(),
            contact_id: session.contact_id.clone(),
            chat_key: session.chat_key.clone(),
        };
        tokio::spawn(async move {
            client
                .on_session(&session, "GET", "/messages?after=2&timeout=20", Body::None)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    if backends == Backends::Real {
        nexus.flush_redis().await;
    }
    api.say(&session, "after the flush").await;
    let (status, woke) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(texts(&woke["data"]["messages"]), ["after the flush"]);
    let transcript = api.read(&session, 0).await;
    assert_eq!(
        texts(&transcript["messages"]),
        ["before the flush", "after the flush"]
    );
    assert_eq!(positions(&transcript["messages"]), [1, 2, 3]);
    let (_, info) = api.on_session(&session, "GET", "", Body::None).await;
    assert_eq!(info["data"]["state"], "active");
}

/// A host commits a customer's message and dies before it announces it (the row is written
/// here as that host would have, with nothing in Redis); the customer, who got no answer, sends
/// it again with its `messageId`: it is not stored twice, and from then on it is the end of the
/// transcript the customer reads, not a message only the sockets were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_whose_host_died_before_announcing_it_is_read_once_resent() {
    let nexus = Nexus::start(MANIFEST, Backends::Real).await;
    let api = Client::new(&nexus);
    let tenant = api.provision("resent").await;
    let session = api.start_chat(&tenant, &[("data[nickname]", "r")]).await;
    let first = api.say(&session, "announced").await;
    let db = nexus.database.as_ref().unwrap().client().await;
    let committed = db
        .execute(
            "WITH slot AS ( \
               UPDATE interactions SET next_position = next_position + 1 \
               WHERE id = $1::text::uuid RETURNING id, tenant_id, next_position - 1 AS position) \
             INSERT INTO messages (interaction_id, position, tenant_id, type, participant_id, \
               sender_kind, nickname, text, visibility, client_message_id) \
             SELECT slot.id, slot.position, slot.tenant_id, 'Text', m.participant_id, \
               m.sender_kind, m.nickname, 'committed, never announced', 'All', 'lost-answer' \
             FROM slot JOIN messages m ON m.interaction_id = slot.id AND m.position = $2",
            &[&session.id, &(first["position"].as_i64().unwrap() as i32)],
        )
        .await
        .unwrap();
    assert_eq!(committed, 1);
    let after = first["position"].as_i64().unwrap();

    let (status, again) = api
        .on_session(
            &session,
            "POST",
            "/messages",
            Body::Json(json!({
                "type": "Text", "text": "committed, never announced", "messageId": "lost-answer"
            })),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["duplicate"], true);
    assert_eq!(again["data"]["message"]["position"], after + 1);

    let read = api.read(&session, after).await;
    assert_eq!(texts(&read["messages"]), ["committed, never announced"]);
    assert_eq!(read["nextPosition"], after + 1);
    // The next message follows it, and the whole transcript has each once.
    api.say(&session, "next").await;
    let transcript = api.read(&session, 0).await;
    assert_eq!(
        texts(&transcript["messages"]),
        ["announced", "committed, never announced", "next"]
    );
    assert_eq!(positions(&transcript["messages"]), [1, 2, 3, 4]);
}

/// More messages than the Redis tail keeps, sent by eight senders at once: positions are gapless,
/// and reading from the start pages through PostgreSQL (where the tail does not reach back) and
/// then Redis, with nothing missing or repeated.
async fn long_transcripts_read_in_full_from_redis_and_postgresql(backends: Backends) {
    let nexus = Nexus::start(MANIFEST, backends).await;
    let api = std::sync::Arc::new(Client::new(&nexus));
    let tenant = api.provision("long").await;
    let session = std::sync::Arc::new(api.start_chat(&tenant, &[("data[nickname]", "l")]).await);
    const SENDERS: usize = 8;
    const EACH: usize = 30;
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (api, session) = (api.clone(), session.clone());
        senders.push(tokio::spawn(async move {
            for n in 0..EACH {
                api.say(&session, &format!("{sender}-{n}")).await;
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let total = SENDERS * EACH;
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = api.read(&session, after).await;
        read.extend(page["messages"].as_array().unwrap().clone());
        after = page["nextPosition"].as_i64().unwrap();
        if page["more"] != json!(true) {
            break;
        }
    }
    let read = Value::Array(read);
    assert_eq!(positions(&read), (1..=1 + total as i64).collect::<Vec<_>>());
    let mut said = texts(&read);
    said.sort();
    let mut expected: Vec<String> = (0..SENDERS)
        .flat_map(|s| (0..EACH).map(move |n| format!("{s}-{n}")))
        .collect();
    expected.sort();
    assert_eq!(said, expected);
    // Each sender's own messages are in the order it sent them.
    for sender in 0..SENDERS {
        let prefix = format!("{sender}-");
        let own: Vec<String> = texts(&read)
            .into_iter()
            .filter(|t| t.starts_with(&prefix))
            .collect();
        let in_order: Vec<String> = (0..EACH).map(|n| format!("{sender}-{n}")).collect();
        assert_eq!(own, in_order);
    }
}

/// A web chat customer sends a file: it is stored with the message that carries it, comes once
/// in the transcript, downloads as uploaded for that session only, and a resend with the same
/// `messageId` stores nothing new. Bad files get their documented codes.
async fn a_customer_sends_a_file_and_downloads_it(backends: Backends) {
    let nexus = Nexus::start(MANIFEST, backends).await;
    let api = Client::new(&nexus);
    let tenant = api.provision("files").await;
    let session = api.start_chat(&tenant, &[("data[nickname]", "Ada")]).await;
    let other = api.start_chat(&tenant, &[("data[nickname]", "Bob")]).await;
    let content: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();

    let (content_type, body) = support::multipart_file(
        &[("text", "my receipt"), ("messageId", "upload-1")],
        "C:\\Users\\ada\\receipt.png",
        "image/png",
        &content,
    );
    let (status, sent) = api
        .on_session(
            &session,
            "POST",
            "/files",
            Body::Raw(&content_type, body.clone()),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let message = &sent["data"]["message"];
    assert_eq!(message["type"], "Text");
    assert_eq!(message["text"], "my receipt");
    assert_eq!(message["from"]["type"], "Customer");
    let media = &message["data"]["media"][0];
    assert_eq!(media["filename"], "receipt.png");
    assert_eq!(media["mimetype"], "image/png");
    assert_eq!(media["length"], 70_000);
    let media_id = media["mediaId"].as_str().unwrap().to_owned();

    // Sent again (a retry after a lost answer): the same message, nothing stored twice.
    let (status, again) = api
        .on_session(&session, "POST", "/files", Body::Raw(&content_type, body))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["duplicate"], true);
    assert_eq!(again["data"]["message"], *message);
    let transcript = api.read(&session, 0).await;
    let with_files: Vec<&Value> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["data"]["media"].is_array())
        .collect();
    assert_eq!(with_files.len(), 1, "{transcript}");

    // Without a caption the message's text is the file's name.
    let (content_type, body) = support::multipart_file(&[], "notes.txt", "text/plain", b"hello");
    let (status, sent) = api
        .on_session(&session, "POST", "/files", Body::Raw(&content_type, body))
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["data"]["message"]["text"], "notes.txt");

    // The customer downloads the bytes; another session's token does not.
    let download = |token: &str, id: &str| {
        client()
            .get(format!("{}/files/{id}", session.uri))
            .header("x-nexus-client-key", token.to_owned())
            .send()
    };
    let file = download(&session.token, &media_id).await.unwrap();
    assert_eq!(file.status(), 200);
    let headers = file.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"receipt.png\""
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(file.bytes().await.unwrap().as_ref(), content.as_slice());
    let stranger = download(&other.token, &media_id).await.unwrap();
    assert_eq!(stranger.status(), 401, "another session's token");
    let missing = client()
        .get(format!("{}/files/{}", other.uri, media_id))
        .header("x-nexus-client-key", other.token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "a file of another session");

    // Refused: no file, a type not taken (SVG can hold script), too large, after the end.
    let (content_type, body) = support::multipart_file(&[], "x.svg", "image/svg+xml", b"<svg/>");
    let (status, refused) = api
        .on_session(&session, "POST", "/files", Body::Raw(&content_type, body))
        .await;
    assert_eq!(
        (status, refused["status"]["code"].as_str()),
        (400, Some("INVALID_FILE_TYPE"))
    );
    let (status, refused) = api
        .on_session(
            &session,
            "POST",
            "/files",
            Body::Raw("multipart/form-data; boundary=x", b"--x--\r\n".to_vec()),
        )
        .await;
    assert_eq!(
        (status, refused["status"]["code"].as_str()),
        (400, Some("INVALID_PARAMETER"))
    );
    let big = vec![0u8; 5 * 1024 * 1024 + 1];
    let (content_type, body) = support::multipart_file(&[], "big.pdf", "application/pdf", &big);
    let (status, refused) = api
        .on_session(&session, "POST", "/files", Body::Raw(&content_type, body))
        .await;
    assert_eq!(
        (status, refused["status"]["code"].as_str()),
        (413, Some("LIMIT_FILE_SIZE"))
    );
    let (status, _) = api.on_session(&session, "POST", "/end", Body::None).await;
    assert_eq!(status, 200);
    let (content_type, body) = support::multipart_file(&[], "late.txt", "text/plain", b"late");
    let (status, refused) = api
        .on_session(&session, "POST", "/files", Body::Raw(&content_type, body))
        .await;
    assert_eq!(status, 409, "{refused}");
    // Only the two files of the messages were kept: the refused and repeated ones were not.
    let db = nexus.database.as_ref();
    if let Some(db) = db {
        let stored: i64 = db
            .client()
            .await
            .query_one("SELECT count(*) FROM media", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, 2);
    }
}
