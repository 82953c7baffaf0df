//! The contacts of an outbound campaign's list, as a CSV upload gives them: one line per
//! contact, with a client id (the tenant's own key for the person), a phone number and/or an
//! email address, an optional IANA time zone, and any other columns, which become the
//! contact's template variables (`{{first_name}}`).
//!
//! Phone numbers are normalised to E.164. One written without a country code (`(415) 555-0100`,
//! `07911 123456`) takes the list's default calling code: North American numbers are ten digits
//! (or eleven with the leading 1); elsewhere the national trunk prefix `0` is dropped (but for
//! Italy and San Marino, where it is part of the number), and a number that already begins with
//! the calling code (`447911123456`, as spreadsheets keep them) is taken as international.
//!
//! A contact's time zone is its `timeZone` column; failing that, the zone its number's calling
//! code or area code lies in (`phone_zones`); failing that, none, and a campaign sends to it in
//! the campaign's default zone.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::{Map, Value};

/// The longest client id, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 200;
/// The longest variable value, in characters.
pub const MAX_VARIABLE_CHARS: usize = 1_000;
/// The most variable columns a list has.
pub const MAX_VARIABLES: usize = 100;

/// Where a contact's time zone came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    /// The list's `timeZone` column.
    Column,
    /// The phone number's calling code or area code.
    Number,
}

impl ZoneSource {
    pub fn name(self) -> &'static str {
        match self {
            ZoneSource::Column => "column",
            ZoneSource::Number => "number",
        }
    }
}

/// One contact, checked and normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub client_id: String,
    /// E.164.
    pub phone: Option<String>,
    /// Trimmed, lower case.
    pub email: Option<String>,
    /// An IANA zone name, and where it came from; `None` takes the campaign's default.
    pub time_zone: Option<(String, ZoneSource)>,
    /// The other columns that have a value.
    pub variables: Map<String, Value>,
}

/// What a header line's columns hold, by position.
#[derive(Debug, Clone)]
pub struct Columns {
    client_id: usize,
    phone: Option<usize>,
    email: Option<usize>,
    time_zone: Option<usize>,
    variables: Vec<(usize, String)>,
    count: usize,
}

/// The column a header name stands for, when it is one of the four the list itself reads:
/// compared without case, spaces, `_` or `-`, so that `Client ID`, `client_id` and `clientId`
/// are the same column.
fn reserved(name: &str) -> Option<&'static str> {
    let folded: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    match folded.as_str() {
        "clientid" => Some("clientId"),
        "phone" | "phonenumber" | "mobile" => Some("phone"),
        "email" | "emailaddress" => Some("email"),
        "timezone" | "tz" => Some("timeZone"),
        _ => None,
    }
}

impl Columns {
    /// The columns of a header line: `clientId` and `phone` or `email` required, `timeZone`
    /// optional, every other one a variable named as a template names it.
    pub fn of(header: &csv::ByteRecord) -> Result<Columns, String> {
        let mut at: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut variables: Vec<(usize, String)> = Vec::new();
        for (index, name) in header.iter().enumerate() {
            let name = std::str::from_utf8(name)
                .map_err(|_| format!("column {}: its name is not UTF-8", index + 1))?
                .trim();
            if let Some(column) = reserved(name) {
                if at.insert(column, index).is_some() {
                    return Err(format!("the column `{column}` comes twice"));
                }
                continue;
            }
            if name.is_empty() {
                return Err(format!("column {} has no name", index + 1));
            }
            crate::template::check_name(name).map_err(|why| format!("the column {why}"))?;
            if variables.iter().any(|(_, known)| known == name) {
                return Err(format!("the column `{name}` comes twice"));
            }
            variables.push((index, name.to_owned()));
        }
        if variables.len() > MAX_VARIABLES {
            return Err(format!(
                "{} variable columns; a list has at most {MAX_VARIABLES}",
                variables.len()
            ));
        }
        let client_id = *at
            .get("clientId")
            .ok_or("the header line has no `clientId` column")?;
        let (phone, email) = (at.get("phone").copied(), at.get("email").copied());
        if phone.is_none() && email.is_none() {
            return Err("the header line has neither a `phone` nor an `email` column".to_owned());
        }
        Ok(Columns {
            client_id,
            phone,
            email,
            time_zone: at.get("timeZone").copied(),
            variables,
            count: header.len(),
        })
    }

