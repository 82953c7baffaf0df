//! Business hours: when a queue is open.
//!
//! `{"utcOffsetMinutes": 60, "days": {"mon": ["09:00-12:30", "13:30-18:00"], "sat": ["10:00-14:00"]}}`:
//! a day missing from `days` is closed all day; times are local to the offset. An offset (not a
//! time-zone name) keeps the rule exact and the component free of a time-zone database; a
//! tenant whose zone has daylight saving updates it twice a year.

use serde_json::Value;

const DAYS: [&str; 7] = ["thu", "fri", "sat", "sun", "mon", "tue", "wed"];

fn minutes(text: &str) -> Option<i64> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 1440).then_some(h * 60 + m)
}

/// `"HH:MM-HH:MM"`, two digits each, as the OpenAPI document's pattern says: its minutes.
fn strict_range(text: &str) -> Option<(i64, i64)> {
    let bytes = text.as_bytes();
    let shape = bytes.len() == 11
        && bytes.iter().enumerate().all(|(i, b)| match i {
            2 | 8 => *b == b':',
            5 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    let (from, to) = (minutes(&text[..5])?, minutes(&text[6..])?);
    (from < to).then_some((from, to))
}

/// Checks a business-hours value; the reason it is not valid, naming the field. Whatever is
/// stored is what `is_open` reads: a value it would misread (a day that is not a list) must
/// never be stored, or the queue would be closed every day.
pub fn validate(hours: &Value) -> Result<(), String> {
    let Some(object) = hours.as_object() else {
        return Err("`businessHours` is an object {utcOffsetMinutes, days}".into());
    };
    if let Some(unknown) = object
        .keys()
        .find(|key| !matches!(key.as_str(), "utcOffsetMinutes" | "days"))
    {
        return Err(format!(
            "`businessHours.{unknown}` is not a field (utcOffsetMinutes, days)"
        ));
    }
    if let Some(offset) = object.get("utcOffsetMinutes") {
        let in_range = offset
            .as_i64()
            .is_some_and(|minutes| (-14 * 60..=14 * 60).contains(&minutes));
        if !in_range {
            return Err("`businessHours.utcOffsetMinutes` is an integer from -840 to 840".into());
        }
    }
    let Some(days) = object.get("days").and_then(Value::as_object) else {
        return Err(
            "`businessHours.days` maps day names (mon..sun) to lists of \"HH:MM-HH:MM\"".into(),
        );
    };
    for (day, ranges) in days {
        if !DAYS.contains(&day.as_str()) {
            return Err(format!(
                "`businessHours.days.{day}` is not a day (mon, tue, wed, thu, fri, sat, sun)"
            ));
        }
        let Some(ranges) = ranges.as_array() else {
            return Err(format!(
                "`businessHours.days.{day}` is a list of \"HH:MM-HH:MM\" ([] for closed)"
            ));
        };
        for range in ranges {
            if range.as_str().and_then(strict_range).is_none() {
                return Err(format!(
                    "`businessHours.days.{day}`: `{range}` is not a range \"HH:MM-HH:MM\" that ends after it starts"
                ));
            }
        }
    }
    Ok(())
}

/// Whether `hours` are open at `unix_seconds`.
pub fn is_open(hours: &Value, unix_seconds: i64) -> bool {
    let offset = hours
        .get("utcOffsetMinutes")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let local = unix_seconds + offset * 60;
    // 1970-01-01 was a Thursday.
    let day = DAYS[usize::try_from(local.div_euclid(86_400).rem_euclid(7)).unwrap_or(0)];
    let minute = local.rem_euclid(86_400) / 60;
    hours
        .get("days")
        .and_then(|days| days.get(day))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|range| range.as_str()?.split_once('-'))
        .filter_map(|(from, to)| Some((minutes(from)?, minutes(to)?)))
        .any(|(from, to)| (from..to).contains(&minute))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // 2026-11-23 is a Monday.
    const MONDAY_UTC_MIDNIGHT: i64 = 1_795_392_000;

    #[test]
    fn open_within_the_ranges_of_the_local_day() {
        let hours =
            json!({"utcOffsetMinutes": 60, "days": {"mon": ["09:00-12:30", "13:30-18:00"]}});
        let at = |h: i64, m: i64| MONDAY_UTC_MIDNIGHT + (h * 60 + m) * 60 - 3600;
        assert!(!is_open(&hours, at(8, 59)));
        assert!(is_open(&hours, at(9, 0)));
        assert!(is_open(&hours, at(12, 29)));
        assert!(!is_open(&hours, at(12, 30)));
        assert!(is_open(&hours, at(17, 59)));
        assert!(!is_open(&hours, at(18, 0)));
        // Tuesday is not listed: closed.
        assert!(!is_open(&hours, at(24 + 10, 0)));
    }

    #[test]
    fn validation_names_the_mistake() {
        assert!(validate(&json!({"days": {"mon": ["09:00-17:00"]}})).is_ok());
        assert!(validate(&json!({"days": {"monday": []}})).is_err());
        assert!(validate(&json!({"days": {"mon": ["17:00-09:00"]}})).is_err());
        assert!(validate(&json!({"days": {"mon": ["9-17"]}})).is_err());
        assert!(validate(&json!({"utcOffsetMinutes": 2000, "days": {}})).is_err());
        assert!(validate(&json!({})).is_err());
        // What was once stored and then closed the queue every day.
        for day in [
            json!("AAA"),
            json!({}),
            json!(false),
            json!(["09:00-17:00", 3]),
        ] {
            let err = validate(&json!({"days": {"mon": day}})).unwrap_err();
            assert!(err.contains("businessHours.days.mon"), "{err}");
        }
        assert!(validate(&json!({"utcOffsetMinutes": "60", "days": {}})).is_err());
        assert!(validate(&json!({"utcOffsetMinutes": 1.5, "days": {}})).is_err());
        assert!(validate(&json!({"utcOffset": 60, "days": {}})).is_err());
        assert!(validate(&json!({"days": {"mon": ["9:00-17:00"]}})).is_err());
        assert!(validate(&json!({"days": {"mon": [" 09:00-17:00"]}})).is_err());
        assert!(validate(&json!({"days": {"mon": ["00:00-24:00"], "sun": []}})).is_ok());
        assert!(validate(&json!("mon")).is_err());
    }
}
