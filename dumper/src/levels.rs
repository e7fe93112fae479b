//! The level policy: which level each DLE gets tonight. Deliberately simple and documented,
//! unlike Amanda's planner (which balances fulls over the cycle and bumps levels):
//!
//! 1. A **full (level 0)** when the DLE has no complete full in the catalog whose holding
//!    file still exists, or when that full is `dumpcycle` days old or older
//!    (`dumpcycle 0`: a full every run).
//! 2. Otherwise **level 1**: everything changed since that full. A restore then needs the
//!    full and the latest level 1 only.
//! 3. `strategy noinc`: always a full. `strategy nofull` / `incronly`: level 1 whenever a full
//!    exists (a full only when there is none at all).
//! 4. `skip-full yes`: the run skips the DLE when rule 1 says full; `skip-incr yes`: it skips
//!    the DLE when rule 2 says level 1.
//!
//! What this module must not do: read the catalog or the clock (the caller passes what it
//! found and `now`).

use conf::value::Strategy;

/// What the policy needs to know about one DLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelInput {
    /// Now, seconds since the epoch.
    pub now: i64,
    /// When the last usable full was made (seconds since the epoch), if there is one.
    pub last_full: Option<i64>,
    /// `dumpcycle` in days.
    pub dumpcycle_days: u32,
    /// `strategy`.
    pub strategy: Strategy,
    /// `skip-full`.
    pub skip_full: bool,
    /// `skip-incr`.
    pub skip_incr: bool,
}

/// The decision, with the reason for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LevelChoice {
    /// Dump at this level.
    Dump {
        /// The level.
        level: i32,
        /// Why, e.g. `no full in the catalog`.
        reason: String,
    },
    /// Do not dump tonight.
    Skip {
        /// Why.
        reason: String,
    },
}

/// Applies the policy in the module docs.
pub fn choose(i: &LevelInput) -> LevelChoice {
    let full_due = match i.last_full {
        None => Some("no full in the catalog".to_owned()),
        Some(t) => {
            let age_days = (i.now - t).max(0) / 86_400;
            if i.dumpcycle_days == 0 {
                Some("dumpcycle 0: a full every run".to_owned())
            } else if age_days >= i64::from(i.dumpcycle_days) {
                Some(format!(
                    "last full {age_days} days ago, dumpcycle {} days",
                    i.dumpcycle_days
                ))
            } else {
                None
            }
        }
    };
    let (level, reason) = match (i.strategy, full_due) {
        (Strategy::Noinc, due) => (
            0,
            due.unwrap_or_else(|| "strategy noinc: always a full".to_owned()),
        ),
        (Strategy::Nofull | Strategy::Incronly, _) if i.last_full.is_some() => (
            1,
            "strategy incronly/nofull: incremental on the existing full".to_owned(),
        ),
        (_, Some(why)) => (0, why),
        (_, None) => (
            1,
            format!(
                "full {} days old, within dumpcycle {} days",
                i.last_full.map_or(0, |t| (i.now - t).max(0) / 86_400),
                i.dumpcycle_days
            ),
        ),
    };
    if level == 0 && i.skip_full {
        return LevelChoice::Skip {
            reason: format!("skip-full: a full is due ({reason})"),
        };
    }
    if level > 0 && i.skip_incr {
        return LevelChoice::Skip {
            reason: "skip-incr: an incremental is due".to_owned(),
        };
    }
    LevelChoice::Dump { level, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn input(last_full: Option<i64>, cycle: u32) -> LevelInput {
        LevelInput {
            now: 100 * DAY,
            last_full,
            dumpcycle_days: cycle,
            strategy: Strategy::Standard,
            skip_full: false,
            skip_incr: false,
        }
    }

    fn level(c: LevelChoice) -> Option<i32> {
        match c {
            LevelChoice::Dump { level, .. } => Some(level),
            LevelChoice::Skip { .. } => None,
        }
    }

    #[test]
    fn full_when_there_is_none() {
        assert_eq!(level(choose(&input(None, 7))), Some(0));
    }

    #[test]
    fn level_one_within_the_dumpcycle_and_full_when_it_is_over() {
        assert_eq!(level(choose(&input(Some(99 * DAY), 7))), Some(1));
        assert_eq!(level(choose(&input(Some(94 * DAY), 7))), Some(1));
        assert_eq!(level(choose(&input(Some(93 * DAY), 7))), Some(0));
    }

    #[test]
    fn dumpcycle_zero_means_a_full_every_run() {
        assert_eq!(level(choose(&input(Some(100 * DAY), 0))), Some(0));
    }

    #[test]
    fn strategies_and_skips() {
        let mut i = input(Some(99 * DAY), 7);
        i.strategy = Strategy::Noinc;
        assert_eq!(level(choose(&i)), Some(0));
        let mut i = input(Some(1), 7);
        i.strategy = Strategy::Incronly;
        assert_eq!(level(choose(&i)), Some(1));
        let mut i = input(None, 7);
        i.skip_full = true;
        assert_eq!(level(choose(&i)), None);
        let mut i = input(Some(99 * DAY), 7);
        i.skip_incr = true;
        assert_eq!(level(choose(&i)), None);
    }
}
