//! The harness on real components: nexus's example component (one route per capability, so
//! every fake is exercised through a component that runs in production) and the misbehaving
//! tenant bot of the end-to-end tests (limits, outbound HTTP, and the upload rules).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use nexus_testing::postgres_types::{DbValue, Error as PgError, ParameterValue};
use nexus_testing::redis_types::{RedisParameter, RedisResult};
use nexus_testing::tenant::{Action, Turn};
use nexus_testing::{
    CallError, Fakes, HttpCall, HttpComponent, Limits, PgAnswer, PgCall, RedisCall, Reply,
    TenantBot, TenantTransform, build_component, rows,
};
use serde_json::json;

fn example() -> HttpComponent {
    static EXAMPLE: OnceLock<HttpComponent> = OnceLock::new();
    EXAMPLE
        .get_or_init(|| {
            HttpComponent::build(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../components/example"
            ))
            .unwrap()
            .mounted_at("/example/...")
        })
        .clone()
}

fn misbehave() -> TenantBot {
    static BOT: OnceLock<TenantBot> = OnceLock::new();
    BOT.get_or_init(|| {
        TenantBot::build(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/components/tenant-misbehave"
        ))
        .unwrap()
    })
    .clone()
}

/// Fakes with the variables the example component declares in spin.toml.
fn example_fakes() -> Fakes {
    let fakes = Fakes::default();
    fakes
        .variables
        .set("greeting", "hello from the harness")
        .set("redis_address", "redis://fake:6379")
        .set("postgres_address", "postgres://fake/db");
    fakes
}

#[test]
fn variables_are_answered_and_their_lookups_recorded() {
    let fakes = example_fakes();
    let response = example().get(&fakes, "/example/variables").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["greeting"], "hello from the harness");
    assert!(
        response.json()["not_declared"]
            .as_str()
            .unwrap()
            .contains("Undefined"),
        "{}",
        response.text()
    );
    assert_eq!(fakes.variables.lookups(), ["greeting", "not_declared"]);
}

#[test]
fn redis_keeps_values_between_calls_and_records_every_command() {
    let fakes = example_fakes();
    let mut put = http::Request::builder()
        .method("PUT")
        .uri("/example/redis/colour")
        .body(bytes::Bytes::from_static(b"teal"))
        .unwrap();
    put.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    let response = example().send(&fakes, put).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        fakes.redis.value("example:colour").as_deref(),
        Some(&b"teal"[..])
    );

    let response = example().get(&fakes, "/example/redis/colour").unwrap();
    assert_eq!(response.json()["value"], "teal");
    assert_eq!(response.json()["reads"], 1);
    assert_eq!(
        fakes.redis.calls(),
        [
            RedisCall::Open("redis://fake:6379".into()),
            RedisCall::Set {
                key: "example:colour".into(),
                value: b"teal".to_vec()
            },
            RedisCall::Execute {
                command: "EXPIRE".into(),
                arguments: vec![
                    RedisParameter::Binary(b"example:colour".to_vec()),
                    RedisParameter::Int64(3600)
                ]
            },
            RedisCall::Open("redis://fake:6379".into()),
            RedisCall::Incr("example:colour:reads".into()),
            RedisCall::Get("example:colour".into()),
        ]
    );
}

#[test]
fn scripted_redis_answers_and_failures_reach_the_component() {
    let fakes = example_fakes();
    fakes
        .redis
        .on_execute_once("EXPIRE", Ok(vec![RedisResult::Int64(0)]));
    let put = http::Request::builder()
        .method("PUT")
        .uri("/example/redis/k")
        .body(bytes::Bytes::from_static(b"v"))
        .unwrap();
    assert_eq!(example().send(&fakes, put.clone()).unwrap().status, 200);

    fakes
        .redis
        .fail_with(Some(nexus_testing::redis_types::Error::Other(
            "connection reset".into(),
        )));
    let response = example().send(&fakes, put).unwrap();
    assert_eq!(response.status, 502, "{}", response.text());
    // The caller learns the kind of failure; the detail is in the component's log only.
    assert_eq!(
        response.json()["error"]["message"],
        "the redis-open call failed: Other"
    );
    assert!(
        fakes
            .log
            .messages()
            .iter()
            .any(|message| message.contains("connection reset")),
        "{:?}",
        fakes.log.messages()
    );
}

#[test]
fn postgres_answers_from_the_script_and_records_statements_with_parameters() {
    let fakes = example_fakes();
    fakes.postgres.on_once(
        "INSERT INTO example_notes",
        PgAnswer::Rows(rows(&["id"], vec![vec![DbValue::Int64(41)]])),
    );
    fakes.postgres.on(
        "FROM example_notes ORDER BY id",
        PgAnswer::Rows(rows(
            &["id", "body", "created_at"],
            vec![vec![
                DbValue::Int64(41),
                DbValue::Str("call back at 5".into()),
                DbValue::Str("2026-11-21 10:00:00+00".into()),
            ]],
        )),
    );
    let mut post = http::Request::builder()
        .method("POST")
        .uri("/example/notes")
        .body(bytes::Bytes::from_static(b"call back at 5"))
        .unwrap();
    post.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    let response = example().send(&fakes, post).unwrap();
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json(), json!({"id": 41}));

    let inserts = fakes.postgres.statements_like("INSERT INTO example_notes");
    assert_eq!(inserts.len(), 1);
    assert_eq!(
        inserts[0].params(),
        [ParameterValue::Str("call back at 5".into())]
    );
    assert_eq!(
        fakes.postgres.calls()[0],
        PgCall::Open("postgres://fake/db".into())
    );

    let response = example().get(&fakes, "/example/notes").unwrap();
    assert_eq!(response.json()["notes"][0]["body"], "call back at 5");

    // A failure the script gives is the component's to handle.
    fakes.postgres.on(
        "FROM example_notes",
        PgAnswer::Fail(PgError::ConnectionFailed("the database is down".into())),
    );
    let response = example().get(&fakes, "/example/notes").unwrap();
    assert_eq!(response.status, 502);
    assert_eq!(
        response.json()["error"]["message"],
        "the postgres call failed: ConnectionFailed"
    );
    assert!(
        fakes
            .log
            .messages()
            .iter()
            .any(|message| message.contains("the database is down")),
        "{:?}",
        fakes.log.messages()
    );
}

