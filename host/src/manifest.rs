//! The Spin application manifest (`spin.toml`, manifest version 2), as the nexus host reads it.
//!
//! nexus serves the same manifest that `spin up` serves: components, HTTP triggers, variables and
//! `allowed_outbound_hosts` mean here what they mean to Spin. Settings only nexus understands
//! live where Spin ignores them: `[application.tool.nexus]` and `[component.NAME.tool.nexus]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// Why a manifest cannot be served.
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("cannot read the manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the manifest {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("the manifest {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A parsed and checked manifest, with paths resolved against its directory.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The directory the manifest is in; relative paths in it are relative to this.
    pub dir: PathBuf,
    pub application: Application,
    pub variables: BTreeMap<String, VariableDecl>,
    pub components: BTreeMap<String, ComponentDecl>,
    pub http_triggers: Vec<HttpTrigger>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: Application,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawHttpTrigger {
    #[serde(default)]
    id: Option<String>,
    route: RawRoute,
    #[serde(default)]
    component: Option<toml::Value>,
    #[serde(default)]
    executor: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    Private { private: bool },
}

/// `[application]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    pub tool: ApplicationTools,
}

/// `[application.tool]`: only the `nexus` table is read; other tools' tables are kept out of
/// the way, as Spin does with ours.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApplicationTools {
    #[serde(default)]
    pub nexus: AppNexusSettings,
}

/// `[application.tool.nexus]`: host-wide defaults for every component.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppNexusSettings {
    #[serde(flatten)]
    pub limits: ComponentLimits,
}

/// `[variables]` entry: a default, or `required = true`; `secret` hides the value from logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

/// `[component.NAME]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ComponentDecl {
    pub source: ComponentSource,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub build: Option<BuildDecl>,
    #[serde(default)]
    pub tool: ComponentTools,
    /// Spin features nexus does not serve yet; accepted so that the manifest stays Spin's, and
    /// refused when a component relies on them (see [`Manifest::load`]).
    #[serde(default)]
    pub files: Vec<toml::Value>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    #[serde(default)]
    pub ai_models: Vec<String>,
    #[serde(default)]
    pub dependencies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub exclude_files: Vec<String>,
    #[serde(default)]
    pub dependencies_inherit_configuration: bool,
}

/// Where a component's Wasm comes from. Only local files are served by nexus.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ComponentSource {
    Local(PathBuf),
    Remote(BTreeMap<String, toml::Value>),
}

/// `[component.NAME.build]`, run by `nexus up --build` as `spin build` would.
#[derive(Debug, Clone, Deserialize)]
pub struct BuildDecl {
    pub command: BuildCommands,
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    #[serde(default)]
    pub watch: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BuildCommands {
    One(String),
    Many(Vec<String>),
}

impl BuildCommands {
    pub fn as_list(&self) -> Vec<&str> {
        match self {
            Self::One(command) => vec![command.as_str()],
            Self::Many(commands) => commands.iter().map(String::as_str).collect(),
        }
    }
}

/// `[component.NAME.tool]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ComponentTools {
    #[serde(default)]
    pub nexus: ComponentNexusSettings,
}

/// `[component.NAME.tool.nexus]`: per-component settings that Spin has no place for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentNexusSettings {
    /// Serve WebSockets for this component (which exports `nexus:websocket/handler`).
    #[serde(default)]
    pub websocket: Option<WebSocketDecl>,
    /// Requests the host makes to this component on a timer (due work, such as a sweep).
    #[serde(default)]
    pub schedule: Vec<ScheduleDecl>,
    /// Run this component's durable jobs (the `jobs` rows naming it).
    #[serde(default)]
    pub jobs: Option<JobsDecl>,
    #[serde(flatten)]
    pub limits: ComponentLimits,
}

