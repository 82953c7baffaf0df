//! The live state of a chat session in Redis, under the application's key prefix:
//!
//! | key | type | what |
//! |---|---|---|
//! | `chat:{id}` | hash | tenant, channel, customer participant, nickname, state |
//! | `chat:{id}:tail` | sorted set | the last [`TAIL_LEN`] messages, as the API's JSON, scored by position |
//! | `chat:{id}:typing` | hash | who is typing, until when |
//! | `chat:{id}:active` | string | present while the session is not idle (the inactivity timer) |
//! | `ws:topic:chat:{id}` | pub/sub channel | every message appended, as the API's JSON: wakes the session's parked reads on every node (`nexus:platform/parking`), and reaches sockets subscribed to the topic [`session_topic`] |
//! | `chat:{id}:agents` | hash | the agents taking part, and how (`primary`, `monitor`, ...) |
//!
//! PostgreSQL is written first and is the truth; all of this is rebuilt from it when missing
//! (Redis flushed, restarted or evicting). The tail is a sorted set, not a list, because two
//! concurrent senders commit positions in order but may reach Redis in either order; a reader
//! only trusts a run of consecutive positions and reads PostgreSQL across any gap.

use crate::api::ApiResult;
use crate::spin::{Live, arg, int_arg, reply_text};
use serde_json::{Value, json};
use spin_sdk::redis::RedisResult;

/// How many messages the tail keeps (it may grow [`HOUSEKEEPING_EVERY`] past it between trims).
pub const TAIL_LEN: i64 = 200;
/// Every this many positions an append also trims the tail and renews the expiries: two fewer
/// round trips on the other sends. An expiry that runs out in between only costs a rebuild.
const HOUSEKEEPING_EVERY: i64 = 20;
/// How long live state outlives the last activity on an open session (it is rebuilt after).
const OPEN_TTL_SECONDS: i64 = 7 * 24 * 3600;
/// [`LiveState::load`] as one script. KEYS: the session, its agents. The reply: how many items
/// the session's `HGETALL` has, those items, then the agents' `HGETALL`.
const LOAD_SESSION: &str = "\
local session = redis.call('HGETALL', KEYS[1]) \
local agents = redis.call('HGETALL', KEYS[2]) \
local out = {#session} \
for i = 1, #session do out[#out + 1] = session[i] end \
for i = 1, #agents do out[#out + 1] = agents[i] end \
return out";

/// [`LiveState::customer_wrote`] as one script. KEYS: the tail, the session, its agents, its
/// typing, its inactivity timer. ARGV: the position, the message, whether it is time for
/// housekeeping (1), the tail's length, the live state's TTL, the channel to publish on, the
/// participant, the inactivity timeout in seconds. The same commands, in the same order, as
/// `append`, `set_typing(false)` and `touch` send one by one.
const CUSTOMER_WROTE: &str = "\
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) \
if ARGV[3] == '1' then \
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[4]) - 1) \
  redis.call('EXPIRE', KEYS[2], ARGV[5]) \
  redis.call('EXPIRE', KEYS[1], ARGV[5]) \
  redis.call('EXPIRE', KEYS[3], ARGV[5]) \
end \
redis.call('PUBLISH', ARGV[6], ARGV[9]) \
redis.call('HDEL', KEYS[4], ARGV[7]) \
redis.call('SET', KEYS[5], '1', 'EX', ARGV[8]) \
return 1";
/// How long it outlives the end of a session, for the last polls.
const ENDED_TTL_SECONDS: i64 = 3600;
/// How long a "typing" lasts without a refresh.
const TYPING_TTL_MS: u64 = 10_000;

/// The live state of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub tenant_id: i64,
    pub channel_id: String,
    pub participant_id: String,
    pub nickname: String,
    pub state: String,
    /// The agents taking part, each with their role.
    pub agents: Vec<(String, String)>,
}

/// What the tail holds after a position.
pub enum TailRead {
    /// The tail is gone: rebuild it from PostgreSQL.
    Lost,
    /// Consecutive messages after the position (none when nothing is newer).
    Messages(Vec<Value>),
    /// The tail does not reach back to the position: read PostgreSQL.
    Gap,
}

pub struct LiveState<'a> {
    live: &'a Live,
    session_id: &'a str,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// A flat `[field, value, field, value, ...]` reply as pairs of text.
pub fn pairs(reply: &[RedisResult]) -> Vec<(String, String)> {
    reply
        .chunks(2)
        .filter_map(|pair| match pair {
            [field, value] => Some((reply_text(field)?, reply_text(value)?)),
            _ => None,
        })
        .collect()
}

