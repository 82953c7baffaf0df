//! The wasmtime engine, the linker with every capability, and the per-instance store state.
//!
//! One engine serves every component: the component model, async, epoch interruption for CPU
//! deadlines, the pooling allocator (instances are carved out of pre-reserved slots, so a new
//! instance per request is cheap), and an on-disk cache of compiled code, so that a restart
//! does not compile unchanged components again.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use thiserror::Error;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig, StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings;
use crate::log::{LogCapability, LogCtx};
use crate::outbound_http::OutboundHttpHooks;
use crate::postgres::{PgCapability, PgCtx, PgCtxView};
use crate::redis::{RedisCapability, RedisCtx, RedisCtxView};
use crate::variables::{ComponentVariables, VariablesCapability};
use crate::websocket::{WebSocketCapability, WebSocketCtx};

/// How often the epoch advances; the granularity of CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Bytes of each pooled memory kept resident between instances (see `build_engine`).
pub const KEEP_RESIDENT_BYTES: usize = 1 << 20;
/// The most resources (streams, connections, ...) one instance may hold.
pub const MAX_RESOURCES_PER_INSTANCE: usize = 4096;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instances that may exist at once: the pooling allocator reserves this many slots.
    pub max_instances: u32,
    /// The largest linear memory any instance may have, in bytes (a slot's size).
    pub max_memory_bytes: usize,
    /// Where compiled code is cached; `None` disables the cache.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// A guest ran past its CPU deadline.
#[derive(Debug, Error)]
#[error("the guest ran past its CPU deadline")]
pub struct CpuDeadlineExceeded;

/// Builds the engine.
pub fn build_engine(settings: &EngineSettings) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(settings.max_instances)
        .total_core_instances(settings.max_instances.saturating_mul(4))
        .total_memories(settings.max_instances.saturating_mul(2))
        .total_tables(settings.max_instances.saturating_mul(2))
        .total_stacks(settings.max_instances)
        .max_memory_size(settings.max_memory_bytes)
        // Reset the first pages of a slot in place instead of returning them to the kernel:
        // every request reuses a slot, and madvise plus the page faults that follow (with
        // TLB shootdowns across threads) cost more than zeroing what a small guest touched.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES / 16)
        // Where the kernel can say which of those pages a guest dirtied (PAGEMAP_SCAN, Linux
        // 6.7 and later), only those are reset: the memset of the whole resident megabyte was
        // the host's largest single cost per request (bench/chat.sh under perf).
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    if let Some(dir) = &settings.cache_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the compile cache {}", dir.display()))?;
        // wasmtime's cache takes only absolute paths.
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot resolve the compile cache {}", dir.display()))?;
        let mut cache_config = CacheConfig::new();
        cache_config.with_directory(dir);
        config.cache(Some(
            Cache::new(cache_config)
                .map_err(anyhow::Error::from)
                .context("cannot open the compile cache")?,
        ));
    }
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("cannot configure wasmtime")
}

/// Advances the engine's epoch every [`EPOCH_TICK`] for as long as the engine lives.
///
/// On a thread of its own, not a tokio task: a guest that never calls the host keeps its
/// worker thread busy until the epoch moves, and if the ticker needed a worker (or the tokio
/// timer, which idle workers may not be driving) the epoch would never move at all.
pub fn spawn_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("nexus-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch thread")?;
    Ok(())
}

/// The CPU budget `cpu_timeout` as a number of epoch ticks.
///
/// The epoch callback runs once for each tick during which the guest ran wasm code (and once when
/// it returns from a host call during which the epoch moved), so counting the callbacks charges
/// the guest for the time it computes, rounded up to ticks, and not for the time it waits on the
/// host: a long-poll that sleeps for 25 s in `wasi:clocks` spends a few ticks, not 25 s.
pub fn cpu_ticks(cpu_timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_millis().max(1);
    u64::try_from(cpu_timeout.as_millis().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A store's CPU budget, counted down by [`arm_cpu_budget`].
pub trait CpuBudget {
    /// How many more epoch ticks the guest may run for.
    fn cpu_ticks_left(&mut self) -> &mut u64;
}

/// Makes `store` trap with [`CpuDeadlineExceeded`] once its budget ([`cpu_ticks`]) is spent.
///
/// The deadline is checked at every epoch tick, and the guest yields to the executor in between,
/// so that a guest that never calls the host cannot hold a worker thread for its whole budget.
pub fn arm_cpu_budget<T: CpuBudget + 'static>(store: &mut wasmtime::Store<T>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let ticks_left = ctx.data_mut().cpu_ticks_left();
        if *ticks_left == 0 {
            return Err(CpuDeadlineExceeded.into());
        }
        *ticks_left -= 1;
        Ok(wasmtime::UpdateDeadline::Yield(1))
    });
}

/// A linker with WASI, wasi:http and every nexus capability.
pub fn build_linker(engine: &Engine) -> anyhow::Result<Linker<InstanceState>> {
    let mut linker: Linker<InstanceState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    bindings::fermyon::spin::redis::add_to_linker::<_, RedisCapability>(&mut linker, |state| {
        RedisCtxView {
            ctx: &mut state.redis,
            table: &mut state.table,
        }
    })?;
    bindings::spin::postgres::postgres::add_to_linker::<_, PgCapability>(&mut linker, |state| {
        PgCtxView {
            ctx: &mut state.pg,
            table: &mut state.table,
        }
    })?;
    bindings::fermyon::spin::variables::add_to_linker::<_, VariablesCapability>(
        &mut linker,
        |state| &state.variables,
    )?;
    bindings::nexus::platform::log::add_to_linker::<_, LogCapability>(&mut linker, |state| {
        &mut state.log
    })?;
    bindings::websocket::nexus::websocket::types::add_to_linker::<_, WebSocketCapability>(
        &mut linker,
        |state| &mut state.websocket,
    )?;
    bindings::websocket::nexus::websocket::connections::add_to_linker::<_, WebSocketCapability>(
        &mut linker,
        |state| &mut state.websocket,
    )?;
    Ok(linker)
}

/// Compiles (or loads from the cache) the component at `path`.
pub fn load_component(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    Component::from_file(engine, path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot load the component {}", path.display()))
}

/// The state of one instance: every capability's context, and the limits it runs under.
pub struct InstanceState {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub http_hooks: OutboundHttpHooks,
    pub redis: RedisCtx,
    pub pg: PgCtx,
    pub variables: ComponentVariables,
    pub log: LogCtx,
    pub websocket: WebSocketCtx,
    pub limits: StoreLimits,
    /// How many more epoch ticks the guest may run for (see [`cpu_ticks`]).
    pub cpu_ticks_left: u64,
}

impl InstanceState {
    /// The store limits for an instance: memory as configured, and no more than a component
    /// needs of everything else.
    pub fn store_limits(max_memory_bytes: usize) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(max_memory_bytes)
            .instances(64)
            .memories(64)
            .tables(64)
            .trap_on_grow_failure(true)
            .build()
    }

    pub fn new_table() -> ResourceTable {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES_PER_INSTANCE);
        table
    }
}

impl CpuBudget for InstanceState {
    fn cpu_ticks_left(&mut self) -> &mut u64 {
        &mut self.cpu_ticks_left
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}
