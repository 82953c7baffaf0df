//! A tenant bot for the tests: it answers `echo v2: <text>` and hands off on `agent`; on
//! `loop` (or for a customer whose nickname starts with `loop`, from the first turn) it never
//! returns, on `memory` it allocates until it is stopped, on `forbidden` it
//! calls a host it was not granted (and gives up with the error), on `granted <url>` it calls
//! that URL and replies with the answer; on `card on file` it replies with a card number (for
//! the outbound transforms of bot replies).

use nexus_tenant::{Action, Bot, Handoff, Turn, http};

struct Misbehave;

impl Bot for Misbehave {
    fn handle(turn: Turn) -> Result<Vec<Action>, String> {
        let text = turn.text();
        if text.contains("loop") || turn.conversation.customer_nickname.starts_with("loop") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if text.contains("memory") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        if text.contains("forbidden") {
            let answer = http::get("http://example.com/")?;
            return Ok(vec![Action::Reply(format!(
                "reached it: {}",
                answer.status
            ))]);
        }
        if let Some(url) = text.strip_prefix("granted ") {
            let answer = http::get(url.trim())?;
            return Ok(vec![Action::Reply(format!("it said: {}", answer.text()))]);
        }
        if text.contains("card on file") {
            return Ok(vec![Action::Reply(
                "the card on file is 4111 1111 1111 1111".into(),
            )]);
        }
        if text.contains("agent") {
            return Ok(vec![Action::Handoff(Handoff {
                queue: None,
                reason: Some("echo bot handoff".into()),
            })]);
        }
        if turn.messages.is_empty() {
            return Ok(vec![Action::Reply("echo v2 here".into())]);
        }
        Ok(vec![Action::Reply(format!("echo v2: {text}"))])
    }
}

nexus_tenant::export_bot!(Misbehave);