/// The fan-out topic of a chat session: what the customer may see of it is published there, as
/// the events of [`session_event`], which the customer's WebSocket sends as they are.
pub fn session_topic(session_id: &str) -> String {
    format!("chat:{session_id}")
}

/// The events of a session's topic, as its customer's WebSocket sends them (the `SocketEvent`
/// schema of `openapi/chat-v3.json`): a JSON object with a `type`. Every transcript message
/// carries its `position` at the top, which the socket delivers in sequence (each once, in
/// order, none skipped: `nexus:websocket`'s `subscribe-in-sequence`).
pub mod session_event {
    use serde_json::{Value, json};

    /// A transcript message: `{"type":"Message","position":N,"message":{...}}`; one the customer
    /// may not see (a whisper among agents) is only its place, `{"position":N}`, which keeps the
    /// socket's sequence whole and is not sent (the positions a customer reads skip it anyway).
    pub fn message(message: &Value) -> Value {
        if customer_sees(message) {
            json!({"type": "Message", "position": message["position"], "message": message})
        } else {
            json!({"position": message["position"]})
        }
    }

    /// Someone started or stopped typing.
    pub fn typing(participant_id: &str, nickname: &str, kind: &str, typing: bool) -> Value {
        json!({
            "type": "Typing",
            "participantId": participant_id,
            "nickname": nickname,
            "participantType": kind,
            "typing": typing,
        })
    }

    /// The session's state changed (`ended`).
    pub fn state(state: &str) -> Value {
        json!({"type": "State", "state": state})
    }

    /// Where routing has the session: `{"state","queue","position"}` as the transcript read
    /// answers it.
    pub fn routing(routing: &Value) -> Value {
        json!({"type": "Routing", "routing": routing})
    }

    /// Whether the customer may see a transcript message (whispers among agents stay theirs).
    pub fn customer_sees(message: &Value) -> bool {
        message["visibility"] == "All"
    }
}

