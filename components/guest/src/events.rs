//! Each agent's event log: what their desktop is told (invitations, state changes, new
//! messages), in order, numbered, replayable.
//!
//! | key | type | what |
//! |---|---|---|
//! | `agent:{id}:counter` | sorted set | one member, `n`, scored by the last sequence number given |
//! | `agent:{id}:events` | sorted set | the last [`EVENT_LOG_LEN`] events, as JSON, scored by `seq` |
//! | `ws:topic:agent:{id}` | pub/sub channel | every event as it happens: the agent's WebSockets |
//!
//! An event is logged before it is published, so a desktop that reconnects with the last
//! `seq` it saw (`?after=N` on the socket, or the long-poll) misses nothing: it may see an event
//! twice (once replayed, once live), and tells them apart by `seq`. Two events pushed at once may
//! be logged in either order; readers return only a run of consecutive numbers.
//!
//! Numbers only grow, and are never given twice, even when Redis loses the counter (restarted
//! empty, flushed): a counter that is missing starts again at the clock, in microseconds since
//! the epoch, above any number given before, and the log records where it started (a
//! `logStarted` entry, never shown to a desktop). A desktop that asks for what came after a
//! number from before is told that events were lost (and reloads its interactions), then gets
//! everything from the new start. (Microseconds stay below 2^53, the integers JSON readers keep
//! exactly, until the year 2255.)

use serde_json::Value;

use crate::api::ApiResult;
use crate::spin::{Live, arg, int_arg, reply_text};
use spin_sdk::redis::RedisResult;

/// How long a reader waits for a missing number (taken by a writer that has not logged its
/// event yet, with later ones logged) before it gives up on it (the writer died).
pub const HOLE_WAIT_MS: u64 = 1000;

/// How many events an agent's log keeps (it may grow 50 past it between trims).
pub const EVENT_LOG_LEN: i64 = 1000;

/// The WebSocket topic of an agent's events.
pub fn agent_topic(agent_id: &str) -> String {
    format!("agent:{agent_id}")
}

/// The next number of an agent's log. `ZADD XX INCR` counts only on a counter that exists, so a
/// missing one is seen as missing (where `INCR` would start it again at 1): it is started at the
/// clock by whoever gets there first (`NX`), who also logs where the numbering starts.
fn next_seq(live: &Live, agent_id: &str, log: &str) -> ApiResult<i64> {
    let counter = live.key(&format!("agent:{agent_id}:counter"));
    for _ in 0..3 {
        let counted = live.cmd(
            "ZADD",
            &[arg(&counter), arg("XX"), arg("INCR"), arg("1"), arg("n")],
        )?;
        if let Some(seq) = counted
            .first()
            .and_then(reply_text)
            .and_then(|score| score.parse::<f64>().ok())
        {
            // Scores are doubles: whole numbers up to 2^53 are exact.
            return Ok(seq as i64);
        }
        start_counter(live, &counter, log)?;
    }
    Err(crate::api::ApiError::internal(
        "number an agent event",
        "the counter vanished three times in a row",
    ))
}

/// Starts a missing counter at the clock, and logs where the numbering starts; a counter that
/// exists is left as it is (whoever gets there first starts it).
fn start_counter(live: &Live, counter: &str, log: &str) -> ApiResult<()> {
    let start = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_micros())
            .unwrap_or_default(),
    )
    .unwrap_or(i64::MAX);
    let started = live.cmd("ZADD", &[arg(counter), arg("NX"), int_arg(start), arg("n")])?;
    if matches!(started.first(), Some(RedisResult::Int64(1))) {
        let marker = serde_json::json!({ "seq": start, "logStarted": true });
        live.cmd("ZADD", &[arg(log), int_arg(start), arg(marker.to_string())])?;
    }
    Ok(())
}

/// The last number an agent's log gave (starting the log if it has none yet): the next event
/// is numbered one above it. A socket that takes the events in sequence starts from here.
pub fn last_given(live: &Live, agent_id: &str) -> ApiResult<i64> {
    let counter = live.key(&format!("agent:{agent_id}:counter"));
    let log = live.key(&format!("agent:{agent_id}:events"));
    for _ in 0..3 {
        start_counter(live, &counter, &log)?;
        let score = live.cmd("ZSCORE", &[arg(&counter), arg("n")])?;
        if let Some(given) = score
            .first()
            .and_then(reply_text)
            .and_then(|score| score.parse::<f64>().ok())
        {
            // Scores are doubles: whole numbers up to 2^53 are exact.
            return Ok(given as i64);
        }
    }
    Err(crate::api::ApiError::internal(
        "read an agent's event counter",
        "the counter vanished three times in a row",
    ))
}

