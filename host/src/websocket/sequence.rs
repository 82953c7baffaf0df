//! Delivery in sequence (`subscribe-in-sequence`): each number of a topic reaches a socket once,
//! in order, with none skipped.
//!
//! A topic's messages are numbered by a top-level JSON field. Publishers commit before they
//! publish, so two messages committed one after the other can be published the other way round;
//! a socket's sequence therefore holds a message that comes early (its number past the next one
//! due) until the ones before it came. A message that holds nothing but its number is a filler:
//! it takes its place in the sequence and is not sent (a publisher numbers what a subscriber
//! may not see that way, so that the numbers stay contiguous). A gap that is not filled in time
//! (a publish was lost) is the hub's to act on: it closes the socket, whose client reconnects
//! from the last number it got.

use std::collections::BTreeMap;

use super::Outgoing;

/// The most messages a sequence holds behind a gap; past it the socket has to catch up anew.
pub const MAX_PENDING: usize = 256;

/// How one socket receives one topic in sequence.
#[derive(Debug)]
pub struct Sequence {
    /// The top-level JSON field that numbers the topic's messages.
    field: String,
    /// The last number the socket has (sent, skipped as a filler, or told by its handler).
    mark: u64,
    /// Messages that came before their turn, by number (`None` for a filler).
    pending: BTreeMap<u64, Option<Outgoing>>,
}

/// What a published message lets through.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// To send now, in this order.
    pub send: Vec<Outgoing>,
    /// The message came early and opened a gap that nothing held before: the hub watches it.
    pub gap_opened: bool,
    /// More than [`MAX_PENDING`] messages wait behind a gap.
    pub overflow: bool,
}

impl Sequence {
    /// A sequence numbered by `field`, where the socket already has everything up to `after`.
    pub fn new(field: String, after: u64) -> Sequence {
        Sequence {
            field,
            mark: after,
            pending: BTreeMap::new(),
        }
    }

    pub fn mark(&self) -> u64 {
        self.mark
    }

