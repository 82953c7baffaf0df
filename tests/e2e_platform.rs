//! The platform end to end: a real `nexus up` on port 0, driven over HTTP, once on the real
//! Redis and PostgreSQL (a fresh database each) and once on the embedded defaults.
//!
//! Each scenario is written once, as an `async fn(Backends)`, and run for both backends by
//! `both_backends!`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Backends, Nexus, Receiver, client, unique};

/// The manifest the tests serve: the example component, the misbehaving fixture, and the hello
/// component, with tight limits so that the limit tests finish quickly.
fn manifest(receiver: &Receiver) -> String {
    format!(
        r#"
spin_manifest_version = 2

[application]
name = "e2e"

[application.tool.nexus]
max_memory_mb = 64
cpu_timeout_ms = 2000
request_timeout_ms = 10000
max_request_body_bytes = 65536

[variables]
greeting = {{ default = "hello from the test" }}
redis_address = {{ default = "redis://127.0.0.1:6379" }}
redis_host = {{ default = "127.0.0.1:6379" }}
postgres_address = {{ default = "postgres://127.0.0.1:5432/unused" }}
postgres_host = {{ default = "127.0.0.1:5432" }}
receiver = {{ default = "{receiver}" }}

[[trigger.http]]
route = "/example/..."
component = "example"

[[trigger.http]]
route = "/limits/..."
component = "limits"

[[trigger.http]]
route = "/hello"
component = "hello"

[component.example]
source = "{{example}}"
allowed_outbound_hosts = ["redis://{{{{ redis_host }}}}", "postgres://{{{{ postgres_host }}}}", "http://{{{{ receiver }}}}"]
[component.example.variables]
greeting = "{{{{ greeting }}}}"
redis_address = "{{{{ redis_address }}}}"
postgres_address = "{{{{ postgres_address }}}}"

[component.limits]
source = "{{limits}}"
[component.limits.tool.nexus]
max_memory_mb = 32
cpu_timeout_ms = 2000

[component.hello]
source = "{{hello}}"
"#,
        receiver = receiver.addr
    )
}

both_backends!(
    every_capability_answers_through_http,
    outbound_calls_are_limited_to_allowed_hosts,
    runaway_guests_fail_alone,
    guest_logs_carry_the_request_id,
    oversized_bodies_are_refused,
    host_endpoints_answer,
    sigterm_lets_in_flight_requests_finish,
);

async fn get_json(http: &reqwest::Client, url: String) -> (u16, Value) {
    json(http.get(url).send().await.unwrap()).await
}

/// Posts a note through the example component (PostgreSQL).
async fn post_note(http: &reqwest::Client, nexus: &Nexus, text: &str) -> (u16, Value) {
    let response = http
        .post(nexus.url("/example/notes"))
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    json(response).await
}

/// Asks the example component to fetch `target` through outbound HTTP.
async fn fetch_through(http: &reqwest::Client, nexus: &Nexus, target: &str) -> (u16, Value) {
    let response = http
        .get(nexus.url("/example/fetch"))
        .query(&[("url", target)])
        .send()
        .await
        .unwrap();
    json(response).await
}

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

