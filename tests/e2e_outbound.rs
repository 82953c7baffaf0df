//! End to end: the outbound API as a campaign tool uses it with its `outbound` API key: the
//! suppression list (adding, replacing, checking, listing, importing from CSV, deleting), the
//! message templates (saving, a dry-run render of one record, what an SMS costs) and the contact
//! lists (CSV uploads, read as they arrive, with every bad line reported), every answer
//! checked against `openapi/outbound.json`. (Texters' own STOP and START are in
//! e2e_sms.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use serde_json::{Value, json};
use support::openapi::Api;
use support::{Backends, Nexus, admin_ok, client};

fn manifest() -> String {
    use support::manifest::{application, component, provisioning};
    [
        application("outbound"),
        provisioning(),
        component("outbound", "/nexus/v3/outbound/...", &[]),
        // Less memory than the largest upload of these tests: an upload must be read as it
        // arrives, never held whole.
        r#"
[component.outbound.tool.nexus]
max_memory_mb = 24
max_request_body_bytes = 268435456
request_timeout_ms = 300000
cpu_timeout_ms = 60000
"#
        .to_owned(),
    ]
    .concat()
}

both_backends!(
    a_campaign_tool_keeps_its_suppression_list,
    templates_render_one_record_as_a_dry_run,
    a_campaign_tool_uploads_a_contact_list,
    a_list_of_100000_contacts_is_read_as_it_arrives,
    a_suppression_import_of_100000_lines_is_read_as_it_arrives,
);

/// A call to the outbound API with `key`, checked against its document: the status and the
/// answer (`data`, or the whole error).
async fn call(
    nexus: &Nexus,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let document_path = path.split_once('?').map_or(path, |(path, _)| path);
    let mut request = client().request(method.parse().unwrap(), nexus.url(path));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    Api::load("outbound").check(method, document_path, status, &answer);
    let data = if (200..300).contains(&status) {
        answer["data"].clone()
    } else {
        answer
    };
    (status, data)
}