#[test]
fn outbound_http_is_answered_from_the_script_and_recorded() {
    let fakes = example_fakes();
    fakes.http.respond(
        "GET",
        "https://api.example.com/",
        Reply::json(200, &json!({"ok": true})),
    );
    let response = example()
        .get(
            &fakes,
            "/example/fetch?url=https%3A%2F%2Fapi.example.com%2Fstatus",
        )
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["body"], r#"{"ok":true}"#);

    // A request nothing was scripted for fails in the component, and is still recorded.
    let response = example()
        .get(
            &fakes,
            "/example/fetch?url=https%3A%2F%2Felsewhere.example.org%2F",
        )
        .unwrap();
    assert_eq!(response.status, 502, "{}", response.text());
    let calls = fakes.http.calls();
    assert_eq!(
        calls
            .iter()
            .map(|call| (call.method.as_str(), call.url.as_str(), call.answered))
            .collect::<Vec<_>>(),
        [
            ("GET", "https://api.example.com/status", true),
            ("GET", "https://elsewhere.example.org/", false),
        ]
    );
}

#[test]
fn a_tenant_bot_calls_only_what_it_is_scripted_to_reach() {
    let fakes = Fakes::default();
    fakes.http.respond_once(
        "GET",
        "https://crm.example.com/",
        Reply::text(200, "gold customer"),
    );
    let answer = misbehave()
        .handle(
            &fakes,
            Turn::message("granted https://crm.example.com/tier"),
        )
        .unwrap();
    assert_eq!(
        answer,
        Ok(vec![Action::Reply("it said: gold customer".into())])
    );
    let calls: Vec<HttpCall> = fakes.http.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].url, "https://crm.example.com/tier");

    // The one-shot reply is spent: the same request now fails, and the bot declines the turn.
    let answer = misbehave()
        .handle(
            &fakes,
            Turn::message("granted https://crm.example.com/tier"),
        )
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");
}

#[test]
fn limits_stop_a_loop_and_a_memory_bomb() {
    let fakes = Fakes::default();
    assert_eq!(
        misbehave().handle(&fakes, Turn::message("loop")),
        Err(CallError::CpuTime)
    );
    assert_eq!(
        misbehave().handle(&fakes, Turn::message("memory")),
        Err(CallError::Memory)
    );
    // A wall-clock timeout shorter than the CPU budget ends the loop first.
    let patient = misbehave().with_limits(Limits {
        cpu_time: Duration::from_secs(60),
        timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    assert_eq!(
        patient.handle(&fakes, Turn::message("loop")),
        Err(CallError::Timeout)
    );
    // And the component still answers the next call.
    assert_eq!(
        misbehave().handle(&fakes, Turn::message("hi")).unwrap(),
        Ok(vec![Action::Reply("echo v2: hi".into())])
    );
}

#[test]
fn components_nexus_would_refuse_at_upload_are_refused() {
    let example = build_component(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../components/example"
    ))
    .unwrap();
    let err = TenantBot::load(&example).err().unwrap();
    assert!(format!("{err:#}").contains("fermyon:spin/redis"), "{err:#}");
    // Nor is one over the upload size cap.
    let oversized = std::env::temp_dir().join(format!("nexus-testing-{}.wasm", std::process::id()));
    let mut bytes = std::fs::read(&example).unwrap();
    bytes.resize((8 << 20) + 1, 0); // one byte over nexus's 8 MiB cap
    std::fs::write(&oversized, bytes).unwrap();
    let err = TenantBot::load(&oversized).err().unwrap();
    std::fs::remove_file(&oversized).unwrap();
    assert!(
        format!("{err:#}").contains("nexus accepts at most"),
        "{err:#}"
    );
    // A bot is not a transform.
    let bot = build_component(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/components/tenant-misbehave"
    ))
    .unwrap();
    let err = TenantTransform::load(&bot).err().unwrap();
    assert!(format!("{err:#}").contains("message-transform"), "{err:#}");
}

#[tokio::test]
async fn blocking_calls_inside_a_runtime_say_what_to_use_instead() {
    let fakes = Fakes::default();
    let bot = tokio::task::spawn_blocking(misbehave).await.unwrap();
    match bot.handle(&fakes, Turn::message("hi")) {
        Err(CallError::Setup(message)) => assert!(message.contains("_async"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        bot.handle_async(&fakes, Turn::message("hi")).await.unwrap(),
        Ok(vec![Action::Reply("echo v2: hi".into())])
    );
}
