//! Consent by text message: the keywords a texter sends to opt out of messages, to opt back in
//! and to ask for help (the CTIA's and the aggregators' set), and what nexus answers when the
//! channel does not say. A keyword is the whole message, in any case, with the spaces and the
//! full stop or exclamation mark a phone keyboard adds around it; `stop sending me this` is an
//! ordinary message.

/// What a keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT: no more messages.
    OptOut,
    /// START, UNSTOP: messages again.
    OptIn,
    /// HELP, INFO: who this is and how to opt out.
    Help,
}

/// The opt-out keywords.
pub const OPT_OUT: [&str; 6] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
/// The opt-in keywords.
pub const OPT_IN: [&str; 2] = ["START", "UNSTOP"];
/// The help keywords.
pub const HELP: [&str; 2] = ["HELP", "INFO"];

/// The answer to an opt-out when the channel sets no `optOutReply`.
pub const DEFAULT_OPT_OUT_REPLY: &str =
    "You are unsubscribed and will get no more messages from us. Reply START to subscribe again.";
/// The answer to an opt-in when the channel sets no `optInReply`.
pub const DEFAULT_OPT_IN_REPLY: &str =
    "You are subscribed again. Reply STOP to unsubscribe, HELP for help.";
/// The answer to HELP when the channel sets no `helpReply`.
pub const DEFAULT_HELP_REPLY: &str = "Reply STOP to unsubscribe, START to subscribe again.";

/// An address as suppressions hold it: an email address (trimmed, lower case) when it has an
/// `@`, otherwise a phone number in E.164 form (`+` and 8 to 15 digits; spaces, dashes, dots and
/// parentheses dropped). The error says why not, for the API and for an import's line.
pub fn address(text: &str) -> Result<String, String> {
    if text.contains('@') {
        return crate::identity::normalise_email(text)
            .map_err(|_| format!("`{}` is not an email address", text.trim()));
    }
    let not_e164 = || {
        format!(
            "`{}` is not a phone number in E.164 form (+ and 8 to 15 digits, country code first)",
            text.trim()
        )
    };
    let phone = crate::identity::normalise_phone(text).map_err(|_| not_e164())?;
    let digits = phone.strip_prefix('+').ok_or_else(not_e164)?;
    if (8..=15).contains(&digits.len()) {
        Ok(phone)
    } else {
        Err(not_e164())
    }
}

/// The keyword `text` is, if it is one: the word alone, in any case, with surrounding spaces
/// and a final `.` or `!`, written in ASCII or in the fullwidth forms a phone's East Asian
/// keyboard writes (`ＳＴＯＰ`).
pub fn keyword(text: &str) -> Option<(Keyword, String)> {
    let ascii: String = text.chars().map(halfwidth).collect();
    let word = ascii
        .trim()
        .trim_end_matches(['.', '!'])
        .trim()
        .to_ascii_uppercase();
    let kind = if OPT_OUT.contains(&word.as_str()) {
        Keyword::OptOut
    } else if OPT_IN.contains(&word.as_str()) {
        Keyword::OptIn
    } else if HELP.contains(&word.as_str()) {
        Keyword::Help
    } else {
        return None;
    };
    Some((kind, word))
}

/// The ASCII character a fullwidth form (U+FF01 to U+FF5E) stands for; any other as it is.
fn halfwidth(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyword_is_the_whole_message_in_any_case() {
        for (text, kind, word) in [
            ("STOP", Keyword::OptOut, "STOP"),
            ("  stop \n", Keyword::OptOut, "STOP"),
            ("Stop.", Keyword::OptOut, "STOP"),
            ("StopAll", Keyword::OptOut, "STOPALL"),
            ("unsubscribe!", Keyword::OptOut, "UNSUBSCRIBE"),
            ("cancel", Keyword::OptOut, "CANCEL"),
            ("End", Keyword::OptOut, "END"),
            ("QUIT", Keyword::OptOut, "QUIT"),
            ("start", Keyword::OptIn, "START"),
            ("Unstop", Keyword::OptIn, "UNSTOP"),
            ("help", Keyword::Help, "HELP"),
            ("Info", Keyword::Help, "INFO"),
            ("ＳＴＯＰ", Keyword::OptOut, "STOP"),
            ("\u{3000}ｓｔｏｐ！", Keyword::OptOut, "STOP"),
            ("ＳＴＡＲＴ", Keyword::OptIn, "START"),
        ] {
            assert_eq!(keyword(text), Some((kind, word.to_owned())), "{text:?}");
        }
    }

    #[test]
    fn addresses_are_e164_numbers_or_email_addresses() {
        assert_eq!(address("+1 (555) 010-0100").as_deref(), Ok("+15550100100"));
        assert_eq!(
            address(" +44 20 7946 0958 ").as_deref(),
            Ok("+442079460958")
        );
        assert_eq!(
            address(" Ann@Example.COM ").as_deref(),
            Ok("ann@example.com")
        );
        for wrong in [
            "5550100100",
            "+1234567",
            "+1234567890123456",
            "+1 555 CALL",
            "",
            "a@b",
        ] {
            assert!(address(wrong).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn other_messages_are_not_keywords() {
        for text in [
            "",
            "stop sending me this",
            "please stop",
            "STOP STOP",
            "S T O P",
            "stopp",
            "helpful",
            "¿help?",
        ] {
            assert_eq!(keyword(text), None, "{text:?}");
        }
    }
}
