//! End to end: outbound SMS campaigns, against a local aggregator stand-in
//! (`support::aggregator`) that honours idempotency keys. A campaign tool uploads a list, makes
//! a campaign from a template, starts it, and watches its records reach their statuses: sent
//! once each, never to a suppressed number or outside the recipient's window, a record missing a
//! variable or refused by the aggregator failing alone with the reason, a 429 slowing the
//! campaign without failing anything, receipts joined back by the aggregator's ids, and a
//! paused campaign sending nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::aggregator::Aggregator;
use support::openapi::Api;
use support::{ADMIN_TOKEN, Backends, Nexus, Receiver, admin_ok, client};

const AUTH_TOKEN: &str = "aggregator-auth-token";

fn manifest() -> String {
    manifest_with_lease(15_000)
}

/// The application, the sms and email components' sends claimed for `lease_ms`.
fn manifest_with_lease(lease_ms: u64) -> String {
    use support::manifest::{application, campaign_socket, component, jobs, provisioning};
    [
        application("campaigns"),
        provisioning(),
        component("outbound", "/nexus/v3/outbound/...", &[]),
        r#"
[[component.outbound.tool.nexus.schedule]]
path = "/nexus/v3/outbound/campaigns/pump"
every_ms = 100
bearer = "{{ admin_token }}"
"#
        .to_owned(),
        component("sms", "/nexus/v3/sms/...", &["http://127.0.0.1:*"]),
        component("history", "/nexus/v3/history/...", &[]),
        campaign_socket(),
        component(
            "webhooks",
            "/nexus/v3/webhooks/...",
            &["http://127.0.0.1:*"],
        ),
        jobs("webhooks", "/nexus/v3/webhooks/jobs/run", 5000),
        jobs("sms", "/nexus/v3/sms/jobs/run", lease_ms),
        component("email", "/nexus/v3/email/...", &["http://127.0.0.1:*"]),
        jobs("email", "/nexus/v3/email/jobs/run", lease_ms),
    ]
    .concat()
}

both_backends!(
    a_campaign_sends_each_record_once_within_its_window_and_consent,
    an_email_campaign_sends_each_contact_its_mail,
    a_number_that_opts_out_mid_campaign_is_not_texted,
    a_scheduled_campaign_starts_on_time_and_its_unsent_records_expire,
    receipts_that_beat_their_sends_are_joined_and_a_waiting_poll_is_woken,
    the_email_providers_events_mark_mails_and_suppress_who_unsubscribes,
);

// Pacing, throttling and a host's death are measured on the real servers: the embedded
// PostgreSQL serves one connection at a time, for trying nexus out on one machine. They run one
// at a time: a measured rate is the host's, not what two campaigns on two cores leave it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_records_go_out_at_the_campaigns_pace() {
    let _alone = ONE_AT_A_TIME.lock().await;
    paced_campaign(Backends::Real).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_storm_slows_a_campaign_which_then_recovers() {
    let _alone = ONE_AT_A_TIME.lock().await;
    throttled_campaign(Backends::Real).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_campaign_finishes_on_another_host_when_its_host_dies() {
    let _alone = ONE_AT_A_TIME.lock().await;
    campaign_across_a_host_death(Backends::Real).await;
}

/// A call to the outbound API: the status and the answer's `data` (or the whole error).
async fn call(
    nexus: &Nexus,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(
            method.parse().unwrap(),
            nexus.url(&format!("/nexus/v3/outbound{path}")),
        )
        .header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    Api::load("outbound").check(
        method,
        &format!("/nexus/v3/outbound{path}"),
        status,
        &answer,
    );
    if (200..300).contains(&status) {
        (status, answer["data"].clone())
    } else {
        (status, answer)
    }
}

/// The IANA name of the fixed zone `hours` east of UTC (`Etc/GMT-5` is UTC+5).
fn fixed_zone(hours: i64) -> String {
    match hours {
        0 => "Etc/GMT".to_owned(),
        east if east > 0 => format!("Etc/GMT-{east}"),
        west => format!("Etc/GMT+{}", -west),
    }
}

/// Two zones for a window of 10:00 to 15:00: one where it is about noon now (open for at least
/// two hours), one where it is about midnight (closed for at least nine).
fn zones_open_and_closed() -> (String, String) {
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        % 24) as i64;
    let open = 12 - hour;
    let closed = if open - 12 >= -12 {
        open - 12
    } else {
        open + 12
    };
    (fixed_zone(open), fixed_zone(closed))
}

/// Posts `params` to `path` as the aggregator does, signed; it must be taken (200).
async fn aggregator_post(nexus: &Nexus, path: &str, params: &[(&str, &str)]) {
    let (status, body) =
        support::aggregator::post_signed(AUTH_TOKEN, &nexus.url(path), params, None)
            .await
            .unwrap();
    assert_eq!(status, 200, "{path}: {body}");
}

/// The aggregator's status callback for message `sid`.
async fn receipt(nexus: &Nexus, channel: &str, sid: &str, status: &str) {
    let params = [
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("AccountSid", "AC1"),
    ];
    aggregator_post(nexus, &format!("/nexus/v3/sms/{channel}/status"), &params).await;
}

/// A text from `from` to the channel, as the aggregator posts it.
async fn text_in(nexus: &Nexus, channel: &str, sid: &str, from: &str, body: &str) {
    let params = [
        ("MessageSid", sid),
        ("AccountSid", "AC1"),
        ("From", from),
        ("To", "+15550000"),
        ("Body", body),
    ];
    aggregator_post(nexus, &format!("/nexus/v3/sms/{channel}/inbound"), &params).await;
}

