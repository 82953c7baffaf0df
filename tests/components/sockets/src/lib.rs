//! A socket-handler driven by its client, for the host's WebSocket tests.
//!
//! Connect with `?topic=a&topic=b` to be subscribed at once, `?ctx=v` to set the socket's
//! context, `?refuse=403` to be refused with that status. Then send text commands:
//! `echo X`, `whoami`, `context`, `subscribe T`, `unsubscribe T`, `publish T X`,
//! `send ID X`, `close CODE`, `spin` (loops until the CPU deadline), `seqsub T FIELD AFTER`
//! (subscribe in sequence), `seqsend T SEQ X` (send in sequence). Binary messages come back
//! as they are. Every disconnect is published to the topic `disconnects`.
//!
//! `?seq=T&publish=1,2&replay=1` replays a log while going live, as a resuming client's
//! handler does: it subscribes to `T` in sequence (field `n`), publishes `{"n":k,"from":"live"}`
//! for each `publish` number, gives those a moment to reach the host, then sends
//! `{"n":k,"from":"replay"}` in sequence for each `replay` number.
// The export macro of wit-bindgen generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../../wit/websocket",
    world: "nexus:websocket/socket-handler",
    generate_all,
});

use exports::nexus::websocket::handler::{Guest, Refusal};
use nexus::websocket::connections;
use nexus::websocket::types::{Frame, UpgradeRequest};

struct Sockets;

fn query_values<'a>(request: &'a UpgradeRequest, key: &str) -> Vec<&'a str> {
    let query = request
        .path_with_query
        .split_once('?')
        .map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

fn say(connection: &str, text: String) {
    let _ = connections::send(connection, &Frame::Text(text));
}

fn outcome(connection: &str, result: Result<(), nexus::websocket::types::Error>) {
    match result {
        Ok(()) => say(connection, "ok".into()),
        Err(err) => say(connection, format!("error {err:?}")),
    }
}

impl Guest for Sockets {
    fn on_connect(connection: String, request: UpgradeRequest) -> Result<String, Refusal> {
        if let Some(status) = query_values(&request, "refuse").first() {
            return Err(Refusal {
                status: status.parse().unwrap_or(403),
                content_type: "text/plain".into(),
                body: b"refused by the handler".to_vec(),
            });
        }
        for topic in query_values(&request, "topic") {
            if let Err(err) = connections::subscribe(&connection, topic) {
                return Err(Refusal {
                    status: 503,
                    content_type: "text/plain".into(),
                    body: format!("cannot subscribe: {err:?}").into_bytes(),
                });
            }
        }
        say(&connection, format!("welcome {connection}"));
        if let Some(topic) = query_values(&request, "seq").first() {
            replay_while_live(&connection, topic, &request);
        }
        Ok(query_values(&request, "ctx")
            .first()
            .map_or("anonymous", |v| v)
            .to_owned())
    }

    fn on_message(connection: String, context: String, message: Frame) {
        let text = match message {
            Frame::Text(text) => text,
            Frame::Binary(bytes) => {
                let _ = connections::send(&connection, &Frame::Binary(bytes));
                return;
            }
        };
        let (command, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        match command {
            "echo" => say(&connection, format!("echo {rest}")),
            "whoami" => say(&connection, connection.clone()),
            "context" => say(&connection, context),
            "subscribe" => outcome(&connection, connections::subscribe(&connection, rest)),
            "unsubscribe" => outcome(&connection, connections::unsubscribe(&connection, rest)),
            "publish" => {
                let (topic, body) = rest.split_once(' ').unwrap_or((rest, ""));
                outcome(
                    &connection,
                    connections::publish(topic, &Frame::Text(body.into())),
                );
            }
            "send" => {
                let (to, body) = rest.split_once(' ').unwrap_or((rest, ""));
                outcome(
                    &connection,
                    connections::send(to, &Frame::Text(body.into())),
                );
            }
            "close" => {
                let code = rest.parse().unwrap_or(1000);
                let _ = connections::close(&connection, code, "asked to close");
            }
            "seqsub" => {
                let parts: Vec<&str> = rest.split(' ').collect();
                let [topic, field, after] = parts[..] else {
                    return say(&connection, "usage: seqsub T FIELD AFTER".into());
                };
                outcome(
                    &connection,
                    connections::subscribe_in_sequence(
                        &connection,
                        topic,
                        field,
                        after.parse().unwrap_or(0),
                    ),
                );
            }
            "seqsend" => {
                let parts: Vec<&str> = rest.splitn(3, ' ').collect();
                let [topic, seq, body] = parts[..] else {
                    return say(&connection, "usage: seqsend T SEQ X".into());
                };
                let sent = connections::send_in_sequence(
                    &connection,
                    topic,
                    seq.parse().unwrap_or(0),
                    &Frame::Text(body.into()),
                );
                if let Err(err) = sent {
                    say(&connection, format!("error {err:?}"));
                }
            }
            "spin" =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            other => say(&connection, format!("unknown command {other}")),
        }
    }

    fn on_disconnect(connection: String, _context: String) {
        let _ = connections::publish("disconnects", &Frame::Text(connection));
    }
}

export!(Sockets);

fn numbers(request: &UpgradeRequest, key: &str) -> Vec<u64> {
    query_values(request, key)
        .first()
        .map(|list| list.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

fn replay_while_live(connection: &str, topic: &str, request: &UpgradeRequest) {
    if let Err(err) = connections::subscribe_in_sequence(connection, topic, "n", 0) {
        return say(connection, format!("error {err:?}"));
    }
    for n in numbers(request, "publish") {
        let live = format!(r#"{{"n":{n},"from":"live"}}"#);
        let _ = connections::publish(topic, &Frame::Text(live));
    }
    // Long enough for the publishes to come back through Redis while this handler still runs,
    // so that the host holds them (the order the client sees is the same either way).
    std::thread::sleep(std::time::Duration::from_millis(300));
    for n in numbers(request, "replay") {
        let replayed = format!(r#"{{"n":{n},"from":"replay"}}"#);
        let _ = connections::send_in_sequence(connection, topic, n, &Frame::Text(replayed));
    }
}