/// Whether an address is suppressed (`query`: `address=...`, maybe `&channelId=...`).
async fn check(nexus: &Nexus, key: &str, query: &str) -> Value {
    let (status, answer) = call(
        nexus,
        "GET",
        &format!("/nexus/v3/outbound/suppressions/check?{query}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Posts a CSV file to the import.
async fn import(nexus: &Nexus, key: &str, csv: impl Into<reqwest::Body>) -> (u16, Value) {
    let path = "/nexus/v3/outbound/suppressions/import";
    let response = client()
        .post(nexus.url(path))
        .header("x-api-key", key)
        .header("content-type", "text/csv; charset=utf-8")
        .timeout(std::time::Duration::from_secs(300))
        .body(csv)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    Api::load("outbound").check("POST", path, status, &answer);
    (status, answer["data"].clone())
}

/// A tenant with an sms channel and an outbound API key: the channel's id and the key.
async fn tenant(nexus: &Nexus, ccid: &str) -> (String, String) {
    let tenants = "/tenants";
    admin_ok(
        nexus,
        "POST",
        tenants,
        Some(json!({"ccid": ccid, "name": ccid})),
    )
    .await;
    let channel = admin_ok(
        nexus,
        "POST",
        &format!("{tenants}/{ccid}/channels"),
        Some(json!({"type": "sms", "name": "sms-us", "secret": "token",
                    "settings": {"accountSid": "AC1", "from": "+15550000"}})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = admin_ok(
        nexus,
        "POST",
        &format!("{tenants}/{ccid}/api-keys"),
        Some(json!({"name": "campaigns", "permission": "outbound"})),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    (channel, key)
}

async fn a_campaign_tool_keeps_its_suppression_list(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let (channel, key_text) = tenant(&nexus, "acme").await;
    let key = Some(key_text.as_str());
    let list = "/nexus/v3/outbound/suppressions";

    // Credentials: none, or a key of another permission.
    let (status, _) = call(&nexus, "GET", list, None, None).await;
    assert_eq!(status, 401);
    let chat_key = admin_ok(
        &nexus,
        "POST",
        "/tenants/acme/api-keys",
        Some(json!({"name": "widget", "permission": "chat"})),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = call(&nexus, "GET", list, Some(&chat_key), None).await;
    assert_eq!(status, 403);

    // Added for every sender, however the number was typed; again: replaced.
    let (status, phone) = call(
        &nexus,
        "POST",
        list,
        key,
        Some(json!({"address": "+1 (555) 010-0100", "reason": "asked by phone"})),
    )
    .await;
    assert_eq!(status, 201, "{phone}");
    assert_eq!(phone["address"], "+15550100100");
    assert_eq!(phone["channelId"], Value::Null);
    assert_eq!(phone["source"], "api");
    assert_eq!(phone["active"], true);
    let (status, replaced) = call(
        &nexus,
        "POST",
        list,
        key,
        Some(json!({"address": "+15550100100", "reason": "asked twice"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(replaced["id"], phone["id"]);
    assert_eq!(replaced["reason"], "asked twice");
    // For one channel: a scope of its own.
    let (status, for_channel) = call(
        &nexus,
        "POST",
        list,
        key,
        Some(json!({"address": "+15550100100", "channelId": channel})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(for_channel["channelId"], channel.as_str());
    // An email address whose suppression has already run out.
    let (status, expired) = call(
        &nexus,
        "POST",
        list,
        key,
        Some(json!({"address": " Ann@Example.COM ", "expiresAt": "2020-01-01T00:00:00+01:00"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(expired["address"], "ann@example.com");
    assert_eq!(expired["expiresAt"], "2019-12-31T23:00:00.000000Z");
    assert_eq!(expired["active"], false);

    // Refused, naming the field.
    for (body, names) in [
        (json!({"address": "555-0100"}), "E.164"),
        (
            json!({"address": "+15550100100", "channelId": "00000000-0000-0000-0000-000000000001"}),
            "not a channel",
        ),
        (
            json!({"address": "+15550100100", "expiresAt": "tomorrow"}),
            "expiresAt",
        ),
        (
            json!({"address": "+15550100100", "reason": "x".repeat(501)}),
            "reason",
        ),
        (json!({"reason": "no address"}), "address"),
    ] {
        let (status, error) = call(&nexus, "POST", list, key, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {error}");
        let message = error["status"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{body}: {message}");
    }

    // Checked: for any sender (the tenant-wide one), for the channel (both), and the expired.
    let answer = check(&nexus, &key_text, "address=%2B15550100100").await;
    assert_eq!(answer["suppressed"], true);
    assert_eq!(answer["suppressions"].as_array().unwrap().len(), 1);
    let answer = check(
        &nexus,
        &key_text,
        &format!("address=%2B15550100100&channelId={channel}"),
    )
    .await;
    assert_eq!(answer["suppressions"].as_array().unwrap().len(), 2);
    let answer = check(&nexus, &key_text, "address=ann%40example.com").await;
    assert_eq!(answer["suppressed"], false);
    let answer = check(&nexus, &key_text, "address=%2B15550100199").await;
    assert_eq!(answer["suppressed"], false);

    // Imported from a spreadsheet: good lines in, bad ones reported by line, none stopping the
    // rest; a quoted reason may hold a comma and a line break.
    let csv = format!(
        "\u{feff}address,reason,expiresAt,channelId\n\
         +15550100101,moved away,,\n\
         not a number,typo,,\n\
         +15550100102,\"said \"\"no\"\", twice,\nby letter\",2999-01-01T00:00:00Z,\n\
         +15550100101,again,,\n\
         +15550100100,complained,,{channel}\n\
         +15550100103,short line\n\
         ann@example.com,,,\n\
         +15550100104,bad date,someday,\n"
    );
    let (status, report) = import(&nexus, &key_text, csv).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["added"], 2, "{report}");
    assert_eq!(report["updated"], 2, "{report}");
    assert_eq!(report["failed"], 4, "{report}");
    let lines: Vec<i64> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, [3, 6, 8, 10], "{report}");
    assert!(
        report["errors"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{report}"
    );
    let (_, quoted) = call(
        &nexus,
        "GET",
        &format!("{list}?address=%2B15550100102"),
        key,
        None,
    )
    .await;
    assert_eq!(
        quoted["suppressions"][0]["reason"],
        "said \"no\", twice,\nby letter"
    );
    assert_eq!(quoted["suppressions"][0]["source"], "import");
    // The import renewed the expired one (no expiry now) and replaced the channel's reason.
    let answer = check(&nexus, &key_text, "address=ann%40example.com").await;
    assert_eq!(answer["suppressed"], true);
    // Not a CSV file, or a header without an address column.
    let response = client()
        .post(nexus.url(&format!("{list}/import")))
        .header("x-api-key", &key_text)
        .json(&json!({"address": "+15550100100"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let (status, _) = import(&nexus, &key_text, "phone,reason\n+15550100100,x\n").await;
    assert_eq!(status, 400);

    // Listed a page at a time, oldest first; filtered.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("{list}?limit=2&cursor={cursor}"),
            None => format!("{list}?limit=2"),
        };
        let (status, page) = call(&nexus, "GET", &path, key, None).await;
        assert_eq!(status, 200);
        for item in page["suppressions"].as_array().unwrap() {
            seen.push(item["address"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "+15550100100",
            "+15550100100",
            "ann@example.com",
            "+15550100101",
            "+15550100102"
        ]
    );
    let (_, tenant_wide) = call(
        &nexus,
        "GET",
        &format!("{list}?channelId=tenant"),
        key,
        None,
    )
    .await;
    assert_eq!(tenant_wide["suppressions"].as_array().unwrap().len(), 4);
    let (_, imported) = call(&nexus, "GET", &format!("{list}?source=import"), key, None).await;
    assert_eq!(imported["suppressions"].as_array().unwrap().len(), 4);
    let (status, _) = call(&nexus, "GET", &format!("{list}?limit=0"), key, None).await;
    assert_eq!(status, 400);

    // Another tenant sees none of it.
    let (_, other_key) = tenant(&nexus, "globex").await;
    let one = format!("{list}/{}", phone["id"].as_str().unwrap());
    let (status, _) = call(&nexus, "GET", &one, Some(&other_key), None).await;
    assert_eq!(status, 404);
    let (_, others) = call(&nexus, "GET", list, Some(&other_key), None).await;
    assert_eq!(others["suppressions"], json!([]));

    // Deleted: the address may be messaged again from any sender but the channel.
    let (status, deleted) = call(&nexus, "DELETE", &one, key, None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted["deleted"], phone["id"]);
    let (status, _) = call(&nexus, "GET", &one, key, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&nexus, "DELETE", &one, key, None).await;
    assert_eq!(status, 404);
    let answer = check(&nexus, &key_text, "address=%2B15550100100").await;
    assert_eq!(answer["suppressed"], false);
    let answer = check(
        &nexus,
        &key_text,
        &format!("address=%2B15550100100&channelId={channel}"),
    )
    .await;
    assert_eq!(answer["suppressed"], true);
}

async fn templates_render_one_record_as_a_dry_run(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let (_, key) = tenant(&nexus, "acme").await;
    let key = Some(key.as_str());
    let path = "/nexus/v3/outbound/templates/spring-sale";

    // Saved: the variables it names, and whether a record must have them.
    let body = "Hi {{first_name|there}}, {{store}} has {{discount}}% off until Sunday. \
                Reply STOP to opt out.";
    let (status, saved) = call(
        &nexus,
        "PUT",
        path,
        key,
        Some(json!({"channel": "sms", "body": body})),
    )
    .await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(
        saved["variables"],
        json!([{"name": "first_name", "required": false},
               {"name": "store", "required": true},
               {"name": "discount", "required": true}])
    );
    let (status, replaced) = call(
        &nexus,
        "PUT",
        path,
        key,
        Some(json!({"channel": "sms", "body": body.replace("Sunday", "Monday")})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(replaced["body"].as_str().unwrap().contains("Monday"));

    // One record, as a dry run: filled, with what the SMS costs; a default where a value is
    // missing or empty.
    let render = format!("{path}/render");
    let (status, answer) = call(
        &nexus,
        "POST",
        &render,
        key,
        Some(json!({"variables": {"first_name": "", "store": "Acme Zürich", "discount": 20}})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["body"],
        "Hi there, Acme Zürich has 20% off until Monday. Reply STOP to opt out."
    );
    assert_eq!(answer["sms"]["encoding"], "GSM-7");
    assert_eq!(answer["sms"]["length"], 70);
    assert_eq!(answer["sms"]["segments"], 1);
    // A character outside the GSM alphabet makes it UCS-2, in more segments.
    let (_, answer) = call(
        &nexus,
        "POST",
        &render,
        key,
        Some(json!({"variables": {"first_name": "Zoë", "store": "Łódź Outlet Centrum Manufaktura", "discount": 5}})),
    )
    .await;
    assert_eq!(answer["sms"]["encoding"], "UCS-2");
    assert_eq!(answer["sms"]["length"], 87);
    assert_eq!(answer["sms"]["segments"], 2);
    // A record without a required variable fails, naming it.
    let (status, error) = call(
        &nexus,
        "POST",
        &render,
        key,
        Some(json!({"variables": {"first_name": "Ann", "store": "Acme"}})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error["status"]["message"]
            .as_str()
            .unwrap()
            .contains("`discount`"),
        "{error}"
    );

    // Email has a subject, a template too; SMS has none.
    let (status, email) = call(
        &nexus,
        "PUT",
        "/nexus/v3/outbound/templates/receipt",
        key,
        Some(
            json!({"channel": "email", "subject": "Your order {{order}}",
                    "body": "Thanks, {{name|friend}}."}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{email}");
    let (_, answer) = call(
        &nexus,
        "POST",
        "/nexus/v3/outbound/templates/receipt/render",
        key,
        Some(json!({"variables": {"order": "A-42"}})),
    )
    .await;
    assert_eq!(answer["subject"], "Your order A-42");
    assert_eq!(answer["body"], "Thanks, friend.");
    assert!(answer.get("sms").is_none());

    // Refused when saved, saying where.
    for (body, says) in [
        (
            json!({"channel": "sms", "body": "Hi {{first_name"}),
            "no closing",
        ),
        (
            json!({"channel": "sms", "body": "Hi {{first name}}"}),
            "not a variable name",
        ),
        (
            json!({"channel": "sms", "body": "x", "subject": "y"}),
            "no `subject`",
        ),
        (json!({"channel": "email", "body": "x"}), "`subject`"),
        (json!({"channel": "fax", "body": "x"}), "`channel`"),
    ] {
        let (status, error) = call(&nexus, "PUT", path, key, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        let message = error["status"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }

    // Listed by name; deleted.
    let (_, listed) = call(&nexus, "GET", "/nexus/v3/outbound/templates", key, None).await;
    let names: Vec<&str> = listed["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["receipt", "spring-sale"]);
    let (status, _) = call(&nexus, "DELETE", path, key, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&nexus, "GET", path, key, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&nexus, "POST", &render, key, Some(json!({}))).await;
    assert_eq!(status, 404);
}

/// Uploads a CSV file to list `list`.
async fn upload(nexus: &Nexus, key: &str, list: &str, csv: &str) -> (u16, Value) {
    let path = format!("/nexus/v3/outbound/lists/{list}/contacts");
    let response = client()
        .post(nexus.url(&path))
        .header("x-api-key", key)
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    Api::load("outbound").check(
        "POST",
        "/nexus/v3/outbound/lists/{listId}/contacts",
        status,
        &answer,
    );
    let data = if (200..300).contains(&status) {
        answer["data"].clone()
    } else {
        answer
    };
    (status, data)
}

/// The `(line, reason)` pairs of an upload's answer.
fn errors(answer: &Value) -> Vec<(u64, String)> {
    answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A new list of the tenant's: its id.
async fn new_list(nexus: &Nexus, key: &str, body: Value) -> String {
    let (status, list) = call(
        nexus,
        "POST",
        "/nexus/v3/outbound/lists",
        Some(key),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{list}");
    list["id"].as_str().unwrap().to_owned()
}

async fn a_campaign_tool_uploads_a_contact_list(backends: Backends) {
    let nexus = Nexus::start(&manifest(), backends).await;
    let (_, key_text) = tenant(&nexus, "acme").await;
    let key = key_text.as_str();
    let lists = "/nexus/v3/outbound/lists";

    // A list needs a name; its default calling code is a calling code.
    for (body, says) in [
        (json!({}), "`name`"),
        (
            json!({"name": "x", "defaultCallingCode": "US"}),
            "calling code",
        ),
    ] {
        let (status, error) = call(&nexus, "POST", lists, Some(key), Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            error["status"]["message"].as_str().unwrap().contains(says),
            "{error}"
        );
    }
    let id = new_list(
        &nexus,
        key,
        json!({"name": "spring", "defaultCallingCode": "+1"}),
    )
    .await;

    // One file: a spreadsheet's byte order mark, header names as people write them, national
    // and international numbers, a quoted field over two lines, and bad lines of every kind.
    let csv = "\u{feff}Client ID,Phone,email,timeZone,first_name,plan\r\n\
        c-1,(415) 555-0100,,,Ann,gold\r\n\
        c-2,+44 7911 123456,Bob@Example.com,Europe/London,Bob,\r\n\
        c-3,,,,Cy,\r\n\
        c-4,555 0100,,,Di,\r\n\
        c-5,+14155550101,,Mars/Base,Ed,\r\n\
        c-1,+14155550102,,,Fay,\r\n\
        c-6,4155550100,,,Gus,\r\n\
        c-7,+12125550100,,,\"Hal\nJr\",\r\n\
        c-8,+19075550100,,,Ivy,\r\n\
        c-9,+12125550199,not-an-email,,,\r\n\
        c-10,+1\r\n\
        \r\n";
    let (status, answer) = upload(&nexus, key, &id, csv).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["added"], 4, "{answer}");
    assert_eq!(answer["failed"], 7, "{answer}");
    let lines: Vec<u64> = errors(&answer).iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, [4, 5, 6, 7, 8, 12, 13], "{answer}");
    for (line, says) in [
        (4, "neither a phone number nor an email address"),
        (5, "North American"),
        (6, "IANA"),
        (7, "the same clientId as line 2"),
        (8, "the same phone number as line 2"),
        (12, "not an email address"),
        (13, "2 fields where the header has 6"),
    ] {
        let reason = &errors(&answer)
            .into_iter()
            .find(|(at, _)| *at == line)
            .unwrap()
            .1;
        assert!(reason.contains(says), "line {line}: {reason}");
    }
    assert_eq!(answer["list"]["contacts"], 4);
    assert_eq!(answer["list"]["variables"], json!(["first_name", "plan"]));

    // A second upload adds to the list; a repeat of a contact already there is refused, naming it.
    let (_, answer) = upload(
        &nexus,
        key,
        &id,
        "clientId,phone\nc-1,+15550000001\nc-20,+1 415 555 0100\nc-21,+13125550100\n",
    )
    .await;
    assert_eq!(
        (answer["added"].as_u64(), answer["failed"].as_u64()),
        (Some(1), Some(2)),
        "{answer}"
    );
    assert_eq!(
        errors(&answer),
        [
            (
                2,
                "the same clientId as the contact `c-1`, already in the list".to_owned()
            ),
            (
                3,
                "the same phone number as the contact `c-1`, already in the list".to_owned()
            ),
        ]
    );

    // The contacts, in upload order, a page at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(cursor) => format!("{lists}/{id}/contacts?limit=2&cursor={cursor}"),
            None => format!("{lists}/{id}/contacts?limit=2"),
        };
        let (status, answer) = call(&nexus, "GET", &page, Some(key), None).await;
        assert_eq!(status, 200, "{answer}");
        for contact in answer["contacts"].as_array().unwrap() {
            seen.push(contact["clientId"].as_str().unwrap().to_owned());
        }
        match answer["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["c-1", "c-2", "c-7", "c-8", "c-21"]);

    // Each as it was normalised: E.164, a lower-case address, its zone and where it came from.
    let one = |client: &str| format!("{lists}/{id}/contacts?clientId={client}");
    let (_, answer) = call(&nexus, "GET", &one("c-1"), Some(key), None).await;
    let ann = &answer["contacts"][0];
    assert_eq!(ann["phone"], "+14155550100");
    assert_eq!(ann["timeZone"], "America/Los_Angeles");
    assert_eq!(ann["timeZoneSource"], "number");
    assert_eq!(
        ann["variables"],
        json!({"first_name": "Ann", "plan": "gold"})
    );
    let (_, answer) = call(&nexus, "GET", &one("c-2"), Some(key), None).await;
    let bob = &answer["contacts"][0];
    assert_eq!(bob["email"], "bob@example.com");
    assert_eq!(bob["phone"], "+447911123456");
    assert_eq!(
        (bob["timeZone"].as_str(), bob["timeZoneSource"].as_str()),
        (Some("Europe/London"), Some("column"))
    );
    assert_eq!(bob["variables"], json!({"first_name": "Bob"}));
    let (_, answer) = call(&nexus, "GET", &one("c-7"), Some(key), None).await;
    assert_eq!(answer["contacts"][0]["variables"]["first_name"], "Hal\nJr");
    // Alaska's area code spans two zones: the campaign's default zone will be the contact's.
    let (_, answer) = call(&nexus, "GET", &one("c-8"), Some(key), None).await;
    assert_eq!(answer["contacts"][0]["timeZone"], Value::Null);

    // What an upload must be.
    let response = client()
        .post(nexus.url(&format!("{lists}/{id}/contacts")))
        .header("x-api-key", key)
        .json(&json!({"clientId": "c-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    for (csv, says) in [
        ("phone\n+14155550100\n", "no `clientId` column"),
        ("clientId,first name\nc,x\n", "not a variable name"),
        ("", "no header line"),
    ] {
        let (status, error) = upload(&nexus, key, &id, csv).await;
        assert_eq!(status, 400, "{csv:?}");
        assert!(
            error["status"]["message"].as_str().unwrap().contains(says),
            "{error}"
        );
    }
    let (status, _) = upload(
        &nexus,
        key,
        "00000000-0000-0000-0000-000000000000",
        "clientId,phone\n",
    )
    .await;
    assert_eq!(status, 404);

    // One contact removed; the list as the tool sees it.
    let (status, _) = call(&nexus, "DELETE", &one("c-21"), Some(key), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&nexus, "DELETE", &one("c-21"), Some(key), None).await;
    assert_eq!(status, 404);
    let (_, list) = call(&nexus, "GET", &format!("{lists}/{id}"), Some(key), None).await;
    assert_eq!(list["contacts"], 4);
    assert_eq!(list["defaultCallingCode"], "1");
    let (_, all) = call(&nexus, "GET", lists, Some(key), None).await;
    assert_eq!(all["lists"].as_array().unwrap().len(), 1);

    // Another tenant sees none of it.
    let (_, other) = tenant(&nexus, "globex").await;
    let (status, _) = call(&nexus, "GET", &format!("{lists}/{id}"), Some(&other), None).await;
    assert_eq!(status, 404);
    let (status, _) = upload(&nexus, &other, &id, "clientId,phone\nx,+14155550111\n").await;
    assert_eq!(status, 404);
    let (_, all) = call(&nexus, "GET", lists, Some(&other), None).await;
    assert_eq!(all["lists"], json!([]));

    // Deleted with its contacts.
    let (status, _) = call(&nexus, "DELETE", &format!("{lists}/{id}"), Some(key), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &nexus,
        "GET",
        &format!("{lists}/{id}/contacts"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// 100,000 contacts, about 30 MB of CSV, sent in 64 KiB chunks without a length, to a component
/// allowed 24 MiB of memory: read as they arrive, every good line added, every bad one reported.
async fn a_list_of_100000_contacts_is_read_as_it_arrives(backends: Backends) {
    const ROWS: u64 = 100_000;
    let nexus = Nexus::start(&manifest(), backends).await;
    let (_, key_text) = tenant(&nexus, "acme").await;
    let key = key_text.as_str();
    let id = new_list(
        &nexus,
        key,
        json!({"name": "big", "defaultCallingCode": "44"}),
    )
    .await;

    // Every 10,000th contact has no number; the rest are UK mobiles written nationally.
    let notes = "x".repeat(250);
    let mut csv = String::from("clientId,phone,first_name,notes\n");
    for n in 1..=ROWS {
        let phone = if n % 10_000 == 0 {
            String::new()
        } else {
            format!("07700 {n:06}")
        };
        csv.push_str(&format!("client-{n},{phone},Name {n},{notes}\n"));
    }
    assert!(csv.len() > 25 << 20, "{}", csv.len());
    let body = chunked(csv);
    let path = format!("/nexus/v3/outbound/lists/{id}/contacts");
    let response = client()
        .post(nexus.url(&path))
        .header("x-api-key", key)
        .header("content-type", "text/csv")
        .timeout(std::time::Duration::from_secs(300))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let answer = &answer["data"];
    assert_eq!(answer["added"], ROWS - 10, "{}", answer["errors"]);
    assert_eq!(answer["failed"], 10);
    let lines: Vec<u64> = errors(answer).iter().map(|(line, _)| *line).collect();
    let expected: Vec<u64> = (1..=10).map(|k| k * 10_000 + 1).collect();
    assert_eq!(lines, expected);
    assert_eq!(answer["list"]["contacts"], ROWS - 10);

    let (_, found) = call(
        &nexus,
        "GET",
        &format!("/nexus/v3/outbound/lists/{id}/contacts?clientId=client-99999"),
        Some(key),
        None,
    )
    .await;
    let contact = &found["contacts"][0];
    assert_eq!(contact["phone"], "+447700099999");
    assert_eq!(contact["timeZone"], "Europe/London");
    assert_eq!(contact["variables"]["first_name"], "Name 99999");
}

/// CSV text as a body sent in 64 KiB chunks without a length, as a client streams a file.
fn chunked(csv: String) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = csv
        .into_bytes()
        .chunks(64 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// 100,000 suppressions, about 30 MB of CSV, streamed to a component allowed 24 MiB of memory:
/// read as they arrive, every good line imported, every bad one reported by line, and a line
/// that repeats one of 100,000 lines before it (in a batch long written) refused, naming it.
async fn a_suppression_import_of_100000_lines_is_read_as_it_arrives(backends: Backends) {
    const ROWS: u64 = 100_000;
    let nexus = Nexus::start(&manifest(), backends).await;
    let (_, key_text) = tenant(&nexus, "acme").await;
    let key = key_text.as_str();
    let reason = "r".repeat(280);
    let mut csv = String::from("address,reason\n");
    for n in 1..=ROWS {
        if n % 25_000 == 0 {
            csv.push_str(&format!("not a number {n},{reason}\n"));
        } else {
            csv.push_str(&format!("+1555{n:07},{n} {reason}\n"));
        }
    }
    csv.push_str("+15550000001,the first line again\n\n");
    assert!(csv.len() > 25 << 20, "{}", csv.len());
    let (status, answer) = import(&nexus, key, chunked(csv)).await;
    assert_eq!(status, 200, "{answer}");
    let answer = &answer;
    assert_eq!(answer["added"], ROWS - 4, "{}", answer["errors"]);
    assert_eq!(
        (&answer["updated"], &answer["failed"]),
        (&json!(0), &json!(5))
    );
    let reported = errors(answer);
    let lines: Vec<u64> = reported.iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, [25_001, 50_001, 75_001, 100_001, ROWS + 2]);
    assert_eq!(
        reported[4].1, "the same address and channel as line 2",
        "{reported:?}"
    );
    // The first line's suppression is the first line's, not the repeat's.
    let first = check(&nexus, key, "address=%2B15550000001").await;
    assert_eq!(
        first["suppressions"][0]["reason"],
        format!("1 {reason}"),
        "{first}"
    );
    assert_eq!(
        check(&nexus, key, "address=%2B15550099999").await["suppressed"],
        true
    );
}
