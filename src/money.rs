//! Money as integers, never floating point on the way to a ledger.
//!
//! - A request's cost is exact in **pico-USD** (10⁻¹² USD): prices are USD per
//!   million tokens with at most six decimals, so a price per token is a whole
//!   number of pico-USD and a cost is tokens × price, summed in `u128`.
//! - Ledger counters hold **nano-USD** (10⁻⁹ USD) in a signed 64-bit Redis
//!   integer, up to about USD 9.2 billion per window; the sub-nano remainder of
//!   every charge is carried in Redis beside each counter (`limits::ledger`), so a
//!   counter's total is exact to the nano-USD however many requests it sums.
//! - Floats appear only where a value leaves for a person or Prometheus (which
//!   stores float64): [`PicoUsd::usd_f64`].

use std::fmt;

/// Pico-USD in one nano-USD.
pub const PICO_PER_NANO: u128 = 1_000;
/// Pico-USD in one USD.
pub const PICO_PER_USD: u128 = 1_000_000_000_000;
/// Nano-USD in one USD.
pub const NANO_PER_USD: u64 = 1_000_000_000;

/// An exact amount of money in pico-USD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PicoUsd(pub u128);

impl PicoUsd {
    pub const ZERO: PicoUsd = PicoUsd(0);

    /// `tokens` at `price` pico-USD per token (saturating: no real usage comes near).
    pub fn of_tokens(tokens: u64, price: PicoPerToken) -> Self {
        PicoUsd(u128::from(tokens).saturating_mul(price.0))
    }

    /// Whole nano-USD and the pico-USD remainder (0..=999), as the ledger stores them.
    pub fn split_nano(self) -> (u128, u16) {
        (self.0 / PICO_PER_NANO, (self.0 % PICO_PER_NANO) as u16)
    }

    /// Rounded up to whole nano-USD: a reservation is an upper bound.
    pub fn ceil_nano(self) -> u128 {
        self.0.div_ceil(PICO_PER_NANO)
    }

    /// For Prometheus and people only: USD as a float (exact to the nano-USD below
    /// about USD 4 million, float64's 53 bits).
    pub fn usd_f64(self) -> f64 {
        let whole = (self.0 / PICO_PER_USD) as f64;
        let fraction = (self.0 % PICO_PER_USD) as f64 / PICO_PER_USD as f64;
        whole + fraction
    }
}

impl std::ops::Add for PicoUsd {
    type Output = PicoUsd;
    fn add(self, other: PicoUsd) -> PicoUsd {
        PicoUsd(self.0.saturating_add(other.0))
    }
}

impl std::ops::AddAssign for PicoUsd {
    fn add_assign(&mut self, other: PicoUsd) {
        *self = *self + other;
    }
}

impl std::iter::Sum for PicoUsd {
    fn sum<I: Iterator<Item = PicoUsd>>(iter: I) -> PicoUsd {
        iter.fold(PicoUsd::ZERO, |a, b| a + b)
    }
}

impl fmt::Display for PicoUsd {
    /// USD with twelve decimals, trailing zeros trimmed (`0.0000012`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{}.{:012}", self.0 / PICO_PER_USD, self.0 % PICO_PER_USD);
        f.write_str(text.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// A price in pico-USD per token (USD per million tokens × 10⁶).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PicoPerToken(pub u128);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("{0:?} is not a decimal amount of USD (digits, at most one '.', no sign or exponent)")]
    NotDecimal(String),
    #[error("{0:?} has more than {1} decimals")]
    TooPrecise(String, usize),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a non-negative decimal with at most `decimals` decimals into an integer
/// scaled by 10^`decimals` (`"0.075"`, 6 → 75_000), exactly.
pub fn parse_scaled(text: &str, decimals: usize) -> Result<u128, MoneyError> {
    let not_decimal = || MoneyError::NotDecimal(text.to_string());
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || (text.contains('.') && fraction.is_empty()) {
        return Err(not_decimal());
    }
    if !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(not_decimal());
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > decimals {
        return Err(MoneyError::TooPrecise(text.to_string(), decimals));
    }
    let too_large = || MoneyError::TooLarge(text.to_string());
    if whole.len() > 20 {
        return Err(too_large());
    }
    let whole: u128 = whole.parse().map_err(|_| not_decimal())?;
    let fraction: u128 =
        if fraction.is_empty() { 0 } else { format!("{fraction:0<decimals$}").parse().map_err(|_| not_decimal())? };
    whole.checked_mul(10u128.pow(decimals as u32)).and_then(|w| w.checked_add(fraction)).ok_or_else(too_large)
}

/// A price as the price table writes it, USD per million tokens (`"2.5"`,
/// `0.075`), as pico-USD per token. A YAML number is read through its shortest
/// decimal form, which is the text a person wrote.
pub fn price_per_million(text: &str) -> Result<PicoPerToken, MoneyError> {
    parse_scaled(text, 6).map(PicoPerToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(price_per_million("2.5"), Ok(PicoPerToken(2_500_000)));
        assert_eq!(price_per_million("0.075"), Ok(PicoPerToken(75_000)));
        assert_eq!(price_per_million("0.000001"), Ok(PicoPerToken(1)));
        assert_eq!(price_per_million("10"), Ok(PicoPerToken(10_000_000)));
        assert_eq!(price_per_million("1.2500000"), Ok(PicoPerToken(1_250_000)));
        assert!(matches!(price_per_million("0.0000001"), Err(MoneyError::TooPrecise(..))));
        for bad in ["", ".5", "1.", "-1", "1e3", "abc", "1,5", "NaN", "inf"] {
            assert!(matches!(price_per_million(bad), Err(MoneyError::NotDecimal(_))), "{bad}");
        }
        assert!(matches!(price_per_million("999999999999999999999"), Err(MoneyError::TooLarge(_))));
    }

    #[test]
    fn costs_split_into_nano_and_remainder_and_display_exactly() {
        // 24 embedding tokens at USD 0.02 per million: 480 nano-USD, not zero.
        let cost = PicoUsd::of_tokens(24, price_per_million("0.02").unwrap());
        assert_eq!(cost, PicoUsd(480_000));
        assert_eq!(cost.split_nano(), (480, 0));
        let odd = PicoUsd(1_234_567);
        assert_eq!(odd.split_nano(), (1_234, 567));
        assert_eq!(odd.ceil_nano(), 1_235);
        assert_eq!(odd.to_string(), "0.000001234567");
        assert_eq!(PicoUsd(PICO_PER_USD * 3).to_string(), "3");
        assert_eq!(PicoUsd(PICO_PER_USD / 2).usd_f64(), 0.5);
        assert_eq!([PicoUsd(1), PicoUsd(2)].into_iter().sum::<PicoUsd>(), PicoUsd(3));
    }
}
