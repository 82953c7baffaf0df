//! Each agent's event log: what their desktop is told (invitations, state changes, new
//! messages), in order, numbered, replayable.
//!
//! | key | type | what |
//! |---|---|---|
//! | `agent:{id}:seq` | string | the last sequence number given |
//! | `agent:{id}:events` | sorted set | the last [`EVENT_LOG_LEN`] events, as JSON, scored by `seq` |
//! | `ws:topic:agent:{id}` | pub/sub channel | every event as it happens: the agent's WebSockets |
//!
//! An event is logged before it is published, so a desktop that reconnects with the last
//! `seq` it saw (`?after=N` on the socket, or the long-poll) misses nothing: it may see an event
//! twice (once replayed, once live), and tells them apart by `seq`. Two events pushed at once may
//! be logged in either order; readers return only a run of consecutive numbers.

use serde_json::Value;

use crate::api::ApiResult;
use crate::spin::{Live, arg, int_arg, reply_text};
use spin_sdk::redis::RedisResult;

/// How many events an agent's log keeps (it may grow 50 past it between trims).
pub const EVENT_LOG_LEN: i64 = 1000;

/// The WebSocket topic of an agent's events.
pub fn agent_topic(agent_id: &str) -> String {
    format!("agent:{agent_id}")
}

/// Logs an event for an agent and publishes it; its `seq`.
pub fn push(live: &Live, agent_id: &str, mut event: Value) -> ApiResult<i64> {
    let reply = live.cmd("INCR", &[arg(live.key(&format!("agent:{agent_id}:seq")))])?;
    let seq = match reply.first() {
        Some(RedisResult::Int64(seq)) => *seq,
        _ => 0,
    };
    event["seq"] = Value::from(seq);
    let text = event.to_string();
    let log = live.key(&format!("agent:{agent_id}:events"));
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

/// What an agent's log holds after a sequence number.
pub struct LogRead {
    /// Consecutive events after the number asked for.
    pub events: Vec<Value>,
    /// The log no longer reaches back to the number asked for: events were trimmed (or lost
    /// with Redis) and the desktop should reload its interactions.
    pub lost: bool,
}

/// Up to `limit` events after `after`. With `skip_gaps`, a number still missing is given up
/// on (a writer that died between numbering and logging) instead of waited for.
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
    };
    let mut expected = after + 1;
    for event in parsed {
        let seq = event["seq"].as_i64().unwrap_or_default();
        if seq != expected {
            if read.events.is_empty() && !skip_gaps {
                // Trimmed away, or still on its way: the first is older than anything logged
                // only if the log starts after it.
                let oldest = live.cmd("ZRANGE", &[arg(&log), int_arg(0), int_arg(0)])?;
                let oldest_seq = oldest
                    .first()
                    .and_then(reply_text)
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|e| e["seq"].as_i64());
                if after > 0 && oldest_seq.is_some_and(|oldest| oldest > after + 1) {
                    read.lost = true;
                } else {
                    // The next one is still on its way: nothing to give yet.
                    return Ok(read);
                }
            } else if !skip_gaps {
                break;
            }
        }
        expected = seq + 1;
        read.events.push(event);
    }
    Ok(read)
}
