//! Parked waits: `nexus:platform/parking` (`wit/parking.wit`), the host side.
//!
//! A component that exports the interface may park a request without a body: its handler
//! returns without answering, naming topics and a deadline. [`crate::server`] then drops the
//! instance, keeps the client's request, and waits here ([`Parking::wait`]) for a message on
//! one of the topics or for the deadline; then it calls the component again with the same
//! request. A parked request holds no instance, no pooled connection and no timer but its own.
//!
//! Topics are the fan-out's (`<prefix>ws:topic:<topic>`). This host subscribes once to every
//! topic (one `PSUBSCRIBE <prefix>ws:topic:*` on a pub/sub connection of its own, through
//! [`Fanout`]), not once per waiter or per topic, so waiting costs Redis nothing.
//!
//! A message published after the component looked but before its request is registered here
//! must still wake it. So every message received is numbered, each topic's latest number is
//! kept for a while, and a call starts by taking a [`Mark`]: a request that parks on a topic
//! with a message numbered after its mark is called again at once. While the pub/sub connection
//! is down nothing can be trusted: parked requests are woken when it drops, a call that spans a
//! drop or a reconnection is called again, and requests that park meanwhile are looked at again
//! every [`LOOK_AGAIN_WHILE_DOWN`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::{Metrics, WakeLabels};
use crate::websocket::fanout::{Event, Fanout};

/// The most topics one park may name.
pub const MAX_TOPICS: usize = 16;
/// The longest topic name, in bytes (as for sockets).
pub const MAX_TOPIC_BYTES: usize = crate::websocket::MAX_TOPIC_BYTES;
/// The largest memo, in bytes.
pub const MAX_MEMO_BYTES: usize = 4096;
/// The most requests one host holds parked; past it a request that parks is answered 503.
pub const MAX_PARKED: usize = 200_000;
/// While the pub/sub connection is down, a parked request is called again this often.
pub const LOOK_AGAIN_WHILE_DOWN: Duration = Duration::from_secs(1);
/// How long a topic's latest message number is kept. A call that ran longer than this before
/// it parked is called again at once (its mark is older than what is remembered).
const RECENT: Duration = Duration::from_secs(60);
/// How many remembered topics trigger a sweep of the old ones.
const PRUNE_AT: usize = 1024;

/// What a handler parked on (the interface's `park`), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Park {
    pub topics: Vec<String>,
    pub deadline_ms: u64,
    pub memo: String,
}

impl Park {
    /// The interface's record, if it keeps the interface's limits.
    pub fn checked(
        park: crate::bindings::parking::exports::nexus::platform::parking::Park,
    ) -> Result<Park, String> {
        if park.topics.is_empty() || park.topics.len() > MAX_TOPICS {
            return Err(format!("a park names 1 to {MAX_TOPICS} topics"));
        }
        if let Some(bad) = park.topics.iter().find(|topic| {
            topic.is_empty()
                || topic.len() > MAX_TOPIC_BYTES
                || !topic.bytes().all(|b| b.is_ascii_graphic())
        }) {
            return Err(format!(
                "`{}` is not a topic (1 to {MAX_TOPIC_BYTES} printable ASCII characters)",
                bad.chars().take(64).collect::<String>()
            ));
        }
        if park.memo.len() > MAX_MEMO_BYTES {
            return Err(format!("a memo is at most {MAX_MEMO_BYTES} bytes"));
        }
        Ok(Park {
            topics: park.topics,
            deadline_ms: park.deadline_ms,
            memo: park.memo,
        })
    }
}

/// Where the fan-out stood when a call began.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    received: u64,
    generation: u64,
    at: Instant,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A message on one of the topics (or there may have been one): look again.
    Published,
    /// The deadline passed.
    Deadline,
    /// The host holds as many parked requests as it may.
    Refused,
}

impl Woken {
    fn label(self) -> &'static str {
        match self {
            Woken::Published => "published",
            Woken::Deadline => "deadline",
            Woken::Refused => "refused",
        }
    }
}

#[derive(Default)]
struct State {
    /// Messages received so far: each message's number.
    received: u64,
    /// Bumped when the pub/sub connection drops and when it is back.
    generation: u64,
    /// Each topic's latest message number, and when it came.
    recent: HashMap<String, (u64, Instant)>,
    last_prune: Option<Instant>,
    /// Parked requests by topic, each by its waiter number.
    waiters: HashMap<String, HashMap<u64, Arc<Notify>>>,
    next_waiter: u64,
    parked: usize,
}

