//! Times at the API boundary: stored as Unix milliseconds, shown as naive UTC ISO-8601 as the
//! original FastAPI services did (`2026-11-25T13:20:00.123456`).

use chrono::{DateTime, NaiveDateTime};

pub fn iso(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        .unwrap_or_default()
}

pub fn iso_opt(ms: Option<i64>) -> Option<String> {
    ms.map(iso)
}

/// Parses RFC 3339, or a zone-less date-time (read as UTC) such as what an
/// `<input type=datetime-local>` sends: `2026-12-31T23:59`.
pub fn parse(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(n.and_utc().timestamp_millis());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_what_browsers_send() {
        let a = super::parse("2026-12-31T23:59").unwrap();
        assert_eq!(super::parse("2026-12-31T23:59:00Z"), Some(a));
        assert_eq!(super::parse("2027-01-01T07:59:00+08:00"), Some(a));
        assert_eq!(super::iso(a), "2026-12-31T23:59:00.000000");
        assert_eq!(super::parse("next tuesday"), None);
    }
}
