//! OpenTelemetry traces end to end: a real `nexus up` exporting over OTLP/HTTP to a receiver
//! in the test, which decodes what arrives with the collector's own protobuf messages.
//!
//! A request that carries a W3C `traceparent` is traced as a child of it: its server span, the
//! component's span under that, and under the component one span per Redis command,
//! PostgreSQL statement and outbound request; the outbound request carries its own span's
//! `traceparent` to the far side. With no endpoint configured nothing is traced and nothing is
//! passed on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use prost::Message as _;
use support::{Backends, Nexus, Receiver, client, unique};

/// The example component (Redis, PostgreSQL, outbound HTTP to `target`).
fn manifest(target: &Receiver) -> String {
    format!(
        r#"
spin_manifest_version = 2

[application]
name = "traces"

[variables]
greeting = {{ default = "hello" }}
redis_address = {{ default = "redis://127.0.0.1:6379" }}
redis_host = {{ default = "127.0.0.1:6379" }}
postgres_address = {{ default = "postgres://127.0.0.1:5432/unused" }}
postgres_host = {{ default = "127.0.0.1:5432" }}
target = {{ default = "{target}" }}

[[trigger.http]]
route = "/example/..."
component = "example"

[component.example]
source = "{{example}}"
allowed_outbound_hosts = ["redis://{{{{ redis_host }}}}", "postgres://{{{{ postgres_host }}}}", "http://{{{{ target }}}}"]
[component.example.variables]
greeting = "{{{{ greeting }}}}"
redis_address = "{{{{ redis_address }}}}"
postgres_address = "{{{{ postgres_address }}}}"
# A durable job of the example component is a note posted through the host's own listener.
[component.example.tool.nexus.jobs]
path = "/example/notes"
poll_ms = 50
"#,
        target = target.addr
    )
}