async fn every_capability_answers_through_http(backends: Backends) {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&receiver), backends).await;
    let http = client();

    // Variables: the manifest's value, and a clear error for an undeclared one.
    let (status, body) = get_json(&http, nexus.url("/example/variables")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["greeting"], "hello from the test");
    assert!(
        body["not_declared"].as_str().unwrap().contains("Undefined"),
        "{body}"
    );

    // Redis: a value stored through the component is read back through it.
    let key = unique("k");
    let put = http
        .put(nexus.url(&format!("/example/redis/{key}")))
        .body("stored value")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    let (status, body) = json(
        http.get(nexus.url(&format!("/example/redis/{key}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "stored value");
    assert_eq!(body["reads"], 1);
    let (status, _) = get_json(&http, nexus.url("/example/redis/never-stored-key")).await;
    assert_eq!(status, 404);

    if backends == Backends::Real {
        // ...and it really is in the Redis server, with the expiry the component set.
        let redis = redis::Client::open(support::redis_url()).unwrap();
        let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
        let value: String = redis::cmd("GET")
            .arg(format!("example:{key}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, "stored value");
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("example:{key}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 3600, "ttl {ttl}");
        let _: i64 = redis::cmd("DEL")
            .arg(format!("example:{key}"))
            .arg(format!("example:{key}:reads"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    // PostgreSQL: notes written through the component (into the migrated schema) are listed.
    for text in ["first note", "second note"] {
        let (status, body) = post_note(&http, &nexus, text).await;
        assert_eq!(status, 201, "{body}");
        assert!(body["id"].as_i64().is_some(), "{body}");
    }
    let (status, body) = get_json(&http, nexus.url("/example/notes")).await;
    assert_eq!(status, 200, "{body}");
    let bodies: Vec<&str> = body["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["first note", "second note"]);
    if let Some(database) = &nexus.database {
        let rows = database
            .client()
            .await
            .query("SELECT body FROM example_notes ORDER BY id", &[])
            .await
            .unwrap();
        let stored: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(stored, vec!["first note", "second note"]);
        let migrations = database
            .client()
            .await
            .query_one("SELECT count(*) FROM nexus_schema_migrations", &[])
            .await
            .unwrap();
        assert!(migrations.get::<_, i64>(0) >= 1);
    }

    // Outbound HTTP: an allowed host is reached.
    let target = format!("http://{}/from-component", receiver.addr);
    let (status, body) = fetch_through(&http, &nexus, &target).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200);
    assert_eq!(body["body"], "received");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/from-component");
}

async fn outbound_calls_are_limited_to_allowed_hosts(backends: Backends) {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&receiver), backends).await;
    let http = client();

    // The receiver under another name (localhost, not 127.0.0.1) is not in the allowed list.
    let refused = format!("http://localhost:{}/refused", receiver.addr.port());
    let (status, body) = fetch_through(&http, &nexus, &refused).await;
    assert_eq!(status, 502, "{body}");
    // The kind of failure, and nothing of the runtime's own text.
    assert_eq!(
        body["error"]["message"], "the outbound-http call failed: HttpRequestDenied",
        "{body}"
    );
    assert!(
        receiver.received().is_empty(),
        "a refused request must not leave the host"
    );

    // The same receiver by its allowed name is reached.
    let allowed = format!("http://{}/allowed", receiver.addr);
    let (status, body) = fetch_through(&http, &nexus, &allowed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(receiver.received().len(), 1);

    // The host says in its log what it refused.
    let events = nexus.log_events();
    assert!(
        events.iter().any(|e| e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("outbound HTTP refused"))),
        "the refusal is logged"
    );
}

async fn runaway_guests_fail_alone(backends: Backends) {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&receiver), backends).await;
    let http = client();

    // An endless loop is stopped at its CPU deadline (2 s), while other requests are served.
    let spinning = {
        let http = http.clone();
        let url = nexus.url("/limits/spin");
        tokio::spawn(async move { get_json(&http, url).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let response = http.get(nexus.url("/limits/ok")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            !spinning.is_finished(),
            "the other requests are served while the loop still runs"
        );
    }
    let hello = http.get(nexus.url("/hello")).send().await.unwrap();
    assert_eq!(hello.text().await.unwrap(), "Hello, nexus!\n");
    let (status, body) = spinning.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "cpu-deadline-exceeded");

    // Allocating without end hits the 32 MiB cap and fails cleanly.
    let (status, body) = get_json(&http, nexus.url("/limits/alloc")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "memory-limit-exceeded");
    assert!(
        !body.to_string().contains("wasm"),
        "no internal detail reaches the client: {body}"
    );

    // The host goes on serving, and counted both traps.
    let response = http.get(nexus.url("/limits/ok")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let metrics = nexus.metrics().await;
    assert!(
        metrics.contains(r#"nexus_guest_traps_total{component="limits",reason="cpu_deadline"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"nexus_guest_traps_total{component="limits",reason="memory"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"nexus_http_requests_total{component="limits",status="504"} 1"#),
        "{metrics}"
    );
}

async fn guest_logs_carry_the_request_id(backends: Backends) {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&receiver), backends).await;
    let request_id = unique("req");
    let response = client()
        .get(nexus.url("/limits/log"))
        .header("x-request-id", &request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], request_id.as_str());
    // The fixture asks whether debug is enabled; the tests run the host at `info`.
    assert_eq!(
        response.text().await.unwrap(),
        "logged; debug enabled: false\n"
    );

    let mut event = None;
    for _ in 0..50 {
        event = nexus
            .log_events()
            .into_iter()
            .find(|e| e["fields"]["message"] == "fixture says hello");
        if event.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = event.expect("the guest's event is in the host log");
    assert_eq!(event["target"], "nexus::guest");
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["fields"]["component"], "limits");
    assert_eq!(event["fields"]["request_id"], request_id.as_str());
    let fields: Value = serde_json::from_str(event["fields"]["fields"].as_str().unwrap()).unwrap();
    assert_eq!(fields["answer"], "42");
}

async fn oversized_bodies_are_refused(backends: Backends) {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&receiver), backends).await;
    let http = client();
    let (status, body) = post_note(&http, &nexus, &"x".repeat(100_000)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "body-too-large");

    // Without a Content-Length the cap is enforced while the guest reads: it never gets more.
    let chunks = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 8192])));
    let sent = http
        .post(nexus.url("/example/notes"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    // The host may answer before the client has sent everything, and then close the
    // connection under it: either way the request fails.
    if let Ok(response) = sent {
        assert!(
            response.status().is_client_error() || response.status().is_server_error(),
            "{}",
            response.status()
        );
    }
    let (_, notes) = get_json(&http, nexus.url("/example/notes")).await;
    assert_eq!(
        notes["notes"].as_array().unwrap().len(),
        0,
        "nothing was stored: {notes}"
    );
}

async fn host_endpoints_answer(backends: Backends) {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&receiver), backends).await;
    let http = client();
    let health = http.get(nexus.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, ready) = get_json(&http, nexus.url("/readyz")).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["redis"], "ok");
    assert_eq!(ready["checks"]["postgres"], "ok");
    let (status, body) = get_json(&http, nexus.url("/no/such/route")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "no-route");
    let hello = http.get(nexus.url("/hello")).send().await.unwrap();
    assert!(hello.headers().contains_key("x-request-id"));
    let metrics = nexus.metrics().await;
    for name in [
        "nexus_http_requests_total",
        "nexus_http_request_duration_seconds_bucket",
        "nexus_instantiation_duration_seconds_bucket",
        "nexus_http_requests_in_flight",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    // `nexus probe`, the container's health check, asks the same endpoints.
    let probe = |path: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
            .args(["probe", path])
            .env("NEXUS_LISTEN", nexus.base.trim_start_matches("http://"))
            .output()
            .unwrap()
    };
    let healthy = probe("/healthz");
    assert!(healthy.status.success(), "{healthy:?}");
    assert_eq!(String::from_utf8_lossy(&healthy.stdout), "ok\n");
    assert!(probe("/readyz").status.success());
    let missing = probe("/no/such/route");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("answered 404"),
        "{missing:?}"
    );
}

