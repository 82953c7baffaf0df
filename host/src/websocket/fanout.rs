//! Cross-node delivery for the WebSocket hub: Redis pub/sub.
//!
//! Publishing goes through the platform's Redis backend, as a component's `PUBLISH` would, so
//! the embedded store and a real server behave alike. Subscribing needs a connection of its
//! own: with a real Redis, one pub/sub connection per node, re-established (and every channel
//! subscribed again) when it drops; with the embedded store, its in-process subscriptions.
//!
//! Pub/sub keeps nothing: what is published while a node's subscription is down is lost to that
//! node. So when the subscription drops, the hub is told ([`Event::Interrupted`]) and closes
//! its subscribed sockets, whose clients reconnect and catch up from the application's own
//! event log rather than silently missing events.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;

use crate::redis::embedded::EmbeddedRedis;
use crate::redis::{RedisBackend, RedisBackends};

/// How long the host waits at start for its first pub/sub connection before serving anyway.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(5);
/// The longest pause between attempts to re-establish the pub/sub connection.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// How long a subscription waits for a lost pub/sub connection to come back before it fails:
/// longer than one reconnect pause, so that a Redis restart is waited out.
const RECONNECT_WAIT: Duration = Duration::from_secs(6);

/// What the subscription side reports to the hub.
#[derive(Debug)]
pub enum Event {
    /// A message arrived on a subscribed channel.
    Message { channel: String, payload: Vec<u8> },
    /// This node fell behind on `channel` and messages were dropped.
    Lagged { channel: String },
    /// The subscription connection dropped: anything published meanwhile was missed.
    Interrupted,
    /// The subscription connection is up, with every channel and prefix subscribed again.
    Connected,
}

type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// Publishing and subscribing for one node.
pub struct Fanout {
    publisher: Arc<RedisBackends>,
    publish_address: String,
    subscriber: Subscriber,
    events: OnceLock<EventSink>,
}

enum Subscriber {
    Embedded {
        store: Arc<EmbeddedRedis>,
        /// A task per subscribed channel, and per subscribed prefix (keyed `prefix*`).
        tasks: Mutex<HashMap<String, AbortHandle>>,
    },
    Redis(Arc<RedisSubscriber>),
}

