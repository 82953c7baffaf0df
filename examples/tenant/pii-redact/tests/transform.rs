//! The redaction transform as nexus runs it: built for wasm32-wasip2, one fresh instance per
//! message, and no import used (nothing leaves the sandbox).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use nexus_testing::tenant::Message;
use nexus_testing::{Fakes, TenantTransform};

fn transform() -> TenantTransform {
    static TRANSFORM: OnceLock<TenantTransform> = OnceLock::new();
    TRANSFORM
        .get_or_init(|| TenantTransform::build(env!("CARGO_MANIFEST_DIR")).unwrap())
        .clone()
}

#[test]
fn masks_cards_emails_and_phones_both_ways() {
    let fakes = Fakes::default();
    for message in [
        Message::inbound("card 4111 1111 1111 1111, mail ada@example.com, call +44 20 7946 0958"),
        Message::outbound("card 4111 1111 1111 1111, mail ada@example.com, call +44 20 7946 0958"),
    ] {
        assert_eq!(
            transform().apply(&fakes, message).unwrap(),
            Ok("card [card number], mail [email], call [phone number]".into())
        );
    }
    assert!(fakes.http.calls().is_empty());
    assert!(fakes.key_value.calls().is_empty());
}

#[test]
fn leaves_order_numbers_and_plain_text_alone() {
    let fakes = Fakes::default();
    // 16 digits that fail the Luhn check are not a card.
    let text = "order 1234 5678 9012 3456 arrives on 21.11";
    assert_eq!(
        transform().apply(&fakes, Message::inbound(text)).unwrap(),
        Ok(text.into())
    );
}
