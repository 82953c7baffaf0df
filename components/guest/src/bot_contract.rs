//! The bot webhook contract: what a third-party bot answers to a turn.
//!
//! nexus POSTs each turn to the bot's URL (`{"turnId", "bot", "event", "conversation",
//! "messages"}`, see the README) and the bot answers 200 with its actions, done in order:
//!
//! ```json
//! {"actions": [
//!   {"type": "reply", "text": "Hello! What can I do for you?"},
//!   {"type": "ask", "text": "Which one?", "options": ["Billing", "Support"]},
//!   {"type": "setUserData", "data": {"intent": "billing"}},
//!   {"type": "handoff", "queue": "billing", "reason": "asked for a person"},
//!   {"type": "end", "reason": "resolved"}
//! ]}
//! ```
//!
//! An empty answer (or 204) is no action. `handoff` and `end` finish the bot's part, so nothing
//! may follow them. An answer that breaks these rules is refused whole: the conversation goes to
//! routing as if the bot had not answered, and the reason is logged.

use serde_json::{Map, Value};

/// At most this many actions in one answer.
pub const MAX_ACTIONS: usize = 20;
/// A reply's or question's text, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// A question's options, each at most [`MAX_OPTION_CHARS`].
pub const MAX_OPTIONS: usize = 10;
pub const MAX_OPTION_CHARS: usize = 100;
/// A `setUserData` object, encoded.
pub const MAX_USER_DATA_BYTES: usize = 8192;
/// A handoff's or end's reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Says `text` to the customer.
    Reply { text: String },
    /// Asks the customer, offering `options` (a channel that cannot show them shows the text).
    Ask { text: String, options: Vec<String> },
    /// Merges `data` into the conversation's user data (a null value removes the key).
    SetUserData { data: Map<String, Value> },
    /// Gives the conversation to routing: `queue`, or the channel rule's queue.
    Handoff {
        queue: Option<String>,
        reason: Option<String>,
    },
    /// Ends the conversation.
    End { reason: Option<String> },
}

impl Action {
    /// Whether the bot's part is over after this action.
    pub fn finishes(&self) -> bool {
        matches!(self, Action::Handoff { .. } | Action::End { .. })
    }
}

fn text_field(action: &Value, index: usize, name: &str, max: usize) -> Result<String, String> {
    match action.get(name).and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() && text.chars().count() <= max => Ok(text.to_owned()),
        _ => Err(format!(
            "actions[{index}].{name} is a non-empty text of at most {max} characters"
        )),
    }
}

fn optional_text(
    action: &Value,
    index: usize,
    name: &str,
    max: usize,
) -> Result<Option<String>, String> {
    match action.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => text_field(action, index, name, max).map(Some),
    }
}

fn is_queue_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

fn action(value: &Value, index: usize) -> Result<Action, String> {
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "reply" => Ok(Action::Reply {
            text: text_field(value, index, "text", MAX_TEXT_CHARS)?,
        }),
        "ask" => {
            let text = text_field(value, index, "text", MAX_TEXT_CHARS)?;
            let options = match value.get("options") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) if items.len() <= MAX_OPTIONS => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .filter(|s| !s.is_empty() && s.chars().count() <= MAX_OPTION_CHARS)
                            .map(str::to_owned)
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        format!(
                            "actions[{index}].options are texts of 1 to {MAX_OPTION_CHARS} characters"
                        )
                    })?,
                Some(_) => {
                    return Err(format!(
                        "actions[{index}].options is a list of at most {MAX_OPTIONS} texts"
                    ));
                }
            };
            Ok(Action::Ask { text, options })
        }
        "setUserData" => match value.get("data") {
            Some(Value::Object(data))
                if serde_json::to_vec(data).map_or(usize::MAX, |v| v.len())
                    <= MAX_USER_DATA_BYTES =>
            {
                Ok(Action::SetUserData { data: data.clone() })
            }
            _ => Err(format!(
                "actions[{index}].data is an object of at most {MAX_USER_DATA_BYTES} bytes"
            )),
        },
        "handoff" => {
            let queue = optional_text(value, index, "queue", 128)?;
            if let Some(queue) = &queue
                && !is_queue_name(queue)
            {
                return Err(format!("actions[{index}].queue is not a queue name"));
            }
            Ok(Action::Handoff {
                queue,
                reason: optional_text(value, index, "reason", MAX_REASON_CHARS)?,
            })
        }
        "end" => Ok(Action::End {
            reason: optional_text(value, index, "reason", MAX_REASON_CHARS)?,
        }),
        other => Err(format!(
            "actions[{index}].type `{other}` is not one of reply, ask, setUserData, handoff, end"
        )),
    }
}

