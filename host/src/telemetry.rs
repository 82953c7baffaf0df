//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when an endpoint is configured and
//! off otherwise.
//!
//! The host's spans are `tracing` spans; [`start`] adds a layer that turns them into
//! OpenTelemetry spans and a batch exporter that sends them. A request's span continues the
//! caller's W3C `traceparent` ([`continue_trace`]); inside it, the component's span, then one span
//! per Redis command, PostgreSQL statement and outbound HTTP request the component makes; an
//! outbound request carries its own span's `traceparent` ([`pass_on`]) to the far side. A durable
//! job's run is a trace of its own, whose request the host makes to itself under the job's span.
//!
//! The configuration is OpenTelemetry's own environment: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns it on; `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME` (default `nexus`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` (default: the caller's decision, else every
//! trace) and the `OTEL_BSP_*` batch settings are read as the specification says;
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off again.
//!
//! The spans this module adds are under [`TARGET`], which the log leaves out: they are for the
//! trace, and with no exporter nothing asks for them, so they cost nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry_http::{Bytes, HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` target of the spans that exist for the trace alone (component, Redis,
/// PostgreSQL, outbound HTTP, job): the log's filter leaves it out.
pub const TARGET: &str = "nexus::trace";

/// The longest SQL text a span keeps, in bytes.
const MAX_STATEMENT_BYTES: usize = 2048;
/// The longest Redis command name a span keeps (a guest may send any text as one).
const MAX_COMMAND_BYTES: usize = 32;
/// The exporter's request timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the host waits at shutdown for the last spans to go out.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Whether traces are being exported: the hot paths skip the header work when they are not.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether traces are being exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// What the environment asks for: an OTLP endpoint, not turned off.
pub fn configured() -> bool {
    configured_in(|name| std::env::var(name).ok())
}

fn configured_in(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|value| !value.trim().is_empty());
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT");
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    endpoint && !disabled && !no_exporter
}

/// The running exporter; [`Exporter::shutdown`] sends what is still queued.
pub struct Exporter {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Exporter {
    /// Where the spans go, as configured (the base URL, or the traces URL).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends the spans still queued (for at most a few seconds) and stops exporting.
    pub async fn shutdown(self) {
        EXPORTING.store(false, Ordering::Relaxed);
        let provider = self.provider;
        // The SDK blocks while its exporting thread sends, and that send runs on this runtime:
        // wait for it from a thread of the blocking pool, not from a worker.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_FLUSH))
                .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "the last spans were not exported"),
            Err(err) => tracing::warn!(error = %err, "the span exporter did not stop cleanly"),
        }
    }
}

