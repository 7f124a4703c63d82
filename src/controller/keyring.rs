//! Which keys an Application's Secret holds after this reconcile: keep, mint,
//! rotate, finish an interrupted rotation, or drop an expired previous key.
//! Pure: the key source and the clock are passed in.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::context::Note;
use crate::conditions::reason;
use crate::crd::{Application, ApplicationStatus, LiveKey, RotationStatus};
use crate::key::{self, ApiKey, MintError};
use crate::rotation::{self, PREVIOUS_EXPIRES_ANNOTATION, ROTATION_ID_ANNOTATION, Trigger};

/// Data key the workload sees as `$PAYI_API_KEY` through `envFrom`.
pub const API_KEY_FIELD: &str = "PAYI_API_KEY";
/// Data key of the key replaced by the last rotation, during its grace period.
pub const PREVIOUS_KEY_FIELD: &str = "PAYI_API_KEY_PREVIOUS";

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
    /// The Secret already holds this rotation (written before a crash); status catches up.
    Complete(Trigger),
}

impl Move {
    /// Whether this move replaces the key workloads use.
    pub fn changes_key(&self) -> bool {
        !matches!(self, Move::Keep)
    }
}

/// The key material found in an owned Secret.
#[derive(Default)]
pub struct Found {
    pub current: Option<String>,
    pub previous: Option<String>,
    pub rotation_id: Option<String>,
    pub previous_expires: Option<Time>,
    pub created: Option<Time>,
}

impl Found {
    pub fn in_secret(secret: &Secret) -> Self {
        let text = |field: &str| {
            let bytes = secret.data.as_ref()?.get(field)?;
            String::from_utf8(bytes.0.clone()).ok().filter(|k| !k.is_empty())
        };
        let annotation = |name: &str| secret.metadata.annotations.as_ref()?.get(name).cloned();
        let previous_expires = annotation(PREVIOUS_EXPIRES_ANNOTATION).and_then(|t| t.parse().ok()).map(Time);
        Self {
            current: text(API_KEY_FIELD),
            previous: text(PREVIOUS_KEY_FIELD),
            rotation_id: annotation(ROTATION_ID_ANNOTATION),
            previous_expires,
            created: secret.metadata.creation_timestamp.clone(),
        }
    }
}

/// The keys the Secret should hold, and the annotations that describe them.
pub struct Keyring {
    pub current: String,
    pub previous: Option<(String, Time)>,
    pub rotation_id: Option<String>,
}

/// Chooses the move. `exists` says whether there is an owned Secret at all.
pub fn choose(app: &Application, status: &ApplicationStatus, found: &Found, exists: bool, now: &Time) -> Move {
    let rotation = status.rotation.clone().unwrap_or_default();
    let trigger = rotation::pending(app, &rotation, now);
    match (&found.current, &status.key_fingerprint) {
        (None, None) if !exists => Move::Mint(MintCause::FirstIssue),
        (None, Some(_)) if !exists => Move::Mint(MintCause::SecretMissing),
        (None, _) => Move::Mint(MintCause::KeyMismatch),
        // Our own Secret but no record (status lost, or our first write not yet seen): adopt it.
        (Some(_), None) => Move::Keep,
        (Some(current), Some(recorded)) if &key::fingerprint(current) != recorded => {
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

/// Carries out `chosen`: the resulting keys, with `status`'s key fields updated to match.
pub fn carry_out(
    app: &Application,
    chosen: &Move,
    found: &Found,
    status: &mut ApplicationStatus,
    now: &Time,
    mint: &mut dyn FnMut() -> Result<ApiKey, MintError>,
) -> Result<Keyring, MintError> {
    let grace = rotation::grace(app);
    let expiry = || (!grace.is_zero()).then(|| rotation::after(now, grace));
    let mut rotation = status.rotation.clone().unwrap_or_default();
    let current_since = status.key_created_at.clone();
    let (ring, created) = match chosen {
        Move::Keep => {
            if status.key_fingerprint.is_none() {
                // Adopting our own Secret after status was lost: requests seen now
                // predate the record, like requests present at a first key.
                rotation::mark_handled(app, &mut rotation);
            }
            let previous = trusted_previous(found, status, now);
            let ring = Keyring {
                current: found.current.clone().unwrap_or_default(),
                previous,
                rotation_id: found.rotation_id.clone(),
            };
            (ring, current_since.clone().or_else(|| found.created.clone()).unwrap_or_else(|| now.clone()))
        }
        Move::Mint(_) => {
            rotation::mark_handled(app, &mut rotation);
            (Keyring { current: mint()?.expose().to_string(), previous: None, rotation_id: None }, now.clone())
        }
        Move::Rotate(trigger) => {
            rotation::mark_handled(app, &mut rotation);
            rotation.last_rotated_at = Some(now.clone());
            let old = found.current.clone().unwrap_or_default();
            let previous = expiry().map(|at| (old, at));
            (
                Keyring { current: mint()?.expose().to_string(), previous, rotation_id: Some(trigger.id.clone()) },
                now.clone(),
            )
        }
        Move::Complete(trigger) => {
            rotation::mark_handled(app, &mut rotation);
            rotation.last_rotated_at = Some(now.clone());
            let previous = found.previous.clone().zip(found.previous_expires.clone().or_else(expiry));
            let ring = Keyring {
                current: found.current.clone().unwrap_or_default(),
                previous,
                rotation_id: Some(trigger.id.clone()),
            };
            (ring, now.clone())
        }
    };
    let previous_since = if chosen.changes_key() { current_since } else { previous_created(status) };
    record(app, status, &ring, created, previous_since, rotation);
    Ok(ring)
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
    status: &mut ApplicationStatus,
    ring: &Keyring,
    created: Time,
    previous_since: Option<Time>,
    mut rotation: RotationStatus,
) {
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
    rotation.next_rotation_at = rotation::every(app).map(|every| rotation::after(&since, every));
    status.key_fingerprint = Some(fingerprint);
    status.key_created_at = Some(created);
    status.keys = keys;
    status.rotation = (rotation != RotationStatus::default()).then_some(rotation);
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
        Move::Mint(MintCause::SecretMissing) => {
            vec![Note::warning(
                reason::KEY_REPAIRED,
                format!("Secret {secret} was deleted; minted a new API key {new}"),
            )]
        }
        Move::Mint(MintCause::KeyMismatch) => vec![Note::warning(
            reason::KEY_REPAIRED,
            format!("Secret {secret} no longer held the recorded key; minted a new API key {new}"),
        )],
        Move::Rotate(t) => vec![Note::normal(
            reason::KEY_ROTATED,
            format!("rotated API key ({}): new key {new}{}", t.why, kept_until(ring)),
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
