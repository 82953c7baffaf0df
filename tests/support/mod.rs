//! The end-to-end harness: real Redis and PostgreSQL (a fresh database per test), a real
//! `nexus up` process on port 0, and a local HTTP receiver that records what reaches it.
//!
//! The servers are the ones at `NEXUS_TEST_REDIS_URL` / `NEXUS_TEST_POSTGRES_URL` (default:
//! Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 with trust auth); `scripts/services.sh`
//! installs and starts them where they are missing. The components must be built first
//! (`scripts/build-components.sh`; `scripts/test.sh` does both).
// A test harness: a failed set-up step is a failed test, so it panics with a message.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod aggregator;
pub mod chat;
pub mod manifest;
pub mod openapi;
pub mod postgres_server;
pub mod redis_server;
pub mod ws;

/// Runs each scenario, an `async fn(Backends)`, once on the real servers (`mod real`) and once on
/// the embedded defaults (`mod embedded`).
#[macro_export]
macro_rules! both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod real {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::Backends::Real).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::Backends::Embedded).await;
                }
            )*
        }
    };
}

/// The admin token of the hosts the tests start.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn redis_url() -> String {
    std::env::var("NEXUS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database the tests may create other databases from.
pub fn admin_postgres_url() -> String {
    std::env::var("NEXUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The directory Cargo builds into (the `nexus` binary is in its `debug/` or `release/`).
pub fn target_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("the nexus binary lives in <target>/<profile>/")
}

/// A built component of this workspace.
pub fn wasm(crate_name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is not built: run scripts/build-components.sh (scripts/test.sh does) first",
        path.display()
    );
    path
}

/// A database of its own for one test, dropped with it.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let name = unique("nexus_test");
        let admin = admin_postgres_url();
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|err| {
                panic!("PostgreSQL at {admin} is not reachable ({err}): run scripts/services.sh")
            });
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let mut url = url::Url::parse(&admin).expect("the admin URL is a URL");
        url.set_path(&format!("/{name}"));
        TestDatabase {
            url: url.to_string(),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = admin_postgres_url();
        // Drop runs inside the test's runtime; a thread with its own runtime can block on it.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Which Redis and PostgreSQL a `nexus up` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// REDIS_URL and DATABASE_URL set: the real servers (a fresh database).
    Real,
    /// Neither set: the embedded Redis and PostgreSQL.
    Embedded,
}

/// A running `nexus up`, killed when dropped.
pub struct Nexus {
    child: Child,
    pub base: String,
    pub database: Option<TestDatabase>,
    /// Every Redis key of this host starts with it (`redis_key_prefix`).
    pub redis_prefix: String,
    stderr: PathBuf,
    /// What the host prints after its first line, a line at a time.
    stdout: tokio::sync::mpsc::UnboundedReceiver<String>,
    dir: tempfile::TempDir,
    command: LaunchCommand,
}

/// How a host was started, to start it again.
struct LaunchCommand {
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    current_dir: Option<PathBuf>,
}

/// Compiled components are cached across the tests' hosts, as across a real host's restarts.
fn shared_cache_dir() -> PathBuf {
    target_dir().join("nexus-test-compile-cache")
}

impl Nexus {
    /// Starts `nexus up` on `manifest` (whose `{example}`, `{chat}`, ... placeholders
    /// become the built components' paths) and waits until it is ready.
    pub async fn start(manifest: &str, backends: Backends) -> Nexus {
        Self::start_with(manifest, backends, &[]).await
    }

    pub async fn start_with(manifest: &str, backends: Backends, env: &[(&str, &str)]) -> Nexus {
        Self::launch(manifest, backends, env, false).await
    }

    /// Starts it as a person would, from the manifest's directory, with `--manifest spin.toml`
    /// and the default data directory (`.nexus` there).
    pub async fn start_in_manifest_dir(manifest: &str, backends: Backends) -> Nexus {
        Self::launch(manifest, backends, &[], true).await
    }

