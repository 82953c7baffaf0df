//! An FAQ/menu bot: it greets the customer with a menu, answers the questions it knows, hands
//! the conversation to a person when asked (or when it has not understood twice in a row), and
//! remembers what it could not answer in the tenant's key-value store.

use nexus_tenant::{Action, Bot, Handoff, Question, Turn, TurnEvent, UserDataChange, kv, log};

/// The questions it knows: words that ask them, and the answer.
const ANSWERS: &[(&[&str], &str, &str)] = &[
    (
        &["hour", "open", "close"],
        "hours",
        "We are open Monday to Friday, 8:00 to 18:00.",
    ),
    (
        &["deliver", "shipping", "ship"],
        "delivery",
        "Orders ship within two working days; delivery takes three to five more.",
    ),
    (
        &["return", "refund"],
        "returns",
        "You can return anything within 30 days for a full refund.",
    ),
];

/// Words that ask for a person.
const PERSON: &[&str] = &["agent", "human", "person", "someone"];

/// Misunderstandings in a row before a person takes over.
const MAX_MISSES: u32 = 2;

struct FaqBot;

impl Bot for FaqBot {
    fn handle(turn: Turn) -> Result<Vec<Action>, String> {
        if matches!(turn.event, TurnEvent::Started) && turn.messages.is_empty() {
            return Ok(vec![menu(&turn)]);
        }
        let text = turn.text().to_lowercase();
        if PERSON.iter().any(|word| text.contains(word)) {
            return Ok(vec![
                Action::Reply("Of course: I am passing you to a colleague.".into()),
                Action::Handoff(Handoff {
                    queue: None,
                    reason: Some("the customer asked for a person".into()),
                }),
            ]);
        }
        let misses_key = format!("faq-bot:misses:{}", turn.conversation.id);
        if let Some((_, topic, answer)) = ANSWERS
            .iter()
            .find(|(words, _, _)| words.iter().any(|word| text.contains(word)))
        {
            let _ = kv::delete(&misses_key);
            return Ok(vec![
                Action::Reply((*answer).into()),
                Action::SetUserData(vec![UserDataChange {
                    key: "faqTopic".into(),
                    value: Some((*topic).into()),
                }]),
            ]);
        }
        let misses = kv::get_text(&misses_key)
            .map_err(|err| err.to_string())?
            .and_then(|text| text.parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        log::info(&format!("not understood ({misses} in a row): {text}"));
        if misses >= MAX_MISSES {
            let _ = kv::delete(&misses_key);
            return Ok(vec![
                Action::Reply("Let me find someone who can help.".into()),
                Action::Handoff(Handoff {
                    queue: None,
                    reason: Some(format!("the bot did not understand: {text}")),
                }),
            ]);
        }
        kv::set(&misses_key, misses.to_string(), Some(3600)).map_err(|err| err.to_string())?;
        Ok(vec![menu(&turn)])
    }
}

fn menu(turn: &Turn) -> Action {
    let name = &turn.conversation.customer_nickname;
    let greeting = if name.is_empty() {
        "Hello!".to_owned()
    } else {
        format!("Hello {name}!")
    };
    Action::Ask(Question {
        text: format!("{greeting} I can tell you about our opening hours, delivery or returns."),
        options: vec![
            "Opening hours".into(),
            "Delivery".into(),
            "Returns".into(),
            "Talk to a person".into(),
        ],
    })
}

nexus_tenant::export_bot!(FaqBot);
