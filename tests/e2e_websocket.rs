//! End to end: the host's WebSocket capability, through a real `nexus up` and real sockets,
//! with the `sockets` fixture (a socket-handler driven by text commands).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::time::Duration;

use support::ws::{Opened, Socket};
use support::{Backends, Nexus};
use tokio_tungstenite::tungstenite::Message;

const MANIFEST: &str = r#"
spin_manifest_version = 2

[application]
name = "websocket-test"

[variables]
redis_key_prefix = { default = "nexus:" }

[component.sockets]
source = "{sockets}"
[component.sockets.tool.nexus.websocket]
route = "/sockets"
max_message_bytes = 100000

# Pings every 200 ms: a client that does not answer is closed within a second.
[component.heartbeat]
source = "{sockets}"
[component.heartbeat.tool.nexus.websocket]
route = "/heartbeat"
ping_interval_ms = 200

# Queues eight messages per socket at most.
[component.slow]
source = "{sockets}"
[component.slow.tool.nexus.websocket]
route = "/slow/..."
send_queue = 8
max_message_bytes = 100000
"#;

async fn start(backends: Backends) -> Nexus {
    Nexus::start(MANIFEST, backends).await
}

async fn open(nexus: &Nexus, path: &str) -> (Socket, String) {
    let mut socket = Socket::open(&nexus.ws_url(path), &[]).await;
    let welcome = socket.next_text().await;
    let id = welcome
        .strip_prefix("welcome ")
        .unwrap_or_else(|| panic!("expected a welcome, got {welcome}"))
        .to_owned();
    (socket, id)
}

/// The next two texts, in either order (a socket's own publish races the handler's answer).
async fn two_texts(socket: &mut Socket) -> Vec<String> {
    let mut texts = vec![socket.next_text().await, socket.next_text().await];
    texts.sort();
    texts
}

