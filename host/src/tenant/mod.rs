//! Tenant components: a tenant's own bots and transforms (the `nexus:tenant` worlds), run in a
//! sandbox with limits of their own, swapped live.
//!
//! nexus's components reach them through a service the host serves in process, at
//! `http://tenant-components.nexus.internal` (as Spin's `*.spin.internal` service chaining):
//! only a component whose `allowed_outbound_hosts` names that host exactly may call it (see
//! [`service`]). Keeping the call on outbound HTTP keeps those components portable: under Spin
//! the host does not exist, and a channel bound to a tenant component falls back to routing.
//!
//! Each call is a fresh instance of the component's active version, under the component's own
//! limits: CPU time (epoch interruption), memory (`StoreLimits`), a wall-clock timeout, and
//! outbound HTTP only to the hosts the tenant granted it. A call that traps, loops, runs out of
//! memory or reaches for a forbidden host fails alone; it is counted in the metrics, and after
//! [`FAILURES_BEFORE_DISABLE`] such failures in a row the component is disabled (its bot's
//! conversations go to routing, its transforms are skipped) until the tenant enables it again.
//!
//! Hot swap: PostgreSQL holds the versions and which one is active, with a revision that every
//! change bumps. A caller reads the revision with the binding and passes it; a host whose cached
//! revision is older loads the component again (compiled code is cached by its SHA-256), swaps
//! its cache entry, and serves the call. Calls already running keep their `Arc` to the old
//! version and finish on it. Activations are announced through Redis ([`announce`]) so that
//! every host compiles the new version before the first call needs it.

pub mod announce;
pub mod service;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::allowed_hosts::AllowedHosts;
use crate::bindings::tenant::bot::nexus::tenant::{key_value, log, types};
use crate::bindings::tenant::bot::{BotPre, nexus::tenant::types::Action};
use crate::bindings::tenant::transform::TransformPre;
use crate::engine::InstanceState;
use crate::metrics::{Metrics, TenantCallLabels};
use crate::outbound_http::{OutboundHttpHooks, PrivateDestinations};
use crate::postgres::{PgBackend, PgClient};
use crate::redis::RedisBackend;
use state::{
    CallIdentity, KeyValueCapability, KeyValueCtx, TenantLog, TenantLogCapability, TenantState,
};

/// The host name of the in-process service (see [`service`]).
pub const SERVICE_HOST: &str = "tenant-components.nexus.internal";
pub use nexus_guest::tenant_contract::MAX_COMPONENT_BYTES;
/// Failures in a row (traps, limits, forbidden hosts) after which a component is disabled.
pub const FAILURES_BEFORE_DISABLE: i32 = 5;
/// How long a call waits for an instance slot before it fails as `unavailable`.
const SLOT_WAIT: Duration = Duration::from_secs(2);
/// What a call's stdout and stderr keep (a panic's message), for the log.
const CAPTURED_OUTPUT_BYTES: usize = 4096;
/// Compiled components kept in memory, by SHA-256 (the on-disk cache keeps more).
const MAX_COMPILED: usize = 64;

/// What a tenant component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bot,
    Transform,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "bot" => Some(Kind::Bot),
            "transform" => Some(Kind::Transform),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bot => "bot",
            Kind::Transform => "transform",
        }
    }

    fn export(self) -> &'static str {
        match self {
            Kind::Bot => "nexus:tenant/bot-turn@0.1.0",
            Kind::Transform => "nexus:tenant/message-transform@0.1.0",
        }
    }
}

/// Why a call produced no answer of the component's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// No such component, or it has no active version.
    NotFound,
    /// The component is disabled.
    Disabled,
    /// The host could not run it (no instance slot, the database): not the component's fault.
    Unavailable,
    Trap,
    CpuDeadline,
    Memory,
    Timeout,
    /// It tried to reach a host it was not granted, and failed.
    ForbiddenHost,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::NotFound => "not_found",
            FailureReason::Disabled => "disabled",
            FailureReason::Unavailable => "unavailable",
            FailureReason::Trap => "trap",
            FailureReason::CpuDeadline => "cpu_deadline",
            FailureReason::Memory => "memory",
            FailureReason::Timeout => "timeout",
            FailureReason::ForbiddenHost => "forbidden_host",
        }
    }

    /// Whether it is the component's own doing, and so counts towards disabling it.
    pub fn counts_against_component(self) -> bool {
        matches!(
            self,
            FailureReason::Trap
                | FailureReason::CpuDeadline
                | FailureReason::Memory
                | FailureReason::Timeout
                | FailureReason::ForbiddenHost
        )
    }
}

