//! The HTTP trigger: serves every routed component, a fresh instance per request.
//!
//! Each request gets a request id (the client's `x-request-id` if it sent a sane one), is
//! routed with Spin's rules, and is handed to a new instance of its component, made from the
//! component's `InstancePre` under its limits: a memory cap (`StoreLimits`), a CPU deadline
//! (epoch interruption), an end-to-end timeout, and a cap on the request body. A guest that
//! traps, loops or runs out of memory costs only its own request a 5xx. The host's own
//! endpoints are `/healthz`, `/readyz` and `/metrics`. WebSocket routes are handed to
//! [`crate::websocket::serve`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use wasmtime::component::Component;
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::allowed_hosts::AllowedHosts;
use crate::bindings::parking::ParkableIndices;
use crate::bindings::parking::exports::nexus::platform::parking::{
    Call as ParkingCall, Park as WitPark, Wake,
};
use crate::bindings::websocket::SocketHandlerPre;
use crate::budget::Budget;
use crate::engine::{CpuDeadlineExceeded, InstanceState};
use crate::log::LogCtx;
use crate::manifest::{Limits, Manifest, WebSocketDecl};
use crate::metrics::{ComponentLabels, Metrics, RequestLabels, TrapLabels};
use crate::outbound_http::{OutboundHttpHooks, PrivateDestinations};
use crate::parking::{Park, Parking, Woken};
use crate::platform::Platform;
use crate::postgres::{PgBackend, PgCtx};
use crate::redis::{RedisBackend, RedisCtx};
use crate::routes::{RouteMatch, Router};
use crate::tenant::{TenantComponents, TenantSettings};
use crate::variables::{AppVariables, ComponentVariables};
use crate::websocket::fanout::Fanout;
use crate::websocket::{Hub, WebSocketCtx};

/// How long a request waits for an instance slot before it gets 503.
const INSTANCE_SLOT_WAIT: Duration = Duration::from_secs(2);

/// The header that carries the request id, in and out.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One component, ready to be instantiated.
pub struct ServedComponent {
    pub name: Arc<str>,
    /// Set for a component that HTTP triggers route to.
    pre: Option<ProxyPre<InstanceState>>,
    /// Set for a component that serves a WebSocket route.
    socket: Option<SocketHandlerPre<InstanceState>>,
    /// Set for an HTTP component that exports `nexus:platform/parking`: its requests may park.
    parking: Option<ParkableIndices>,
    allowed: Arc<AllowedHosts>,
    /// Its `allowed_outbound_hosts` name the tenant-components service.
    tenant_service: bool,
    variables: ComponentVariables,
    environment: Vec<(String, String)>,
    limits: Limits,
}

impl ServedComponent {
    pub(crate) fn socket_handler(&self) -> Option<&SocketHandlerPre<InstanceState>> {
        self.socket.as_ref()
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }
}

/// Everything the server needs to answer requests.
pub struct App {
    engine: Engine,
    components: Vec<Arc<ServedComponent>>,
    router: Router,
    /// For each route given to the router, the index of its component.
    route_components: Vec<usize>,
    /// WebSocket routes, and for each its component's index and settings.
    websocket_router: Router,
    websocket_targets: Vec<(usize, WebSocketDecl)>,
    platform: Arc<Platform>,
    pub metrics: Arc<Metrics>,
    /// This node's WebSockets and topics.
    pub hub: Arc<Hub>,
    /// Requests parked on this host, and the fan-out that wakes them.
    parking: Arc<Parking>,
    parking_enabled: bool,
    /// Tenants' bots and transforms, and the fan-out that announces their changes.
    pub tenant: Arc<TenantComponents>,
    tenant_announcements: Fanout,
    redis_key_prefix: String,
    /// Instance slots for clients' requests and sockets.
    instance_slots: Arc<Semaphore>,
    /// Instance slots for the host's own timed requests and job runs ([`Budget::Host`]).
    host_slots: Arc<Semaphore>,
    /// Which non-public addresses the components' outbound HTTP may reach.
    private_destinations: PrivateDestinations,
    /// Set on SIGTERM: `/readyz` answers 503 so that load balancers send nothing new here.
    draining: std::sync::atomic::AtomicBool,
}

