//! An Application's keys, decided without a cluster: when a key is due to be
//! replaced, how long the old one lives on, and which keys the Secret holds after
//! this reconcile (keep, mint, rotate, finish an interrupted change, or drop an
//! expired previous key). Pure: the key source and the clock are passed in.
//!
//! A rotation is asked for in three ways: a new `spec.keyRotation.requestedAt`
//! (GitOps), a new `payi.io/rotate-key` annotation (kubectl), or the schedule in
//! `spec.keyRotation.every`. Each request has an id; status records the last one
//! carried out, so every request rotates exactly once however often it is seen.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::conditions::reason;
use crate::crd::{Application, ApplicationStatus, LiveKey, RotationStatus};
use crate::key::{self, ApiKey, MintError};
use crate::key_secret::{API_KEY_FIELD, Found, Keyring, PREVIOUS_KEY_FIELD};
use crate::note::Note;

/// `kubectl annotate application NAME payi.io/rotate-key=$(date +%s) --overwrite`
pub const ROTATE_ANNOTATION: &str = "payi.io/rotate-key";
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

// --- which keys the Secret holds ------------------------------------------

/// Why a new key is minted outside a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintCause {
    FirstIssue,
    SecretMissing,
    KeyMismatch,
}

/// What happens to the keys in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    Keep,
    Mint(MintCause),
    Rotate(Trigger),
    /// The Secret already holds the key of this change (written before a crash
    /// or a failed status write); status catches up, nothing is minted.
    Complete(Trigger),
}

impl Move {
    /// Whether this move replaces the key workloads use.
    pub fn changes_key(&self) -> bool {
        !matches!(self, Move::Keep)
    }
}

/// The id a repair writes on the Secret: it names the key it replaces, so a
/// repair is recognised as done only while status still records that key.
fn repair_id(replaced: &str) -> String {
    format!("repair:{replaced}")
}

/// Chooses the move. Pure and cheap: nothing is minted. `exists` says whether
/// there is an owned Secret at all.
pub fn choose(app: &Application, status: &ApplicationStatus, found: &Found, exists: bool, now: &Time) -> Move {
    let rotation = status.rotation.clone().unwrap_or_default();
    let trigger = pending(app, &rotation, now);
    match (&found.current, &status.key_fingerprint) {
        (None, None) if !exists => Move::Mint(MintCause::FirstIssue),
        (None, Some(_)) if !exists => Move::Mint(MintCause::SecretMissing),
        (None, _) => Move::Mint(MintCause::KeyMismatch),
        // Our own Secret but no record (status lost, or our first write not yet seen): adopt it.
        (Some(_), None) => Move::Keep,
        (Some(current), Some(recorded)) if &key::fingerprint(current) != recorded => {
            let repaired = repair_id(recorded);
            if found.rotation_id.as_ref() == Some(&repaired) {
                let why = format!("replaced key {recorded}, which was lost or altered");
                return Move::Complete(Trigger { id: repaired, why });
            }
            let written_for_trigger = trigger.as_ref().is_some_and(|t| found.rotation_id.as_ref() == Some(&t.id));
            let old_kept = found.previous.as_deref().map(key::fingerprint).as_ref() == Some(recorded);
            match trigger {
                Some(t) if written_for_trigger && old_kept => Move::Complete(t),
                _ => Move::Mint(MintCause::KeyMismatch),
            }
        }
        (Some(_), Some(_)) => trigger.map_or(Move::Keep, Move::Rotate),
    }
}

/// The key fields of an Application's status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyStatus {
    pub fingerprint: Option<String>,
    pub created_at: Option<Time>,
    pub keys: Vec<LiveKey>,
    pub rotation: Option<RotationStatus>,
}

impl KeyStatus {
    pub fn of(status: &ApplicationStatus) -> Self {
        Self {
            fingerprint: status.key_fingerprint.clone(),
            created_at: status.key_created_at.clone(),
            keys: status.keys.clone(),
            rotation: status.rotation.clone(),
        }
    }

    pub fn write_into(self, status: &mut ApplicationStatus) {
        status.key_fingerprint = self.fingerprint;
        status.key_created_at = self.created_at;
        status.keys = self.keys;
        status.rotation = self.rotation;
    }
}

/// Carries out `chosen`: the keys the Secret holds afterwards and the status that records them.
pub fn carry_out(
    app: &Application,
    chosen: &Move,
    found: &Found,
    status: &ApplicationStatus,
    now: &Time,
    mint: &mut dyn FnMut() -> Result<ApiKey, MintError>,
) -> Result<(Keyring, KeyStatus), MintError> {
    let grace = grace(app);
    let expiry = || (!grace.is_zero()).then(|| after(now, grace));
    let mut rotation = status.rotation.clone().unwrap_or_default();
    let current_since = status.key_created_at.clone();
    let fresh = |mint: &mut dyn FnMut() -> Result<ApiKey, MintError>| mint().map(|k| k.expose().to_string());
    let (ring, created) = match chosen {
        Move::Keep => {
            if status.key_fingerprint.is_none() {
                // Adopting our own Secret after status was lost: requests seen now
                // predate the record, like requests present at a first key.
                mark_handled(app, &mut rotation);
            }
            let ring = Keyring {
                current: found.current.clone().unwrap_or_default(),
                previous: trusted_previous(found, status, now),
                rotation_id: found.rotation_id.clone(),
            };
            (ring, current_since.clone().or_else(|| found.created.clone()).unwrap_or_else(|| now.clone()))
        }
        Move::Mint(_) => {
            mark_handled(app, &mut rotation);
            let rotation_id = status.key_fingerprint.as_deref().map(repair_id);
            (Keyring { current: fresh(mint)?, previous: None, rotation_id }, now.clone())
        }
        Move::Rotate(trigger) => {
            mark_handled(app, &mut rotation);
            rotation.last_rotated_at = Some(now.clone());
            let previous = expiry().map(|at| (found.current.clone().unwrap_or_default(), at));
            (Keyring { current: fresh(mint)?, previous, rotation_id: Some(trigger.id.clone()) }, now.clone())
        }
        Move::Complete(trigger) => {
            mark_handled(app, &mut rotation);
            let previous = if trigger.id.starts_with("repair:") {
                None
            } else {
                rotation.last_rotated_at = Some(now.clone());
                found.previous.clone().zip(found.previous_expires.clone().or_else(expiry))
            };
            let ring = Keyring {
                current: found.current.clone().unwrap_or_default(),
                previous,
                rotation_id: Some(trigger.id.clone()),
            };
            (ring, now.clone())
        }
    };
    let previous_since = if chosen.changes_key() { current_since } else { previous_created(status) };
    let recorded = record(app, &ring, created, previous_since, rotation);
    Ok((ring, recorded))
}

