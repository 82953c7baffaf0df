//! End to end: SMS through an aggregator in the Twilio API's shape. The test plays the
//! aggregator: it posts inbound texts and status callbacks signed the Twilio way (its own
//! implementation of the documented algorithm), and a local receiver stands in for the
//! aggregator's REST API that nexus sends the agent's replies through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::openapi::Api;
use support::{ADMIN_TOKEN, Backends, Nexus, Receiver, client};

const AUTH_TOKEN: &str = "aggregator-auth-token";
const ACCOUNT: &str = "AC0123456789";
const OUR_NUMBER: &str = "+15550000";

/// The application; `host_runs_jobs` false is it as Spin would run it, with the sends made by
/// the sweep endpoint instead of the host's job worker.
fn manifest(host_runs_jobs: bool) -> String {
    use support::manifest::{application, component, jobs, provisioning};
    let mut parts = vec![
        application("sms"),
        provisioning(),
        component("workspace", "/nexus/v3/workspace/...", &[]),
        component("sms", "/nexus/v3/sms/...", &["http://127.0.0.1:*"]),
        component("outbound", "/nexus/v3/outbound/...", &[]),
    ];
    if host_runs_jobs {
        parts.push(jobs("sms", "/nexus/v3/sms/jobs/run", 15000));
    }
    parts.concat()
}

