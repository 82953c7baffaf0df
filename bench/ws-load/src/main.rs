//! The load generator of `bench/workspace.sh` and `bench/customers.sh` (see BENCHMARKS.md).
//! Four commands:
//!
//! - `latency`: provisions tenant `bench` with a chat channel routed to one queue, connects
//!   `--agents` agent desktops (the workspace socket) and makes them ready, starts `--sessions`
//!   customer chats and has the agents accept them as they are offered. Then, for each rate in
//!   turn, it sends open-loop for `--seconds`:
//!   1. a probe `PUBLISH`ed straight into Redis on an agent's topic: the baseline, the host's
//!      floor for getting anything from Redis to an agent (pub/sub, hub, socket queue, frame);
//!   2. customer messages through the Chat API v3 (`POST {selfUri}/messages`), each of which
//!      the host commits to PostgreSQL, appends to the live state and pushes to the agent's log.
//!
//!   Each is timed from the moment it was scheduled to the frame at the agent's socket (an open
//!   loop: a slow server cannot slow the senders down and hide its own latency).
//! - `agents`: adds agents to tenant `bench` (run `latency` first) and writes their tokens.
//! - `idle`: opens idle connections to a host (workspace sockets, or HTTP/1.1 keep-alive
//!   connections that made one request each) and reports the host's resident memory before and
//!   after.
//! - `customers` (`bench/customers.sh`): how many waiting web-chat customers one host holds and
//!   what each costs. It provisions a tenant of its own, starts `--count` chat sessions through
//!   the Chat API (retrying a 503 and counting it), then has every customer wait as a widget
//!   does, `--kind` deciding how: `long-poll` keeps `GET {selfUri}/messages?after=N&timeout=25`
//!   open and asks again as soon as it answers; `socket` holds the customer WebSocket
//!   (`/nexus/v3/chat/sessions/{id}/socket`); `desktop` (the baseline) holds that many agent
//!   desktops on the workspace socket instead. It reports the host's resident memory before and
//!   after, the Redis commands per second while everyone waits idle (against the host alone
//!   before), the waits that failed and why, and then, for each rate in `--rates`, open loop,
//!   how long a customer's own message takes from its scheduled send to their waiting read or
//!   socket. Client connections are bound to several loopback source addresses
//!   (`--source`, `--per-source`): one address has too few ephemeral ports for 50,000.

mod customers;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TENANT: &str = "bench";
const QUEUE: &str = "bench";
/// How long the frames of a phase may trail its last send before they count as lost.
const DRAIN: Duration = Duration::from_secs(10);
/// Connections opened at once by `idle`.
const OPEN_CONCURRENCY: usize = 64;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Latency {
        #[arg(long)]
        url: String,
        #[arg(long)]
        admin_token: String,
        #[arg(long)]
        redis_url: String,
        /// The host's Redis key prefix (`redis_key_prefix`).
        #[arg(long)]
        prefix: String,
        /// Customer messages per second, one phase each, in this order.
        #[arg(long, value_delimiter = ',', default_value = "100,200,400,800")]
        rates: Vec<u32>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        agents: usize,
        #[arg(long, default_value_t = 64)]
        sessions: usize,
    },
    Agents {
        #[arg(long)]
        url: String,
        #[arg(long)]
        admin_token: String,
        #[arg(long)]
        count: usize,
        /// Where the tokens go, one per line.
        #[arg(long)]
        out: PathBuf,
    },
    Idle {
        #[arg(long)]
        url: String,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long)]
        count: usize,
        /// The host's process id, whose resident memory is read.
        #[arg(long)]
        pid: u32,
        /// Agent tokens, one per line (`--kind ws`): socket i uses token i.
        #[arg(long)]
        tokens: Option<PathBuf>,
        /// Connections opened and closed first, so that what the host keeps after its first
        /// connections (instance slots, buffers) is in the "before" figure.
        #[arg(long, default_value_t = 256)]
        warmup: usize,
    },
    Customers(customers::Args),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Agent desktops: `/nexus/v3/workspace/socket`.
    Ws,
    /// HTTP/1.1 keep-alive connections that made one `GET /hello/`.
    Http,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Latency {
            url,
            admin_token,
            redis_url,
            prefix,
            rates,
            seconds,
            agents,
            sessions,
        } => {
            let api = Arc::new(Api::new(url, admin_token)?);
            let setup = Setup {
                agents,
                sessions,
                redis_url,
                prefix,
            };
            latency(api, setup, &rates, Duration::from_secs(seconds)).await
        }
        Command::Agents {
            url,
            admin_token,
            count,
            out,
        } => {
            let api = Arc::new(Api::new(url, admin_token)?);
            let agents = add_agents(&api, TENANT, "idle", count, 1).await?;
            let tokens: Vec<String> = agents.into_iter().map(|a| a.token).collect();
            std::fs::write(&out, tokens.join("\n") + "\n")
                .with_context(|| format!("cannot write {}", out.display()))
        }
        Command::Idle {
            url,
            kind,
            count,
            pid,
            tokens,
            warmup,
        } => idle(&url, kind, count, pid, tokens, warmup).await,
        Command::Customers(args) => customers::run(args).await,
    }
}

