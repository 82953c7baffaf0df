//! End to end: the URLs tenants give nexus to send to cannot reach into nexus's own network
//! (loopback, private, link-local and metadata addresses) unless the operator allows it
//! (`allow_private_outbound`), neither when they are written (provisioning answers 400) nor when
//! nexus delivers to them (the host checks the resolved address; `http://*:*` reaches public
//! addresses only, a grant naming the address reaches it).
//!
//! Every other suite runs with `allow_private_outbound` true (their receivers are on 127.0.0.1);
//! these hosts turn it off. The guard does not depend on the storage, so these run on the real
//! servers only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::chat::ChatCustomer;
use support::{Backends, Nexus, Receiver, admin, admin_ok, client};

/// The operator's switch, off.
const GUARDED: &[(&str, &str)] = &[("SPIN_VARIABLE_ALLOW_PRIVATE_OUTBOUND", "false")];

/// What a tenant may not point nexus at: loopback, the metadata service, IPv6 loopback, the
/// local machine by name, a private network.
const PRIVATE_URLS: [&str; 5] = [
    "http://127.0.0.1:9/",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/",
    "http://localhost/",
    "http://10.1.2.3/",
];

async fn refused(nexus: &Nexus, method: &str, path: &str, body: Value, field: &str) {
    let (status, answer) = admin(nexus, method, path, Some(body.clone())).await;
    assert_eq!(status, 400, "{method} {path} {body}: {answer}");
    assert_eq!(answer["status"]["code"], "INVALID_PARAMETER", "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("`{field}`")),
        "the answer names `{field}`: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provisioning_refuses_private_urls_unless_the_operator_allows_them() {
    use support::manifest::{application, provisioning};
    let manifest = [application("private-outbound"), provisioning()].concat();
    let nexus = Nexus::start_with(&manifest, Backends::Real, GUARDED).await;
    admin_ok(
        &nexus,
        "POST",
        "/tenants",
        Some(json!({"ccid": "acme", "name": "Acme"})),
    )
    .await;
    let bridge = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/channels",
        Some(json!({"type": "messaging", "name": "bridge",
                    "settings": {"webhookUrl": "https://bridge.example.com/outbound"}})),
    )
    .await;
    let bridge = bridge["id"].as_str().unwrap().to_owned();

    for url in PRIVATE_URLS {
        refused(
            &nexus,
            "POST",
            "/tenants/acme/webhooks",
            json!({"url": url, "events": ["*"]}),
            "url",
        )
        .await;
        refused(
            &nexus,
            "POST",
            "/tenants/acme/channels",
            json!({"type": "messaging", "name": "other", "settings": {"webhookUrl": url}}),
            "settings.webhookUrl",
        )
        .await;
        refused(
            &nexus,
            "PATCH",
            &format!("/tenants/acme/channels/{bridge}"),
            json!({"settings": {"webhookUrl": url}}),
            "settings.webhookUrl",
        )
        .await;
    }
    // A bot's URL and an aggregator's API are tenants' URLs too.
    refused(
        &nexus,
        "POST",
        "/tenants/acme/bots",
        json!({"name": "helper", "url": "http://169.254.169.254/turn"}),
        "url",
    )
    .await;
    refused(
        &nexus,
        "POST",
        "/tenants/acme/channels",
        json!({"type": "sms", "name": "sms", "secret": "token",
               "settings": {"accountSid": "AC1", "from": "+15550000",
                            "apiBaseUrl": "http://metadata.google.internal"}}),
        "settings.apiBaseUrl",
    )
    .await;

    // Nothing refused was stored, and public URLs are taken.
    let webhooks = admin_ok(&nexus, "GET", "/tenants/acme/webhooks", None).await;
    assert_eq!(webhooks["webhooks"], json!([]), "{webhooks}");
    let channel = admin_ok(
        &nexus,
        "GET",
        &format!("/tenants/acme/channels/{bridge}"),
        None,
    )
    .await;
    assert_eq!(
        channel["settings"]["webhookUrl"], "https://bridge.example.com/outbound",
        "{channel}"
    );
    admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/webhooks",
        Some(json!({"url": "https://hooks.example.com/nexus", "events": ["*"]})),
    )
    .await;
}