/// The actions of a bot's answer (its body, as it came).
pub fn parse_answer(body: &[u8]) -> Result<Vec<Action>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let answer: Value =
        serde_json::from_slice(body).map_err(|err| format!("the answer is not JSON: {err}"))?;
    parse_actions(&answer)
}

/// The actions of an answer already decoded (a tenant bot component's, from the host).
pub fn parse_actions(answer: &Value) -> Result<Vec<Action>, String> {
    let items = match answer.get("actions") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_ACTIONS => items,
        Some(_) => {
            return Err(format!(
                "`actions` is a list of at most {MAX_ACTIONS} actions"
            ));
        }
    };
    let actions = items
        .iter()
        .enumerate()
        .map(|(index, item)| action(item, index))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(index) = actions.iter().position(Action::finishes)
        && index + 1 < actions.len()
    {
        return Err(format!(
            "actions[{index}] hands off or ends the conversation: nothing may follow it"
        ));
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Vec<Action>, String> {
        parse_answer(&serde_json::to_vec(&value).unwrap())
    }

    #[test]
    fn every_action_of_the_contract_is_read_in_order() {
        let actions = parse(json!({"actions": [
            {"type": "reply", "text": "Hi"},
            {"type": "ask", "text": "Which?", "options": ["A", "B"]},
            {"type": "setUserData", "data": {"intent": "billing", "old": null}},
            {"type": "handoff", "queue": "billing", "reason": "asked for a person"},
        ]}))
        .unwrap();
        assert_eq!(
            actions,
            vec![
                Action::Reply { text: "Hi".into() },
                Action::Ask {
                    text: "Which?".into(),
                    options: vec!["A".into(), "B".into()]
                },
                Action::SetUserData {
                    data: json!({"intent": "billing", "old": null})
                        .as_object()
                        .unwrap()
                        .clone()
                },
                Action::Handoff {
                    queue: Some("billing".into()),
                    reason: Some("asked for a person".into())
                },
            ]
        );
        assert_eq!(
            parse(json!({"actions": [{"type": "end"}]})).unwrap(),
            vec![Action::End { reason: None }]
        );
    }

    #[test]
    fn an_empty_answer_is_no_action() {
        assert_eq!(parse_answer(b"").unwrap(), vec![]);
        assert_eq!(parse_answer(b" \n").unwrap(), vec![]);
        assert_eq!(parse(json!({})).unwrap(), vec![]);
        assert_eq!(parse(json!({"actions": []})).unwrap(), vec![]);
    }

    #[test]
    fn a_broken_answer_is_refused_with_its_reason() {
        let refused = |value: Value| parse(value).unwrap_err();
        assert!(parse_answer(b"<html>").unwrap_err().contains("not JSON"));
        assert!(refused(json!({"actions": "reply"})).contains("a list"));
        assert!(refused(json!({"actions": [{"type": "dance"}]})).contains("`dance`"));
        assert!(refused(json!({"actions": [{"type": "reply"}]})).contains("actions[0].text"));
        assert!(refused(json!({"actions": [{"type": "reply", "text": "  "}]})).contains("text"));
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        assert!(refused(json!({"actions": [{"type": "reply", "text": long}]})).contains("4096"));
        assert!(
            refused(json!({"actions": [{"type": "ask", "text": "?", "options": [1]}]}))
                .contains("options")
        );
        assert!(
            refused(json!({"actions": [{"type": "setUserData", "data": [1]}]})).contains("object")
        );
        assert!(
            refused(json!({"actions": [{"type": "handoff", "queue": "no spaces"}]}))
                .contains("queue")
        );
        let many: Vec<Value> = (0..=MAX_ACTIONS)
            .map(|_| json!({"type": "reply", "text": "x"}))
            .collect();
        assert!(refused(json!({ "actions": many })).contains("at most 20"));
    }

    #[test]
    fn nothing_may_follow_a_handoff_or_an_end() {
        let refused = parse(json!({"actions": [
            {"type": "handoff"},
            {"type": "reply", "text": "still here"},
        ]}))
        .unwrap_err();
        assert!(refused.contains("nothing may follow"), "{refused}");
        assert!(parse(json!({"actions": [{"type": "end"}, {"type": "end"}]})).is_err());
    }
}