/// The host's HTTP APIs.
struct Api {
    http: reqwest::Client,
    url: String,
    admin_token: String,
}

impl Api {
    fn new(url: String, admin_token: String) -> Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Api {
            http,
            url,
            admin_token,
        })
    }

    fn ws_url(&self) -> String {
        self.url.replacen("http", "ws", 1)
    }

    /// A call with a bearer token; the answer's `data`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(bearer);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(serde_json::from_str::<Value>(&text)
            .map(|answer| answer["data"].clone())
            .unwrap_or(Value::Null))
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Result<Value> {
        let path = format!("/nexus/v3/provisioning{path}");
        self.call(method, &path, &self.admin_token, Some(body))
            .await
    }
}

struct Agent {
    id: String,
    token: String,
}

async fn add_agents(
    api: &Api,
    tenant: &str,
    name: &str,
    count: usize,
    capacity: usize,
) -> Result<Vec<Agent>> {
    let created = futures::stream::iter(0..count)
        .map(|n| async move {
            let agent = api
                .admin(
                    Method::POST,
                    &format!("/tenants/{tenant}/agents"),
                    json!({"username": format!("{name}{n}"), "capacity": {"chat": capacity}}),
                )
                .await?;
            Ok(Agent {
                id: text(&agent["id"])?,
                token: text(&agent["token"])?,
            })
        })
        .buffered(OPEN_CONCURRENCY)
        .collect::<Vec<Result<Agent>>>()
        .await;
    created.into_iter().collect()
}

fn text(value: &Value) -> Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("expected a string, got {value}"))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A TCP connection to `host` from the loopback address `source`. One source address has about
/// 28,000 ephemeral ports for one destination; 50,000 connections need several.
async fn connect_from(host: SocketAddr, source: IpAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // A port an earlier phase left in TIME_WAIT may be taken again.
    socket.set_reuseaddr(true)?;
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("bind {source}"))?;
    Ok(socket.connect(host).await?)
}

/// The address of an `http://` or `ws://` URL whose host is an IP address.
fn socket_addr(url: &str) -> Result<SocketAddr> {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    authority
        .parse()
        .with_context(|| format!("expected an IP address and port in {url}"))
}

/// A WebSocket handshake, from the loopback address `source` if given.
async fn ws_connect(request: Request, source: Option<IpAddr>) -> Result<Ws> {
    let Some(source) = source else {
        return Ok(tokio_tungstenite::connect_async(request).await?.0);
    };
    let host = socket_addr(&request.uri().to_string())?;
    let stream = connect_from(host, source).await?;
    // tungstenite keeps each socket's read buffer resident (128 KiB by default): 50,000 sockets
    // would take 6 GiB of the load generator's memory for nothing.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (socket, _) = tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await?;
    Ok(socket)
}

/// Opens an agent desktop (from the loopback address `source`, if given) and reads its
/// `Connected`.
async fn open_desktop(ws_url: &str, token: &str, source: Option<IpAddr>) -> Result<Ws> {
    let mut request = format!("{ws_url}/nexus/v3/workspace/socket").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let opening = until_connected(request, source, "messageType");
    tokio::time::timeout(Duration::from_secs(30), opening)
        .await
        .map_err(|_| anyhow!("no Connected within 30 s"))?
}

/// When each probe or message reached an agent's socket, by its number.
#[derive(Default)]
struct Arrivals(Mutex<HashMap<u64, Instant>>);