/// The application whose components deliver to tenants' URLs, with the host's guard on: the
/// webhooks component holds `http://*:*` (as in spin.toml) and a grant of `granted`'s address;
/// the example component is mounted twice, at `/wild` with `http://*:*` alone and at `/granted`
/// with `http://127.0.0.1:*` too. Provisioning alone is told to take private URLs (its own
/// variable, not the application's), so that what is tested is the host's check at delivery.
fn delivery_manifest(granted: &Receiver) -> String {
    use support::manifest::{application, component, jobs, provisioning};
    let provisioning = provisioning().replace(
        r#"allow_private_outbound = "{{ allow_private_outbound }}""#,
        r#"allow_private_outbound = "true""#,
    );
    assert!(provisioning.contains(r#"allow_private_outbound = "true""#));
    [
        application("private-outbound"),
        provisioning,
        component("chat", "/nexus/v3/chat/...", &[]),
        component(
            "webhooks",
            "/nexus/v3/webhooks/...",
            &[
                "http://*:*",
                "https://*:*",
                &format!("http://{}", granted.addr),
            ],
        ),
        jobs("webhooks", "/nexus/v3/webhooks/jobs/run", 5000),
        r#"
[[trigger.http]]
route = "/wild/..."
component = "wild"

[component.wild]
source = "{example}"
allowed_outbound_hosts = ["http://*:*", "https://*:*"]

[[trigger.http]]
route = "/granted/..."
component = "granted"

[component.granted]
source = "{example}"
allowed_outbound_hosts = ["http://*:*", "http://127.0.0.1:*"]
"#
        .to_owned(),
    ]
    .concat()
}

/// Asks the example component at `mount` to GET `target`.
async fn fetch(nexus: &Nexus, mount: &str, target: &str) -> (u16, Value) {
    let response = client()
        .get(nexus.url(&format!("/{mount}/fetch")))
        .query(&[("url", target)])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wildcards_deliver_to_public_addresses_only() {
    let local = Receiver::start().await;
    let granted = Receiver::start().await;
    let nexus = Nexus::start_with(&delivery_manifest(&granted), Backends::Real, GUARDED).await;

    // `http://*:*` does not reach 127.0.0.1, whether named by address or by a name that
    // resolves there; nothing leaves the host.
    for target in [
        format!("http://{}/wild", local.addr),
        format!("http://localhost:{}/wild", local.addr.port()),
        format!("http://[::ffff:127.0.0.1]:{}/wild", local.addr.port()),
    ] {
        let (status, body) = fetch(&nexus, "wild", &target).await;
        assert_eq!(status, 502, "{target}: {body}");
        assert_eq!(
            body["error"]["message"], "the outbound-http call failed: HttpRequestDenied",
            "{target}: {body}"
        );
    }
    // The same component granted 127.0.0.1 reaches it.
    let (status, body) = fetch(&nexus, "granted", &format!("http://{}/granted", local.addr)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["body"], "received");
    let received = local.received();
    assert_eq!(received.len(), 1, "only the granted request arrived");
    assert_eq!(received[0].path, "/granted");

    // Webhooks: one endpoint reached only through `http://*:*`, one whose address is granted.
    admin_ok(
        &nexus,
        "POST",
        "/tenants",
        Some(json!({"ccid": "acme", "name": "Acme"})),
    )
    .await;
    admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/channels",
        Some(json!({"type": "chat", "name": "web"})),
    )
    .await;
    let key = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/api-keys",
        Some(json!({"name": "widget", "permission": "chat"})),
    )
    .await;
    let key = key["key"].as_str().unwrap().to_owned();
    for receiver in [&local, &granted] {
        admin_ok(
            &nexus,
            "POST",
            "/tenants/acme/webhooks",
            Some(json!({"url": format!("http://{}/hooks", receiver.addr), "events": ["STARTED"]})),
        )
        .await;
    }
    ChatCustomer::start(&nexus, &key, "Ada").await;

    // The granted endpoint gets its event; the other's job runs out of retries, denied.
    let delivered = granted.wait_for(1).await;
    assert_eq!(delivered[0].path, "/hooks");
    let mut dead = Value::Null;
    for _ in 0..200 {
        dead = admin_ok(&nexus, "GET", "/tenants/acme/jobs?state=dead", None).await;
        if !dead["jobs"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jobs = dead["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{dead}");
    assert_eq!(jobs[0]["attempts"], 3, "{dead}");
    assert!(
        jobs[0]["lastError"]
            .as_str()
            .is_some_and(|error| error.contains("HttpRequestDenied")),
        "{dead}"
    );
    assert_eq!(local.received().len(), 1, "the webhook never reached it");
    assert_eq!(granted.received().len(), 1);

    // The host logs each refusal with the component and the address it resolved to.
    let events = nexus.log_events();
    for component in ["wild", "webhooks"] {
        assert!(
            events.iter().any(|event| {
                event["fields"]["component"] == component
                    && event["fields"]["resolved"]
                        .as_str()
                        .is_some_and(|resolved| resolved.contains("127.0.0.1 (a loopback address)"))
                    && event["fields"]["message"]
                        .as_str()
                        .is_some_and(|message| message.contains("non-public"))
            }),
            "a refusal of {component} is logged"
        );
    }
}