/// The host's `nexus_websockets_open` gauge.
async fn open_sockets(nexus: &Nexus) -> u64 {
    let metrics = nexus.metrics().await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("nexus_websockets_open "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no nexus_websockets_open in {metrics}"))
}

/// Waits until the host holds `count` sockets.
async fn wait_for_open_sockets(nexus: &Nexus, count: u64) {
    for _ in 0..100 {
        if open_sockets(nexus).await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the host holds {} sockets, not {count}",
        open_sockets(nexus).await
    );
}

/// Sends a command and returns the handler's answer.
async fn ask(socket: &mut Socket, command: &str) -> String {
    socket.send(command).await;
    socket.next_text().await
}

async fn the_handler_sees_connect_messages_and_context(backends: Backends) {
    let nexus = start(backends).await;
    let (mut socket, id) = open(&nexus, "/sockets?ctx=agent-7").await;
    assert_eq!(
        ask(&mut socket, "echo hello there").await,
        "echo hello there"
    );
    assert_eq!(ask(&mut socket, "whoami").await, id);
    assert_eq!(ask(&mut socket, "context").await, "agent-7");
    socket.send_binary(vec![0, 159, 146, 150]).await;
    assert_eq!(
        socket.next_message(support::ws::FRAME_WAIT).await,
        Some(Message::binary(vec![0, 159, 146, 150]))
    );
    // Messages of one socket are handled in order.
    for n in 0..20 {
        socket.send(&format!("echo {n}")).await;
    }
    for n in 0..20 {
        assert_eq!(socket.next_text().await, format!("echo {n}"));
    }

    // A watcher of disconnects sees this socket's disconnect once it closes.
    let (mut watcher, _) = open(&nexus, "/sockets?topic=disconnects").await;
    socket.close().await;
    assert_eq!(watcher.next_text().await, id);

    // The handler's own close, with its code.
    let (mut closing, _) = open(&nexus, "/sockets").await;
    closing.send("close 4000").await;
    let frame = closing
        .closed(Duration::from_secs(5))
        .await
        .expect("a close frame");
    assert_eq!(u16::from(frame.code), 4000);
    let metrics = nexus.metrics().await;
    assert!(
        metrics.contains("nexus_websocket_messages_received_total"),
        "{metrics}"
    );
}

async fn topics_reach_their_subscribers_only(backends: Backends) {
    let nexus = start(backends).await;
    let (mut first, _) = open(&nexus, "/sockets?topic=news").await;
    let (mut second, _) = open(&nexus, "/sockets?topic=news&topic=sport").await;
    let (mut publisher, _) = open(&nexus, "/sockets").await;
    assert_eq!(ask(&mut publisher, "publish news hello").await, "ok");
    assert_eq!(first.next_text().await, "hello");
    assert_eq!(second.next_text().await, "hello");
    assert!(publisher.stays_quiet(Duration::from_millis(300)).await);

    assert_eq!(ask(&mut second, "unsubscribe news").await, "ok");
    assert_eq!(ask(&mut publisher, "publish news again").await, "ok");
    assert_eq!(first.next_text().await, "again");
    assert_eq!(ask(&mut publisher, "publish sport goal").await, "ok");
    assert_eq!(second.next_text().await, "goal");
    assert!(first.stays_quiet(Duration::from_millis(300)).await);

    // A socket may be sent to by id, by any socket.
    let first_id = ask(&mut first, "whoami").await;
    assert_eq!(
        ask(&mut publisher, &format!("send {first_id} direct")).await,
        "ok"
    );
    assert_eq!(first.next_text().await, "direct");

    // Bad topics and closed sockets are errors the handler sees.
    assert_eq!(
        ask(&mut publisher, "subscribe ").await,
        "error Error::InvalidTopic"
    );
    let publisher_id = ask(&mut publisher, "whoami").await;
    let node = publisher_id.split('.').next().unwrap();
    assert_eq!(
        ask(&mut publisher, &format!("send {node}.999999 hi")).await,
        "error Error::Closed"
    );

    // Any component (or anything else) reaches sockets with a plain Redis PUBLISH on the
    // topic's channel.
    if backends == Backends::Real {
        let client = redis::Client::open(support::redis_url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let channel = format!("{}ws:topic:news", nexus.redis_prefix);
        let delivered: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("from redis")
            .query_async(&mut connection)
            .await
            .unwrap();
        // Two receivers: the node's subscription to the topic, and its one pattern
        // subscription to every topic, for the requests parked on this node.
        assert_eq!(
            delivered, 2,
            "one node holds the topic, and hears every topic for its parked requests"
        );
        assert_eq!(first.next_text().await, "from redis");
    }
}

/// `subscribe-in-sequence` and `send-in-sequence`: each number once, rising; what is published
/// while the connect handler replays its log comes after the replay, with no repeat.
async fn topics_in_sequence_deliver_each_number_once(backends: Backends) {
    let nexus = start(backends).await;
    // The handler subscribes in sequence, publishes 1, 2 and 3 live, then replays 1 and 2: the
    // client gets the replay, then only 3 of the live ones.
    let (mut resumed, _) = open(&nexus, "/sockets?seq=log&publish=1,2,3&replay=1,2").await;
    assert_eq!(resumed.next_text().await, r#"{"n":1,"from":"replay"}"#);
    assert_eq!(resumed.next_text().await, r#"{"n":2,"from":"replay"}"#);
    assert_eq!(resumed.next_text().await, r#"{"n":3,"from":"live"}"#);
    assert!(resumed.stays_quiet(Duration::from_millis(300)).await);

    let (mut reader, _) = open(&nexus, "/sockets").await;
    let (mut publisher, _) = open(&nexus, "/sockets").await;
    assert_eq!(ask(&mut reader, "seqsub feed n 5").await, "ok");
    for body in [
        r#"{"n":4,"x":1}"#,
        r#"{"n":6,"x":1}"#,
        r#"{"n":6,"x":1}"#,
        r#"{"kind":"typing"}"#,
        r#"{"n":7,"x":1}"#,
    ] {
        assert_eq!(
            ask(&mut publisher, &format!("publish feed {body}")).await,
            "ok"
        );
    }
    assert_eq!(reader.next_text().await, r#"{"n":6,"x":1}"#);
    assert_eq!(reader.next_text().await, r#"{"kind":"typing"}"#);
    assert_eq!(reader.next_text().await, r#"{"n":7,"x":1}"#);
    // A numbered send at or below the mark is skipped; above it, sent, and it raises the mark.
    reader.send("seqsend feed 7 skipped").await;
    reader.send("seqsend feed 9 nine").await;
    assert_eq!(reader.next_text().await, "nine");
    assert_eq!(
        ask(&mut publisher, r#"publish feed {"n":8,"x":1}"#).await,
        "ok"
    );
    assert_eq!(
        ask(&mut publisher, r#"publish feed {"n":10,"x":1}"#).await,
        "ok"
    );
    assert_eq!(reader.next_text().await, r#"{"n":10,"x":1}"#);
    // Published out of order (each publisher commits, then publishes): put back in order.
    assert_eq!(
        ask(&mut publisher, r#"publish feed {"n":12,"x":1}"#).await,
        "ok"
    );
    assert_eq!(
        ask(&mut publisher, r#"publish feed {"n":11,"x":1}"#).await,
        "ok"
    );
    assert_eq!(reader.next_text().await, r#"{"n":11,"x":1}"#);
    assert_eq!(reader.next_text().await, r#"{"n":12,"x":1}"#);
    // A message that is only its number takes its place and is not sent.
    assert_eq!(ask(&mut publisher, r#"publish feed {"n":13}"#).await, "ok");
    assert_eq!(
        ask(&mut publisher, r#"publish feed {"n":14,"x":1}"#).await,
        "ok"
    );
    assert_eq!(reader.next_text().await, r#"{"n":14,"x":1}"#);
    // 15 never comes: after a while the socket is closed, to catch up from its log.
    assert_eq!(
        ask(&mut publisher, r#"publish feed {"n":16,"x":1}"#).await,
        "ok"
    );
    let close = reader.closed(Duration::from_secs(10)).await.unwrap();
    assert_eq!(u16::from(close.code), 1013, "{close:?}");
    assert!(
        nexus
            .metrics()
            .await
            .contains("nexus_websockets_closed_sequence_gap_total 1"),
    );
}

both_backends!(
    the_handler_sees_connect_messages_and_context,
    topics_reach_their_subscribers_only,
    topics_in_sequence_deliver_each_number_once
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_oversized_messages_and_failing_handlers() {
    let nexus = Nexus::start_with(
        MANIFEST,
        Backends::Embedded,
        &[("NEXUS_MAX_WEBSOCKETS", "4")],
    )
    .await;
    // The handler refuses: its status and body.
    match Socket::try_open(&nexus.ws_url("/sockets?refuse=403"), &[]).await {
        Opened::Refused(status, body) => {
            assert_eq!(status, 403);
            assert_eq!(body, "refused by the handler");
        }
        Opened::Open(_) => panic!("the handler refused this socket"),
    }
    // A plain GET on a WebSocket route.
    let response = support::client()
        .get(nexus.url("/sockets"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 426);

    // A message over the cap closes the socket with 1009; others go on.
    let (mut bystander, _) = open(&nexus, "/sockets").await;
    let (mut big, _) = open(&nexus, "/sockets").await;
    big.send(&"x".repeat(200_000)).await;
    let frame = big
        .closed(Duration::from_secs(5))
        .await
        .expect("a close frame");
    assert_eq!(u16::from(frame.code), 1009);

    // A handler that loops is stopped at its CPU deadline; its socket is closed with 1011.
    let (mut looping, _) = open(&nexus, "/sockets").await;
    looping.send("spin").await;
    let frame = looping
        .closed(Duration::from_secs(30))
        .await
        .expect("a close frame");
    assert_eq!(u16::from(frame.code), 1011);
    assert_eq!(
        ask(&mut bystander, "echo still here").await,
        "echo still here"
    );
    wait_for_open_sockets(&nexus, 1).await;

    // The host's socket cap: four at most.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open(&nexus, "/sockets").await);
    }
    match Socket::try_open(&nexus.ws_url("/sockets"), &[]).await {
        Opened::Refused(status, body) => {
            assert_eq!(status, 503);
            assert!(body.contains("too-many-websockets"), "{body}");
        }
        Opened::Open(_) => panic!("a fifth socket was accepted"),
    }
    drop(held);
    // Closed sockets free their places.
    wait_for_open_sockets(&nexus, 1).await;
    let (mut again, _) = open(&nexus, "/sockets").await;
    assert_eq!(ask(&mut again, "echo in").await, "echo in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_slow_sockets_are_closed_without_holding_up_others() {
    let nexus = start(Backends::Embedded).await;
    // A client that never reads never answers pings.
    let (silent, _) = open(&nexus, "/heartbeat?topic=ignored").await;
    let (mut watcher, _) = open(&nexus, "/sockets?topic=disconnects").await;
    let silent_id = {
        // The welcome was read by `open`; now stop reading.
        let mut silent = silent;
        let id = ask(&mut silent, "whoami").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Its close arrives among what was queued while it did not read.
        let frame = silent.closed(Duration::from_secs(5)).await;
        assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
        id
    };
    assert_eq!(watcher.next_text().await, silent_id);

    // A subscriber that does not read falls behind and is closed (1013); a reading one gets
    // every message.
    let (mut fast, _) = open(&nexus, "/slow/fast?topic=firehose").await;
    let (mut slow, _) = open(&nexus, "/slow/slow?topic=firehose").await;
    let (mut publisher, _) = open(&nexus, "/sockets").await;
    let payload = "y".repeat(60_000);
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 200 {
            let text = fast.next_text().await;
            assert_eq!(text.len(), 60_000);
            seen += 1;
        }
        seen
    });
    for _ in 0..200 {
        publisher.send(&format!("publish firehose {payload}")).await;
        assert_eq!(publisher.next_text().await, "ok");
    }
    assert_eq!(reader.await.unwrap(), 200);
    let frame = slow
        .closed(Duration::from_secs(10))
        .await
        .expect("a close frame");
    assert_eq!(u16::from(frame.code), 1013);
    let metrics = nexus.metrics().await;
    assert!(
        metrics.contains("nexus_websockets_closed_too_slow_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hosts_share_topics_and_reach_each_others_sockets() {
    let first = start(Backends::Real).await;
    let second = first.peer().await;
    let (mut here, here_id) = open(&first, "/sockets?topic=team").await;
    let (mut there, there_id) = open(&second, "/sockets?topic=team").await;
    assert_ne!(
        here_id.split('.').next(),
        there_id.split('.').next(),
        "two nodes"
    );

    here.send("publish team from-first").await;
    assert_eq!(two_texts(&mut here).await, ["from-first", "ok"]);
    assert_eq!(there.next_text().await, "from-first");

    // Sending, subscribing and closing reach a socket on the other node.
    assert_eq!(
        ask(&mut here, &format!("send {there_id} across")).await,
        "ok"
    );
    assert_eq!(there.next_text().await, "across");
    let (mut observer, _) = open(&second, "/sockets?topic=disconnects").await;
    assert_eq!(ask(&mut there, "subscribe late").await, "ok");
    assert_eq!(ask(&mut here, "publish late news").await, "ok");
    assert_eq!(there.next_text().await, "news");

    // Closing the socket on the other node: its disconnect is published there.
    let mut closer = Socket::open(&first.ws_url("/sockets"), &[]).await;
    closer.next_text().await;
    closer.send(&format!("send {there_id} bye")).await;
    assert_eq!(closer.next_text().await, "ok");
    assert_eq!(there.next_text().await, "bye");
    there.close().await;
    assert_eq!(observer.next_text().await, there_id);
}
