//! `customers`: how many waiting web-chat customers one host holds, and what each costs (see
//! `bench/customers.sh`). One run measures one kind of waiter on a fresh host:
//!
//! 1. provisions a tenant of its own (a chat channel without routing, so that nobody is queued
//!    and a wait is only a wait) and starts `--count` chat sessions through the Chat API, at
//!    most [`OPEN_CONCURRENCY`] at once, retrying a 503 (counted); for `desktop`, adds that many
//!    agents instead;
//! 2. opens `--warmup` waiters as the measured ones are opened, closes them and waits until the
//!    host's gauge is back, so that what the host keeps after its first waits (instance slots,
//!    allocator arenas) is in the "before" figure; reads the host's resident memory, and counts
//!    the Redis commands of an idle window with no one waiting (the host's own timers: its
//!    baseline);
//! 3. has every customer wait, in batches of `--concurrency` (the host answers 503 to a request
//!    that waits over 2 s for an instance slot), each batch waiting until the host's gauge
//!    (`nexus_parked_requests`, `nexus_websockets_open`) shows it; counts what failed, by
//!    reason; reads the resident memory again and counts the Redis commands of a second idle
//!    window;
//! 4. for each rate in `--rates`, for `--seconds`, open loop: a Text posted as a random waiting
//!    customer into their own session, timed from its scheduled send to its arrival at that
//!    customer's waiting read or socket.
//!
//! Every waiter checks that it sees each transcript position once, none skipped (only the
//! customer writes in these sessions). It prints `hold ...` and `rate ...` lines of
//! `key=value` for the script's tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::ValueEnum;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{
    Api, Arrivals, OPEN_CONCURRENCY, Ws, add_agents, connect_from, figures, gauge, open_desktop,
    open_loop, percentile, rss_kib, socket_addr, text, until_connected,
};

/// How long a waiting long-poll asks the host to wait, in seconds (as the widget does).
const POLL_SECONDS: u64 = 25;
/// How long the host's resident memory is left to settle before it is read.
const SETTLE: Duration = Duration::from_secs(3);
/// How long the host's gauge may take to show every waiter.
const GAUGE_WAIT: Duration = Duration::from_secs(60);
/// How long the host's gauge may take to show a batch of opened waiters.
const BATCH_WAIT: Duration = Duration::from_secs(10);
/// How many times a session start answered 503 (overloaded) is tried again.
const START_TRIES: u32 = 10;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Waiter {
    /// `GET {selfUri}/messages?after=N&timeout=25`, asked again as soon as it answers.
    LongPoll,
    /// The customer WebSocket, `/nexus/v3/chat/sessions/{id}/socket`.
    Socket,
    /// Agent desktops on `/nexus/v3/workspace/socket` (the baseline).
    Desktop,
}

impl Waiter {
    fn name(self) -> &'static str {
        match self {
            Waiter::LongPoll => "long-poll",
            Waiter::Socket => "socket",
            Waiter::Desktop => "desktop",
        }
    }

    /// The host's gauge that counts this kind of waiter.
    fn gauge(self) -> &'static str {
        match self {
            Waiter::LongPoll => "nexus_parked_requests",
            Waiter::Socket | Waiter::Desktop => "nexus_websockets_open",
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    url: String,
    #[arg(long)]
    admin_token: String,
    /// The Redis the host uses: its command counts are read there.
    #[arg(long)]
    redis_url: String,
    #[arg(long, value_enum)]
    kind: Waiter,
    /// Waiting customers (or agent desktops).
    #[arg(long)]
    count: usize,
    /// The host's process id, whose resident memory and Redis connections are read.
    #[arg(long)]
    pid: u32,
    /// Customer messages per second, one phase each, in this order (not for `desktop`).
    #[arg(long, value_delimiter = ',', default_value = "200,800")]
    rates: Vec<u32>,
    /// The length of each rate's phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The length of each idle window whose Redis commands are counted. A long-poll's window is
    /// at least 30 s, so that every read times out and is asked again once in it.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// The first loopback address client connections are bound to; the next ones follow.
    #[arg(long, default_value = "127.0.0.2")]
    source: Ipv4Addr,
    /// Client connections per source address (a source address has ~28,000 ports to give).
    #[arg(long, default_value_t = 20_000)]
    per_source: usize,
    /// Waiters opening at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Waiters opened and closed before the "before" figures.
    #[arg(long, default_value_t = 256)]
    warmup: usize,
}

