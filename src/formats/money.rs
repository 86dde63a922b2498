//! Money: `rust_decimal` at the API boundary, integer fen (分) everywhere else. No float ever
//! holds an amount: 0.1 + 0.2 is not 0.3 in binary, and WeChat Pay counts in integer fen.

use rust_decimal::Decimal;
use std::str::FromStr;

/// "99.00" -> 9900. At most two decimals, not negative.
pub fn parse_fen(text: &str) -> Result<i64, String> {
    let d = Decimal::from_str(text.trim())
        .map_err(|_| format!("`{text}` is not a decimal amount such as \"99.00\""))?;
    decimal_to_fen(d)
        .ok_or_else(|| format!("`{text}` must be a non-negative amount with at most two decimals"))
}

/// An amount sent as JSON, a decimal string ("99.00") or a number (99, 99.9), in fen. The
/// number's text is parsed as a decimal, so no float rounding is involved.
pub fn json_to_fen(name: &str, v: &serde_json::Value) -> Result<i64, String> {
    let text = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(format!("{name} {other} is not an amount")),
    };
    parse_fen(&text)
}

pub fn decimal_to_fen(d: Decimal) -> Option<i64> {
    if d.is_sign_negative() && !d.is_zero() {
        return None;
    }
    let fen = d * Decimal::from(100);
    if fen.fract() != Decimal::ZERO {
        return None;
    }
    i64::try_from(fen.trunc()).ok()
}

/// 9900 -> "99.00".
pub fn fen_to_string(fen: i64) -> String {
    Decimal::new(fen, 2).to_string()
}

pub fn fen_to_decimal(fen: i64) -> Decimal {
    Decimal::new(fen, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        assert_eq!(parse_fen("99.00"), Ok(9900));
        assert_eq!(parse_fen("0.1"), Ok(10));
        assert_eq!(parse_fen("999"), Ok(99900));
        assert_eq!(fen_to_string(9900), "99.00");
        assert_eq!(fen_to_string(0), "0.00");
        assert!(parse_fen("0.001").is_err());
        assert!(parse_fen("-1").is_err());
        assert!(parse_fen("abc").is_err());
    }
}
