//! The arithmetic of rounds: medians and spreads of per-round numbers, and the load gate.
//!
//! A comparison runs its whole interleaved sequence several times (rounds). One round can be
//! lucky or unlucky, so every number the report states is the **median** of the rounds, with
//! the **spread** (the smallest and the largest round) beside it; a ratio between two targets
//! is taken per round first (the two ran minutes apart at most, on the same machine) and then
//! its median across rounds.
//!
//! The load gate: a closed-loop benchmark saturates the machine, so anything else that runs
//! takes CPU from the targets and the ratios mean nothing. Before each round the runner waits
//! (a bounded time) for the 1-minute load average to fall to the threshold; a round that
//! starts above it is **busy**, and no ratio that uses a busy round is published. Everything
//! here is pure (no clock, no files), so it is tested on its own.

/// The median of a set of per-round values, with the smallest and largest beside it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many values.
    pub count: usize,
}

impl Spread {
    /// The median and spread of `values`; `None` when there are none (or one is NaN).
    #[must_use]
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let count = sorted.len();
        let median = if count % 2 == 1 {
            sorted[count / 2]
        } else {
            (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[count - 1],
            count,
        })
    }
}

/// The three load averages of `/proc/loadavg` (runnable and uninterruptible tasks,
/// exponentially averaged over 1, 5 and 15 minutes).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadAverage {
    /// Over 1 minute.
    pub one: f64,
    /// Over 5 minutes.
    pub five: f64,
    /// Over 15 minutes.
    pub fifteen: f64,
}

impl LoadAverage {
    /// Parses the text of `/proc/loadavg` (`0.52 0.61 0.70 1/345 6789`).
    #[must_use]
    pub fn parse(text: &str) -> Option<LoadAverage> {
        let mut fields = text.split_whitespace().map(str::parse::<f64>);
        let one = fields.next()?.ok()?;
        let five = fields.next()?.ok()?;
        let fifteen = fields.next()?.ok()?;
        [one, five, fifteen]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
            .then_some(LoadAverage { one, five, fifteen })
    }
}

impl std::fmt::Display for LoadAverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} {:.2} {:.2}", self.one, self.five, self.fifteen)
    }
}

/// The busy threshold when none is given: half the CPUs. At the start of a round the
/// targets are idle, so a 1-minute load average above half the CPUs means that something
/// else kept at least half the machine busy over the last minute, and a closed loop that
/// saturates the machine would have shared it.
#[must_use]
pub fn default_busy_load(cpus: usize) -> f64 {
    cpus.max(1) as f64 * 0.5
}

/// Whether a round that starts at `load` is busy: its 1-minute load average is above
/// `threshold`. An unknown load (no `/proc/loadavg`) cannot be judged and is not busy.
#[must_use]
pub fn is_busy(load: Option<&LoadAverage>, threshold: f64) -> bool {
    load.is_some_and(|load| load.one > threshold)
}

/// Whether to go on waiting for the machine to quiet down before a round: the load is above
/// the threshold and the wait has not used up its bound.
#[must_use]
pub fn keep_waiting(
    load: Option<&LoadAverage>,
    threshold: f64,
    waited_s: f64,
    wait_s: f64,
) -> bool {
    is_busy(load, threshold) && waited_s < wait_s
}

/// The load of the machine around one round.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundLoad {
    /// The round, from 0.
    pub round: u64,
    /// CPUs available.
    pub cpus: usize,
    /// The busy threshold (1-minute load average).
    pub threshold: f64,
    /// Seconds waited for the load to fall to the threshold before the round.
    pub waited_s: f64,
    /// The load average when the round started (after the wait).
    pub before: Option<LoadAverage>,
    /// The load average when it ended (the round's own load shows here).
    pub after: Option<LoadAverage>,
    /// Whether the round started above the threshold.
    pub busy: bool,
}

/// The first busy round among `used` (the rounds a number was taken from), if any.
#[must_use]
pub fn first_busy<'a>(loads: &'a [RoundLoad], used: &[u64]) -> Option<&'a RoundLoad> {
    loads
        .iter()
        .filter(|load| used.contains(&load.round))
        .find(|load| load.busy)
}