/// The records of a campaign by client id: `(status, reason)`.
async fn records(
    nexus: &Nexus,
    key: &str,
    campaign: &str,
) -> std::collections::BTreeMap<String, (String, String)> {
    let (status, answer) = call(
        nexus,
        "GET",
        &format!("/campaigns/{campaign}/records?limit=200"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["clientId"].as_str().unwrap().to_owned(),
                (
                    r["status"].as_str().unwrap().to_owned(),
                    r["reason"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

async fn a_campaign_sends_each_record_once_within_its_window_and_consent(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let aggregator = Aggregator::start().await;
    let (channel, key) = set_up(&nexus, &aggregator).await;
    let key = key.as_str();

    let (status, _) = call(
        &nexus,
        "PUT",
        "/templates/promo",
        key,
        Some(json!({"channel": "sms", "body": "Hi {{first_name}}, 20% off today. Reply STOP to opt out."})),
    )
    .await;
    assert_eq!(status, 201);
    // The campaign tool's webhook takes the records' events, not the campaign's.
    let hooks = Receiver::start().await;
    admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/webhooks",
        Some(json!({"url": format!("http://{}/hooks", hooks.addr), "events": ["record.*"]})),
    )
    .await;
    let (open, closed) = zones_open_and_closed();
    let csv = format!(
        "clientId,phone,email,timeZone,first_name\n\
         c-1,+14155550101,,{open},Ann\n\
         c-2,+14155550102,,{open},Bob\n\
         c-3,+14155550103,,{open},\n\
         c-4,+14155550104,,{closed},Dee\n\
         c-5,+14155550105,,{open},Eve\n\
         c-6,+14155550106,,{open},Fay\n\
         c-7,,gus@example.com,{open},Gus\n"
    );
    let (list, uploaded) = uploaded_list(&nexus, key, "spring", &csv).await;
    assert_eq!(uploaded["added"], 7, "{uploaded}");

    // Bob asked not to be texted; the aggregator refuses Eve's number; its first answer is a 429,
    // its second a 503.
    let (status, _) = call(
        &nexus,
        "POST",
        "/suppressions",
        key,
        Some(json!({"address": "+14155550102", "reason": "asked by phone"})),
    )
    .await;
    assert_eq!(status, 201);
    aggregator.refuse_number("+14155550105");
    aggregator.throttle_next(1, 1);
    aggregator.fail_next(1);

    // A draft names what the tenant has, and is checked.
    for (body, says) in [
        (
            json!({"name": "x", "channelId": channel, "listId": list, "template": "nope"}),
            "no template",
        ),
        (
            json!({"name": "x", "channelId": channel, "listId": list, "template": "promo",
                "window": {"from": "15:00", "to": "10:00"}}),
            "before",
        ),
        (
            json!({"name": "x", "channelId": channel, "listId": list, "template": "promo",
                "defaultTimeZone": "Mars/Base"}),
            "IANA",
        ),
    ] {
        let (status, error) = call(&nexus, "POST", "/campaigns", key, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            error["status"]["message"].as_str().unwrap().contains(says),
            "{error}"
        );
    }
    let (status, campaign) = call(
        &nexus,
        "POST",
        "/campaigns",
        key,
        Some(json!({
            "name": "spring sale", "channelId": channel, "listId": list, "template": "promo",
            "window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": "10:00", "to": "15:00"},
            "defaultTimeZone": open,
            "pacing": {"messagesPerSecond": 20, "burst": 2, "maxInFlight": 4},
            "attempts": {"max": 3, "backoffSeconds": 1},
        })),
    )
    .await;
    assert_eq!(status, 201, "{campaign}");
    assert_eq!(campaign["state"], "draft");
    let id = campaign["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &nexus,
        "POST",
        &format!("/campaigns/{id}/resume"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 409);

    let (status, started) =
        call(&nexus, "POST", &format!("/campaigns/{id}/start"), key, None).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["state"], "running");

    // Every record that can be settled is: Dee's window is closed, so hers waits.
    let expected = [
        ("c-1", "sent"),
        ("c-2", "suppressed"),
        ("c-3", "failed"),
        ("c-4", "pending"),
        ("c-5", "failed"),
        ("c-6", "sent"),
        ("c-7", "failed"),
    ];
    let settled = support::until("every record settled", || async {
        let records = records(&nexus, key, &id).await;
        let statuses: Vec<(&str, &str)> = records
            .iter()
            .map(|(c, (s, _))| (c.as_str(), s.as_str()))
            .collect();
        (statuses == expected).then_some(records.clone())
    })
    .await;
    let metrics = client()
        .get(nexus.url("/nexus/v3/outbound/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "nexus_campaigns{state=\"running\"} 1",
        "nexus_campaign_records{status=\"sent\"} 2",
        "nexus_campaign_records{status=\"pending\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    // The results as CSV, all or by status.
    let export = |query: &'static str| {
        let url = nexus.url(&format!(
            "/nexus/v3/outbound/campaigns/{id}/records.csv{query}"
        ));
        async move {
            let response = client()
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            assert_eq!(
                response.headers()["content-type"],
                "text/csv; charset=utf-8"
            );
            response.text().await.unwrap()
        }
    };
    let csv = export("").await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "clientId,address,timeZone,status,attempts,providerId,reason,updatedAt"
    );
    assert_eq!(lines.len(), 8, "{csv}");
    assert!(
        lines[2].starts_with(&format!(
            "c-2,+14155550102,{open},suppressed,0,,asked by phone,"
        )),
        "{}",
        lines[2]
    );
    let failed = export("?status=failed").await;
    assert_eq!(failed.lines().count(), 4, "{failed}");
    assert_eq!(settled["c-2"].1, "asked by phone");
    assert!(
        settled["c-3"].1.contains("`first_name`"),
        "{:?}",
        settled["c-3"]
    );
    assert!(settled["c-5"].1.contains("21211"), "{:?}", settled["c-5"]);
    assert!(
        settled["c-7"].1.contains("no phone number"),
        "{:?}",
        settled["c-7"]
    );

    // The aggregator took two messages, once each, rendered; the 429 failed nothing.
    let deliveries = aggregator.deliveries();
    let mut sent_to: Vec<&str> = deliveries.iter().map(|d| d.to.as_str()).collect();
    sent_to.sort_unstable();
    assert_eq!(sent_to, ["+14155550101", "+14155550106"]);
    let ann = deliveries.iter().find(|d| d.to == "+14155550101").unwrap();
    assert_eq!(ann.body, "Hi Ann, 20% off today. Reply STOP to opt out.");
    assert!(
        ann.key.starts_with(&format!("nexus:campaign:{id}:")),
        "{}",
        ann.key
    );
    let (_, repeats, throttled) = aggregator.counts();
    assert_eq!((repeats, throttled), (0, 1));
    // The record that met the 503 was tried again, and no record failed of it; the 429 was no
    // attempt.
    let (_, all_records) = call(
        &nexus,
        "GET",
        &format!("/campaigns/{id}/records"),
        key,
        None,
    )
    .await;
    let all_records = all_records["records"].as_array().unwrap().clone();
    let retried: Vec<&Value> = all_records.iter().filter(|r| r["attempts"] == 2).collect();
    assert_eq!(retried.len(), 1, "{all_records:?}");
    assert!(
        all_records
            .iter()
            .all(|r| r["attempts"].as_u64().unwrap() <= 2
                && !r["reason"].as_str().unwrap_or_default().contains("503")),
        "{all_records:?}"
    );

    // Receipts join back by the aggregator's ids, and only move forward.
    receipt(&nexus, &channel, &ann.sid, "delivered").await;
    receipt(&nexus, &channel, &ann.sid, "sent").await;
    let records_now = records(&nexus, key, &id).await;
    assert_eq!(records_now["c-1"].0, "delivered");
    let (_, campaign) = call(&nexus, "GET", &format!("/campaigns/{id}"), key, None).await;
    assert_eq!(
        campaign["counts"],
        json!({"delivered": 1, "sent": 1, "suppressed": 1, "failed": 3, "pending": 1})
    );

    // Ann answers: her record is marked, and her conversation says which campaign and record
    // it answers. Fay opts out.
    text_in(
        &nexus,
        &channel,
        "SMin1",
        "+14155550101",
        "Is it for shoes too?",
    )
    .await;
    text_in(&nexus, &channel, "SMin2", "+14155550106", "STOP").await;
    let records_now = records(&nexus, key, &id).await;
    assert_eq!(records_now["c-1"].0, "replied");
    assert_eq!(
        records_now["c-6"],
        ("opted-out".to_owned(), "the recipient opted out".to_owned())
    );
    let history_key = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/api-keys",
        Some(json!({"name": "crm", "permission": "history"})),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = |path: String| {
        let history_key = history_key.clone();
        let nexus = &nexus;
        async move {
            let answer: Value = client()
                .get(nexus.url(&path))
                .header("x-api-key", history_key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["data"].clone()
        }
    };
    let contacts = history("/nexus/v3/history/contacts?phone=%2B14155550101".to_owned()).await;
    let contact = contacts["items"][0]["id"].as_str().unwrap().to_owned();
    let conversations = history(format!("/nexus/v3/history/contacts/{contact}/interactions")).await;
    assert_eq!(
        conversations["items"][0]["userData"]["campaign"],
        json!({"campaignId": id, "campaignName": "spring sale", "clientId": "c-1"})
    );

    // What happened, in order, from a sequence number on.
    let (_, events) = call(&nexus, "GET", &format!("/campaigns/{id}/events"), key, None).await;
    let events = events["events"].as_array().unwrap().clone();
    assert_eq!(events[0]["type"], "campaign.running");
    let ann_events: Vec<&str> = events
        .iter()
        .filter(|e| e["clientId"] == "c-1")
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        ann_events,
        [
            "record.queued",
            "record.sent",
            "record.delivered",
            "record.replied"
        ]
    );
    let middle = events[2]["seq"].as_i64().unwrap();
    let (_, rest) = call(
        &nexus,
        "GET",
        &format!("/campaigns/{id}/events?after={middle}"),
        key,
        None,
    )
    .await;
    assert_eq!(rest["events"].as_array().unwrap().as_slice(), &events[3..]);

    // And signed, at the webhook, with the campaign and the event.
    let delivered_hook = hooks
        .wait_until("Ann's record.replied", |received| {
            received.iter().any(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                body["type"] == "record.replied" && body["data"]["clientId"] == "c-1"
            })
        })
        .await;
    let ann_hooks: Vec<Value> = delivered_hook
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .filter(|body| body["data"]["clientId"] == "c-1")
        .collect();
    let types: Vec<&str> = ann_hooks
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "record.queued",
            "record.sent",
            "record.delivered",
            "record.replied"
        ]
    );
    assert_eq!(ann_hooks[0]["campaignId"], id.as_str());
    assert!(
        delivered_hook
            .iter()
            .all(|r| r.headers.contains_key("webhook-signature"))
    );
    assert!(delivered_hook.iter().all(|r| {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        body["type"].as_str().unwrap().starts_with("record.")
    }));

    // The same events over the campaign's WebSocket, resumed after the third; then live.
    let socket_url = nexus.ws_url(&format!("/nexus/v3/outbound/campaigns/{id}/socket"));
    match support::ws::Socket::try_open(&socket_url, &[]).await {
        support::ws::Opened::Refused(status, _) => assert_eq!(status, 401),
        support::ws::Opened::Open(_) => panic!("a socket without a key"),
    }
    let mut socket = support::ws::Socket::open(
        &format!("{socket_url}?after={middle}"),
        &[("x-api-key", key)],
    )
    .await;
    let connected = socket.next_json().await;
    assert_eq!(
        (connected["type"].as_str(), connected["state"].as_str()),
        (Some("connected"), Some("running"))
    );
    for expected in &events[3..] {
        assert_eq!(&socket.next_json().await, expected);
    }
    let last = events.last().unwrap()["seq"].as_i64().unwrap();

    // Paused, the pump hands out nothing; cancelled, Dee is never texted.
    let (status, paused) = call(&nexus, "POST", &format!("/campaigns/{id}/pause"), key, None).await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")));
    for _ in 0..3 {
        let response = client()
            .post(nexus.url("/nexus/v3/outbound/campaigns/pump"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let turns: Value = response.json().await.unwrap();
        Api::load("outbound").check("POST", "/nexus/v3/outbound/campaigns/pump", 200, &turns);
        assert!(
            turns["data"]["campaigns"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["id"] != id.as_str()),
            "{turns}"
        );
    }
    let paused_event = socket.next_json().await;
    assert_eq!(
        (paused_event["type"].as_str(), paused_event["seq"].as_i64()),
        (Some("campaign.paused"), Some(last + 1))
    );
    // A long-poll from there answers when the next event comes.
    let poll = {
        let url = nexus.url(&format!(
            "/nexus/v3/outbound/campaigns/{id}/events?after={}&wait=20",
            last + 1
        ));
        let key = key.to_owned();
        tokio::spawn(async move {
            let answer: Value = client()
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer
        })
    };
    let (status, cancelled) = call(
        &nexus,
        "POST",
        &format!("/campaigns/{id}/cancel"),
        key,
        None,
    )
    .await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled"))
    );
    let polled = poll.await.unwrap();
    Api::load("outbound").check(
        "GET",
        &format!("/nexus/v3/outbound/campaigns/{id}/events"),
        200,
        &polled,
    );
    assert_eq!(polled["data"]["events"][0]["type"], "campaign.cancelled");
    assert_eq!(socket.next_json().await["type"], "campaign.cancelled");
    assert_eq!(records(&nexus, key, &id).await["c-4"].0, "pending");
    let campaign_messages = aggregator
        .deliveries()
        .iter()
        .filter(|d| d.key.starts_with("nexus:campaign:"))
        .count();
    assert_eq!(campaign_messages, 2);
    let (status, _) = call(&nexus, "DELETE", &format!("/lists/{list}"), key, None).await;
    assert_ne!(status, 200, "a list a campaign used stays");
}

/// A tenant with an SMS channel sending through `aggregator`, and an outbound API key: the
/// channel's id and the key.
async fn set_up(nexus: &Nexus, aggregator: &Aggregator) -> (String, String) {
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
        Some(
            json!({"type": "sms", "name": "sms-us", "secret": AUTH_TOKEN,
                    "settings": {"accountSid": "AC1", "from": "+15550000",
                                 "apiBaseUrl": aggregator.url()}}),
        ),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = admin_ok(
        nexus,
        "POST",
        "/tenants/acme/api-keys",
        Some(json!({"name": "campaigns", "permission": "outbound"})),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = call(
        nexus,
        "PUT",
        "/templates/notice",
        &key,
        Some(json!({"channel": "sms", "body": "Hi {{first_name}}, your order ships today."})),
    )
    .await;
    assert_eq!(status, 201);
    (channel, key)
}

/// A campaign of `count` contacts (`+1 415 ...`, Los Angeles) at `pacing`, started: its id.
async fn started_campaign(
    nexus: &Nexus,
    key: &str,
    channel: &str,
    count: usize,
    pacing: Value,
) -> String {
    let mut csv = String::from("clientId,phone,first_name\n");
    for n in 0..count {
        csv.push_str(&format!("c-{n},+1415{n:07},Name {n}\n"));
    }
    let (list, uploaded) = uploaded_list(nexus, key, "many", &csv).await;
    assert_eq!(uploaded["added"], count, "{uploaded}");
    let (status, campaign) = call(
        nexus,
        "POST",
        "/campaigns",
        key,
        Some(
            json!({"name": "notice", "channelId": channel, "listId": list,
                    "template": "notice", "pacing": pacing,
                    "attempts": {"max": 3, "backoffSeconds": 1}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{campaign}");
    let id = campaign["id"].as_str().unwrap().to_owned();
    let (status, started) = call(nexus, "POST", &format!("/campaigns/{id}/start"), key, None).await;
    assert_eq!(
        (status, started["state"].as_str()),
        (200, Some("running")),
        "{started}"
    );
    id
}

/// Waits (up to `limit`) until the aggregator has taken `count` messages.
async fn delivered(aggregator: &Aggregator, count: usize, limit: Duration) {
    aggregator
        .wait_until(&format!("{count} messages"), limit, |a| {
            a.delivered_count() >= count
        })
        .await;
}

/// Waits until campaign `id` completes, and answers it.
async fn completed(nexus: &Nexus, key: &str, id: &str) -> Value {
    support::until("the campaign to complete", || async {
        let (_, campaign) = call(nexus, "GET", &format!("/campaigns/{id}"), key, None).await;
        (campaign["state"] == "completed").then_some(campaign)
    })
    .await
}

/// Messages per second between the first and the last of `deliveries`.
fn rate(deliveries: &[support::aggregator::Delivery]) -> f64 {
    let first = deliveries.first().unwrap().at;
    let last = deliveries.last().unwrap().at;
    (deliveries.len() - 1) as f64 / last.duration_since(first).as_secs_f64()
}

/// Every delivery is a different record of the campaign: none was sent twice.
fn each_once(deliveries: &[support::aggregator::Delivery], count: usize) {
    let keys: std::collections::HashSet<&str> = deliveries.iter().map(|d| d.key.as_str()).collect();
    let numbers: std::collections::HashSet<&str> =
        deliveries.iter().map(|d| d.to.as_str()).collect();
    assert_eq!(
        (deliveries.len(), keys.len(), numbers.len()),
        (count, count, count)
    );
}

async fn paced_campaign(backends: Backends) {
    const RECORDS: usize = 10_000;
    let nexus = Nexus::start(&manifest(), backends).await;
    let aggregator = Aggregator::start().await;
    let (channel, key) = set_up(&nexus, &aggregator).await;
    let id = started_campaign(
        &nexus,
        &key,
        &channel,
        RECORDS,
        json!({"messagesPerSecond": 200, "burst": 20, "maxInFlight": 100}),
    )
    .await;
    delivered(&aggregator, RECORDS, Duration::from_secs(120)).await;
    let campaign = completed(&nexus, &key, &id).await;
    assert_eq!(campaign["counts"], json!({"sent": RECORDS}));
    let deliveries = aggregator.deliveries();
    each_once(&deliveries, RECORDS);
    let measured = rate(&deliveries);
    assert!(
        (180.0..=220.0).contains(&measured),
        "{measured:.1} messages/s, not 200 ± 10%"
    );
    assert_eq!(aggregator.counts().1, 0, "no key was sent twice");
}

async fn throttled_campaign(backends: Backends) {
    const RECORDS: usize = 1_500;
    let nexus = Nexus::start(&manifest(), backends).await;
    let aggregator = Aggregator::start().await;
    let (channel, key) = set_up(&nexus, &aggregator).await;
    let id = started_campaign(
        &nexus,
        &key,
        &channel,
        RECORDS,
        json!({"messagesPerSecond": 100, "burst": 10, "maxInFlight": 50}),
    )
    .await;
    // After 200 messages, the aggregator refuses the next 60 requests: 429, Retry-After 1.
    delivered(&aggregator, 200, Duration::from_secs(30)).await;
    aggregator.throttle_next(60, 1);
    let (_, campaign) = call(&nexus, "GET", &format!("/campaigns/{id}"), &key, None).await;
    assert_eq!(campaign["state"], "running");
    delivered(&aggregator, RECORDS, Duration::from_secs(120)).await;
    let campaign = completed(&nexus, &key, &id).await;
    // Nothing failed: each record went out once.
    assert_eq!(campaign["counts"], json!({"sent": RECORDS}));
    let deliveries = aggregator.deliveries();
    each_once(&deliveries, RECORDS);
    assert_eq!(aggregator.counts().2, 60);
    // It slowed: the campaign paused at least as long as the aggregator asked.
    let longest_gap = deliveries
        .windows(2)
        .map(|pair| pair[1].at.duration_since(pair[0].at))
        .max()
        .unwrap();
    assert!(longest_gap >= Duration::from_millis(900), "{longest_gap:?}");
    // And it recovered: the last 200 went out at the campaign's pace again.
    let recovered = rate(&deliveries[RECORDS - 200..]);
    assert!(
        (90.0..=110.0).contains(&recovered),
        "{recovered:.1} messages/s at the end"
    );
}

async fn campaign_across_a_host_death(backends: Backends) {
    const RECORDS: usize = 2_000;
    // Short leases: a dead host's sends are claimed again after 3 s.
    let mut first = Nexus::start(&manifest_with_lease(3_000), backends).await;
    let second = first.peer().await;
    let aggregator = Aggregator::start().await;
    let (channel, key) = set_up(&first, &aggregator).await;
    let id = started_campaign(
        &first,
        &key,
        &channel,
        RECORDS,
        json!({"messagesPerSecond": 200, "burst": 20, "maxInFlight": 100}),
    )
    .await;
    // Both hosts pump and send; the first dies a quarter of the way in, with sends out.
    delivered(&aggregator, RECORDS / 4, Duration::from_secs(30)).await;
    first.kill().await;
    delivered(&aggregator, RECORDS, Duration::from_secs(120)).await;
    let campaign = completed(&second, &key, &id).await;
    assert_eq!(campaign["counts"], json!({"sent": RECORDS}));
    // The aggregator took each record once; a send the dead host had made and not recorded was
    // made again with its key, and taken as the same message.
    each_once(&aggregator.deliveries(), RECORDS);
}

async fn an_email_campaign_sends_each_contact_its_mail(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let aggregator = Aggregator::start().await;
    let (_, key) = set_up(&nexus, &aggregator).await;
    let key = key.as_str();
    // The email provider's transmissions API, which answers each with its id.
    let provider = Receiver::start().await;
    provider.reply_with(r#"{"results": {"id": "tx-1", "total_accepted_recipients": 1}}"#);
    let channel = email_channel(&nexus, key, &provider).await;
    // An SMS template does not go through an email channel.
    let (list, _) = uploaded_list(
        &nexus,
        key,
        "buyers",
        "clientId,email,phone,first_name,order\n\
         b-1,ann@example.com,,Ann,A-1\n\
         b-2,bob@example.com,,,A-2\n\
         b-3,,+14155550101,Cy,A-3\n\
         b-4,dee@example.com,,Dee,A-4\n",
    )
    .await;
    let (status, _) = call(
        &nexus,
        "POST",
        "/suppressions",
        key,
        Some(json!({"address": "Dee@Example.com", "reason": "unsubscribed"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, error) = call(
        &nexus,
        "POST",
        "/campaigns",
        key,
        Some(json!({"name": "x", "channelId": channel, "listId": list, "template": "notice"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error["status"]["message"]
            .as_str()
            .unwrap()
            .contains("for sms"),
        "{error}"
    );
    let (status, campaign) = call(
        &nexus,
        "POST",
        "/campaigns",
        key,
        Some(
            json!({"name": "receipts", "channelId": channel, "listId": list,
                    "template": "receipt"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{campaign}");
    let id = campaign["id"].as_str().unwrap().to_owned();
    let (status, _) = call(&nexus, "POST", &format!("/campaigns/{id}/start"), key, None).await;
    assert_eq!(status, 200);
    let campaign = completed(&nexus, key, &id).await;
    assert_eq!(
        campaign["counts"],
        json!({"sent": 2, "failed": 1, "suppressed": 1})
    );
    let settled = records(&nexus, key, &id).await;
    assert_eq!(settled["b-3"].1, "the contact has no email address");
    assert_eq!(settled["b-4"].1, "unsubscribed");
    // One transmission a contact, rendered, with its idempotency key.
    let mails: Vec<Value> = provider
        .received()
        .iter()
        .map(|r| {
            assert!(
                r.header("idempotency-key")
                    .starts_with(&format!("nexus:campaign:{id}:"))
            );
            assert_eq!(r.header("authorization"), "provider-key");
            serde_json::from_slice(&r.body).unwrap()
        })
        .collect();
    let mut sent: Vec<(&str, &str, &str)> = mails
        .iter()
        .map(|m| {
            (
                m["recipients"][0]["address"]["email"].as_str().unwrap(),
                m["content"]["subject"].as_str().unwrap(),
                m["content"]["text"].as_str().unwrap(),
            )
        })
        .collect();
    sent.sort_unstable();
    assert_eq!(
        sent,
        [
            ("ann@example.com", "Your order A-1", "Thanks, Ann."),
            ("bob@example.com", "Your order A-2", "Thanks, friend."),
        ]
    );
    assert_eq!(mails[0]["content"]["from"], "news@acme.example");
    let (_, sent_records) = call(
        &nexus,
        "GET",
        &format!("/campaigns/{id}/records?status=sent"),
        key,
        None,
    )
    .await;
    assert_eq!(sent_records["records"][0]["providerId"], "tx-1");
}

/// A contact list of `contacts` (`clientId,phone,timeZone` lines after the header): its id.
async fn list_of(nexus: &Nexus, key: &str, contacts: &str) -> String {
    let csv = format!("clientId,phone,timeZone,first_name\n{contacts}");
    let (list, uploaded) = uploaded_list(nexus, key, "few", &csv).await;
    assert_eq!(uploaded["failed"], 0, "{uploaded}");
    list
}

/// A new contact list `name` with the contacts of `csv` (its header line first): its id, and
/// the upload's answer.
async fn uploaded_list(nexus: &Nexus, key: &str, name: &str, csv: &str) -> (String, Value) {
    let (_, list) = call(nexus, "POST", "/lists", key, Some(json!({ "name": name }))).await;
    let list = list["id"].as_str().unwrap().to_owned();
    let response = client()
        .post(nexus.url(&format!("/nexus/v3/outbound/lists/{list}/contacts")))
        .header("x-api-key", key)
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let uploaded: Value = response.json().await.unwrap();
    (list, uploaded["data"].clone())
}

async fn a_number_that_opts_out_mid_campaign_is_not_texted(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let aggregator = Aggregator::start().await;
    let (channel, key) = set_up(&nexus, &aggregator).await;
    let key = key.as_str();
    let list = list_of(
        &nexus,
        key,
        "m-1,+14155550201,,Ann\nm-2,+14155550202,,Bob\nm-3,+14155550203,,Cy\n",
    )
    .await;
    // One message a second: Cy's turn comes two seconds in.
    let (_, campaign) = call(
        &nexus,
        "POST",
        "/campaigns",
        key,
        Some(json!({"name": "slow", "channelId": channel, "listId": list,
                    "template": "notice",
                    "pacing": {"messagesPerSecond": 1, "burst": 1, "maxInFlight": 1}})),
    )
    .await;
    let id = campaign["id"].as_str().unwrap().to_owned();
    let (status, _) = call(&nexus, "POST", &format!("/campaigns/{id}/start"), key, None).await;
    assert_eq!(status, 200);
    delivered(&aggregator, 1, Duration::from_secs(30)).await;
    // Cy texts STOP before his turn (the aggregator's answer to it is not a campaign message).
    text_in(&nexus, &channel, "SMstop", "+14155550203", "STOP").await;
    let campaign = completed(&nexus, key, &id).await;
    assert_eq!(campaign["counts"], json!({"sent": 2, "suppressed": 1}));
    let settled = records(&nexus, key, &id).await;
    assert_eq!(settled["m-3"].0, "suppressed");
    assert!(
        aggregator
            .deliveries()
            .iter()
            .filter(|d| d.to == "+14155550203")
            .all(|d| !d.key.starts_with("nexus:campaign:")),
        "Cy got a campaign message"
    );
}

async fn a_scheduled_campaign_starts_on_time_and_its_unsent_records_expire(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let aggregator = Aggregator::start().await;
    let (channel, key) = set_up(&nexus, &aggregator).await;
    let key = key.as_str();
    let (open, closed) = zones_open_and_closed();
    let list = list_of(
        &nexus,
        key,
        &format!("x-1,+14155550301,{open},Ann\nx-2,+14155550302,{closed},Bob\n"),
    )
    .await;
    // It starts in a second, and its records are valid for a second from then; at a hundredth
    // of a message a second, none is sent before that.
    let start_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let start_at = start_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, campaign) = call(
        &nexus,
        "POST",
        "/campaigns",
        key,
        Some(
            json!({"name": "later", "channelId": channel, "listId": list,
                    "template": "notice", "schedule": {"startAt": start_at},
                    "window": {"from": "10:00", "to": "15:00"}, "validitySeconds": 1,
                    "pacing": {"messagesPerSecond": 0.01, "burst": 1}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{campaign}");
    let id = campaign["id"].as_str().unwrap().to_owned();
    let (_, started) = call(&nexus, "POST", &format!("/campaigns/{id}/start"), key, None).await;
    assert_eq!(started["state"], "scheduled");
    let campaign = completed(&nexus, key, &id).await;
    assert_eq!(
        campaign["counts"],
        json!({"expired": 1, "outside-window": 1})
    );
    let rfc3339 = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(rfc3339(campaign["startedAt"].as_str().unwrap()) >= rfc3339(&start_at));
    let (_, events) = call(&nexus, "GET", &format!("/campaigns/{id}/events"), key, None).await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types[..2], ["campaign.scheduled", "campaign.running"]);
    assert_eq!(types.last(), Some(&"campaign.completed"));
    assert!(aggregator.deliveries().is_empty());
}

/// The value of the metric line that starts with `name` (labels included), if any.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

/// A campaign tool long-polls the events of a campaign not started yet: the poll waits parked
/// (no instance held) and the start wakes it. The aggregator reports each message before it
/// answers its send (its status callback wins the race with its answer): the receipts are kept
/// and joined to their records when the sids are recorded, a failure with its reason.
async fn receipts_that_beat_their_sends_are_joined_and_a_waiting_poll_is_woken(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let aggregator = Aggregator::start().await;
    let (channel, key) = set_up(&nexus, &aggregator).await;
    let key = key.as_str();
    aggregator.report_first(AUTH_TOKEN, &["+14155550302"]);
    let list = list_of(
        &nexus,
        key,
        "r-1,+14155550301,,Ann\nr-2,+14155550302,,Bob\n",
    )
    .await;
    let (status, campaign) = call(
        &nexus,
        "POST",
        "/campaigns",
        key,
        Some(
            json!({"name": "raced", "channelId": channel, "listId": list,
                    "template": "notice"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{campaign}");
    let id = campaign["id"].as_str().unwrap().to_owned();

    let poll = {
        let url = nexus.url(&format!(
            "/nexus/v3/outbound/campaigns/{id}/events?after=0&wait=30"
        ));
        let key = key.to_owned();
        tokio::spawn(async move {
            let response = client()
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            response.json::<Value>().await.unwrap()
        })
    };
    support::until("the poll to park", || async {
        (metric(&nexus.metrics().await, "nexus_parked_requests") == Some(1.0)).then_some(())
    })
    .await;
    let (status, _) = call(&nexus, "POST", &format!("/campaigns/{id}/start"), key, None).await;
    assert_eq!(status, 200);
    let polled = poll.await.unwrap();
    Api::load("outbound").check(
        "GET",
        &format!("/nexus/v3/outbound/campaigns/{id}/events"),
        200,
        &polled,
    );
    assert_eq!(polled["data"]["events"][0]["type"], "campaign.running");
    // Woken by the start's event, not by its deadline.
    let page = nexus.metrics().await;
    assert_eq!(
        metric(&page, "nexus_parked_wakes_total{reason=\"published\"}"),
        Some(1.0),
        "{page}"
    );

    let campaign = completed(&nexus, key, &id).await;
    assert_eq!(campaign["counts"], json!({"delivered": 1, "failed": 1}));
    let settled = records(&nexus, key, &id).await;
    assert_eq!(settled["r-1"], ("delivered".to_owned(), String::new()));
    assert_eq!(
        settled["r-2"],
        (
            "failed".to_owned(),
            "the aggregator reported undelivered (error 30003)".to_owned()
        )
    );
    // Both reports came first, and were kept until the sends' answers named their sids.
    let reports = aggregator.reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    for (sid, status, body) in &reports {
        assert_eq!(*status, 200, "{sid}: {body}");
        let answer: Value = serde_json::from_str(body).unwrap();
        assert_eq!(answer["data"]["pending"], true, "{sid}: {body}");
    }
    let (_, events) = call(&nexus, "GET", &format!("/campaigns/{id}/events"), key, None).await;
    let of = |client: &str| -> Vec<String> {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["clientId"] == client)
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        of("r-1"),
        ["record.queued", "record.sent", "record.delivered"]
    );
    assert_eq!(of("r-2"), ["record.queued", "record.sent", "record.failed"]);
}

/// An email channel of tenant `acme` sending through `provider` (its secret `signing-key`), and
/// its email template `receipt`: the channel's id.
async fn email_channel(nexus: &Nexus, key: &str, provider: &Receiver) -> String {
    let channel = admin_ok(
        nexus,
        "POST",
        "/tenants/acme/channels",
        Some(
            json!({"type": "email", "name": "mail", "secret": "signing-key",
                    "credentials": {"apiKey": "provider-key"},
                    "settings": {"from": "news@acme.example",
                                 "apiBaseUrl": format!("http://{}", provider.addr)}}),
        ),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = call(
        nexus,
        "PUT",
        "/templates/receipt",
        key,
        Some(
            json!({"channel": "email", "subject": "Your order {{order}}",
                    "body": "Thanks, {{first_name|friend}}."}),
        ),
    )
    .await;
    assert_eq!(status, 201);
    channel
}

/// Posts a batch of the email provider's events to channel `channel`, with HTTP Basic
/// credentials whose password is `password`: the status and the answer.
async fn provider_events(
    nexus: &Nexus,
    channel: &str,
    password: Option<&str>,
    batch: &Value,
) -> (u16, Value) {
    let path = format!("/nexus/v3/email/{channel}/events");
    let mut request = client().post(nexus.url(&path)).json(batch);
    if let Some(password) = password {
        request = request.basic_auth("sparkpost", Some(password));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    Api::load("email").check("POST", &path, status, &answer);
    (status, answer)
}

/// The email provider reports what became of a campaign's mails, in its event webhook's
/// batches: a delivery, a bounce (with the receiving server's words), a list-unsubscribe (the
/// recipient suppressed, as their source, and the record opted out); opens and pings are
/// ignored; the same batch again changes nothing; a batch without the channel's credentials is
/// refused.
async fn the_email_providers_events_mark_mails_and_suppress_who_unsubscribes(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let aggregator = Aggregator::start().await;
    let (_, key) = set_up(&nexus, &aggregator).await;
    let key = key.as_str();
    let provider = Receiver::start().await;
    provider.reply_with(r#"{"results": {"id": "tx-{n}", "total_accepted_recipients": 1}}"#);
    let channel = email_channel(&nexus, key, &provider).await;
    let (list, _) = uploaded_list(
        &nexus,
        key,
        "mail",
        "clientId,email,first_name,order\n\
         e-1,ann@example.com,Ann,A-1\n\
         e-2,bob@example.com,Bob,A-2\n\
         e-3,cy@example.com,Cy,A-3\n",
    )
    .await;
    let (status, campaign) = call(
        &nexus,
        "POST",
        "/campaigns",
        key,
        Some(json!({"name": "mails", "channelId": channel, "listId": list, "template": "receipt"})),
    )
    .await;
    assert_eq!(status, 201, "{campaign}");
    let id = campaign["id"].as_str().unwrap().to_owned();
    let (status, _) = call(&nexus, "POST", &format!("/campaigns/{id}/start"), key, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        completed(&nexus, key, &id).await["counts"],
        json!({"sent": 3})
    );
    // The provider answered its n-th transmission with the id `tx-n`.
    let transmission_of = |email: &str| -> String {
        let n = provider
            .received()
            .iter()
            .position(|r| {
                let mail: Value = serde_json::from_slice(&r.body).unwrap();
                mail["recipients"][0]["address"]["email"] == email
            })
            .unwrap();
        format!("tx-{}", n + 1)
    };
    let (ann, bob, cy) = (
        transmission_of("ann@example.com"),
        transmission_of("bob@example.com"),
        transmission_of("cy@example.com"),
    );
    let event = |kind: &str, fields: Value| {
        let mut event = fields;
        event["type"] = json!(kind);
        let envelope = if kind.ends_with("_unsubscribe") {
            "unsubscribe_event"
        } else if kind == "open" {
            "track_event"
        } else {
            "message_event"
        };
        json!({"msys": {envelope: event}})
    };
    let batch = json!([
        {"msys": {}},
        event("delivery", json!({"transmission_id": ann, "rcpt_to": "ann@example.com"})),
        event(
            "bounce",
            json!({"transmission_id": bob, "rcpt_to": "bob@example.com", "bounce_class": "10",
                   "raw_reason": "550 5.1.1 <bob@example.com>: user unknown"})
        ),
        event("delivery", json!({"transmission_id": cy, "rcpt_to": "cy@example.com"})),
        event("list_unsubscribe", json!({"transmission_id": cy, "rcpt_to": "Cy@Example.com"})),
        event("open", json!({"transmission_id": ann, "rcpt_to": "ann@example.com"})),
    ]);

    for password in [None, Some("not-the-secret")] {
        let (status, refused) = provider_events(&nexus, &channel, password, &batch).await;
        assert_eq!(status, 401, "{refused}");
    }
    assert_eq!(records(&nexus, key, &id).await["e-1"].0, "sent");
    let (status, taken) = provider_events(&nexus, &channel, Some("signing-key"), &batch).await;
    assert_eq!(status, 200, "{taken}");
    assert_eq!(taken["data"], json!({"events": 6, "recorded": 4}));
    // The provider sends a batch again when it got no answer: nothing changes.
    let (_, again) = provider_events(&nexus, &channel, Some("signing-key"), &batch).await;
    assert_eq!(again["data"], json!({"events": 6, "recorded": 0}));

    let settled = records(&nexus, key, &id).await;
    assert_eq!(settled["e-1"], ("delivered".to_owned(), String::new()));
    assert_eq!(
        settled["e-2"],
        (
            "failed".to_owned(),
            "the provider reported bounce (bounce class 10): 550 5.1.1 <bob@example.com>: user unknown"
                .to_owned()
        )
    );
    assert_eq!(settled["e-3"].0, "opted-out");
    let (_, events) = call(&nexus, "GET", &format!("/campaigns/{id}/events"), key, None).await;
    let cy_events: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["clientId"] == "e-3")
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        cy_events,
        [
            "record.queued",
            "record.sent",
            "record.delivered",
            "record.opted-out"
        ]
    );
    // Cy is suppressed for the tenant, as theirs: the tenant's own list does not take it over.
    let (status, suppressed) =
        call(&nexus, "GET", "/suppressions?source=unsubscribe", key, None).await;
    assert_eq!(status, 200, "{suppressed}");
    let suppressions = suppressed["suppressions"].as_array().unwrap();
    assert_eq!(suppressions.len(), 1, "{suppressed}");
    assert_eq!(suppressions[0]["address"], "cy@example.com");
    assert_eq!(
        suppressions[0]["reason"],
        "the recipient unsubscribed (List-Unsubscribe)"
    );
    let (_, readded) = call(
        &nexus,
        "POST",
        "/suppressions",
        key,
        Some(json!({"address": "cy@example.com", "reason": "on our list too"})),
    )
    .await;
    assert_eq!(readded["source"], "unsubscribe", "{readded}");
}