    async fn launch(
        manifest: &str,
        backends: Backends,
        env: &[(&str, &str)],
        relative: bool,
    ) -> Nexus {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut manifest = manifest.to_owned();
        for (placeholder, component) in [
            ("{example}", "nexus-example"),
            ("{limits}", "nexus-fixture-limits"),
            ("{hello}", "nexus-hello"),
            ("{provisioning}", "nexus-provisioning"),
            ("{chat}", "nexus-chat"),
            ("{history}", "nexus-history"),
            ("{sockets}", "nexus-fixture-sockets"),
            ("{workspace}", "nexus-workspace"),
            ("{workspace_socket}", "nexus-workspace-socket"),
            ("{chat_socket}", "nexus-chat-socket"),
            ("{campaign_socket}", "nexus-campaign-socket"),
            ("{webhooks}", "nexus-webhooks"),
            ("{messaging}", "nexus-messaging"),
            ("{sms}", "nexus-sms"),
            ("{email}", "nexus-email"),
            ("{bots}", "nexus-bots"),
            ("{securemail}", "nexus-securemail"),
            ("{outbound}", "nexus-outbound"),
            ("{assets}", "nexus-assets"),
        ] {
            if manifest.contains(placeholder) {
                manifest = manifest.replace(placeholder, &wasm(component).display().to_string());
            }
        }
        let manifest_path = dir.path().join("spin.toml");
        std::fs::write(&manifest_path, manifest).expect("write the manifest");
        let mut args: Vec<std::ffi::OsString> = vec!["up".into(), "--manifest".into()];
        let mut current_dir = None;
        let mut all_env: Vec<(String, String)> = Vec::new();
        if relative {
            args.push("spin.toml".into());
            current_dir = Some(dir.path().to_path_buf());
            // The default cache, `.nexus/compile-cache`, is a relative path too.
        } else {
            args.push(manifest_path.into());
            args.push("--data-dir".into());
            args.push(dir.path().join("data").into());
            all_env.push((
                "NEXUS_CACHE_DIR".into(),
                shared_cache_dir().display().to_string(),
            ));
        }
        for arg in ["--listen", "127.0.0.1:0", "--log-format", "json"] {
            args.push(arg.into());
        }
        // A test may set its own limit through the environment.
        if !env
            .iter()
            .any(|(name, _)| *name == "NEXUS_MAX_CONCURRENT_REQUESTS")
        {
            args.push("--max-concurrent-requests".into());
            args.push("64".into());
        }
        let redis_prefix = format!("{}:", unique("test"));
        all_env.push(("RUST_LOG".into(), "info".into()));
        all_env.push((
            "SPIN_VARIABLE_REDIS_KEY_PREFIX".into(),
            redis_prefix.clone(),
        ));
        all_env.push(("SPIN_VARIABLE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
        // The tests' far sides (receivers, bots, aggregators) listen on 127.0.0.1, which nexus
        // refuses as a destination unless the operator allows it; a test of that guard sets it
        // back to "false" through `env`, which comes after and wins.
        all_env.push(("SPIN_VARIABLE_ALLOW_PRIVATE_OUTBOUND".into(), "true".into()));
        let database = match backends {
            Backends::Real => {
                let database = TestDatabase::create().await;
                all_env.push(("REDIS_URL".into(), redis_url()));
                all_env.push(("DATABASE_URL".into(), database.url.clone()));
                Some(database)
            }
            Backends::Embedded => None,
        };
        for (key, value) in env {
            all_env.push(((*key).into(), (*value).into()));
        }
        let command = LaunchCommand {
            args,
            env: all_env,
            current_dir,
        };
        let stderr = dir.path().join("nexus.log");
        let (child, base, stdout) = spawn(&command, &stderr).await;
        Nexus {
            child,
            base,
            database,
            redis_prefix,
            stderr,
            stdout,
            dir,
            command,
        }
    }

    /// Stops the host (SIGKILL: nothing is flushed) and starts it again with the same
    /// manifest, data directory, database and Redis prefix; the embedded Redis starts empty.
    pub async fn restart(&mut self) {
        let _ = self.child.kill().await;
        let (child, base, stdout) = spawn(&self.command, &self.stderr).await;
        self.child = child;
        self.base = base;
        self.stdout = stdout;
    }

    /// Stops the host (SIGKILL) and starts it again as [`Nexus::restart`] does, with `env` set
    /// on top of what it had (new values for the same names win).
    pub async fn restart_with(&mut self, env: &[(&str, &str)]) {
        for (key, value) in env {
            self.command.env.retain(|(name, _)| name != key);
            self.command.env.push(((*key).into(), (*value).into()));
        }
        self.restart().await;
    }

    /// Another host of the same cluster: the same manifest, Redis, database and Redis prefix
    /// (only for hosts on the real servers: embedded ones share nothing).
    pub async fn peer(&self) -> Nexus {
        assert!(
            self.command.env.iter().any(|(key, _)| key == "REDIS_URL"),
            "a peer shares the real Redis; start the first host with Backends::Real"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let stderr = dir.path().join("nexus.log");
        let mut args = self.command.args.clone();
        if let Some(position) = args.iter().position(|arg| arg == "--data-dir") {
            args[position + 1] = dir.path().join("data").into();
        }
        let command = LaunchCommand {
            args,
            env: self.command.env.clone(),
            current_dir: self.command.current_dir.clone(),
        };
        let (child, base, stdout) = spawn(&command, &stderr).await;
        Nexus {
            child,
            base,
            database: None,
            redis_prefix: self.redis_prefix.clone(),
            stderr,
            stdout,
            dir,
            command,
        }
    }

    /// The `ws://` URL of `path` on this host.
    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.base.replacen("http://", "ws://", 1))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the host has logged so far (one JSON object per line).
    /// Deletes every key under the host's Redis prefix (all of its live state, on the real
    /// Redis): how many there were.
    pub async fn flush_redis(&self) -> usize {
        let client = redis::Client::open(redis_url()).expect("the Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("a Redis connection");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.redis_prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("DEL");
        }
        keys.len()
    }

    /// The host's `/metrics` page.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics page")
    }

    /// Waits (up to a minute) for the host to print a line starting with `prefix`: that line.
    pub async fn printed(&mut self, prefix: &str) -> String {
        let wait = async {
            while let Some(line) = self.stdout.recv().await {
                if line.starts_with(prefix) {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(Duration::from_secs(60), wait).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("nexus exited without printing `{prefix}`: {}", self.logs()),
            Err(_) => panic!("nexus printed no `{prefix}` within 60 s: {}", self.logs()),
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The parsed JSON log lines.
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// SIGKILL: the host dies at once, as when its node does; nothing is flushed.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill nexus");
    }

    /// The address the host listens on.
    pub fn addr(&self) -> SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("the host's address")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("nexus exits after SIGTERM")
            .expect("wait for nexus")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Starts `nexus` as `command` says and waits for the line that says where it serves; the
/// process, that address, and the lines it prints after.
async fn spawn(
    command: &LaunchCommand,
    stderr: &Path,
) -> (Child, String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr)
        .expect("open the log file");
    let mut process = Command::new(env!("CARGO_BIN_EXE_nexus"));
    process
        .args(&command.args)
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .envs(command.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true);
    if let Some(dir) = &command.current_dir {
        process.current_dir(dir);
    }
    let mut child = process.spawn().expect("start nexus");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let Some(first) = first else {
        let log = std::fs::read_to_string(stderr).unwrap_or_default();
        panic!("nexus did not start; its log:\n{log}");
    };
    let base = first
        .strip_prefix("nexus is serving ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    // Keep draining stdout so that the process never blocks on a full pipe; the lines go to
    // whoever waits for one (and are dropped when nobody holds the receiver any more).
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = sender.send(line);
        }
    });
    (child, base, receiver)
}

/// A multipart/form-data body as a client's HTTP library makes it: the text `fields`, then one
/// `file`; its content type (with the boundary) and bytes.
pub fn multipart_file(
    fields: &[(&str, &str)],
    filename: &str,
    mimetype: &str,
    content: &[u8],
) -> (String, Vec<u8>) {
    let boundary = "----nexus-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\ncontent-type: {mimetype}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

/// A provisioning API call with the admin token (`path` below `/nexus/v3/provisioning`): the
/// status and the JSON answer, checked against `openapi/provisioning.json`.
pub async fn admin(
    nexus: &Nexus,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let path = format!("/nexus/v3/provisioning{path}");
    let mut request = client()
        .request(method.parse().expect("a method"), nexus.url(&path))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the provisioning API answers");
    let status = response.status().as_u16();
    let answer: serde_json::Value = response.json().await.expect("a JSON answer");
    openapi::Api::load("provisioning").check(method, &path, status, &answer);
    (status, answer)
}

/// A provisioning call that must succeed: its `data`.
pub async fn admin_ok(
    nexus: &Nexus,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let (status, answer) = admin(nexus, method, path, body).await;
    assert!((200..300).contains(&status), "{method} {path}: {answer}");
    answer["data"].clone()
}

/// Asks `probe` every 50 ms until it answers, for at most 30 s: for what nothing announces to
/// a test (routing, a job's outcome, a receipt applied, a campaign's records settling); `what`
/// names the wait in the failure.
pub async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after 30 s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request that reached the [`Receiver`].
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// The value of header `name`, which the request must carry, as text.
    pub fn header(&self, name: &str) -> String {
        self.headers[name]
            .to_str()
            .expect("a header in text")
            .to_owned()
    }
}

/// A local HTTP server standing in for the far side of an outbound call: it records every
/// request and answers with the statuses it was told ([`Receiver::answer_next`]), then 200,
/// with the body `received` (or the one set with [`Receiver::reply_with`]).
pub struct Receiver {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<std::collections::VecDeque<u16>>>,
    reply: Arc<Mutex<Bytes>>,
    /// How long it waits (after recording a request) before it answers.
    delay: Arc<Mutex<Duration>>,
    /// While true, answers wait (after their request is recorded) until it turns false.
    held: tokio::sync::watch::Sender<bool>,
    /// Headers every answer carries.
    headers: Arc<Mutex<Vec<(String, String)>>>,
    /// How many requests have been recorded: what the waits wait on.
    arrived: tokio::sync::watch::Sender<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answers: Arc<Mutex<std::collections::VecDeque<u16>>> = Arc::default();
        let reply = Arc::new(Mutex::new(Bytes::from_static(b"received")));
        let delay: Arc<Mutex<Duration>> = Arc::default();
        let (held, hold) = tokio::sync::watch::channel(false);
        let headers: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let heading = Arc::clone(&headers);
        let (arrived, _) = tokio::sync::watch::channel(0usize);
        let counting = arrived.clone();
        let recorded = Arc::clone(&requests);
        let waiting = Arc::clone(&delay);
        let told = Arc::clone(&answers);
        let replying = Arc::clone(&reply);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = Arc::clone(&recorded);
                let told = Arc::clone(&told);
                let replying = Arc::clone(&replying);
                let waiting = Arc::clone(&waiting);
                let hold = hold.clone();
                let heading = Arc::clone(&heading);
                let counting = counting.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let recorded = Arc::clone(&recorded);
                            let told = Arc::clone(&told);
                            let reply = replying.lock().expect("the receiver's reply").clone();
                            let delay = *waiting.lock().expect("the receiver's delay");
                            let mut hold = hold.clone();
                            let extra = heading.lock().expect("the receiver's headers").clone();
                            let counting = counting.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                // The answer is decided before the request is counted: a
                                // test that saw N requests and then tells the next answers
                                // tells those of request N + 1 on.
                                let mut status = told
                                    .lock()
                                    .expect("the receiver's answers")
                                    .pop_front()
                                    .unwrap_or(200);
                                let number = {
                                    let mut log = recorded.lock().expect("the receiver's log");
                                    log.push(Received {
                                        method: parts.method.to_string(),
                                        path: parts.uri.path().to_owned(),
                                        headers: parts.headers,
                                        body,
                                    });
                                    log.len()
                                };
                                let reply = numbered(reply, number);
                                counting.send_modify(|count| *count += 1);
                                tokio::time::sleep(delay).await;
                                let _ = hold.wait_for(|held| !held).await;
                                if status == 0 {
                                    // Told to hang: a far side that never answers.
                                    tokio::time::sleep(Duration::from_secs(120)).await;
                                    status = 200;
                                }
                                let mut response = http::Response::new(Full::new(reply));
                                *response.status_mut() =
                                    http::StatusCode::from_u16(status).expect("a status");
                                for (name, value) in extra {
                                    response.headers_mut().insert(
                                        http::HeaderName::try_from(name).expect("a header name"),
                                        http::HeaderValue::try_from(value).expect("a header value"),
                                    );
                                }
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            requests,
            answers,
            reply,
            delay,
            held,
            headers,
            arrived,
            task,
        }
    }