/// Host-wide serving settings.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Requests served at once; matches the pooling allocator's instance slots.
    pub max_concurrent_requests: usize,
    /// WebSockets this host holds at once; upgrades past it get 503.
    pub max_websockets: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Tenant-component calls run at once (each holds an instance slot of its own).
    pub max_tenant_calls: usize,
    /// The engine's memory slot, which bounds a tenant component's memory limit.
    pub max_memory_bytes: usize,
    /// Whether components that export `nexus:platform/parking` may park requests (off, they
    /// wait as they do under Spin).
    pub park_requests: bool,
}

impl App {
    /// Compiles the manifest's served components and wires their capabilities.
    pub fn new(
        manifest: &Manifest,
        engine: Engine,
        platform: Arc<Platform>,
        settings: &ServeSettings,
    ) -> anyhow::Result<App> {
        let variables = AppVariables::resolve(
            manifest,
            |name| std::env::var(name).ok(),
            &platform.variables,
        )?;
        let linker = crate::engine::build_linker(&engine)?;
        let mut components = Vec::new();
        let mut names = Vec::new();
        for name in manifest.served_components() {
            let decl = &manifest.components[name];
            let path = manifest
                .component_path(name)
                .with_context(|| format!("component `{name}` has no local source"))?;
            let started = Instant::now();
            let component: Component = crate::engine::load_component(&engine, &path)?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component `{name}` imports something the nexus host does not provide")
                })?;
            let http_routed = manifest
                .http_triggers
                .iter()
                .any(|trigger| trigger.route.is_some() && trigger.component == name);
            let socket = decl
                .tool
                .nexus
                .websocket
                .as_ref()
                .map(|_| {
                    SocketHandlerPre::new(pre.clone())
                        .map_err(anyhow::Error::from)
                        .with_context(|| {
                            format!("component `{name}` serves a WebSocket route but does not export nexus:websocket/handler")
                        })
                })
                .transpose()?;
            // A component that exports the interface is told it may park; one that does not
            // (every Spin component) never is.
            let parking = http_routed
                .then(|| ParkableIndices::new(&pre).ok())
                .flatten();
            let pre = http_routed
                .then(|| {
                    ProxyPre::new(pre)
                        .map_err(anyhow::Error::from)
                        .with_context(|| {
                            format!("component `{name}` is not an HTTP component (it must export wasi:http/incoming-handler)")
                        })
                })
                .transpose()?;
            tracing::info!(
                component = name,
                path = %path.display(),
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "component ready"
            );
            let component_variables = variables
                .for_component(&decl.variables)
                .with_context(|| format!("component `{name}`'s variables"))?;
            let allowed_entries = decl
                .allowed_outbound_hosts
                .iter()
                // As in Spin, templates here name application variables.
                .map(|entry| variables.expand(entry))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("component `{name}`'s allowed_outbound_hosts"))?;
            let allowed = AllowedHosts::parse(&allowed_entries)
                .with_context(|| format!("component `{name}`'s allowed_outbound_hosts"))?;
            let limits = manifest.limits(name);
            components.push(Arc::new(ServedComponent {
                name: name.into(),
                pre,
                socket,
                parking,
                tenant_service: allowed.names_host(crate::tenant::SERVICE_HOST),
                allowed: Arc::new(allowed),
                variables: component_variables,
                environment: decl
                    .environment
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                limits,
            }));
            names.push(name);
        }
        let served: Vec<(&str, usize)> = manifest
            .http_triggers
            .iter()
            .filter_map(|trigger| {
                let route = trigger.route.as_deref()?;
                let index = names.iter().position(|n| *n == trigger.component)?;
                Some((route, index))
            })
            .collect();
        let router = Router::new(served.iter().map(|(route, _)| *route))
            .map_err(|message| anyhow::anyhow!("{message}"))?;
        let websocket_targets: Vec<(usize, WebSocketDecl)> = manifest
            .websocket_routes()
            .filter_map(|(name, decl)| {
                let index = names.iter().position(|n| *n == name)?;
                Some((index, decl.clone()))
            })
            .collect();
        let websocket_router = Router::new(
            websocket_targets
                .iter()
                .map(|(_, decl)| decl.route.as_str()),
        )
        .map_err(|message| anyhow::anyhow!("{message}"))?;
        // The operator's switch for non-public destinations (nexus_guest::private_address),
        // read once like every application variable; a manifest that does not declare it keeps
        // the guard on.
        let allow_private_outbound = variables
            .get(nexus_guest::private_address::SWITCH)
            .is_some_and(nexus_guest::private_address::allowed);
        let mut metrics = Metrics::default();
        metrics.register_pool_exhaustion(
            platform.redis.exhausted(),
            platform.postgres.exhausted.clone(),
        );
        let metrics = Arc::new(metrics);
        let prefix = variables
            .get("redis_key_prefix")
            .unwrap_or("nexus:")
            .to_owned();
        let hub = Hub::new(
            &prefix,
            settings.max_websockets,
            Self::fanout(&platform)?,
            Arc::clone(&metrics),
        );
        let tenant = Arc::new(TenantComponents::new(
            engine.clone(),
            platform.postgres.clone(),
            platform.redis.clone(),
            Arc::clone(&metrics),
            TenantSettings {
                max_concurrent_calls: settings.max_tenant_calls,
                max_memory_bytes: settings.max_memory_bytes,
                redis_key_prefix: prefix.clone(),
                allow_private_outbound,
                redis_address: platform
                    .variables
                    .get("redis_address")
                    .cloned()
                    .unwrap_or_default(),
                database: platform
                    .variables
                    .get("postgres_address")
                    .cloned()
                    .unwrap_or_default(),
            },
        )?);
        Ok(App {
            engine,
            components,
            router,
            route_components: served.iter().map(|(_, index)| *index).collect(),
            websocket_router,
            websocket_targets,
            tenant_announcements: Self::fanout(&platform)?,
            parking: Parking::new(&prefix, Self::fanout(&platform)?, Arc::clone(&metrics)),
            parking_enabled: settings.park_requests,
            redis_key_prefix: prefix,
            platform,
            metrics,
            hub,
            tenant,
            instance_slots: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            host_slots: Arc::new(Semaphore::new(manifest.host_request_slots())),
            private_destinations: PrivateDestinations::for_manifest(allow_private_outbound),
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts draining this host (SIGTERM): `/readyz` fails, and every WebSocket is closed with
    /// 1012 (service restart), which tells clients to connect again, to another host, and resume
    /// from their last position. Parked long-polls are in-flight requests: they still answer
    /// when their news comes or at their deadline (at most 30 s), within the grace.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.hub
            .drain(1012, "nexus is shutting down; reconnect and resume");
    }

    /// The WebSocket fan-out over the platform's Redis, real or embedded.
    fn fanout(platform: &Platform) -> anyhow::Result<Fanout> {
        match (&platform.redis_url, platform.redis.embedded()) {
            (Some(url), _) => Fanout::redis(url, Arc::clone(&platform.redis)),
            (None, Some(store)) => Ok(Fanout::embedded(
                Arc::clone(store),
                Arc::clone(&platform.redis),
                platform
                    .variables
                    .get("redis_address")
                    .cloned()
                    .unwrap_or_default(),
            )),
            (None, None) => anyhow::bail!("the platform has neither a Redis nor an embedded one"),
        }
    }

    /// Starts what runs beside the requests: the WebSocket fan-out, the subscription that wakes
    /// parked requests, and the announcements of tenant components.
    pub async fn start(&self) -> anyhow::Result<()> {
        self.hub.start().await?;
        self.parking.start().await?;
        crate::tenant::announce::listen(
            Arc::clone(&self.tenant),
            &self.tenant_announcements,
            &self.redis_key_prefix,
        )
        .await
    }

    /// An instance slot of `budget`, or `None` if none came free in time.
    pub(crate) async fn instance_slot(&self, budget: Budget) -> Option<OwnedSemaphorePermit> {
        self.instance_slot_until(budget, tokio::time::Instant::now() + INSTANCE_SLOT_WAIT)
            .await
    }

    /// An instance slot of `budget`, or `None` if none came free by `until`.
    async fn instance_slot_until(
        &self,
        budget: Budget,
        until: tokio::time::Instant,
    ) -> Option<OwnedSemaphorePermit> {
        let slots = match budget {
            Budget::Requests => &self.instance_slots,
            Budget::Host => &self.host_slots,
        };
        tokio::time::timeout_at(until, Arc::clone(slots).acquire_owned())
            .await
            .ok()?
            .ok()
    }

    pub(crate) fn record_trap(&self, component: &ServedComponent, reason: &'static str) {
        record_trap(&self.metrics, &component.name, reason);
    }

    /// The largest memory any served component may use, for sizing the pooling allocator.
    pub fn max_memory_bytes(manifest: &Manifest) -> usize {
        manifest
            .served_components()
            .iter()
            .map(|name| manifest.limits(name).max_memory_bytes)
            .max()
            .unwrap_or(1 << 20)
    }

    /// Answers one request.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<HyperOutgoingBody> {
        let budget = crate::loopback::take_mark(req.headers_mut());
        let request_id = request_id(&req);
        // The component quotes it as the envelope's `referenceId`: one id in the answer, its
        // header and every log line of the request.
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            req.headers_mut().insert(REQUEST_ID, value);
        }
        let path = req.uri().path().to_owned();
        let websocket_route = self.websocket_router.route(&path);
        let component_route = self.router.route(&path);
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            method = %req.method(),
            path = %path,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
        );
        // The span's name is the route the request took (`POST /nexus/v3/chat/...`), not its
        // path, and its parent the caller's `traceparent`: both before the span starts.
        let route = match path.as_str() {
            "/healthz" | "/readyz" | "/metrics" => Some(path.as_str()),
            _ => websocket_route
                .as_ref()
                .or(component_route.as_ref())
                .map(|route| route.raw_route.as_str()),
        };
        crate::telemetry::server_span(&span, req.method(), route, req.headers());
        async move {
            let started = Instant::now();
            let websocket =
                websocket_route.map(|route| self.websocket_targets[route.target].clone());
            let mut response = match path.as_str() {
                "/healthz" => text_response(StatusCode::OK, "ok\n"),
                _ if websocket.is_some() => match websocket {
                    Some((index, decl)) if crate::websocket::serve::is_upgrade(&req) => {
                        let component = Arc::clone(&self.components[index]);
                        crate::websocket::serve::upgrade(
                            Arc::clone(&self),
                            req,
                            component,
                            decl,
                            client,
                            &request_id,
                        )
                        .await
                    }
                    _ => {
                        let mut response = error_response(
                            StatusCode::UPGRADE_REQUIRED,
                            "upgrade-required",
                            "this route serves WebSockets only",
                            &request_id,
                        );
                        response
                            .headers_mut()
                            .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
                        response
                    }
                },
                "/readyz" => self.readiness().await,
                "/metrics" => text_response(StatusCode::OK, &self.metrics.render()),
                _ => match component_route {
                    None => error_response(
                        StatusCode::NOT_FOUND,
                        "no-route",
                        "no component serves this path",
                        &request_id,
                    ),
                    Some(route) => {
                        set_spin_headers(&mut req, &route, client);
                        let component =
                            Arc::clone(&self.components[self.route_components[route.target]]);
                        let response = Arc::clone(&self)
                            .serve_component(req, Arc::clone(&component), &request_id, budget)
                            .await;
                        self.metrics
                            .requests
                            .get_or_create(&RequestLabels {
                                component: component.name.to_string(),
                                status: response.status().as_u16(),
                            })
                            .inc();
                        self.metrics
                            .request_duration
                            .get_or_create(&ComponentLabels {
                                component: component.name.to_string(),
                            })
                            .observe(started.elapsed().as_secs_f64());
                        response
                    }
                },
            };
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            tracing::info!(
                status = response.status().as_u16(),
                elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "served"
            );
            crate::telemetry::answered(&tracing::Span::current(), response.status().as_u16());
            response
        }
        .instrument(span)
        .await
    }

    async fn readiness(&self) -> Response<HyperOutgoingBody> {
        let draining = self.draining.load(std::sync::atomic::Ordering::SeqCst);
        let checks = self.platform.check_ready().await;
        let ready = !draining && checks.values().all(Result::is_ok);
        let body = json!({
            "ready": ready,
            "draining": draining,
            "checks": checks.iter().map(|(name, result)| {
                (name.to_string(), match result {
                    Ok(()) => json!("ok"),
                    Err(err) => json!(err),
                })
            }).collect::<serde_json::Map<_, _>>(),
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &body)
    }

    async fn serve_component(
        self: Arc<Self>,
        req: Request<Incoming>,
        component: Arc<ServedComponent>,
        request_id: &str,
        budget: Budget,
    ) -> Response<HyperOutgoingBody> {
        let declared_length = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > component.limits.max_request_body_bytes) {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                &format!(
                    "the request body may be at most {} bytes",
                    component.limits.max_request_body_bytes
                ),
                request_id,
            );
        }
        let Some(permit) = self.instance_slot(budget).await else {
            return overloaded(request_id);
        };
        self.metrics.in_flight.inc();
        let response = self
            .run_instance(req, &component, request_id, budget, permit)
            .await;
        self.metrics.in_flight.dec();
        response
    }

    pub(crate) fn new_store(
        &self,
        component: &ServedComponent,
        request_id: &str,
        budget: Budget,
    ) -> Store<InstanceState> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr();
        for (key, value) in &component.environment {
            wasi.env(key, value);
        }
        let redis_backend: Arc<dyn RedisBackend> = self.platform.redis.clone();
        let pg_backend: Arc<dyn PgBackend> = self.platform.postgres.clone();
        let state = InstanceState {
            table: InstanceState::new_table(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            http_hooks: {
                let hooks = OutboundHttpHooks::new(
                    Arc::clone(&component.allowed),
                    Arc::clone(&component.name),
                )
                .with_private_destinations(self.private_destinations);
                if component.tenant_service {
                    hooks.with_tenant_service(Arc::clone(&self.tenant))
                } else {
                    hooks
                }
            },
            redis: RedisCtx::new(redis_backend, Arc::clone(&component.allowed), budget),
            pg: PgCtx::new(pg_backend, Arc::clone(&component.allowed), budget),
            variables: component.variables.clone(),
            log: LogCtx::new(Arc::clone(&component.name), request_id.into()),
            websocket: WebSocketCtx {
                hub: Arc::clone(&self.hub),
            },
            limits: InstanceState::store_limits(component.limits.max_memory_bytes),
            cpu_ticks_left: crate::engine::cpu_ticks(component.limits.cpu_timeout),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        crate::engine::arm_cpu_budget(&mut store);
        store
    }

    async fn run_instance(
        &self,
        req: Request<Incoming>,
        component: &Arc<ServedComponent>,
        request_id: &str,
        budget: Budget,
        permit: OwnedSemaphorePermit,
    ) -> Response<HyperOutgoingBody> {
        let started = tokio::time::Instant::now();
        // The whole request, parked time included, within the component's request timeout.
        let deadline = started + component.limits.request_timeout;
        let req = req.map(|body| {
            LimitedBody {
                inner: body,
                remaining: component.limits.max_request_body_bytes,
                limit: component.limits.max_request_body_bytes,
            }
            .boxed_unsync()
        });
        let parkable = component
            .parking
            .clone()
            .zip(Replay::of(&req))
            .filter(|_| self.parking_enabled);
        let Some((indices, replay)) = parkable else {
            return match self
                .call_component(req, component, request_id, budget, permit, None, deadline)
                .await
            {
                Called::Answered(response) => response,
                // Not told it may park, a component that does anyway has not answered.
                Called::Parked(_) => no_response(request_id),
            };
        };
        let mut permit = Some(permit);
        let mut first = Some(req);
        let mut call = ParkingCall {
            wake: Wake::First,
            deadline_ms: None,
            memo: None,
        };
        loop {
            let mark = self.parking.mark();
            let permit = match permit.take() {
                Some(permit) => permit,
                None => match self.instance_slot(budget).await {
                    Some(permit) => permit,
                    None => return overloaded(request_id),
                },
            };
            let req = first.take().unwrap_or_else(|| replay.request());
            let called = self
                .call_component(
                    req,
                    component,
                    request_id,
                    budget,
                    permit,
                    Some((indices.clone(), call)),
                    deadline,
                )
                .await;
            let park = match called {
                Called::Answered(response) => return response,
                Called::Parked(park) => match Park::checked(park) {
                    Ok(park) => park,
                    Err(message) => {
                        tracing::warn!(error = %message, "the component parked with a park it may not");
                        return error_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "component-error",
                            "the component failed to answer",
                            request_id,
                        );
                    }
                },
            };
            let until = instant_of_unix_ms(park.deadline_ms).min(deadline);
            // Parked, the request is not being served by a component: it counts in
            // `nexus_parked_requests`, not in the requests in flight.
            self.metrics.in_flight.dec();
            let woken = self.parking.wait(mark, &park.topics, until).await;
            self.metrics.in_flight.inc();
            if tokio::time::Instant::now() >= deadline {
                record_trap(&self.metrics, &component.name, "timeout");
                tracing::warn!("a parked request reached the request timeout");
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the component did not answer in time",
                    request_id,
                );
            }
            let wake = match woken {
                Woken::Published => Wake::Published,
                Woken::Deadline => Wake::Deadline,
                Woken::Refused => return overloaded(request_id),
            };
            call = ParkingCall {
                wake,
                deadline_ms: Some(park.deadline_ms),
                memo: Some(park.memo),
            };
        }
    }

    /// Calls the component once, on a fresh instance; with `parking`, it is told it may park
    /// (and what woke it), and asked afterwards whether it did.
    #[allow(clippy::too_many_arguments)]
    async fn call_component(
        &self,
        req: Request<GuestBody>,
        component: &Arc<ServedComponent>,
        request_id: &str,
        budget: Budget,
        permit: OwnedSemaphorePermit,
        parking: Option<(ParkableIndices, ParkingCall)>,
        deadline: tokio::time::Instant,
    ) -> Called {
        let labels = ComponentLabels {
            component: component.name.to_string(),
        };
        let mut store = self.new_store(component, request_id, budget);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .and_then(|req| Ok((req, store.data_mut().http().new_response_outparam(sender)?)));
        let (req, out) = match prepared {
            Ok(prepared) => prepared,
            Err(err) => {
                tracing::warn!(error = %err, "cannot pass the request to the guest");
                return Called::Answered(error_response(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "the request cannot be served",
                    request_id,
                ));
            }
        };
        let Some(pre) = component.pre.clone() else {
            return Called::Answered(error_response(
                StatusCode::NOT_FOUND,
                "no-route",
                "no component serves this path",
                request_id,
            ));
        };
        let metrics = Arc::clone(&self.metrics);
        let instantiation_labels = labels.clone();
        let guest = tokio::spawn(
            async move {
                // The instance lives until this task ends, which may be well after the response
                // headers went out (the guest writes its body, or goes on after answering): the
                // slot is given back only then, or more instances would be asked of the pooling
                // allocator than it has, and the excess would fail as traps under load.
                // (`store` is declared after the permit, so it is dropped first.)
                let _permit = permit;
                let mut store = store;
                let instantiated = Instant::now();
                let instance = pre.instance_pre().instantiate_async(&mut store).await?;
                let proxy = Proxy::new(&mut store, &instance)?;
                metrics
                    .instantiation_duration
                    .get_or_create(&instantiation_labels)
                    .observe(instantiated.elapsed().as_secs_f64());
                let Some((indices, call)) = parking else {
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, req, out)
                        .await?;
                    return Ok(None);
                };
                let parkable = indices.load(&mut store, &instance)?;
                let exports = parkable.nexus_platform_parking();
                exports.call_begin(&mut store, &call).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await?;
                exports.call_parked(&mut store).await
            }
            .instrument(crate::telemetry::component_span(&component.name, "handle")),
        );
        let mut deadline = Box::pin(tokio::time::sleep_until(deadline));
        let abort = guest.abort_handle();
        let mut guest = guest;

        // Wait for the response headers, for the guest to end without them, or for the timeout.
        // `biased`: a guest that set its response and then ended must be seen as answering.
        let waited = tokio::select! {
            biased;
            answer = receiver => match answer {
                Ok(Ok(response)) => Waited::Answered(response),
                Ok(Err(code)) => Waited::GuestError(code),
                Err(_) => tokio::select! {
                    // The guest dropped its response-outparam: wait for it to end.
                    joined = &mut guest => Waited::Ended(joined),
                    () = &mut deadline => Waited::TimedOut,
                },
            },
            joined = &mut guest => Waited::Ended(joined),
            () = &mut deadline => Waited::TimedOut,
        };
        match waited {
            Waited::Answered(response) => {
                // The guest may still be writing the body: keep it under the same timeout,
                // and count its trap if it has one.
                let metrics = Arc::clone(&self.metrics);
                let component = Arc::clone(component);
                tokio::spawn(
                    async move {
                        tokio::select! {
                            joined = &mut guest => {
                                record_outcome(&metrics, &component.name, unit(joined));
                            }
                            () = deadline => {
                                abort.abort();
                                record_trap(&metrics, &component.name, "timeout");
                                tracing::warn!("the guest was still writing its response at the timeout");
                            }
                        }
                    }
                    .in_current_span(),
                );
                Called::Answered(response)
            }
            Waited::GuestError(code) => {
                tracing::warn!(error = ?code, "the guest answered with an error code");
                abort.abort();
                Called::Answered(error_response(
                    StatusCode::BAD_GATEWAY,
                    "component-error",
                    "the component failed to answer",
                    request_id,
                ))
            }
            Waited::TimedOut => {
                abort.abort();
                record_trap(&self.metrics, &component.name, "timeout");
                tracing::warn!(
                    timeout_ms = u64::try_from(component.limits.request_timeout.as_millis())
                        .unwrap_or(u64::MAX),
                    "request timed out"
                );
                Called::Answered(error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the component did not answer in time",
                    request_id,
                ))
            }
            Waited::Ended(Ok(Ok(Some(park)))) => Called::Parked(park),
            Waited::Ended(joined) => Called::Answered(
                match record_outcome(&self.metrics, &component.name, unit(joined)) {
                    Some("cpu_deadline") => error_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "cpu-deadline-exceeded",
                        "the component ran past its CPU deadline",
                        request_id,
                    ),
                    Some("memory") => error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "memory-limit-exceeded",
                        "the component ran out of memory",
                        request_id,
                    ),
                    Some(_) => error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "component-trapped",
                        "the component failed",
                        request_id,
                    ),
                    None => no_response(request_id),
                },
            ),
        }
    }
}

