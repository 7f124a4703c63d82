//! Windows in UTC: which day, week (from Monday) or month a moment is in, its
//! ledger name, and how long its counter must live. Pure.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use crate::crd::LimitPeriod;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Part of the ledger key: `d2026-12-07`, `w2026-12-07` (its Monday), `m2026-12`, `all`.
    pub name: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl Window {
    /// Seconds the counter must live from `now`: to the end of the window plus a
    /// day, so a late charge or a status read just after the end still finds it.
    /// `None`: never expires.
    pub fn ttl_seconds(&self, now: DateTime<Utc>) -> Option<u64> {
        let end = self.end?;
        Some(((end - now).num_seconds().max(0) + 86_400) as u64)
    }
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The window of `period` that `now` falls in.
pub fn window(period: LimitPeriod, now: DateTime<Utc>) -> Window {
    let today = now.date_naive();
    match period {
        LimitPeriod::Day => {
            let start = midnight(today);
            Window { name: format!("d{today}"), start: Some(start), end: Some(start + Duration::days(1)) }
        }
        LimitPeriod::Week => {
            let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
            let start = midnight(monday);
            Window { name: format!("w{monday}"), start: Some(start), end: Some(start + Duration::days(7)) }
        }
        LimitPeriod::Month => {
            let first = today.with_day(1).unwrap_or(today);
            let next = match first.month() {
                12 => NaiveDate::from_ymd_opt(first.year() + 1, 1, 1),
                m => NaiveDate::from_ymd_opt(first.year(), m + 1, 1),
            }
            .unwrap_or(first);
            Window {
                name: format!("m{}", first.format("%Y-%m")),
                start: Some(midnight(first)),
                end: Some(midnight(next)),
            }
        }
        LimitPeriod::None => Window { name: "all".into(), start: None, end: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn months_roll_over_at_midnight_utc_including_december() {
        let w = window(LimitPeriod::Month, at("2026-12-31T23:59:59Z"));
        assert_eq!(w.name, "m2026-12");
        assert_eq!(w.end, Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(window(LimitPeriod::Month, at("2027-01-01T00:00:00Z")).name, "m2027-01");
        // A time zone offset is only a way of writing the instant.
        assert_eq!(window(LimitPeriod::Month, at("2027-01-01T01:00:00+02:00")).name, "m2026-12");
    }

    #[test]
    fn weeks_start_on_monday_and_days_at_midnight() {
        // 2026-12-07 is a Monday.
        assert_eq!(window(LimitPeriod::Week, at("2026-12-13T23:00:00Z")).name, "w2026-12-07");
        assert_eq!(window(LimitPeriod::Week, at("2026-12-14T00:00:00Z")).name, "w2026-12-14");
        let day = window(LimitPeriod::Day, at("2026-12-07T12:00:00Z"));
        assert_eq!(day.name, "d2026-12-07");
        assert_eq!(day.ttl_seconds(at("2026-12-07T12:00:00Z")), Some(12 * 3600 + 86_400));
        let none = window(LimitPeriod::None, at("2026-12-07T12:00:00Z"));
        assert_eq!((none.name.as_str(), none.ttl_seconds(at("2026-12-07T12:00:00Z"))), ("all", None));
    }
}