/// `nexus up --migrate=wait` (hosts whose migrations run as a Job of their own) applies nothing
/// and serves only once `nexus migrate` has brought the schema up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_waits_for_the_migrations_of_another_process() {
    use tokio::io::AsyncBufReadExt;
    let database = support::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    let provisioning = support::manifest::provisioning().replace(
        "{provisioning}",
        &support::wasm("nexus-provisioning").display().to_string(),
    );
    std::fs::write(
        &manifest,
        support::manifest::application("waits") + &provisioning,
    )
    .unwrap();
    let log = dir.path().join("nexus.log");
    let mut host = tokio::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args([
            "up",
            "--migrate",
            "wait",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--manifest")
        .arg(&manifest)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("DATABASE_URL", &database.url)
        .env("REDIS_URL", support::redis_url())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(host.stdout.take().unwrap()).lines();
    // It says what it waits for, and does not serve.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("waiting for the migrations")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = database.client().await;
    let tables: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'nexus_schema_migrations'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "the waiting host applied nothing");

    let migrated = tokio::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
        .arg("migrate")
        .env("DATABASE_URL", &database.url)
        .output()
        .await
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let first = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
        .await
        .expect("the host serves once the schema is current")
        .unwrap()
        .unwrap();
    assert!(first.starts_with("nexus is serving "), "{first}");
}