impl<'a> LiveState<'a> {
    pub fn new(live: &'a Live, session_id: &'a str) -> LiveState<'a> {
        LiveState { live, session_id }
    }

    fn key(&self, suffix: &str) -> String {
        self.live.key(&format!("chat:{}{suffix}", self.session_id))
    }

    /// The session and its agents, in one round trip (two on a Redis without `EVAL_RO`: before
    /// 7.0, or the embedded one).
    pub fn load(&self) -> ApiResult<Option<LiveSession>> {
        // `EVAL_RO` (Redis 7): a script that only reads, which a client may send again after a
        // lost connection; an older Redis, or the embedded one, does not know it.
        let both = self.live.raw_cmd(
            "EVAL_RO",
            &[
                arg(LOAD_SESSION),
                int_arg(2),
                arg(self.key("")),
                arg(self.key(":agents")),
            ],
        );
        let (fields, agents) = match both {
            Ok(reply) => {
                let (count, rest) = match reply.split_first() {
                    Some((RedisResult::Int64(count), rest)) => {
                        (usize::try_from(*count).unwrap_or(0).min(rest.len()), rest)
                    }
                    _ => (0, &reply[..0]),
                };
                (pairs(&rest[..count]), Some(pairs(&rest[count..])))
            }
            Err(spin_sdk::redis::Error::Other(reason)) if reason.contains("unknown command") => (
                pairs(&self.live.cmd("HGETALL", &[arg(self.key(""))])?),
                None,
            ),
            Err(err) => return Err(crate::api::ApiError::internal("live state (EVAL_RO)", err)),
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value.clone())
        };
        let (Some(tenant), Some(channel), Some(participant), Some(state)) = (
            field("tenant").and_then(|t| t.parse().ok()),
            field("channel"),
            field("participant"),
            field("state"),
        ) else {
            return Ok(None);
        };
        Ok(Some(LiveSession {
            tenant_id: tenant,
            channel_id: channel,
            participant_id: participant,
            nickname: field("nickname").unwrap_or_default(),
            state,
            agents: match agents {
                Some(agents) => agents,
                None => pairs(&self.live.cmd("HGETALL", &[arg(self.key(":agents"))])?),
            },
        }))
    }

    /// Writes a whole session: the tail first, so that a session hash never stands without it.
    pub fn store(&self, session: &LiveSession, tail: &[Value]) -> ApiResult<()> {
        self.add_to_tail(tail)?;
        self.live.cmd(
            "HSET",
            &[
                arg(self.key("")),
                arg("tenant"),
                arg(session.tenant_id.to_string()),
                arg("channel"),
                arg(&session.channel_id),
                arg("participant"),
                arg(&session.participant_id),
                arg("nickname"),
                arg(&session.nickname),
                arg("state"),
                arg(&session.state),
            ],
        )?;
        self.live.cmd("DEL", &[arg(self.key(":agents"))])?;
        for (agent, role) in &session.agents {
            self.set_agent(agent, Some(role))?;
        }
        self.expire(&session.state)
    }

    /// Records that an agent takes part (with `role`) or no longer does (`None`).
    pub fn set_agent(&self, agent_id: &str, role: Option<&str>) -> ApiResult<()> {
        match role {
            Some(role) => self.live.cmd(
                "HSET",
                &[arg(self.key(":agents")), arg(agent_id), arg(role)],
            )?,
            None => self
                .live
                .cmd("HDEL", &[arg(self.key(":agents")), arg(agent_id)])?,
        };
        Ok(())
    }

    fn expire(&self, state: &str) -> ApiResult<()> {
        let ttl = if state == "ended" {
            ENDED_TTL_SECONDS
        } else {
            OPEN_TTL_SECONDS
        };
        for suffix in ["", ":tail", ":agents"] {
            self.live
                .cmd("EXPIRE", &[arg(self.key(suffix)), int_arg(ttl)])?;
        }
        Ok(())
    }

    /// Adds messages to the tail; whether it is time for housekeeping.
    fn add_to_tail(&self, messages: &[Value]) -> ApiResult<bool> {
        if messages.is_empty() {
            return Ok(false);
        }
        let mut args = vec![arg(self.key(":tail"))];
        let mut housekeeping = messages.len() > 1;
        for message in messages {
            let position = message["position"].as_i64().unwrap_or_default();
            housekeeping |= position % HOUSEKEEPING_EVERY == 0;
            args.push(int_arg(position));
            args.push(arg(message.to_string()));
        }
        self.live.cmd("ZADD", &args)?;
        if housekeeping {
            self.live.cmd(
                "ZREMRANGEBYRANK",
                &[arg(self.key(":tail")), int_arg(0), int_arg(-TAIL_LEN - 1)],
            )?;
        }
        Ok(housekeeping)
    }

    /// Appends committed messages and tells every node about those the customer may see (and
    /// about the end of the session).
    pub fn append(&self, messages: &[Value], state: &str) -> ApiResult<()> {
        if self.add_to_tail(messages)? || state == "ended" {
            self.expire(state)?;
        }
        for message in messages {
            self.publish(&session_event::message(message))?;
        }
        if state == "ended" {
            self.publish(&session_event::state(state))?;
        }
        Ok(())
    }

    /// Puts a committed message back into the tail without announcing it (see
    /// [`crate::conversation::announce_again`]), keeping the tail's time to live.
    pub fn restore(&self, message: &Value, state: &str) -> ApiResult<()> {
        self.add_to_tail(std::slice::from_ref(message))?;
        self.expire(state)
    }

    /// Publishes an event on the session's topic.
    pub fn publish(&self, event: &Value) -> ApiResult<()> {
        self.live.publish(
            &self
                .live
                .key(&format!("ws:topic:{}", session_topic(self.session_id))),
            event.to_string().as_bytes(),
        )
    }

    /// What a customer's committed message changes, in one round trip: the message appended to
    /// the tail (with the housekeeping every [`HOUSEKEEPING_EVERY`] positions), published, the
    /// customer no longer typing, and the inactivity timer restarted. A Redis without scripting
    /// (the embedded one) gets the same commands one by one.
    pub fn customer_wrote(
        &self,
        message: &Value,
        participant_id: &str,
        inactivity_seconds: i64,
    ) -> ApiResult<()> {
        let position = message["position"].as_i64().unwrap_or_default();
        let text = message.to_string();
        let channel = self
            .live
            .key(&format!("ws:topic:{}", session_topic(self.session_id)));
        let args = [
            arg(CUSTOMER_WROTE),
            int_arg(5),
            arg(self.key(":tail")),
            arg(self.key("")),
            arg(self.key(":agents")),
            arg(self.key(":typing")),
            arg(self.key(":active")),
            int_arg(position),
            arg(&text),
            int_arg(i64::from(position % HOUSEKEEPING_EVERY == 0)),
            int_arg(TAIL_LEN),
            int_arg(OPEN_TTL_SECONDS),
            arg(&channel),
            arg(participant_id),
            int_arg(inactivity_seconds.max(1)),
            arg(session_event::message(message).to_string()),
        ];
        match self.live.raw_cmd("EVAL", &args) {
            Ok(_) => Ok(()),
            Err(spin_sdk::redis::Error::Other(reason)) if reason.contains("unknown command") => {
                self.append(std::slice::from_ref(message), "active")?;
                self.set_typing(participant_id, "", "Customer", false)?;
                self.touch(inactivity_seconds)
            }
            Err(err) => Err(crate::api::ApiError::internal("live state (EVAL)", err)),
        }
    }

    pub fn set_state(&self, state: &str) -> ApiResult<()> {
        self.live
            .cmd("HSET", &[arg(self.key("")), arg("state"), arg(state)])?;
        self.expire(state)
    }

    /// Up to `limit` consecutive messages after `after`.
    pub fn tail_after(&self, after: i64, limit: i64) -> ApiResult<TailRead> {
        let reply = self.live.cmd(
            "ZRANGEBYSCORE",
            &[
                arg(self.key(":tail")),
                arg(format!("({after}")),
                arg("+inf"),
                arg("LIMIT"),
                int_arg(0),
                int_arg(limit),
            ],
        )?;
        if reply.is_empty() {
            let count = self.live.cmd("ZCARD", &[arg(self.key(":tail"))])?;
            return Ok(match count.first() {
                Some(RedisResult::Int64(0)) | None => TailRead::Lost,
                _ => TailRead::Messages(Vec::new()),
            });
        }
        let mut messages = Vec::with_capacity(reply.len());
        for (expected, member) in (after + 1..).zip(reply.iter()) {
            let Some(message) =
                reply_text(member).and_then(|text| serde_json::from_str::<Value>(&text).ok())
            else {
                return Ok(TailRead::Gap);
            };
            if message["position"].as_i64() != Some(expected) {
                // The first one missing means the tail starts later than asked: PostgreSQL has
                // what is before it. A later one missing is a send still on its way to Redis:
                // what is before it is complete.
                if messages.is_empty() {
                    return Ok(TailRead::Gap);
                }
                break;
            }
            messages.push(message);
        }
        Ok(TailRead::Messages(messages))
    }

    pub fn set_typing(
        &self,
        participant_id: &str,
        nickname: &str,
        kind: &str,
        typing: bool,
    ) -> ApiResult<()> {
        let key = self.key(":typing");
        if typing {
            let entry = json!({
                "participantId": participant_id,
                "nickname": nickname,
                "type": kind,
                "until": now_ms() + TYPING_TTL_MS,
            });
            self.live.cmd(
                "HSET",
                &[arg(&key), arg(participant_id), arg(entry.to_string())],
            )?;
            self.live.cmd(
                "PEXPIRE",
                &[
                    arg(&key),
                    int_arg(i64::try_from(TYPING_TTL_MS).unwrap_or(i64::MAX)),
                ],
            )?;
        } else {
            self.live.cmd("HDEL", &[arg(&key), arg(participant_id)])?;
        }
        self.publish(&session_event::typing(
            participant_id,
            nickname,
            kind,
            typing,
        ))
    }

    /// Who else is typing now.
    pub fn typing(&self, except_participant: &str) -> ApiResult<Vec<Value>> {
        let reply = self.live.cmd("HGETALL", &[arg(self.key(":typing"))])?;
        let now = now_ms();
        Ok(pairs(&reply)
            .into_iter()
            .filter(|(participant, _)| participant != except_participant)
            .filter_map(|(_, entry)| serde_json::from_str::<Value>(&entry).ok())
            .filter(|entry| entry["until"].as_u64().is_some_and(|until| until > now))
            .map(|mut entry| {
                if let Some(object) = entry.as_object_mut() {
                    object.remove("until");
                }
                entry
            })
            .collect())
    }

    /// Restarts the inactivity timer.
    pub fn touch(&self, inactivity_seconds: i64) -> ApiResult<()> {
        self.live.cmd(
            "SET",
            &[
                arg(self.key(":active")),
                arg("1"),
                arg("EX"),
                int_arg(inactivity_seconds.max(1)),
            ],
        )?;
        Ok(())
    }

    pub fn is_idle(&self) -> ApiResult<bool> {
        let reply = self.live.cmd("EXISTS", &[arg(self.key(":active"))])?;
        Ok(matches!(reply.first(), Some(RedisResult::Int64(0))))
    }

    /// Drops the session hash, so that the next request rebuilds everything from PostgreSQL
    /// (after a write reached PostgreSQL but not Redis).
    pub fn forget(&self) {
        let _ = self
            .live
            .cmd("DEL", &[arg(self.key("")), arg(self.key(":tail"))]);
    }
}
