//! The WebSocket capability: `nexus:websocket`, server WebSockets that Spin does not have.
//!
//! The host terminates WebSockets on the routes a manifest declares and hands each socket's
//! events (connect, message, disconnect) to the route's socket-handler component, a new instance
//! per event ([`serve`]). Components reach sockets through the `connections` import, whose state
//! is this node's [`Hub`]: the sockets open here and the topics they hold.
//!
//! Sockets live on one node; everything else crosses nodes through Redis pub/sub
//! ([`fanout`]): a topic is the channel `<prefix>ws:topic:<name>`, which every node holding a
//! subscriber of it subscribes to; a socket on another node is reached through that node's own
//! channel `<prefix>ws:node:<node>`. So a publish reaches every subscribed socket on every node,
//! and an HTTP component can publish to sockets with a plain Redis `PUBLISH`.
//!
//! Backpressure: each socket has a bounded queue of outgoing messages. Delivery never waits on
//! it: a socket whose queue is full is closed with 1013 (try again later), so one slow client
//! never holds up the others; the client reconnects and catches up from its application's
//! event log.

pub mod fanout;
pub mod sequence;
pub mod serve;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use wasmtime::component::HasData;

use crate::bindings::websocket::nexus::websocket::connections;
use crate::bindings::websocket::nexus::websocket::types::{Error as WitError, Frame};
use crate::metrics::Metrics;
use fanout::Fanout;
use sequence::Sequence;

/// How long a gap in a socket's sequence may stay open (a message published before the one
/// due) before the socket is closed to catch up from its application's log.
const GAP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The longest topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 200;
/// The most topics one socket may hold.
pub const MAX_TOPICS_PER_SOCKET: usize = 64;

/// A message on its way to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
    /// The handler's close, after what it queued before.
    Close(CloseRequest),
}

impl Outgoing {
    fn from_frame(frame: Frame) -> Outgoing {
        match frame {
            Frame::Text(text) => Outgoing::Text(text),
            Frame::Binary(bytes) => Outgoing::Binary(bytes),
        }
    }

    /// A published payload: text if it is UTF-8 (Redis carries bytes only).
    fn from_payload(payload: Vec<u8>) -> Outgoing {
        match String::from_utf8(payload) {
            Ok(text) => Outgoing::Text(text),
            Err(err) => Outgoing::Binary(err.into_bytes()),
        }
    }

    fn into_payload(self) -> Vec<u8> {
        match self {
            Outgoing::Text(text) => text.into_bytes(),
            Outgoing::Binary(bytes) => bytes,
            Outgoing::Close(_) => Vec::new(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Outgoing::Text(text) => text.len(),
            Outgoing::Binary(bytes) => bytes.len(),
            Outgoing::Close(_) => 0,
        }
    }
}

/// Why and how a socket is to be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

/// What the task serving a socket receives from the hub.
pub struct SocketEnd {
    pub outbox: mpsc::Receiver<Outgoing>,
    pub close: watch::Receiver<Option<CloseRequest>>,
}

struct LocalSocket {
    outbox: mpsc::Sender<Outgoing>,
    close: watch::Sender<Option<CloseRequest>>,
    topics: HashSet<String>,
    max_message_bytes: usize,
    /// The topics subscribed in sequence, and where each stands.
    sequences: HashMap<String, Sequence>,
    /// While the connect handler runs, what was published to the socket's topics (topic and
    /// message), delivered after what the handler sent; `None` once it returned.
    held: Option<Vec<(String, Outgoing)>>,
}

#[derive(Default)]
struct Registry {
    sockets: HashMap<String, LocalSocket>,
    /// For each topic, the sockets of this node that hold it.
    topics: HashMap<String, HashSet<String>>,
}

/// An operation on a socket of another node, sent on that node's channel.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Directive {
    Send {
        connection: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<Vec<u8>>,
        /// For `send-in-sequence`: the topic and the message's number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_sequence: Option<(String, u64)>,
    },
    Close {
        connection: String,
        code: u16,
        reason: String,
    },
    Subscribe {
        connection: String,
        topic: String,
        /// For `subscribe-in-sequence`: the number field and the last number the socket has.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence: Option<(String, u64)>,
    },
    Unsubscribe {
        connection: String,
        topic: String,
    },
}

