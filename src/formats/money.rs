//! Money: `rust_decimal` at the API boundary, integer fen (分) everywhere else. No float ever
//! holds an amount: 0.1 + 0.2 is not 0.3 in binary, and WeChat Pay counts in integer fen.

use rust_decimal::Decimal;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

/// An amount of money in fen (分, 1/100 yuan): what a plan costs, what an order charges, what a
/// refund gives back. Made by parsing a decimal at the edge ([`Fen::parse`], [`Fen::from_json`],
/// [`Fen::from_decimal`]) and shown as a decimal again ([`Fen::to_decimal`], `Display`: "99.00");
/// in between it is an integer, so no amount is ever rounded by a float.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fen(i64);

impl Fen {
    pub const ZERO: Fen = Fen(0);

    /// An integer count of fen (a stored column, a provider's `total` in fen).
    pub const fn new(fen: i64) -> Fen {
        Fen(fen)
    }

    /// The count of fen, for arithmetic that is not addition (prorating) and for storage.
    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// "99.00" -> 9900 fen. At most two decimals, not negative.
    pub fn parse(text: &str) -> Result<Fen, String> {
        parse_fen(text).map(Fen)
    }

    /// A JSON amount, a decimal string or a number (see [`json_to_fen`]).
    pub fn from_json(name: &str, v: &serde_json::Value) -> Result<Fen, String> {
        json_to_fen(name, v).map(Fen)
    }

    /// A decimal in yuan with at most two decimals, not negative.
    pub fn from_decimal(d: Decimal) -> Option<Fen> {
        decimal_to_fen(d).map(Fen)
    }

    pub fn to_decimal(self) -> Decimal {
        fen_to_decimal(self.0)
    }
}

impl From<i64> for Fen {
    /// A stored column (`#[sqlx(try_from = "i64")]`): the store holds what the gate wrote.
    fn from(fen: i64) -> Fen {
        Fen(fen)
    }
}

impl serde::Serialize for Fen {
    /// As the integer count of fen (audit details, `price_fen` fields).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl fmt::Display for Fen {
    /// In yuan with two decimals: "99.00".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fen_to_string(self.0))
    }
}

impl Add for Fen {
    type Output = Fen;
    fn add(self, rhs: Fen) -> Fen {
        Fen(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Fen {
    fn add_assign(&mut self, rhs: Fen) {
        *self = *self + rhs;
    }
}

impl Sub for Fen {
    type Output = Fen;
    fn sub(self, rhs: Fen) -> Fen {
        Fen(self.0.saturating_sub(rhs.0))
    }
}

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