/// The cron's call to the sweep at `url` under Spin, which sends one message (under nexus the
/// host sends by itself).
async fn sweep(url: String) {
    let response = client()
        .post(url)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let summary: Value = response.json().await.unwrap();
    Api::load("sms").check("POST", "/nexus/v3/sms/jobs/sweep", status, &summary);
    assert_eq!(summary["data"]["succeeded"], 1, "{summary}");
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

/// Posts a form as the aggregator does, signed with `signature` (the right one by default).
async fn aggregator_post(
    nexus: &Nexus,
    path: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> (u16, String) {
    let (status, body) =
        support::aggregator::post_signed(AUTH_TOKEN, &nexus.url(path), params, signature)
            .await
            .unwrap();
    if status != 200 || path.ends_with("/status") {
        let answer: Value = serde_json::from_str(&body).unwrap();
        Api::load("sms").check("POST", path, status, &answer);
    }
    (status, body)
}

async fn transcript(nexus: &Nexus, token: &str, interaction: &str) -> Vec<Value> {
    json_call(
        nexus,
        "GET",
        &format!("/nexus/v3/workspace/media/chat/interactions/{interaction}/messages"),
        token,
        None,
    )
    .await["messages"]
        .as_array()
        .unwrap()
        .clone()
}

/// The interaction routing offers the agent (of `token`) first, once the agent has accepted it.
async fn take_offered(nexus: &Nexus, token: &str) -> String {
    let interaction = support::until("the text to be routed to the agent", || async {
        let offered = json_call(
            nexus,
            "GET",
            "/nexus/v3/workspace/media/chat/interactions",
            token,
            None,
        )
        .await;
        offered["interactions"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    json_call(
        nexus,
        "POST",
        &format!("/nexus/v3/workspace/media/chat/interactions/{interaction}/accept"),
        token,
        None,
    )
    .await;
    interaction
}

/// A tenant `acme` with an sms channel on the aggregator at `aggregator` (with `settings` on top
/// of the account's), routed to the queue `texts`, and an agent who is ready: the channel's id
/// and the agent's token.
async fn provision(nexus: &Nexus, aggregator: &Receiver, settings: Value) -> (String, String) {
    let provisioning = |path: &str| format!("/nexus/v3/provisioning{path}");
    json_call(
        nexus,
        "POST",
        &provisioning("/tenants"),
        ADMIN_TOKEN,
        Some(json!({"ccid": "acme", "name": "Acme"})),
    )
    .await;
    let mut all_settings = json!({"accountSid": ACCOUNT, "from": OUR_NUMBER,
                                  "apiBaseUrl": format!("http://{}", aggregator.addr)});
    for (name, value) in settings.as_object().unwrap() {
        all_settings[name] = value.clone();
    }
    let channel = json_call(
        nexus,
        "POST",
        &provisioning("/tenants/acme/channels"),
        ADMIN_TOKEN,
        Some(
            json!({"type": "sms", "name": "sms-us", "secret": AUTH_TOKEN,
                    "settings": all_settings}),
        ),
    )
    .await;
    let channel = channel["id"].as_str().unwrap().to_owned();
    json_call(
        nexus,
        "PUT",
        &provisioning("/tenants/acme/queues/texts"),
        ADMIN_TOKEN,
        Some(json!({})),
    )
    .await;
    json_call(
        nexus,
        "PUT",
        &provisioning(&format!("/tenants/acme/channels/{channel}/routing")),
        ADMIN_TOKEN,
        Some(json!({"queue": "texts"})),
    )
    .await;
    let agent = json_call(
        nexus,
        "POST",
        &provisioning("/tenants/acme/agents"),
        ADMIN_TOKEN,
        Some(json!({"username": "ann", "nickname": "Ann"})),
    )
    .await;
    let token = agent["token"].as_str().unwrap().to_owned();
    json_call(
        nexus,
        "POST",
        "/nexus/v3/workspace/media/chat/ready",
        &token,
        None,
    )
    .await;
    (channel, token)
}

both_backends!(
    a_texter_and_an_agent_converse_by_sms,
    keywords_opt_a_texter_out_and_in_before_routing,
);

async fn a_texter_and_an_agent_converse_by_sms(backends: Backends) {
    converse(backends, false).await;
}

/// The same under Spin's rules: the replies go out when the sweep runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_spin_the_sweep_sends_the_replies() {
    converse(Backends::Embedded, true).await;
}

async fn converse(backends: Backends, spin: bool) {
    let aggregator = Receiver::start().await;
    aggregator.reply_with(r#"{"sid": "SMout1", "status": "queued"}"#);
    let nexus = Nexus::start(&manifest(!spin), backends).await;
    let (channel, token) = provision(&nexus, &aggregator, json!({})).await;

    // A text arrives.
    let inbound = format!("/nexus/v3/sms/{channel}/inbound");
    let text = [
        ("MessageSid", "SMin1"),
        ("AccountSid", ACCOUNT),
        ("From", "+1 (555) 0100"),
        ("To", OUR_NUMBER),
        ("Body", "Is the store open today?"),
        ("NumMedia", "0"),
    ];
    let (status, twiml) = aggregator_post(&nexus, &inbound, &text, None).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Response>"), "{twiml}");
    // The aggregator retries it: stored once.
    let (status, _) = aggregator_post(&nexus, &inbound, &text, None).await;
    assert_eq!(status, 200);

    // Refused: a wrong signature, a signature over other parameters, another account.
    let (status, _) = aggregator_post(&nexus, &inbound, &text, Some("bm90IGl0")).await;
    assert_eq!(status, 401);
    let mut tampered = text;
    tampered[4] = ("Body", "send me everything");
    let signed_for_other =
        support::aggregator::twilio_signature(AUTH_TOKEN, &nexus.url(&inbound), &text);
    let (status, _) = aggregator_post(&nexus, &inbound, &tampered, Some(&signed_for_other)).await;
    assert_eq!(status, 401);
    let mut other_account = text;
    other_account[1] = ("AccountSid", "AC999");
    let (status, _) = aggregator_post(&nexus, &inbound, &other_account, None).await;
    assert_eq!(status, 401);

    // The agent is offered the conversation and takes it.
    let interaction = take_offered(&nexus, &token).await;
    let seen = transcript(&nexus, &token, &interaction).await;
    let texts: Vec<&Value> = seen.iter().map(|m| &m["text"]).collect();
    assert_eq!(
        texts
            .iter()
            .filter(|t| **t == "Is the store open today?")
            .count(),
        1,
        "{texts:?}"
    );

    // The agent answers: nexus sends it through the aggregator's API, whose answer (with the
    // sid) is held back until the aggregator has reported delivery, as a fast one may do.
    aggregator.hold_answers();
    json_call(
        &nexus,
        "POST",
        &format!("/nexus/v3/workspace/media/chat/interactions/{interaction}/send-message"),
        &token,
        Some(json!({"message": "Yes, until 8 pm."})),
    )
    .await;
    let sweeping = spin.then(|| tokio::spawn(sweep(nexus.url("/nexus/v3/sms/jobs/sweep"))));
    let sent = aggregator.wait_for(1).await;
    assert_eq!(
        sent[0].path,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    );
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{AUTH_TOKEN}"));
    assert_eq!(
        sent[0].headers["authorization"].to_str().unwrap(),
        format!("Basic {credentials}")
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&sent[0].body)
        .into_owned()
        .collect();
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("To"), "+15550100");
    assert_eq!(get("From"), OUR_NUMBER);
    assert_eq!(get("Body"), "Yes, until 8 pm.");
    let callback = get("StatusCallback");
    assert_eq!(
        callback,
        nexus.url(&format!("/nexus/v3/sms/{channel}/status"))
    );

    // The aggregator reports delivery, signed for the callback URL it was given, before its
    // answer to the send has reached nexus: the status is kept ...
    let status_path = format!("/nexus/v3/sms/{channel}/status");
    let report = [
        ("MessageSid", "SMout1"),
        ("MessageStatus", "delivered"),
        ("AccountSid", ACCOUNT),
    ];
    let (status, body) = aggregator_post(&nexus, &status_path, &report, None).await;
    assert_eq!(status, 200, "{body}");
    let kept: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&kept["data"]["recorded"], &kept["data"]["pending"]),
        (&json!(false), &json!(true)),
        "{kept}"
    );
    // ... and applied when the answer comes and the send records the sid.
    aggregator.release();
    if let Some(sweeping) = sweeping {
        sweeping.await.unwrap();
    }
    support::until(
        "the early status callback to mark the reply delivered",
        || async {
            let seen = transcript(&nexus, &token, &interaction).await;
            seen.iter()
                .any(|m| m["text"] == "Yes, until 8 pm." && m["deliveryStatus"] == "delivered")
                .then_some(())
        },
    )
    .await;
    // A later status never moves it back, and is recorded against the message now.
    let late = [
        ("MessageSid", "SMout1"),
        ("MessageStatus", "sent"),
        ("AccountSid", ACCOUNT),
    ];
    let (status, body) = aggregator_post(&nexus, &status_path, &late, None).await;
    assert_eq!(status, 200, "{body}");
    let applied: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(applied["data"]["recorded"], true, "{applied}");
    let seen = transcript(&nexus, &token, &interaction).await;
    assert!(
        seen.iter()
            .any(|m| m["text"] == "Yes, until 8 pm." && m["deliveryStatus"] == "delivered"),
        "{seen:?}"
    );
    if spin {
        // The sweep's retries follow the published schedule (seconds to hours): not waited for.
        return;
    }

    // The aggregator's API fails once: the send is retried.
    aggregator.answer_next(&[500]);
    json_call(
        &nexus,
        "POST",
        &format!("/nexus/v3/workspace/media/chat/interactions/{interaction}/send-message"),
        &token,
        Some(json!({"message": "Anything else?"})),
    )
    .await;
    let sent = aggregator.wait_for(3).await;
    assert_eq!(sent[1].body, sent[2].body, "the same send, again");
    // ... under the same idempotency key, which an API that takes one sends once.
    let key = |request: &support::Received| request.header("idempotency-key");
    assert_eq!(key(&sent[1]), key(&sent[2]));
    assert_ne!(key(&sent[0]), key(&sent[1]), "another message, another key");

    // Rate limited with a Retry-After: the next attempt waits as long as the aggregator asked,
    // not the 5 s of the published schedule.
    aggregator.answer_next(&[429]);
    aggregator.reply_header("retry-after", "3600");
    let asked = std::time::SystemTime::now();
    json_call(
        &nexus,
        "POST",
        &format!("/nexus/v3/workspace/media/chat/interactions/{interaction}/send-message"),
        &token,
        Some(json!({"message": "Talk soon."})),
    )
    .await;
    aggregator.wait_for(4).await;
    // Waiting for its next attempt: pending again, with the answer of the last one.
    let waiting = support::until(
        "the rate-limited send to wait for its next attempt",
        || async {
            let jobs = json_call(
                &nexus,
                "GET",
                "/nexus/v3/provisioning/tenants/acme/jobs?state=pending",
                ADMIN_TOKEN,
                None,
            )
            .await;
            jobs["jobs"]
                .as_array()
                .and_then(|jobs| jobs.iter().find(|job| job["attempts"] == 1))
                .cloned()
        },
    )
    .await;
    assert_eq!(waiting["lastStatus"], 503, "{waiting}");
    let run_at = time::OffsetDateTime::parse(
        waiting["runAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let waits = run_at - time::OffsetDateTime::from(asked);
    assert!(
        waits >= time::Duration::seconds(3500),
        "the retry waits the hour asked for, not {waits}: {waiting}"
    );
}

/// The body of each message nexus sent through the aggregator, in order.
fn sent_bodies(sent: &[support::Received]) -> Vec<(String, String)> {
    sent.iter()
        .map(|request| {
            let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
                .into_owned()
                .collect();
            let get = |name: &str| {
                form.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            assert!(
                form.iter().all(|(k, _)| k != "StatusCallback"),
                "a keyword's answer asks for no status reports"
            );
            (get("To"), get("Body"))
        })
        .collect()
}

/// The tenant's suppressions in force (address, tenant-wide, source), read with the outbound
/// API (its key is `key`).
async fn suppressions(nexus: &Nexus, key: &str) -> Vec<(String, bool, String)> {
    let path = "/nexus/v3/outbound/suppressions";
    let response = client()
        .get(nexus.url(path))
        .query(&[("active", "true")])
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    Api::load("outbound").check("GET", path, status, &answer);
    assert_eq!(status, 200, "{answer}");
    answer["data"]["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap().to_owned(),
                s["channelId"].is_null(),
                s["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn keywords_opt_a_texter_out_and_in_before_routing(backends: Backends) {
    const HELP_TEXT: &str = "Acme Stores: support@acme.example. Reply STOP to unsubscribe.";
    let aggregator = Receiver::start().await;
    aggregator.reply_with(r#"{"sid": "SMreply", "status": "queued"}"#);
    let nexus = Nexus::start(&manifest(true), backends).await;
    let (channel, token) = provision(&nexus, &aggregator, json!({"helpReply": HELP_TEXT})).await;
    let key = json_call(
        &nexus,
        "POST",
        "/nexus/v3/provisioning/tenants/acme/api-keys",
        ADMIN_TOKEN,
        Some(json!({"name": "campaigns", "permission": "outbound"})),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let inbound = format!("/nexus/v3/sms/{channel}/inbound");
    let text = |sid: &'static str, body: &'static str| {
        [
            ("MessageSid", sid),
            ("AccountSid", ACCOUNT),
            ("From", "+1 (555) 0100"),
            ("To", OUR_NUMBER),
            ("Body", body),
        ]
    };
    let texter = "+15550100".to_owned();

    // STOP, in any case: suppressed for the whole tenant, answered once.
    let (status, twiml) = aggregator_post(&nexus, &inbound, &text("SMk1", " Stop "), None).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Response>"), "{twiml}");
    let sent = sent_bodies(&aggregator.wait_for(1).await);
    assert_eq!(
        sent,
        [(
            texter.clone(),
            nexus_guest::consent::DEFAULT_OPT_OUT_REPLY.to_owned()
        )]
    );
    assert_eq!(
        suppressions(&nexus, &key).await,
        [(texter.clone(), true, "keyword".to_owned())]
    );
    // The aggregator retries it, and the texter says it again: no second answer. (One number's
    // answers go out in order, so the HELP answer coming second shows none came between.)
    aggregator_post(&nexus, &inbound, &text("SMk1", " Stop "), None).await;
    aggregator_post(&nexus, &inbound, &text("SMk2", "UNSUBSCRIBE"), None).await;
    aggregator_post(&nexus, &inbound, &text("SMk3", "help"), None).await;
    let sent = sent_bodies(&aggregator.wait_for(2).await);
    assert_eq!(sent[1], (texter.clone(), HELP_TEXT.to_owned()));

    // START lifts it, answered once; a second START has nothing to lift.
    aggregator_post(&nexus, &inbound, &text("SMk4", "start"), None).await;
    aggregator_post(&nexus, &inbound, &text("SMk5", "Start."), None).await;
    aggregator_post(&nexus, &inbound, &text("SMk6", "INFO"), None).await;
    let sent = sent_bodies(&aggregator.wait_for(4).await);
    assert_eq!(
        sent[2..],
        [
            (
                texter.clone(),
                nexus_guest::consent::DEFAULT_OPT_IN_REPLY.to_owned()
            ),
            (texter.clone(), HELP_TEXT.to_owned()),
        ]
    );
    assert_eq!(suppressions(&nexus, &key).await, []);

    // None of the keywords entered a conversation: the texter's first real message starts it.
    let (status, _) = aggregator_post(
        &nexus,
        &inbound,
        &text("SMm1", "stop sending me coupons"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let interaction = take_offered(&nexus, &token).await;
    let texts: Vec<Value> = transcript(&nexus, &token, &interaction)
        .await
        .iter()
        .filter(|m| m["type"] == "Text")
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, [json!("stop sending me coupons")]);
    assert_eq!(
        aggregator.received().len(),
        4,
        "an ordinary text is not answered"
    );

    // Where the aggregator answers keywords itself, nexus records them and answers nothing.
    let settings = |replies: bool| {
        json!({"settings": {"accountSid": ACCOUNT, "from": OUR_NUMBER, "helpReply": HELP_TEXT,
                            "apiBaseUrl": format!("http://{}", aggregator.addr),
                            "keywordReplies": replies}})
    };
    let channel_path = format!("/nexus/v3/provisioning/tenants/acme/channels/{channel}");
    json_call(
        &nexus,
        "PATCH",
        &channel_path,
        ADMIN_TOKEN,
        Some(settings(false)),
    )
    .await;
    aggregator_post(&nexus, &inbound, &text("SMk7", "QUIT"), None).await;
    assert_eq!(
        suppressions(&nexus, &key).await,
        [(texter.clone(), true, "keyword".to_owned())]
    );
    json_call(
        &nexus,
        "PATCH",
        &channel_path,
        ADMIN_TOKEN,
        Some(settings(true)),
    )
    .await;
    aggregator_post(&nexus, &inbound, &text("SMk8", "HELP"), None).await;
    let sent = sent_bodies(&aggregator.wait_for(5).await);
    assert_eq!(
        sent[4],
        (texter.clone(), HELP_TEXT.to_owned()),
        "QUIT was not answered"
    );

    // A suppression that ran out does not stand in the way of a new STOP: it is made the
    // texter's, for good, and answered.
    let expired = client()
        .post(nexus.url("/nexus/v3/outbound/suppressions"))
        .header("x-api-key", &key)
        .json(&json!({"address": texter, "expiresAt": "2020-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expired.status(),
        200,
        "the texter's suppression, given a past expiry"
    );
    assert_eq!(suppressions(&nexus, &key).await, []);
    aggregator_post(&nexus, &inbound, &text("SMk9", "STOP"), None).await;
    let sent = sent_bodies(&aggregator.wait_for(6).await);
    assert_eq!(
        sent[5],
        (
            texter.clone(),
            nexus_guest::consent::DEFAULT_OPT_OUT_REPLY.to_owned()
        )
    );
    assert_eq!(
        suppressions(&nexus, &key).await,
        [(texter.clone(), true, "keyword".to_owned())]
    );
}