/// Why a socket could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    #[error("this host holds as many WebSockets as it may ({0})")]
    Full(usize),
    #[error("this host is shutting down")]
    Draining,
}

/// This node's sockets and topics, and its way to the other nodes.
pub struct Hub {
    node: String,
    channel_prefix: String,
    max_sockets: usize,
    registry: Mutex<Registry>,
    fanout: Fanout,
    next_socket: AtomicU64,
    metrics: Arc<Metrics>,
    /// Sockets registered and not yet [`Hub::ended`] (their disconnect handler done): what a
    /// draining host waits for.
    live: watch::Sender<usize>,
    /// Set when the host drains: no new socket is registered.
    draining: std::sync::atomic::AtomicBool,
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // The registry is consistent between statements; a panic elsewhere does not break it.
    registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_BYTES
        && topic.bytes().all(|b| b.is_ascii_graphic())
}

impl Hub {
    /// A hub whose channels start with `redis_key_prefix` + `ws:`.
    pub fn new(
        redis_key_prefix: &str,
        max_sockets: usize,
        fanout: Fanout,
        metrics: Arc<Metrics>,
    ) -> Arc<Hub> {
        let node = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Arc::new(Hub {
            node,
            channel_prefix: format!("{redis_key_prefix}ws:"),
            max_sockets,
            registry: Mutex::new(Registry::default()),
            fanout,
            next_socket: AtomicU64::new(1),
            metrics,
            live: watch::Sender::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts delivering what arrives on this node's channels; call once.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        let hub = Arc::downgrade(self);
        self.fanout
            .start(move |event| {
                if let Some(hub) = hub.upgrade() {
                    hub.on_fanout_event(event);
                }
            })
            .await?;
        self.fanout
            .subscribe_always(&self.node_channel(&self.node))
            .await;
        Ok(())
    }

    fn topic_channel(&self, topic: &str) -> String {
        format!("{}topic:{topic}", self.channel_prefix)
    }

    fn node_channel(&self, node: &str) -> String {
        format!("{}node:{node}", self.channel_prefix)
    }

    /// The sockets open on this node.
    pub fn open_sockets(&self) -> usize {
        lock(&self.registry).sockets.len()
    }

    /// Registers a new socket of this node, before its handshake completes (so that the
    /// connect handler can already subscribe and send).
    pub fn register(
        &self,
        send_queue: usize,
        max_message_bytes: usize,
    ) -> Result<(String, SocketEnd), RegisterError> {
        let mut registry = lock(&self.registry);
        // Read under the registry's lock, which `drain` takes too: a socket is either refused
        // here or closed there.
        if self.draining.load(Ordering::SeqCst) {
            return Err(RegisterError::Draining);
        }
        if registry.sockets.len() >= self.max_sockets {
            return Err(RegisterError::Full(self.max_sockets));
        }
        let id = format!(
            "{}.{}",
            self.node,
            self.next_socket.fetch_add(1, Ordering::Relaxed)
        );
        let (outbox, outbox_rx) = mpsc::channel(send_queue);
        let (close, close_rx) = watch::channel(None);
        registry.sockets.insert(
            id.clone(),
            LocalSocket {
                outbox,
                close,
                topics: HashSet::new(),
                max_message_bytes,
                sequences: HashMap::new(),
                held: Some(Vec::new()),
            },
        );
        self.metrics.websockets_open.inc();
        self.live.send_modify(|live| *live += 1);
        Ok((
            id,
            SocketEnd {
                outbox: outbox_rx,
                close: close_rx,
            },
        ))
    }

    /// Marks a registered socket as done: unregistered, and its disconnect handler (if it had
    /// one) returned. Called once per successful [`Hub::register`].
    pub fn ended(&self) {
        self.live.send_modify(|live| *live = live.saturating_sub(1));
    }

    /// Closes every socket of this node with `code` (1012, "service restart", tells clients to
    /// reconnect, to another host) and refuses new ones; the host is shutting down.
    pub fn drain(&self, code: u16, reason: &str) {
        let registry = lock(&self.registry);
        self.draining.store(true, Ordering::SeqCst);
        for socket in registry.sockets.values() {
            socket.close.send_replace(Some(CloseRequest {
                code,
                reason: reason.to_owned(),
            }));
        }
    }

    /// Waits until every socket has ended (see [`Hub::ended`]).
    pub async fn all_ended(&self) {
        let mut live = self.live.subscribe();
        let _ = live.wait_for(|live| *live == 0).await;
    }

    /// Forgets a socket that has closed, and the topics only it held here.
    pub async fn unregister(&self, id: &str) {
        let emptied: Vec<String> = {
            let mut registry = lock(&self.registry);
            let Some(socket) = registry.sockets.remove(id) else {
                return;
            };
            self.metrics.websockets_open.dec();
            socket
                .topics
                .into_iter()
                .filter(|topic| remove_member(&mut registry.topics, topic, id))
                .collect()
        };
        for topic in emptied {
            self.fanout.unsubscribe(&self.topic_channel(&topic)).await;
        }
    }

    /// The node a socket id belongs to, if it is well formed.
    fn node_of(id: &str) -> Option<&str> {
        id.split_once('.').map(|(node, _)| node)
    }

    fn is_local(&self, id: &str) -> bool {
        Hub::node_of(id) == Some(self.node.as_str())
    }

    async fn direct(&self, id: &str, directive: Directive) -> Result<(), WitError> {
        let Some(node) = Hub::node_of(id) else {
            return Err(WitError::Closed);
        };
        let payload = serde_json::to_vec(&directive)
            .map_err(|err| WitError::Unavailable(format!("cannot encode: {err}")))?;
        self.fanout
            .publish(&self.node_channel(node), payload)
            .await
            .map_err(WitError::Unavailable)
    }

    /// Queues `message` on socket `id`, wherever it is; with `in_sequence` (a topic and the
    /// message's number), only if the socket's sequence of that topic has not passed it.
    pub async fn send(
        &self,
        id: &str,
        message: Outgoing,
        in_sequence: Option<(String, u64)>,
    ) -> Result<(), WitError> {
        if !self.is_local(id) {
            let (text, binary) = match message {
                Outgoing::Text(text) => (Some(text), None),
                Outgoing::Binary(bytes) => (None, Some(bytes)),
                Outgoing::Close(_) => return Err(WitError::Closed),
            };
            let directive = Directive::Send {
                connection: id.into(),
                text,
                binary,
                in_sequence,
            };
            return self.direct(id, directive).await;
        }
        let mut registry = lock(&self.registry);
        let socket = registry.sockets.get_mut(id).ok_or(WitError::Closed)?;
        if message.len() > socket.max_message_bytes {
            return Err(WitError::TooLarge);
        }
        self.send_numbered(id, socket, message, in_sequence);
        Ok(())
    }

    /// Queues a handler's message on a socket of this node; a numbered one only if the
    /// socket's sequence has not passed it, followed by what it lets through.
    fn send_numbered(
        &self,
        id: &str,
        socket: &mut LocalSocket,
        message: Outgoing,
        in_sequence: Option<(String, u64)>,
    ) {
        let released = match in_sequence {
            Some((topic, seq)) => match socket.sequences.get_mut(&topic) {
                Some(sequence) => match sequence.numbered(seq) {
                    Some(released) => released,
                    None => return,
                },
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        self.offer(id, socket, message);
        for message in released {
            self.offer(id, socket, message);
        }
    }

    /// Ends the holding of socket `id`'s published messages (its connect handler returned):
    /// what was held is delivered now, after what the handler sent.
    pub fn release(self: &Arc<Self>, id: &str) {
        let mut registry = lock(&self.registry);
        let Some(socket) = registry.sockets.get_mut(id) else {
            return;
        };
        for (topic, message) in socket.held.take().unwrap_or_default() {
            self.admit(id, socket, &topic, message);
        }
    }

    /// Delivers a message published to `topic` to one socket of this node: held while its
    /// connect handler runs, then in sequence where the topic is subscribed so.
    fn deliver(
        self: &Arc<Self>,
        id: &str,
        socket: &mut LocalSocket,
        topic: &str,
        message: Outgoing,
    ) {
        if let Some(held) = &mut socket.held {
            // A connect handler runs for at most the request timeout; a socket that has more
            // published to it meanwhile than its queue holds is too slow to keep.
            if held.len() < socket.outbox.max_capacity() {
                held.push((topic.to_owned(), message));
            } else {
                self.too_slow(id, socket);
            }
            return;
        }
        self.admit(id, socket, topic, message);
    }

    /// Queues a published message, through the topic's sequence if it has one.
    fn admit(self: &Arc<Self>, id: &str, socket: &mut LocalSocket, topic: &str, message: Outgoing) {
        let Some(sequence) = socket.sequences.get_mut(topic) else {
            self.offer(id, socket, message);
            return;
        };
        let admission = sequence.published(message);
        if admission.overflow {
            self.missed(id, socket);
            return;
        }
        for message in admission.send {
            self.offer(id, socket, message);
        }
        if admission.gap_opened {
            self.watch_gap(id, topic);
        }
    }

    /// Closes a socket whose sequence cannot be completed here (a message before the ones held
    /// never came): its client reconnects from the last number it got.
    fn missed(&self, id: &str, socket: &LocalSocket) {
        tracing::info!(
            socket = id,
            "closing a socket that missed a message of its sequence"
        );
        self.metrics.websockets_sequence_gaps.inc();
        socket.close.send_replace(Some(CloseRequest {
            code: 1013,
            reason: "missed an event: reconnect and catch up".into(),
        }));
    }

    /// Waits for a gap in a socket's sequence to close; one that stays open, with nothing
    /// coming in order, for [`GAP_WAIT`] closes the socket.
    fn watch_gap(self: &Arc<Self>, id: &str, topic: &str) {
        let hub = Arc::downgrade(self);
        let (id, topic) = (id.to_owned(), topic.to_owned());
        tokio::spawn(async move {
            let mut mark = None;
            loop {
                tokio::time::sleep(GAP_WAIT).await;
                let Some(hub) = hub.upgrade() else { return };
                let registry = lock(&hub.registry);
                let Some(socket) = registry.sockets.get(&id) else {
                    return;
                };
                let Some(sequence) = socket.sequences.get(&topic) else {
                    return;
                };
                if !sequence.has_gap() {
                    return;
                }
                if mark == Some(sequence.mark()) {
                    hub.missed(&id, socket);
                    return;
                }
                // Things moved on (a gap filled, another opened): give the new one its time.
                mark = Some(sequence.mark());
            }
        });
    }

    /// Queues a message without waiting; a socket whose queue is full is closed as too slow.
    fn offer(&self, id: &str, socket: &LocalSocket, message: Outgoing) {
        match socket.outbox.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.too_slow(id, socket),
            // The socket is closing; its task unregisters it.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn too_slow(&self, id: &str, socket: &LocalSocket) {
        tracing::info!(socket = id, "closing a socket that fell behind");
        self.metrics.websockets_too_slow.inc();
        socket.close.send_replace(Some(CloseRequest {
            code: 1013,
            reason: "too slow: reconnect and catch up".into(),
        }));
    }

    /// Closes socket `id` at once (the host's own closes: a broken rule, a failed handler),
    /// dropping what is still queued for it.
    pub fn close_now(&self, id: &str, code: u16, reason: String) -> Result<(), WitError> {
        let registry = lock(&self.registry);
        let socket = registry.sockets.get(id).ok_or(WitError::Closed)?;
        socket
            .close
            .send_replace(Some(CloseRequest { code, reason }));
        Ok(())
    }

    /// Closes socket `id`, wherever it is, as its handler asks: after what was queued for it
    /// before (at once if its queue is full).
    pub async fn close(&self, id: &str, code: u16, reason: String) -> Result<(), WitError> {
        if !self.is_local(id) {
            return self
                .direct(
                    id,
                    Directive::Close {
                        connection: id.into(),
                        code,
                        reason,
                    },
                )
                .await;
        }
        let registry = lock(&self.registry);
        let socket = registry.sockets.get(id).ok_or(WitError::Closed)?;
        close_after_queued(socket, CloseRequest { code, reason });
        Ok(())
    }

    /// Subscribes socket `id`, wherever it is, to `topic`; with `sequence`, in sequence
    /// (a subscription already there takes the new sequence).
    async fn subscribe(
        &self,
        id: &str,
        topic: String,
        sequence: Option<(String, u64)>,
    ) -> Result<(), WitError> {
        if !valid_topic(&topic) {
            return Err(WitError::InvalidTopic);
        }
        if !self.is_local(id) {
            return self
                .direct(
                    id,
                    Directive::Subscribe {
                        connection: id.into(),
                        topic,
                        sequence,
                    },
                )
                .await;
        }
        let first_here = {
            let mut registry = lock(&self.registry);
            let socket = registry.sockets.get_mut(id).ok_or(WitError::Closed)?;
            if let Some((field, after)) = sequence {
                socket
                    .sequences
                    .insert(topic.clone(), Sequence::new(field, after));
            }
            if socket.topics.contains(&topic) {
                return Ok(());
            }
            if socket.topics.len() >= MAX_TOPICS_PER_SOCKET {
                return Err(WitError::TooManyTopics);
            }
            socket.topics.insert(topic.clone());
            let members = registry.topics.entry(topic.clone()).or_default();
            members.insert(id.to_owned());
            members.len() == 1
        };
        if first_here {
            // Wait for Redis to confirm: a publish right after this call must reach the socket.
            if let Err(message) = self.fanout.subscribe(&self.topic_channel(&topic)).await {
                let mut registry = lock(&self.registry);
                if let Some(socket) = registry.sockets.get_mut(id) {
                    socket.topics.remove(&topic);
                    socket.sequences.remove(&topic);
                }
                remove_member(&mut registry.topics, &topic, id);
                return Err(WitError::Unavailable(message));
            }
        }
        Ok(())
    }

    /// Unsubscribes socket `id`, wherever it is, from `topic`.
    pub async fn unsubscribe(&self, id: &str, topic: String) -> Result<(), WitError> {
        if !valid_topic(&topic) {
            return Err(WitError::InvalidTopic);
        }
        if !self.is_local(id) {
            return self
                .direct(
                    id,
                    Directive::Unsubscribe {
                        connection: id.into(),
                        topic,
                    },
                )
                .await;
        }
        let emptied = {
            let mut registry = lock(&self.registry);
            let socket = registry.sockets.get_mut(id).ok_or(WitError::Closed)?;
            socket.sequences.remove(&topic);
            socket.topics.remove(&topic) && remove_member(&mut registry.topics, &topic, id)
        };
        if emptied {
            self.fanout.unsubscribe(&self.topic_channel(&topic)).await;
        }
        Ok(())
    }

    /// Sends `message` to every socket subscribed to `topic` on every node.
    pub async fn publish(&self, topic: &str, message: Outgoing) -> Result<(), WitError> {
        if !valid_topic(topic) {
            return Err(WitError::InvalidTopic);
        }
        self.fanout
            .publish(&self.topic_channel(topic), message.into_payload())
            .await
            .map_err(WitError::Unavailable)
    }

    fn on_fanout_event(self: &Arc<Self>, event: fanout::Event) {
        match event {
            fanout::Event::Message { channel, payload } => self.dispatch(&channel, payload),
            fanout::Event::Lagged { channel } => {
                if let Some(topic) = self.topic_of(&channel) {
                    self.close_topic(
                        topic,
                        1013,
                        "fell behind the event stream: reconnect and catch up",
                    );
                }
            }
            fanout::Event::Interrupted => self.close_all_subscribed(
                1012,
                "the event stream was interrupted: reconnect and catch up",
            ),
            fanout::Event::Connected => {}
        }
    }

    fn topic_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        channel
            .strip_prefix(self.channel_prefix.as_str())?
            .strip_prefix("topic:")
    }

    /// Delivers what arrived on one of this node's channels.
    fn dispatch(self: &Arc<Self>, channel: &str, payload: Vec<u8>) {
        self.metrics.websocket_fanout_messages.inc();
        if let Some(topic) = self.topic_of(channel) {
            let mut registry = lock(&self.registry);
            let Registry { sockets, topics } = &mut *registry;
            let Some(members) = topics.get(topic) else {
                return;
            };
            let message = Outgoing::from_payload(payload);
            for id in members {
                if let Some(socket) = sockets.get_mut(id) {
                    self.deliver(id, socket, topic, message.clone());
                }
            }
            return;
        }
        if channel == self.node_channel(&self.node) {
            match serde_json::from_slice::<Directive>(&payload) {
                Ok(directive) => self.follow(directive),
                Err(err) => {
                    tracing::warn!(error = %err, "an unreadable directive on the node channel")
                }
            }
        }
    }

    /// Carries out an operation another node asked for on one of this node's sockets.
    fn follow(self: &Arc<Self>, directive: Directive) {
        let hub = self;
        // Subscribing may wait on Redis; the rest is immediate. Errors here have no caller to
        // go back to: the socket is gone, or Redis is, and the client will reconnect.
        let outcome = match directive {
            Directive::Send {
                connection,
                text,
                binary,
                in_sequence,
            } => {
                let message = match (text, binary) {
                    (Some(text), _) => Outgoing::Text(text),
                    (None, Some(bytes)) => Outgoing::Binary(bytes),
                    (None, None) => return,
                };
                let mut registry = lock(&hub.registry);
                match registry.sockets.get_mut(&connection) {
                    Some(socket) => {
                        hub.send_numbered(&connection, socket, message, in_sequence);
                        Ok(())
                    }
                    None => Err(WitError::Closed),
                }
            }
            Directive::Close {
                connection,
                code,
                reason,
            } => {
                let registry = lock(&hub.registry);
                match registry.sockets.get(&connection) {
                    Some(socket) => {
                        close_after_queued(socket, CloseRequest { code, reason });
                        Ok(())
                    }
                    None => Err(WitError::Closed),
                }
            }
            Directive::Subscribe {
                connection,
                topic,
                sequence,
            } => {
                self.spawn_operation(|hub| {
                    Box::pin(async move { hub.subscribe(&connection, topic, sequence).await })
                });
                Ok(())
            }
            Directive::Unsubscribe { connection, topic } => {
                self.spawn_operation(|hub| {
                    Box::pin(async move { hub.unsubscribe(&connection, topic).await })
                });
                Ok(())
            }
        };
        if let Err(err) = outcome {
            tracing::debug!(error = ?err, "a directive for a socket that is gone");
        }
    }

    /// Runs an operation that may wait on Redis off the delivery path.
    fn spawn_operation<F>(self: &Arc<Self>, operation: F)
    where
        F: FnOnce(Arc<Hub>) -> futures::future::BoxFuture<'static, Result<(), WitError>>,
    {
        let running = operation(Arc::clone(self));
        tokio::spawn(async move {
            if let Err(err) = running.await {
                tracing::debug!(error = ?err, "a directive from another node failed");
            }
        });
    }

    fn close_topic(&self, topic: &str, code: u16, reason: &str) {
        let registry = lock(&self.registry);
        for id in registry.topics.get(topic).into_iter().flatten() {
            if let Some(socket) = registry.sockets.get(id) {
                socket.close.send_replace(Some(CloseRequest {
                    code,
                    reason: reason.into(),
                }));
            }
        }
    }

    fn close_all_subscribed(&self, code: u16, reason: &str) {
        let registry = lock(&self.registry);
        for socket in registry.sockets.values() {
            if !socket.topics.is_empty() {
                socket.close.send_replace(Some(CloseRequest {
                    code,
                    reason: reason.into(),
                }));
            }
        }
    }
}

/// Queues a close behind what the socket has queued; at once if the queue is full.
fn close_after_queued(socket: &LocalSocket, request: CloseRequest) {
    if let Err(mpsc::error::TrySendError::Full(Outgoing::Close(request))) =
        socket.outbox.try_send(Outgoing::Close(request))
    {
        socket.close.send_replace(Some(request));
    }
}

/// Removes `id` from `topic`'s members; whether that left the topic with none on this node.
fn remove_member(topics: &mut HashMap<String, HashSet<String>>, topic: &str, id: &str) -> bool {
    let Some(members) = topics.get_mut(topic) else {
        return false;
    };
    members.remove(id);
    if members.is_empty() {
        topics.remove(topic);
        true
    } else {
        false
    }
}

/// The capability's per-instance context: this node's hub.
pub struct WebSocketCtx {
    pub hub: Arc<Hub>,
}

/// The `HasData` marker for [`WebSocketCtx`].
pub struct WebSocketCapability;

impl HasData for WebSocketCapability {
    type Data<'a> = &'a mut WebSocketCtx;
}

impl connections::Host for WebSocketCtx {
    async fn send(
        &mut self,
        connection: String,
        message: Frame,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self
            .hub
            .send(&connection, Outgoing::from_frame(message), None)
            .await)
    }

    async fn send_in_sequence(
        &mut self,
        connection: String,
        topic: String,
        seq: u64,
        message: Frame,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self
            .hub
            .send(
                &connection,
                Outgoing::from_frame(message),
                Some((topic, seq)),
            )
            .await)
    }

    async fn close(
        &mut self,
        connection: String,
        code: u16,
        reason: String,
    ) -> wasmtime::Result<Result<(), WitError>> {
        // 1000..=4999, minus the codes that must never be sent (RFC 6455 §7.4.1).
        if !(1000..=4999).contains(&code) || matches!(code, 1004..=1006 | 1015) {
            return Ok(Err(WitError::Unavailable(format!(
                "{code} is not a close code a socket may be closed with"
            ))));
        }
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Ok(self
            .hub
            .close(&connection, code, reason[..end].to_owned())
            .await)
    }

    async fn subscribe(
        &mut self,
        connection: String,
        topic: String,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self.hub.subscribe(&connection, topic, None).await)
    }

    async fn subscribe_in_sequence(
        &mut self,
        connection: String,
        topic: String,
        field: String,
        after: u64,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self
            .hub
            .subscribe(&connection, topic, Some((field, after)))
            .await)
    }

    async fn unsubscribe(
        &mut self,
        connection: String,
        topic: String,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self.hub.unsubscribe(&connection, topic).await)
    }

    async fn publish(
        &mut self,
        topic: String,
        message: Frame,
    ) -> wasmtime::Result<Result<(), WitError>> {
        Ok(self
            .hub
            .publish(&topic, Outgoing::from_frame(message))
            .await)
    }
}

impl crate::bindings::websocket::nexus::websocket::types::Host for WebSocketCtx {}