struct RedisSubscriber {
    client: redis::Client,
    sink: Mutex<Option<PubSubSink>>,
    /// Whether the pub/sub connection is up (and every wanted channel subscribed on it).
    connected: tokio::sync::watch::Sender<bool>,
    /// Every channel this node wants, so that a new connection subscribes them all again.
    wanted: Mutex<HashSet<String>>,
    /// Every pattern (`PSUBSCRIBE`) this node wants, likewise.
    wanted_patterns: Mutex<HashSet<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fanout {
    /// Fan-out through the embedded store.
    pub fn embedded(
        store: Arc<EmbeddedRedis>,
        publisher: Arc<RedisBackends>,
        publish_address: String,
    ) -> Fanout {
        Fanout {
            publisher,
            publish_address,
            subscriber: Subscriber::Embedded {
                store,
                tasks: Mutex::new(HashMap::new()),
            },
            events: OnceLock::new(),
        }
    }

    /// Fan-out through the Redis server at `url`.
    pub fn redis(url: &str, publisher: Arc<RedisBackends>) -> anyhow::Result<Fanout> {
        let client = redis::Client::open(url).map_err(|err| {
            anyhow::anyhow!(
                "REDIS_URL `{}` cannot be used for pub/sub: {err}",
                crate::allowed_hosts::redact_credentials(url)
            )
        })?;
        Ok(Fanout {
            publisher,
            publish_address: url.to_owned(),
            subscriber: Subscriber::Redis(Arc::new(RedisSubscriber {
                client,
                sink: Mutex::new(None),
                connected: tokio::sync::watch::channel(false).0,
                wanted: Mutex::new(HashSet::new()),
                wanted_patterns: Mutex::new(HashSet::new()),
            })),
            events: OnceLock::new(),
        })
    }

    /// Starts receiving; `events` is called for everything that arrives.
    pub async fn start(
        &self,
        events: impl Fn(Event) + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        let events: EventSink = Arc::new(events);
        if self.events.set(Arc::clone(&events)).is_err() {
            anyhow::bail!("the fan-out was started twice");
        }
        if let Subscriber::Redis(subscriber) = &self.subscriber {
            let mut first = subscriber.connected.subscribe();
            tokio::spawn(Arc::clone(subscriber).supervise(events));
            if tokio::time::timeout(FIRST_CONNECT_WAIT, first.wait_for(|up| *up))
                .await
                .is_err()
            {
                tracing::warn!(
                    "no Redis pub/sub connection yet: WebSocket topics wait for Redis; serving anyway"
                );
            }
        }
        Ok(())
    }

    /// Subscribes this node to `channel`; returns once Redis has confirmed it. While the pub/sub
    /// connection is down (Redis restarting, say), it waits a while for it to come back, so that
    /// a client that reconnects at once is served rather than refused.
    pub async fn subscribe(&self, channel: &str) -> Result<(), String> {
        self.subscribe_within(channel, RECONNECT_WAIT).await
    }

    async fn subscribe_within(&self, channel: &str, wait: Duration) -> Result<(), String> {
        match &self.subscriber {
            Subscriber::Embedded { store, tasks } => {
                let Some(events) = self.events.get().cloned() else {
                    return Err("the fan-out is not started".into());
                };
                let mut tasks = lock(tasks);
                if tasks.contains_key(channel) {
                    return Ok(());
                }
                let mut receiver = store.subscribe(channel.as_bytes());
                let name = channel.to_owned();
                let task = tokio::spawn(async move {
                    loop {
                        match receiver.recv().await {
                            Ok(payload) => events(Event::Message {
                                channel: name.clone(),
                                payload,
                            }),
                            Err(RecvError::Lagged(_)) => events(Event::Lagged {
                                channel: name.clone(),
                            }),
                            Err(RecvError::Closed) => break,
                        }
                    }
                });
                tasks.insert(channel.to_owned(), task.abort_handle());
                Ok(())
            }
            Subscriber::Redis(subscriber) => {
                lock(&subscriber.wanted).insert(channel.to_owned());
                let mut up = subscriber.connected.subscribe();
                let _ = tokio::time::timeout(wait, up.wait_for(|up| *up)).await;
                let sink = lock(&subscriber.sink).clone();
                let result = match sink {
                    Some(mut sink) => sink
                        .subscribe(channel)
                        .await
                        .map_err(|err| format!("Redis refused the subscription: {err}")),
                    None => Err("not connected to Redis for pub/sub".into()),
                };
                if result.is_err() {
                    lock(&subscriber.wanted).remove(channel);
                }
                result
            }
        }
    }

    /// Subscribes this node to `channel` for good: if Redis is not reachable now, the channel is
    /// subscribed as soon as it is.
    pub async fn subscribe_always(&self, channel: &str) {
        if let Err(message) = self.subscribe_within(channel, Duration::ZERO).await {
            tracing::warn!(channel, error = %message, "subscription deferred until Redis is reachable");
            if let Subscriber::Redis(subscriber) = &self.subscriber {
                lock(&subscriber.wanted).insert(channel.to_owned());
            }
        }
    }

    /// Subscribes this node, for good, to every channel whose name starts with `prefix` (one
    /// `PSUBSCRIBE` however many channels there are); each message arrives as
    /// [`Event::Message`] with the channel it was published on. If Redis is not reachable now,
    /// the prefix is subscribed as soon as it is.
    pub async fn subscribe_prefix_always(&self, prefix: &str) {
        match &self.subscriber {
            Subscriber::Embedded { store, tasks } => {
                let Some(events) = self.events.get().cloned() else {
                    tracing::warn!(prefix, "the fan-out is not started");
                    return;
                };
                let key = format!("{prefix}*");
                let mut tasks = lock(tasks);
                if tasks.contains_key(&key) {
                    return;
                }
                let mut receiver = store.subscribe_prefix(prefix.as_bytes());
                let task = tokio::spawn(async move {
                    loop {
                        match receiver.recv().await {
                            Ok((channel, payload)) => events(Event::Message {
                                channel: String::from_utf8_lossy(&channel).into_owned(),
                                payload,
                            }),
                            // Which channels lost messages is not known: as if interrupted.
                            Err(RecvError::Lagged(_)) => events(Event::Interrupted),
                            Err(RecvError::Closed) => break,
                        }
                    }
                });
                tasks.insert(key, task.abort_handle());
            }
            Subscriber::Redis(subscriber) => {
                let pattern = glob_escape(prefix) + "*";
                lock(&subscriber.wanted_patterns).insert(pattern.clone());
                let sink = lock(&subscriber.sink).clone();
                if let Some(mut sink) = sink
                    && let Err(err) = sink.psubscribe(&pattern).await
                {
                    // The supervisor subscribes it again on its next connection.
                    tracing::warn!(error = %err, prefix, "pattern subscription deferred until Redis is reachable");
                }
            }
        }
    }

    /// Whether messages published now reach this node's subscriptions (the pub/sub connection
    /// is up; always, on the embedded store).
    pub fn is_connected(&self) -> bool {
        match &self.subscriber {
            Subscriber::Embedded { .. } => true,
            Subscriber::Redis(subscriber) => *subscriber.connected.borrow(),
        }
    }

    /// Unsubscribes this node from `channel`.
    pub async fn unsubscribe(&self, channel: &str) {
        match &self.subscriber {
            Subscriber::Embedded { tasks, .. } => {
                if let Some(task) = lock(tasks).remove(channel) {
                    task.abort();
                }
            }
            Subscriber::Redis(subscriber) => {
                lock(&subscriber.wanted).remove(channel);
                let sink = lock(&subscriber.sink).clone();
                if let Some(mut sink) = sink
                    && let Err(err) = sink.unsubscribe(channel).await
                {
                    tracing::debug!(error = %err, channel, "unsubscribe failed");
                }
            }
        }
    }

    /// Publishes `payload` on `channel` for every node.
    pub async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<(), String> {
        let mut session = self
            .publisher
            .connect(&self.publish_address, crate::budget::Budget::Host)
            .await
            .map_err(|err| err.to_string())?;
        session
            .command("PUBLISH", vec![channel.as_bytes().to_vec(), payload])
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}

/// `text` with Redis's glob characters escaped, so that it matches only itself in a pattern.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl RedisSubscriber {
    /// Keeps one pub/sub connection up for as long as the host runs.
    async fn supervise(self: Arc<Self>, events: EventSink) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.client.get_async_pubsub().await {
                Ok(pubsub) => {
                    let (sink, mut stream) = pubsub.split();
                    // Publish the sink before subscribing again, so that a channel wanted
                    // meanwhile is not lost between the snapshot and the sink.
                    *lock(&self.sink) = Some(sink.clone());
                    let channels: Vec<String> = lock(&self.wanted).iter().cloned().collect();
                    let patterns: Vec<String> =
                        lock(&self.wanted_patterns).iter().cloned().collect();
                    let mut resubscribed = true;
                    for channel in channels {
                        if let Err(err) = sink.clone().subscribe(&channel).await {
                            tracing::warn!(error = %err, "cannot subscribe again after reconnecting");
                            resubscribed = false;
                            break;
                        }
                    }
                    for pattern in &patterns {
                        if !resubscribed {
                            break;
                        }
                        if let Err(err) = sink.clone().psubscribe(pattern).await {
                            tracing::warn!(error = %err, "cannot subscribe a pattern again after reconnecting");
                            resubscribed = false;
                        }
                    }
                    if resubscribed {
                        tracing::info!("Redis pub/sub connection up");
                        self.connected.send_replace(true);
                        events(Event::Connected);
                        delay = Duration::from_millis(100);
                        while let Some(message) = stream.next().await {
                            events(Event::Message {
                                channel: message.get_channel_name().to_owned(),
                                payload: message.get_payload_bytes().to_vec(),
                            });
                        }
                    }
                    *lock(&self.sink) = None;
                    self.connected.send_replace(false);
                    tracing::warn!("Redis pub/sub connection lost; reconnecting");
                    events(Event::Interrupted);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot open a Redis pub/sub connection");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RECONNECT_DELAY);
        }
    }
}