    /// Whether messages wait behind a gap.
    pub fn has_gap(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A message published to the topic.
    pub fn published(&mut self, message: Outgoing) -> Admission {
        let Outgoing::Text(text) = &message else {
            return pass(message);
        };
        let Some((number, filler)) = sequence_number(text, &self.field) else {
            return pass(message);
        };
        let message = (!filler).then_some(message);
        if number <= self.mark || self.pending.contains_key(&number) {
            return Admission::default();
        }
        if number > self.mark + 1 {
            let gap_opened = self.pending.is_empty();
            self.pending.insert(number, message);
            return Admission {
                gap_opened,
                overflow: self.pending.len() > MAX_PENDING,
                ..Admission::default()
            };
        }
        self.mark = number;
        let mut send: Vec<Outgoing> = message.into_iter().collect();
        send.extend(self.drain());
        Admission {
            send,
            ..Admission::default()
        }
    }

    /// The handler sends message `seq` itself (replaying a log): `None` if the socket has it
    /// already; otherwise what comes after it, held until now, to send after it.
    pub fn numbered(&mut self, seq: u64) -> Option<Vec<Outgoing>> {
        if seq <= self.mark {
            return None;
        }
        self.mark = seq;
        self.pending = self.pending.split_off(&(seq + 1));
        Some(self.drain())
    }

    /// The held messages that are due now, in order.
    fn drain(&mut self) -> Vec<Outgoing> {
        let mut due = Vec::new();
        while let Some(message) = self.pending.remove(&(self.mark + 1)) {
            self.mark += 1;
            due.extend(message);
        }
        due
    }
}

fn pass(message: Outgoing) -> Admission {
    Admission {
        send: vec![message],
        ..Admission::default()
    }
}

/// The number a published message carries in `field`, and whether that is all it holds (a
/// filler), if it is a JSON object with one.
fn sequence_number(text: &str, field: &str) -> Option<(u64, bool)> {
    // Only objects can carry the field; anything else passes without being parsed.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let number = value.get(field)?.as_u64()?;
    Some((number, value.len() == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Outgoing {
        Outgoing::Text(t.to_owned())
    }

    fn sent(admission: Admission) -> Vec<String> {
        admission
            .send
            .into_iter()
            .map(|message| match message {
                Outgoing::Text(text) => text,
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn each_number_goes_once_in_order_and_early_ones_wait_for_their_turn() {
        let mut sequence = Sequence::new("position".into(), 2);
        assert!(sent(sequence.published(text(r#"{"position":2,"m":1}"#))).is_empty());
        assert_eq!(
            sent(sequence.published(text(r#"{"position":3,"m":1}"#))),
            [r#"{"position":3,"m":1}"#]
        );
        assert!(sent(sequence.published(text(r#"{"position":3,"m":1}"#))).is_empty());
        // 5 and 6 come before 4: held, then sent behind it.
        let early = sequence.published(text(r#"{"position":5,"m":1}"#));
        assert!(early.gap_opened && early.send.is_empty());
        let later = sequence.published(text(r#"{"position":6,"m":1}"#));
        assert!(!later.gap_opened && later.send.is_empty());
        assert!(sequence.has_gap());
        assert_eq!(
            sent(sequence.published(text(r#"{"position":4,"m":1}"#))),
            [
                r#"{"position":4,"m":1}"#,
                r#"{"position":5,"m":1}"#,
                r#"{"position":6,"m":1}"#
            ]
        );
        assert!(!sequence.has_gap());
        assert_eq!(sequence.mark(), 6);
        // Without the number, or not an object: as it comes, gap or not.
        sequence.published(text(r#"{"position":8,"m":1}"#));
        assert_eq!(
            sent(sequence.published(text(r#"{"type":"Typing"}"#))),
            [r#"{"type":"Typing"}"#]
        );
        assert_eq!(sent(sequence.published(text("plain"))), ["plain"]);
        assert_eq!(
            sent(sequence.published(text(r#"{"position":"7"}"#))),
            [r#"{"position":"7"}"#]
        );
    }

    #[test]
    fn fillers_take_their_place_and_are_not_sent() {
        let mut sequence = Sequence::new("n".into(), 0);
        assert!(sent(sequence.published(text(r#"{"n":2,"m":1}"#))).is_empty());
        assert_eq!(
            sent(sequence.published(text(r#"{"n":1}"#))),
            [r#"{"n":2,"m":1}"#]
        );
        assert!(sent(sequence.published(text(r#"{ "n" : 3 }"#))).is_empty());
        assert_eq!(sequence.mark(), 3);
    }

    #[test]
    fn a_numbered_send_moves_the_mark_and_lets_what_follows_through() {
        let mut sequence = Sequence::new("n".into(), 0);
        sequence.published(text(r#"{"n":3,"m":1}"#));
        sequence.published(text(r#"{"n":5,"m":1}"#));
        assert_eq!(sequence.numbered(2).map(|s| s.len()), Some(1));
        assert_eq!(sequence.mark(), 3);
        assert!(sequence.has_gap());
        assert_eq!(sequence.numbered(3), None);
        assert_eq!(sequence.numbered(6).map(|s| s.len()), Some(0));
        assert!(!sequence.has_gap());
        assert!(sent(sequence.published(text(r#"{"n":5,"m":1}"#))).is_empty());
    }

    #[test]
    fn too_much_behind_a_gap_overflows() {
        let mut sequence = Sequence::new("n".into(), 0);
        let mut overflow = false;
        for n in 2..=(MAX_PENDING as u64 + 2) {
            overflow |= sequence
                .published(text(&format!(r#"{{"n":{n},"m":1}}"#)))
                .overflow;
        }
        assert!(overflow);
    }

    #[test]
    fn sequence_numbers_are_read_from_the_top_level_only() {
        assert_eq!(sequence_number(r#"{"p":12,"x":1}"#, "p"), Some((12, false)));
        assert_eq!(sequence_number(r#"{"p":12}"#, "p"), Some((12, true)));
        assert_eq!(sequence_number(r#"{"m":{"p":12}}"#, "p"), None);
        assert_eq!(sequence_number(r#"[{"p":12}]"#, "p"), None);
        assert_eq!(sequence_number(r#"{"p":-1}"#, "p"), None);
        assert_eq!(sequence_number("{broken", "p"), None);
    }
}
