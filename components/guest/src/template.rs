//! Message templates of outbound campaigns: text with placeholders `{{first_name}}`, each
//! optionally with a default, `{{first_name|there}}`, filled from a record's variables (the
//! columns of its contact list). Strict: a placeholder whose variable the record lacks (or has
//! empty) and that has no default fails that record alone, with a reason naming it; a template
//! that does not parse is refused when it is saved. `{{{{` writes `{{` (and `}}}}` writes `}}`)
//! where a message needs the braces themselves.
//!
//! Also what an SMS costs: its encoding (GSM-7 when every character is in the GSM 03.38 default
//! alphabet or its extension table, UCS-2 otherwise) and how many segments it is sent in.

/// The longest template, in characters.
pub const MAX_TEMPLATE_CHARS: usize = 10_000;
/// The longest variable name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Variable {
        name: String,
        default: Option<String>,
    },
}

impl Template {
    /// Parses `text`; the error says what is wrong and where (the character's position, from 1).
    pub fn parse(text: &str) -> Result<Template, String> {
        if text.chars().count() > MAX_TEMPLATE_CHARS {
            return Err(format!(
                "a template is at most {MAX_TEMPLATE_CHARS} characters"
            ));
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let chars: Vec<char> = text.chars().collect();
        let mut at = 0;
        while at < chars.len() {
            let rest = &chars[at..];
            if rest.starts_with(&['{', '{', '{', '{']) {
                literal.push_str("{{");
                at += 4;
            } else if rest.starts_with(&['}', '}', '}', '}']) {
                literal.push_str("}}");
                at += 4;
            } else if rest.starts_with(&['{', '{']) {
                let Some(length) = rest[2..].windows(2).position(|w| w == ['}', '}']) else {
                    return Err(format!(
                        "the placeholder at character {} has no closing }}}}",
                        at + 1
                    ));
                };
                let inside: String = rest[2..2 + length].iter().collect();
                let (name, default) = match inside.split_once('|') {
                    Some((name, default)) => (name.trim(), Some(default.trim().to_owned())),
                    None => (inside.trim(), None),
                };
                check_name(name).map_err(|why| format!("character {}: {why}", at + 1))?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Variable {
                    name: name.to_owned(),
                    default,
                });
                at += 2 + length + 2;
            } else if rest.starts_with(&['}', '}']) {
                return Err(format!(
                    "character {}: }}}} closes no placeholder (write }}}}}}}} for the braces themselves)",
                    at + 1
                ));
            } else {
                literal.push(chars[at]);
                at += 1;
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The variables the template names, in the order they first appear, and whether each has a
    /// default.
    pub fn variables(&self) -> Vec<(String, bool)> {
        let mut seen: Vec<(String, bool)> = Vec::new();
        for part in &self.parts {
            if let Part::Variable { name, default } = part {
                match seen.iter_mut().find(|(known, _)| known == name) {
                    // Required if any of its placeholders lacks a default.
                    Some(entry) => entry.1 = entry.1 && default.is_some(),
                    None => seen.push((name.clone(), default.is_some())),
                }
            }
        }
        seen
    }

    /// The text for a record whose variables `lookup` gives; an empty value counts as missing.
    /// The error names the first variable the record lacks that has no default.
    pub fn render<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Variable { name, default } => {
                    match (lookup(name).filter(|v| !v.trim().is_empty()), default) {
                        (Some(value), _) => out.push_str(value),
                        (None, Some(default)) => out.push_str(default),
                        (None, None) => {
                            return Err(format!(
                                "the record has no `{name}`, and the template gives it no default"
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well
        || name.chars().count() > MAX_NAME_CHARS
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(format!(
            "`{name}` is not a variable name (a letter or _, then letters, digits, _, - or ., at most {MAX_NAME_CHARS})"
        ));
    }
    Ok(())
}

/// How an SMS is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The GSM 03.38 default alphabet (7 bits a character; the extension table's take two).
    Gsm7,
    /// UTF-16 (16 bits a code unit).
    Ucs2,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }
}

/// The GSM 03.38 default alphabet.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Its extension table: each takes an escape and itself (two septets).
const GSM7_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// An SMS's encoding, its length in the units that count (septets for GSM-7, UTF-16 code units
/// for UCS-2), and the segments it is sent in: one of 160 septets (70 units), or, longer,
/// several of 153 (67), a character of the extension table never split across two.
pub fn sms_segments(text: &str) -> (Encoding, usize, usize) {
    let gsm = text
        .chars()
        .all(|c| GSM7_BASIC.contains(c) || GSM7_EXTENDED.contains(c));
    if gsm {
        let widths: Vec<usize> = text
            .chars()
            .map(|c| if GSM7_EXTENDED.contains(c) { 2 } else { 1 })
            .collect();
        let length = widths.iter().sum();
        (Encoding::Gsm7, length, segments(&widths, 160, 153))
    } else {
        let widths: Vec<usize> = text.chars().map(char::len_utf16).collect();
        let length = widths.iter().sum();
        (Encoding::Ucs2, length, segments(&widths, 70, 67))
    }
}

/// How many segments units of `widths` fill: one of `single` if they fit, else parts of `part`,
/// none of the units split between two.
fn segments(widths: &[usize], single: usize, part: usize) -> usize {
    let total: usize = widths.iter().sum();
    if total == 0 {
        return 1;
    }
    if total <= single {
        return 1;
    }
    let mut count = 1;
    let mut used = 0;
    for &width in widths {
        if used + width > part {
            count += 1;
            used = 0;
        }
        used += width;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn placeholders_are_filled_from_the_record() {
        let template =
            Template::parse("Hi {{first_name}}, your order {{ order.id }} is ready.").unwrap();
        assert_eq!(
            template.render(vars(&[("first_name", "Ann"), ("order.id", "A-42")])),
            Ok("Hi Ann, your order A-42 is ready.".to_owned())
        );
        assert_eq!(
            template.variables(),
            [
                ("first_name".to_owned(), false),
                ("order.id".to_owned(), false)
            ]
        );
    }

    #[test]
    fn a_default_stands_in_for_a_missing_or_empty_variable() {
        let template = Template::parse("Hi {{first_name|there}}!").unwrap();
        assert_eq!(template.render(vars(&[])), Ok("Hi there!".to_owned()));
        assert_eq!(
            template.render(vars(&[("first_name", "  ")])),
            Ok("Hi there!".to_owned())
        );
        assert_eq!(
            Template::parse("{{a|}}x").unwrap().render(vars(&[])),
            Ok("x".to_owned())
        );
        assert_eq!(template.variables(), [("first_name".to_owned(), true)]);
    }

    #[test]
    fn a_record_without_a_required_variable_fails_with_the_name() {
        let template = Template::parse("{{greeting|Hello}} {{first_name}}").unwrap();
        let error = template.render(vars(&[("greeting", "Hey")])).unwrap_err();
        assert!(error.contains("`first_name`"), "{error}");
        // Required where any of its placeholders has no default.
        let twice = Template::parse("{{a|x}} {{a}}").unwrap();
        assert_eq!(twice.variables(), [("a".to_owned(), false)]);
    }

    #[test]
    fn doubled_braces_are_braces() {
        let template = Template::parse("{{{{literal}}}} and {{x}}").unwrap();
        assert_eq!(
            template.render(vars(&[("x", "y")])),
            Ok("{{literal}} and y".to_owned())
        );
    }

    #[test]
    fn a_malformed_template_is_refused_with_where() {
        for (text, says) in [
            ("Hi {{first_name", "character 4"),
            ("Hi {{}}", "not a variable name"),
            ("Hi {{1st}}", "not a variable name"),
            ("Hi {{first name}}", "not a variable name"),
            ("Hi }} there", "closes no placeholder"),
        ] {
            let error = Template::parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
        assert!(Template::parse(&"x".repeat(MAX_TEMPLATE_CHARS + 1)).is_err());
    }

    #[test]
    fn sms_segments_follow_the_encoding() {
        assert_eq!(sms_segments(""), (Encoding::Gsm7, 0, 1));
        assert_eq!(sms_segments(&"a".repeat(160)), (Encoding::Gsm7, 160, 1));
        assert_eq!(sms_segments(&"a".repeat(161)), (Encoding::Gsm7, 161, 2));
        assert_eq!(sms_segments(&"a".repeat(306)), (Encoding::Gsm7, 306, 2));
        assert_eq!(sms_segments(&"a".repeat(307)), (Encoding::Gsm7, 307, 3));
        // The euro sign takes two septets, and is not split across two segments.
        assert_eq!(sms_segments("€"), (Encoding::Gsm7, 2, 1));
        let split = format!("{}€", "a".repeat(152));
        assert_eq!(sms_segments(&format!("{split}{}", "a".repeat(10))).2, 2);
        assert_eq!(
            sms_segments(&format!("{}€{}", "a".repeat(152), "a".repeat(153))).2,
            3
        );
        // One character outside the alphabet makes it all UCS-2.
        assert_eq!(sms_segments("Grüße"), (Encoding::Gsm7, 5, 1));
        assert_eq!(sms_segments("Zażółć"), (Encoding::Ucs2, 6, 1));
        assert_eq!(sms_segments(&"ł".repeat(70)), (Encoding::Ucs2, 70, 1));
        assert_eq!(sms_segments(&"ł".repeat(71)), (Encoding::Ucs2, 71, 2));
        // An emoji is two UTF-16 units, never split.
        assert_eq!(sms_segments("👋"), (Encoding::Ucs2, 2, 1));
        assert_eq!(
            sms_segments(&format!("{}👋{}", "ł".repeat(66), "ł".repeat(66))).2,
            3
        );
    }
}