/// `[component.NAME.tool.nexus.jobs]`: the host claims the component's due jobs from
/// PostgreSQL and `POST`s each to `path` (through its own listener, like any request); the
/// answer's status says how the attempt ended: 2xx done, 422 give up (dead-letter), anything
/// else try again after the next delay of `retry_ms`, and dead-letter once those run out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsDecl {
    /// The path each job is `POST`ed to (it must route to this component).
    pub path: String,
    /// A bearer token to send, as a template over application variables.
    #[serde(default)]
    pub bearer: Option<String>,
    /// Jobs of this component run at once on each host.
    #[serde(default = "JobsDecl::default_concurrency")]
    pub concurrency: usize,
    /// The delays before each retry, in milliseconds: the published retry schedule.
    #[serde(default = "JobsDecl::default_retry_ms")]
    pub retry_ms: Vec<u64>,
    /// How long a claim lasts: a job whose host died is claimed again after it.
    #[serde(default = "JobsDecl::default_lease_ms")]
    pub lease_ms: u64,
    /// How often an idle worker looks for due jobs.
    #[serde(default = "JobsDecl::default_poll_ms")]
    pub poll_ms: u64,
    /// How long a succeeded job is kept (for the jobs API) before it is deleted.
    #[serde(default = "JobsDecl::default_keep_succeeded_ms")]
    pub keep_succeeded_ms: u64,
}

impl JobsDecl {
    fn default_concurrency() -> usize {
        8
    }

    /// The published schedule (`nexus_guest::jobs::RETRY_MS`): 5 s, 5 min, 30 min, 2 h, 5 h,
    /// 10 h, 10 h, about a day and a half in all, so that a receiver down for a day loses nothing.
    pub fn default_retry_ms() -> Vec<u64> {
        nexus_guest::jobs::RETRY_MS.to_vec()
    }

    fn default_lease_ms() -> u64 {
        60_000
    }

    fn default_poll_ms() -> u64 {
        500
    }

    fn default_keep_succeeded_ms() -> u64 {
        nexus_guest::jobs::KEEP_SUCCEEDED_MS
    }
}

/// `[[component.NAME.tool.nexus.schedule]]`: a `POST` the host sends itself every `every_ms`,
/// so that due work runs under nexus as it would under Spin from an external cron.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDecl {
    /// The path to `POST` to (it must route to this component).
    pub path: String,
    pub every_ms: u64,
    /// A bearer token to send, as a template over application variables
    /// (`"{{ admin_token }}"`).
    #[serde(default)]
    pub bearer: Option<String>,
}

/// `[component.NAME.tool.nexus.websocket]`: a WebSocket route and the limits of its sockets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketDecl {
    /// The route upgrades are accepted on, in Spin's route syntax.
    pub route: String,
    /// The largest message a client may send, in bytes; a larger one closes the socket (1009).
    #[serde(default = "WebSocketDecl::default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How often the host pings an idle socket; one that stays silent for two intervals is
    /// closed.
    #[serde(default = "WebSocketDecl::default_ping_interval_ms")]
    pub ping_interval_ms: u64,
    /// Messages queued for one socket before it counts as too slow and is closed (1013).
    #[serde(default = "WebSocketDecl::default_send_queue")]
    pub send_queue: usize,
}

impl WebSocketDecl {
    fn default_max_message_bytes() -> usize {
        64 * 1024
    }
    fn default_ping_interval_ms() -> u64 {
        30_000
    }
    fn default_send_queue() -> usize {
        256
    }
}

/// The limits of one instance, each optional so that a component inherits the application's.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ComponentLimits {
    /// Linear memory one instance may grow to, in MiB.
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// How long the guest may run for one request, in milliseconds (epoch interruption).
    #[serde(default)]
    pub cpu_timeout_ms: Option<u64>,
    /// How long one request may take end to end, I/O included, in milliseconds.
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    /// The largest request body the component is handed, in bytes; larger ones get 413.
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
}

impl ComponentLimits {
    /// This component's limits, falling back to `defaults` where it sets none.
    pub fn or(&self, defaults: &ComponentLimits) -> ComponentLimits {
        ComponentLimits {
            max_memory_mb: self.max_memory_mb.or(defaults.max_memory_mb),
            cpu_timeout_ms: self.cpu_timeout_ms.or(defaults.cpu_timeout_ms),
            request_timeout_ms: self.request_timeout_ms.or(defaults.request_timeout_ms),
            max_request_body_bytes: self
                .max_request_body_bytes
                .or(defaults.max_request_body_bytes),
        }
    }
}

/// Limits applied where neither the component nor the application sets one.
pub const DEFAULT_LIMITS: ComponentLimits = ComponentLimits {
    max_memory_mb: Some(128),
    cpu_timeout_ms: Some(5_000),
    request_timeout_ms: Some(30_000),
    max_request_body_bytes: Some(10 * 1024 * 1024),
};

/// A component's limits, every one of them decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_memory_bytes: usize,
    pub cpu_timeout: Duration,
    pub request_timeout: Duration,
    pub max_request_body_bytes: u64,
}

