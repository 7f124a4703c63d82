//! Month-to-date usage on every object (`status.usage`), limits or not: what the
//! gateways charged to the object's level this month and last month, in UTC
//! (docs/limits.md, "Spend at every level"). Published by the operator from the
//! ledger; never written by people.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What one level used this month and last month.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageStatus {
    /// The current month, in UTC, up to the operator's last reading (at most 30 s old by default).
    pub this_month: MonthUsage,
    /// The month before: final once its last charges have landed.
    pub last_month: MonthUsage,
    /// Applications only: each declared use case's usage (already included in the Application's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub use_cases: Vec<UseCaseUsage>,
}

/// A level's usage in one month.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonthUsage {
    /// `YYYY-MM`, in UTC.
    pub month: String,
    /// Spend in USD, exact to the nano-USD, as a decimal string with trailing zeros trimmed (`"12.5"`, `"0"`).
    #[serde(rename = "spendUSD")]
    pub spend_usd: String,
    /// Tokens of every type.
    pub tokens: i64,
    /// Metered requests.
    pub requests: i64,
    /// Requests whose cost is unknown (an unpriced model): not in `spendUSD`. Absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unpriced_requests: i64,
}

/// One declared use case's usage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UseCaseUsage {
    pub name: String,
    pub this_month: MonthUsage,
    pub last_month: MonthUsage,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_names_are_the_documented_ones() {
        let month = MonthUsage {
            month: "2026-12".into(),
            spend_usd: "1.5".into(),
            tokens: 3,
            requests: 2,
            unpriced_requests: 0,
        };
        let usage = UsageStatus { this_month: month.clone(), last_month: month, use_cases: vec![] };
        let json = serde_json::to_value(&usage).unwrap();
        assert_eq!(
            json["thisMonth"],
            serde_json::json!({"month": "2026-12", "spendUSD": "1.5", "tokens": 3, "requests": 2}),
            "unpricedRequests is omitted when 0"
        );
        assert!(json.get("useCases").is_none());
        let back: UsageStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, usage);
    }
}
