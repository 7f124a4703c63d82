//! When an Application's key is due to be replaced, and how long the old one lives on.
//!
//! A rotation is asked for in three ways: a new `spec.keyRotation.requestedAt`
//! (GitOps), a new `payi.io/rotate-key` annotation (kubectl), or the schedule in
//! `spec.keyRotation.every`. Each request has an id; status records the last one
//! carried out, so every request rotates exactly once however often it is seen.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::crd::{Application, RotationStatus};

/// `kubectl annotate application NAME payi.io/rotate-key=$(date +%s) --overwrite`
pub const ROTATE_ANNOTATION: &str = "payi.io/rotate-key";
/// On the Secret: the id of the rotation it was last written for, so a rotation
/// interrupted between the Secret write and the status write is recognised.
pub const ROTATION_ID_ANNOTATION: &str = "payi.io/rotation-id";
/// On the Secret: when `PAYI_API_KEY_PREVIOUS` is removed.
pub const PREVIOUS_EXPIRES_ANNOTATION: &str = "payi.io/previous-key-expires-at";
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A rotation that is asked for and not yet carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Stable for one request: `request:<value>`, `annotation:<value>` or `schedule:<time>`.
    pub id: String,
    /// In words, for Events.
    pub why: String,
}

/// The grace period for the previous key.
pub fn grace(app: &Application) -> Duration {
    let spec = app.spec.key_rotation.as_ref().and_then(|r| r.grace_period.as_deref());
    spec.and_then(|s| humantime::parse_duration(s).ok()).unwrap_or(DEFAULT_GRACE)
}

/// The scheduled interval, if any.
pub fn every(app: &Application) -> Option<Duration> {
    let spec = app.spec.key_rotation.as_ref().and_then(|r| r.every.as_deref())?;
    humantime::parse_duration(spec).ok().filter(|d| !d.is_zero())
}

fn requested(app: &Application) -> Option<String> {
    app.spec.key_rotation.as_ref().and_then(|r| r.requested_at.clone()).filter(|v| !v.is_empty())
}

fn annotated(app: &Application) -> Option<String> {
    app.annotations().get(ROTATE_ANNOTATION).cloned().filter(|v| !v.is_empty())
}

/// The first rotation asked for and not yet carried out, if any.
pub fn pending(app: &Application, rotation: &RotationStatus, now: &Time) -> Option<Trigger> {
    if let Some(value) = requested(app).filter(|v| rotation.handled_request.as_ref() != Some(v)) {
        return Some(Trigger {
            why: format!("spec.keyRotation.requestedAt changed to {value:?}"),
            id: format!("request:{value}"),
        });
    }
    if let Some(value) = annotated(app).filter(|v| rotation.handled_annotation.as_ref() != Some(v)) {
        return Some(Trigger {
            why: format!("annotation {ROTATE_ANNOTATION}={value:?}"),
            id: format!("annotation:{value}"),
        });
    }
    let due = rotation.next_rotation_at.as_ref().filter(|next| next.0 <= now.0)?;
    Some(Trigger { why: format!("scheduled rotation due at {}", due.0), id: format!("schedule:{}", due.0) })
}

/// Records every current request as carried out (after a rotation, or after a
/// first key, which no earlier request can have meant to replace).
pub fn mark_handled(app: &Application, rotation: &mut RotationStatus) {
    rotation.handled_request = requested(app);
    rotation.handled_annotation = annotated(app);
}

/// `from + interval`, saturating instead of overflowing on absurd values.
pub fn after(from: &Time, interval: Duration) -> Time {
    let span = SignedDuration::try_from(interval).unwrap_or(SignedDuration::MAX);
    Time(from.0.checked_add(span).unwrap_or(Timestamp::MAX))
}

/// How long until `at`, or zero when it has passed.
pub fn until(now: &Time, at: &Time) -> Duration {
    Duration::try_from(at.0.duration_since(now.0)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ApplicationSpec, KeyRotation};

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn app(requested_at: Option<&str>, annotation: Option<&str>) -> Application {
        let rotation = KeyRotation { requested_at: requested_at.map(str::to_string), ..Default::default() };
        let mut a = Application::new("a", ApplicationSpec { key_rotation: Some(rotation), ..Default::default() });
        if let Some(v) = annotation {
            a.annotations_mut().insert(ROTATE_ANNOTATION.into(), v.into());
        }
        a
    }

    #[test]
    fn each_request_is_pending_until_marked_handled() {
        let a = app(Some("2026-11-29"), Some("1"));
        let mut rotation = RotationStatus::default();
        assert_eq!(pending(&a, &rotation, &at(0)).unwrap().id, "request:2026-11-29");
        rotation.handled_request = Some("2026-11-29".into());
        assert_eq!(pending(&a, &rotation, &at(0)).unwrap().id, "annotation:1");
        mark_handled(&a, &mut rotation);
        assert_eq!(pending(&a, &rotation, &at(0)), None);
    }

    #[test]
    fn the_schedule_is_due_once_its_time_has_come() {
        let a = app(None, None);
        let rotation = RotationStatus { next_rotation_at: Some(at(100)), ..Default::default() };
        assert_eq!(pending(&a, &rotation, &at(99)), None);
        assert_eq!(pending(&a, &rotation, &at(100)).unwrap().id, format!("schedule:{}", at(100).0));
    }

    #[test]
    fn durations_parse_and_default() {
        let mut a = app(None, None);
        assert_eq!(grace(&a), DEFAULT_GRACE);
        assert_eq!(every(&a), None);
        a.spec.key_rotation =
            Some(KeyRotation { every: Some("720h".into()), grace_period: Some("0s".into()), ..Default::default() });
        assert_eq!(every(&a), Some(Duration::from_secs(720 * 3600)));
        assert_eq!(grace(&a), Duration::ZERO);
        assert_eq!(after(&at(10), Duration::from_secs(5)), at(15));
        assert_eq!(until(&at(10), &at(15)), Duration::from_secs(5));
        assert_eq!(until(&at(20), &at(15)), Duration::ZERO);
    }
}
