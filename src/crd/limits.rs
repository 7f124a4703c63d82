//! Budgets (`spec.limits[]`) on every level: an accumulator of spend in USD with
//! a maximum, per window. Declared here; charged and enforced by the gateway
//! against a shared ledger (docs/limits.md).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Limits per object: at most this many.
pub const MAX_LIMITS: usize = 16;

/// One budget.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limit {
    /// Unique on its object: 1 to 63 lowercase letters, digits and '-', e.g. `monthly`.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("limit names must be 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit, e.g. monthly"))]
    pub name: String,
    /// The maximum spend in USD, as a decimal string with at most 6 decimals, e.g. `"250"` or `"0.50"`.
    #[schemars(length(max = 20))]
    #[x_kube(
        validation = Rule::new("self.matches('^[0-9]{1,12}([.][0-9]{1,6})?$')")
            .message("max must be an amount in USD written like 250 or 12.50 (up to 12 digits and 6 decimals)"),
        validation = Rule::new("!self.matches('^[0.]+$')").message("max must be more than 0")
    )]
    pub max: String,
    /// The window spend accumulates over, in UTC: `day`, `week` (from Monday), `month`,
    /// or `none` (never resets by itself).
    pub period: LimitPeriod,
    /// `block` refuses requests once the maximum is reached; `allow` lets them
    /// through and records the overrun.
    #[serde(rename = "type")]
    pub kind: LimitType,
    /// The fraction of `max` at which the limit is at risk (`thresholdReached`), from
    /// 0.5 to 0.99. Absent: 0.8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.5 && self <= 0.99")
        .message("threshold must be a fraction from 0.5 to 0.99, e.g. 0.8"))]
    pub threshold: Option<f64>,
    /// Any new value resets the limit's spend once (like `keyRotation.requestedAt`),
    /// e.g. the time of the request committed to Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 128").message("resetRequestedAt must be at most 128 characters"))]
    pub reset_requested_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitPeriod {
    Day,
    Week,
    #[default]
    Month,
    None,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitType {
    #[default]
    Block,
    Allow,
}

/// What the operator publishes about an object's limits (written at most every
/// 30 s, and only when it changed), from the ledger the gateways charge.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsStatus {
    /// The worst state of the limits below: `ok`, `thresholdReached` or `exceeded`.
    pub state: LimitState,
    /// The limit nearest its maximum, e.g. `212.5/250 USD (monthly)`, for `kubectl get`.
    pub summary: String,
    pub items: Vec<LimitStatusItem>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitStatusItem {
    /// The limit's id, its level included, as the gateway names it when it refuses.
    pub id: String,
    pub name: String,
    /// The use case it belongs to (Application limits of one use case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_case: Option<String>,
    #[serde(rename = "type")]
    pub kind: LimitType,
    /// Spend of the current window, USD.
    pub spend_usd: String,
    pub max_usd: String,
    pub state: LimitState,
    /// The current window: `2026-12`, `2026-12-07`, the week's Monday, or `all`.
    pub window: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LimitState {
    #[default]
    Ok,
    ThresholdReached,
    Exceeded,
}

impl Limit {
    /// The threshold fraction in effect.
    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or(0.8)
    }

    /// `max` in nano-USD (the ledger's unit, see `crate::money`); `None` when it does
    /// not parse (the schema makes that impossible for stored objects). A maximum
    /// beyond what a counter holds (about USD 9.2 billion) is that bound.
    pub fn max_nano_usd(&self) -> Option<u64> {
        micro_usd(&self.max).map(|micro| micro.saturating_mul(1_000).min(i64::MAX as u64))
    }
}

/// A decimal USD string as whole micro-USD, without floating point.
pub fn micro_usd(text: &str) -> Option<u64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (text, ""),
    };
    if whole.is_empty() || whole.len() > 12 || fraction.len() > 6 {
        return None;
    }
    if !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let fraction: u64 = format!("{fraction:0<6}").parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(fraction)
}

/// Nano-USD (the ledger's unit) as a decimal USD string, trailing zeros trimmed.
pub fn usd_text(nano: u64) -> String {
    let text = format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly_without_floats() {
        assert_eq!(micro_usd("250"), Some(250_000_000));
        assert_eq!(micro_usd("12.5"), Some(12_500_000));
        assert_eq!(micro_usd("0.000001"), Some(1));
        assert_eq!(micro_usd("999999999999.999999"), Some(999_999_999_999_999_999));
        for bad in ["", ".5", "1.", "1.0000001", "-1", "1e3", "abc", "1,5"] {
            assert_eq!(micro_usd(bad), None, "{bad}");
        }
        assert_eq!(usd_text(12_500_000_000), "12.5");
        assert_eq!(usd_text(250_000_000_000), "250");
        assert_eq!(usd_text(1), "0.000000001");
        assert_eq!(usd_text(0), "0");
    }
}
