//! The FAQ bot as nexus runs it: built for wasm32-wasip2, each turn a fresh instance, its
//! key-value store and log faked and recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use nexus_testing::tenant::{Action, Handoff, Turn, UserDataChange};
use nexus_testing::{Fakes, KvCall, TenantBot};

fn bot() -> TenantBot {
    static BOT: OnceLock<TenantBot> = OnceLock::new();
    BOT.get_or_init(|| TenantBot::build(env!("CARGO_MANIFEST_DIR")).unwrap())
        .clone()
}

fn actions(fakes: &Fakes, turn: Turn) -> Vec<Action> {
    bot().handle(fakes, turn).unwrap().unwrap()
}

#[test]
fn greets_by_name_with_the_menu() {
    let fakes = Fakes::default();
    let actions = actions(&fakes, Turn::started().from_customer("Grace"));
    let [Action::Ask(question)] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    assert!(
        question.text.starts_with("Hello Grace!"),
        "{}",
        question.text
    );
    assert_eq!(question.options.len(), 4);
    assert!(fakes.key_value.calls().is_empty());
}

#[test]
fn answers_a_known_question_and_remembers_the_topic() {
    let fakes = Fakes::default();
    let actions = actions(&fakes, Turn::message("When do you open on Monday?"));
    assert_eq!(
        actions,
        [
            Action::Reply("We are open Monday to Friday, 8:00 to 18:00.".into()),
            Action::SetUserData(vec![UserDataChange {
                key: "faqTopic".into(),
                value: Some("hours".into()),
            }]),
        ]
    );
    // An answer clears the count of misunderstandings.
    assert_eq!(
        fakes.key_value.calls(),
        [KvCall::Delete("faq-bot:misses:conversation-1".into())]
    );
}

#[test]
fn a_person_on_request() {
    let fakes = Fakes::default();
    let actions = actions(&fakes, Turn::message("can I talk to a human please"));
    assert_eq!(
        actions.last(),
        Some(&Action::Handoff(Handoff {
            queue: None,
            reason: Some("the customer asked for a person".into()),
        }))
    );
}

#[test]
fn hands_off_after_two_misunderstandings_in_a_row() {
    let fakes = Fakes::default();
    let turn = || Turn::message("what is the meaning of life").in_conversation("c-42");

    let first = actions(&fakes, turn());
    assert!(matches!(first.as_slice(), [Action::Ask(_)]), "{first:?}");
    assert_eq!(
        fakes.key_value.text("faq-bot:misses:c-42").as_deref(),
        Some("1")
    );
    assert_eq!(fakes.key_value.ttl("faq-bot:misses:c-42"), Some(3600));

    let second = actions(&fakes, turn());
    assert!(
        matches!(second.last(), Some(Action::Handoff(Handoff { reason: Some(reason), .. }))
            if reason.contains("meaning of life")),
        "{second:?}"
    );
    assert_eq!(fakes.key_value.value("faq-bot:misses:c-42"), None);
    assert!(
        fakes
            .log
            .messages()
            .iter()
            .any(|message| message.contains("not understood (2 in a row)")),
        "{:?}",
        fakes.log.entries()
    );
}

#[test]
fn declines_the_turn_when_its_store_is_down() {
    let fakes = Fakes::default();
    fakes.key_value.set_unavailable(true);
    // Declining sends the conversation to routing, with the reason for the agent.
    let answer = bot()
        .handle(&fakes, Turn::message("something it does not know"))
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");
}
