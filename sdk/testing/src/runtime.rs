//! What every call shares: one engine (with an epoch ticker for CPU budgets), one linker with
//! every fake, a store per call under [`Limits`], and a runtime for the blocking API.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::{platform, tenant};
use crate::http::FakeHttp;
use crate::key_value::KeyValueCapability;
use crate::log::LogCapability;
use crate::postgres::{PgCapability, PgView};
use crate::redis::{RedisCapability, RedisView};
use crate::variables::VariablesCapability;
use crate::{Fakes, lock};

/// How often the epoch advances: the granularity of CPU budgets (as the host's).
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// What a call's stdout and stderr keep.
const CAPTURED_OUTPUT_BYTES: usize = 64 * 1024;

/// The limits of one call. The defaults are a tenant component's defaults in nexus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The CPU time the guest may spend computing (not waiting on a host call).
    pub cpu_time: Duration,
    /// Its linear memory.
    pub memory_bytes: usize,
    /// The whole call, waits included.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_time: Duration::from_millis(100),
            memory_bytes: 32 << 20,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a call gave no answer of the component's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// It trapped (a panic, an unreachable, a host call it was not allowed): the message, and
    /// what it printed.
    Trap(String),
    /// It ran past its CPU time.
    CpuTime,
    /// It ran out of memory.
    Memory,
    /// The call did not end within its timeout.
    Timeout,
    /// It could not be called: the test's setup is wrong (a blocking call inside an async
    /// runtime, a request that cannot be built).
    Setup(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Trap(message) => write!(f, "the component trapped: {message}"),
            CallError::CpuTime => write!(f, "the component ran past its CPU time"),
            CallError::Memory => write!(f, "the component ran out of memory"),
            CallError::Timeout => write!(f, "the call did not end within its timeout"),
            CallError::Setup(message) => write!(f, "the call could not be made: {message}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A guest ran past its CPU budget.
#[derive(Debug)]
struct CpuTimeExceeded;

impl fmt::Display for CpuTimeExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the guest ran past its CPU time")
    }
}

impl std::error::Error for CpuTimeExceeded {}

/// The state of one call's store.
pub(crate) struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: FakeHttp,
    fakes: Fakes,
    limits: StoreLimits,
    cpu_ticks_left: u64,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The engine, its linker, and the components compiled so far.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<State>,
    compiled: Mutex<HashMap<PathBuf, (SystemTime, Component)>>,
    blocking: tokio::runtime::Runtime,
}

/// The process's runtime, made on first use.
pub(crate) fn runtime() -> anyhow::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::new().map_err(|err| format!("{err:#}")))
        .as_ref()
        .map_err(|err| anyhow!("cannot start wasmtime: {err}"))
}

/// [`runtime`], for a call: a runtime that cannot start is a failed set-up.
pub(crate) fn call_runtime() -> Result<&'static Runtime, CallError> {
    runtime().map_err(|err| CallError::Setup(format!("{err:#}")))
}

impl Runtime {
    fn new() -> anyhow::Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot configure wasmtime")?;
        spawn_epoch_ticker(&engine)?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        platform::fermyon::spin::redis::add_to_linker::<_, RedisCapability>(
            &mut linker,
            |state| RedisView {
                fake: &state.fakes.redis,
                table: &mut state.table,
            },
        )?;
        platform::spin::postgres::postgres::add_to_linker::<_, PgCapability>(
            &mut linker,
            |state| PgView {
                fake: &state.fakes.postgres,
                table: &mut state.table,
            },
        )?;
        platform::fermyon::spin::variables::add_to_linker::<_, VariablesCapability>(
            &mut linker,
            |state| &state.fakes.variables,
        )?;
        platform::nexus::platform::log::add_to_linker::<_, LogCapability>(&mut linker, |state| {
            &state.fakes.log
        })?;
        tenant::bot::nexus::tenant::key_value::add_to_linker::<_, KeyValueCapability>(
            &mut linker,
            |state| &state.fakes.key_value,
        )?;
        tenant::bot::nexus::tenant::log::add_to_linker::<_, LogCapability>(&mut linker, |state| {
            &state.fakes.log
        })?;
        let blocking = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .context("cannot start the runtime for blocking calls")?;
        Ok(Runtime {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
            blocking,
        })
    }

    /// The component at `path`, compiled once per process (again if the file changed).
    pub(crate) fn component(&self, path: &Path) -> anyhow::Result<Component> {
        let modified = std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .with_context(|| format!("cannot read {}", path.display()))?;
        if let Some((at, component)) = lock(&self.compiled).get(path)
            && *at == modified
        {
            return Ok(component.clone());
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let component = Component::new(&self.engine, &bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{} is not a WebAssembly component", path.display()))?;
        lock(&self.compiled).insert(path.to_owned(), (modified, component.clone()));
        Ok(component)
    }

    /// A store for one call, bound to `fakes`, under `limits`.
    pub(crate) fn store(
        &self,
        fakes: &Fakes,
        limits: &Limits,
    ) -> (Store<State>, MemoryOutputPipe, MemoryOutputPipe) {
        let stdout = MemoryOutputPipe::new(CAPTURED_OUTPUT_BYTES);
        let stderr = MemoryOutputPipe::new(CAPTURED_OUTPUT_BYTES);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let state = State {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: fakes.http.clone(),
            fakes: fakes.clone(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            cpu_ticks_left: u64::try_from(
                limits.cpu_time.as_millis().div_ceil(EPOCH_TICK.as_millis()),
            )
            .unwrap_or(u64::MAX),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // As the host: a tick is charged for each epoch during which the guest ran, and the
        // guest yields at each one (so that the timeout can fire on a guest that loops).
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let left = &mut ctx.data_mut().cpu_ticks_left;
            if *left == 0 {
                return Err(CpuTimeExceeded.into());
            }
            *left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        (store, stdout, stderr)
    }

    /// Runs `call` to its end, from a test that is not async.
    pub(crate) fn block_on<T>(
        &self,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(CallError::Setup(
                "a blocking call inside an async runtime: use the `_async` method".into(),
            ));
        }
        self.blocking.block_on(call)
    }
}

/// Why a call that did not return failed, from wasmtime's error.
pub(crate) fn call_error(err: &wasmtime::Error, output: &[u8]) -> CallError {
    if err.downcast_ref::<CpuTimeExceeded>().is_some() {
        return CallError::CpuTime;
    }
    let text = format!("{err:?}");
    if text.contains("growing memory") || text.contains("memory allocation") {
        return CallError::Memory;
    }
    let output = String::from_utf8_lossy(output);
    let output = output.trim();
    if output.is_empty() {
        CallError::Trap(format!("{err:#}"))
    } else {
        CallError::Trap(format!("{err:#}; it printed: {output}"))
    }
}

/// After a call: what it printed goes to the log fake.
pub(crate) fn keep_output(fakes: &Fakes, stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) {
    fakes.log.push_output("stdout", &stdout.contents());
    fakes.log.push_output("stderr", &stderr.contents());
}

/// Advances the engine's epoch on a thread of its own for as long as the engine lives (a guest
/// that loops holds its worker thread, so a tokio task could not be relied on to run).
fn spawn_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("nexus-testing-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(anyhow::Error::from)
        .context("cannot start the epoch thread")?;
    Ok(())
}