/// This host's parked requests.
pub struct Parking {
    topic_prefix: String,
    fanout: Fanout,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl Parking {
    /// Parked requests on the topics of `redis_key_prefix`, woken through `fanout` (a fan-out
    /// of their own: its events are all this module's).
    pub fn new(redis_key_prefix: &str, fanout: Fanout, metrics: Arc<Metrics>) -> Arc<Parking> {
        Arc::new(Parking {
            topic_prefix: format!("{redis_key_prefix}ws:topic:"),
            fanout,
            state: Mutex::new(State::default()),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts receiving every topic; call once.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        let parking = Arc::downgrade(self);
        self.fanout
            .start(move |event| {
                if let Some(parking) = parking.upgrade() {
                    parking.on_event(event);
                }
            })
            .await?;
        self.fanout
            .subscribe_prefix_always(&self.topic_prefix)
            .await;
        Ok(())
    }

    /// Where the fan-out stands; taken before each call of a component that may park.
    pub fn mark(&self) -> Mark {
        let state = self.lock();
        Mark {
            received: state.received,
            generation: state.generation,
            at: Instant::now(),
        }
    }

    /// Waits until a message on one of `topics` arrives after `mark`, or until `until`.
    pub async fn wait(self: &Arc<Self>, mark: Mark, topics: &[String], until: Instant) -> Woken {
        let woken = self.wait_unrecorded(mark, topics, until).await;
        self.metrics
            .parked_wakes
            .get_or_create(&WakeLabels {
                reason: woken.label(),
            })
            .inc();
        woken
    }

    async fn wait_unrecorded(
        self: &Arc<Self>,
        mark: Mark,
        topics: &[String],
        until: Instant,
    ) -> Woken {
        let notify = Arc::new(Notify::new());
        let registration = {
            let mut state = self.lock();
            let missed = mark.generation != state.generation
                || mark.at.elapsed() > RECENT
                || topics.iter().any(|topic| {
                    state
                        .recent
                        .get(topic)
                        .is_some_and(|(number, _)| *number > mark.received)
                });
            if missed {
                return Woken::Published;
            }
            if state.parked >= MAX_PARKED {
                return Woken::Refused;
            }
            let id = state.next_waiter;
            state.next_waiter += 1;
            for topic in topics {
                state
                    .waiters
                    .entry(topic.clone())
                    .or_default()
                    .insert(id, Arc::clone(&notify));
            }
            state.parked += 1;
            self.metrics.parked_requests.inc();
            Registration {
                parking: Arc::clone(self),
                id,
                topics: topics.to_vec(),
            }
        };
        // Nothing is heard while the pub/sub connection is down: look again soon.
        let until = if self.fanout.is_connected() {
            until
        } else {
            until.min(Instant::now() + LOOK_AGAIN_WHILE_DOWN)
        };
        let woken = tokio::select! {
            () = notify.notified() => Woken::Published,
            () = tokio::time::sleep_until(until) => if self.fanout.is_connected() {
                Woken::Deadline
            } else {
                Woken::Published
            },
        };
        drop(registration);
        woken
    }

    fn on_event(&self, event: Event) {
        let mut state = self.lock();
        match event {
            Event::Message { channel, .. } => {
                let Some(topic) = channel.strip_prefix(self.topic_prefix.as_str()) else {
                    return;
                };
                state.received += 1;
                let number = state.received;
                let now = Instant::now();
                state.recent.insert(topic.to_owned(), (number, now));
                if let Some(waiters) = state.waiters.get(topic) {
                    for notify in waiters.values() {
                        notify.notify_one();
                    }
                }
                if state.recent.len() > PRUNE_AT
                    && state
                        .last_prune
                        .is_none_or(|last| now.duration_since(last) > Duration::from_secs(1))
                {
                    state
                        .recent
                        .retain(|_, (_, at)| now.duration_since(*at) <= RECENT);
                    state.last_prune = Some(now);
                }
            }
            Event::Lagged { .. } | Event::Interrupted => {
                state.generation += 1;
                for waiters in state.waiters.values() {
                    for notify in waiters.values() {
                        notify.notify_one();
                    }
                }
            }
            Event::Connected => state.generation += 1,
        }
    }
}

/// A parked request's place among the waiters, given up when the wait ends.
struct Registration {
    parking: Arc<Parking>,
    id: u64,
    topics: Vec<String>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.parking.lock();
        for topic in &self.topics {
            if let Some(waiters) = state.waiters.get_mut(topic) {
                waiters.remove(&self.id);
                if waiters.is_empty() {
                    state.waiters.remove(topic);
                }
            }
        }
        state.parked = state.parked.saturating_sub(1);
        self.parking.metrics.parked_requests.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::embedded::EmbeddedRedis;
    use crate::redis::{Budget, RedisBackend, RedisBackends};

    async fn parking() -> (Arc<Parking>, Arc<RedisBackends>) {
        let store = Arc::new(EmbeddedRedis::default());
        let backends = Arc::new(RedisBackends::new(Some(Arc::clone(&store))));
        let fanout = Fanout::embedded(
            store,
            Arc::clone(&backends),
            "redis://nexus.embedded".into(),
        );
        let parking = Parking::new("t:", fanout, Arc::new(Metrics::default()));
        parking.start().await.unwrap();
        (parking, backends)
    }

    async fn publish(backends: &RedisBackends, channel: &str) {
        let mut session = backends
            .connect("redis://nexus.embedded", Budget::Requests)
            .await
            .unwrap();
        session
            .command("PUBLISH", vec![channel.into(), b"x".to_vec()])
            .await
            .unwrap();
    }

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_publish_wakes_the_requests_parked_on_its_topic_only() {
        let (parking, backends) = parking().await;
        let far = Instant::now() + Duration::from_secs(30);
        let mark = parking.mark();
        let on_a = tokio::spawn({
            let parking = Arc::clone(&parking);
            async move { parking.wait(mark, &topics(&["a"]), far).await }
        });
        let on_b = tokio::spawn({
            let parking = Arc::clone(&parking);
            async move { parking.wait(mark, &topics(&["b", "c"]), far).await }
        });
        while parking.lock().parked < 2 {
            tokio::task::yield_now().await;
        }
        publish(&backends, "t:ws:topic:a").await;
        assert_eq!(on_a.await.unwrap(), Woken::Published);
        assert!(!on_b.is_finished());
        publish(&backends, "t:ws:topic:c").await;
        assert_eq!(on_b.await.unwrap(), Woken::Published);
        let state = parking.lock();
        assert_eq!(state.parked, 0);
        assert!(state.waiters.is_empty(), "waiters leave no trace");
    }

    #[tokio::test]
    async fn a_message_between_the_mark_and_the_park_is_not_missed() {
        let (parking, backends) = parking().await;
        let mark = parking.mark();
        publish(&backends, "t:ws:topic:a").await;
        // The embedded store delivers through a task: wait until it was received.
        while parking.lock().received == 0 {
            tokio::task::yield_now().await;
        }
        let far = Instant::now() + Duration::from_secs(30);
        assert_eq!(
            parking.wait(mark, &topics(&["a"]), far).await,
            Woken::Published
        );
        // A later mark has seen it: that request waits for the next one, or its deadline.
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            parking.wait(parking.mark(), &topics(&["a"]), soon).await,
            Woken::Deadline
        );
    }

    #[tokio::test]
    async fn an_interruption_wakes_everyone_and_spoils_older_marks() {
        let (parking, _backends) = parking().await;
        let far = Instant::now() + Duration::from_secs(30);
        let mark = parking.mark();
        let waiting = tokio::spawn({
            let parking = Arc::clone(&parking);
            async move { parking.wait(mark, &topics(&["a"]), far).await }
        });
        while parking.lock().parked < 1 {
            tokio::task::yield_now().await;
        }
        parking.on_event(Event::Interrupted);
        assert_eq!(waiting.await.unwrap(), Woken::Published);
        assert_eq!(
            parking.wait(mark, &topics(&["a"]), far).await,
            Woken::Published,
            "a call that began before the interruption looks again"
        );
    }

    #[test]
    fn parks_are_checked() {
        use crate::bindings::parking::exports::nexus::platform::parking::Park as WitPark;
        let park = |topics: Vec<String>, memo: &str| WitPark {
            topics,
            deadline_ms: 1,
            memo: memo.into(),
        };
        assert!(Park::checked(park(topics(&["chat:1"]), "{}")).is_ok());
        assert!(Park::checked(park(Vec::new(), "")).is_err());
        assert!(Park::checked(park(vec!["a b".into()], "")).is_err());
        assert!(Park::checked(park(vec!["x".repeat(201)], "")).is_err());
        assert!(Park::checked(park(vec!["a".into(); 17], "")).is_err());
        assert!(Park::checked(park(topics(&["a"]), &"m".repeat(4097))).is_err());
    }
}
