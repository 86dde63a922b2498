//! Billing periods in calendar terms: a monthly plan bought on 31 January runs to the end of
//! February (chrono clamps the day), not for 30 days.
//!
//! A subscription's paid span may hold several cycles (each renewal adds one); its quota
//! resets at every cycle boundary. Boundaries are counted from the span's start (its anchor),
//! not from the previous boundary, so a span that starts on 31 January has boundaries on
//! 28 February and 31 March rather than drifting to the 28th.

use chrono::{DateTime, Months};

/// Months in one cycle of `cycle`.
pub fn months_of(cycle: &str) -> u32 {
    match cycle {
        "yearly" => 12,
        "lifetime" => 12 * 100,
        _ => 1,
    }
}

/// `anchor` plus `k` cycles.
pub fn add_cycles(anchor_ms: i64, cycle: &str, k: u32) -> i64 {
    let months = months_of(cycle).saturating_mul(k);
    DateTime::from_timestamp_millis(anchor_ms)
        .and_then(|t| t.checked_add_months(Months::new(months)))
        .map(|t| t.timestamp_millis())
        .unwrap_or(anchor_ms.saturating_add(months as i64 * 31 * 24 * 3600 * 1000))
}

/// The end of a period of `cycle` starting at `start_ms`.
pub fn period_end(start_ms: i64, cycle: &str) -> i64 {
    add_cycles(start_ms, cycle, 1)
}

/// The quota cycle of the span [`anchor`, `end`) that holds `now`: it starts at a boundary
/// and ends at the next one, or at `end` (a span need not be whole cycles). `now` before the
/// anchor (a span renewed from an end that was not a boundary, whose cycles count from that
/// end) gives the stretch up to the anchor; `now` at or past `end`, the last cycle.
pub fn cycle_at(anchor: i64, end: i64, cycle: &str, now: i64) -> (i64, i64) {
    if now < anchor {
        return (now, anchor);
    }
    let mut start = anchor;
    for k in 1u32.. {
        let next = add_cycles(anchor, cycle, k);
        if next >= end {
            return (start, end);
        }
        if next > now {
            return (start, next);
        }
        start = next;
    }
    unreachable!("the boundaries grow until they pass `end`")
}

/// The span whose cycles count from `anchor` and end at `end`, extended by one cycle: the new
/// end, and the anchor its cycles count from after it. When `end` is a boundary that is the
/// next boundary and the anchor stays; otherwise (a prorated span) one cycle from `end`, whose
/// cycles then count from `end`, so the added cycle is one whole quota cycle.
pub fn extend_by_cycle(anchor: i64, end: i64, cycle: &str) -> (i64, i64) {
    for k in 1u32.. {
        let b = add_cycles(anchor, cycle, k);
        if b == end {
            return (add_cycles(anchor, cycle, k + 1), anchor);
        }
        if b > end {
            break;
        }
    }
    (period_end(end, cycle), end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(y: i32, m: u32, d: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn months_are_calendar_months() {
        assert_eq!(period_end(at(2026, 1, 31), "monthly"), at(2026, 2, 28));
        assert_eq!(period_end(at(2026, 1, 31), "yearly"), at(2027, 1, 31));
    }

    #[test]
    fn renewals_count_from_the_anchor_and_do_not_drift() {
        let jan31 = at(2026, 1, 31);
        let (once, anchor) = extend_by_cycle(jan31, period_end(jan31, "monthly"), "monthly");
        assert_eq!((once, anchor), (at(2026, 3, 31), jan31));
        assert_eq!(
            extend_by_cycle(jan31, once, "monthly"),
            (at(2026, 4, 30), jan31)
        );
        // A prorated span (not on a boundary) is extended by one cycle from its end, whose
        // cycles then count from that end: one whole quota cycle is added, not a cycle and a bit.
        assert_eq!(
            extend_by_cycle(jan31, at(2026, 2, 10), "monthly"),
            (at(2026, 3, 10), at(2026, 2, 10))
        );
        assert_eq!(
            cycle_at(at(2026, 2, 10), at(2026, 3, 10), "monthly", at(2026, 2, 5)),
            (at(2026, 2, 5), at(2026, 2, 10))
        );
    }

    #[test]
    fn the_cycle_holding_now_ends_at_the_next_boundary_or_the_span() {
        let jan31 = at(2026, 1, 31);
        let end = at(2026, 4, 30);
        assert_eq!(
            cycle_at(jan31, end, "monthly", at(2026, 2, 1)),
            (jan31, at(2026, 2, 28))
        );
        assert_eq!(
            cycle_at(jan31, end, "monthly", at(2026, 3, 5)),
            (at(2026, 2, 28), at(2026, 3, 31))
        );
        assert_eq!(
            cycle_at(jan31, end, "monthly", at(2026, 4, 29)),
            (at(2026, 3, 31), end)
        );
        assert_eq!(
            cycle_at(jan31, end, "monthly", at(2027, 1, 1)),
            (at(2026, 3, 31), end)
        );
        // A span shorter than a cycle is one cycle.
        assert_eq!(
            cycle_at(jan31, at(2026, 2, 10), "monthly", jan31),
            (jan31, at(2026, 2, 10))
        );
    }
}
