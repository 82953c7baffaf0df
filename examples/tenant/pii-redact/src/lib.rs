//! A PII-redaction transform: card numbers (13 to 19 digits that pass the Luhn check, spaces or
//! dashes between them allowed), email addresses and phone numbers (7 to 15 digits, with an
//! optional leading `+`, spaces, dashes, dots and parentheses) are replaced before nexus stores
//! the message, shows it to an agent or sends it to a webhook.

use nexus_tenant::{Message, Transform};

pub const CARD: &str = "[card number]";
pub const EMAIL: &str = "[email]";
pub const PHONE: &str = "[phone number]";

struct Redact;

impl Transform for Redact {
    fn apply(message: Message) -> Result<String, String> {
        Ok(redact(&message.text))
    }
}

nexus_tenant::export_transform!(Redact);

/// `text` with its card numbers, email addresses and phone numbers masked.
pub fn redact(text: &str) -> String {
    redact_numbers(&redact_emails(text))
}

fn is_email_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-".contains(c)
}

fn redact_emails(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' {
            // The local part is what `out` ends with; the domain is what follows.
            let local = out.chars().rev().take_while(|c| is_email_char(*c)).count();
            let mut end = i + 1;
            while end < chars.len()
                && (chars[end].is_ascii_alphanumeric() || ".-".contains(chars[end]))
            {
                end += 1;
            }
            while end > i + 1 && chars[end - 1] == '.' {
                end -= 1;
            }
            let domain: String = chars[i + 1..end].iter().collect();
            let dotted = domain.rsplit_once('.').is_some_and(|(host, tld)| {
                !host.is_empty() && tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
            });
            if local > 0 && dotted {
                let keep = out.chars().count() - local;
                out = out.chars().take(keep).collect();
                out.push_str(EMAIL);
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, digit)| {
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                *digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Masks runs of digits (with the separators numbers are written with) that are card numbers
/// or phone numbers.
fn redact_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            || (matches!(chars[i], '+' | '(')
                && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        let glued = i > 0 && (chars[i - 1].is_ascii_alphanumeric());
        if !starts_number || glued {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits and the separators between them.
        let mut end = i;
        let mut last_digit = i;
        while end < chars.len()
            && (chars[end].is_ascii_digit()
                || (end > i || matches!(chars[end], '+' | '(')) && " -.()+".contains(chars[end]))
        {
            if chars[end].is_ascii_digit() {
                last_digit = end;
            }
            end += 1;
        }
        let end = last_digit + 1;
        let run: String = chars[i..end].iter().collect();
        let digits: Vec<u32> = run.chars().filter_map(|c| c.to_digit(10)).collect();
        let separators_ok = !run.contains("  ") && !run.contains("--");
        let card = (13..=19).contains(&digits.len()) && luhn(&digits) && !run.contains(['(', '+']);
        let phone = (7..=15).contains(&digits.len())
            && (run.starts_with('+') || run.contains([' ', '-', '.', '(']) || digits.len() >= 10);
        if separators_ok && card {
            out.push_str(CARD);
        } else if separators_ok && phone {
            out.push_str(PHONE);
        } else {
            out.push_str(&run);
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_card_numbers_that_pass_luhn() {
        assert_eq!(
            redact("card 4111 1111 1111 1111 thanks"),
            "card [card number] thanks"
        );
        assert_eq!(redact("4111-1111-1111-1111"), "[card number]");
        assert_eq!(redact("5500005555555559"), "[card number]");
    }

    #[test]
    fn leaves_numbers_that_are_not_cards_or_phones() {
        assert_eq!(redact("order 12345 of 2026"), "order 12345 of 2026");
        assert_eq!(redact("version 1.2.3"), "version 1.2.3");
        assert_eq!(redact("ABC123456789"), "ABC123456789");
    }

    #[test]
    fn masks_email_addresses() {
        assert_eq!(
            redact("write to ann.lee+cc@example.co.uk."),
            "write to [email]."
        );
        assert_eq!(redact("a @ b and me@x"), "a @ b and me@x");
    }

    #[test]
    fn masks_phone_numbers() {
        assert_eq!(
            redact("call +44 20 7946 0958 now"),
            "call [phone number] now"
        );
        assert_eq!(redact("(555) 123-4567"), "[phone number]");
        assert_eq!(redact("555-1234"), "[phone number]");
        assert_eq!(redact("0612345678"), "[phone number]");
    }

    #[test]
    fn masks_everything_in_one_message() {
        assert_eq!(
            redact("I'm bob@mail.com, 4111111111111111, +1 415 555 2671"),
            "I'm [email], [card number], [phone number]"
        );
    }
}
