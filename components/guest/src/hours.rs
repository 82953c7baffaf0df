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

/// Checks a business-hours value; the reason it is not valid.
pub fn validate(hours: &Value) -> Result<(), String> {
    let offset = hours
        .get("utcOffsetMinutes")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if !(-14 * 60..=14 * 60).contains(&offset) {
        return Err("`utcOffsetMinutes` is from -840 to 840".into());
    }
    let Some(days) = hours.get("days").and_then(Value::as_object) else {
        return Err("`days` maps day names (mon..sun) to lists of \"HH:MM-HH:MM\"".into());
    };
    for (day, ranges) in days {
        if !DAYS.contains(&day.as_str()) {
            return Err(format!(
                "`{day}` is not a day (mon, tue, wed, thu, fri, sat, sun)"
            ));
        }
        for range in ranges.as_array().into_iter().flatten() {
            let parsed = range
                .as_str()
                .and_then(|r| r.split_once('-'))
                .and_then(|(from, to)| Some((minutes(from)?, minutes(to)?)));
            if parsed.is_none_or(|(from, to)| from >= to) {
                return Err(format!("`{range}` is not a range \"HH:MM-HH:MM\""));
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
    }
}
