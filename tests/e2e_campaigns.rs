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

use serde_json::{Value, json};
use support::aggregator::Aggregator;
use support::openapi::Api;
use support::{ADMIN_TOKEN, Backends, Nexus, admin_ok, client};

const AUTH_TOKEN: &str = "aggregator-auth-token";

fn manifest() -> String {
    use support::manifest::{application, component, jobs, provisioning};
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
        jobs("sms", "/nexus/v3/sms/jobs/run", 15000),
    ]
    .concat()
}

both_backends!(a_campaign_sends_each_record_once_within_its_window_and_consent);

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

/// The aggregator's status callback for message `sid`.
async fn receipt(nexus: &Nexus, channel: &str, sid: &str, status: &str) {
    let url = nexus.url(&format!("/nexus/v3/sms/{channel}/status"));
    let params = [
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("AccountSid", "AC1"),
    ];
    let response = client()
        .post(&url)
        .header(
            "x-twilio-signature",
            support::aggregator::twilio_signature(AUTH_TOKEN, &url, &params),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
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
        &nexus,
        "POST",
        "/tenants/acme/api-keys",
        Some(json!({"name": "campaigns", "permission": "outbound"})),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let (open, closed) = zones_open_and_closed();
    let (_, list) = call(
        &nexus,
        "POST",
        "/lists",
        key,
        Some(json!({"name": "spring"})),
    )
    .await;
    let list = list["id"].as_str().unwrap().to_owned();
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
    let response = client()
        .post(nexus.url(&format!("/nexus/v3/outbound/lists/{list}/contacts")))
        .header("x-api-key", key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(uploaded["data"]["added"], 7, "{uploaded}");

    // Bob asked not to be texted; the aggregator refuses Eve's number; its first answer is a 429.
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
        ["record.queued", "record.sent", "record.delivered"]
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
    assert_eq!(records(&nexus, key, &id).await["c-4"].0, "pending");
    assert_eq!(aggregator.deliveries().len(), 2);
    let (status, _) = call(&nexus, "DELETE", &format!("/lists/{list}"), key, None).await;
    assert_ne!(status, 200, "a list a campaign used stays");
}