/// One `[[trigger.http]]`: a route served by a component.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub id: Option<String>,
    /// `None` for a private route (reachable only by service chaining, which nexus does not
    /// offer yet: such a trigger is accepted and not served).
    pub route: Option<String>,
    pub component: String,
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let dir = manifest_dir(path);
        Self::parse(&text, &dir).map_err(|err| match err {
            ManifestError::Parse { source, .. } => ManifestError::Parse {
                path: path.to_owned(),
                source,
            },
            ManifestError::Invalid { message, .. } => ManifestError::Invalid {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses manifest text whose relative paths are relative to `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join("spin.toml");
        let invalid = |message: String| ManifestError::Invalid {
            path: path.clone(),
            message,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|source| ManifestError::Parse {
            path: path.clone(),
            source: Box::new(source),
        })?;
        if raw.spin_manifest_version != 2 {
            return Err(invalid(format!(
                "spin_manifest_version {} is not supported; nexus reads version 2",
                raw.spin_manifest_version
            )));
        }
        if let Some(kind) = raw.trigger.other.keys().next() {
            return Err(invalid(format!(
                "trigger type `{kind}` is not served by nexus (only `http` is)"
            )));
        }
        for (name, decl) in &raw.variables {
            check_variable_name(name).map_err(&invalid)?;
            if decl.required && decl.default.is_some() {
                return Err(invalid(format!(
                    "variable `{name}` cannot be both required and have a default"
                )));
            }
            if !decl.required && decl.default.is_none() {
                return Err(invalid(format!(
                    "variable `{name}` needs a default or `required = true`"
                )));
            }
        }
        for (name, component) in &raw.component {
            check_component_unsupported(name, component).map_err(&invalid)?;
            for variable in component.variables.keys() {
                check_variable_name(variable).map_err(&invalid)?;
            }
        }

        let mut http_triggers = Vec::new();
        for trigger in raw.trigger.http {
            if trigger.executor.is_some() {
                return Err(invalid(
                    "HTTP trigger `executor` (e.g. WAGI) is not supported by nexus".into(),
                ));
            }
            let component = match trigger.component {
                Some(toml::Value::String(name)) => name,
                Some(_) => {
                    return Err(invalid(
                        "inline trigger components are not supported; name a [component.X]".into(),
                    ));
                }
                None => return Err(invalid("an HTTP trigger without a component".into())),
            };
            if !raw.component.contains_key(&component) {
                return Err(invalid(format!(
                    "an HTTP trigger names component `{component}`, which is not declared"
                )));
            }
            let route = match trigger.route {
                RawRoute::Path(route) => {
                    crate::routes::check_route(&route).map_err(&invalid)?;
                    Some(route)
                }
                RawRoute::Private { private: true } => None,
                RawRoute::Private { private: false } => {
                    return Err(invalid(
                        "`route = { private = false }` is not a route".into(),
                    ));
                }
            };
            http_triggers.push(HttpTrigger {
                id: trigger.id,
                route,
                component,
            });
        }

        for (name, component) in &raw.component {
            for schedule in &component.tool.nexus.schedule {
                if !schedule.path.starts_with('/') || schedule.every_ms < 100 {
                    return Err(invalid(format!(
                        "component `{name}`: a schedule needs a path starting with `/` and every_ms of at least 100"
                    )));
                }
            }
            if let Some(jobs) = &component.tool.nexus.jobs
                && (!jobs.path.starts_with('/')
                    || jobs.concurrency == 0
                    || jobs.lease_ms < 1000
                    || jobs.poll_ms < 10)
            {
                return Err(invalid(format!(
                    "component `{name}`: jobs need a path starting with `/`, a concurrency of at least 1, lease_ms of at least 1000 and poll_ms of at least 10"
                )));
            }
            if let Some(websocket) = &component.tool.nexus.websocket {
                crate::routes::check_route(&websocket.route).map_err(&invalid)?;
                if websocket.max_message_bytes == 0
                    || websocket.ping_interval_ms == 0
                    || websocket.send_queue == 0
                {
                    return Err(invalid(format!(
                        "component `{name}`: websocket limits must be greater than zero"
                    )));
                }
            }
        }

        Ok(Manifest {
            dir: dir.to_owned(),
            application: raw.application,
            variables: raw.variables,
            components: raw.component,
            http_triggers,
        })
    }

    /// The file a component's Wasm is read from.
    pub fn component_path(&self, name: &str) -> Option<PathBuf> {
        match &self.components.get(name)?.source {
            ComponentSource::Local(path) => Some(cargo_output(
                &self.dir,
                Path::new(path),
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
            )),
            ComponentSource::Remote(_) => None,
        }
    }

    /// The limits of `component`: its own, else the application's, else [`DEFAULT_LIMITS`].
    pub fn limits(&self, component: &str) -> Limits {
        let own = self
            .components
            .get(component)
            .map(|decl| decl.tool.nexus.limits.clone())
            .unwrap_or_default();
        let set = own
            .or(&self.application.tool.nexus.limits)
            .or(&DEFAULT_LIMITS);
        // DEFAULT_LIMITS sets every field, so the fallbacks below are never taken.
        let mb = set.max_memory_mb.unwrap_or(128);
        Limits {
            max_memory_bytes: usize::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX),
            cpu_timeout: Duration::from_millis(set.cpu_timeout_ms.unwrap_or(5_000)),
            request_timeout: Duration::from_millis(set.request_timeout_ms.unwrap_or(30_000)),
            max_request_body_bytes: set.max_request_body_bytes.unwrap_or(u64::MAX),
        }
    }

    /// The components that HTTP triggers serve, each once, in manifest order of first use;
    /// then those that serve only WebSockets.
    pub fn served_components(&self) -> Vec<&str> {
        let mut seen = Vec::new();
        for trigger in &self.http_triggers {
            if trigger.route.is_some() && !seen.contains(&trigger.component.as_str()) {
                seen.push(trigger.component.as_str());
            }
        }
        for (name, _) in self.websocket_routes() {
            if !seen.contains(&name) {
                seen.push(name);
            }
        }
        seen
    }

    /// How many requests the host's own timers and job workers can have in flight at once: a
    /// job worker's concurrency, and one per schedule (a timer waits for its answer before it
    /// posts again). The host gives them as many instance slots of their own.
    pub fn host_request_slots(&self) -> usize {
        self.components
            .values()
            .map(|component| {
                let nexus = &component.tool.nexus;
                nexus.jobs.as_ref().map_or(0, |jobs| jobs.concurrency) + nexus.schedule.len()
            })
            .sum()
    }

    /// Each component that serves WebSockets, with its declaration.
    pub fn websocket_routes(&self) -> impl Iterator<Item = (&str, &WebSocketDecl)> {
        self.components.iter().filter_map(|(name, decl)| {
            decl.tool
                .nexus
                .websocket
                .as_ref()
                .map(|websocket| (name.as_str(), websocket))
        })
    }
}

/// The directory a manifest's relative paths start from. `spin.toml` alone has the empty path
/// as its parent, which is no directory to run a build in: that is the current directory.
fn manifest_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Spin's rule for variable names: lower-case ASCII letters, digits and `_`, starting with a
/// letter.
fn check_variable_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if starts_with_letter
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid variable name (lower-case letters, digits and `_`, starting with a letter)"
        ))
    }
}

fn check_component_unsupported(name: &str, component: &ComponentDecl) -> Result<(), String> {
    let unsupported = [
        ("files", !component.files.is_empty()),
        ("key_value_stores", !component.key_value_stores.is_empty()),
        ("sqlite_databases", !component.sqlite_databases.is_empty()),
        ("ai_models", !component.ai_models.is_empty()),
        ("dependencies", !component.dependencies.is_empty()),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, used)| *used) {
        return Err(format!(
            "component `{name}` uses `{field}`, which nexus does not serve yet"
        ));
    }
    if let ComponentSource::Remote(_) = component.source {
        return Err(format!(
            "component `{name}` has a remote source; nexus serves local files only (`source = \"path.wasm\"`)"
        ));
    }
    Ok(())
}

