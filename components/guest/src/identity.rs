//! How a contact's identities are matched: the same email address or phone number, however it
//! was typed, is the same identity. The chat (which records them) and the history API (which
//! finds contacts by them) both go through here.

use crate::api::{ApiError, ApiResult};

/// An email address as it is matched: trimmed and lower-cased.
pub fn normalise_email(email: &str) -> ApiResult<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 320
        && !email.contains(char::is_whitespace)
        // No control characters: PostgreSQL's text takes no NUL, and no address has one.
        && !email.contains(char::is_control)
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if valid {
        Ok(email)
    } else {
        Err(ApiError::bad_parameter("`email` is not an email address"))
    }
}

/// A phone number as it is matched: a leading `+` and its digits, without spaces, dashes or
/// parentheses.
pub fn normalise_phone(phone: &str) -> ApiResult<String> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let plus = if phone.trim_start().starts_with('+') {
        "+"
    } else {
        ""
    };
    let allowed = phone
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if allowed && (5..=20).contains(&digits.len()) {
        Ok(format!("{plus}{digits}"))
    } else {
        Err(ApiError::bad_parameter(
            "`phoneNumber` is not a phone number",
        ))
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn emails_match_whatever_their_case_and_spaces() {
        assert_eq!(
            normalise_email(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "a\0@example.com",
            "a\u{7f}@example.com",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phone_numbers_match_whatever_their_punctuation() {
        assert_eq!(
            normalise_phone("+44 (20) 7946-0000").unwrap(),
            "+442079460000"
        );
        assert_eq!(normalise_phone("020 7946 0000").unwrap(), "02079460000");
        for bad in ["", "1234", "+44 20 7946 000x", "call me"] {
            assert!(normalise_phone(bad).is_err(), "{bad}");
        }
    }
}