    /// The names of the variable columns.
    pub fn variable_names(&self) -> Vec<String> {
        self.variables
            .iter()
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// One line as a contact, or why it cannot be one. `calling_code` is the list's default,
    /// for numbers written without one.
    pub fn contact(
        &self,
        record: &csv::ByteRecord,
        calling_code: Option<&str>,
    ) -> Result<Contact, String> {
        if record.len() != self.count {
            return Err(format!(
                "{} fields where the header has {}",
                record.len(),
                self.count
            ));
        }
        let field = |index: usize, column: &str| -> Result<Option<&str>, String> {
            let bytes = record.get(index).unwrap_or_default();
            let value =
                std::str::from_utf8(bytes).map_err(|_| format!("`{column}` is not UTF-8"))?;
            if value.contains('\0') {
                return Err(format!("`{column}` holds a NUL character"));
            }
            let value = value.trim();
            Ok((!value.is_empty()).then_some(value))
        };
        let client_id = field(self.client_id, "clientId")?.ok_or("no clientId")?;
        if client_id.chars().count() > MAX_CLIENT_ID_CHARS {
            return Err(format!(
                "the clientId is longer than {MAX_CLIENT_ID_CHARS} characters"
            ));
        }
        let phone = match self.phone {
            Some(index) => field(index, "phone")?
                .map(|text| phone(text, calling_code))
                .transpose()?,
            None => None,
        };
        let email = match self.email {
            Some(index) => field(index, "email")?
                .map(|text| {
                    crate::identity::normalise_email(text)
                        .map_err(|_| format!("`{text}` is not an email address"))
                })
                .transpose()?,
            None => None,
        };
        if phone.is_none() && email.is_none() {
            return Err("neither a phone number nor an email address".to_owned());
        }
        let named_zone = match self.time_zone {
            Some(index) => field(index, "timeZone")?.map(time_zone).transpose()?,
            None => None,
        };
        let time_zone = match named_zone {
            Some(zone) => Some((zone, ZoneSource::Column)),
            None => phone
                .as_deref()
                .and_then(zone_of_number)
                .map(|zone| (zone.to_owned(), ZoneSource::Number)),
        };
        let mut variables = Map::new();
        for (index, name) in &self.variables {
            if let Some(value) = field(*index, name)? {
                if value.chars().count() > MAX_VARIABLE_CHARS {
                    return Err(format!(
                        "`{name}` is longer than {MAX_VARIABLE_CHARS} characters"
                    ));
                }
                variables.insert(name.clone(), Value::String(value.to_owned()));
            }
        }
        Ok(Contact {
            client_id: client_id.to_owned(),
            phone,
            email,
            time_zone,
            variables,
        })
    }
}

/// `text` as a calling code: one to three digits, not starting with 0 (`1`, `44`, `358`).
pub fn calling_code(text: &str) -> Result<String, String> {
    let code = text.trim().trim_start_matches('+');
    if (1..=3).contains(&code.len())
        && code.chars().all(|c| c.is_ascii_digit())
        && !code.starts_with('0')
    {
        Ok(code.to_owned())
    } else {
        Err(format!(
            "`{}` is not a calling code (one to three digits, such as 1 or 44)",
            text.trim()
        ))
    }
}

/// Countries whose numbers keep their leading 0 after the calling code.
const KEEPS_TRUNK_ZERO: [&str; 2] = ["39", "378"];

/// A phone number in E.164 form; one without a country code takes `calling_code` (see the
/// module's description). The error says why not.
pub fn phone(text: &str, calling_code: Option<&str>) -> Result<String, String> {
    let written = text.trim();
    let allowed = written
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().\t".contains(c));
    let digits: String = written.chars().filter(char::is_ascii_digit).collect();
    if !allowed || digits.is_empty() {
        return Err(format!("`{written}` is not a phone number"));
    }
    let international = if written.starts_with('+') {
        Some(digits.as_str())
    } else {
        digits.strip_prefix("00")
    };
    let e164 = match (international, calling_code) {
        (Some(international), _) => format!("+{international}"),
        (None, None) => {
            return Err(format!(
                "`{written}` has no country code (+...), and the list sets no defaultCallingCode"
            ));
        }
        (None, Some("1")) => match digits.len() {
            10 => format!("+1{digits}"),
            11 if digits.starts_with('1') => format!("+{digits}"),
            _ => {
                return Err(format!(
                    "`{written}` is not a North American number (ten digits, or eleven with the leading 1)"
                ));
            }
        },
        (None, Some(code)) => {
            if KEEPS_TRUNK_ZERO.contains(&code) {
                format!("+{code}{digits}")
            } else if let Some(national) = digits.strip_prefix('0') {
                format!("+{code}{national}")
            } else if digits.starts_with(code) && digits.len() >= code.len() + 8 {
                format!("+{digits}")
            } else {
                format!("+{code}{digits}")
            }
        }
    };
    let significant = e164.len() - 1;
    if (8..=15).contains(&significant) {
        Ok(e164)
    } else {
        Err(format!(
            "`{written}` is not a phone number: {e164} has {significant} digits, where E.164 has 8 to 15"
        ))
    }
}

/// `name` as an IANA time zone (`Europe/Paris`, `America/New_York`, `UTC`), or why not.
pub fn time_zone(name: &str) -> Result<String, String> {
    let name = name.trim();
    chrono_tz::Tz::from_str(name)
        .map(|zone| zone.name().to_owned())
        .map_err(|_| format!("`{name}` is not an IANA time zone (such as Europe/Paris)"))
}

/// The time zone an E.164 number is in, when its first digits settle it.
pub fn zone_of_number(e164: &str) -> Option<&'static str> {
    let digits = e164.strip_prefix('+')?;
    let table = crate::phone_zones::PREFIXES;
    for length in (1..=digits.len().min(4)).rev() {
        let prefix = &digits[..length];
        if let Ok(at) = table.binary_search_by(|(known, _)| (*known).cmp(prefix)) {
            let zone = table[at].1;
            return (!zone.is_empty()).then_some(zone);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[&str]) -> csv::ByteRecord {
        csv::ByteRecord::from(fields.to_vec())
    }

    #[test]
    fn numbers_become_e164() {
        for (written, code, e164) in [
            ("+1 (415) 555-0100", None, "+14155550100"),
            ("0044 20 7946 0958", None, "+442079460958"),
            ("(415) 555-0100", Some("1"), "+14155550100"),
            ("1-415-555-0100", Some("1"), "+14155550100"),
            ("07911 123456", Some("44"), "+447911123456"),
            ("7911 123456", Some("44"), "+447911123456"),
            ("447911123456", Some("44"), "+447911123456"),
            ("06 1234 5678", Some("39"), "+390612345678"),
            ("+33 6 12 34 56 78", Some("44"), "+33612345678"),
        ] {
            assert_eq!(phone(written, code).as_deref(), Ok(e164), "{written}");
        }
        for (written, code) in [
            ("415 555 0100", None),
            ("555 0100", Some("1")),
            ("2415 555 0100", Some("1")),
            ("+1 415 CALL", Some("1")),
            ("", Some("1")),
            ("+123", None),
            ("+1234567890123456", None),
        ] {
            assert!(phone(written, code).is_err(), "{written}");
        }
    }

    #[test]
    fn calling_codes_are_one_to_three_digits() {
        assert_eq!(calling_code("+44").as_deref(), Ok("44"));
        assert_eq!(calling_code(" 1 ").as_deref(), Ok("1"));
        for wrong in ["", "0", "044", "1234", "US"] {
            assert!(calling_code(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn a_number_tells_its_zone_where_its_prefix_settles_it() {
        assert_eq!(zone_of_number("+14155550100"), Some("America/Los_Angeles"));
        assert_eq!(zone_of_number("+12125550100"), Some("America/New_York"));
        assert_eq!(zone_of_number("+447911123456"), Some("Europe/London"));
        assert_eq!(zone_of_number("+33612345678"), Some("Europe/Paris"));
        // Idaho's 208 spans Mountain and Pacific time; Alaska's 907 two zones.
        assert_eq!(zone_of_number("+12085550100"), None);
        assert_eq!(zone_of_number("+19075550100"), None);
        assert_eq!(zone_of_number("not a number"), None);
    }

    #[test]
    fn every_zone_of_the_table_is_an_iana_zone() {
        let table = crate::phone_zones::PREFIXES;
        assert!(table.windows(2).all(|pair| pair[0].0 < pair[1].0));
        for (prefix, zone) in table {
            if !zone.is_empty() {
                assert!(time_zone(zone).is_ok(), "{prefix}: {zone}");
            }
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(time_zone(" Europe/Paris ").as_deref(), Ok("Europe/Paris"));
        assert_eq!(time_zone("UTC").as_deref(), Ok("UTC"));
        assert!(time_zone("CEST").is_err());
        assert!(time_zone("europe/paris").is_err());
    }

    #[test]
    fn a_header_names_the_columns() {
        let columns = Columns::of(&record(&[
            "Client ID",
            "phone",
            "first_name",
            "time_zone",
            "plan",
        ]))
        .unwrap();
        assert_eq!(columns.variable_names(), ["first_name", "plan"]);
        let contact = columns
            .contact(
                &record(&[" c-1 ", "(415) 555-0100", "Ann", "", "gold"]),
                Some("1"),
            )
            .unwrap();
        assert_eq!(contact.client_id, "c-1");
        assert_eq!(contact.phone.as_deref(), Some("+14155550100"));
        assert_eq!(
            contact.time_zone,
            Some(("America/Los_Angeles".to_owned(), ZoneSource::Number))
        );
        assert_eq!(contact.variables["first_name"], "Ann");
        let zoned = columns
            .contact(
                &record(&["c-2", "+14155550100", "", "America/Denver", ""]),
                None,
            )
            .unwrap();
        assert_eq!(
            zoned.time_zone,
            Some(("America/Denver".to_owned(), ZoneSource::Column))
        );
        assert!(zoned.variables.is_empty());
        for (fields, why) in [
            (vec!["", "+14155550100", "", "", ""], "no clientId"),
            (vec!["c", "", "", "", ""], "neither"),
            (vec!["c", "+14155550100", "", "Mars/Olympus", ""], "IANA"),
            (vec!["c", "+14155550100"], "2 fields"),
        ] {
            let err = columns.contact(&record(&fields), None).unwrap_err();
            assert!(err.contains(why), "{fields:?}: {err}");
        }
    }

    #[test]
    fn a_header_without_its_key_columns_is_refused() {
        for (header, why) in [
            (vec!["phone", "name"], "clientId"),
            (vec!["clientId", "name"], "neither"),
            (vec!["clientId", "phone", "Phone"], "twice"),
            (vec!["clientId", "phone", "first name"], "variable name"),
            (vec!["clientId", "phone", ""], "no name"),
        ] {
            let err = Columns::of(&record(&header)).unwrap_err();
            assert!(err.contains(why), "{header:?}: {err}");
        }
    }
}
