//! The name and value formats Kubernetes itself enforces, as regular expressions
//! for CEL `matches()` in the CRD schemas.
//!
//! The API server refuses a bad input at apply time only when the schema knows the
//! format; otherwise the operator finds out later, when Kubernetes refuses the Role,
//! RoleBinding or Secret built from it. So every value the operator copies into such
//! an object is checked here with the same rules Kubernetes applies to it.
//!
//! The patterns avoid backslashes (`[.]` instead of `\.`) so they read the same in
//! Rust, in the CEL string literal and in the generated YAML.

/// A DNS-1123 label, e.g. a namespace name (length checked separately: at most 63).
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A DNS-1123 subdomain, e.g. a Secret or ServiceAccount name (at most 253, checked separately).
pub const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A qualified name, the format of label and annotation keys: an optional DNS
/// subdomain prefix and `/`, then a name of at most 63 characters. The prefix
/// length is checked by [`QUALIFIED_NAME_PREFIX_LENGTH`].
pub const QUALIFIED_NAME: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// The prefix of a qualified name is at most 253 characters.
pub const QUALIFIED_NAME_PREFIX_LENGTH: &str = "^([^/]{1,253}/)?[^/]*$";

/// A label value: empty, or at most 63 characters starting and ending alphanumeric.
pub const LABEL_VALUE: &str = "^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";

/// A duration the controller reads exactly as the API server's CEL `duration()`
/// does: whole hours, minutes and seconds, in that order. CEL also accepts
/// fractions (`1.5h`) and other units, which the controller would read differently
/// or not at all. Six digits per part keep the sum far from CEL's overflow.
pub const DURATION: &str = "^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$";

/// CEL: `var` is a qualified name (label or annotation key).
pub fn qualified_name(var: &str) -> String {
    format!("{var}.matches('{QUALIFIED_NAME}') && {var}.matches('{QUALIFIED_NAME_PREFIX_LENGTH}')")
}

/// CEL: `var` is a label value.
pub fn label_value(var: &str) -> String {
    format!("{var}.matches('{LABEL_VALUE}')")
}

/// CEL: `var` is a DNS-1123 label of at most 63 characters.
pub fn dns_label(var: &str) -> String {
    format!("size({var}) <= 63 && {var}.matches('{DNS_LABEL}')")
}

/// CEL: `var` is a DNS-1123 subdomain of at most `max` characters.
pub fn dns_subdomain(var: &str, max: usize) -> String {
    format!("size({var}) <= {max} && {var}.matches('{DNS_SUBDOMAIN}')")
}

/// CEL: `self` is a duration in [`DURATION`] form within `[min, max]` (CEL duration literals).
pub fn duration_between(min: Option<&str>, max: Option<&str>) -> String {
    let mut rule = format!("size(self) > 0 && self.matches('{DURATION}')");
    if let Some(min) = min {
        rule.push_str(&format!(" && duration(self) >= duration('{min}')"));
    }
    if let Some(max) = max {
        rule.push_str(&format!(" && duration(self) <= duration('{max}')"));
    }
    rule
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use regex::Regex;

    use super::*;

    fn accepts(pattern: &str, value: &str) -> bool {
        Regex::new(pattern).unwrap().is_match(value)
    }

    /// What the schema's duration rule checks besides the range.
    fn duration_form(value: &str) -> bool {
        !value.is_empty() && accepts(DURATION, value)
    }

    fn qualified(value: &str) -> bool {
        accepts(QUALIFIED_NAME, value) && accepts(QUALIFIED_NAME_PREFIX_LENGTH, value)
    }

    #[test]
    fn dns_names_follow_kubernetes() {
        for good in ["a", "team-a", "0", "a1-b2"] {
            assert!(accepts(DNS_LABEL, good), "{good}");
            assert!(accepts(DNS_SUBDOMAIN, good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "system:masters"] {
            assert!(!accepts(DNS_LABEL, bad), "{bad}");
        }
        assert!(accepts(DNS_SUBDOMAIN, "ci.bot-1.example"));
        for bad in ["", "CI_Bot", "a..b", "a.-b", ".a", "a.", "a/b"] {
            assert!(!accepts(DNS_SUBDOMAIN, bad), "{bad}");
        }
    }

    #[test]
    fn qualified_names_follow_kubernetes() {
        let name63 = "a".repeat(63);
        let prefix253 = format!("{}.io", "a".repeat(250));
        for good in ["team", "app.kubernetes.io/part-of", "A_b.c-D", "x/y", name63.as_str(), &format!("{prefix253}/n")]
        {
            assert!(qualified(good), "{good}");
        }
        let name64 = "a".repeat(64);
        let prefix254 = format!("{}.io", "a".repeat(251));
        for bad in [
            "",
            "/a",
            "a/",
            "a/b/c",
            "-a",
            "a-",
            "Example.com/a",
            "a b",
            "ünï",
            name64.as_str(),
            &format!("{prefix254}/n"),
        ] {
            assert!(!qualified(bad), "{bad}");
        }
    }

    #[test]
    fn label_values_follow_kubernetes() {
        for good in ["", "web", "v1.2_3-x", &"a".repeat(63)] {
            assert!(accepts(LABEL_VALUE, good), "{good}");
        }
        for bad in ["-a", "a-", "a b", "a/b", &"a".repeat(64)] {
            assert!(!accepts(LABEL_VALUE, bad), "{bad}");
        }
    }

    /// Every duration the schema accepts must mean to the controller (humantime)
    /// what it means to the API server (CEL `duration()`, Go's `time.ParseDuration`).
    /// The expected values are Go's reading, written out by hand.
    #[test]
    fn accepted_durations_read_the_same_in_cel_and_in_the_controller() {
        let accepted = [
            ("0s", 0),
            ("1h", 3600),
            ("24h", 86_400),
            ("720h", 2_592_000),
            ("2160h", 7_776_000),
            ("90m", 5400),
            ("1h30m", 5400),
            ("1h0m0s", 3600),
            ("3s", 3),
            ("2m30s", 150),
            ("1h1m1s", 3661),
            ("999999h999999m999999s", 999_999 * 3600 + 999_999 * 60 + 999_999),
        ];
        for (text, seconds) in accepted {
            assert!(duration_form(text), "the schema refuses {text}");
            let read = humantime::parse_duration(text).unwrap_or_else(|e| panic!("humantime refuses {text}: {e}"));
            assert_eq!(read, Duration::from_secs(seconds), "{text}");
        }
        // CEL would read these (fractions, other units, any order) while the
        // controller reads them differently or not at all; `""` means nothing.
        for refused in
            ["", "1.5h", "0.001h", "1.001h", "1d", "1w", "500ms", "30m1h", "1h 30m", "-1h", "+1h", "1H", "1000000h"]
        {
            assert!(!duration_form(refused), "the schema accepts {refused}");
        }
    }
}