/// Logs an event for an agent and publishes it; its `seq`.
pub fn push(live: &Live, agent_id: &str, mut event: Value) -> ApiResult<i64> {
    let log = live.key(&format!("agent:{agent_id}:events"));
    let seq = next_seq(live, agent_id, &log)?;
    event["seq"] = Value::from(seq);
    let text = event.to_string();
    live.cmd("ZADD", &[arg(&log), int_arg(seq), arg(&text)])?;
    if seq % 50 == 0 {
        live.cmd(
            "ZREMRANGEBYRANK",
            &[arg(&log), int_arg(0), int_arg(-EVENT_LOG_LEN - 1)],
        )?;
    }
    live.publish(
        &live.key(&format!("ws:topic:{}", agent_topic(agent_id))),
        text.as_bytes(),
    )?;
    Ok(seq)
}

/// Publishes a passing signal to an agent's socket without logging it (no `seq`): what is only
/// true for a few seconds, such as a customer typing, is not worth replaying after a reconnect,
/// and the long-poll never sees it.
pub fn signal(live: &Live, agent_id: &str, event: &Value) -> ApiResult<()> {
    live.publish(
        &live.key(&format!("ws:topic:{}", agent_topic(agent_id))),
        event.to_string().as_bytes(),
    )?;
    Ok(())
}

/// What an agent's log holds after a sequence number.
pub struct LogRead {
    /// Consecutive events after the number asked for.
    pub events: Vec<Value>,
    /// The log no longer reaches back to the number asked for: events were trimmed (or lost
    /// with Redis) and the desktop should reload its interactions.
    pub lost: bool,
    /// The number to ask after next time: the last event's, or where the numbering started
    /// again, or the one asked for.
    pub next: i64,
}

/// Up to `limit` events after `after` (0: from the oldest logged). With `skip_gaps`, a number
/// still missing is given up on (a writer that died between numbering and logging) instead of
/// waited for.
pub fn after(
    live: &Live,
    agent_id: &str,
    after: i64,
    limit: i64,
    skip_gaps: bool,
) -> ApiResult<LogRead> {
    let log = live.key(&format!("agent:{agent_id}:events"));
    let reply = live.cmd(
        "ZRANGEBYSCORE",
        &[
            arg(&log),
            arg(format!("({after}")),
            arg("+inf"),
            arg("LIMIT"),
            int_arg(0),
            int_arg(limit),
        ],
    )?;
    let parsed: Vec<Value> = reply
        .iter()
        .filter_map(|member| reply_text(member).and_then(|t| serde_json::from_str(&t).ok()))
        .collect();
    let mut read = LogRead {
        events: Vec::new(),
        lost: false,
        next: after,
    };
    // `None`: from whatever is oldest.
    let mut expected = (after > 0).then_some(after + 1);
    let mut restarted = false;
    for event in parsed {
        let seq = event["seq"].as_i64().unwrap_or_default();
        if event["logStarted"] == true {
            // The numbering started again here: what the desktop had is from before.
            read.lost |= after > 0;
            restarted = true;
            expected = Some(seq + 1);
            read.next = seq;
            continue;
        }
        if let Some(wanted) = expected
            && seq != wanted
            && !skip_gaps
        {
            if !read.events.is_empty() || restarted {
                // The next one is still on its way: a run of consecutive numbers only.
                break;
            }
            // The first event read is not the one asked for: trimmed away, or on its way.
            let oldest = live.cmd("ZRANGE", &[arg(&log), int_arg(0), int_arg(0)])?;
            let oldest_seq = oldest
                .first()
                .and_then(reply_text)
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|e| e["seq"].as_i64());
            if oldest_seq.is_some_and(|oldest| oldest > wanted) {
                read.lost = true;
            } else {
                return Ok(read);
            }
        }
        expected = Some(seq + 1);
        read.next = seq;
        read.events.push(event);
    }
    Ok(read)
}