/// What the report says instead of a ratio taken from a busy round.
#[must_use]
pub fn refusal(busy: &RoundLoad) -> String {
    let load = busy
        .before
        .map_or_else(|| "unknown".to_string(), |load| format!("{:.2}", load.one));
    format!(
        "not published: machine busy (load {load} at round {}, threshold {:.2})",
        busy.round + 1,
        busy.threshold
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(one: f64) -> LoadAverage {
        LoadAverage {
            one,
            five: 0.0,
            fifteen: 0.0,
        }
    }

    fn round(round: u64, one: f64, threshold: f64) -> RoundLoad {
        RoundLoad {
            round,
            cpus: 2,
            threshold,
            waited_s: 0.0,
            before: Some(load(one)),
            after: None,
            busy: is_busy(Some(&load(one)), threshold),
        }
    }

    #[test]
    fn the_median_is_the_middle_round_and_the_spread_its_extremes() {
        let spread = Spread::of(&[12_402.0, 10_818.0, 13_001.0]).expect("values");
        assert_eq!(spread.median, 12_402.0);
        assert_eq!(
            (spread.min, spread.max, spread.count),
            (10_818.0, 13_001.0, 3)
        );
        // An even count takes the mean of the two middle values.
        let even = Spread::of(&[4.0, 1.0, 3.0, 2.0]).expect("values");
        assert_eq!(even.median, 2.5);
        let single = Spread::of(&[7.0]).expect("a value");
        assert_eq!((single.median, single.min, single.max), (7.0, 7.0, 7.0));
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn the_load_average_is_read_from_proc() {
        let parsed = LoadAverage::parse("0.52 0.61 0.70 1/345 6789\n").expect("parses");
        assert_eq!(
            parsed,
            LoadAverage {
                one: 0.52,
                five: 0.61,
                fifteen: 0.70
            }
        );
        assert_eq!(parsed.to_string(), "0.52 0.61 0.70");
        assert!(LoadAverage::parse("").is_none());
        assert!(LoadAverage::parse("0.5 x 0.7").is_none());
        assert!(LoadAverage::parse("-1 0 0").is_none());
    }

    #[test]
    fn a_round_is_busy_when_it_starts_above_the_threshold() {
        assert_eq!(default_busy_load(2), 1.0);
        assert_eq!(default_busy_load(0), 0.5);
        assert!(!is_busy(Some(&load(0.8)), 1.0));
        assert!(!is_busy(Some(&load(1.0)), 1.0));
        assert!(is_busy(Some(&load(1.01)), 1.0));
        // No /proc/loadavg: nothing to judge by.
        assert!(!is_busy(None, 1.0));
    }

    #[test]
    fn the_runner_waits_for_a_quiet_machine_but_not_forever() {
        assert!(keep_waiting(Some(&load(3.0)), 1.0, 0.0, 120.0));
        assert!(keep_waiting(Some(&load(3.0)), 1.0, 119.0, 120.0));
        assert!(!keep_waiting(Some(&load(3.0)), 1.0, 120.0, 120.0));
        assert!(!keep_waiting(Some(&load(0.9)), 1.0, 0.0, 120.0));
        // A wait of zero never waits.
        assert!(!keep_waiting(Some(&load(3.0)), 1.0, 0.0, 0.0));
    }

    #[test]
    fn a_ratio_from_a_busy_round_is_refused_with_the_load_and_the_round() {
        let loads = vec![round(0, 0.4, 1.0), round(1, 2.75, 1.0), round(2, 0.6, 1.0)];
        assert!(first_busy(&loads, &[0, 2]).is_none());
        let busy = first_busy(&loads, &[0, 1, 2]).expect("round 1 was busy");
        assert_eq!(busy.round, 1);
        assert_eq!(
            refusal(busy),
            "not published: machine busy (load 2.75 at round 2, threshold 1.00)"
        );
    }
}