/// An instance slot comes back when the instance ends, not when its response headers go out:
/// with one slot, a request that arrives while a component is still sending its answer waits
/// for the slot and is told 503 `overloaded` with Retry-After. (Were the slot given back with
/// the headers, the pooling allocator would be asked for a second instance it does not have,
/// and the request would fail as a trap, 500.) Once the first answer is done, the slot is free.
/// (The backends play no part: the embedded ones only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_slot_is_held_until_the_instance_ends() {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start_with(
        &manifest(&receiver),
        Backends::Embedded,
        &[("NEXUS_MAX_CONCURRENT_REQUESTS", "1")],
    )
    .await;
    let http = client();
    let dripping = http
        .get(nexus.url("/limits/drip?ms=3000"))
        .send()
        .await
        .unwrap();
    assert_eq!(dripping.status(), 200, "the headers come first");
    let meanwhile = http.get(nexus.url("/limits/ok")).send().await.unwrap();
    assert_eq!(meanwhile.status(), 503);
    assert_eq!(meanwhile.headers()["retry-after"], "1");
    let body: serde_json::Value = meanwhile.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(
        dripping.text().await.unwrap(),
        "first\nlast, after 3000 ms\n"
    );
    // The instance ends just after its last byte; then the slot is free again.
    let mut status = 0;
    for _ in 0..50 {
        status = http
            .get(nexus.url("/limits/ok"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    let metrics = nexus.metrics().await;
    assert!(
        !metrics.contains(r#"nexus_guest_traps_total{component="limits""#),
        "no request failed as a trap:\n{metrics}"
    );
}

async fn sigterm_lets_in_flight_requests_finish(backends: Backends) {
    let receiver = Receiver::start().await;
    let mut nexus = Nexus::start(&manifest(&receiver), backends).await;
    let in_flight = {
        let url = nexus.url("/limits/sleep?ms=700");
        tokio::spawn(async move { client().get(url).send().await })
    };
    // SIGTERM only once the request is being served, however slow the machine.
    let mut serving = false;
    for _ in 0..200 {
        let metrics = nexus.metrics().await;
        if metrics.contains("nexus_http_requests_in_flight 1") {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(serving, "the request reached the component");
    let status = nexus.terminate().await;
    assert!(
        status.success(),
        "nexus exits cleanly after SIGTERM: {status}"
    );
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slept 700 ms\n");
    // And nothing is served any more.
    assert!(client().get(nexus.url("/hello")).send().await.is_err());
}

/// The repository's own spin.toml serves as it is (with its sources where the tests built them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_repository_manifest_serves_on_embedded_defaults() {
    let repo_manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spin.toml")).unwrap();
    let release_dir = support::target_dir().join("wasm32-wasip2/release/");
    let manifest = repo_manifest.replace(
        "target/wasm32-wasip2/release/",
        &release_dir.display().to_string(),
    );
    assert_ne!(
        manifest, repo_manifest,
        "the manifest names its components' build outputs"
    );
    let nexus = Nexus::start(&manifest, Backends::Embedded).await;
    let http = client();
    let hello = http.get(nexus.url("/hello/")).send().await.unwrap();
    assert_eq!(hello.text().await.unwrap(), "Hello, nexus!\n");
    let (status, body) = get_json(&http, nexus.url("/example/variables")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["greeting"], "Hello from nexus");
    let (status, body) = post_note(&http, &nexus, "from the repo manifest").await;
    assert_eq!(status, 201, "{body}");
}

/// Compiled components are cached on disk: a second start compiles nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compiled_components_are_cached_on_disk() {
    let receiver = Receiver::start().await;
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let entries = || {
        walk(cache.path())
            .into_iter()
            .filter(|path| path.extension().is_none_or(|ext| ext != "stats"))
            .count()
    };
    let env = [("NEXUS_CACHE_DIR", cache_dir.as_str())];
    let first = Nexus::start_with(&manifest(&receiver), Backends::Embedded, &env).await;
    drop(first);
    let compiled = entries();
    assert!(
        compiled >= 3,
        "one entry per component at least, found {compiled}"
    );
    let second = Nexus::start_with(&manifest(&receiver), Backends::Embedded, &env).await;
    let hello = client().get(second.url("/hello")).send().await.unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(entries(), compiled, "the second start reused the cache");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Run as a person runs it: from the manifest's directory, `--manifest spin.toml`, default data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_from_the_manifest_directory_with_default_paths() {
    let receiver = Receiver::start().await;
    let nexus = Nexus::start_in_manifest_dir(&manifest(&receiver), Backends::Embedded).await;
    let http = client();
    let (status, body) = post_note(&http, &nexus, "relative").await;
    assert_eq!(status, 201, "{body}");
    assert!(
        nexus.dir().join(".nexus/pglite").is_dir(),
        "the embedded data lives in .nexus beside the manifest"
    );
    assert!(
        nexus.dir().join(".nexus/compile-cache").is_dir(),
        "and so does the compile cache"
    );
}
