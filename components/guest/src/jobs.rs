//! How a durable job's attempt ends, and the published retry schedule: one set of rules for the
//! nexus host's job worker (`host/src/queue.rs`, which uses this module) and for the components
//! that run their own jobs from a sweep endpoint under Spin.

/// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (in milliseconds): the delays before each retry.
pub const RETRY_MS: [u64; 7] = [
    5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];

/// How long a succeeded job is kept before it is deleted: 7 days (in milliseconds). Its payload
/// holds what was written; the jobs API shows it meanwhile.
pub const KEEP_SUCCEEDED_MS: u64 = 7 * 24 * 3600 * 1000;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Try again in this many milliseconds.
    Retry(u64),
    Dead,
}

impl Outcome {
    /// The name `nexus_finish_job` takes.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retry(_) => "retry",
            Outcome::Dead => "dead",
        }
    }

    /// The delay `nexus_finish_job` takes.
    pub fn retry_ms(self) -> Option<i64> {
        match self {
            Outcome::Retry(ms) => Some(i64::try_from(ms).unwrap_or(i64::MAX)),
            _ => None,
        }
    }
}

/// What becomes of a job whose attempt `attempt` (1 for the first) ended with `status`: 2xx
/// done, 422 dead at once, anything else retried while `schedule` lasts.
pub fn outcome(attempt: u32, status: u16, schedule: &[u64]) -> Outcome {
    match status {
        200..=299 => Outcome::Succeeded,
        422 => Outcome::Dead,
        _ => usize::try_from(attempt.saturating_sub(1))
            .ok()
            .and_then(|index| schedule.get(index))
            .map_or(Outcome::Dead, |ms| Outcome::Retry(*ms)),
    }
}

/// The longest wait a far side's `Retry-After` may impose on one retry: a day. A receiver that
/// asks for more is retried after a day all the same (and dead-lettered when the schedule ends).
pub const MAX_RETRY_AFTER_MS: u64 = 24 * 3600 * 1000;

/// A retry no sooner than the far side asked (`retry_after_ms`, from its `Retry-After`; at most
/// [`MAX_RETRY_AFTER_MS`]): it can only lengthen the published wait, never shorten it.
pub fn honour_retry_after(outcome: Outcome, retry_after_ms: Option<u64>) -> Outcome {
    match outcome {
        Outcome::Retry(ms) => {
            Outcome::Retry(ms.max(retry_after_ms.unwrap_or(0).min(MAX_RETRY_AFTER_MS)))
        }
        other => other,
    }
}

/// A `Retry-After` value (delta-seconds, or an HTTP date such as `Wed, 21 Oct 2015 07:28:00
/// GMT`) as seconds from `now_unix`; `None` when it is neither.
pub fn retry_after_seconds(value: &str, now_unix: u64) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds);
    }
    // IMF-fixdate, the one HTTP date format senders must use (RFC 9110, 5.6.7).
    let format = time::format_description::parse_borrowed::<2>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .ok()?;
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    let at = u64::try_from(at.unix_timestamp()).ok()?;
    Some(at.saturating_sub(now_unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_lengthens_the_wait_up_to_a_day() {
        assert_eq!(
            honour_retry_after(Outcome::Retry(5_000), Some(60_000)),
            Outcome::Retry(60_000)
        );
        assert_eq!(
            honour_retry_after(Outcome::Retry(5_000), Some(1_000)),
            Outcome::Retry(5_000)
        );
        assert_eq!(
            honour_retry_after(Outcome::Retry(5_000), Some(u64::MAX)),
            Outcome::Retry(MAX_RETRY_AFTER_MS)
        );
        assert_eq!(
            honour_retry_after(Outcome::Dead, Some(60_000)),
            Outcome::Dead
        );
        assert_eq!(
            honour_retry_after(Outcome::Succeeded, None),
            Outcome::Succeeded
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        // 2015-10-21T07:28:00Z is 1445412480.
        let now = 1_445_412_480 - 90;
        assert_eq!(retry_after_seconds("120", now), Some(120));
        assert_eq!(retry_after_seconds(" 0 ", now), Some(0));
        assert_eq!(
            retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(90)
        );
        assert_eq!(
            retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now + 1000),
            Some(0)
        );
        assert_eq!(retry_after_seconds("soon", now), None);
        assert_eq!(retry_after_seconds("-5", now), None);
    }

    #[test]
    fn outcomes_follow_the_schedule() {
        assert_eq!(outcome(1, 200, &RETRY_MS), Outcome::Succeeded);
        assert_eq!(outcome(1, 422, &RETRY_MS), Outcome::Dead);
        assert_eq!(outcome(1, 503, &RETRY_MS), Outcome::Retry(5_000));
        assert_eq!(outcome(7, 500, &RETRY_MS), Outcome::Retry(36_000_000));
        assert_eq!(outcome(8, 500, &RETRY_MS), Outcome::Dead);
        assert_eq!(Outcome::Retry(5).retry_ms(), Some(5));
        assert_eq!(Outcome::Dead.retry_ms(), None);
    }
}