    /// From now on, answers carry this header too.
    pub fn reply_header(&self, name: &str, value: &str) {
        self.headers
            .lock()
            .expect("the receiver's headers")
            .push((name.to_owned(), value.to_owned()));
    }

    /// Waits (up to 10 s) until `count` requests have arrived; all of them so far.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let mut arrived = self.arrived.subscribe();
        let waited =
            tokio::time::timeout(Duration::from_secs(10), arrived.wait_for(|n| *n >= count)).await;
        if !matches!(waited, Ok(Ok(_))) {
            panic!(
                "the receiver got {} requests, not {count}",
                self.received().len()
            );
        }
        self.received()
    }

    /// Waits (up to 30 s) until what has arrived satisfies `done`; all of it so far. `what`
    /// names the wait in the failure.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let mut arrived = self.arrived.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                arrived.borrow_and_update();
                let received = self.received();
                if done(&received) {
                    return received;
                }
                if arrived.changed().await.is_err() {
                    panic!("the receiver stopped");
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            panic!(
                "the receiver's {} requests never showed {what}",
                self.received().len()
            )
        })
    }

    /// From now on, answers come `by` after their request (a slow far side).
    pub fn delay_answers(&self, by: Duration) {
        *self.delay.lock().expect("the receiver's delay") = by;
    }

    /// From now on, each request is recorded but not answered until [`Receiver::release`]: a far
    /// side whose answer is still on its way while the test acts (calls back first, say).
    pub fn hold_answers(&self) {
        self.held.send_replace(true);
    }

    /// Answers what [`Receiver::hold_answers`] held, and what comes after at once.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// From now on, answers carry this body; `{n}` in it stands for the request's number (1 for
    /// the first), as a far side that gives each request an id of its own.
    pub fn reply_with(&self, body: &str) {
        *self.reply.lock().expect("the receiver's reply") = Bytes::from(body.to_owned());
    }

    /// The next requests are answered with these statuses, in order (then 200 again); 0 leaves
    /// a request unanswered.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.answers
            .lock()
            .expect("the receiver's answers")
            .extend(statuses);
    }

    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().expect("the receiver's log").clone()
    }
}

/// `reply` with `{n}` replaced by `number`.
fn numbered(reply: Bytes, number: usize) -> Bytes {
    match std::str::from_utf8(&reply) {
        Ok(text) if text.contains("{n}") => Bytes::from(text.replace("{n}", &number.to_string())),
        _ => reply,
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
