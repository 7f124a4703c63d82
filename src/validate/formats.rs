//! The string formats of the OpenAPI schemas that matter for payi manifests.
//! Formats the API server knows but these CRDs do not use are not checked.

/// `Some(reason)` when `value` is not of `format`; `None` when it is, or the format is not checked.
pub fn check(format: &str, value: &str) -> Option<&'static str> {
    let ok = match format {
        "date-time" => is_date_time(value),
        "date" => is_date(value),
        "uuid" => is_uuid(value),
        "ipv4" => value.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => value.parse::<std::net::Ipv6Addr>().is_ok(),
        "hostname" => is_hostname(value),
        _ => return None,
    };
    (!ok).then_some("invalid")
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| digits(p))
}

/// RFC 3339: `2006-01-02T15:04:05Z` with optional fraction and offset.
fn is_date_time(s: &str) -> bool {
    let Some((date, time)) = s.split_once(['T', 't']) else { return false };
    if !is_date(date) || time.len() < 8 {
        return false;
    }
    let (clock, zone) = time.split_at(8);
    let clock_ok = clock.as_bytes()[2] == b':'
        && clock.as_bytes()[5] == b':'
        && [&clock[0..2], &clock[3..5], &clock[6..8]].iter().all(|p| digits(p));
    let zone = match zone.strip_prefix('.') {
        Some(rest) => rest.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => zone,
    };
    let zone_ok = zone == "Z"
        || zone == "z"
        || (zone.len() == 6 && (zone.starts_with('+') || zone.starts_with('-')) && &zone[3..4] == ":");
    clock_ok && zone_ok
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 255
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn formats() {
        assert_eq!(check("date-time", "2026-11-29T18:00:00Z"), None);
        assert_eq!(check("date-time", "2026-11-29T18:00:00.123+01:00"), None);
        assert!(check("date-time", "yesterday").is_some());
        assert!(check("uuid", "not-a-uuid").is_some());
        assert_eq!(check("int32", "anything"), None);
    }
}
