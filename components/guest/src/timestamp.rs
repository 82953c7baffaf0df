//! Date-times that callers give (a search's `from`, a key's `expiresAt`): RFC 3339, checked and
//! normalised to UTC here, so that PostgreSQL only ever sees `YYYY-MM-DDTHH:MM:SS.ffffffZ`. It
//! would refuse some valid offsets (`+18:05`) as an error of its own, and would take words
//! (`tomorrow`, `epoch`, `infinity`) that the API does not document.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::api::{ApiError, ApiResult};

/// `text` as an RFC 3339 date-time (`2026-11-30T09:00:00+01:00`, `...Z`), in UTC; a 400 naming
/// the parameter `name` otherwise, or when it falls outside the years 1 to 9999.
pub fn parse(name: &str, text: &str) -> ApiResult<String> {
    let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| {
        ApiError::bad_parameter(format!(
            "`{name}` is an RFC 3339 date-time, such as 2026-11-30T09:00:00Z"
        ))
    })?;
    let utc = parsed
        .checked_to_offset(UtcOffset::UTC)
        .filter(|utc| (1..=9999).contains(&utc.year()));
    let Some(utc) = utc else {
        return Err(ApiError::bad_parameter(format!(
            "`{name}` is outside the years 1 to 9999"
        )));
    };
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.microsecond()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_normalised_to_utc() {
        assert_eq!(
            parse("to", "2000-01-01T00:00:00+18:05").unwrap(),
            "1999-12-31T05:55:00.000000Z"
        );
        assert_eq!(
            parse("from", "2026-11-30T09:00:00.5-01:30").unwrap(),
            "2026-11-30T10:30:00.500000Z"
        );
        assert_eq!(
            parse("from", "2026-11-30t09:00:00z").unwrap(),
            "2026-11-30T09:00:00.000000Z"
        );
    }

    #[test]
    fn what_is_not_rfc_3339_is_refused_by_name() {
        for text in [
            "tomorrow",
            "epoch",
            "infinity",
            "2026-11-30",
            "2026-11-30 09:00:00",
            "2026-13-01T00:00:00Z",
            "2026-11-30T09:00:00",
            "",
        ] {
            let err = parse("to", text).unwrap_err();
            assert_eq!(err.http_status, 400, "{text}");
            assert!(err.message.contains("`to`"), "{}", err.message);
        }
        // In RFC 3339 but not in a year PostgreSQL's calendar and ours share.
        assert!(parse("to", "0000-01-01T00:00:00Z").is_err());
        assert!(parse("to", "0000-01-01T23:00:00+23:59").is_err());
        assert!(parse("to", "9999-12-31T23:59:59Z").is_ok());
        assert!(parse("to", "9999-12-31T23:00:00-23:59").is_err());
    }
}