/// Where `source` (relative to the manifest's `dir`) is. Manifests name cargo's output as
/// `target/...`, as Spin's templates do; cargo puts it under `CARGO_TARGET_DIR` when that is
/// set (relative to the working directory, as cargo takes it), so a `target/` path missing
/// beside the manifest is looked for there.
pub fn cargo_output(dir: &Path, source: &Path, target_dir: Option<PathBuf>) -> PathBuf {
    let beside = dir.join(source);
    if let (Some(target_dir), Ok(inside)) = (target_dir, source.strip_prefix("target"))
        && !beside.exists()
    {
        return target_dir.join(inside);
    }
    beside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_output_is_found_under_cargo_target_dir() {
        let dir = std::env::temp_dir().join(format!("nexus-manifest-{}", std::process::id()));
        let shared = dir.join("shared-target");
        let source = Path::new("target/wasm32-wasip2/release/a.wasm");
        // Nothing beside the manifest: the shared target directory.
        assert_eq!(
            cargo_output(&dir, source, Some(shared.clone())),
            shared.join("wasm32-wasip2/release/a.wasm")
        );
        // No CARGO_TARGET_DIR, or a path outside target/: beside the manifest.
        assert_eq!(cargo_output(&dir, source, None), dir.join(source));
        assert_eq!(
            cargo_output(&dir, Path::new("wasm/a.wasm"), Some(shared.clone())),
            dir.join("wasm/a.wasm")
        );
        // Built beside the manifest: that one.
        std::fs::create_dir_all(dir.join("target/wasm32-wasip2/release")).unwrap();
        std::fs::write(dir.join(source), b"").unwrap();
        assert_eq!(cargo_output(&dir, source, Some(shared)), dir.join(source));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const MANIFEST: &str = r#"
spin_manifest_version = 2

[application]
name = "demo"
[application.tool.nexus]
max_memory_mb = 64

[variables]
greeting = { default = "hi" }
token = { required = true, secret = true }

[[trigger.http]]
route = "/hello/..."
component = "hello"

[[trigger.http]]
route = { private = true }
component = "hello"

[component.hello]
source = "target/hello.wasm"
allowed_outbound_hosts = ["https://example.com"]
[component.hello.variables]
greeting = "{{ greeting }}"
[component.hello.tool.nexus]
cpu_timeout_ms = 50
"#;

    #[test]
    fn reads_components_routes_variables_and_nexus_settings() {
        let manifest = Manifest::parse(MANIFEST, Path::new("/app")).unwrap();
        assert_eq!(manifest.application.name, "demo");
        assert_eq!(manifest.http_triggers.len(), 2);
        assert_eq!(
            manifest.http_triggers[0].route.as_deref(),
            Some("/hello/...")
        );
        assert_eq!(manifest.http_triggers[1].route, None);
        assert_eq!(manifest.served_components(), vec!["hello"]);
        // Beside the manifest, or where cargo put it (cargo_output's own test).
        assert_eq!(
            manifest.component_path("hello"),
            Some(cargo_output(
                Path::new("/app"),
                Path::new("target/hello.wasm"),
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
            ))
        );
        let limits = manifest.limits("hello");
        assert_eq!(limits.max_memory_bytes, 64 << 20, "the application's");
        assert_eq!(
            limits.cpu_timeout,
            Duration::from_millis(50),
            "the component's own"
        );
        assert_eq!(
            limits.request_timeout,
            Duration::from_secs(30),
            "the default"
        );
        assert!(manifest.variables["token"].required);
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(manifest_dir(Path::new("spin.toml")), PathBuf::from("."));
        assert_eq!(
            manifest_dir(Path::new("app/spin.toml")),
            PathBuf::from("app")
        );
        assert_eq!(
            manifest_dir(Path::new("/srv/app/spin.toml")),
            PathBuf::from("/srv/app")
        );
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let cases = [
            (
                MANIFEST.replace("spin_manifest_version = 2", "spin_manifest_version = 1"),
                "version",
            ),
            (
                MANIFEST.replace("component = \"hello\"\n\n[[", "component = \"nope\"\n\n[["),
                "not declared",
            ),
            (MANIFEST.replace("\"/hello/...\"", "\"hello\""), "route"),
            (
                MANIFEST.replace("greeting = { default", "Greeting = { default"),
                "variable name",
            ),
            (
                MANIFEST.replace(
                    "source = \"target/hello.wasm\"",
                    "source = \"x.wasm\"\nkey_value_stores = [\"default\"]",
                ),
                "key_value_stores",
            ),
            (
                MANIFEST.replace(
                    "[[trigger.http]]\nroute = \"/hello/...\"",
                    "[[trigger.redis]]\nchannel = \"x\"\n[[trigger.http]]\nroute = \"/hello/...\"",
                ),
                "trigger type",
            ),
            (
                MANIFEST.replace("cpu_timeout_ms = 50", "cpu_timeout = 50"),
                "unknown field",
            ),
        ];
        for (text, expected) in cases {
            let err = Manifest::parse(&text, Path::new("/app")).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "expected `{expected}` in: {err}"
            );
        }
    }
}