/// A call that produced no answer of the component's.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct CallFailure {
    pub reason: FailureReason,
    pub message: String,
}

impl CallFailure {
    fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    fn unavailable(err: impl std::fmt::Display) -> Self {
        Self::new(FailureReason::Unavailable, err.to_string())
    }
}

/// Which component a call is for, and the revision its caller saw.
#[derive(Debug, Clone)]
pub struct Target {
    pub tenant_id: i64,
    pub name: String,
    pub revision: i64,
}

/// A component's limits, as provisioned.
#[derive(Debug, Clone, Copy)]
pub struct ComponentLimits {
    pub cpu_time: Duration,
    pub timeout: Duration,
    pub memory_bytes: usize,
}

enum Pre {
    Bot(BotPre<TenantState>),
    Transform(TransformPre<TenantState>),
}

/// One component at one revision, ready to instantiate.
pub struct Loaded {
    pub revision: i64,
    pub version: Option<i32>,
    pub enabled: bool,
    kind: Kind,
    name: Arc<str>,
    pre: Option<Pre>,
    limits: ComponentLimits,
    allowed: Arc<AllowedHosts>,
    /// The last call on this host failed: the next good one resets the count in PostgreSQL.
    failing: AtomicBool,
}

/// What an accepted upload is.
#[derive(Debug, Clone)]
pub struct Validated {
    pub sha256: String,
    pub imports: Vec<String>,
    pub size: usize,
}

/// Host-wide settings of tenant components.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    /// Tenant calls that may run at once (each holds one instance slot of the engine's pool).
    pub max_concurrent_calls: usize,
    /// The engine's memory slot: no component's memory limit may exceed it.
    pub max_memory_bytes: usize,
    /// Prefixes the tenant key-value store's Redis keys (the application's `redis_key_prefix`).
    pub redis_key_prefix: String,
    /// The operator's `allow_private_outbound`: without it, a tenant component reaches no
    /// non-public address, whatever hosts the tenant granted it (those grants are the
    /// tenant's, not the operator's).
    pub allow_private_outbound: bool,
    /// The Redis address the key-value store uses.
    pub redis_address: String,
    /// The platform database's address.
    pub database: String,
}

/// The tenant-component runtime of one host.
pub struct TenantComponents {
    engine: Engine,
    linker: Linker<TenantState>,
    postgres: Arc<dyn PgBackend>,
    redis: Arc<dyn RedisBackend>,
    redis_address: Arc<str>,
    metrics: Arc<Metrics>,
    settings: TenantSettings,
    loaded: Mutex<HashMap<(i64, String), Arc<Loaded>>>,
    compiled: Mutex<HashMap<String, Component>>,
    /// One load at a time: a swap compiles once, however many calls arrive for it.
    loading: tokio::sync::Mutex<()>,
    slots: Arc<Semaphore>,
}

impl TenantComponents {
    pub fn new(
        engine: Engine,
        postgres: Arc<dyn PgBackend>,
        redis: Arc<dyn RedisBackend>,
        metrics: Arc<Metrics>,
        settings: TenantSettings,
    ) -> anyhow::Result<TenantComponents> {
        Ok(TenantComponents {
            linker: tenant_linker(&engine)?,
            engine,
            postgres,
            redis,
            redis_address: settings.redis_address.as_str().into(),
            metrics,
            slots: Arc::new(Semaphore::new(settings.max_concurrent_calls)),
            settings,
            loaded: Mutex::new(HashMap::new()),
            compiled: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
        })
    }

    /// Checks an upload: a component, no bigger than [`MAX_COMPONENT_BYTES`], that imports
    /// only what tenant components may, and exports `kind`'s interface.
    pub async fn validate(&self, kind: Kind, wasm: Vec<u8>) -> Result<Validated, String> {
        if wasm.len() > MAX_COMPONENT_BYTES {
            return Err(format!(
                "the component is {} bytes; at most {MAX_COMPONENT_BYTES} are accepted",
                wasm.len()
            ));
        }
        let sha256 = hex::encode(Sha256::digest(&wasm));
        let size = wasm.len();
        let component = self.compile(&sha256, wasm).await?;
        let imports = imports_of(&self.engine, &component)?;
        self.prepare(kind, &component)?;
        Ok(Validated {
            sha256,
            imports,
            size,
        })
    }