impl Arrivals {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Instant>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `n` is new (a second arrival keeps the first's time).
    fn record(&self, n: u64, at: Instant) -> bool {
        let mut arrivals = self.lock();
        if arrivals.contains_key(&n) {
            return false;
        }
        arrivals.insert(n, at);
        true
    }

    fn get(&self, n: u64) -> Option<Instant> {
        self.lock().get(&n).copied()
    }
}

/// The numbers a frame carries: a probe's `n`, or the `bench <n>` of customer messages.
fn numbers_in(event: &Value) -> Vec<u64> {
    match event["messageType"].as_str() {
        Some("BenchProbe") => event["n"].as_u64().into_iter().collect(),
        Some("MessageLogUpdated") => event["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["text"].as_str()?.strip_prefix("bench ")?.parse().ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// An agent at work: records arrivals and accepts every chat it is offered.
fn run_desktop(
    mut socket: Ws,
    api: Arc<Api>,
    token: String,
    arrivals: Arc<Arrivals>,
    accepted: Arc<AtomicUsize>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(frame) = socket.next().await {
            let at = Instant::now();
            let text = match frame {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(err) => {
                    eprintln!("an agent's socket failed: {err}");
                    return;
                }
            };
            let Ok(event) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            for n in numbers_in(&event) {
                arrivals.record(n, at);
            }
            if event["notificationType"] == "Invited"
                && let Some(id) = event["interaction"]["id"].as_str()
            {
                let path = format!("/nexus/v3/workspace/media/chat/interactions/{id}/accept");
                let (api, token, accepted) = (api.clone(), token.clone(), accepted.clone());
                tokio::spawn(async move {
                    match api.call(Method::POST, &path, &token, None).await {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(err) => eprintln!("accept: {err:#}"),
                    }
                });
            }
        }
        eprintln!("an agent's socket closed");
    })
}

struct Customer {
    messages_url: String,
    token: String,
}

async fn start_customer(api: &Api, key: &str, n: usize) -> Result<Customer> {
    let response = api
        .http
        .post(format!("{}/nexus/v3/chat/sessions", api.url))
        .header("x-api-key", key)
        .json(
            &json!({"nickname": format!("visitor{n}"), "email": format!("visitor{n}@example.com")}),
        )
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if status.as_u16() != 201 {
        bail!("starting a chat: {status} {body}");
    }
    Ok(Customer {
        messages_url: format!("{}/messages", text(&body["data"]["selfUri"])?),
        token: text(&body["data"]["clientToken"])?,
    })
}

struct Setup {
    agents: usize,
    sessions: usize,
    redis_url: String,
    prefix: String,
}

/// Agents working every session, ready to be measured.
struct Floor {
    agents: Vec<Agent>,
    customers: Vec<Customer>,
    arrivals: Arc<Arrivals>,
    _desktops: Vec<JoinHandle<()>>,
}

async fn set_up(api: &Arc<Api>, setup: &Setup) -> Result<Floor> {
    api.admin(
        Method::POST,
        "/tenants",
        json!({"ccid": TENANT, "name": "Bench"}),
    )
    .await?;
    let channel = api
        .admin(
            Method::POST,
            &format!("/tenants/{TENANT}/channels"),
            json!({"type": "chat", "name": "web"}),
        )
        .await?;
    let key = api
        .admin(
            Method::POST,
            &format!("/tenants/{TENANT}/api-keys"),
            json!({"name": "widget", "permission": "chat"}),
        )
        .await?;
    let key = text(&key["key"])?;
    api.admin(
        Method::PUT,
        &format!("/tenants/{TENANT}/queues/{QUEUE}"),
        json!({}),
    )
    .await?;
    api.admin(
        Method::PUT,
        &format!(
            "/tenants/{TENANT}/channels/{}/routing",
            text(&channel["id"])?
        ),
        json!({"queue": QUEUE}),
    )
    .await?;

    let capacity = setup.sessions.div_ceil(setup.agents.max(1));
    let agents = add_agents(api, TENANT, "agent", setup.agents, capacity).await?;
    let arrivals = Arc::new(Arrivals::default());
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut desktops = Vec::new();
    for agent in &agents {
        let socket = open_desktop(&api.ws_url(), &agent.token, None).await?;
        desktops.push(run_desktop(
            socket,
            api.clone(),
            agent.token.clone(),
            arrivals.clone(),
            accepted.clone(),
        ));
        api.call(
            Method::POST,
            "/nexus/v3/workspace/media/chat/ready",
            &agent.token,
            None,
        )
        .await?;
    }
    let mut customers = Vec::new();
    for n in 0..setup.sessions {
        customers.push(start_customer(api, &key, n).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.load(Ordering::SeqCst) < setup.sessions {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} chats were accepted within 60 s",
                accepted.load(Ordering::SeqCst),
                setup.sessions
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Floor {
        agents,
        customers,
        arrivals,
        _desktops: desktops,
    })
}

/// One send of a phase: when it was scheduled, and whether it was accepted.
struct Sent {
    n: u64,
    scheduled: Instant,
    answered: Result<Duration>,
}

/// Calls `send(n)` `rate` times a second for `length`, each at its scheduled time whatever the
/// earlier ones are doing, numbering them from `first`.
async fn open_loop<F, Fut>(rate: u32, length: Duration, first: u64, send: F) -> Vec<Sent>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let count = u64::from(rate) * length.as_secs();
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let scheduled = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
        tokio::time::sleep_until(scheduled.into()).await;
        let n = first + i;
        let sending = send(n);
        tasks.spawn(async move {
            let answered = sending.await.map(|()| scheduled.elapsed());
            Sent {
                n,
                scheduled,
                answered,
            }
        });
    }
    let mut sent = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(done) = done {
            sent.push(done);
        }
    }
    sent
}

