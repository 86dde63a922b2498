//! Billing periods in calendar terms: a monthly plan bought on 31 January runs to the end of
//! February (chrono clamps the day), not for 30 days.

use chrono::{DateTime, Months};

/// The end of a period of `cycle` starting at `start_ms`.
pub fn period_end(start_ms: i64, cycle: &str) -> i64 {
    let months = match cycle {
        "yearly" => 12,
        "lifetime" => 12 * 100,
        _ => 1,
    };
    DateTime::from_timestamp_millis(start_ms)
        .and_then(|t| t.checked_add_months(Months::new(months)))
        .map(|t| t.timestamp_millis())
        .unwrap_or(start_ms + months as i64 * 31 * 24 * 3600 * 1000)
}

#[cfg(test)]
mod tests {
    use super::period_end;
    use chrono::{TimeZone, Utc};

    #[test]
    fn months_are_calendar_months() {
        let jan31 = Utc
            .with_ymd_and_hms(2026, 1, 31, 12, 0, 0)
            .unwrap()
            .timestamp_millis();
        let feb28 = Utc
            .with_ymd_and_hms(2026, 2, 28, 12, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(period_end(jan31, "monthly"), feb28);
        let next_year = Utc
            .with_ymd_and_hms(2027, 1, 31, 12, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(period_end(jan31, "yearly"), next_year);
    }
}