    /// Compiles `wasm` (or takes it from the cache) off the async workers.
    async fn compile(&self, sha256: &str, wasm: Vec<u8>) -> Result<Component, String> {
        if let Some(component) = self.compiled_lock().get(sha256) {
            return Ok(component.clone());
        }
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &wasm))
            .await
            .map_err(|err| format!("the compiler failed: {err}"))?
            .map_err(|err| {
                // The whole chain for the operator; for the uploader, the parser's first line
                // (its multi-line dumps of expected bytes say nothing more).
                tracing::info!(error = %format!("{err:#}"), "an upload does not compile");
                let cause = err.root_cause().to_string();
                let reason = cause
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .split(" - expected")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                format!("this is not a WebAssembly component nexus can run: {reason}")
            })?;
        let mut compiled = self.compiled_lock();
        if compiled.len() >= MAX_COMPILED {
            compiled.clear();
        }
        compiled.insert(sha256.to_owned(), component.clone());
        Ok(component)
    }

    fn compiled_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        self.compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn loaded_lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), Arc<Loaded>>> {
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn prepare(&self, kind: Kind, component: &Component) -> Result<Pre, String> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|err| format!("the component cannot be linked: {err:#}"))?;
        let missing = |err: wasmtime::Error| {
            format!(
                "the component does not export {} as a {} must: {err:#}",
                kind.export(),
                kind.as_str()
            )
        };
        Ok(match kind {
            Kind::Bot => Pre::Bot(BotPre::new(pre).map_err(missing)?),
            Kind::Transform => Pre::Transform(TransformPre::new(pre).map_err(missing)?),
        })
    }

    /// The component `target` names, at its caller's revision or a newer one.
    async fn loaded(&self, target: &Target) -> Result<Arc<Loaded>, CallFailure> {
        let key = (target.tenant_id, target.name.clone());
        let fresh = |cached: Option<&Arc<Loaded>>| {
            cached
                .filter(|loaded| loaded.revision >= target.revision)
                .cloned()
        };
        if let Some(loaded) = fresh(self.loaded_lock().get(&key)) {
            return Ok(loaded);
        }
        let _loading = self.loading.lock().await;
        if let Some(loaded) = fresh(self.loaded_lock().get(&key)) {
            return Ok(loaded);
        }
        let loaded = Arc::new(self.load(target.tenant_id, &target.name).await?);
        self.loaded_lock().insert(key, Arc::clone(&loaded));
        tracing::info!(
            tenant = target.tenant_id,
            component = target.name,
            revision = loaded.revision,
            version = loaded.version,
            enabled = loaded.enabled,
            "tenant component loaded"
        );
        Ok(loaded)
    }

    /// Loads a component again if `revision` is newer than the one cached (for announcements).
    pub async fn refresh(&self, target: &Target) -> Result<(), CallFailure> {
        self.loaded(target).await.map(|_| ())
    }

    async fn client(&self) -> Result<PgClient, CallFailure> {
        self.postgres
            .connect(&self.settings.database, crate::budget::Budget::Host)
            .await
            .map_err(CallFailure::unavailable)
    }

    async fn load(&self, tenant_id: i64, name: &str) -> Result<Loaded, CallFailure> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT c.id, c.kind, c.revision, c.active_version, c.allowed_hosts, c.cpu_time_ms, \
                        c.timeout_ms, c.memory_mb, c.enabled, v.sha256 \
                 FROM tenant_components c LEFT JOIN tenant_component_versions v \
                   ON v.component_id = c.id AND v.version = c.active_version \
                 WHERE c.tenant_id = $1 AND c.name = $2",
                &[&tenant_id, &name],
            )
            .await
            .map_err(CallFailure::unavailable)?
            .ok_or_else(|| CallFailure::new(FailureReason::NotFound, "no such component"))?;
        let id: uuid::Uuid = row.get(0);
        let kind = Kind::parse(row.get::<_, &str>(1))
            .ok_or_else(|| CallFailure::unavailable("a component of an unknown kind"))?;
        let version: Option<i32> = row.get(3);
        let hosts: Vec<String> = row.get(4);
        let millis = |index: usize| {
            Duration::from_millis(u64::from(row.get::<_, i32>(index).unsigned_abs()))
        };
        let memory_mb = usize::try_from(row.get::<_, i32>(7)).unwrap_or(1).max(1);
        let limits = ComponentLimits {
            cpu_time: millis(5),
            timeout: millis(6),
            memory_bytes: (memory_mb << 20).min(self.settings.max_memory_bytes),
        };
        let allowed = AllowedHosts::parse(&hosts).map_err(|err| {
            CallFailure::unavailable(format!("the component's allowed hosts: {err}"))
        })?;
        let sha256: Option<String> = row.get(9);
        let pre = match (version, sha256) {
            (Some(version), Some(sha256)) => {
                let cached = self.compiled_lock().get(&sha256).cloned();
                let component = match cached {
                    Some(component) => component,
                    None => {
                        let wasm: Vec<u8> = client
                            .query_one(
                                "SELECT wasm FROM tenant_component_versions \
                                 WHERE component_id = $1 AND version = $2",
                                &[&id, &version],
                            )
                            .await
                            .map_err(CallFailure::unavailable)?
                            .get(0);
                        drop(client);
                        self.compile(&sha256, wasm)
                            .await
                            .map_err(CallFailure::unavailable)?
                    }
                };
                Some(
                    self.prepare(kind, &component)
                        .map_err(CallFailure::unavailable)?,
                )
            }
            _ => None,
        };
        Ok(Loaded {
            revision: row.get(2),
            version,
            enabled: row.get(8),
            kind,
            name: name.into(),
            pre,
            limits,
            allowed: Arc::new(allowed),
            failing: AtomicBool::new(false),
        })
    }

    /// Takes a bot's turn: its actions, or the reason it gave for taking none.
    pub async fn bot_turn(
        &self,
        target: &Target,
        turn: &types::Turn,
    ) -> Result<Result<Vec<Action>, String>, CallFailure> {
        let (loaded, mut call) = self.start(target, Kind::Bot).await?;
        let Some(Pre::Bot(pre)) = &loaded.pre else {
            return Err(CallFailure::new(FailureReason::NotFound, "not a bot"));
        };
        let store = &mut call.store;
        let outcome = tokio::time::timeout(loaded.limits.timeout, async {
            let bot = pre.instantiate_async(&mut *store).await?;
            bot.nexus_tenant_bot_turn()
                .call_handle(&mut *store, turn)
                .await
        })
        .await;
        self.finish(target, &loaded, call, outcome).await
    }

    /// Runs a transform: the message's text as it should be, or why it is refused.
    pub async fn transform(
        &self,
        target: &Target,
        message: &types::Message,
    ) -> Result<Result<String, String>, CallFailure> {
        let (loaded, mut call) = self.start(target, Kind::Transform).await?;
        let Some(Pre::Transform(pre)) = &loaded.pre else {
            return Err(CallFailure::new(FailureReason::NotFound, "not a transform"));
        };
        let store = &mut call.store;
        let outcome = tokio::time::timeout(loaded.limits.timeout, async {
            let transform = pre.instantiate_async(&mut *store).await?;
            transform
                .nexus_tenant_message_transform()
                .call_apply(&mut *store, message)
                .await
        })
        .await;
        self.finish(target, &loaded, call, outcome).await
    }

    /// The component, a slot and a store for one call.
    async fn start(&self, target: &Target, kind: Kind) -> Result<(Arc<Loaded>, Call), CallFailure> {
        let loaded = self.loaded(target).await.inspect_err(|failure| {
            self.count(kind, failure.reason.as_str());
        })?;
        let refuse = |reason, message: &str| {
            self.count(kind, FailureReason::as_str(reason));
            Err(CallFailure::new(reason, message))
        };
        if loaded.kind != kind {
            return refuse(
                FailureReason::NotFound,
                &format!("the component is not a {}", kind.as_str()),
            );
        }
        if !loaded.enabled {
            return refuse(FailureReason::Disabled, "the component is disabled");
        }
        if loaded.pre.is_none() {
            return refuse(
                FailureReason::NotFound,
                "the component has no active version",
            );
        }
        let Ok(Ok(slot)) =
            tokio::time::timeout(SLOT_WAIT, Arc::clone(&self.slots).acquire_owned()).await
        else {
            return refuse(
                FailureReason::Unavailable,
                "every tenant-component slot is busy",
            );
        };
        let identity = CallIdentity {
            tenant_id: target.tenant_id,
            component: Arc::clone(&loaded.name),
            version: loaded.version.unwrap_or_default(),
        };
        let output = MemoryOutputPipe::new(CAPTURED_OUTPUT_BYTES);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let hooks = OutboundHttpHooks::new(
            Arc::clone(&loaded.allowed),
            format!("tenant {}: {}", target.tenant_id, target.name).into(),
        )
        .with_private_destinations(PrivateDestinations::for_tenants(
            self.settings.allow_private_outbound,
        ))
        .recording_refusals();
        let refused = hooks.refusals();
        let state = TenantState {
            table: InstanceState::new_table(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            http_hooks: hooks,
            key_value: KeyValueCtx::new(
                Arc::clone(&self.redis),
                Arc::clone(&self.redis_address),
                &self.settings.redis_key_prefix,
                target.tenant_id,
            ),
            log: TenantLog::new(identity),
            limits: InstanceState::store_limits(loaded.limits.memory_bytes),
            cpu_ticks_left: crate::engine::cpu_ticks(loaded.limits.cpu_time),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        crate::engine::arm_cpu_budget(&mut store);
        Ok((
            loaded,
            Call {
                store,
                output,
                refused,
                _slot: slot,
            },
        ))
    }

    /// Turns how a call ended into its result, and counts it.
    async fn finish<T>(
        &self,
        target: &Target,
        loaded: &Loaded,
        call: Call,
        outcome: Result<wasmtime::Result<Result<T, String>>, tokio::time::error::Elapsed>,
    ) -> Result<Result<T, String>, CallFailure> {
        let refused = call.refused();
        let failure = match outcome {
            Ok(Ok(Ok(answer))) => Ok(Ok(answer)),
            Ok(Ok(Err(reason))) if !refused.is_empty() => Err(CallFailure::new(
                FailureReason::ForbiddenHost,
                format!(
                    "it tried to reach {}, not granted or not a public address ({reason})",
                    refused.join(", ")
                ),
            )),
            Ok(Ok(Err(reason))) => Ok(Err(reason)),
            Ok(Err(trap)) => {
                let reason = match crate::server::trap_reason(&trap) {
                    "cpu_deadline" => FailureReason::CpuDeadline,
                    "memory" => FailureReason::Memory,
                    _ => FailureReason::Trap,
                };
                let detail = match reason {
                    FailureReason::CpuDeadline => format!(
                        "it ran past its CPU time of {} ms",
                        loaded.limits.cpu_time.as_millis()
                    ),
                    FailureReason::Memory => format!(
                        "it ran out of its {} MiB of memory",
                        loaded.limits.memory_bytes >> 20
                    ),
                    _ => "it trapped".to_owned(),
                };
                let output = String::from_utf8_lossy(&call.output.contents()).into_owned();
                tracing::warn!(
                    tenant = target.tenant_id,
                    component = target.name,
                    version = loaded.version,
                    reason = reason.as_str(),
                    output = output.trim(),
                    error = format!("{trap:#}"),
                    "a tenant component call failed"
                );
                Err(CallFailure::new(reason, detail))
            }
            Err(_) => Err(CallFailure::new(
                FailureReason::Timeout,
                format!(
                    "it did not finish within {} ms",
                    loaded.limits.timeout.as_millis()
                ),
            )),
        };
        drop(call);
        match &failure {
            Ok(answer) => {
                self.count(loaded.kind, if answer.is_ok() { "ok" } else { "declined" });
                if loaded.failing.swap(false, Ordering::Relaxed) {
                    self.reset_failures(target).await;
                }
            }
            Err(failure) => {
                self.count(loaded.kind, failure.reason.as_str());
                if failure.reason.counts_against_component() {
                    loaded.failing.store(true, Ordering::Relaxed);
                    self.record_failure(target, failure).await;
                }
            }
        }
        failure
    }

    /// Counted by kind and outcome only: a label per tenant or per tenant's component would
    /// grow without bound (which tenant's component failed is in the logs and the audit).
    fn count(&self, kind: Kind, outcome: &'static str) {
        self.metrics
            .tenant_calls
            .get_or_create(&TenantCallLabels {
                kind: kind.as_str(),
                outcome,
            })
            .inc();
    }

    /// Counts a failure in PostgreSQL; the one that reaches [`FAILURES_BEFORE_DISABLE`]
    /// disables the component (and bumps its revision, so every host sees it).
    async fn record_failure(&self, target: &Target, failure: &CallFailure) {
        let recorded = async {
            let reason = format!(
                "disabled after {FAILURES_BEFORE_DISABLE} failed calls in a row; the last: {}",
                failure.message
            );
            // Counted, and audited when this failure disables it, in one statement. The
            // connection is given back before the reload below, which needs one of its own
            // (the embedded PostgreSQL has a single connection).
            let disabled = self
                .client()
                .await
                .map_err(|f| anyhow::anyhow!(f.message))?
                .query_opt(
                    "WITH counted AS ( \
                       UPDATE tenant_components SET consecutive_failures = consecutive_failures + 1, \
                         enabled = enabled AND consecutive_failures + 1 < $3, \
                         disabled_reason = CASE WHEN enabled AND consecutive_failures + 1 >= $3 THEN $4 ELSE disabled_reason END, \
                         revision = CASE WHEN enabled AND consecutive_failures + 1 >= $3 THEN revision + 1 ELSE revision END, \
                         updated_at = now() \
                       WHERE tenant_id = $1 AND name = $2 \
                       RETURNING (enabled = false AND disabled_reason = $4 AND consecutive_failures = $3) AS disabled_now, revision), \
                     audited AS ( \
                       INSERT INTO provisioning_audit (tenant_id, ccid, actor, action, entity, entity_id, detail) \
                       SELECT t.id, t.ccid, 'nexus', 'disable', 'component', $2, jsonb_build_object('reason', $4::text) \
                       FROM counted JOIN tenants t ON t.id = $1 WHERE counted.disabled_now) \
                     SELECT disabled_now, revision FROM counted",
                    &[&target.tenant_id, &target.name, &FAILURES_BEFORE_DISABLE, &reason],
                )
                .await
                .context("count the failure")?;
            if let Some(row) = disabled
                && row.get::<_, bool>(0)
            {
                let revision: i64 = row.get(1);
                tracing::warn!(
                    tenant = target.tenant_id,
                    component = target.name,
                    reason,
                    "tenant component disabled"
                );
                self.metrics.tenant_components_disabled.inc();
                // This host sees it at once; the others when their callers pass the revision.
                let _ = self
                    .refresh(&Target {
                        revision,
                        ..target.clone()
                    })
                    .await;
            }
            anyhow::Ok(())
        };
        if let Err(err) = recorded.await {
            tracing::warn!(
                tenant = target.tenant_id,
                component = target.name,
                error = format!("{err:#}"),
                "cannot count a tenant component's failure"
            );
        }
    }

    async fn reset_failures(&self, target: &Target) {
        let reset = async {
            let client = self
                .client()
                .await
                .map_err(|f| anyhow::anyhow!(f.message))?;
            client
                .execute(
                    "UPDATE tenant_components SET consecutive_failures = 0 \
                     WHERE tenant_id = $1 AND name = $2 AND consecutive_failures > 0",
                    &[&target.tenant_id, &target.name],
                )
                .await?;
            anyhow::Ok(())
        };
        if let Err(err) = reset.await {
            tracing::warn!(
                tenant = target.tenant_id,
                component = target.name,
                error = format!("{err:#}"),
                "cannot reset a tenant component's failures"
            );
        }
    }
}

/// One call's store, and what it leaves behind.
struct Call {
    store: Store<TenantState>,
    output: MemoryOutputPipe,
    refused: Arc<Mutex<Vec<String>>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Call {
    fn refused(&self) -> Vec<String> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The imports of `component`, refused if any is not one tenant components may have.
fn imports_of(engine: &Engine, component: &Component) -> Result<Vec<String>, String> {
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    nexus_guest::tenant_contract::check_imports(imports.iter().map(String::as_str))?;
    Ok(imports)
}

/// The linker of tenant components: WASI (no files, environment or sockets are given to a
/// store), outbound HTTP, and nexus:tenant's log and key-value.
fn tenant_linker(engine: &Engine) -> anyhow::Result<Linker<TenantState>> {
    let mut linker: Linker<TenantState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    key_value::add_to_linker::<_, KeyValueCapability>(&mut linker, |state| &mut state.key_value)?;
    log::add_to_linker::<_, TenantLogCapability>(&mut linker, |state| &mut state.log)?;
    Ok(linker)
}
