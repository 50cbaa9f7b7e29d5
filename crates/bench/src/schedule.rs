//! When operations are meant to be sent, and how long a run lasts.
//!
//! A closed loop sends the next operation as soon as the last one returns, so a slow target
//! also slows the load (and hides its stalls). An open loop sends at a fixed rate whatever the
//! target does: operation `i` is due at `i / rate` seconds after the start, and its latency is
//! measured from that intended time, not from when a free client actually sent it. A stall
//! then shows up in the latency of every operation that should have been sent during it,
//! which is what a user at that rate would see (no coordinated omission).

use std::time::Duration;

/// Whether clients wait for answers or follow a schedule.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Pacing {
    /// Each client sends its next operation when the last one returns.
    Closed,
    /// Operations are due at a fixed total rate; latency counts from the due time.
    Open {
        /// Operations per second, over all clients.
        rate: f64,
    },
}

/// The time after the start at which operation `index` of an open loop at `rate` operations
/// per second is due. Exact to the nanosecond for any index a run can reach.
#[must_use]
pub fn due_offset(index: u64, rate: f64) -> Duration {
    if rate <= 0.0 || !rate.is_finite() {
        return Duration::MAX;
    }
    let nanos = (index as f64) * 1e9 / rate;
    if nanos >= u64::MAX as f64 {
        Duration::MAX
    } else {
        Duration::from_nanos(nanos.round() as u64)
    }
}

/// How many operations an open loop at `rate` schedules in `window`.
#[must_use]
pub fn scheduled_in(window: Duration, rate: f64) -> u64 {
    if rate <= 0.0 || !rate.is_finite() {
        return 0;
    }
    (window.as_secs_f64() * rate).ceil() as u64
}

/// The latency an open-loop operation is charged: from when it was due (not when it was
/// sent) until its answer. An answer cannot come before the due time, but if the clock says
/// so the latency is zero rather than negative.
#[must_use]
pub fn charged_latency(due: Duration, answered: Duration) -> Duration {
    answered.saturating_sub(due)
}

/// Parses a duration such as `10s`, `500ms`, `2m`, `1.5s` or `250us` (a bare number is
/// seconds).
///
/// # Errors
/// A message naming the text when it is not a non-negative number with one of the units
/// `us`, `ms`, `s`, `m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (for example 10s, 500ms, 2m)"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" => 60.0,
        _ => return Err(format!("unknown unit in {text:?} (use us, ms, s or m)")),
    };
    let seconds = value * scale;
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_operations_are_evenly_spaced() {
        assert_eq!(due_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(due_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(due_offset(1500, 1000.0), Duration::from_millis(1500));
        assert_eq!(due_offset(3, 3.0), Duration::from_secs(1));
        assert_eq!(due_offset(1, 3.0), Duration::from_nanos(333_333_333));
        // A long run does not drift.
        assert_eq!(due_offset(36_000_000, 10_000.0), Duration::from_secs(3600));
    }

    #[test]
    fn a_rate_of_zero_schedules_nothing() {
        assert_eq!(due_offset(1, 0.0), Duration::MAX);
        assert_eq!(due_offset(1, f64::NAN), Duration::MAX);
        assert_eq!(scheduled_in(Duration::from_secs(10), 0.0), 0);
    }

    #[test]
    fn a_window_holds_rate_times_length_operations() {
        assert_eq!(scheduled_in(Duration::from_secs(10), 1000.0), 10_000);
        assert_eq!(scheduled_in(Duration::from_millis(1500), 3.0), 5);
    }

    #[test]
    fn latency_counts_from_the_due_time() {
        // Due at 10 ms, sent late at 30 ms because every client was busy, answered at 31 ms:
        // the user waited 21 ms, not 1 ms.
        let due = Duration::from_millis(10);
        assert_eq!(
            charged_latency(due, Duration::from_millis(31)),
            Duration::from_millis(21)
        );
        assert_eq!(
            charged_latency(due, Duration::from_millis(5)),
            Duration::ZERO
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}
