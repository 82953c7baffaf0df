//! The embedded Redis's sorted set: members ordered by (score, member), as Redis orders them, and
//! Redis's score-range syntax (`-inf`, `+inf`, `(5` exclusive, `5` inclusive).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

/// A score with the total order Redis uses (no NaN is ever stored: parsing refuses it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct SortedSet {
    scores: HashMap<Vec<u8>, Score>,
    ordered: BTreeSet<(Score, Vec<u8>)>,
}

/// One end of a score range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub score: f64,
    pub exclusive: bool,
}

impl Bound {
    /// Parses `-inf`, `+inf`, `5`, `(5`.
    pub fn parse(text: &[u8]) -> Option<Bound> {
        let text = std::str::from_utf8(text).ok()?;
        let (exclusive, number) = match text.strip_prefix('(') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let score = parse_score(number.as_bytes())?;
        Some(Bound { score, exclusive })
    }

    fn admits_from_below(&self, score: f64) -> bool {
        if self.exclusive {
            score > self.score
        } else {
            score >= self.score
        }
    }

    fn admits_from_above(&self, score: f64) -> bool {
        if self.exclusive {
            score < self.score
        } else {
            score <= self.score
        }
    }
}

/// Redis's index range `start..=stop` over `len` elements (LRANGE, ZRANGE, ZREMRANGEBYRANK), as
/// indices: a negative index counts from the end; a start before the first element is the first,
/// but a stop before it makes the range empty (`0 -201` of five is nothing).
pub fn index_range(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    if stop < 0 || start > stop || start >= len {
        return None;
    }
    Some((usize::try_from(start).ok()?, usize::try_from(stop).ok()?))
}

/// A score as Redis writes them: a float, `inf`, `+inf` or `-inf`; never NaN.
pub fn parse_score(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    let score = match text.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        other => other.parse::<f64>().ok()?,
    };
    (!score.is_nan()).then_some(score)
}

/// A score as Redis replies it.
pub fn format_score(score: f64) -> Vec<u8> {
    if score == f64::INFINITY {
        b"inf".to_vec()
    } else if score == f64::NEG_INFINITY {
        b"-inf".to_vec()
    } else {
        score.to_string().into_bytes()
    }
}

impl SortedSet {
    /// Adds or re-scores `member`; true if it is new.
    pub fn insert(&mut self, score: f64, member: Vec<u8>) -> bool {
        let score = Score(score);
        match self.scores.insert(member.clone(), score) {
            Some(old) => {
                self.ordered.remove(&(old, member.clone()));
                self.ordered.insert((score, member));
                false
            }
            None => {
                self.ordered.insert((score, member));
                true
            }
        }
    }

    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => self.ordered.remove(&(score, member.to_vec())),
            None => false,
        }
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).map(|score| score.0)
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// The 0-based rank of `member` by score (a walk of the set: the embedded store serves
    /// small sets).
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = *self.scores.get(member)?;
        self.ordered
            .range(..(score, member.to_vec()))
            .count()
            .into()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Members with their scores, by rank.
    pub fn range_by_rank(&self, start: i64, stop: i64) -> Vec<(Vec<u8>, f64)> {
        let Some((start, stop)) = index_range(self.len(), start, stop) else {
            return Vec::new();
        };
        self.ordered
            .iter()
            .skip(start)
            .take(stop - start + 1)
            .map(|(score, member)| (member.clone(), score.0))
            .collect()
    }

    /// Members with their scores between `min` and `max`, skipping `offset` and taking `count`
    /// (all when `None`).
    pub fn range_by_score(
        &self,
        min: Bound,
        max: Bound,
        offset: usize,
        count: Option<usize>,
    ) -> Vec<(Vec<u8>, f64)> {
        let matching = self
            .ordered
            .iter()
            .skip_while(|(score, _)| !min.admits_from_below(score.0))
            .take_while(|(score, _)| max.admits_from_above(score.0))
            .skip(offset)
            .map(|(score, member)| (member.clone(), score.0));
        match count {
            Some(count) => matching.take(count).collect(),
            None => matching.collect(),
        }
    }

    /// Removes the members of a rank range; how many.
    pub fn remove_range_by_rank(&mut self, start: i64, stop: i64) -> usize {
        let doomed: Vec<Vec<u8>> = self
            .range_by_rank(start, stop)
            .into_iter()
            .map(|(member, _)| member)
            .collect();
        for member in &doomed {
            self.remove(member);
        }
        doomed.len()
    }
}

#[cfg(test)]
mod sorted_set_tests {
    use super::*;

    fn members(entries: Vec<(Vec<u8>, f64)>) -> Vec<String> {
        entries
            .into_iter()
            .map(|(member, score)| format!("{}={score}", String::from_utf8(member).unwrap()))
            .collect()
    }

    #[test]
    fn orders_by_score_then_member_and_rescoring_moves() {
        let mut set = SortedSet::default();
        assert!(set.insert(2.0, b"b".to_vec()));
        assert!(set.insert(1.0, b"z".to_vec()));
        assert!(set.insert(2.0, b"a".to_vec()));
        assert!(!set.insert(0.5, b"b".to_vec()));
        assert_eq!(members(set.range_by_rank(0, -1)), ["b=0.5", "z=1", "a=2"]);
        assert_eq!(members(set.range_by_rank(-2, -1)), ["z=1", "a=2"]);
        assert_eq!(set.range_by_rank(5, 9), Vec::new());
    }

    #[test]
    fn score_ranges_with_exclusive_bounds_and_limits() {
        let mut set = SortedSet::default();
        for n in 1..=5 {
            set.insert(f64::from(n), format!("m{n}").into_bytes());
        }
        let (open2, inf) = (Bound::parse(b"(2").unwrap(), Bound::parse(b"+inf").unwrap());
        assert_eq!(
            members(set.range_by_score(open2, inf, 0, None)),
            ["m3=3", "m4=4", "m5=5"]
        );
        assert_eq!(
            members(set.range_by_score(open2, inf, 1, Some(1))),
            ["m4=4"]
        );
        let (two, four) = (Bound::parse(b"2").unwrap(), Bound::parse(b"(4").unwrap());
        assert_eq!(
            members(set.range_by_score(two, four, 0, None)),
            ["m2=2", "m3=3"]
        );
        assert_eq!(set.remove_range_by_rank(0, -201), 0);
        assert_eq!(set.remove_range_by_rank(0, -4), 2);
        assert_eq!(members(set.range_by_rank(0, -1)), ["m3=3", "m4=4", "m5=5"]);
        assert!(Bound::parse(b"nan").is_none() && Bound::parse(b"x").is_none());
    }
}