/// A random id of `bytes` bytes, in lower-case hex.
fn random_hex(bytes: usize) -> String {
    let mut hex = String::new();
    while hex.len() < bytes * 2 {
        hex.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    hex.truncate(bytes * 2);
    hex
}

/// A caller's trace: its trace id and the caller's span id.
struct Caller {
    trace_id: String,
    span_id: String,
}

impl Caller {
    fn new() -> Caller {
        Caller {
            trace_id: random_hex(16),
            span_id: random_hex(8),
        }
    }

    /// The `traceparent` header, sampled or not.
    fn traceparent(&self, sampled: bool) -> String {
        let flags = if sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", self.trace_id, self.span_id)
    }
}

/// Every span the receiver has been sent, with its resource's `service.name`.
fn spans(received: &[support::Received]) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for request in received {
        assert_eq!(request.path, "/v1/traces", "OTLP/HTTP's traces path");
        assert_eq!(request.header("content-type"), "application/x-protobuf");
        let export = ExportTraceServiceRequest::decode(request.body.clone())
            .expect("an OTLP ExportTraceServiceRequest");
        for resource_spans in export.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| {
                    resource
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                })
                .and_then(|kv| kv.value.as_ref())
                .and_then(|value| match &value.value {
                    Some(AnyValue::StringValue(name)) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }
    spans
}

/// A span's attributes, as text.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(n) => n.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                AnyValue::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

/// The spans of one trace, by span id.
struct Trace {
    spans: Vec<Span>,
}

impl Trace {
    fn of(all: &[(String, Span)], trace_id: &str) -> Trace {
        Trace {
            spans: all
                .iter()
                .filter(|(_, span)| hex::encode(&span.trace_id) == trace_id)
                .map(|(_, span)| span.clone())
                .collect(),
        }
    }

    /// The one span named `name`.
    fn named(&self, name: &str) -> &Span {
        let found: Vec<&Span> = self.spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(
            found.len(),
            1,
            "one span named {name:?} in {:#?}",
            self.names()
        );
        found[0]
    }

    fn names(&self) -> Vec<String> {
        self.spans.iter().map(|s| s.name.clone()).collect()
    }

    /// Whether `span`'s parent is `parent`.
    fn is_child(span: &Span, parent: &Span) -> bool {
        span.parent_span_id == parent.span_id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_is_traced_from_its_caller_through_the_component_to_its_calls() {
    let collector = Receiver::start().await;
    let target = Receiver::start().await;
    let endpoint = format!("http://{}", collector.addr);
    let nexus = Nexus::start_with(
        &manifest(&target),
        Backends::Real,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Exported within 100 ms of ending, not the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "nexus-traces-test"),
        ],
    )
    .await;
    let http = client();

    // Not sampled by the caller: nothing of it is exported, but the decision is passed on.
    let unsampled = Caller::new();
    let response = http
        .get(nexus.url("/example/fetch"))
        .query(&[("url", format!("http://{}/unsampled", target.addr))])
        .header("traceparent", unsampled.traceparent(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Redis.
    let stored = Caller::new();
    let key = unique("traced");
    let response = http
        .put(nexus.url(&format!("/example/redis/{key}")))
        .header("traceparent", stored.traceparent(true))
        .body("value")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // PostgreSQL.
    let noted = Caller::new();
    let response = http
        .post(nexus.url("/example/notes"))
        .header("traceparent", noted.traceparent(true))
        .body("a traced note")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    // Outbound HTTP.
    let fetched = Caller::new();
    let response = http
        .get(nexus.url("/example/fetch"))
        .query(&[("url", format!("http://{}/sampled", target.addr))])
        .header("traceparent", fetched.traceparent(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // No caller: a trace of its own.
    let response = http.get(nexus.url("/example/")).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // A durable job: its run is a trace of its own, the request the host makes itself in it.
    let job_id = uuid::Uuid::new_v4();
    nexus
        .database
        .as_ref()
        .unwrap()
        .client()
        .await
        .execute(
            "INSERT INTO jobs (id, component, kind, payload) VALUES ($1, 'example', 'traced', '{}')",
            &[&job_id],
        )
        .await
        .unwrap();

    // Every span asserted on below: a component's span may end after its request's (the guest
    // goes on after answering), so each is waited for, not inferred from another.
    let wanted: [(&str, &[&str]); 3] = [
        (
            &stored.trace_id,
            &["PUT /example/...", "handle example", "SET"],
        ),
        (
            &noted.trace_id,
            &[
                "POST /example/...",
                "handle example",
                "INSERT example_notes",
            ],
        ),
        (
            &fetched.trace_id,
            &["GET /example/...", "handle example", "GET"],
        ),
    ];
    let received = collector
        .wait_until("every span of the test's requests and job", |received| {
            let all = spans(received);
            let traced = wanted.iter().all(|(trace_id, names)| {
                let trace = Trace::of(&all, trace_id);
                names
                    .iter()
                    .all(|name| trace.spans.iter().any(|s| s.name == *name))
            });
            let root = all
                .iter()
                .any(|(_, span)| span.name == "GET /example/..." && span.parent_span_id.is_empty());
            let job = all
                .iter()
                .find(|(_, span)| span.name == "job example")
                .is_some_and(|(_, job)| {
                    let trace = Trace::of(&all, &hex::encode(&job.trace_id));
                    ["POST /example/...", "handle example"]
                        .iter()
                        .all(|name| trace.spans.iter().any(|s| s.name == *name))
                });
            traced && root && job
        })
        .await;
    let all = spans(&received);
    assert!(
        all.iter()
            .all(|(service, _)| service == "nexus-traces-test"),
        "every span names the service"
    );

    // The unsampled caller: no span, and its decision went on to the far side.
    assert!(Trace::of(&all, &unsampled.trace_id).spans.is_empty());
    let far = target.wait_for(2).await;
    let unsampled_far = far.iter().find(|r| r.path == "/unsampled").unwrap();
    let passed = unsampled_far.header("traceparent");
    assert!(
        passed.starts_with(&format!("00-{}-", unsampled.trace_id)) && passed.ends_with("-00"),
        "the far side continues the caller's unsampled trace: {passed}"
    );

    // Redis: server span (child of the caller's), component span, a span per command.
    let trace = Trace::of(&all, &stored.trace_id);
    let server = trace.named("PUT /example/...");
    assert_eq!(hex::encode(&server.parent_span_id), stored.span_id);
    assert_eq!(server.kind, SpanKind::Server as i32);
    let server_attributes = attributes(server);
    assert_eq!(server_attributes["http.route"], "/example/...");
    assert_eq!(server_attributes["http.request.method"], "PUT");
    assert_eq!(server_attributes["http.response.status_code"], "200");
    assert!(!server_attributes["request_id"].is_empty());
    let component = trace.named("handle example");
    assert!(Trace::is_child(component, server));
    assert_eq!(attributes(component)["nexus.component"], "example");
    let set = trace.named("SET");
    assert!(Trace::is_child(set, component));
    assert_eq!(set.kind, SpanKind::Client as i32);
    let set_attributes = attributes(set);
    assert_eq!(set_attributes["db.system.name"], "redis");
    assert_eq!(set_attributes["db.operation.name"], "SET");
    assert!(
        !set_attributes.values().any(|v| v.contains(&key)),
        "no key or value is recorded"
    );

    // PostgreSQL: the statement's text, not its parameters.
    let trace = Trace::of(&all, &noted.trace_id);
    let server = trace.named("POST /example/...");
    let component = trace.named("handle example");
    assert!(Trace::is_child(component, server));
    let statements: Vec<&Span> = trace
        .spans
        .iter()
        .filter(|s| attributes(s).get("db.system.name").map(String::as_str) == Some("postgresql"))
        .collect();
    assert!(!statements.is_empty(), "{:?}", trace.names());
    for statement in &statements {
        assert!(Trace::is_child(statement, component));
        assert_eq!(statement.kind, SpanKind::Client as i32);
        let text = &attributes(statement)["db.query.text"];
        assert!(
            !text.contains("a traced note"),
            "no parameter values: {text}"
        );
    }
    let insert = statements
        .iter()
        .find(|s| s.name.starts_with("INSERT "))
        .unwrap_or_else(|| panic!("an INSERT among {:?}", trace.names()));
    assert_eq!(attributes(insert)["db.operation.name"], "INSERT");
    assert_eq!(attributes(insert)["db.response.returned_rows"], "1");

    // Outbound: a client span under the component, whose id the far side got as its parent.
    let trace = Trace::of(&all, &fetched.trace_id);
    let component = trace.named("handle example");
    let outbound = trace.named("GET");
    assert!(Trace::is_child(outbound, component));
    assert_eq!(outbound.kind, SpanKind::Client as i32);
    let outbound_attributes = attributes(outbound);
    assert_eq!(outbound_attributes["http.response.status_code"], "200");
    assert_eq!(
        outbound_attributes["url.full"],
        format!("http://{}/sampled", target.addr)
    );
    let sampled_far = far.iter().find(|r| r.path == "/sampled").unwrap();
    assert_eq!(
        sampled_far.header("traceparent"),
        format!(
            "00-{}-{}-01",
            fetched.trace_id,
            hex::encode(&outbound.span_id)
        )
    );

    // A request with no caller is a root.
    let roots: Vec<&Span> = all
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.name == "GET /example/..." && span.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1);
    assert_eq!(
        roots[0].status.as_ref().map(|s| s.code),
        Some(StatusCode::Unset as i32)
    );

    // The job: its span is the root, the request it posted its child.
    let job = all
        .iter()
        .map(|(_, span)| span)
        .find(|span| span.name == "job example")
        .unwrap();
    assert!(job.parent_span_id.is_empty());
    assert_eq!(job.kind, SpanKind::Consumer as i32);
    let job_attributes = attributes(job);
    assert_eq!(job_attributes["nexus.job.id"], job_id.to_string());
    assert_eq!(job_attributes["nexus.job.kind"], "traced");
    assert_eq!(job_attributes["nexus.job.outcome"], "succeeded");
    let trace = Trace::of(&all, &hex::encode(&job.trace_id));
    let posted = trace.named("POST /example/...");
    assert!(Trace::is_child(posted, job));
    assert!(Trace::is_child(trace.named("handle example"), posted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_endpoint_nothing_is_traced_or_passed_on() {
    let target = Receiver::start().await;
    let nexus = Nexus::start(&manifest(&target), Backends::Embedded).await;
    let caller = Caller::new();
    let response = client()
        .get(nexus.url("/example/fetch"))
        .query(&[("url", format!("http://{}/plain", target.addr))])
        .header("traceparent", caller.traceparent(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let far = target.wait_for(1).await;
    assert!(
        far[0].headers.get("traceparent").is_none(),
        "no trace context goes out when nexus traces nothing"
    );
    assert!(!nexus.logs().contains("exporting traces"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_nexus_cannot_export_to_is_refused_at_start() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["up", "--manifest", "/nonexistent/spin.toml"])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector.example:4318",
        )
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not an http:// URL"),
        "a clear error: {stderr}"
    );
}
