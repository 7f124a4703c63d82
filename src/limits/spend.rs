//! Month-to-date usage of every level, limits or not: the ledger keeps, per
//! Organization, Group, Application and use case and per UTC month, the spend
//! (nano-USD with its pico remainder, like a limit's counter), the tokens, the
//! requests, and the requests whose cost is unknown (an unpriced model: "not
//! reported" is not zero). The gateway adds to them with every usage event; the
//! operator reads this month's and last month's onto each object's
//! `status.usage`. Pure: keys and windows only.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::window::window;
use crate::crd::LimitPeriod;

/// How long a month's usage counters live after their month ends: long enough
/// for "last month" and a year of history in Redis.
pub const KEEP_AFTER_MONTH_SECONDS: u64 = 400 * 86_400;

/// The ledger keys of one level's usage in one month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageKeys {
    /// nano-USD (with `<spend>:p` its pico-USD remainder).
    pub spend: String,
    pub tokens: String,
    pub requests: String,
    /// Requests counted whose cost is unknown (unpriced model, usage unreadable).
    pub unpriced: String,
}

impl UsageKeys {
    /// `level` is a level path as `super::rule` writes it (`group/engineering`);
    /// `month` is `YYYY-MM`.
    pub fn of(level: &str, month: &str) -> Self {
        Self {
            spend: format!("payi:nusd:spend:{level}:m{month}"),
            tokens: format!("payi:tokens:{level}:m{month}"),
            requests: format!("payi:requests:{level}:m{month}"),
            unpriced: format!("payi:unpriced:{level}:m{month}"),
        }
    }

    /// The four keys in a fixed order (spend, tokens, requests, unpriced), for one MGET.
    pub fn all(&self) -> [&str; 4] {
        [&self.spend, &self.tokens, &self.requests, &self.unpriced]
    }
}

/// `YYYY-MM` of the month `now` is in.
pub fn month(now: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", now.year(), now.month())
}

/// `YYYY-MM` of the month before the one `now` is in.
pub fn previous_month(now: DateTime<Utc>) -> String {
    let first = now.date_naive().with_day(1).unwrap_or(now.date_naive());
    let last_of_previous = first.pred_opt().unwrap_or(NaiveDate::MIN);
    format!("{:04}-{:02}", last_of_previous.year(), last_of_previous.month())
}

/// Seconds this month's usage counters must live from `now`.
pub fn ttl_seconds(now: DateTime<Utc>) -> u64 {
    window(LimitPeriod::Month, now).ttl_seconds(now).unwrap_or(0) + KEEP_AFTER_MONTH_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn keys_name_the_level_and_the_month() {
        let keys = UsageKeys::of("group/engineering", "2026-12");
        assert_eq!(keys.spend, "payi:nusd:spend:group/engineering:m2026-12");
        assert_eq!(keys.all()[1], "payi:tokens:group/engineering:m2026-12");
        assert_eq!(keys.all().len(), 4);
    }

    #[test]
    fn months_roll_over_years_in_utc() {
        assert_eq!(month(at("2026-12-31T23:59:59Z")), "2026-12");
        assert_eq!(month(at("2026-12-31T23:30:00-01:00")), "2027-01");
        assert_eq!(previous_month(at("2027-01-01T00:00:00Z")), "2026-12");
        assert_eq!(previous_month(at("2026-03-31T12:00:00Z")), "2026-02");
        let ttl = ttl_seconds(at("2026-12-31T23:00:00Z"));
        assert_eq!(ttl, 3_600 + 86_400 + KEEP_AFTER_MONTH_SECONDS);
    }
}
