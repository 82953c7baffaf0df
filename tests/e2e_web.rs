//! End to end: the web side. The assets component serves the widget, the console and the demo
//! page from what `scripts/build-web.sh` built (with entity tags, gzip and the pages' security
//! policy); the Chat API answers browsers of any origin (CORS); `nexus up --demo` makes a demo
//! contact center once and keeps its credentials across restarts. The pages themselves are
//! tried in a real browser by `web/tests` (scripts/browser-test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Backends, Nexus, client};

fn manifest() -> String {
    use support::manifest::{application, assets, component, provisioning};
    [
        application("web"),
        provisioning(),
        component("chat", "/nexus/v3/chat/...", &[]),
        component("workspace", "/nexus/v3/workspace/...", &[]),
        assets(),
    ]
    .concat()
}

/// A client that shows redirects instead of following them.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn built(path: &str) -> Vec<u8> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../web/dist")
        .join(path);
    std::fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()))
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_widget_console_and_demo_page_are_served_with_caching_and_gzip() {
    let nexus = Nexus::start(&manifest(), Backends::Real).await;
    let http = plain_client();
    let widget = nexus.url("/widget/nexus-chat.js");

    let plain = http.get(&widget).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(
        header(&plain, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&plain, "access-control-allow-origin"), "*");
    assert_eq!(header(&plain, "cache-control"), "public, max-age=300");
    assert_eq!(header(&plain, "content-encoding"), "");
    let etag = header(&plain, "etag");
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    assert_eq!(plain.bytes().await.unwrap(), built("widget/nexus-chat.js"));

    // Gzipped to a client that takes it, and small enough to embed anywhere.
    let gzipped = http
        .get(&widget)
        .header("accept-encoding", "br, gzip;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&gzipped, "content-encoding"), "gzip");
    assert_eq!(header(&gzipped, "vary"), "accept-encoding");
    let body = gzipped.bytes().await.unwrap();
    assert_eq!(body, built("widget/nexus-chat.js.gz"));
    assert!(
        body.len() < 50 * 1024,
        "the widget is {} bytes gzipped",
        body.len()
    );
    let refused = http
        .get(&widget)
        .header("accept-encoding", "gzip;q=0")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&refused, "content-encoding"), "");

    // Revalidation by entity tag; HEAD; only GET and HEAD.
    let cached = http
        .get(&widget)
        .header("if-none-match", format!("W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().await.unwrap().is_empty());
    let head = http.head(&widget).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "content-length"),
        built("widget/nexus-chat.js").len().to_string()
    );
    let post = http.post(&widget).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(header(&post, "allow"), "GET, HEAD");

    // The pages: their directories, their policy, and where the bare paths lead.
    for (path, location) in [
        ("/", "/demo/"),
        ("/console", "/console/"),
        ("/demo", "/demo/"),
    ] {
        let redirect = http.get(nexus.url(path)).send().await.unwrap();
        assert_eq!(redirect.status(), 308, "{path}");
        assert_eq!(header(&redirect, "location"), location, "{path}");
    }
    for (path, file) in [
        ("/console/", "console/index.html"),
        ("/demo/", "demo/index.html"),
    ] {
        let page = http.get(nexus.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&page, "cache-control"), "no-cache");
        let policy = header(&page, "content-security-policy");
        assert!(
            policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{policy}"
        );
        assert_eq!(header(&page, "access-control-allow-origin"), "");
        assert_eq!(page.bytes().await.unwrap(), built(file));
    }
    let missing = http.get(nexus.url("/widget/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chat_api_answers_pages_of_any_origin() {
    let nexus = Nexus::start(&manifest(), Backends::Real).await;
    let http = client();
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            nexus.url("/nexus/v3/chat/sessions/x/messages"),
        )
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "x-api-key, x-nexus-client-key, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");
    assert_eq!(
        header(&preflight, "access-control-allow-methods"),
        "GET, POST, DELETE"
    );
    let allowed = header(&preflight, "access-control-allow-headers");
    for wanted in ["x-api-key", "x-nexus-client-key", "content-type"] {
        assert!(allowed.contains(wanted), "{allowed}");
    }
    // Answers, errors included, may be read by the page.
    let refused = http
        .post(nexus.url("/nexus/v3/chat/sessions"))
        .header("origin", "https://shop.example")
        .header("x-api-key", "not-a-key")
        .json(&json!({"nickname": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(header(&refused, "access-control-allow-origin"), "*");
    assert!(header(&refused, "access-control-expose-headers").contains("retry-after"));
}

/// The demo's credentials as `nexus up --demo` keeps them.
fn demo_file(nexus: &Nexus) -> PathBuf {
    nexus.dir().join("data/demo.json")
}

/// Waits until nexus prints the demo page's URL (after it has kept the demo's credentials) and
/// reads what it kept.
async fn demo_ready(nexus: &mut Nexus) -> Value {
    let line = nexus.printed("demo: ").await;
    let access: Value = serde_json::from_slice(&std::fs::read(demo_file(nexus)).unwrap()).unwrap();
    assert!(
        line.contains(access["api_key"].as_str().unwrap()),
        "the printed URL carries the kept key: {line}"
    );
    access
}

/// Whether the demo's key starts a chat on its channel and its agent's token is taken.
async fn demo_works(nexus: &Nexus, access: &Value) -> (u16, u16) {
    let http = client();
    let started = http
        .post(nexus.url("/nexus/v3/chat/sessions"))
        .header("x-api-key", access["api_key"].as_str().unwrap())
        .json(&json!({"nickname": "Ada", "endpoint": "web"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let agent = http
        .get(nexus.url("/nexus/v3/workspace/me"))
        .bearer_auth(access["agent_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    (started, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_is_made_once_and_kept_across_restarts() {
    let mut nexus = Nexus::start_with(&manifest(), Backends::Real, &[("NEXUS_DEMO", "true")]).await;
    let first = demo_ready(&mut nexus).await;
    assert_eq!(demo_works(&nexus, &first).await, (201, 200), "{first}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(demo_file(&nexus)).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let tenants = support::admin_ok(&nexus, "GET", "/tenants/demo/agents", None).await;
    let people: Vec<(&str, &str)> = tenants["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|agent| {
            (
                agent["username"].as_str().unwrap(),
                agent["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(people.len(), 2, "{tenants}");
    assert!(people.contains(&("ann", "agent")) && people.contains(&("sam", "supervisor")));

    // A later start finds everything and keeps the credentials.
    nexus.restart().await;
    let again = demo_ready(&mut nexus).await;
    assert_eq!(again, first);
    assert_eq!(demo_works(&nexus, &again).await, (201, 200));

    // Credentials lost: made anew, and the old key and agent token no longer open anything.
    std::fs::remove_file(demo_file(&nexus)).unwrap();
    nexus.restart().await;
    let renewed = demo_ready(&mut nexus).await;
    assert_ne!(renewed["agent_token"], first["agent_token"]);
    assert_ne!(renewed["api_key"], first["api_key"]);
    assert_eq!(demo_works(&nexus, &renewed).await, (201, 200));
    assert_eq!(demo_works(&nexus, &first).await, (401, 401));
}
