//! Prometheus metrics, served at `/metrics` in the text exposition format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub component: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrapLabels {
    pub component: String,
    /// `cpu_deadline`, `memory`, `timeout` or `trap`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub component: String,
    /// `succeeded`, `retry` or `dead`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantCallLabels {
    /// `bot` or `transform`.
    pub kind: &'static str,
    /// `ok`, `declined` (the component answered with its own error), or why it failed
    /// (`trap`, `cpu_deadline`, `memory`, `timeout`, `forbidden_host`, `disabled`, ...).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WakeLabels {
    /// `published`, `deadline` or `refused` (the host held as many parked requests as it may).
    pub reason: &'static str,
}

/// Every metric the host records.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ComponentLabels, Histogram>,
    pub instantiation_duration: Family<ComponentLabels, Histogram>,
    pub traps: Family<TrapLabels, Counter>,
    pub in_flight: Gauge,
    pub websockets_open: Gauge,
    pub websockets_too_slow: Counter,
    pub websockets_sequence_gaps: Counter,
    pub websocket_messages_received: Counter,
    pub websocket_fanout_messages: Counter,
    pub jobs: Family<JobLabels, Counter>,
    pub tenant_calls: Family<TenantCallLabels, Counter>,
    pub tenant_components_disabled: Counter,
    pub parked_requests: Gauge,
    pub parked_wakes: Family<WakeLabels, Counter>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nexus");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<ComponentLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let instantiation_duration =
            Family::<ComponentLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(latency_buckets())
            });
        let traps = Family::<TrapLabels, Counter>::default();
        let in_flight = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests served by components, by final status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from routing a request to its response headers, per component",
            request_duration.clone(),
        );
        registry.register(
            "instantiation_duration_seconds",
            "Time to instantiate a component for one request",
            instantiation_duration.clone(),
        );
        registry.register(
            "guest_traps",
            "Guest executions that ended in a trap, by reason",
            traps.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being served by components now",
            in_flight.clone(),
        );
        let websockets_open = Gauge::default();
        let websockets_too_slow = Counter::default();
        let websockets_sequence_gaps = Counter::default();
        let websocket_messages_received = Counter::default();
        let websocket_fanout_messages = Counter::default();
        registry.register(
            "websockets_open",
            "WebSockets open on this host",
            websockets_open.clone(),
        );
        registry.register(
            "websockets_closed_too_slow",
            "WebSockets closed because their send queue was full",
            websockets_too_slow.clone(),
        );
        registry.register(
            "websockets_closed_sequence_gap",
            "WebSockets closed because a message of a topic they take in sequence never came",
            websockets_sequence_gaps.clone(),
        );
        registry.register(
            "websocket_messages_received",
            "Messages received from WebSocket clients",
            websocket_messages_received.clone(),
        );
        registry.register(
            "websocket_fanout_messages",
            "Messages this host received from Redis pub/sub for its WebSockets",
            websocket_fanout_messages.clone(),
        );
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs",
            "Durable job attempts this host ran, by component and outcome",
            jobs.clone(),
        );
        let tenant_calls = Family::<TenantCallLabels, Counter>::default();
        registry.register(
            "tenant_component_calls",
            "Calls of tenant components, by kind (bot, transform) and outcome",
            tenant_calls.clone(),
        );
        let tenant_components_disabled = Counter::default();
        registry.register(
            "tenant_components_disabled",
            "Tenant components this host disabled after failures in a row",
            tenant_components_disabled.clone(),
        );
        let parked_requests = Gauge::default();
        registry.register(
            "parked_requests",
            "Requests parked on this host (nexus:platform/parking): held with no instance",
            parked_requests.clone(),
        );
        let parked_wakes = Family::<WakeLabels, Counter>::default();
        registry.register(
            "parked_wakes",
            "Parked requests woken, by why",
            parked_wakes.clone(),
        );
        Self {
            registry,
            parked_requests,
            parked_wakes,
            jobs,
            tenant_calls,
            tenant_components_disabled,
            websockets_open,
            websockets_too_slow,
            websockets_sequence_gaps,
            websocket_messages_received,
            websocket_fanout_messages,
            requests,
            request_duration,
            instantiation_duration,
            traps,
            in_flight,
        }
    }
}

impl Metrics {
    /// Registers the platform pools' counts of waits for a connection that ran out of time.
    pub fn register_pool_exhaustion(&mut self, redis: Counter, postgres: Counter) {
        self.registry.register(
            "redis_pool_exhausted",
            "Waits for a dedicated Redis connection (a transaction, a blocking command) that ran out of time",
            redis,
        );
        self.registry.register(
            "postgres_pool_exhausted",
            "Waits for a pooled PostgreSQL connection that ran out of time",
            postgres,
        );
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let metrics = Metrics::default();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                component: "hello".into(),
                status: 200,
            })
            .inc();
        metrics
            .traps
            .get_or_create(&TrapLabels {
                component: "hello".into(),
                reason: "cpu_deadline",
            })
            .inc();
        let text = metrics.render();
        assert!(
            text.contains(r#"nexus_http_requests_total{component="hello",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nexus_guest_traps_total{component="hello",reason="cpu_deadline"} 1"#),
            "{text}"
        );
    }
}