/// How waiting for a guest's answer ended.
enum Waited {
    Answered(Response<HyperOutgoingBody>),
    GuestError(wasmtime_wasi_http::p2::bindings::http::types::ErrorCode),
    /// The guest ended without answering: with what it parked on, if it parked.
    Ended(Result<wasmtime::Result<Option<WitPark>>, tokio::task::JoinError>),
    TimedOut,
}

/// What one call of a component gave.
enum Called {
    Answered(Response<HyperOutgoingBody>),
    /// It parked the request (`nexus:platform/parking`), unchecked.
    Parked(WitPark),
}

/// A guest's end, without what it parked on.
fn unit<T>(
    joined: Result<wasmtime::Result<T>, tokio::task::JoinError>,
) -> Result<wasmtime::Result<()>, tokio::task::JoinError> {
    joined.map(|ended| ended.map(|_| ()))
}

/// What the guest sees of a request body.
type GuestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// A parkable request, kept to be replayed on each call: only one without a body is.
struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Replay {
    fn of(req: &Request<GuestBody>) -> Option<Replay> {
        let bodiless = matches!(*req.method(), http::Method::GET | http::Method::HEAD)
            && req.body().is_end_stream();
        bodiless.then(|| Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    fn request(&self) -> Request<GuestBody> {
        let mut req = Request::new(
            http_body_util::Empty::new()
                .map_err(|never: Infallible| match never {})
                .boxed_unsync(),
        );
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// The instant at `unix_ms` (milliseconds since the Unix epoch), on tokio's clock.
fn instant_of_unix_ms(unix_ms: u64) -> tokio::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    tokio::time::Instant::now() + Duration::from_millis(unix_ms.saturating_sub(now_ms))
}

fn overloaded(request_id: &str) -> Response<HyperOutgoingBody> {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "the host is serving as many requests as it can; retry shortly",
        request_id,
    );
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn no_response(request_id: &str) -> Response<HyperOutgoingBody> {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "no-response",
        "the component ended without answering",
        request_id,
    )
}

/// Records how a guest ended; returns the trap reason, if it trapped.
fn record_outcome(
    metrics: &Metrics,
    component: &str,
    joined: Result<wasmtime::Result<()>, tokio::task::JoinError>,
) -> Option<&'static str> {
    let reason = match joined {
        Ok(Ok(())) => return None,
        Ok(Err(err)) => {
            let reason = trap_reason(&err);
            tracing::warn!(
                component,
                reason,
                error = format!("{err:?}"),
                "the guest trapped"
            );
            reason
        }
        Err(join) if join.is_cancelled() => return None,
        Err(join) => {
            tracing::error!(component, error = %join, "the guest task panicked");
            "trap"
        }
    };
    record_trap(metrics, component, reason);
    Some(reason)
}

fn record_trap(metrics: &Metrics, component: &str, reason: &'static str) {
    metrics
        .traps
        .get_or_create(&TrapLabels {
            component: component.to_owned(),
            reason,
        })
        .inc();
}

pub(crate) fn trap_reason(err: &wasmtime::Error) -> &'static str {
    if err.downcast_ref::<CpuDeadlineExceeded>().is_some() {
        return "cpu_deadline";
    }
    let text = format!("{err:?}");
    if text.contains("growing memory") || text.contains("memory allocation") {
        "memory"
    } else {
        "trap"
    }
}