/// What a phase measured.
struct Figures {
    answered: Vec<Duration>,
    framed: Vec<Duration>,
    failed: usize,
    lost: usize,
}

/// Waits for the frames of `sent` (at most [`DRAIN`]) and sums the phase up.
async fn figures(sent: Vec<Sent>, arrivals: &Arrivals) -> Figures {
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline
        && sent
            .iter()
            .any(|s| s.answered.is_ok() && arrivals.get(s.n).is_none())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut figures = Figures {
        answered: Vec::new(),
        framed: Vec::new(),
        failed: 0,
        lost: 0,
    };
    for s in sent {
        match s.answered {
            Ok(answered) => figures.answered.push(answered),
            Err(err) => {
                if figures.failed == 0 {
                    eprintln!("a send failed: {err:#}");
                }
                figures.failed += 1;
                continue;
            }
        }
        match arrivals.get(s.n) {
            Some(at) => figures
                .framed
                .push(at.saturating_duration_since(s.scheduled)),
            None => figures.lost += 1,
        }
    }
    figures.answered.sort();
    figures.framed.sort();
    figures
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

async fn latency(api: Arc<Api>, setup: Setup, rates: &[u32], length: Duration) -> Result<()> {
    let floor = set_up(&api, &setup).await?;
    let redis = redis::Client::open(setup.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let topics: Arc<Vec<String>> = Arc::new(
        floor
            .agents
            .iter()
            .map(|a| format!("{}ws:topic:agent:{}", setup.prefix, a.id))
            .collect(),
    );
    let customers: Arc<Vec<Customer>> = Arc::new(floor.customers);
    let mut next = 0_u64;
    let mut rows = Vec::new();
    for &rate in rates {
        let topics = topics.clone();
        let probes = open_loop(rate, length, next, |n| {
            let mut redis = redis.clone();
            let topic = topics[n as usize % topics.len()].clone();
            async move {
                let payload = json!({"messageType": "BenchProbe", "n": n}).to_string();
                redis::cmd("PUBLISH")
                    .arg(topic)
                    .arg(payload)
                    .query_async::<i64>(&mut redis)
                    .await?;
                Ok(())
            }
        })
        .await;
        next += probes.len() as u64;
        let probes = figures(probes, &floor.arrivals).await;

        let sends = open_loop(rate, length, next, |n| {
            let customers = customers.clone();
            let http = api.http.clone();
            async move {
                let customer = &customers[n as usize % customers.len()];
                let response = http
                    .post(&customer.messages_url)
                    .header("x-nexus-client-key", &customer.token)
                    .json(&json!({"type": "Text", "text": format!("bench {n}")}))
                    .send()
                    .await?;
                if response.status().as_u16() != 200 {
                    bail!("{}: {}", response.status(), response.text().await?);
                }
                Ok(())
            }
        })
        .await;
        next += sends.len() as u64;
        let sends = figures(sends, &floor.arrivals).await;
        eprintln!(
            "{rate}/s: PUBLISH->frame p50 {:.2} ms; send->frame p50 {:.2} p99 {:.2} ms; {} failed, {} lost",
            percentile(&probes.framed, 0.5),
            percentile(&sends.framed, 0.5),
            percentile(&sends.framed, 0.99),
            sends.failed + probes.failed,
            sends.lost + probes.lost
        );
        rows.push((rate, probes, sends));
    }

    println!(
        "| customer messages/s | PUBLISH → frame p50 / p99 ms (baseline) | send answered p50 / p99 ms | send → agent frame p50 / p99 ms | frame vs PUBLISH p50 / p99 | frame vs answered p50 / p99 | failed / lost |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (rate, probes, sends) in &rows {
        let pair =
            |v: &[Duration]| format!("{:.2} / {:.2}", percentile(v, 0.5), percentile(v, 0.99));
        let ratio = |a: &[Duration], b: &[Duration]| {
            format!(
                "{:.2} / {:.2}",
                percentile(a, 0.5) / percentile(b, 0.5),
                percentile(a, 0.99) / percentile(b, 0.99)
            )
        };
        println!(
            "| {rate} | {} | {} | {} | {} | {} | {} / {} |",
            pair(&probes.framed),
            pair(&sends.answered),
            pair(&sends.framed),
            ratio(&sends.framed, &probes.framed),
            ratio(&sends.framed, &sends.answered),
            sends.failed + probes.failed,
            sends.lost + probes.lost,
        );
    }
    Ok(())
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for process {pid}"))
}

/// A connection held open: the task that keeps it (reading a socket, driving HTTP), and for
/// HTTP the handle that keeps the connection from closing.
struct Held {
    task: JoinHandle<()>,
    _sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn open_idle(url: &str, kind: Kind, token: Option<&str>) -> Result<Held> {
    match kind {
        Kind::Ws => {
            let token = token.ok_or_else(|| anyhow!("--kind ws needs --tokens"))?;
            let mut socket = open_desktop(&url.replacen("http", "ws", 1), token, None).await?;
            // Reading answers the host's pings, as an idle desktop does.
            let task = tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} });
            Ok(Held {
                task,
                _sender: None,
            })
        }
        Kind::Http => {
            let authority = url
                .strip_prefix("http://")
                .ok_or_else(|| anyhow!("expected an http:// URL, got {url}"))?;
            let stream = TcpStream::connect(authority).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let task = tokio::spawn(async move {
                let _ = connection.await;
            });
            let request = hyper::Request::get("/hello/")
                .header("host", authority)
                .body(Empty::<Bytes>::new())?;
            let response = sender.send_request(request).await?;
            if !response.status().is_success() {
                bail!("GET /hello/: {}", response.status());
            }
            response.into_body().collect().await?;
            Ok(Held {
                task,
                _sender: Some(sender),
            })
        }
    }
}