/// A customer's chat session.
struct Chat {
    id: String,
    token: String,
    /// The last position of the transcript when the session started.
    position: i64,
}

/// Counts of failures by reason; the first error of each reason is printed in full.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, stage: &str, err: &anyhow::Error) {
        let reason = format!("{stage}:{}", reason(err));
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(reason.clone()).or_insert(0);
        if *count == 0 {
            eprintln!("{reason}: {err:#}");
        }
        *count += 1;
    }

    fn total(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    /// `reason=count,...`, or `none`: one word, for the `key=value` lines.
    fn summary(&self) -> String {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.is_empty() {
            return "none".into();
        }
        counts
            .iter()
            .map(|(reason, count)| format!("{reason}={count}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An answer other than the one expected, or no answer in time.
#[derive(Debug)]
enum Failure {
    Status(u16, String),
    Timeout(&'static str),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(status, body) => write!(f, "{status} {body}"),
            Failure::Timeout(what) => write!(f, "no {what} in time"),
        }
    }
}

impl std::error::Error for Failure {}

/// A short reason for an error, to count errors by.
fn reason(err: &anyhow::Error) -> String {
    for cause in err.chain() {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return match failure {
                Failure::Status(status, _) => format!("status-{status}"),
                Failure::Timeout(_) => "timeout".into(),
            };
        }
        if let Some(tungstenite::Error::Http(response)) = cause.downcast_ref::<tungstenite::Error>()
        {
            return format!("upgrade-refused-{}", response.status().as_u16());
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("{:?}", io.kind());
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            return if hyper.is_closed() || hyper.is_incomplete_message() {
                "connection-closed".into()
            } else {
                "http-error".into()
            };
        }
    }
    "other".into()
}

/// What every waiter shares.
#[derive(Default)]
struct Shared {
    arrivals: Arrivals,
    /// Messages that came a second time.
    duplicates: AtomicU64,
    /// Long-poll answers.
    answers: AtomicU64,
    /// Waiters whose connection ended while they waited.
    dropped: AtomicU64,
    /// Transcript positions a waiter never saw: a later one came and the earlier never did.
    /// Only customer texts are written in these sessions, so a customer sees every position.
    skipped: AtomicU64,
    /// What went wrong while waiting.
    failures: Tally,
}

impl Shared {
    /// Notes that position `position` came, after `last` (the highest one seen before).
    fn saw(&self, last: &mut i64, position: i64) {
        if position > *last + 1 {
            self.skipped
                .fetch_add((position - *last - 1).unsigned_abs(), Ordering::Relaxed);
        }
        *last = (*last).max(position);
    }

    fn arrived(&self, text: &str, at: Instant) {
        if let Some(n) = text
            .strip_prefix("bench ")
            .and_then(|n| n.parse::<u64>().ok())
            && !self.arrivals.record(n, at)
        {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A task that ends when this is dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything a waiter needs to open.
struct Run {
    kind: Waiter,
    url: String,
    host: SocketAddr,
    chats: Vec<Arc<Chat>>,
    tokens: Vec<String>,
    shared: Arc<Shared>,
    source: Ipv4Addr,
    per_source: usize,
    /// The host's gauge before any waiter (its own, if any).
    base_gauge: u64,
}

impl Run {
    /// The loopback address waiter `i` connects from.
    fn source(&self, i: usize) -> IpAddr {
        let offset = u32::try_from(i / self.per_source.max(1)).unwrap_or(u32::MAX);
        IpAddr::V4(Ipv4Addr::from(
            u32::from(self.source).saturating_add(offset),
        ))
    }

    /// Opens waiter `i`: a long-poll waits with `poll_seconds`.
    async fn open(&self, i: usize, poll_seconds: u64) -> Result<Task> {
        let source = self.source(i);
        let shared = self.shared.clone();
        match self.kind {
            Waiter::LongPoll => {
                let chat = self.chats[i].clone();
                let (sender, connection, after) = connect_poller(self.host, source, &chat).await?;
                let host = self.host;
                Ok(Task(tokio::spawn(async move {
                    let _connection = connection;
                    poll(sender, host, &chat, after, poll_seconds, &shared).await;
                })))
            }
            Waiter::Socket => {
                let chat = &self.chats[i];
                let socket = open_customer_socket(&self.url, source, chat).await?;
                let after = chat.position;
                Ok(Task(tokio::spawn(async move {
                    read_socket(socket, Some(after), &shared).await;
                })))
            }
            Waiter::Desktop => {
                let ws_url = self.url.replacen("http", "ws", 1);
                let socket = open_desktop(&ws_url, &self.tokens[i], Some(source)).await?;
                Ok(Task(tokio::spawn(async move {
                    read_socket(socket, None, &shared).await;
                })))
            }
        }
    }

    /// Opens waiters `0..count`, `concurrency` at a time: the ones that opened, by index, and
    /// the failures. Each batch waits until the host's gauge shows it (at most
    /// [`BATCH_WAIT`]) before the next begins: a long-poll's first read and its waiting read
    /// are two requests, and without the wait the next batch's first reads would run beside
    /// this batch's waiting reads, taking instance slots (each keeps memory resident) that the
    /// warm-up, a batch of its own, never took.
    async fn open_many(
        &self,
        count: usize,
        concurrency: usize,
        poll_seconds: u64,
    ) -> Result<(Vec<(usize, Task)>, Tally)> {
        let failures = Tally::default();
        let batch = concurrency.max(1);
        let mut held = Vec::new();
        let mut start = 0;
        while start < count {
            let end = (start + batch).min(count);
            let opened = futures::stream::iter(start..end)
                .map(|i| async move { (i, self.open(i, poll_seconds).await) })
                .buffer_unordered(batch)
                .collect::<Vec<_>>()
                .await;
            for (i, result) in opened {
                match result {
                    Ok(task) => held.push((i, task)),
                    Err(err) => failures.add("open", &err),
                }
            }
            // Reads asked again meanwhile (a long-poll's timeout, a failure) are not parked for
            // a moment: a little slack.
            let expected = held.len() as u64 + self.base_gauge;
            let slack = (batch as u64 / 8).max(1);
            wait_for_gauge(
                &self.url,
                self.kind.gauge(),
                |seen| seen + slack >= expected,
                BATCH_WAIT,
            )
            .await?;
            start = end;
        }
        held.sort_by_key(|(i, _)| *i);
        Ok((held, failures))
    }

    /// A warm-up: `count` waiters opened as the measured ones are, then closed; it ends when
    /// the host's gauge is back where it was (at most [`GAUGE_WAIT`]).
    async fn warm_up(&self, count: usize, concurrency: usize) -> Result<()> {
        let count = count.min(self.chats.len().max(self.tokens.len()));
        let (held, failures) = self.open_many(count, concurrency, POLL_SECONDS).await?;
        if failures.total() > 0 {
            bail!("the warm-up failed: {}", failures.summary());
        }
        drop(held);
        let base = self.base_gauge;
        let seen = wait_for_gauge(
            &self.url,
            self.kind.gauge(),
            |seen| seen <= base,
            GAUGE_WAIT,
        )
        .await?;
        if seen > base {
            eprintln!(
                "{} {count} warm-up waiters closed, but the host's {} still shows {seen} after {} s",
                self.kind.name(),
                self.kind.gauge(),
                GAUGE_WAIT.as_secs()
            );
        }
        Ok(())
    }
}

/// A long-poll's connection, after a first read that does not wait: it proves the session and
/// its token, and says where the transcript ends. The sender, the connection's task, and the
/// position to wait after.
async fn connect_poller(
    host: SocketAddr,
    source: IpAddr,
    chat: &Chat,
) -> Result<(SendRequest<Empty<Bytes>>, Task, i64)> {
    let stream = connect_from(host, source).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let connection = Task(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let data = read(&mut sender, host, chat, chat.position, 0).await?;
    let after = data["nextPosition"]
        .as_i64()
        .ok_or_else(|| anyhow!("no nextPosition in {data}"))?;
    Ok((sender, connection, after))
}

/// One transcript read: the answer's `data`.
async fn read(
    sender: &mut SendRequest<Empty<Bytes>>,
    host: SocketAddr,
    chat: &Chat,
    after: i64,
    timeout: u64,
) -> Result<Value> {
    let request = hyper::Request::get(format!(
        "/nexus/v3/chat/sessions/{}/messages?after={after}&timeout={timeout}",
        chat.id
    ))
    .header("host", host.to_string())
    .header("x-nexus-client-key", &chat.token)
    .body(Empty::<Bytes>::new())?;
    let answer = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        if status != 200 {
            return Err(
                Failure::Status(status, String::from_utf8_lossy(&body).into_owned()).into(),
            );
        }
        let answer: Value = serde_json::from_slice(&body)?;
        Ok(answer["data"].clone())
    };
    // The host answers a waiting read at its timeout; a read still unanswered well past it is
    // lost.
    tokio::time::timeout(Duration::from_secs(timeout + 20), answer)
        .await
        .map_err(|_| Failure::Timeout("transcript read"))?
}

/// A widget's long-poll: reads, waiting up to `poll_seconds`, and asks again as soon as the
/// host answers, from where the answer ends. Another status is counted and asked again a
/// second later, as a widget does; a lost connection ends the waiter.
async fn poll(
    mut sender: SendRequest<Empty<Bytes>>,
    host: SocketAddr,
    chat: &Chat,
    mut after: i64,
    poll_seconds: u64,
    shared: &Shared,
) {
    let mut last = after;
    loop {
        match read(&mut sender, host, chat, after, poll_seconds).await {
            Ok(data) => {
                let at = Instant::now();
                shared.answers.fetch_add(1, Ordering::Relaxed);
                for message in data["messages"].as_array().into_iter().flatten() {
                    if let Some(position) = message["position"].as_i64() {
                        shared.saw(&mut last, position);
                    }
                    if let Some(text) = message["text"].as_str() {
                        shared.arrived(text, at);
                    }
                }
                match data["nextPosition"].as_i64() {
                    Some(next) => after = next,
                    None => {
                        shared
                            .failures
                            .add("wait", &anyhow!("no nextPosition in {data}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            Err(err) => {
                shared.failures.add("wait", &err);
                let status = err
                    .downcast_ref::<Failure>()
                    .is_some_and(|f| matches!(f, Failure::Status(..)));
                if !status {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Opens a customer's WebSocket and reads its `Connected`.
async fn open_customer_socket(url: &str, source: IpAddr, chat: &Chat) -> Result<Ws> {
    let request = format!(
        "{}/nexus/v3/chat/sessions/{}/socket?clientToken={}&after={}",
        url.replacen("http", "ws", 1),
        chat.id,
        chat.token,
        chat.position
    )
    .into_client_request()?;
    let opening = until_connected(request, Some(source), "type");
    tokio::time::timeout(Duration::from_secs(30), opening)
        .await
        .map_err(|_| Failure::Timeout("Connected"))?
}

/// Reads a waiting socket until it ends (reading also answers the host's pings), noting each
/// message's arrival (a customer's `Message` event) and, from `after` on, its position.
async fn read_socket(mut socket: Ws, after: Option<i64>, shared: &Shared) {
    let mut last = after;
    while let Some(frame) = socket.next().await {
        let at = Instant::now();
        let text = match frame {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(close)) => {
                let err = anyhow!("the host closed the socket: {close:?}");
                shared.failures.add("wait", &err);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(_) => continue,
            Err(err) => {
                shared.failures.add("wait", &err.into());
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Ok(event) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if event["type"] != "Message" {
            continue;
        }
        if let (Some(last), Some(position)) = (&mut last, event["position"].as_i64()) {
            shared.saw(last, position);
        }
        if let Some(text) = event["message"]["text"].as_str() {
            shared.arrived(text, at);
        }
    }
    shared
        .failures
        .add("wait", &anyhow!("the socket ended without a close"));
    shared.dropped.fetch_add(1, Ordering::Relaxed);
}

/// A tenant with a chat channel that routes nowhere, and its chat API key.
async fn provision(api: &Api, tenant: &str) -> Result<String> {
    api.admin(
        Method::POST,
        "/tenants",
        json!({"ccid": tenant, "name": "Customers bench"}),
    )
    .await?;
    api.admin(
        Method::POST,
        &format!("/tenants/{tenant}/channels"),
        json!({"type": "chat", "name": "web"}),
    )
    .await?;
    let key = api
        .admin(
            Method::POST,
            &format!("/tenants/{tenant}/api-keys"),
            json!({"name": "widget", "permission": "chat"}),
        )
        .await?;
    text(&key["key"])
}

/// Starts chat `n`, trying a 503 again (each retry counted in `retries`).
async fn start_chat(api: &Api, key: &str, n: usize, retries: &AtomicU64) -> Result<Chat> {
    let mut tries = 0;
    loop {
        tries += 1;
        let response = api
            .http
            .post(format!("{}/nexus/v3/chat/sessions", api.url))
            .header("x-api-key", key)
            .json(&json!({"nickname": format!("customer{n}")}))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        if status == 503 && tries < START_TRIES {
            retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if status != 201 {
            return Err(Failure::Status(status, body).into());
        }
        let body: Value = serde_json::from_str(&body)?;
        let data = &body["data"];
        let position = data["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["position"].as_i64())
            .max()
            .unwrap_or(0);
        return Ok(Chat {
            id: text(&data["sessionId"])?,
            token: text(&data["clientToken"])?,
            position,
        });
    }
}

/// How the sessions' start went.
struct Started {
    chats: Vec<Arc<Chat>>,
    retries: u64,
    failures: Tally,
    seconds: f64,
}

async fn start_chats(api: &Api, key: &str, count: usize) -> Started {
    let retries = AtomicU64::new(0);
    let began = Instant::now();
    let results = futures::stream::iter(0..count)
        .map(|n| start_chat(api, key, n, &retries))
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let failures = Tally::default();
    let mut chats = Vec::new();
    for result in results {
        match result {
            Ok(chat) => chats.push(Arc::new(chat)),
            Err(err) => failures.add("start", &err),
        }
    }
    Started {
        chats,
        retries: retries.into_inner(),
        failures,
        seconds: began.elapsed().as_secs_f64(),
    }
}

/// Redis commands per second over a window: all of the server's (`INFO commandstats`, whoever
/// sent them), and those sent on the host's own connections (counted with `MONITOR`, so that
/// another client of the same Redis, a test suite say, cannot pass for the host).
struct RedisRate {
    seconds: f64,
    all: f64,
    host: f64,
}

/// The calls of every command in `INFO commandstats` but `INFO` itself (the window's own).
async fn commands_so_far(redis: &mut redis::aio::MultiplexedConnection) -> Result<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await?;
    Ok(info
        .lines()
        .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:"))
        .filter_map(|line| {
            line.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

/// The local ports of the host's connections to Redis (from `/proc`): its sockets' inodes,
/// matched with the TCP table's entries whose remote port is Redis's.
fn host_redis_ports(pid: u32, redis_port: u16) -> Result<HashSet<u16>> {
    let mut inodes = HashSet::new();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("cannot list the descriptors of process {pid}"))?;
    for fd in fds.flatten() {
        if let Ok(link) = std::fs::read_link(fd.path())
            && let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u64>().ok())
        {
            inodes.insert(inode);
        }
    }
    let port_of = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|port| u16::from_str_radix(port, 16).ok())
    };
    let mut ports = HashSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(lines) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in lines.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(inode)) =
                (fields.get(1), fields.get(2), fields.get(9))
            else {
                continue;
            };
            if port_of(remote) == Some(redis_port)
                && inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i))
                && let Some(port) = port_of(local)
            {
                ports.insert(port);
            }
        }
    }
    Ok(ports)
}

/// Counts Redis commands for `length`.
async fn redis_rate(
    client: &redis::Client,
    pid: u32,
    redis_port: u16,
    length: Duration,
) -> Result<RedisRate> {
    let mut redis = client.get_multiplexed_async_connection().await?;
    let mut monitor = client
        .get_async_monitor()
        .await?
        .into_on_message::<String>();
    let mut ports = host_redis_ports(pid, redis_port)?;
    let before = commands_so_far(&mut redis).await?;
    let began = Instant::now();
    let deadline = tokio::time::Instant::now() + length;
    let mut by_port: HashMap<u16, u64> = HashMap::new();
    loop {
        match tokio::time::timeout_at(deadline, monitor.next()).await {
            // `<time> [<db> <address>:<port>] "COMMAND" ...`; a script's own calls show
            // `[<db> lua]` and are not counted: the script is.
            Ok(Some(line)) => {
                if let Some(port) = line
                    .split_once('[')
                    .and_then(|(_, rest)| rest.split_once(']'))
                    .and_then(|(client, _)| client.rsplit(':').next())
                    .and_then(|port| port.parse::<u16>().ok())
                {
                    *by_port.entry(port).or_default() += 1;
                }
            }
            Ok(None) => bail!("the MONITOR connection closed"),
            Err(_) => break,
        }
    }
    let after = commands_so_far(&mut redis).await?;
    let seconds = began.elapsed().as_secs_f64();
    // Connections the host opened during the window count too.
    ports.extend(host_redis_ports(pid, redis_port)?);
    let host: u64 = by_port
        .iter()
        .filter(|(port, _)| ports.contains(port))
        .map(|(_, count)| count)
        .sum();
    Ok(RedisRate {
        seconds,
        all: after.saturating_sub(before) as f64 / seconds,
        host: host as f64 / seconds,
    })
}

/// A pseudo-random number from `n` (splitmix64): which waiting customer sends message `n`.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Waits until the host's gauge satisfies `done` (at most `wait`); what it last showed.
async fn wait_for_gauge(
    url: &str,
    name: &str,
    done: impl Fn(u64) -> bool,
    wait: Duration,
) -> Result<u64> {
    let deadline = Instant::now() + wait;
    loop {
        let seen = gauge(url, name).await?;
        if done(seen) || Instant::now() > deadline {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(args: Args) -> Result<()> {
    let api = Arc::new(Api::new(args.url.clone(), args.admin_token.clone())?);
    let host = socket_addr(&args.url)?;
    let kind = args.kind;
    let tenant = format!("customers-{}-{}", kind.name(), args.count);
    let redis = redis::Client::open(args.redis_url.as_str())?;
    let redis_port = match redis.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(_, port) => *port,
        _ => bail!("expected a redis:// URL over TCP, got {}", args.redis_url),
    };

    let key = provision(&api, &tenant).await?;
    let mut started = Started {
        chats: Vec::new(),
        retries: 0,
        failures: Tally::default(),
        seconds: 0.0,
    };
    let mut tokens = Vec::new();
    if kind == Waiter::Desktop {
        let began = Instant::now();
        tokens = add_agents(&api, &tenant, "desk", args.count, 1)
            .await?
            .into_iter()
            .map(|agent| agent.token)
            .collect();
        started.seconds = began.elapsed().as_secs_f64();
    } else {
        started = start_chats(&api, &key, args.count).await;
    }
    let ready = started.chats.len().max(tokens.len());
    eprintln!(
        "{} {}: {ready} ready in {:.1} s ({} retries after 503, {} failed: {})",
        kind.name(),
        args.count,
        started.seconds,
        started.retries,
        started.failures.total(),
        started.failures.summary()
    );

    let shared = Arc::new(Shared::default());
    let run = Run {
        kind,
        url: args.url.clone(),
        host,
        chats: started.chats,
        tokens,
        shared: shared.clone(),
        source: args.source,
        per_source: args.per_source,
        base_gauge: gauge(&args.url, kind.gauge()).await?,
    };
    run.warm_up(args.warmup, args.concurrency).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_before = rss_kib(args.pid)?;
    let base_window = Duration::from_secs(args.idle_seconds);
    let base = redis_rate(&redis, args.pid, redis_port, base_window).await?;

    let began = Instant::now();
    let (held, open_failures) = run.open_many(ready, args.concurrency, POLL_SECONDS).await?;
    let open_seconds = began.elapsed().as_secs_f64();
    let expected = held.len() as u64 + run.base_gauge;
    let host_gauge =
        wait_for_gauge(&args.url, kind.gauge(), |seen| seen >= expected, GAUGE_WAIT).await?;
    eprintln!(
        "{} {}: {} waiting after {open_seconds:.1} s ({} failed: {}); the host's {} shows {host_gauge}",
        kind.name(),
        args.count,
        held.len(),
        open_failures.total(),
        open_failures.summary(),
        kind.gauge()
    );
    tokio::time::sleep(SETTLE).await;
    let rss_after = rss_kib(args.pid)?;
    let window = if kind == Waiter::LongPoll {
        base_window.max(Duration::from_secs(POLL_SECONDS + 5))
    } else {
        base_window
    };
    let answers_before = shared.answers.load(Ordering::Relaxed);
    let idle = redis_rate(&redis, args.pid, redis_port, window).await?;
    let answers_per_s = shared
        .answers
        .load(Ordering::Relaxed)
        .saturating_sub(answers_before) as f64
        / idle.seconds;
    let per_waiter = (rss_after.saturating_sub(rss_before) * 1024) / held.len().max(1) as u64;
    eprintln!(
        "{} {}: RSS {rss_before} -> {rss_after} KiB ({per_waiter} B each); Redis commands/s all {:.1} -> {:.1}, the host's {:.1} -> {:.1}",
        kind.name(),
        args.count,
        base.all,
        idle.all,
        base.host,
        idle.host
    );

    let mut rows = Vec::new();
    if kind != Waiter::Desktop && !held.is_empty() {
        let waiting: Arc<Vec<Arc<Chat>>> =
            Arc::new(held.iter().map(|(i, _)| run.chats[*i].clone()).collect());
        let mut next = 0_u64;
        for &rate in &args.rates {
            let duplicates_before = shared.duplicates.load(Ordering::Relaxed);
            let skipped_before = shared.skipped.load(Ordering::Relaxed);
            let sent = open_loop(rate, Duration::from_secs(args.seconds), next, |n| {
                let chat = waiting[(mix(n) % waiting.len() as u64) as usize].clone();
                let http = api.http.clone();
                let url = format!("{}/nexus/v3/chat/sessions/{}/messages", api.url, chat.id);
                async move {
                    let response = http
                        .post(url)
                        .header("x-nexus-client-key", &chat.token)
                        .json(&json!({"type": "Text", "text": format!("bench {n}")}))
                        .send()
                        .await?;
                    let status = response.status().as_u16();
                    if status != 200 {
                        return Err(Failure::Status(status, response.text().await?).into());
                    }
                    Ok(())
                }
            })
            .await;
            next += sent.len() as u64;
            let count = sent.len();
            let phase = figures(sent, &shared.arrivals).await;
            let duplicates = shared.duplicates.load(Ordering::Relaxed) - duplicates_before;
            let skipped = shared.skipped.load(Ordering::Relaxed) - skipped_before;
            eprintln!(
                "{} {} at {rate}/s: {count} sent, {} failed, {} delivered, {} lost, {duplicates} twice, {skipped} positions skipped; send -> customer p50 {:.2} p99 {:.2} ms",
                kind.name(),
                args.count,
                phase.failed,
                phase.framed.len(),
                phase.lost,
                percentile(&phase.framed, 0.5),
                percentile(&phase.framed, 0.99)
            );
            rows.push(format!(
                "rate kind={} count={} rate={rate} sent={count} failed={} delivered={} lost={} duplicates={duplicates} skipped={skipped} answered_p50={:.2} answered_p99={:.2} p50={:.2} p99={:.2}",
                kind.name(),
                args.count,
                phase.failed,
                phase.framed.len(),
                phase.lost,
                percentile(&phase.answered, 0.5),
                percentile(&phase.answered, 0.99),
                percentile(&phase.framed, 0.5),
                percentile(&phase.framed, 0.99),
            ));
        }
    }

    // What the host holds once the last phase has settled: every waiter not dropped.
    let remaining = expected.saturating_sub(shared.dropped.load(Ordering::Relaxed));
    let still = wait_for_gauge(
        &args.url,
        kind.gauge(),
        |seen| seen >= remaining,
        GAUGE_WAIT,
    )
    .await?;
    println!(
        "hold kind={} count={} ready={ready} start_seconds={:.1} start_retries={} start_failed={} start_failures={} held={} open_seconds={open_seconds:.1} open_failed={} open_failures={} host_gauge={host_gauge} host_gauge_end={still} rss_before_kib={rss_before} rss_after_kib={rss_after} bytes_per_waiter={per_waiter} base_seconds={:.1} base_all_cps={:.1} base_host_cps={:.1} idle_seconds={:.1} idle_all_cps={:.1} idle_host_cps={:.1} answers_per_s={answers_per_s:.1} dropped={} wait_failures={}",
        kind.name(),
        args.count,
        started.seconds,
        started.retries,
        started.failures.total(),
        started.failures.summary(),
        held.len(),
        open_failures.total(),
        open_failures.summary(),
        base.seconds,
        base.all,
        base.host,
        idle.seconds,
        idle.all,
        idle.host,
        shared.dropped.load(Ordering::Relaxed),
        shared.failures.summary(),
    );
    for row in rows {
        println!("{row}");
    }
    drop(held);
    Ok(())
}