/// The request id: the client's, if it is short and printable; otherwise a new UUID.
fn request_id<B>(req: &Request<B>) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Sets the headers Spin gives a component about its route, after removing any a client sent.
fn set_spin_headers<B>(req: &mut Request<B>, route: &RouteMatch, client: SocketAddr) {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let headers = req.headers_mut();
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    let mut set = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    };
    set("spin-full-url", &format!("http://{host}{path_and_query}"));
    set("spin-path-info", &route.path_info);
    set("spin-matched-route", &route.raw_route);
    set("spin-raw-component-route", &route.raw_route);
    set("spin-component-route", &route.component_route);
    set("spin-base-path", "/");
    set("spin-client-addr", &client.to_string());
    for (name, value) in &route.params {
        set(&format!("spin-path-match-{name}"), value);
    }
}

/// A request body that fails once it passes `limit` bytes (for bodies without a length).
struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                if len > self.remaining {
                    return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                        Some(self.limit),
                    ))));
                }
                self.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub(crate) fn full_body(bytes: impl Into<Bytes>) -> HyperOutgoingBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn text_response(status: StatusCode, text: &str) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(full_body(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(full_body(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error the host answers itself: a status, a stable code, and no internal detail.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<HyperOutgoingBody> {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message, "request_id": request_id } }),
    )
}

/// Accepts connections until `shutdown` resolves, then lets in-flight requests finish (for at
/// most the grace period).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    settings: &ServeSettings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, client) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let service = hyper::service::service_fn(move |req| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(app.handle(req, client).await) }
                });
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        sockets = app.hub.open_sockets(),
        "shutting down: no new connections; closing WebSockets (1012) and waiting for in-flight requests"
    );
    app.drain();
    let drained = async {
        graceful.shutdown().await;
        app.hub.all_ended().await;
    };
    tokio::select! {
        () = drained => tracing::info!("all connections closed"),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!(grace_s = settings.shutdown_grace.as_secs(), "shutdown grace period over; dropping the remaining connections");
        }
    }
    Ok(())
}