/// The previous key, if the Secret still holds the one status recorded and its grace period lasts.
fn trusted_previous(found: &Found, status: &ApplicationStatus, now: &Time) -> Option<(String, Time)> {
    let value = found.previous.clone()?;
    let recorded = status.keys.iter().find(|k| k.secret_key == PREVIOUS_KEY_FIELD)?;
    let expires = recorded.expires_at.clone()?;
    (key::fingerprint(&value) == recorded.fingerprint && expires.0 > now.0).then_some((value, expires))
}

fn previous_created(status: &ApplicationStatus) -> Option<Time> {
    status.keys.iter().find(|k| k.secret_key == PREVIOUS_KEY_FIELD).map(|k| k.created_at.clone())
}

fn record(
    app: &Application,
    ring: &Keyring,
    created: Time,
    previous_since: Option<Time>,
    mut rotation: RotationStatus,
) -> KeyStatus {
    let fingerprint = key::fingerprint(&ring.current);
    let mut keys = vec![LiveKey {
        secret_key: API_KEY_FIELD.into(),
        fingerprint: fingerprint.clone(),
        digest: key::digest(&ring.current),
        created_at: created.clone(),
        expires_at: None,
    }];
    if let Some((value, expires)) = &ring.previous {
        keys.push(LiveKey {
            secret_key: PREVIOUS_KEY_FIELD.into(),
            fingerprint: key::fingerprint(value),
            digest: key::digest(value),
            created_at: previous_since.unwrap_or_else(|| created.clone()),
            expires_at: Some(expires.clone()),
        });
    }
    // The schedule counts from the last rotation, or from the first key.
    let since = rotation.last_rotated_at.clone().unwrap_or_else(|| created.clone());
    rotation.next_rotation_at = every(app).map(|every| after(&since, every));
    KeyStatus {
        fingerprint: Some(fingerprint),
        created_at: Some(created),
        keys,
        rotation: (rotation != RotationStatus::default()).then_some(rotation),
    }
}

/// The earliest of the previous key's expiry and the next scheduled rotation.
pub fn next_deadline(keys: &KeyStatus, now: &Time) -> Option<Duration> {
    let expiries = keys.keys.iter().filter_map(|k| k.expires_at.as_ref());
    let scheduled = keys.rotation.as_ref().and_then(|r| r.next_rotation_at.as_ref());
    let earliest = expiries.chain(scheduled).min_by_key(|t| t.0)?;
    // A second late rather than early, so the deadline has surely passed.
    Some(until(now, earliest) + Duration::from_secs(1))
}

/// Events for what happened to the keys.
pub fn notes(app: &Application, chosen: &Move, found: &Found, ring: &Keyring) -> Vec<Note> {
    let secret = app.key_secret_name();
    let new = key::fingerprint(&ring.current);
    let kept_until = |ring: &Keyring| match &ring.previous {
        Some((old, until)) => {
            format!("; previous key {} stays as {PREVIOUS_KEY_FIELD} until {}", key::fingerprint(old), until.0)
        }
        None => "; the previous key was removed at once (gracePeriod 0s)".to_string(),
    };
    match chosen {
        Move::Mint(MintCause::FirstIssue) => {
            vec![Note::normal(reason::KEY_MINTED, format!("minted API key {new} into Secret {secret}"))]
        }
        Move::Mint(MintCause::SecretMissing) => vec![Note::warning(
            reason::KEY_REPAIRED,
            format!("Secret {secret} was deleted; minted a new API key {new}"),
        )],
        Move::Mint(MintCause::KeyMismatch) => vec![Note::warning(
            reason::KEY_REPAIRED,
            format!("Secret {secret} no longer held the recorded key; minted a new API key {new}"),
        )],
        Move::Rotate(t) => vec![Note::normal(
            reason::KEY_ROTATED,
            format!("rotated API key ({}): new key {new}{}", t.why, kept_until(ring)),
        )],
        Move::Complete(t) if t.id.starts_with("repair:") => vec![Note::warning(
            reason::KEY_REPAIRED,
            format!("completed an interrupted repair ({}): new key {new}", t.why),
        )],
        Move::Complete(t) => vec![Note::normal(
            reason::KEY_ROTATED,
            format!("completed an interrupted rotation ({}): new key {new}{}", t.why, kept_until(ring)),
        )],
        Move::Keep if found.previous.is_some() && ring.previous.is_none() => {
            vec![Note::normal(reason::PREVIOUS_KEY_REMOVED, format!("removed the previous key from Secret {secret}"))]
        }
        Move::Keep => vec![],
    }
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