async fn open_many(url: &str, kind: Kind, count: usize, tokens: &[String]) -> Result<Vec<Held>> {
    let opened = futures::stream::iter(0..count)
        .map(|i| {
            let token = (!tokens.is_empty()).then(|| tokens[i % tokens.len()].as_str());
            open_idle(url, kind, token)
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect::<Vec<Result<Held>>>()
        .await;
    opened.into_iter().collect()
}

/// A gauge of the host's (`nexus_websockets_open`, `nexus_parked_requests`).
async fn gauge(url: &str, name: &str) -> Result<u64> {
    let metrics = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .ok_or_else(|| anyhow!("no {name} in /metrics"))
}

async fn idle(
    url: &str,
    kind: Kind,
    count: usize,
    pid: u32,
    tokens: Option<PathBuf>,
    warmup: usize,
) -> Result<()> {
    let tokens: Vec<String> = match tokens {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    let settle = Duration::from_secs(3);
    drop(open_many(url, kind, warmup, &tokens).await?);
    tokio::time::sleep(settle).await;
    let before = rss_kib(pid)?;
    let held = open_many(url, kind, count, &tokens).await?;
    tokio::time::sleep(settle).await;
    let after = rss_kib(pid)?;
    if kind == Kind::Ws {
        let open = gauge(url, "nexus_websockets_open").await?;
        if open < count as u64 {
            bail!("the host holds {open} sockets, not {count}");
        }
    }
    let per_connection = (after.saturating_sub(before) * 1024) / count.max(1) as u64;
    println!(
        "count={count} rss_before_kib={before} rss_after_kib={after} bytes_per_connection={per_connection}"
    );
    drop(held);
    Ok(())
}

/// Opens a WebSocket (from `source`, if given) and reads it up to its first text message, which
/// must be a JSON object whose `kind` field says `Connected`.
pub(crate) async fn until_connected(
    request: Request,
    source: Option<IpAddr>,
    kind: &str,
) -> Result<Ws> {
    let mut socket = ws_connect(request, source).await?;
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame? {
            let event: Value = serde_json::from_str(&text)?;
            if event[kind] == "Connected" {
                return Ok(socket);
            }
            bail!("the socket opened with {text}, not Connected");
        }
    }
    bail!("the socket closed before Connected")
}
