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

#[cfg(test)]
mod tests {
    use super::*;

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