/// Starts exporting: the exporter, and the layer that feeds it the host's spans (request spans,
/// and those under [`TARGET`]; events at WARN and above, as span events).
pub fn start<S>(
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<(Exporter, impl Layer<S> + Send + Sync + 'static)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .unwrap_or_default();
    if !endpoint.trim_start().starts_with("http://") {
        // The exporter speaks plain HTTP only: a collector next to the host (an agent or a
        // sidecar) is where TLS to a vendor begins.
        anyhow::bail!(
            "the OTLP endpoint {endpoint:?} is not an http:// URL; nexus exports over plain \
             OTLP/HTTP to a collector next to it (an agent or a sidecar)"
        );
    }
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        && !protocol.trim().is_empty()
        && protocol.trim() != "http/protobuf"
    {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL is {protocol:?}; nexus exports http/protobuf only"
        );
    }
    let timeout = export_timeout(|name| std::env::var(name).ok());
    let client = OnRuntime {
        client: opentelemetry_http::hyper::HyperClient::with_default_connector(timeout, None),
        runtime,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(timeout)
        .with_http_client(client)
        .build()
        .context("cannot set up the OTLP span exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(|name| std::env::var(name).ok()))
        .build();
    let tracer = provider.tracer("nexus");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Who polled a span and for how long is the log's business, not the trace's; the
        // source locations would name the host's files in every span.
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_filter(tracing_subscriber::filter::filter_fn(traced));
    EXPORTING.store(true, Ordering::Relaxed);
    Ok((Exporter { provider, endpoint }, layer))
}

/// What the trace takes: the host's spans (requests, and those under [`TARGET`]); events at
/// WARN and above, which become events of the span they happen in; nothing of the exporter's
/// own, which would feed on itself.
fn traced(metadata: &tracing::Metadata<'_>) -> bool {
    let target = metadata.target();
    if target.starts_with("opentelemetry") {
        return false;
    }
    if metadata.is_span() {
        target == TARGET || target.starts_with("nexus_host")
    } else {
        *metadata.level() <= tracing::Level::WARN
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s.
fn export_timeout(var: impl Fn(&str) -> Option<String>) -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| var(name)?.trim().parse::<u64>().ok())
    .map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis)
}

/// The resource every span names: `service.name` `nexus` (or `OTEL_SERVICE_NAME`, or a
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`), the host's version, and the other attributes
/// `OTEL_RESOURCE_ATTRIBUTES` gives.
fn resource(var: impl Fn(&str) -> Option<String>) -> opentelemetry_sdk::Resource {
    let mut attributes = vec![
        opentelemetry::KeyValue::new("service.name", "nexus"),
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    let pairs = var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    for pair in pairs.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8_lossy()
            .into_owned();
        attributes.retain(|kv| kv.key.as_str() != key);
        attributes.push(opentelemetry::KeyValue::new(key.to_owned(), value));
    }
    if let Some(name) = var("OTEL_SERVICE_NAME").filter(|name| !name.trim().is_empty()) {
        attributes.retain(|kv| kv.key.as_str() != "service.name");
        attributes.push(opentelemetry::KeyValue::new(
            "service.name",
            name.trim().to_owned(),
        ));
    }
    opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(attributes)
        .build()
}

/// The OTLP exporter's HTTP client, run on the host's runtime: the SDK exports from a thread
/// of its own, where hyper (which needs a Tokio runtime) could not run.
#[derive(Debug)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

/// Makes `span` (a request's, not yet entered) continue the trace of the `traceparent` (and
/// `tracestate`) in `headers`, when traces are exported and the headers carry a valid one.
fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    if !exporting() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only where the span is not traced (filtered out): then there is nothing to do.
        let _ = span.set_parent(parent);
    }
}

/// Puts `span`'s `traceparent` (and `tracestate`) in `headers`, replacing any there, when
/// traces are exported: the far side's spans become its children.
pub fn pass_on(span: &Span, headers: &mut http::HeaderMap) {
    if !exporting() {
        return;
    }
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// Marks `span` as failed, with `description`.
pub fn failed(span: &Span, description: impl Into<String>) {
    if exporting() {
        span.set_status(Status::error(description.into()));
    }
}

/// Sets one attribute of `span`, when traces are exported.
pub fn set(span: &Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if exporting() {
        span.set_attribute(key, value);
    }
}

/// Makes `span` (a request's, not yet entered, with empty `otel.name` and `otel.kind` fields) a
/// server span named for its route (`POST /nexus/v3/chat/...`; the method alone where no route
/// matched) that continues the caller's trace, when traces are exported.
pub fn server_span(
    span: &Span,
    method: &http::Method,
    route: Option<&str>,
    headers: &http::HeaderMap,
) {
    if !exporting() {
        return;
    }
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    span.record("otel.name", name.as_str());
    span.record("otel.kind", "server");
    span.set_attribute("http.request.method", method.to_string());
    if let Some(route) = route {
        span.set_attribute("http.route", route.to_owned());
    }
    continue_trace(span, headers);
}

/// Records a server span's answer: its status, and an error for a 5xx.
pub fn answered(span: &Span, status: u16) {
    if !exporting() {
        return;
    }
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.set_status(Status::error(status.to_string()));
    }
}

/// The span of one Redis command a component sends.
pub fn redis_span(command: &str) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "redis",
        otel.name = tracing::field::Empty,
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = tracing::field::Empty,
    );
    // The name is worked out only for a span someone takes, and once.
    if !span.is_disabled() {
        let name = command_name(command);
        span.record("otel.name", name.as_str());
        span.record("db.operation.name", name.as_str());
    }
    span
}

/// The span of one PostgreSQL statement a component runs. The text is the statement as the
/// component wrote it, with its parameters as placeholders (their values are not recorded).
pub fn postgres_span(statement: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "postgres",
        otel.name = %statement_summary(statement),
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = %operation(statement),
        db.query.text = %cut(statement, MAX_STATEMENT_BYTES),
    )
}

/// The span of one outbound HTTP request a component makes. The URL is recorded without its
/// query, which may carry credentials.
pub fn outbound_span(component: &str, request: &http::Request<impl Sized>) -> Span {
    let uri = request.uri();
    let port = uri.port_u16().map_or_else(
        || match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        },
        i64::from,
    );
    tracing::info_span!(
        target: TARGET,
        "outbound",
        otel.name = %request.method(),
        otel.kind = "client",
        nexus.component = component,
        http.request.method = %request.method(),
        server.address = uri.host().unwrap_or_default(),
        server.port = port,
        url.full = %format_args!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str()),
            uri.path()
        ),
    )
}

/// The span of one call of a component (a request's instance, or a socket's event handler).
pub fn component_span(component: &str, call: &'static str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "component",
        otel.name = %format_args!("{call} {component}"),
        nexus.component = component,
        nexus.call = call,
    )
}

/// The span of one run of a durable job: the root of the request the host makes itself.
pub fn job_span(component: &str, kind: &str, id: &str, attempt: u32) -> Span {
    tracing::info_span!(
        target: TARGET,
        "job",
        otel.name = %format_args!("job {component}"),
        otel.kind = "consumer",
        nexus.component = component,
        nexus.job.kind = kind,
        nexus.job.id = id,
        nexus.job.attempt = attempt,
    )
}

/// A Redis command's name as a span names it: upper case, letters only, bounded.
fn command_name(command: &str) -> String {
    let name: String = command
        .chars()
        .take(MAX_COMMAND_BYTES)
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if name.is_empty() {
        "COMMAND".to_owned()
    } else {
        name
    }
}

/// A statement's first keyword, upper case (`SELECT`, `INSERT`, `WITH`, ...).
fn operation(statement: &str) -> String {
    statement
        .split_whitespace()
        .next()
        .map(|word| {
            word.chars()
                .take_while(char::is_ascii_alphabetic)
                .map(|c| c.to_ascii_uppercase())
                .collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .unwrap_or_else(|| "QUERY".to_owned())
}

/// A statement span's name: its operation and, where the statement says it plainly, the
/// table (`INSERT nexus_messages`), as the database conventions suggest.
fn statement_summary(statement: &str) -> String {
    let operation = operation(statement);
    let words: Vec<&str> = statement.split_whitespace().take(64).collect();
    let after = match operation.as_str() {
        "SELECT" | "DELETE" => "FROM",
        "INSERT" => "INTO",
        "UPDATE" => "UPDATE",
        _ => return operation,
    };
    let table = words
        .iter()
        .position(|word| word.eq_ignore_ascii_case(after))
        .and_then(|at| words.get(at + 1))
        .map(|word| {
            word.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect::<String>()
        })
        .filter(|table| !table.is_empty());
    match table {
        Some(table) => format!("{operation} {table}"),
        None => operation,
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn only_an_endpoint_turns_traces_on() {
        assert!(!configured_in(env(&[])));
        assert!(!configured_in(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(configured_in(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318"
        )])));
        assert!(configured_in(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces"
        )])));
        assert!(!configured_in(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
        assert!(!configured_in(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }

    #[test]
    fn the_timeout_comes_from_the_environment() {
        assert_eq!(export_timeout(env(&[])), DEFAULT_EXPORT_TIMEOUT);
        assert_eq!(
            export_timeout(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])),
            Duration::from_millis(2500)
        );
        assert_eq!(
            export_timeout(env(&[
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
            ])),
            Duration::from_millis(700)
        );
    }

    fn attribute(resource: &opentelemetry_sdk::Resource, key: &'static str) -> Option<String> {
        resource
            .get(&opentelemetry::Key::from_static_str(key))
            .map(|value| value.to_string())
    }

    #[test]
    fn the_service_is_nexus_unless_the_environment_names_it() {
        let plain = resource(env(&[]));
        assert_eq!(attribute(&plain, "service.name").as_deref(), Some("nexus"));
        assert_eq!(
            attribute(&plain, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        let attributed = resource(env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=chat-eu,deployment.environment.name=prod%20eu",
        )]));
        assert_eq!(
            attribute(&attributed, "service.name").as_deref(),
            Some("chat-eu")
        );
        assert_eq!(
            attribute(&attributed, "deployment.environment.name").as_deref(),
            Some("prod eu")
        );
        let named = resource(env(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=chat-eu"),
            ("OTEL_SERVICE_NAME", "nexus-eu"),
        ]));
        assert_eq!(
            attribute(&named, "service.name").as_deref(),
            Some("nexus-eu")
        );
    }

    #[test]
    fn span_names_are_bounded() {
        assert_eq!(command_name("hset"), "HSET");
        assert_eq!(command_name("x\r\n; drop"), "XDROP");
        assert_eq!(command_name(""), "COMMAND");
        assert_eq!(command_name(&"a".repeat(100)).len(), MAX_COMMAND_BYTES);
        assert_eq!(
            statement_summary("INSERT INTO nexus_messages (id) VALUES ($1)"),
            "INSERT nexus_messages"
        );
        assert_eq!(
            statement_summary("select id from public.jobs where id = $1"),
            "SELECT public.jobs"
        );
        assert_eq!(
            statement_summary("UPDATE chats SET state = $1"),
            "UPDATE chats"
        );
        assert_eq!(
            statement_summary("WITH x AS (SELECT 1) SELECT * FROM x"),
            "WITH"
        );
        assert_eq!(statement_summary("  "), "QUERY");
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 10), "héllo");
    }

    #[test]
    fn the_trace_takes_the_hosts_spans_and_warnings() {
        /// Keeps, for each callsite, its target, whether it is a span, and whether `traced`
        /// takes it.
        #[derive(Default, Clone)]
        struct Seen(std::sync::Arc<std::sync::Mutex<Vec<(String, bool, bool)>>>);
        impl tracing::Subscriber for Seen {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn register_callsite(
                &self,
                metadata: &'static tracing::Metadata<'static>,
            ) -> tracing::subscriber::Interest {
                self.0.lock().unwrap().push((
                    metadata.target().to_owned(),
                    metadata.is_span(),
                    traced(metadata),
                ));
                tracing::subscriber::Interest::always()
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, _: &tracing::Event<'_>) {}
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        let seen = Seen::default();
        tracing::subscriber::with_default(seen.clone(), || {
            let _ = redis_span("GET");
            let _ = tracing::info_span!("request");
            let _ = tracing::info_span!(target: "hyper", "connection");
            tracing::warn!(target: "warned", "a warning");
            tracing::info!(target: "informed", "an info");
            tracing::warn!(target: "opentelemetry_sdk", "the exporter's own");
        });
        // A new subscriber is also told of every callsite registered before (other tests'),
        // so only this test's are looked at.
        let module = module_path!().to_owned();
        let ours = [
            "hyper",
            "informed",
            TARGET,
            &module,
            "opentelemetry_sdk",
            "warned",
        ];
        let mut seen: Vec<(String, bool, bool)> = seen
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(target, _, _)| ours.contains(&target.as_str()))
            .cloned()
            .collect();
        seen.sort();
        seen.dedup();
        let mut expected = vec![
            ("hyper".to_owned(), true, false),
            ("informed".to_owned(), false, false),
            (TARGET.to_owned(), true, true),
            (module.clone(), true, true),
            ("opentelemetry_sdk".to_owned(), false, false),
            ("warned".to_owned(), false, true),
        ];
        expected.sort();
        assert_eq!(seen, expected);
    }
}
